import functools
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from sound_cluster.config import ExecutorParams, FeatureParams
from sound_cluster.ingest.audio import discover
from sound_cluster.ingest.extract import FileFeatures, extract_features
from sound_cluster.ingest.failures import Failure
from sound_cluster.ingest.features import FeatureCache
from sound_cluster.run.executor import map_files
from tests.conftest import BAD


def _run(corpus, cache_dir, kind):
    files, _ = discover(corpus, extensions=("wav", "flac", "ogg", "mp3"))
    cache = FeatureCache(cache_dir, params=FeatureParams())
    cache.prepare()
    fn = functools.partial(extract_features, cache=cache)
    return files, map_files(fn, files, params=ExecutorParams(kind=kind, n_workers=2), stage="features")


def assert_same_as_serial(corpus, tmp_path, kind):
    """``kind`` computes the same features (fresh, bit-equal) and the same failures as ``serial``."""
    files, serial = _run(corpus, tmp_path / "c1", "serial")
    _, other = _run(corpus, tmp_path / "c2", kind)
    assert len(serial) == len(other) == len(files)
    for s, o in zip(serial, other):
        assert type(s) is type(o)
        if isinstance(s, FileFeatures):
            assert not s.cache_hit and not o.cache_hit
            assert np.array_equal(np.load(s.cache_path), np.load(o.cache_path))
            assert s.duration_s == o.duration_s
        else:
            assert s == o
    failed = {Path(r.path).name for r in other if isinstance(r, Failure)}
    assert failed == set(BAD)


def test_serial_and_process_give_identical_results(corpus, tmp_path):
    assert_same_as_serial(corpus, tmp_path, "process")


def _explode(path: Path) -> str:
    if path.name == "b":
        raise RuntimeError("boom")
    return path.name


def _explode_sevens(path: Path) -> str:
    if path.name.endswith("7"):
        raise RuntimeError("seven")
    return path.name


def check_chunked_map(kind: str) -> None:
    """200 files go several to a task; every file keeps its own result or failure, in order."""
    from sound_cluster.run.executor import chunk_size

    items = [Path(f"f{i:03d}") for i in range(200)]
    assert chunk_size(len(items), 2) > 1
    out = map_files(_explode_sevens, items, params=ExecutorParams(kind=kind, n_workers=2), stage="x")
    for p, got in zip(items, out, strict=True):
        assert got == (Failure(p, "x", "RuntimeError: seven") if p.name.endswith("7") else p.name)


def test_process_pool_sends_files_in_chunks_and_keeps_each_result():
    check_chunked_map("process")


def test_one_failure_stays_with_its_file():
    items = [Path("a"), Path("b"), Path("c")]
    for kind in ("serial", "process"):
        out = map_files(_explode, items, params=ExecutorParams(kind=kind, n_workers=2), stage="x")
        assert out[0] == "a" and out[2] == "c"
        assert out[1] == Failure(Path("b"), "x", "RuntimeError: boom")


def _name(path: Path) -> str:
    return path.name


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="stops and kills the fork server by signal")
def test_a_fork_server_that_dies_while_starting_workers_costs_no_file(monkeypatch, caplog):
    """The fork server that starts the workers (once TensorFlow is loaded) is killed while the run waits on it
    for a worker: a new pool starts another, and every file gets its result."""
    import multiprocessing as mp
    import multiprocessing.forkserver as forkserver
    import os
    import signal
    import threading

    from sound_cluster.run import executor

    ctx = mp.get_context("forkserver")
    monkeypatch.setattr(executor, "_mp_context", lambda: ctx)
    forkserver.ensure_running()
    pid = forkserver._forkserver._forkserver_pid
    os.kill(pid, signal.SIGSTOP)  # alive, but it starts no worker: the first pool waits on it
    killer = threading.Timer(1.0, os.kill, (pid, signal.SIGKILL))
    killer.start()
    items = [Path(f"f{i:02d}") for i in range(12)]
    with caplog.at_level(logging.WARNING, logger="sound_cluster.run.executor"):
        out = map_files(_name, items, params=ExecutorParams(kind="process", n_workers=2), stage="x")
    killer.join()
    assert out == [p.name for p in items]
    assert "x: a worker process could not be started" in caplog.text


def _pid(_: int) -> int:
    import os
    import time

    time.sleep(0.2)  # both workers take a task
    return os.getpid()


def _wchan(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/wchan") as fh:
            return fh.read()
    except OSError:
        return ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="stops and kills workers by signal, reads /proc")
def test_closing_a_pool_whose_worker_died_holding_the_task_queue_does_not_hang():
    """An idle worker waits for its next task holding the task queue's lock; killed there once the shutdown has
    begun, it leaves the other worker unable to read the sentinel that ends it. Closing the pool must still end."""
    import multiprocessing as mp
    import os
    import signal
    import threading
    import time
    from concurrent.futures import ProcessPoolExecutor

    from sound_cluster.run.executor import close_pool

    pool = ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("fork"))
    pids = sorted(set(pool.map(_pid, range(2))))
    assert len(pids) == 2
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and all("futex" in _wchan(p) for p in pids):
        time.sleep(0.01)  # until one of them sits in the queue's read, holding its lock
    holder = next((p for p in pids if "futex" not in _wchan(p)), pids[0])
    other = pids[1 - pids.index(holder)]
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    closer = threading.Thread(target=close_pool, args=(pool,), kwargs={"grace_s": 60.0}, daemon=True)
    closer.start()
    time.sleep(0.5)  # the pool has sent its sentinels and waits for the workers to end
    os.kill(holder, signal.SIGKILL)
    os.kill(other, signal.SIGCONT)
    closer.join(timeout=20)
    assert not closer.is_alive(), "closing the pool hung on a worker that cannot read its sentinel"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(p) for p in pids):
        time.sleep(0.05)  # a worker killed as the pool closed may still be exiting
    assert not any(_running(p) for p in pids)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False
