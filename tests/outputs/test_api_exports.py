"""Results where people work: Audacity and Raven tables out and in, and the Python API."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sound_cluster
from sound_cluster.errors import ConfigError
from sound_cluster.outputs.evaluate import evaluate_run
from sound_cluster.outputs.references import read_segments

pytestmark = pytest.mark.xdist_group("api_demo_run")  # its tests share one module-scoped fixture

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "sound_cluster" / "demo"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo through the Python API, every export on, small settings."""
    tmp = tmp_path_factory.mktemp("api")
    run = sound_cluster.cluster(None, "debug=tiny", f"features.cache_dir={tmp / 'cache'}",
                                "output.export=[segments,audacity,raven]", "output.max_plots=0",
                                output_dir=tmp / "run")
    return tmp, run


def _segments_by_file(run) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in run.segments:
        out.setdefault(r["path"], []).append(r)
    return out


def test_audacity_and_raven_exports_parse_back_to_segments_csv(demo_run):
    from crowsetta.formats.bbox import Raven
    from crowsetta.formats.seq import AudSeq

    _, run = demo_run
    by_file = _segments_by_file(run)
    assert len(by_file) == 34
    for path, segs in by_file.items():
        segs = [s for s in segs if s["kind"] == "sound"]  # one selection per sound: background is none
        assert segs and all(s["cluster"] is not None for s in segs)
        aud = AudSeq.from_file(run.dir / "export" / "audacity" / f"{path}.txt")
        np.testing.assert_allclose(aud.start_times, [s["start_s"] for s in segs], atol=1e-6)
        np.testing.assert_allclose(aud.end_times, [s["end_s"] for s in segs], atol=1e-6)
        assert list(aud.labels) == [str(s["cluster"]) for s in segs]
        raven = Raven.from_file(run.dir / "export" / "raven" / f"{path}.selections.txt", annot_col="Cluster").df
        np.testing.assert_allclose(raven["begin_time_s"], [s["start_s"] for s in segs], atol=1e-6)
        np.testing.assert_allclose(raven["end_time_s"], [s["end_s"] for s in segs], atol=1e-6)
        assert list(raven["annotation"]) == [str(s["cluster"]) for s in segs]
        np.testing.assert_allclose(raven["Confidence"], [s["confidence"] for s in segs], atol=1e-4)
        assert set(raven["high_freq_hz"]) == {8000.0}  # the demo's 16 kHz files: their Nyquist frequency


def _write_raven_references(csv_path: Path, folder: Path) -> None:
    """The demo's reference CSV as Raven tables named after the audio's stem, each selection in two views."""
    rows: dict[str, list] = {}
    with open(csv_path, newline="") as fh:
        for r in csv.DictReader(fh):
            rows.setdefault(r["path"], []).append(r)
    for path, refs in rows.items():
        out = folder / f"{path.rsplit('.', 1)[0]}.Table.1.selections.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        lines = ["Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tAnnotation"]
        for i, r in enumerate(refs, start=1):
            for view in ("Waveform 1", "Spectrogram 1"):
                lines.append(f"{i}\t{view}\t1\t{r['start_s']}\t{r['end_s']}\t0\t4000\t{r['label']}")
        out.write_text("\n".join(lines) + "\n")


def test_references_as_raven_tables_or_audacity_labels_score_as_the_csv(demo_run, tmp_path):
    _, run = demo_run
    _write_raven_references(DEMO / "segments.csv", tmp_path / "raven")
    # Audacity label tracks named after the audio file itself (a/b.wav.txt), as the export writes them.
    for path, refs in read_segments(DEMO / "segments.csv").items():
        out = tmp_path / "audacity" / f"{path}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(f"{s}\t{e}\t{lab}\n" for s, e, lab in refs) + "\\  100.0\t4000.0\n")
    assert read_segments(tmp_path / "raven").keys() == {p.rsplit(".", 1)[0] for p in read_segments(DEMO / "segments.csv")}
    from_csv = evaluate_run(run.dir, segments=DEMO / "segments.csv")
    for folder, fmt in ((tmp_path / "raven", "auto"), (tmp_path / "raven", "raven"), (tmp_path / "audacity", "auto")):
        scored = evaluate_run(run.dir, segments=folder, segments_format=fmt)
        for key in ("segment_metrics", "event_metrics"):
            assert {k: v for k, v in scored[key].items() if k != "segments"} == \
                   {k: v for k, v in from_csv[key].items() if k != "segments"}
    assert from_csv["event_metrics"]["n"] == 32  # every labelled sound of the four recordings


@pytest.mark.slow
def test_the_api_gives_what_the_command_line_gives(demo_run):
    tmp, run = demo_run
    cli_dir = tmp / "cli"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run([str(Path(sys.executable).with_name("sound-cluster")), "debug=tiny",
                           f"features.cache_dir={tmp / 'cache'}", "output.export=[segments,audacity,raven]",
                           "output.max_plots=0", f"hydra.run.dir={cli_dir}"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (cli_dir / "clusters.csv").read_text() == (run.dir / "clusters.csv").read_text()
    assert (cli_dir / "segments.csv").read_text() == (run.dir / "segments.csv").read_text()
    assert run.summary["status"] == "complete" and run.report_path == run.dir / "report.html"


def test_load_run_round_trips(demo_run):
    _, run = demo_run
    again = sound_cluster.load_run(str(run.dir))
    assert again == run and again.clusters == run.clusters and again.segments == run.segments
    assert again.summary == run.summary
    row = run.clusters[0]
    assert set(row) == {"path", "cluster", "confidence", "duration_s", "name"} and isinstance(row["cluster"], int)
    tree = run.tree("recordings/recording_1.wav")
    doc = run.tree_doc("recordings/recording_1.wav")
    from sound_cluster.segment.tree import doc_cut

    k = doc["auto_k"]
    assert tree.n_leaves == doc["n_leaves"] and tree.cut(k) == [(s["start"], s["end"]) for s in doc_cut(doc, k)]
    # In seconds: the file's own cut is its rows of segments.csv.
    rows = [{k: r[k] for k in ("start_s", "end_s", "cluster", "confidence", "kind")}
            for r in run.segments if r["path"] == "recordings/recording_1.wav"]
    cut = run.cut("recordings/recording_1.wav")
    assert len(cut) == len(rows) and all(a["cluster"] == b["cluster"] and a["kind"] == b["kind"] and
                                         abs(a["start_s"] - b["start_s"]) < 1e-6 for a, b in zip(cut, rows))
    assert len(run.cut("recordings/recording_1.wav", 2)) == 2
    with pytest.raises(KeyError, match="not a file of the run"):
        run.tree("nope.wav")
    with pytest.raises(FileNotFoundError, match="not a sound-cluster run folder"):
        sound_cluster.load_run(run.dir / "trees")
    pd = pytest.importorskip("pandas")
    assert isinstance(run.segments.to_pandas(), pd.DataFrame) and len(run.segments.to_pandas()) == len(run.segments)


def test_bad_settings_from_the_api_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown setting 'model.n_cluster'; did you mean 'model.n_clusters'"):
        sound_cluster.cluster(None, "model.n_cluster=4", output_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match=r"features\.n_mels must be a positive integer, got 0"):
        sound_cluster.cluster(None, "features.n_mels=0", output_dir=tmp_path / "b")
    with pytest.raises(ConfigError, match=r"output\.export must be one of segments, jams, audacity, raven, got 'praat'"):
        sound_cluster.cluster(None, "output.export=[praat]", output_dir=tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_importing_the_package_imports_no_tensorflow():
    code = "import sys, sound_cluster; sound_cluster.load_run; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_export_task_writes_what_a_fit_with_exports_writes(demo_run, tmp_path):
    """task=export on a finished run: the Audacity and Raven files a fit with output.export writes, byte for byte,
    written from the run's trees into its folder, and no run folder of its own left behind."""
    import shutil

    _, run = demo_run
    copy = tmp_path / "run"
    shutil.copytree(run.dir, copy, ignore=shutil.ignore_patterns("export"))
    stub = tmp_path / "stub"
    proc = subprocess.run([str(Path(sys.executable).with_name("sound-cluster")), "task=export", f"run={copy}",
                           "output.export=[audacity,raven]", f"hydra.run.dir={stub}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = sorted(p.relative_to(copy) for p in (copy / "export").rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(run.dir) for p in (run.dir / "export").rglob("*") if p.is_file())
    assert written and all((copy / p).read_bytes() == (run.dir / p).read_bytes() for p in written)
    assert not stub.exists()
    proc = subprocess.run([str(Path(sys.executable).with_name("sound-cluster")), "task=export", f"run={copy}"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "output.export must be a non-empty list" in proc.stdout + proc.stderr
