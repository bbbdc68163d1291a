"""The encoder's inference as per-file work on the executor's workers (``executor.inference=workers``).

Each worker process loads the encoder once, from a ``.keras`` file every worker can read (the run folder's
``.scratch/`` or ``models/``: workers already share the run folder and the feature cache), and runs it with one
TensorFlow thread, as the pool's workers fill the cores between them. A worker writes what it makes where the run
keeps it (a fit's step embeddings in the step cache, every file's posteriors in the run folder) and sends back a few
numbers per file, so the main process never holds the files' step embeddings for the stages it hands out.

Run in the main process (``executor.kind=serial``), the same functions give the same files.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sound_cluster.embed.clusters import assign
from sound_cluster.embed.step_cache import StepCache
from sound_cluster.run_folder import RunFolder

_LOADED: dict[tuple[str, int, int], Any] = {}  # this process's encoder (one at a time), by file, stamp and size


def _one_tf_thread() -> None:
    """One TensorFlow thread in this process, and GPU memory taken as needed (several workers may share a GPU),
    unless TensorFlow already runs here (a serial run's main process)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:  # already initialised: it stays as it is
        pass


def runner(encoder_path: str):
    """The encoder saved at ``encoder_path``, ready to run over files (:class:`Posteriors`), loaded once per process.

    Parameters
    ----------
    encoder_path : str
        A ``.keras`` file; loaded again only when the file changes.
    """
    from sound_cluster.embed.encoder import load_encoder
    from sound_cluster.embed.inference import Posteriors

    st = os.stat(encoder_path)
    key = (str(encoder_path), st.st_mtime_ns, st.st_size)
    run = _LOADED.get(key)
    if run is None:
        _one_tf_thread()
        _LOADED.clear()  # one encoder at a time: a worker that meets the next run's drops this one
        run = _LOADED[key] = Posteriors(load_encoder(str(encoder_path)))
    return run


@dataclass(frozen=True)
class EmbedJob:
    """One file to embed: ``path`` its audio (named in failures), ``frames`` its features in the feature cache."""

    path: Path
    frames: Path


@dataclass(frozen=True)
class Embedded:
    """What a worker sends back for one embedded file.

    Attributes
    ----------
    clip : np.ndarray [shape=(embedding_dim,), dtype=float32]
        The mean of its step embeddings.
    n_steps : int
    cached : bool
        Read from the step cache, not run through the encoder.
    """

    clip: np.ndarray
    n_steps: int
    cached: bool


def embed_job(job: EmbedJob, *, encoder_path: str, steps_dir: str, dim: int) -> Embedded:
    """A file's step embeddings, into the step cache at ``steps_dir`` unless they are there already.

    Raises
    ------
    OSError
        The step cache cannot store them (the main process reads them from there).
    """
    cache = StepCache.at(Path(steps_dir), dim=dim)
    emb = cache.get(job.frames)
    cached = emb is not None
    if emb is None:
        emb = runner(encoder_path)(np.load(job.frames, mmap_mode="r", allow_pickle=False))[0]
        if not cache.put(job.frames, emb):
            raise OSError(f"the step cache ({steps_dir}) cannot store this file's step embeddings")
    return Embedded(emb.mean(axis=0), len(emb), cached)


def embed_fn(*, encoder_path: Path, cache: StepCache) -> functools.partial:
    """:func:`embed_job` bound to the run's encoder file and step cache, for :func:`map_files`."""
    return functools.partial(embed_job, encoder_path=str(encoder_path), steps_dir=str(cache.dir), dim=cache.dim)


@dataclass(frozen=True)
class AssignJob:
    """One file to assign.

    Attributes
    ----------
    path : Path
        Its audio (named in failures).
    frames : Path
        Its features; the encoder runs over them where ``steps`` is None.
    steps : Path or None
        Its step embeddings on disk: a step-cache entry (``.npy``) or an earlier run's posteriors (``.npz``).
    name : str
        Its output name (``posteriors/<name>.npz``).
    spans : tuple of (int, int, int)
        Segment units: each unit's start and end step and cluster, to say whether the head agrees.
    """

    path: Path
    frames: Path
    steps: Path | None
    name: str
    spans: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True)
class AssignedFile:
    """A file's cluster (the argmax of its mean posterior), its confidence, and per unit whether the head agrees."""

    cluster: int
    confidence: float
    agree: tuple[bool, ...]


def read_steps(path: Path) -> np.ndarray:
    """Step embeddings from a step-cache entry (``.npy``) or a run's posteriors (``.npz``'s ``embedding``)."""
    if Path(path).suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return z["embedding"]
    return np.load(path, allow_pickle=False)


def assign_file(run, *, steps, frames: Path, name: str, spans, folder: RunFolder) -> AssignedFile:
    """A file's posteriors under the run's head, written to ``folder``'s ``posteriors/``; its cluster.

    Parameters
    ----------
    run : Posteriors
        The encoder with the run's head.
    steps : np.ndarray or StoredRows or None [shape=(n_steps, D)]
        The file's step embeddings, where known (only the head runs); None runs the encoder over ``frames``.
    frames : Path
        Its features.
    name : str
        Its output name.
    spans : iterable of (int, int, int)
        Segment units: each unit's start and end step and cluster.
    """
    if steps is not None:
        emb = np.asarray(steps)
        post = run.from_embeddings(emb)
    else:
        emb, post = run(np.load(frames, mmap_mode="r", allow_pickle=False))
    folder.write_posteriors(name, embedding=emb, posteriors=post)
    k, conf = assign(post)
    return AssignedFile(k, conf, tuple(int(post[a:b].mean(axis=0).argmax()) == c for a, b, c in spans))


def assign_job(job: AssignJob, *, encoder_path: str, run_dir: str) -> AssignedFile:
    """:func:`assign_file` on a worker: the encoder loaded once per process, the steps read where they lie."""
    return assign_file(runner(encoder_path), steps=None if job.steps is None else read_steps(job.steps),
                       frames=job.frames, name=job.name, spans=job.spans, folder=RunFolder(Path(run_dir)))
