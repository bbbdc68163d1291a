"""The run folder: made ready for a run, the stages timed, and ``summary.json`` written as the run goes."""

from __future__ import annotations

import logging
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from sound_cluster import __version__
from sound_cluster.config import Params
from sound_cluster.errors import ConfigError
from sound_cluster.ingest.extract import FileFeatures
from sound_cluster.ingest.failures import Failure
from sound_cluster.ingest.features import FeatureCache
from sound_cluster.run_folder import RunFolder

log = logging.getLogger(__name__)



def demo_path() -> Path:
    """The folder of demo audio bundled with the package (used when ``data.path`` is null)."""
    return Path(str(resources.files("sound_cluster") / "demo"))


@dataclass
class RunResult:
    """What a run produced: features per usable file, failures, and the summary written."""

    root: Path
    features: list[FileFeatures]
    failures: list[Failure]
    summary: dict[str, Any] = field(default_factory=dict)


class Timer:
    """Seconds spent in each stage (a stage entered twice adds up)."""

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


@dataclass
class RunState:
    """What the summary reports, filled in as the stages go (so an interrupted run can say how far it got)."""

    params: Params
    root: Path
    config: dict[str, Any]
    timer: "Timer"
    cache: FeatureCache | None = None
    files: list[Path] = field(default_factory=list)
    feats: list[FileFeatures] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    references: Any = None  # the run's references (sound_cluster.run.pipeline.References), once read

    @property
    def rel_root(self) -> Path:
        """What the tables' paths are relative to: ``data.path``, or its folder when it names one file."""
        return self.root if self.root.is_dir() else self.root.parent


def prepare_run_dir(output_dir: Path, *, overwrite: bool) -> None:
    """Make ``output_dir`` ready for a new run: refuse one that holds an earlier run, unless ``overwrite``.

    Raises
    ------
    ConfigError
        The folder holds an earlier run's outputs and ``overwrite`` is false, or it cannot be written.
    """
    import shutil

    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        old = RunFolder(output_dir).outputs_present()
        if old and not overwrite:
            raise ConfigError(f"the run folder {output_dir} already holds a run ({', '.join(old)}); choose another "
                              "hydra.run.dir, or set output.overwrite=true to delete those outputs first")
        for name in old:
            p = output_dir / name
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        if old:
            log.warning("output.overwrite=true: removed %s from %s", ", ".join(old), output_dir)
        probe = output_dir / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write to the run folder {output_dir} (hydra.run.dir): "
                          f"{err.strerror or err}") from None


def write_summary(output_dir: Path, state: RunState, *, status: str, reason: str | None = None) -> dict:
    """Write ``summary.json`` for the run so far; ``status`` is running, complete, interrupted or failed."""
    params, feats, failures = state.params, state.feats, state.failures
    hits = sum(f.cache_hit for f in feats)
    by_stage = [f.stage for f in failures]
    summary: dict[str, Any] = {
        "sound_cluster_version": __version__,
        "status": status,
        **({"reason": reason} if reason else {}),
        "task": params.task,
        "data_path": str(state.root),
        # found = processed + failed; problems with folders (unlistable, symlink loops) are counted apart
        "files_found": len(state.files),
        "files_processed": len(feats),
        "files_failed": sum(s not in ("discover", "fold") for s in by_stage),
        "discover_problems": by_stage.count("discover"),
        "trees_failed": by_stage.count("fold"),
        "audio_seconds": round(sum(f.duration_s for f in feats), 3),
        "frames": sum(f.n_frames for f in feats),
        "frame_rate_hz": params.features.frame_rate_hz,
        "cache": {"dir": str(state.cache.dir) if state.cache else None, "hits": hits, "misses": len(feats) - hits},
        "executor": {"kind": params.executor.kind, "n_workers": params.executor.n_workers,
                     "inference": "workers" if params.executor.on_workers else "main"},
        **state.extra,
        "stage_seconds": state.timer.seconds,
        "versions": library_versions(),
        "config": state.config,
    }
    RunFolder(output_dir).write_summary(summary)
    return summary


def log_done(summary: dict, output_dir: Path) -> None:
    log.info("processed %d of %d files (%.1f s of audio, %d cache hits); %d failed; outputs in %s",
             summary["files_processed"], summary["files_found"], summary["audio_seconds"], summary["cache"]["hits"],
             summary["files_failed"] + summary["trees_failed"], output_dir)
