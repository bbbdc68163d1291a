"""Typed parameters for each stage, built from the Hydra config and checked before any work.

Hydra stays in :mod:`sound_cluster.cli`; everything else receives these frozen dataclasses.
:func:`params_from_config` turns a plain mapping (the resolved config) into :class:`Params`
and raises :class:`~sound_cluster.errors.ConfigError` naming the key and the value received
when something is out of range.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3")


def _fail(key: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{key} must be {expected}, got {value!r}")


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        _fail(key, value, "a positive integer")


def _positive_float(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        _fail(key, value, "a positive number")


def _one_of(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(key, value, "one of " + ", ".join(choices))


@dataclass(frozen=True)
class DataParams:
    """Where the audio is. ``path`` is absolute once built (``None`` means the bundled demo)."""

    path: Path | None = None
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS
    follow_symlinks: bool = True
    strict: bool = False

    def check(self, prefix: str = "data") -> None:
        if not self.extensions or not all(isinstance(e, str) and e.strip(".") for e in self.extensions):
            _fail(f"{prefix}.extensions", list(self.extensions), "a non-empty list of file extensions")


@dataclass(frozen=True)
class FeatureParams:
    """Log-mel settings. Every field except ``cache_dir`` is part of the cache key."""

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None
    log_offset: float = 1e-6
    cache_dir: Path | None = None

    def check(self, prefix: str = "features") -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            _positive_int(f"{prefix}.{name}", getattr(self, name))
        if isinstance(self.fmin, bool) or not isinstance(self.fmin, (int, float)) or self.fmin < 0:
            _fail(f"{prefix}.fmin", self.fmin, "a number >= 0 (Hz)")
        nyquist = self.sample_rate / 2
        if self.fmax is not None:
            if isinstance(self.fmax, bool) or not isinstance(self.fmax, (int, float)):
                _fail(f"{prefix}.fmax", self.fmax, "a number (Hz) or null")
            if not self.fmin < self.fmax <= nyquist:
                _fail(f"{prefix}.fmax", self.fmax, f"above fmin={self.fmin} and at most sample_rate/2={nyquist}")
        elif self.fmin >= nyquist:
            _fail(f"{prefix}.fmin", self.fmin, f"below sample_rate/2={nyquist}")
        _positive_float(f"{prefix}.log_offset", self.log_offset)
        if self.hop_length > self.n_fft:
            _fail(f"{prefix}.hop_length", self.hop_length, f"at most n_fft={self.n_fft} (frames would skip audio)")
        if self.n_mels > self.n_fft // 2 + 1:
            _fail(f"{prefix}.n_mels", self.n_mels, f"at most n_fft/2+1={self.n_fft // 2 + 1}")

    @property
    def frame_rate_hz(self) -> float:
        """Frames per second of the log-mel output."""
        return self.sample_rate / self.hop_length

    def key_fields(self) -> dict[str, Any]:
        """The settings that change the features (everything but where they are cached)."""
        d = dataclasses.asdict(self)
        d.pop("cache_dir")
        return d

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "sound_cluster"


@dataclass(frozen=True)
class ExecutorParams:
    """How per-file work is spread: ``serial`` or ``process`` (``auto`` is resolved when built)."""

    kind: str = "auto"
    n_workers: int | None = None

    def check(self, prefix: str = "executor") -> None:
        _one_of(f"{prefix}.kind", self.kind, ("serial", "process"))
        if self.n_workers is not None:
            _positive_int(f"{prefix}.n_workers", self.n_workers)


@dataclass(frozen=True)
class OutputParams:
    progress: bool = False

    def check(self, prefix: str = "output") -> None:
        pass


@dataclass(frozen=True)
class Params:
    """All parameters of one run."""

    data: DataParams = field(default_factory=DataParams)
    features: FeatureParams = field(default_factory=FeatureParams)
    executor: ExecutorParams = field(default_factory=ExecutorParams)
    output: OutputParams = field(default_factory=OutputParams)
    task: str = "fit"
    seed: int = 0

    def check(self) -> None:
        _one_of("task", self.task, ("fit", "apply"))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            _fail("seed", self.seed, "an integer >= 0")
        for group in ("data", "features", "executor", "output"):
            getattr(self, group).check(group)


def usable_cores() -> int:
    """Cores this process may run on (respects CPU affinity, unlike ``os.cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _build(cls: type, values: Mapping[str, Any] | None, prefix: str) -> Any:
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown key {prefix}.{unknown[0]} (known: {', '.join(sorted(names))})")
    return cls(**values)


def _path_or_none(key: str, value: Any, base: Path) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        _fail(key, value, "a path or null")
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else base / path


def params_from_config(cfg: Mapping[str, Any], *, base_dir: Path | None = None) -> Params:
    """Build and check :class:`Params` from a resolved config mapping.

    Parameters
    ----------
    cfg : Mapping
        The resolved config (``OmegaConf.to_container(cfg, resolve=True)``).
    base_dir : Path, optional
        Folder that relative paths are taken from (the folder the user ran the command in).
        Defaults to the current working directory.

    Raises
    ------
    ConfigError
        A value is out of range or a key is unknown; the message names both.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    data = dict(cfg.get("data") or {})
    data["path"] = _path_or_none("data.path", data.get("path"), base)
    exts = data.get("extensions", AUDIO_EXTENSIONS)
    if isinstance(exts, str) or not isinstance(exts, (list, tuple)):
        _fail("data.extensions", exts, "a list of file extensions")
    data["extensions"] = tuple(str(e).lower().lstrip(".") for e in exts)
    for key in ("follow_symlinks", "strict"):
        if key in data and not isinstance(data[key], bool):
            _fail(f"data.{key}", data[key], "true or false")

    feats = dict(cfg.get("features") or {})
    feats["cache_dir"] = _path_or_none("features.cache_dir", feats.get("cache_dir"), base)

    ex = dict(cfg.get("executor") or {})
    if ex.get("kind", "auto") == "auto":
        ex["kind"] = "process" if usable_cores() > 1 else "serial"

    out = dict(cfg.get("output") or {})
    progress = out.get("progress", "auto")
    if progress == "auto":
        import sys

        progress = sys.stdout.isatty()
    elif not isinstance(progress, bool):
        _fail("output.progress", progress, "auto, true or false")
    out["progress"] = progress

    params = Params(
        data=_build(DataParams, data, "data"),
        features=_build(FeatureParams, feats, "features"),
        executor=_build(ExecutorParams, ex, "executor"),
        output=_build(OutputParams, out, "output"),
        task=cfg.get("task", "fit"),
        seed=cfg.get("seed", 0),
    )
    params.check()
    return params
