"""Sounds over a background: each sound from where it rises out of a changing bed to where it falls back."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sound_cluster.ingest.levels import background_db
from sound_cluster.segment.sounds import find_sounds
from tests.conftest import SR, make_params
from tests.segment.test_units import KINDS
from tests.segment.test_units import _event as unit_event

pytestmark = pytest.mark.xdist_group("sounds_fit")  # its tests share one module-scoped fit

def _event(kind: str, rng: np.random.Generator, seconds: float = 0.45) -> np.ndarray:
    """test_units' tone, chirp or noise burst, at unit RMS (the bed sets each event's level)."""
    y = unit_event(kind, rng, seconds)
    return (y / np.sqrt(np.mean(y ** 2))).astype(np.float32)


def _bed(n: int, rng: np.random.Generator) -> np.ndarray:
    """Coloured noise (more low than high, like wind or traffic) whose level rises and falls by 5 dB either way."""
    from scipy.signal import lfilter

    y = lfilter([1.0], [1.0, -0.9], rng.standard_normal(n)) + rng.standard_normal(n)
    y /= np.sqrt(np.mean(y ** 2))
    level_db = 5.0 * np.sin(2 * np.pi * np.arange(n) / n * rng.uniform(1.0, 2.0) + rng.uniform(0, 2 * np.pi))
    return (y * 10 ** (level_db / 20)).astype(np.float32)


def write_field_recordings(folder: Path, *, n_files: int, seed: int, kinds=KINDS, seconds: float = 0.45,
                           snr_db: tuple[float, float] = (16.0, 20.0)) -> dict[str, list[tuple[float, float, str]]]:
    """Recordings of two events of each kind over a changing bed, 0.4-0.7 s apart, 0.5 s of bed before the first."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    refs = {}
    for i in range(n_files):
        order = list(rng.permutation(kinds * 2))
        t, placed, events = 0.5, [], []
        for k in order:
            y = _event(k, rng, seconds)
            placed.append((int(t * SR), y))
            events.append((round(int(t * SR) / SR, 4), round(int(t * SR) / SR + len(y) / SR, 4), k))
            t += len(y) / SR + rng.uniform(0.4, 0.7)
        n = int((t + 0.1) * SR)
        mix = 0.01 * _bed(n, rng)
        for start, y in placed:
            local = np.sqrt(np.mean(mix[start:start + len(y)] ** 2))  # the bed's level under the event
            mix[start:start + len(y)] += y * local * 10 ** (rng.uniform(*snr_db) / 20)
        sf.write(folder / f"rec{i}.wav", (0.5 * mix / np.abs(mix).max()).astype(np.float32), SR)
        refs[f"rec{i}.wav"] = events
    return refs


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _matches(sounds: list[dict[str, str]], events: list[tuple[float, float, str]], tol: float) -> bool:
    got = sorted((float(r["start_s"]), float(r["end_s"])) for r in sounds)
    return len(got) == len(events) and all(abs(a - s) < tol and abs(b - e) < tol
                                           for (a, b), (s, e, _) in zip(got, sorted(events)))


@pytest.fixture(scope="module")
def field_fit(tmp_path_factory):
    """One fit, default settings, on three recordings of tones, chirps and noise bursts over a changing bed."""
    from sound_cluster.run.pipeline import run

    root = tmp_path_factory.mktemp("field")
    refs = write_field_recordings(root / "audio", n_files=3, seed=1)
    # K given: automatic K over this bed splits the kinds (5 clusters for 3, each of one kind). No gating: these
    # tests measure the sounds found in the frames as they are, and spectral gating takes a steady noise burst
    # for more bed (README, "Recordings")
    params = make_params(f"data.path={root / 'audio'}", "executor.kind=serial", f"features.cache_dir={root / 'cache'}",
                         "output.report=false", "output.max_plots=0", "output.export=[audacity,raven]",
                         "model.n_clusters=3", "features.denoise=false")
    result = run(params, output_dir=root / "run")
    return root, refs, result.summary


def test_sounds_over_a_changing_bed_are_the_events_and_the_bed_is_background(field_fit):
    root, refs, summary = field_fit
    assert summary["units"]["unit"] == "segment" and summary["units"]["n_units"] == 18
    rows = _rows(root / "run" / "segments.csv")
    for path, events in refs.items():
        mine = [r for r in rows if r["path"] == path]
        assert [r["kind"] for r in mine] == ["background", "sound"] * 6 + ["background"]  # the lead-in is bed
        assert _matches([r for r in mine if r["kind"] == "sound"], events, tol=0.05)  # each from start to end
    # every event of a kind in one cluster, across the files
    by_cluster: dict[str, set[str]] = {}
    for r in rows:
        if r["kind"] == "sound":
            s, e = float(r["start_s"]), float(r["end_s"])
            kind = max(refs[r["path"]], key=lambda ev: min(e, ev[1]) - max(s, ev[0]))[2]
            by_cluster.setdefault(r["cluster"], set()).add(kind)
    assert sorted(map(len, by_cluster.values())) == [1, 1, 1]


def test_exports_hold_one_selection_per_sound(field_fit):
    root, refs, _ = field_fit
    for path, events in refs.items():
        lines = (root / "run" / "export" / "audacity" / f"{path}.txt").read_text().splitlines()
        assert len(lines) == len(events)
        spans = [tuple(map(float, line.split("\t")[:2])) for line in lines]
        assert all(abs(a - s) < 0.05 and abs(b - e) < 0.05 for (a, b), (s, e, _) in zip(spans, events))
        raven = _rows_tab(root / "run" / "export" / "raven" / f"{path}.selections.txt")
        assert len(raven) == len(events) and all(r["Cluster"] for r in raven)


def test_a_fit_whose_main_process_holds_no_step_embeddings_gives_the_same_run(field_fit, tmp_path):
    """executor.steps_in_memory_mb=0: every file's step embeddings are read from the step cache when needed (the
    fold inputs, the merge autoencoder's windows, the units, the head's crops, the posteriors): the same results."""
    from sound_cluster.run.pipeline import run

    root, _, summary = field_fit
    assert summary["step_embeddings"]["files_in_memory"] == 3 and summary["step_embeddings"]["files_read_from_step_cache"] == 0
    params = make_params(f"data.path={root / 'audio'}", "executor.kind=serial", f"features.cache_dir={root / 'cache'}",
                         "output.report=false", "output.max_plots=0", "model.n_clusters=3", "features.denoise=false",
                         "executor.steps_in_memory_mb=0")
    capped = run(params, output_dir=tmp_path / "run").summary
    assert capped["step_embeddings"] == {"files_in_memory": 0, "mb_in_memory": 0.0, "files_read_from_step_cache": 3}
    for name in ("segments.csv", "clusters.csv"):
        assert (tmp_path / "run" / name).read_bytes() == (root / "run" / name).read_bytes()
    for path in sorted((root / "run" / "posteriors").rglob("*.npz")):
        mine = np.load(tmp_path / "run" / "posteriors" / path.relative_to(root / "run" / "posteriors"))
        theirs = np.load(path)
        assert np.array_equal(mine["posteriors"], theirs["posteriors"])
        assert np.array_equal(mine["embedding"], theirs["embedding"])
    assert capped["merge_model_training"] == summary["merge_model_training"]
    # each file's fold waited on disk for the trees (.scratch/merges), and went with the run
    assert not (tmp_path / "run" / ".scratch").exists() and not (root / "run" / ".scratch").exists()


def _rows_tab(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_apply_keeps_long_sounds_whole_and_splits_one_that_changes_kind(field_fit, tmp_path):
    """Sounds three times as long as the fit's are not chopped; a tone that jumps in pitch is two sounds."""
    from sound_cluster.run.pipeline import run

    root, _, _ = field_fit
    refs = write_field_recordings(tmp_path / "long", n_files=1, seed=5, kinds=("tone", "noise"), seconds=1.4)
    rng = np.random.default_rng(9)
    t = np.arange(int(1.6 * SR)) / SR
    jump = np.sin(2 * np.pi * np.where(t < 0.8, 520.0, 1900.0) * t)  # one sound whose pitch changes at 0.8 s
    env = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)
    bed = 0.01 * _bed(int(3.0 * SR), rng)
    bed[int(0.7 * SR):int(0.7 * SR) + len(t)] += (0.2 * env * jump).astype(np.float32)
    sf.write(tmp_path / "long" / "jump.wav", bed, SR)
    params = make_params("task=apply", f"models={root / 'run' / 'models'}", f"data.path={tmp_path / 'long'}",
                         "executor.kind=serial", f"features.cache_dir={root / 'cache'}", "output.report=false",
                         "output.max_plots=0")
    run(params, output_dir=tmp_path / "run")
    rows = _rows(tmp_path / "run" / "segments.csv")
    long = [r for r in rows if r["path"] == "rec0.wav" and r["kind"] == "sound"]
    # four sounds of 1.4 s, three times the fit's: four segments, not chopped (long sounds fill much of the
    # background's running window, so their edges are less exact than short ones')
    assert _matches(long, refs["rec0.wav"], tol=0.25)
    jumps = [(float(r["start_s"]), float(r["end_s"])) for r in rows if r["path"] == "jump.wav" and r["kind"] == "sound"]
    assert len(jumps) == 2 and jumps[0][0] == pytest.approx(0.7, abs=0.05) and 2.3 <= jumps[1][1] <= 2.4
    assert jumps[0][1] == jumps[1][0] == pytest.approx(1.5, abs=0.1)  # split where the pitch changes


def test_detection_follows_a_bed_that_rises_and_falls():
    """Events 15 dB over a bed that swings by 10 dB: found from start to end; the bed's loud stretch is no sound."""
    from sound_cluster.config import FeatureParams
    from sound_cluster.ingest.features import log_mel

    rng = np.random.default_rng(3)
    n = 8 * SR
    bed = _bed(n, rng)
    events = [(1.0, 1.5), (3.2, 3.5), (5.0, 5.8), (6.9, 7.2)]
    y = 0.02 * bed
    for s, e in events:
        a, b = int(s * SR), int(e * SR)
        local = np.sqrt(np.mean(y[a:b] ** 2))
        ev = _event("noise", rng, e - s)[: b - a]
        y[a:a + len(ev)] += local * 10 ** (15 / 20) * ev
    frames = log_mel(y, params=FeatureParams())
    found = find_sounds(frames, frame_rate_hz=100.0, rise_db=12.0, fall_db=8.0, min_sound_s=0.1, min_gap_s=0.1,
                        window_s=3.0)
    got = [(a / 100.0, b / 100.0) for a, b in zip(found.starts, found.ends)]
    assert len(got) == len(events)
    for (a, b), (s, e) in zip(got, events):
        assert abs(a - s) < 0.05 and abs(b - e) < 0.05
    bg = background_db(frames, frame_rate_hz=100.0, window_s=3.0)
    assert bg.shape == frames.shape and np.all(np.isfinite(bg))


def test_denoise_gates_recordings_over_a_bed_and_leaves_clips_and_quiet_recordings():
    """features.denoise=auto: a recording over a bed is gated (its bed falls well below its events); a clip and a
    recording quiet between its sounds are read as they are."""
    from sound_cluster.config import FeatureParams
    from sound_cluster.ingest.denoise import denoise, level_range_db, needs_denoise

    rng = np.random.default_rng(4)
    params = FeatureParams()
    bed = 0.02 * _bed(6 * SR, rng)
    events = np.zeros(6 * SR, np.float32)
    for start in (1.0, 3.0, 4.5):
        ev = _event("tone", rng, 0.5)
        events[int(start * SR):int(start * SR) + len(ev)] += 0.3 * ev
    over_bed = bed + events
    quiet = events + 1e-4 * rng.standard_normal(events.size).astype(np.float32)
    assert needs_denoise(over_bed, params=params) and level_range_db(over_bed, sample_rate=SR) < 30
    assert not needs_denoise(quiet, params=params)  # over 30 dB between its quiet and its loud frames
    assert not needs_denoise(over_bed[: 2 * SR], params=params)  # a clip: no bed to estimate
    assert not needs_denoise(over_bed, params=FeatureParams(denoise=False))
    # Notes joined end to end, each decaying into the next: a small level range, but no stretch of bed between
    # them to estimate a bed from, so auto leaves them as they are (the gate would cut into their decays).
    from sound_cluster.ingest.features import log_mel

    t = np.arange(int(0.75 * SR)) / SR
    joined = np.concatenate([np.sin(2 * np.pi * f * t) * np.exp(-2.0 * t) for f in (220, 330, 262, 392, 294, 440,
                                                                                      247, 349)]).astype(np.float32)
    joined += 1e-4 * rng.standard_normal(joined.size).astype(np.float32)
    assert needs_denoise(joined, params=params)  # the level range alone would gate it
    assert not needs_denoise(joined, params=params, frames=log_mel(joined, params=params))
    assert needs_denoise(over_bed, params=params, frames=log_mel(over_bed, params=params))
    assert denoise(joined, params=params, frames=log_mel(joined, params=params)) is joined
    gated = denoise(over_bed, params=params)
    between = slice(int(2.0 * SR), int(2.8 * SR))  # only the bed sounds here
    assert np.sqrt(np.mean(gated[between] ** 2)) < 0.3 * np.sqrt(np.mean(over_bed[between] ** 2))
    assert denoise(quiet, params=params) is quiet


def test_a_gated_recording_keeps_its_frames_before_the_gate_where_its_sounds_are_found(tmp_path):
    """features.denoise=auto: the cache holds a gated file's frames before the gating beside its frames, and the
    fold finds the file's sounds on them; a file that was not gated has none."""
    from sound_cluster.config import FeatureParams
    from sound_cluster.ingest.extract import extract_features
    from sound_cluster.ingest.features import FeatureCache, detection_frames, log_mel
    from sound_cluster.segment.segmenter import Segmenter

    rng = np.random.default_rng(4)
    bed = 0.02 * _bed(6 * SR, rng)
    events = np.zeros(6 * SR, np.float32)
    for start in (1.0, 3.0, 4.5):
        ev = _event("tone", rng, 0.5)
        events[int(start * SR):int(start * SR) + len(ev)] += 0.3 * ev
    sf.write(tmp_path / "bed.wav", bed + events, SR, subtype="FLOAT")
    sf.write(tmp_path / "quiet.wav", events + 1e-4 * rng.standard_normal(events.size).astype(np.float32), SR,
             subtype="FLOAT")
    params = FeatureParams()
    cache = FeatureCache(tmp_path / "cache", params=params)
    cache.prepare()
    gated = extract_features(tmp_path / "bed.wav", cache=cache)
    quiet = extract_features(tmp_path / "quiet.wav", cache=cache)
    raw = detection_frames(gated.cache_path)
    assert raw is not None and detection_frames(quiet.cache_path) is None
    y, _ = sf.read(tmp_path / "bed.wav", dtype="float32")
    np.testing.assert_allclose(raw, log_mel(y, params=params), atol=1e-4)
    frames = np.load(gated.cache_path)
    assert not np.allclose(frames, raw, atol=0.5)  # the gate changed the frames the encoder sees

    # The fold finds the sounds on the frames before the gate: a level that only they show is what it follows.
    seg = Segmenter.of(make_params("executor.kind=serial"))
    steps = np.zeros((len(frames) // seg.time_pool + 1, 4), np.float32)
    flat = np.full_like(frames, float(frames.min()))
    loud = flat.copy()
    loud[200:260] += 20.0  # 0.6 s that rise 20 dB above the rest, in the detection frames only
    assert seg.fold_input(steps, flat, detect=loud).onsets.tolist() == [200 // seg.time_pool]
    assert seg.fold_input(steps, flat).onsets.tolist() == [0]  # nothing rises: one steady sound


def test_levels_in_blocks_equal_one_pass(monkeypatch):
    """The level above the background is computed a block of frames at a time (bounded memory on long files);
    the blocks give what one pass over the whole file gives."""
    from sound_cluster.ingest import levels

    rng = np.random.default_rng(3)
    frames = rng.normal(-8.0, 3.0, size=(1000, 16)).astype(np.float32)
    bg = levels.background_db(frames, frame_rate_hz=100.0, window_s=3.0)
    whole = levels.level_above_background_db(frames, bg)
    monkeypatch.setattr(levels, "LEVEL_BLOCK_FRAMES", 97)
    np.testing.assert_array_equal(levels.level_above_background_db(frames, bg), whole)
    assert whole.shape == (1000,) and np.all(np.isfinite(whole))
