"""The installed console script, end to end, as a user runs it."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sound_cluster.io_utils import TMP_PREFIX
from tests.conftest import BAD, SR, good_names

EXE = shutil.which("sound-cluster") or str(Path(sys.executable).parent / "sound-cluster")


def run_cli(*args, cwd, timeout=300, check=True, tiny=True):
    """Run the console script; ``tiny`` adds ``debug=tiny`` (a small model trained for a few steps)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    args = ("debug=tiny", *args) if tiny else args
    proc = subprocess.run([EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def read_failures(run_dir):
    with open(run_dir / "failures.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_console_script_is_installed():
    assert Path(EXE).exists(), "pip install -e . installs the sound-cluster console script"


@pytest.mark.slow
def test_end_to_end_on_bad_input_corpus(corpus, tmp_path):
    run_dir = tmp_path / "run"
    run_cli(f"data.path={corpus}", f"features.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}",
            "executor.kind=process", cwd=tmp_path)
    rows = read_failures(run_dir)
    by_path = {r["path"]: r for r in rows}
    for name, words in BAD.items():
        assert words in by_path[name]["reason"], by_path[name]
        assert by_path[name]["stage"] == "ingest"
    assert any("symlink loop" in r["reason"] and r["stage"] == "discover" for r in rows)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["files_processed"] == len(good_names())
    assert summary["files_failed"] + summary["discover_problems"] == len(rows)
    assert summary["files_found"] == summary["files_processed"] + summary["files_failed"]
    assert summary["status"] == "complete"
    assert summary["cache"]["misses"] == len(good_names())
    assert summary["audio_seconds"] == pytest.approx(0.5 * 5 + 0.7 + 0.6, abs=0.01)
    assert summary["frames"] > 0 and summary["config"]["data"]["path"] == str(corpus)
    for key in ("features", "discover"):
        assert key in summary["stage_seconds"]
    assert "librosa" in summary["versions"]

    # A second run with the same settings reads every file from the cache: test_robustness.py's reruns check it.


def test_missing_path_and_empty_folder_are_clear_errors(tmp_path):
    proc = run_cli(f"data.path={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path,
                   check=False)
    assert proc.returncode != 0
    assert f"data.path does not exist: {tmp_path / 'nowhere'}" in proc.stdout + proc.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no audio here")
    proc = run_cli(f"data.path={tmp_path / 'empty'}", f"hydra.run.dir={tmp_path / 'r2'}", cwd=tmp_path,
                   check=False)
    assert proc.returncode != 0
    assert f"no audio files (wav, flac, ogg, mp3) found under {tmp_path / 'empty'}" in proc.stdout + proc.stderr


def test_bad_config_fails_before_any_work(tmp_path):
    proc = run_cli("features.n_mels=0", f"features.cache_dir={tmp_path / 'c'}", f"hydra.run.dir={tmp_path / 'r'}",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "features.n_mels must be a positive integer, got 0" in proc.stdout + proc.stderr
    assert not (tmp_path / "c").exists()


def test_strict_stops_at_first_bad_file(corpus, tmp_path):
    proc = run_cli(f"data.path={corpus}", "data.strict=true", "executor.kind=serial",
                   f"features.cache_dir={tmp_path / 'c'}", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path,
                   check=False)
    assert proc.returncode == 2
    assert "data.strict=true" in proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_leaves_no_half_written_file_and_resumes(tmp_path, sig):
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(120):
        sf.write(audio / f"f{i:03d}.wav", (0.1 * rng.standard_normal(SR * 3)).astype(np.float32), SR)
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([EXE, "debug=tiny", f"data.path={audio}", f"features.cache_dir={cache}", "executor.kind=process",
                             f"hydra.run.dir={tmp_path / 'r'}"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    # Wait until some entries are cached, then interrupt the whole process group (as Ctrl-C does).
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cache.rglob("*.npy"))) < 5:
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    done = [p for p in cache.rglob("*.npy")  # one entry of features per file (and none of step embeddings yet)
            if not p.name.endswith(".ungated.npy") and "steps" not in p.relative_to(cache).parts]
    assert 0 < len(done) < 120, "interrupt too late or too early for this test to mean anything"
    assert not [p for p in cache.rglob("*") if p.name.startswith(TMP_PREFIX)]
    for p in done:
        assert np.load(p, allow_pickle=False).shape[1] == 64
    # The folder says it is not a finished run.
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["status"] == "interrupted" and "interrupted" in s["reason"]
    if sig != signal.SIGINT:
        return  # the resume below reads only the cache, which the signal does not change: checked once
    # The next run picks up from the cache.
    run_cli(f"data.path={audio}", f"features.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'r2'}", cwd=tmp_path)
    s = json.loads((tmp_path / "r2" / "summary.json").read_text())
    assert s["cache"]["hits"] >= len(done) and s["files_processed"] == 120


def read_clusters(run_dir):
    with open(run_dir / "clusters.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_demo_fit_then_apply_reproduces_assignments(tmp_path):
    run_cli(f"features.cache_dir={tmp_path / 'c'}", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path)
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["files_processed"] == 34 and s["files_failed"] == 0
    assert (tmp_path / "r" / "failures.csv").read_text() == "path,stage,reason\n"  # a clean folder: the header alone
    assert s["data_path"].endswith(os.path.join("sound_cluster", "demo"))
    rows = read_clusters(tmp_path / "r")
    assert len(rows) == 34 and rows[0].keys() == {"path", "cluster", "confidence", "duration_s", "name"}
    assert {r["path"] for r in rows} >= {"clips/sound_01.wav", "recordings/recording_1.wav"}
    assert len({r["cluster"] for r in rows}) > 1
    assert all(0.25 - 1e-6 <= float(r["confidence"]) <= 1.0 for r in rows)  # K = 4 in debug=tiny
    assert s["clusters"]["sizes"] == [sum(r["cluster"] == str(k) for r in rows) for k in range(4)]
    assert s["metrics"]["n"] == 30 and 0.0 <= s["metrics"]["nmi"] <= 1.0  # the demo's labels.csv
    assert len(s["training"]["history"]["loss"]) == s["training"]["epochs"] >= 1
    assert (tmp_path / "r" / "models" / "embedding.keras").is_file()
    with np.load(tmp_path / "r" / "posteriors" / "clips" / "sound_01.wav.npz") as z:
        assert z["posteriors"].shape[1] == 4 and z["embedding"].shape[0] == z["posteriors"].shape[0]
    assert list((tmp_path / "r" / "tensorboard").rglob("events.out.tfevents.*"))

    # Apply: no training, the same assignments on the same files.
    run_cli("task=apply", f"models={tmp_path / 'r' / 'models'}", f"features.cache_dir={tmp_path / 'c'}",
            f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path)
    applied = read_clusters(tmp_path / "a")
    assert [(r["path"], r["cluster"]) for r in applied] == [(r["path"], r["cluster"]) for r in rows]
    sa = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert "training" not in sa and sa["task"] == "apply"
    # A fit reuses the step embeddings it clustered; apply runs the saved encoder from the start: one result.
    for name in ("clips/sound_01.wav.npz", "recordings/recording_1.wav.npz"):
        with np.load(tmp_path / "r" / "posteriors" / name) as fit, np.load(tmp_path / "a" / "posteriors" / name) as ap:
            np.testing.assert_allclose(ap["embedding"], fit["embedding"], atol=1e-5)
            np.testing.assert_allclose(ap["posteriors"], fit["posteriors"], atol=1e-5)


def test_apply_without_models_is_a_config_error(tmp_path):
    proc = run_cli("task=apply", f"models={tmp_path / 'none'}", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path,
                   check=False)
    assert proc.returncode == 2
    assert f"models must be a folder holding embedding.keras (a run's models/ folder), got '{tmp_path / 'none'}'" \
        in proc.stdout + proc.stderr
