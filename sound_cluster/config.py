"""Typed parameters for each stage, built from the Hydra config and checked before any work.

Hydra stays in :mod:`sound_cluster.cli`; everything else receives these frozen dataclasses.
:func:`params_from_config` turns a plain mapping (the resolved config) into :class:`Params`
and raises :class:`~sound_cluster.errors.ConfigError` naming the key and the value received
when something is out of range.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3")

log = logging.getLogger(__name__)


def _fail(key: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{key} must be {expected}, got {value!r}")


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        _fail(key, value, "a positive integer")


def _positive_float(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        _fail(key, value, "a positive number")


def _non_negative(key: str, value: Any, *, integer: bool = False, what: str | None = None) -> None:
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 0:
        _fail(key, value, what or ("an integer >= 0" if integer else "a number >= 0"))


def _one_of(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(key, value, "one of " + ", ".join(choices))


EXPORTS = ("segments", "jams", "audacity", "raven")  # output.export (sound_cluster.export writes them)
SEGMENT_FORMATS = ("auto", "csv", "audacity", "raven")  # data.segments_format (sound_cluster.evaluate reads them)


@dataclass(frozen=True)
class DataParams:
    """Where the audio is. ``path`` is absolute once built (``None`` means the bundled demo)."""

    path: Path | None = None
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS
    follow_symlinks: bool = True
    strict: bool = False
    labels: Path | None = None
    segments: Path | None = None
    segments_format: str = "auto"

    def check(self, prefix: str = "data") -> None:
        if self.labels is not None and not Path(self.labels).is_file():
            _fail(f"{prefix}.labels", str(self.labels), "an existing CSV file (path,label) or null")
        _one_of(f"{prefix}.segments_format", self.segments_format, SEGMENT_FORMATS)
        if self.segments is not None:
            seg = Path(self.segments)
            if self.segments_format == "csv" and not seg.is_file() or not (seg.is_file() or seg.is_dir()):
                _fail(f"{prefix}.segments", str(self.segments), "an existing CSV file (path,start_s,end_s,label), a "
                      "folder of Audacity label tracks or Raven selection tables, or null")
            if self.segments_format in ("audacity", "raven") and not seg.is_dir():
                _fail(f"{prefix}.segments", str(self.segments), f"a folder of {self.segments_format} files with "
                      f"{prefix}.segments_format={self.segments_format}")
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
        _non_negative(f"{prefix}.fmin", self.fmin, what="a number >= 0 (Hz)")
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
class ConvBlock:
    """One row of the encoder's architecture table: Conv2D(filters, kernel) -> GELU -> MaxPool(pool).

    ``kernel`` and ``pool`` are (time, frequency) sizes.
    """

    filters: int
    kernel: tuple[int, int] = (3, 3)
    pool: tuple[int, int] = (2, 2)


# What a run clusters: whole files, the sounds inside files (segments of their trees), or either by
# the rule of :func:`sound_cluster.units.choose_unit`.
UNITS = ("auto", "file", "segment")


@dataclass(frozen=True)
class ModelParams:
    """The encoder. ``blocks`` is the architecture table of ``conf/model/default.yaml``.

    ``n_clusters`` is the run's K: an integer, or ``"auto"`` (chosen from the data, see
    :mod:`sound_cluster.clusters`). The head is trained with :attr:`head_clusters` outputs and
    merged down to K.
    """

    n_clusters: int | str = "auto"
    max_clusters: int = 32
    embedding_dim: int = 64
    blocks: tuple[ConvBlock, ...] = (ConvBlock(16, (3, 3), (2, 2)), ConvBlock(32, (3, 3), (2, 2)),
                                     ConvBlock(64, (3, 3), (1, 2)))
    context_kernel: int = 5
    standardize_by_std: bool = False
    overcluster: int = 0
    init: str = "scratch"
    unit: str = "auto"
    max_segment_clusters: int = 64
    unit_min_file_s: float = 8.0
    unit_sound_s: float = 0.5

    # The fields that make up the architecture (what a pretrained encoder must share with the run).
    ARCHITECTURE = ("embedding_dim", "blocks", "context_kernel", "standardize_by_std")

    @property
    def head_clusters(self) -> int:
        """Outputs of the cluster head: ``max_clusters``, or K when a larger integer K is asked for."""
        if self.n_clusters == "auto":
            return self.max_clusters
        return max(int(self.n_clusters), self.max_clusters)

    @property
    def time_pool(self) -> int:
        """Input frames per output step."""
        out = 1
        for b in self.blocks:
            out *= b.pool[0]
        return out

    def check(self, prefix: str = "model") -> None:
        if self.n_clusters != "auto" and (isinstance(self.n_clusters, bool) or not isinstance(self.n_clusters, int)
                                          or self.n_clusters < 2):
            _fail(f"{prefix}.n_clusters", self.n_clusters, "auto or an integer >= 2")
        if isinstance(self.max_clusters, bool) or not isinstance(self.max_clusters, int) or self.max_clusters < 2:
            _fail(f"{prefix}.max_clusters", self.max_clusters, "an integer >= 2")
        _positive_int(f"{prefix}.embedding_dim", self.embedding_dim)
        _positive_int(f"{prefix}.context_kernel", self.context_kernel)
        _non_negative(f"{prefix}.overcluster", self.overcluster, integer=True)
        _one_of(f"{prefix}.unit", self.unit, UNITS)
        if isinstance(self.max_segment_clusters, bool) or not isinstance(self.max_segment_clusters, int) \
                or self.max_segment_clusters < 2:
            _fail(f"{prefix}.max_segment_clusters", self.max_segment_clusters, "an integer >= 2")
        _positive_float(f"{prefix}.unit_min_file_s", self.unit_min_file_s)
        _positive_float(f"{prefix}.unit_sound_s", self.unit_sound_s)
        if not isinstance(self.init, str) or not self.init:
            _fail(f"{prefix}.init", self.init, "pretrained, scratch or the path of a .keras encoder")
        if not self.blocks:
            _fail(f"{prefix}.blocks", [], "a non-empty list of {filters, kernel, pool}")
        for i, b in enumerate(self.blocks):
            _positive_int(f"{prefix}.blocks[{i}].filters", b.filters)
            for name in ("kernel", "pool"):
                v = getattr(b, name)
                if len(v) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in v):
                    _fail(f"{prefix}.blocks[{i}].{name}", list(v), "two positive integers [time, frequency]")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def architecture(self) -> dict[str, Any]:
        """The architecture fields as plain JSON values (blocks as lists of dicts)."""
        d = self.to_dict()
        return {k: d[k] for k in self.ARCHITECTURE}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], prefix: str = "model") -> "ModelParams":
        d = dict(d)
        if "blocks" in d:
            blocks = d["blocks"]
            if not isinstance(blocks, (list, tuple)):
                _fail(f"{prefix}.blocks", blocks, "a list of {filters, kernel, pool}")
            out = []
            for i, b in enumerate(blocks):
                if not isinstance(b, Mapping):
                    _fail(f"{prefix}.blocks[{i}]", b, "a mapping {filters, kernel, pool}")
                blk = _build(ConvBlock, b, f"{prefix}.blocks[{i}]")
                out.append(ConvBlock(blk.filters, tuple(blk.kernel), tuple(blk.pool)))
            d["blocks"] = tuple(out)
        return _build(cls, d, prefix)


@dataclass(frozen=True)
class AugmentParams:
    """Augmentation of each training view; sizes are upper bounds drawn uniformly per example.

    view_max_shift_frames : frames between the starts of the two views of one example
    mel_shift_bins : shift along the mel axis, up or down (edges repeat the last band)
    time_mask_frames, freq_mask_bins : width of one time mask and one frequency mask (0: none)
    eq_nats : largest amplitude of a random smooth curve added across the mel bands (a random
        equaliser, in natural-log units: 1 nat is 4.3 dB), so a recording chain or a voice's
        colour, which both views of a file share, cannot decide the cluster
    mix_prob : probability that a view gets a crop of another file mixed underneath it
    mix_below_db : that crop's level below the view's, drawn from [mix_below_db, mix_below_db + 10] dB
    mel_warp : the mel axis is stretched by a factor drawn from [1 - mel_warp, 1 + mel_warp] (as a
        longer or shorter vocal tract moves every formant by one factor); 0: none
    band_limit_prob : probability that everything above a random band (in the upper half of the
        mel axis) is set to the view's floor, as a lower sample rate or a telephone line does
    """

    view_max_shift_frames: int = 16
    mel_shift_bins: int = 3
    time_mask_frames: int = 4
    freq_mask_bins: int = 8
    eq_nats: float = 1.0
    mix_prob: float = 0.0
    mix_below_db: float = 10.0
    mel_warp: float = 0.0
    band_limit_prob: float = 0.0

    FLOATS = ("eq_nats", "mix_prob", "mix_below_db", "mel_warp", "band_limit_prob")

    def check(self, prefix: str = "train.augment") -> None:
        for f in dataclasses.fields(self):
            _non_negative(f"{prefix}.{f.name}", getattr(self, f.name), integer=f.name not in self.FLOATS)
        for name in ("mix_prob", "band_limit_prob"):
            if getattr(self, name) > 1:
                _fail(f"{prefix}.{name}", getattr(self, name), "in [0, 1]")
        if self.mel_warp >= 0.5:
            _fail(f"{prefix}.mel_warp", self.mel_warp, "in [0, 0.5)")


@dataclass(frozen=True)
class TrainParams:
    """Training of the encoder (see :func:`sound_cluster.embedding.train_encoder`)."""

    epochs: int = 24
    steps_per_epoch: int | None = None
    batch_size: int = 128
    crop_frames: int = 48
    length_power: float = 0.0
    gamma: float = 1.5
    consistency_weight: float = 1.0
    contrastive_weight: float = 1.0
    temperature: float = 0.1
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    head_steps: int = 400
    head_learning_rate: float = 3e-3
    patience: int = 6
    min_delta: float = 1e-3
    strategy: str = "default"
    backbone: str = "frozen"
    augment: AugmentParams = field(default_factory=AugmentParams)

    def resolved_steps_per_epoch(self, total_frames: int) -> int:
        """``steps_per_epoch``, or when null about four passes over the frames, within [5, 40] steps.

        A folder of a few dozen clips then trains in well under a minute, while larger
        collections get the full 40 steps per epoch.
        """
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        passes = 4.0 * total_frames / (self.batch_size * self.crop_frames)
        return int(min(40, max(5, -(-passes // 1))))

    def check(self, prefix: str = "train", *, n_clusters: int | None = None,
              head_key: str = "model.max_clusters, or model.n_clusters when larger") -> None:
        for name in ("epochs", "batch_size", "crop_frames", "patience", "head_steps"):
            _positive_int(f"{prefix}.{name}", getattr(self, name))
        if self.steps_per_epoch is not None:
            _positive_int(f"{prefix}.steps_per_epoch", self.steps_per_epoch)
        for name in ("gamma", "learning_rate", "temperature", "head_learning_rate"):
            _positive_float(f"{prefix}.{name}", getattr(self, name))
        for name in ("consistency_weight", "contrastive_weight", "min_delta"):
            _non_negative(f"{prefix}.{name}", getattr(self, name))
        _one_of(f"{prefix}.strategy", self.strategy, ("default", "mirrored"))
        _one_of(f"{prefix}.lr_schedule", self.lr_schedule, ("constant", "cosine"))
        _one_of(f"{prefix}.backbone", self.backbone, ("tuned", "frozen"))
        _non_negative(f"{prefix}.length_power", self.length_power, what="in [0, 1]")
        if self.length_power > 1:
            _fail(f"{prefix}.length_power", self.length_power, "in [0, 1]")
        if n_clusters is not None and self.batch_size < 2 * n_clusters:
            # The marginal term needs many examples per cluster in each batch to mean anything.
            _fail(f"{prefix}.batch_size", self.batch_size,
                  f"at least twice the cluster head's size ({head_key}): {2 * n_clusters}")
        self.augment.check(f"{prefix}.augment")


@dataclass(frozen=True)
class PretrainParams:
    """Self-supervised pre-training on a large corpus (``task=pretrain``).

    n_clusters : K of the clustering head while pre-training; a fit replaces the head with its own
    max_minutes : stop after this many minutes of training (null: run every epoch)
    group_prob : where the corpus' manifest groups files (the same sound made differently), the
        probability that an example's second view comes from another file of its group
    source_power : each source of the corpus (a package; the program that spoke synthesized
        speech) is drawn with probability ~ files ** source_power: 1 draws every file equally
        often, 0 every source equally often
    train : the training settings, every key of ``train``; ``conf/pretrain/default.yaml`` makes
        the views farther apart and the augmentation stronger than a fit's
    """

    n_clusters: int = 64
    max_minutes: float | None = None
    group_prob: float = 0.7  # as conf/pretrain/default.yaml
    source_power: float = 0.5
    train: TrainParams = field(default_factory=TrainParams)

    def check(self, prefix: str = "pretrain") -> None:
        if isinstance(self.n_clusters, bool) or not isinstance(self.n_clusters, int) or self.n_clusters < 2:
            _fail(f"{prefix}.n_clusters", self.n_clusters, "an integer >= 2")
        if self.max_minutes is not None:
            _positive_float(f"{prefix}.max_minutes", self.max_minutes)
        for name in ("group_prob", "source_power"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                _fail(f"{prefix}.{name}", value, "a number in [0, 1]")
        self.train.check(f"{prefix}.train", n_clusters=self.n_clusters, head_key=f"{prefix}.n_clusters")


@dataclass(frozen=True)
class ExecutorParams:
    """How per-file work is spread: ``serial``, ``process`` or ``dask`` (``auto`` is resolved when built).

    ``address``: a running Dask scheduler (``tcp://host:port``) for ``dask``; ``None`` starts a
    ``LocalCluster`` of ``n_workers`` processes on this machine.
    """

    kind: str = "auto"
    n_workers: int | None = None
    address: str | None = None

    def check(self, prefix: str = "executor") -> None:
        _one_of(f"{prefix}.kind", self.kind, ("serial", "process", "dask"))
        if self.n_workers is not None:
            _positive_int(f"{prefix}.n_workers", self.n_workers)
        if self.address is not None:
            if self.kind != "dask":
                _fail(f"{prefix}.address", self.address, f"null unless {prefix}.kind=dask (it is {self.kind})")
            if not isinstance(self.address, str) or "://" not in self.address:
                _fail(f"{prefix}.address", self.address, "a scheduler address such as tcp://10.0.0.5:8786")
        if self.kind == "dask":
            try:
                import distributed  # noqa: F401
            except ImportError:
                _fail(f"{prefix}.kind", "dask", "serial or process unless dask.distributed is installed "
                      "(pip install 'sound-cluster[distributed]')")


@dataclass(frozen=True)
class RaeParams:
    """The merge autoencoder and the fold (see :mod:`sound_cluster.rae`, :mod:`sound_cluster.fold`)."""

    input_dim: int = 64
    pairing: str = "adjacent"
    node_vector: str = "mean"
    linkage: str = "ward"
    size_weighted: bool = False
    epochs: int = 6
    steps_per_epoch: int = 10
    batch_sequences: int = 16
    max_leaves: int = 48
    learning_rate: float = 3e-3
    negative_weight: float = 1.0
    margin: float = 2.0
    max_any_leaves: int = 1500
    fold_device: str = "auto"
    fold_batch: int = 64
    pause_db: float = 10.0
    min_sound_s: float = 0.1
    sounds_first: bool = True
    min_node_s: float = 0.1

    def check(self, prefix: str = "rae", *, embedding_dim: int | None = None) -> None:
        _one_of(f"{prefix}.pairing", self.pairing, ("adjacent", "any"))
        _one_of(f"{prefix}.fold_device", self.fold_device, ("auto", "cpu", "gpu"))
        _positive_int(f"{prefix}.fold_batch", self.fold_batch)
        if self.fold_device == "gpu" and self.pairing != "adjacent":
            _fail(f"{prefix}.fold_device", self.fold_device, f"cpu or auto with {prefix}.pairing={self.pairing} "
                  "(the batched fold merges adjacent pairs only)")
        _one_of(f"{prefix}.node_vector", self.node_vector, ("mean", "code"))
        _one_of(f"{prefix}.linkage", self.linkage, ("ward", "plain"))
        if not isinstance(self.size_weighted, bool):
            _fail(f"{prefix}.size_weighted", self.size_weighted, "true or false")
        for name in ("input_dim", "epochs", "steps_per_epoch", "batch_sequences", "max_any_leaves"):
            _positive_int(f"{prefix}.{name}", getattr(self, name))
        if isinstance(self.max_leaves, bool) or not isinstance(self.max_leaves, int) or self.max_leaves < 2:
            _fail(f"{prefix}.max_leaves", self.max_leaves, "an integer >= 2")
        _positive_float(f"{prefix}.learning_rate", self.learning_rate)
        _positive_float(f"{prefix}.margin", self.margin)
        _non_negative(f"{prefix}.negative_weight", self.negative_weight)
        _non_negative(f"{prefix}.pause_db", self.pause_db, what="a number of dB >= 0 (0: pauses off)")
        _positive_float(f"{prefix}.min_sound_s", self.min_sound_s)
        if not isinstance(self.sounds_first, bool):
            _fail(f"{prefix}.sounds_first", self.sounds_first, "true or false")
        _non_negative(f"{prefix}.min_node_s", self.min_node_s, what="a number of seconds >= 0 (0: off)")
        if self.min_node_s > self.min_sound_s:  # a sound shorter than min_node_s could not grow to it
            _fail(f"{prefix}.min_node_s", self.min_node_s, f"at most rae.min_sound_s={self.min_sound_s}")
        if embedding_dim is not None and self.input_dim != embedding_dim:
            _fail(f"{prefix}.input_dim", self.input_dim, f"equal to model.embedding_dim={embedding_dim}")


@dataclass(frozen=True)
class OutputParams:
    """What the run writes besides the tables: plots and how trees are written."""

    progress: bool = False
    max_plots: int = 50
    plot_cuts: tuple[int, ...] = (2, 4, 8)
    min_segment_s: float = 0.0
    max_tree_depth: int = 400
    segments: int | str = "auto"
    auto_min_segment_s: float = 0.2
    boundary_refine_s: float = 0.0
    export: tuple[str, ...] = ()
    export_segments: bool = False
    export_k: int | None = None
    export_jams: bool = False
    report: bool = True
    report_excerpt_s: float = 10.0
    overwrite: bool = False

    def exports(self) -> set[str]:
        """What the run exports: ``output.export``, with ``export_segments`` and ``export_jams`` as aliases."""
        return (set(self.export) | ({"segments"} if self.export_segments else set())
                | ({"jams"} if self.export_jams else set()))

    def check(self, prefix: str = "output") -> None:
        for name in ("export_segments", "export_jams", "report", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                _fail(f"{prefix}.{name}", getattr(self, name), "true or false")
        if self.export_k is not None:
            _positive_int(f"{prefix}.export_k", self.export_k)
        if self.segments != "auto" and (isinstance(self.segments, bool) or not isinstance(self.segments, int)
                                        or self.segments < 1):
            _fail(f"{prefix}.segments", self.segments, "auto or a positive integer")
        _positive_float(f"{prefix}.auto_min_segment_s", self.auto_min_segment_s)
        _non_negative(f"{prefix}.boundary_refine_s", self.boundary_refine_s, what="a number of seconds >= 0")
        _positive_float(f"{prefix}.report_excerpt_s", self.report_excerpt_s)
        if not isinstance(self.export, (list, tuple)) or not all(isinstance(e, str) for e in self.export):
            _fail(f"{prefix}.export", self.export, "a list of " + ", ".join(EXPORTS))
        for e in self.export:
            _one_of(f"{prefix}.export", e, EXPORTS)
        if self.export_jams or "jams" in self.export:
            try:
                import jams  # noqa: F401
            except ImportError:
                _fail(f"{prefix}.export", "jams", "without jams unless the jams package is installed "
                      "(pip install 'sound-cluster[jams]')")
        _non_negative(f"{prefix}.max_plots", self.max_plots, integer=True)
        if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 2 for k in self.plot_cuts):
            _fail(f"{prefix}.plot_cuts", list(self.plot_cuts), "a list of integers >= 2")
        _non_negative(f"{prefix}.min_segment_s", self.min_segment_s, what="a number of seconds >= 0")
        _positive_int(f"{prefix}.max_tree_depth", self.max_tree_depth)


@dataclass(frozen=True)
class Params:
    """All parameters of one run."""

    data: DataParams = field(default_factory=DataParams)
    features: FeatureParams = field(default_factory=FeatureParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    rae: RaeParams = field(default_factory=RaeParams)
    pretrain: PretrainParams = field(default_factory=PretrainParams)
    executor: ExecutorParams = field(default_factory=ExecutorParams)
    output: OutputParams = field(default_factory=OutputParams)
    task: str = "fit"
    seed: int = 0
    models: Path | None = None

    def check(self) -> None:
        _one_of("task", self.task, ("fit", "apply", "pretrain"))
        _non_negative("seed", self.seed, integer=True)
        for group in ("data", "features", "model", "executor", "output"):
            getattr(self, group).check(group)
        segment_k = self.model.max_segment_clusters if self.model.unit != "file" and self.model.n_clusters == "auto" else 0
        self.train.check("train", n_clusters=max(self.model.head_clusters, segment_k),
                         head_key="model.max_clusters, model.max_segment_clusters, or model.n_clusters when larger")
        self.rae.check("rae", embedding_dim=self.model.embedding_dim)
        if self.model.unit == "segment" and self.rae.pairing != "adjacent":
            _fail("model.unit", self.model.unit, f"file or auto with rae.pairing={self.rae.pairing} (segment units "
                  "are contiguous pieces of each file's tree: rae.pairing=adjacent)")
        check_features_fit_training(self.features, self.train)
        if self.task == "pretrain":
            self.pretrain.check("pretrain")
            check_features_fit_training(self.features, self.pretrain.train, prefix="pretrain.train")
        if self.task in ("fit", "pretrain") and self.model.init != "scratch":
            from .pretrained import resolve_init  # reads the encoder's card: fails before any work

            resolve_init(self.model, self.features)
        if self.task == "apply":
            if self.models is None:
                _fail("models", None, "a run's models/ folder when task=apply")
            for name in ("embedding.keras", "rae.keras", "params.json"):
                if not (Path(self.models) / name).is_file():
                    _fail("models", str(self.models), f"a folder holding {name} (a run's models/ folder)")


def check_features_fit_training(features: FeatureParams, train: TrainParams, *, prefix: str = "train") -> None:
    """Settings that are each in range but do not fit together (checked before any work).

    Raises
    ------
    ConfigError
        The mel shift or frequency mask spans all the mel bands, or the time mask spans the
        whole training crop.
    """
    a = train.augment
    if a.mel_shift_bins >= features.n_mels:
        _fail(f"{prefix}.augment.mel_shift_bins", a.mel_shift_bins, f"below features.n_mels={features.n_mels}")
    if a.freq_mask_bins >= features.n_mels:
        _fail(f"{prefix}.augment.freq_mask_bins", a.freq_mask_bins, f"below features.n_mels={features.n_mels}")
    if a.time_mask_frames >= train.crop_frames:
        _fail(f"{prefix}.augment.time_mask_frames", a.time_mask_frames,
              f"below {prefix}.crop_frames={train.crop_frames}")


def saved_model_params(saved: Mapping[str, Any], *, source: str) -> tuple[FeatureParams, ModelParams]:
    """The feature and model settings recorded with trained models (``params.json``), checked as a run's are.

    Raises
    ------
    ConfigError
        A value is missing or out of range; the message names ``source`` and the key.
    """
    if not isinstance(saved, Mapping) or not isinstance(saved.get("features"), Mapping) \
            or not isinstance(saved.get("model"), Mapping):
        raise ConfigError(f"{source} must hold the objects 'features' and 'model' of a run's models/ folder")
    feats = _build(FeatureParams, {**saved["features"], "cache_dir": None}, f"{source}: features")
    model = ModelParams.from_dict(saved["model"], prefix=f"{source}: model")
    feats.check(f"{source}: features")
    model.check(f"{source}: model")
    return feats, model


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
    data["labels"] = _path_or_none("data.labels", data.get("labels"), base)
    data["segments"] = _path_or_none("data.segments", data.get("segments"), base)
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
    n_workers = ex.get("n_workers")
    if isinstance(n_workers, int) and not isinstance(n_workers, bool) and n_workers > usable_cores():
        # More processes than cores only adds start-up and switching (measured: 64 workers on 2
        # cores made the fold stage 35x slower).
        log.warning("executor.n_workers=%d is more than the %d usable cores; using %d", n_workers, usable_cores(),
                    usable_cores())
        ex["n_workers"] = usable_cores()

    out = dict(cfg.get("output") or {})
    progress = out.get("progress", "auto")
    if progress == "auto":
        import sys

        progress = sys.stdout.isatty()
    elif not isinstance(progress, bool):
        _fail("output.progress", progress, "auto, true or false")
    out["progress"] = progress
    if "plot_cuts" in out:
        if not isinstance(out["plot_cuts"], (list, tuple)):
            _fail("output.plot_cuts", out["plot_cuts"], "a list of integers >= 2")
        out["plot_cuts"] = tuple(out["plot_cuts"])

    train = dict(cfg.get("train") or {})
    train["augment"] = _build(AugmentParams, train.get("augment"), "train.augment")
    pretrain = dict(cfg.get("pretrain") or {})
    ptrain = dict(pretrain.get("train") or {})
    ptrain["augment"] = _build(AugmentParams, ptrain.get("augment"), "pretrain.train.augment")
    pretrain["train"] = _build(TrainParams, ptrain, "pretrain.train")

    params = Params(
        data=_build(DataParams, data, "data"),
        features=_build(FeatureParams, feats, "features"),
        model=ModelParams.from_dict(cfg.get("model") or {}),
        train=_build(TrainParams, train, "train"),
        rae=_build(RaeParams, cfg.get("rae"), "rae"),
        pretrain=_build(PretrainParams, pretrain, "pretrain"),
        executor=_build(ExecutorParams, ex, "executor"),
        output=_build(OutputParams, out, "output"),
        task=cfg.get("task", "fit"),
        seed=cfg.get("seed", 0),
        models=_path_or_none("models", cfg.get("models"), base),
    )
    params.check()
    return params
