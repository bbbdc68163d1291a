"""Map a per-file function over files: ``serial``, ``process`` (a local process pool) or ``dask``.

A file's exception comes back as that file's :class:`~sound_cluster.ingest.failures.Failure`, never
as a crash of the whole map, and results keep the order of the inputs whatever the executor,
so all three give identical output. ``dask`` runs on ``dask.distributed``: a ``LocalCluster``
started here, or the scheduler at ``executor.address``; a worker that dies mid-file has its
files run again elsewhere by the scheduler, and a file that kills every worker it meets becomes
a failure row. Both pools send files in chunks (:func:`chunk_size`); a chunk whose workers all
died is split, so only the file that kills them fails.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from sound_cluster.config import ExecutorParams
from sound_cluster.errors import AudioError
from sound_cluster.ingest.failures import Failure
from sound_cluster.run.preflight import usable_cores

log = logging.getLogger(__name__)

# Modules imported once in the fork server, so each worker starts with them loaded.
_PRELOAD = ["numpy", "soundfile", "librosa.feature", "sound_cluster.ingest.audio", "sound_cluster.ingest.features",
            "sound_cluster.segment.fold"]


def _mp_context() -> mp.context.BaseContext:
    """``fork`` while this process is single-threaded enough to fork safely, else ``forkserver``.

    Forked workers inherit the parent's imported and warmed-up libraries (importing librosa's
    feature module alone takes about 1.6 s per process here), so a pool starts in milliseconds.
    TensorFlow starts thread pools that a fork would copy in a locked state, so once it is
    imported the workers come from a clean fork server instead.
    """
    if sys.platform.startswith("linux") and "tensorflow" not in sys.modules:
        return mp.get_context("fork")
    ctx = mp.get_context("forkserver" if sys.platform != "win32" else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def _process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (the pid was reused): ours is gone
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc: trust os.kill


def _watch_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """Exit this worker as soon as the run's main process is gone (SIGKILL, out-of-memory kill).

    Workers ignore SIGINT and SIGTERM (below), so without this they would outlive a parent that
    never got to shut its pool down. A thread, because a pool worker may be a grandchild (from
    the fork server), where the kernel's parent-death signal would watch the wrong process.
    """
    while _process_alive(parent_pid):
        time.sleep(interval_s)
    os._exit(1)


def _init_worker(parent_pid: int | None = None) -> None:
    """Worker initializer.

    Each worker leaves the run's process group: Ctrl-C at a terminal and a SIGTERM sent to the
    whole group reach the main process only, which stops handing out files, lets the files in hand
    finish (their cache writes are atomic either way) and shuts its pool down. SIGTERM sent to the
    worker itself keeps its default, so a pool that breaks (one worker killed) can end the others;
    a worker that ignored it would never be joined and the run would hang. A watcher thread ends the
    worker if the parent dies without shutting the pool down. One BLAS/OpenMP thread per worker, as
    the workers already fill the cores.
    """
    try:
        os.setpgid(0, 0)
    except OSError:  # not allowed here (e.g. already a group leader): the signals below still apply
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="watch-parent").start()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _item_path(item: Any) -> Path:
    """The file an item stands for: items are paths, or jobs that name their file."""
    return Path(getattr(item, "path", item))


def _guarded(fn: Callable[[Path], Any], item: Path, stage: str) -> Any:
    """Run ``fn(item)``; a failure becomes a :class:`Failure` value instead of an exception."""
    path = _item_path(item)
    try:
        return fn(item)
    except AudioError as err:
        return Failure(path, err.stage, err.reason)
    except (MemoryError, Exception) as err:  # noqa: BLE001 - one file must not end the run
        log.debug("unexpected error on %s", item, exc_info=True)
        return Failure(path, stage, f"{type(err).__name__}: {err}")


class StopOnFailure(AudioError):
    """Raised by :func:`map_files` with ``stop_on_failure=True`` at the first failed file."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"{failure.path}: {failure.reason} (data.strict=true stops at the first bad file)",
                         stage=failure.stage)
        self.failure = failure


def map_files(
    fn: Callable[[Path], Any],
    items: Sequence[Path],
    *,
    params: ExecutorParams,
    stage: str,
    progress: bool = False,
    stop_on_failure: bool = False,
) -> list[Any]:
    """Apply ``fn`` to every item.

    Parameters
    ----------
    fn : callable
        ``fn(path) -> result``; must be picklable (a module-level function or a
        ``functools.partial`` of one) for ``process``.
    items : sequence of Path
        The files.
    params : ExecutorParams
        ``kind`` (``serial`` | ``process`` | ``dask``), ``n_workers`` and ``address``.
    stage : str
        Stage name recorded in failures that are not :class:`AudioError`.
    progress : bool
        Show a tqdm bar; otherwise log a line at every tenth of the work.
    stop_on_failure : bool
        Raise :class:`StopOnFailure` at the first failed file (``data.strict``).

    Returns
    -------
    list
        ``results[i]`` is ``fn(items[i])`` or a :class:`Failure`.
    """
    n = len(items)
    results: list[Any] = [None] * n
    bar = tqdm(total=n, desc=stage, unit="file", disable=not progress, leave=False)
    step = max(1, n // 10)
    done = 0

    def finish(i: int, value: Any) -> None:
        nonlocal done
        results[i] = value
        done += 1
        bar.update(1)
        if not progress and (done % step == 0 or done == n):
            log.info("%s: %d/%d files", stage, done, n)
        if stop_on_failure and isinstance(value, Failure):
            raise StopOnFailure(value)

    n_workers = min(params.n_workers or usable_cores(), max(n, 1))
    # While the bar is drawn, log lines go through tqdm.write, so they never land on the bar's line.
    redirect = logging_redirect_tqdm() if progress else contextlib.nullcontext()
    with redirect:
        try:
            if params.kind == "dask":
                _map_dask(fn, items, stage, params, finish)
            elif params.kind == "serial" or n_workers <= 1 or n <= 1:
                from threadpoolctl import threadpool_limits

                # One BLAS thread, as in each worker: a threaded product sums in another order, and
                # serial and process runs must write the same bits.
                with threadpool_limits(limits=1, user_api="blas"):
                    for i, item in enumerate(items):
                        finish(i, _guarded(fn, item, stage))
            else:
                _map_process(fn, items, stage, n_workers, finish)
        finally:
            bar.close()
    return results


MAX_CHUNK = 32  # files per task at most


def chunk_size(n_items: int, n_workers: int) -> int:
    """Files per task: about 16 tasks per worker, so each task outweighs its own cost of being sent,
    scheduled and answered (measured on 4,522 files of 1.6 s: a task per file left the fold stage at
    1.12x serial on a process pool of 2 and 0.31x on Dask), and a folder of few long files keeps one
    file per task, so the workers stay evenly loaded."""
    return max(1, min(MAX_CHUNK, n_items // (16 * max(1, n_workers))))


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[tuple[int, Any]]]:
    """``(index, item)`` pairs of ``items``, ``size`` at a time."""
    it = iter(enumerate(items))
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _guarded_chunk(fn: Callable[[Path], Any], items: list[Any], stage: str) -> list[Any]:
    """:func:`_guarded` on each item in turn (one task for several files)."""
    return [_guarded(fn, item, stage) for item in items]


MAX_CRASHES = 2  # a file whose worker dies this many times, running alone, fails
SPAWN_RETRIES = 6  # pools in a row that cannot start a worker before the stage gives up (about 13 s of waiting)
SPAWN_ERRORS = (EOFError, ConnectionError)  # what starting a worker raises when the fork server has died


def _map_process(fn, items, stage, n_workers, finish) -> None:
    """Run chunks of files on a process pool; a pool broken by a worker that died is replaced.

    A worker killed mid-task (SIGKILL, out of memory, a crash in a C library) breaks the whole pool,
    and every task in flight with it. Those tasks' files run again, one file at a time and alone, in
    a new pool, so the file that kills its worker is found: after :data:`MAX_CRASHES` deaths on its
    own it becomes a failure, and every other file still gets its result.
    """
    fresh = _chunks(items, chunk_size(len(items), n_workers))
    suspects: collections.deque[int] = collections.deque()  # files in flight when a pool broke
    crashes: dict[int, int] = {}
    spawn_failures = 0
    limit = 4 * n_workers  # tasks in flight: memory stays flat for huge folders, a strict run stops soon
    while True:
        pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=_mp_context(), initializer=_init_worker,
                                   initargs=(os.getpid(),))
        pending: dict[Future, list[int]] = {}
        broken = stalled = False
        try:
            while not broken:
                try:
                    if stalled:  # no new task: the ones in flight finish
                        pass
                    elif suspects and not pending:  # alone in the pool: a death is this file's
                        i = suspects.popleft()
                        try:
                            pending[pool.submit(_guarded_chunk, fn, [items[i]], stage)] = [i]
                        except (BrokenProcessPool, *SPAWN_ERRORS):
                            suspects.appendleft(i)
                            raise
                    elif not suspects:
                        for chunk in itertools.islice(fresh, max(0, limit - len(pending))):
                            indices = [i for i, _ in chunk]
                            try:
                                pending[pool.submit(_guarded_chunk, fn, [item for _, item in chunk], stage)] = indices
                            except BrokenProcessPool:  # taken from the iterator: it runs again
                                suspects.extend(indices)
                                raise
                            except SPAWN_ERRORS:  # not started: the next pool takes it
                                fresh = itertools.chain([chunk], fresh)
                                raise
                except BrokenProcessPool:
                    broken = True
                    break
                except SPAWN_ERRORS as err:
                    # The fork server died while starting a worker (killed, out of memory): the tasks in
                    # flight finish, then a new pool starts another fork server, once the old one is seen to
                    # have ended (until then it counts as running and refuses connections); one that keeps
                    # failing is reported.
                    spawn_failures += 1
                    if spawn_failures > SPAWN_RETRIES:
                        raise RuntimeError(f"{stage}: worker processes cannot be started ({err!r})") from err
                    log.warning("%s: a worker process could not be started (%r); a new pool takes the rest", stage,
                                err)
                    time.sleep(0.1 * 2 ** spawn_failures)
                    stalled = True
                if not pending:
                    if stalled:
                        break
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    indices = pending.pop(fut)
                    try:
                        values = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        pending[fut] = indices  # handled with the others in flight, below
                        continue
                    spawn_failures = 0
                    for i, value in zip(indices, values):
                        finish(i, value)
            if not broken:  # stalled: no worker died, a new pool takes the files not yet started
                continue
            alone = len(pending) == 1 and len(next(iter(pending.values()))) == 1  # it died with none beside it
            for indices in pending.values():
                for i in indices:
                    if alone:
                        crashes[i] = crashes.get(i, 0) + 1
                    if crashes.get(i, 0) >= MAX_CRASHES:
                        finish(i, Failure(_item_path(items[i]), stage,
                                          f"its worker process died {MAX_CRASHES} times while handling this file"))
                    else:
                        suspects.append(i)
            log.warning("%s: a worker process died; %d file(s) in flight run again, one at a time", stage,
                        sum(len(v) for v in pending.values()))
        finally:
            close_pool(pool)


POOL_CLOSE_GRACE_S = 10.0  # a worker still running this long after the pool is closed is terminated


def close_pool(pool: ProcessPoolExecutor, *, grace_s: float = POOL_CLOSE_GRACE_S) -> None:
    """``pool.shutdown(wait=True, cancel_futures=True)`` that cannot hang on a worker killed at the wrong moment.

    An idle worker waits for its next task holding the lock of the pool's task queue. Killed there, it takes the
    lock with it: the other workers can then never read the sentinel that tells them to exit, and a shutdown that
    began before the pool saw the death waits for them forever (a worker killed just as a stage's last file
    finished hung a run). So once any worker has ended abnormally, or ``grace_s`` after the shutdown began, the
    workers still running are killed; every task has finished or been cancelled by then.
    """
    procs = list((getattr(pool, "_processes", None) or {}).values())  # CPython's; where absent, a plain shutdown
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace_s
    while any(p.is_alive() for p in procs):
        if any(p.exitcode not in (None, 0) for p in procs) or time.monotonic() > deadline:
            for p in procs:
                if p.is_alive():
                    p.kill()
            break
        time.sleep(0.02)
    pool.shutdown(wait=True)


def _guarded_chunk_one_thread(fn: Callable[[Path], Any], items: list[Any], stage: str) -> list[Any]:
    """:func:`_guarded_chunk` on one BLAS thread, as a process worker runs (identical bits)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _guarded_chunk(fn, items, stage)


_DASK_CLIENTS: dict[tuple[str | None, int | None], Any] = {}


def dask_client(params: ExecutorParams):
    """The run's ``distributed.Client``, made once per process and closed at exit.

    Without ``params.address`` a ``LocalCluster`` of ``n_workers`` single-threaded worker
    processes is started on 127.0.0.1 (no dashboard); with it, the client connects to that
    scheduler, whose workers must see the same paths (data, feature cache, run folder).
    """
    import atexit

    key = (params.address, params.n_workers)
    client = _DASK_CLIENTS.get(key)
    if client is not None and client.status == "running":
        return client
    from distributed import Client, LocalCluster

    if params.address:
        client = Client(params.address, timeout="30s")
    else:
        cluster = LocalCluster(n_workers=params.n_workers or usable_cores(), threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
        atexit.register(cluster.close)
    atexit.register(client.close)
    _DASK_CLIENTS[key] = client
    log.info("dask: %s with %d workers", params.address or "a LocalCluster", len(client.scheduler_info()["workers"]))
    return client


def close_dask_clients() -> None:
    """Close the clients (and LocalClusters) this process made; the next dask map makes new ones."""
    while _DASK_CLIENTS:
        _, client = _DASK_CLIENTS.popitem()
        cluster = client.cluster
        with contextlib.suppress(Exception):
            client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()


def _map_dask(fn, items, stage, params: ExecutorParams, finish) -> None:
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    client = dask_client(params)
    n_workers = max(1, len(client.scheduler_info()["workers"]))
    limit = 4 * n_workers  # bounded in flight: the scheduler never holds a huge folder's futures at once
    chunks = _chunks(items, chunk_size(len(items), n_workers))
    alone: list[list[tuple[int, Any]]] = []  # files of a chunk that killed its workers, to run one by one
    index: dict[Any, list[int]] = {}
    queue = as_completed()
    token = uuid.uuid4().hex[:12]  # keys must be unique on a scheduler that other runs may share

    def submit(chunk: list[tuple[int, Any]]) -> None:
        indices = [i for i, _ in chunk]
        fut = client.submit(_guarded_chunk_one_thread, fn, [item for _, item in chunk], stage, pure=False,
                            key=f"{stage}-{token}-{indices[0]}-{len(indices)}")
        index[fut] = indices
        queue.add(fut)

    def submit_more() -> None:
        while alone and len(index) < limit:
            submit(alone.pop())
        for chunk in itertools.islice(chunks, max(0, limit - len(index))):
            submit(chunk)

    submit_more()
    try:
        for fut in queue:
            indices = index.pop(fut)
            try:
                values = fut.result()
            except KilledWorker:
                if len(indices) > 1:  # which of its files kills workers is not known: each goes again alone
                    alone.extend([(i, items[i])] for i in indices)
                    values = None
                else:
                    values = [Failure(_item_path(items[indices[0]]), stage,
                                      "every dask worker that ran this file died (KilledWorker)")]
            except Exception as err:  # noqa: BLE001 - a lost connection fails the files in hand, not the run
                values = [Failure(_item_path(items[i]), stage, f"dask: {type(err).__name__}: {err}") for i in indices]
            fut.release()
            for i, value in zip(indices, values or []):
                finish(i, value)
            submit_more()
    finally:
        for fut in index:
            fut.cancel()
