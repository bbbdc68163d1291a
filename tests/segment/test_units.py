"""Segment units: the sounds inside recordings clustered across files, chosen automatically, applied, reported."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf

from sound_cluster.outputs.evaluate import event_cluster, score_events
from sound_cluster.segment.segmenter import SOUNDS_OVER_BACKGROUND
from sound_cluster.segment.tree import LENGTH_RULE, SOUNDS_RULE, SegmentTree
from sound_cluster.segment.units import (
    choose_unit,
    collect_units,
    count_units,
    sound_runs,
    typical_sound_length_s,
    unit_vector,
)
from tests.conftest import SR, make_params

pytestmark = pytest.mark.xdist_group("units_fit")  # its tests share one module-scoped fixture

KINDS = ("tone", "chirp", "noise")


def _event(kind: str, rng: np.random.Generator, seconds: float = 0.45) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    env = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)  # 10 ms ramps
    if kind == "tone":
        y = np.sin(2 * np.pi * rng.uniform(500, 560) * t)
    elif kind == "chirp":
        f0, f1 = rng.uniform(1500, 1700), rng.uniform(4500, 5000)
        y = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds)))
    else:
        y = rng.standard_normal(t.size) / 3
    return (0.5 * env * y).astype(np.float32)


def write_recordings(folder: Path, *, n_files: int, seed: int) -> dict[str, list[tuple[float, float, str]]]:
    """Recordings of two events of each kind in random order, 0.3-0.5 s of quiet between them."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    refs = {}
    for i in range(n_files):
        kinds = list(rng.permutation(KINDS * 2))
        parts, events, t = [np.zeros(int(0.2 * SR), np.float32)], [], 0.2
        for k in kinds:
            y = _event(k, rng)
            events.append((round(t, 4), round(t + len(y) / SR, 4), k))
            gap = np.zeros(int(rng.uniform(0.3, 0.5) * SR), np.float32)
            parts += [y, gap]
            t += (len(y) + len(gap)) / SR
        y = np.concatenate(parts) + (1e-4 * rng.standard_normal(sum(map(len, parts)))).astype(np.float32)
        sf.write(folder / f"rec{i}.wav", y, SR)
        refs[f"rec{i}.wav"] = events
    return refs


def write_references(refs, path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "start_s", "end_s", "label"])
        for p, evs in refs.items():
            w.writerows((p, s, e, lab) for s, e, lab in evs)
    return path


def read_segments_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One fit on three synthesized recordings, with the default settings (unit and K chosen)."""
    from sound_cluster.run.pipeline import run

    root = tmp_path_factory.mktemp("units")
    refs = write_recordings(root / "audio", n_files=3, seed=0)
    segments = write_references(refs, root / "segments.csv")
    params = make_params(f"data.path={root / 'audio'}", f"data.segments={segments}", "executor.kind=serial",
                         f"features.cache_dir={root / 'cache'}")
    result = run(params, output_dir=root / "run")
    return root, refs, result.summary


def _kind_of_cluster(rows, refs) -> dict[int, set[str]]:
    """For each cluster of segments.csv, the kinds of the reference events its segments overlap most."""
    out: dict[int, set[str]] = {}
    for r in rows:
        if r.get("kind", "sound") != "sound":
            continue
        s, e = float(r["start_s"]), float(r["end_s"])
        kind = max(refs[r["path"]], key=lambda ev: min(e, ev[1]) - max(s, ev[0]))[2]
        out.setdefault(int(r["cluster"]), set()).add(kind)
    return out


def test_recordings_are_clustered_by_their_sounds(fitted):
    root, refs, summary = fitted
    assert summary["units"]["unit"] == "segment" and "sounds" in summary["units"]["rule"]
    assert summary["units"]["n_units"] == 18  # six events in each of three files
    assert summary["clusters"]["n_clusters"] == 3  # chosen: three kinds
    rows = read_segments_csv(root / "run" / "segments.csv")
    assert list(rows[0]) == ["path", "segment", "start_s", "end_s", "cluster", "confidence", "kind"]
    sounds = [r for r in rows if r["kind"] == "sound"]
    background = [r for r in rows if r["kind"] == "background"]
    assert len(sounds) == 18 and len(background) == 3 * 7  # the lead-in, the five gaps and the tail of each file
    assert all(r["cluster"] == "" and r["confidence"] == "" for r in background)  # background is no kind of sound
    assert all(r["segment"] == "0" for r in rows if r["kind"] == "background" and float(r["start_s"]) == 0.0)
    # Each sound starts where its event starts and ends where it ends...
    for r in sounds:
        s, e = float(r["start_s"]), float(r["end_s"])
        ev = max(refs[r["path"]], key=lambda x: min(e, x[1]) - max(s, x[0]))
        assert abs(s - ev[0]) < 0.05 and abs(e - ev[1]) < 0.05, (r, ev)
    # ...and every kind is one cluster, across the three files.
    kinds = _kind_of_cluster(sounds, refs)
    assert sorted(len(v) for v in kinds.values()) == [1, 1, 1] and set().union(*kinds.values()) == set(KINDS)
    m = summary["event_metrics"]
    assert (m["nmi"], m["acc"], m["n"], m["files"]) == (pytest.approx(1.0), pytest.approx(1.0), 18, 3)
    # The head's posteriors give every unit its Ward cluster, and the trees' nodes carry them.
    assert summary["clusters"]["head_agrees"] == 1.0
    tree = json.loads((root / "run" / "trees" / "rec0.wav.json").read_text())
    assert tree["auto_k"] == 13 and tree["auto_k_rule"]["name"] == SOUNDS_OVER_BACKGROUND
    assert [c["kind"] for c in tree["auto_cut"]] == ["background", "sound"] * 6 + ["background"]
    clusters_csv = read_segments_csv(root / "run" / "clusters.csv")
    assert len(clusters_csv) == 3  # one row per file: its dominant cluster
    saved = json.loads((root / "run" / "models" / "clusters.json").read_text())
    assert saved["unit"] == "segment"


def test_apply_gives_new_recordings_sounds_the_fits_clusters(fitted, tmp_path):
    from sound_cluster.run.pipeline import run

    root, refs, _ = fitted
    fit_kinds = _kind_of_cluster(read_segments_csv(root / "run" / "segments.csv"), refs)
    new_refs = write_recordings(tmp_path / "new", n_files=1, seed=7)
    params = make_params("task=apply", f"models={root / 'run' / 'models'}", f"data.path={tmp_path / 'new'}",
                         "executor.kind=serial", f"features.cache_dir={root / 'cache'}")
    summary = run(params, output_dir=tmp_path / "run").summary
    assert summary["units"]["unit"] == "segment"
    rows = [r for r in read_segments_csv(tmp_path / "run" / "segments.csv") if r["kind"] == "sound"]
    assert len(rows) == 6
    for c, kinds in _kind_of_cluster(rows, new_refs).items():
        assert kinds == fit_kinds[c]  # each new event in the cluster its kind had in the fit


def test_every_snippet_the_report_links_exists(fitted):
    root, _, _ = fitted
    page = (root / "run" / "report.html").read_text(encoding="utf-8")
    snippets = re.findall(r'src="(report/audio/segments/[^"]+)"', page)
    assert len(snippets) >= 3 * 2  # most and least typical segments of three clusters
    spans = {(r["path"], r["segment"]): float(r["end_s"]) - float(r["start_s"])
             for r in read_segments_csv(root / "run" / "segments.csv")}
    for rel in snippets:
        path, segment = re.fullmatch(r"report/audio/segments/(.+)\.(\d+)\.wav", unquote(rel)).groups()
        info = sf.info(root / "run" / unquote(rel))
        assert info.duration == pytest.approx(spans[path, segment], abs=2e-3)  # the segment itself
    assert page.count('class="timeline"') == 3 and "sounds per cluster" in page and "median length" in page
    # A report for recordings: the sounds' map, label against cluster, the references under each timeline, why K.
    assert 'src="report/sounds_pca.png"' in page and (root / "run" / "report" / "sounds_pca.png").is_file()
    assert 'id="labels-by-cluster"' in page and page.count('class="timeline reference"') == 3
    import html

    assert "chosen from the data: Ward's hierarchy of the" in html.unescape(page) and "sounds in" in page


def test_label_table_counts_majority_and_purity():
    from sound_cluster.outputs.report_segments import label_table

    segs = [{"path": "a.wav", "segment": i, "cluster": c} for i, c in enumerate([0, 0, 0, 1, 1, 2])]
    labels = {("a.wav", 0): "x", ("a.wav", 1): "x", ("a.wav", 2): "y", ("a.wav", 3): "y", ("a.wav", 4): "y"}
    t = label_table(segs, labels, colors=["#000"] * 3)
    assert [(c["k"], c["n"], c["majority"], round(c["purity"], 3)) for c in t["clusters"]] == [
        (0, 3, "x", 0.667), (1, 2, "y", 1.0), (2, 1, "(none)", 1.0)]
    assert t["rows"][0] == {"label": "y", "n": 3, "counts": [1, 2, 0]} and t["purity"] == pytest.approx(5 / 6)
    assert label_table(segs, {}, colors=["#000"] * 3) is None


def test_auto_unit_rule():
    clips = choose_unit("auto", sounds=[1, 1, 2, 0, 1], durations_s=[0.5] * 5, min_file_s=8.0)
    assert clips.unit == "file" and "one sound per file" in clips.rule
    seqs = choose_unit("auto", sounds=[5, 7, 1], durations_s=[3.0] * 3, min_file_s=8.0)
    assert seqs.unit == "segment" and seqs.median_sounds == 5
    long = choose_unit("auto", sounds=[0, 1, 1], durations_s=[60.0, 45.0, 30.0], min_file_s=8.0)
    assert long.unit == "segment" and "45.0 s" in long.rule
    assert choose_unit("file", sounds=[9], durations_s=[100.0], min_file_s=8.0).unit == "file"
    # Clips beside a few long recordings: the recordings hold most of the audio, so their sounds are the units.
    mixed = choose_unit("auto", sounds=[1] * 30 + [8] * 4, durations_s=[1.0] * 30 + [12.0] * 4, min_file_s=8.0)
    assert mixed.unit == "segment" and "hold 62% of the audio" in mixed.rule
    few = choose_unit("auto", sounds=[1] * 30 + [8], durations_s=[1.0] * 30 + [12.0], min_file_s=8.0)
    assert few.unit == "file"  # one recording beside 30 clips holds 29 %: a folder of clips


def test_unit_vectors_leave_pauses_out():
    steps = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 5.0], [0.0, 5.0]])
    quiet = np.array([False, False, True, True])
    np.testing.assert_allclose(unit_vector(steps, quiet), [1.0, 0.0])
    np.testing.assert_allclose(unit_vector(steps, np.ones(4, bool)), [0.5, 2.5] / np.hypot(0.5, 2.5))  # all quiet
    units = collect_units([[(0, 2), (2, 4)], [(0, 4)]], [steps, steps], [np.zeros(4, bool), quiet])
    assert units.file.tolist() == [0, 0, 1] and units.start.tolist() == [0, 2, 0] and units.end.tolist() == [2, 4, 4]
    assert [len(s) for s in units.steps([steps, steps])] == [2, 2, 4]


def test_typical_sound_length_and_the_count_of_units():
    quiet = np.array([0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0], bool)
    runs = sound_runs(quiet, np.array([0, 5, 8]), np.array([0, 5, 8, 10]), step_rate_hz=10.0)
    np.testing.assert_allclose(runs.loud_s, [0.3, 0.2, 0.4])
    assert runs.onsets.tolist() == [1, 1, 2] and runs.intervals_s.tolist() == [pytest.approx(0.2)]
    # Most runs hold one onset: a run is a sound, and the typical length is the median run's.
    assert typical_sound_length_s([runs], default_s=0.5) == (pytest.approx(0.3), pytest.approx(
        "median loud time of the 3 sounds between pauses"))
    # Sounds joined without pauses: one run of 2 s holding onsets every 0.5 s.
    joined = sound_runs(np.zeros(20, bool), np.array([0]), np.arange(0, 20, 5), step_rate_hz=10.0)
    length, source = typical_sound_length_s([joined, joined, joined], default_s=0.3)
    assert length == pytest.approx(0.5) and source.startswith("median interval between onsets")
    assert count_units(joined, sound_length_s=0.5) == 4
    assert count_units(joined, sound_length_s=1.2) == 1  # a sound up to twice the typical length stays whole
    assert count_units(runs, sound_length_s=0.3) == 3  # each run at least one unit
    assert typical_sound_length_s([], default_s=0.5)[0] == 0.5
    # The tree takes the count; it is the pauses' rule when it equals the sounds between pauses.
    n = 20
    tree = SegmentTree(np.r_[0, np.arange(n, 2 * n - 2)], np.arange(1, n), np.arange(1.0, n), 10.0, 2.0)
    assert tree.auto_choice(min_segment_s=0.2, sounds=1, units=4, sound_length_s=0.5) == {
        "k": 4, "name": LENGTH_RULE, "sound_length_s": 0.5}
    assert tree.auto_choice(min_segment_s=0.2, sounds=3, units=3, sound_length_s=0.5)["name"] == SOUNDS_RULE


def test_event_metrics_equal_their_closed_form():
    assert event_cluster(np.array([0, 0, 1, 1, 1, 2]), start_s=0.0, end_s=0.6, step_rate_hz=10) == 1  # majority
    assert event_cluster(np.array([0, 0, 1, 1]), start_s=0.0, end_s=0.4, step_rate_hz=10) == 0  # tie: the lowest
    assert event_cluster(np.array([0, 3, 1, 1]), start_s=0.11, end_s=0.13, step_rate_hz=10) == 3  # within one step
    refs = {"a.wav": [(0.0, 0.2, "x"), (0.2, 0.4, "y"), (0.4, 0.6, "")], "b.wav": [(0.0, 0.2, "x"), (0.2, 0.4, "y")]}
    steps = {"a.wav": (np.array([5, 5, 2, 2, 0, 0]), 10.0), "b.wav": (np.array([5, 5, 2, 2]), 10.0)}
    perfect = score_events(refs, steps)
    assert (perfect["nmi"], perfect["ari"], perfect["acc"], perfect["n"], perfect["files"]) == (
        pytest.approx(1.0), pytest.approx(1.0), 1.0, 4, 2)  # the unlabelled event is left out
    one = score_events(refs, {p: (np.zeros_like(c), r) for p, (c, r) in steps.items()})
    assert (one["nmi"], one["ari"], one["acc"]) == (pytest.approx(0.0), pytest.approx(0.0), 0.5)
    # labels x, y, x, y take clusters 5, 2, 5, 5: accuracy 3/4; NMI = I / mean(H(labels), H(clusters)),
    # I = H(clusters) - H(clusters | labels), and given y the cluster is 2 or 5 alike: H(clusters | labels) = log(2) / 2
    mixed = score_events(refs, {"a.wav": steps["a.wav"], "b.wav": (np.array([5, 5, 5, 5]), 10.0)})
    h_lab = np.log(2)
    h_c = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    mi = h_c - 0.5 * np.log(2)
    assert mixed["acc"] == 0.75 and mixed["nmi"] == pytest.approx(mi / (0.5 * (h_lab + h_c)))
    assert score_events(refs, {}) is None


def test_segment_units_need_adjacent_pairing():
    from sound_cluster.errors import ConfigError

    with pytest.raises(ConfigError, match=r"units.kind must be file or auto with segment.pairing=any"):
        make_params("units.kind=segment", "segment.pairing=any")
    with pytest.raises(ConfigError, match=r"units.kind must be one of auto, file, segment, got 'sounds'"):
        make_params("units.kind=sounds")
