"""executor.kind=dask on the real engine: a LocalCluster, and a scheduler and workers started as processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from sound_cluster.config import ExecutorParams
from sound_cluster.errors import ConfigError
from sound_cluster.ingest.failures import Failure
from sound_cluster.run.executor import close_dask_clients, dask_client, map_files
from tests.conftest import make_params
from tests.run.test_cli import run_cli
from tests.run.test_executor import _explode, assert_same_as_serial, check_chunked_map

# Workers started as separate processes cannot import this test module: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
DASK = shutil.which("dask") or str(Path(sys.executable).parent / "dask")


def test_dask_local_cluster_gives_the_serial_results(corpus, tmp_path):
    assert_same_as_serial(corpus, tmp_path, "dask")
    out = map_files(_explode, [Path("a"), Path("b"), Path("c")], params=ExecutorParams(kind="dask", n_workers=2),
                    stage="x")
    assert out[0] == "a" and out[2] == "c" and out[1] == Failure(Path("b"), "x", "RuntimeError: boom")


def test_dask_sends_files_in_chunks_and_keeps_each_result():
    check_chunked_map("dask")


def _dies_once(path: Path) -> str:
    marker = path.parent / "died-once"
    if path.name == "f05" and not marker.exists():
        marker.touch()
        os._exit(1)  # the worker dies, as on an out-of-memory kill
    return path.name


def test_a_chunk_whose_worker_died_runs_again_file_by_file_and_loses_nothing(tmp_path):
    import dask
    import distributed  # noqa: F401 - its defaults must be in dask's config before the override below

    close_dask_clients()
    try:
        # One death makes a KilledWorker (the default allows 3): the chunks the dead worker held are
        # then split and each of their files runs again alone, on the restarted worker.
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            items = [tmp_path / f"f{i:02d}" for i in range(64)]  # 2 files a task on 2 workers
            out = map_files(_dies_once, items, params=ExecutorParams(kind="dask", n_workers=2), stage="x")
    finally:
        close_dask_clients()
    assert (tmp_path / "died-once").exists()
    assert out == [p.name for p in items]


@pytest.mark.slow
def test_a_whole_run_on_dask_writes_what_serial_writes(tmp_path):
    from sound_cluster.run.pipeline import run
    from sound_cluster.run.run_dir import demo_path

    # Dask through the command line (the client closes and the process ends); the serial reference in this process.
    runs = {kind: tmp_path / kind for kind in ("serial", "dask")}
    common = (f"data.path={demo_path() / 'clips'}", "executor.n_workers=2", "output.report=false")
    run(make_params("debug=tiny", *common, "executor.kind=serial", f"features.cache_dir={tmp_path / 'cache-serial'}"),
        output_dir=runs["serial"])
    run_cli(*common, "executor.kind=dask", f"features.cache_dir={tmp_path / 'cache-dask'}",
            f"hydra.run.dir={runs['dask']}", cwd=tmp_path)
    assert (runs["serial"] / "clusters.csv").read_bytes() == (runs["dask"] / "clusters.csv").read_bytes()
    trees = sorted(p.relative_to(runs["serial"]) for p in (runs["serial"] / "trees").rglob("*.json"))
    assert trees and all((runs["serial"] / t).read_bytes() == (runs["dask"] / t).read_bytes() for t in trees)
    # executor.inference=auto: under dask the encoder ran on the workers, the serial run's in its main process
    assert json.loads((runs["dask"] / "summary.json").read_text())["executor"] == {
        "kind": "dask", "n_workers": 2, "inference": "workers"}
    assert json.loads((runs["serial"] / "summary.json").read_text())["executor"]["inference"] == "main"
    for p in sorted((runs["serial"] / "posteriors").rglob("*.npz")):
        with np.load(p) as x, np.load(runs["dask"] / p.relative_to(runs["serial"])) as y:
            np.testing.assert_allclose(x["posteriors"], y["posteriors"], rtol=1e-5, atol=1e-6)


def test_address_needs_dask_and_a_scheme():
    with pytest.raises(ConfigError, match=r"executor\.address .*executor\.kind=dask"):
        make_params("executor.kind=serial", "executor.address=tcp://127.0.0.1:8786")
    with pytest.raises(ConfigError, match=r"executor\.address"):
        make_params("executor.kind=dask", "executor.address=127.0.0.1")


def _slow_pid(path: Path) -> tuple[str, int]:
    (path.parent / f"started-{os.getpid()}-{path.name}").touch()  # lets the test kill a worker mid-file
    time.sleep(0.3)
    return path.name, os.getpid()


@pytest.fixture
def scheduler(tmp_path):
    """A dask scheduler and two workers, each its own process on 127.0.0.1 (workers without a nanny)."""
    sched_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen([DASK, "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                                           "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path))
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        client = dask_client(ExecutorParams(kind="dask", address=address))
        client.wait_for_workers(2, timeout=60)
        yield address, procs[1:]
    finally:
        close_dask_clients()  # before the scheduler goes, so the client does not try to reconnect
        for p in reversed(procs):
            p.kill()
            p.wait()


@pytest.mark.slow
def test_a_killed_worker_loses_no_file(scheduler, tmp_path):
    address, workers = scheduler
    victim = workers[0].pid
    items = [tmp_path / f"f{i:02d}" for i in range(24)]
    started = {}

    def kill_mid_file():
        # Kill one worker while it holds a file, from the side, as an out-of-memory kill would.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            mine = sorted(tmp_path.glob(f"started-{victim}-*"))
            if mine:
                started["files"] = [m.name.rsplit("-", 1)[1] for m in mine]
                os.kill(victim, signal.SIGKILL)
                return
            time.sleep(0.02)

    import threading

    t = threading.Thread(target=kill_mid_file)
    t.start()
    out = map_files(_slow_pid, items, params=ExecutorParams(kind="dask", address=address), stage="x")
    t.join()
    assert workers[0].wait(timeout=10) == -signal.SIGKILL and started["files"]
    assert [name for name, _ in out] == [p.name for p in items]  # every file, in order, none a Failure
    by_name = dict(out)
    # The file the victim held when it died was run again, by the survivor.
    assert by_name[started["files"][-1]] == workers[1].pid
