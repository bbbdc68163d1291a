"""Faults and hostile inputs: damaged cache entries, odd names, reused or unwritable folders,
settings that do not fit together, a parent killed under its workers, the umask."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sound_cluster.config import FeatureParams, saved_model_params
from sound_cluster.errors import ConfigError
from sound_cluster.ingest.extract import extract_features
from sound_cluster.ingest.features import FeatureCache
from sound_cluster.ingest.names import output_names
from sound_cluster.io_utils import atomic_write_text
from tests.conftest import SR, make_params, tone
from tests.run.test_cli import run_cli

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def test_damaged_cache_entry_is_recomputed_not_fatal(tmp_path, caplog):
    sf.write(tmp_path / "a.wav", tone(440, 1.0), SR)
    cache = FeatureCache(tmp_path / "cache", params=FeatureParams())
    cache.prepare()
    first = extract_features(tmp_path / "a.wav", cache=cache)
    good = np.load(first.cache_path)
    os.truncate(first.cache_path, 1000)  # a copy cut short, a full disk
    again = extract_features(tmp_path / "a.wav", cache=cache)
    assert not again.cache_hit and "damaged cache entry" in caplog.text
    assert np.array_equal(np.load(again.cache_path, mmap_mode="r"), good)
    # An entry of the wrong shape (another array written in its place) is caught too.
    np.save(first.cache_path, np.zeros((3, 5), dtype=np.float32))
    assert not extract_features(tmp_path / "a.wav", cache=cache).cache_hit
    assert extract_features(tmp_path / "a.wav", cache=cache).cache_hit


def test_output_names_never_collide_or_overflow(tmp_path):
    root = Path("/data")
    latin1 = Path(os.fsdecode(b"/data/\xe9.wav"))  # not UTF-8
    literal = root / "\\xe9.wav"  # the same characters, literally
    long = root / ("x" * 250 + ".wav")
    names = output_names([latin1, literal, long, root / "sub/a.wav"], root=root)
    assert len(set(names)) == 4
    assert names[1] == "\\xe9.wav" and names[3] == "sub/a.wav"  # plain names stay as they are
    assert names[0].startswith("\\xe9~") and names[0].endswith(".wav")
    assert len(names[2].encode()) <= 200 and names[2].endswith(".wav")
    # Long names write: temporary names shrink to fit the 255-byte limit too.
    atomic_write_text(tmp_path / ("y" * 250 + ".json"), "{}")
    assert (tmp_path / ("y" * 250 + ".json")).read_text() == "{}"


def _odd_corpus(root: Path) -> Path:
    root.mkdir()
    sf.write(root / "plain.wav", tone(300, 0.6), SR)
    sf.write(root / ("n" * 240 + ".wav"), tone(500, 0.6), SR)  # legal (255 max), too long once ".json" is added
    sf.write(bytes(root) + b"/\xe9.wav", tone(700, 0.6), SR)  # not UTF-8 ...
    sf.write(root / "\\xe9.wav", tone(900, 0.6), SR)  # ... and a name that reads the same when escaped
    (root / "folder.wav").mkdir()  # a folder named like a file
    return root


@pytest.mark.slow
def test_odd_names_reused_folder_and_umask_end_to_end(tmp_path):
    corpus = _odd_corpus(tmp_path / "corpus")
    run_dir = tmp_path / "run"
    old = os.umask(0o022)
    try:
        run_cli(f"data.path={corpus}", f"features.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}",
                cwd=tmp_path)
    finally:
        os.umask(old)
    with open(run_dir / "clusters.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and len({r["name"] for r in rows}) == 4
    for r in rows:  # every file has its own tree, built from its own posteriors
        doc = json.loads((run_dir / "trees" / f"{r['name']}.json").read_text(encoding="utf-8"))
        assert doc["source"] == r["path"]
        assert (run_dir / "posteriors" / f"{r['name']}.npz").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["files_found"] == 4 == summary["files_processed"] + summary["files_failed"]
    with open(run_dir / "failures.csv", newline="", encoding="utf-8") as fh:
        failures = list(csv.DictReader(fh))
    assert [f["path"] for f in failures] == ["folder.wav"] and "folder" in failures[0]["reason"]
    # Files follow the umask (0644 under 022), not mkstemp's 0600.
    for p in [run_dir / "clusters.csv", run_dir / "summary.json", run_dir / "report.html",
              *run_dir.glob("trees/*.json"), *(tmp_path / "cache").rglob("*.npy")]:
        assert p.stat().st_mode & 0o777 == 0o644, p

    # The same folder again: refused before any work, and nothing of the first run is touched.
    proc = run_cli(f"data.path={corpus}", f"features.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr + proc.stdout
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "complete"
    # With output.overwrite=true the old outputs go first: no stale trees mixed in.
    (run_dir / "trees" / "stale.wav.json").write_text("{}")
    (corpus / "plain.wav").unlink()
    run_cli(f"data.path={corpus}", f"features.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}",
            "output.overwrite=true", cwd=tmp_path)
    assert len(list((run_dir / "trees").rglob("*.json"))) == 3
    again = json.loads((run_dir / "summary.json").read_text())["cache"]  # the same settings: every file from the cache
    assert again["hits"] == 3 and again["misses"] == 0
    assert len(list((run_dir / "tensorboard").rglob("events*"))) <= 2  # one train, maybe one validation


def test_unwritable_cache_and_run_folder_give_one_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    sf.write(tmp_path / "a.wav", tone(), SR)
    # Under a regular file nothing can be created, root or not (permissions do not stop root).
    proc = run_cli(f"data.path={tmp_path / 'a.wav'}", f"features.cache_dir={blocker / 'cache'}",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "features.cache_dir" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["status"] == "failed" and "features.cache_dir" in s["reason"]

    proc = run_cli(f"data.path={tmp_path / 'a.wav'}", f"hydra.run.dir={blocker / 'run'}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "hydra.run.dir" in proc.stderr and str(blocker) in proc.stderr


@pytest.mark.skipif(IS_ROOT, reason="running as root: folder permissions do not apply")
def test_read_only_cache_folder_by_permissions(tmp_path):  # pragma: no cover - not run as root
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    sf.write(tmp_path / "a.wav", tone(), SR)
    proc = run_cli(f"data.path={tmp_path / 'a.wav'}", f"features.cache_dir={ro}", f"hydra.run.dir={tmp_path / 'r'}",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "features.cache_dir" in proc.stdout + proc.stderr


def test_settings_that_do_not_fit_together_fail_before_work():
    with pytest.raises(ConfigError, match=r"train.augment.mel_shift_bins must be below features.n_mels=2, got 3"):
        make_params("features.n_mels=2")
    with pytest.raises(ConfigError, match=r"train.augment.time_mask_frames"):
        make_params("train.crop_frames=4")
    make_params("features.n_mels=16", "model.init=scratch")  # fits (the pretrained encoder needs 64)


def test_saved_model_params_are_checked_like_a_runs():
    good = {"features": FeatureParams().key_fields(), "model": {"n_clusters": 4}}
    feats, model = saved_model_params(good, source="m/params.json")
    assert feats.hop_length == 160 and model.n_clusters == 4
    bad = {"features": {**FeatureParams().key_fields(), "hop_length": 0}, "model": {}}
    with pytest.raises(ConfigError, match=r"m/params.json: features.hop_length must be a positive integer, got 0"):
        saved_model_params(bad, source="m/params.json")
    with pytest.raises(ConfigError, match="must hold the objects"):
        saved_model_params({"features": 3}, source="m/params.json")


def test_apply_refuses_a_broken_params_json(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name in ("embedding.keras", "merge_model.keras", "clusters.json"):
        (models / name).write_bytes(b"")
    (models / "params.json").write_text(json.dumps({"features": {**FeatureParams().key_fields(), "hop_length": 0},
                                                    "model": {}}))
    sf.write(tmp_path / "a.wav", tone(), SR)
    proc = run_cli("task=apply", f"models={models}", f"data.path={tmp_path / 'a.wav'}",
                   f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "hop_length must be a positive integer, got 0" in out
    assert "Traceback" not in out


def test_n_workers_capped_at_usable_cores(caplog):
    from sound_cluster.run.preflight import usable_cores

    params = make_params("executor.n_workers=64")
    assert params.executor.n_workers == usable_cores()
    assert "executor.n_workers=64" in caplog.text


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return False
    return state != b"Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("start", ["fork", "forkserver"])
def test_workers_exit_when_the_parent_is_killed(tmp_path, start):
    # The pool as the pipeline makes it: forked before TensorFlow is imported, from a fork server
    # after (made to believe TensorFlow is loaded). The parent is then SIGKILLed mid-map.
    (tmp_path / "slowjob.py").write_text("import time\ndef slow(path):\n    time.sleep(30)\n")
    script = textwrap.dedent(f"""
        import sys, types
        from pathlib import Path
        if {start!r} == "forkserver":
            sys.modules["tensorflow"] = types.ModuleType("tensorflow")
        from sound_cluster.config import ExecutorParams
        from sound_cluster.run.executor import map_files
        from slowjob import slow
        print("ready", flush=True)
        map_files(slow, [Path(f"f{{i}}.wav") for i in range(8)], params=ExecutorParams(kind="process", n_workers=2),
                  stage="test")
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.time() + 60
        workers: set[int] = set()
        while time.time() < deadline and len(workers) < 2:
            workers = _descendants(proc.pid)
            time.sleep(0.2)
        assert len(workers) >= 2, "the pool did not start"
        time.sleep(1.0)
        workers = _descendants(proc.pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.2)
    left = [p for p in workers if _alive(p)]
    for p in left:  # do not leave them behind even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"processes outlived their killed parent: {left}"


def test_files_that_cannot_be_assigned_are_in_failures_even_when_none_can(tmp_path):
    """Every cache entry gone before assigning: the run stops, and the list it points to holds the reasons."""
    from sound_cluster.errors import AudioError
    from sound_cluster.ingest.extract import FileFeatures
    from sound_cluster.run.embed_stage import fit_models
    from sound_cluster.run.run_dir import Timer as _Timer
    from sound_cluster.run_folder import RunFolder

    params = make_params("task=fit")  # the shipped encoder, frozen: nothing is read before assigning
    feats = [FileFeatures(tmp_path / f"{i}.wav", tmp_path / f"gone{i}.npy", 1.0, 100, True) for i in range(2)]
    failures = []
    with pytest.raises(AudioError, match="failures.csv"):
        fit_models(feats, params=params, folder=RunFolder(tmp_path / "run"), rel_root=tmp_path, timer=_Timer(),
                   failures=failures)
    assert [(f.path, f.stage) for f in failures] == [(x.path, "assign") for x in feats]
    assert all("gone" in f.reason for f in failures)


KILLER = '''
import os, signal, sys, types
from pathlib import Path
if sys.argv[2] == "forkserver":
    sys.modules["tensorflow"] = types.ModuleType("tensorflow")
from sound_cluster.config import ExecutorParams
from sound_cluster.ingest.failures import Failure
from sound_cluster.run.executor import map_files
from killjob import work
items = [Path(sys.argv[1]) / f"f{i}.wav" for i in range(40)]
out = map_files(work, items, params=ExecutorParams(kind="process", n_workers=2), stage="test")
print("RESULT", ",".join("F:" + r.reason if isinstance(r, Failure) else r for r in out))
'''

KILLJOB = '''
import os, signal
from pathlib import Path

def work(path):
    marker = path.with_suffix(".seen")
    if path.name == "f7.wav" and not marker.exists():  # killed once, mid-task, as the OOM killer would
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    if path.name == "f23.wav":  # kills its worker every time
        os.kill(os.getpid(), signal.SIGKILL)
    return path.name
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL of a pool worker")
@pytest.mark.parametrize("start", ["fork", "forkserver"])
def test_a_killed_worker_costs_no_file_and_a_file_that_kills_every_worker_fails_alone(tmp_path, start):
    """A worker SIGKILLed mid-file broke the whole pool: the run hung (the other workers ignored the pool's
    SIGTERM) or its files failed. Now the files in flight run again, alone, in a new pool."""
    (tmp_path / "killjob.py").write_text(KILLJOB)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path), start], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = proc.stdout.split("RESULT ", 1)[1].strip().split(",")
    assert len(results) == 40
    for i, r in enumerate(results):
        if i == 23:
            assert r.startswith("F:") and "died 2 times" in r
        else:
            assert r == f"f{i}.wav", (i, r)
    assert "a worker process died" in proc.stderr
