"""run(params, output_dir): the stages in order, per-file failures captured, outputs written."""

from __future__ import annotations

import functools
import logging
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from . import __version__
from .audio import decode, discover, probe, read_bytes
from .config import FeatureParams, Params
from .errors import AudioError
from .executor import map_files
from .failures import Failure, write_failures
from .features import FeatureCache, content_key, log_mel, warm_up
from .io_utils import atomic_write_json

log = logging.getLogger(__name__)


def demo_path() -> Path:
    """The folder of demo audio bundled with the package (used when ``data.path`` is null)."""
    return Path(str(resources.files("sound_cluster") / "demo"))


@dataclass(frozen=True)
class FileFeatures:
    """One file's log-mel frames, stored in the feature cache.

    Attributes
    ----------
    path : Path
        The audio file (absolute).
    cache_path : Path
        ``.npy`` of shape (n_frames, n_mels), float32.
    duration_s : float
        Duration of the audio in seconds.
    n_frames : int
        Number of log-mel frames.
    cache_hit : bool
        True when the frames came from the cache.
    """

    path: Path
    cache_path: Path
    duration_s: float
    n_frames: int
    cache_hit: bool


def extract_features(path: Path, *, cache: FeatureCache) -> FileFeatures:
    """Per-file job of the features stage: cached log-mel frames of ``path``.

    Raises
    ------
    AudioError
        The file cannot be used (see :func:`sound_cluster.audio.decode`).
    """
    params: FeatureParams = cache.params
    try:
        st = os.stat(path)
    except OSError as err:
        raise AudioError(f"cannot read file: {err.strerror}") from None
    entry = cache.lookup(path, st)
    if entry is not None:  # unchanged since a run with these settings: nothing to read
        return FileFeatures(Path(path), cache.path(entry.key), entry.duration_s, entry.n_frames, True)
    data = read_bytes(path)
    key = content_key(data)
    info = probe(data)
    cached = cache.get(key, mmap=True)
    if cached is not None:  # same content seen under another name or before a touch
        n_frames, hit = int(cached.shape[0]), True
    else:
        y = decode(data, sample_rate=params.sample_rate, min_samples=params.n_fft, info=info)
        try:
            frames = log_mel(y, params=params)
        except Exception as err:  # noqa: BLE001 - librosa's own errors, reported per file
            raise AudioError(f"feature extraction failed: {type(err).__name__}: {err}", stage="features") from None
        cache.put(key, frames)
        n_frames, hit = int(frames.shape[0]), False
    cache.remember(path, st, key=key, duration_s=info.duration_s, n_frames=n_frames)
    return FileFeatures(Path(path), cache.path(key), info.duration_s, n_frames, hit)


@dataclass
class RunResult:
    """What a run produced: features per usable file, failures, and the summary written."""

    root: Path
    features: list[FileFeatures]
    failures: list[Failure]
    summary: dict[str, Any] = field(default_factory=dict)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 4)


def library_versions() -> dict[str, str]:
    import hydra
    import librosa
    import numpy
    import soundfile

    return {
        "sound_cluster": __version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "librosa": librosa.__version__,
        "soundfile": soundfile.__version__,
        "libsndfile": soundfile.__libsndfile_version__,
        "hydra": hydra.__version__,
    }


def run(params: Params, *, output_dir: Path, config: dict[str, Any] | None = None) -> RunResult:
    """Run the pipeline on ``params.data.path`` and write the run's files into ``output_dir``.

    Parameters
    ----------
    params : Params
        Checked parameters (:func:`sound_cluster.config.params_from_config`).
    output_dir : Path
        The run folder; ``failures.csv`` and ``summary.json`` are written there.
    config : dict, optional
        The resolved config, recorded in ``summary.json``.

    Raises
    ------
    AudioError
        ``data.path`` does not exist or holds no audio, no file could be used, or
        ``data.strict`` is set and a file failed.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    root = params.data.path or demo_path()
    timer = _Timer()

    with timer.stage("discover"):
        files, failures = discover(root, extensions=params.data.extensions,
                                   follow_symlinks=params.data.follow_symlinks)
    if params.data.strict and failures:
        f = failures[0]
        raise AudioError(f"{f.path}: {f.reason} (data.strict=true stops at the first problem)", stage=f.stage)
    if not files:
        raise AudioError(f"no audio files ({', '.join(params.data.extensions)}) found under {root}",
                         stage="discover")
    log.info("found %d audio files under %s", len(files), root)

    cache = FeatureCache(params.features.resolved_cache_dir(), params=params.features)
    cache.prepare()
    with timer.stage("features"):
        if params.executor.kind == "process":
            warm_up(params.features)  # forked workers inherit the loaded libraries
        results = map_files(
            functools.partial(extract_features, cache=cache),
            files,
            params=params.executor,
            stage="features",
            progress=params.output.progress,
            stop_on_failure=params.data.strict,
        )
    feats = [r for r in results if isinstance(r, FileFeatures)]
    failures += [r for r in results if isinstance(r, Failure)]
    for f in failures:
        log.warning("skipped %s (%s): %s", f.path, f.stage, f.reason)

    write_failures(failures, output_dir / "failures.csv", root=root if root.is_dir() else root.parent)
    hits = sum(f.cache_hit for f in feats)
    summary: dict[str, Any] = {
        "sound_cluster_version": __version__,
        "task": params.task,
        "data_path": str(root),
        "files_found": len(files),
        "files_processed": len(feats),
        "files_failed": len(failures),
        "audio_seconds": round(sum(f.duration_s for f in feats), 3),
        "frames": sum(f.n_frames for f in feats),
        "frame_rate_hz": params.features.frame_rate_hz,
        "cache": {"dir": str(cache.dir), "hits": hits, "misses": len(feats) - hits},
        "executor": {"kind": params.executor.kind, "n_workers": params.executor.n_workers},
        "stage_seconds": timer.seconds,
        "versions": library_versions(),
        "config": config or {},
    }
    atomic_write_json(output_dir / "summary.json", summary)
    log.info(
        "processed %d of %d files (%.1f s of audio, %d cache hits); %d failed; outputs in %s",
        len(feats), len(files), summary["audio_seconds"], hits, len(failures), output_dir,
    )
    if not feats:
        raise AudioError(f"none of the {len(files)} audio files under {root} could be used; "
                         f"reasons in {output_dir / 'failures.csv'}", stage="features")
    return RunResult(root, feats, failures, summary)
