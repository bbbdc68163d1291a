"""Settings of the embed stage: the encoder (``model``), its training (``train``) and pre-training (``pretrain``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sound_cluster.config.checks import build, fail, int_at_least, non_negative, one_of, positive_float, positive_int


@dataclass(frozen=True)
class ConvBlock:
    """One row of the encoder's architecture table: Conv2D(filters, kernel) -> GELU -> MaxPool(pool).

    ``kernel`` and ``pool`` are (time, frequency) sizes.
    """

    filters: int
    kernel: tuple[int, int] = (3, 3)
    pool: tuple[int, int] = (2, 2)



@dataclass(frozen=True)
class ModelParams:
    """The encoder: its architecture, where it starts from, and how many kinds a run clusters into (what it
    clusters, files or sounds, is the ``units`` group: :class:`sound_cluster.config.units.UnitParams`).

    ``n_clusters`` is the run's K: an integer, or ``"auto"`` (chosen from the data, see
    :mod:`sound_cluster.embed.clusters`). The head is trained with :attr:`head_clusters` outputs and
    merged down to K.

    Attributes
    ----------
    n_clusters
        K, the number of kinds of sound to find: auto (chosen from the data, see README) or an integer
    max_clusters
        the largest K that auto considers for file units (segment units: units.max_clusters)
    context_kernel
        Conv1D over output steps after frequency is flattened
    standardize_by_std
        per-input normalisation: subtract the mean (gain invariance); true also divides by the spread
    embedding_dim
        size of each step's embedding
    blocks
        the architecture table: one Conv2D -> GELU -> MaxPool block per row; kernel and pool are
        (time, frequency). Output steps come every prod(pool time) input frames (4 by default: 25
        steps per second at 100 frames per second)
    init
        where the encoder comes from: pretrained (shipped with the package, see
        sound_cluster/embed/pretrained/encoder.json) | scratch (random weights, trained on your folder) |
        the path of a .keras encoder
    """

    n_clusters: int | str = "auto"
    max_clusters: int = 32
    embedding_dim: int = 64
    blocks: tuple[ConvBlock, ...] = (ConvBlock(16, (3, 3), (2, 2)), ConvBlock(32, (3, 3), (2, 2)),
                                     ConvBlock(64, (3, 3), (1, 2)), ConvBlock(128, (3, 3), (1, 2)))
    context_kernel: int = 5
    standardize_by_std: bool = False
    init: str = "pretrained"

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
            fail(f"{prefix}.n_clusters", self.n_clusters, "auto or an integer >= 2")
        int_at_least(f"{prefix}.max_clusters", self.max_clusters, 2)
        positive_int(f"{prefix}.embedding_dim", self.embedding_dim)
        positive_int(f"{prefix}.context_kernel", self.context_kernel)
        if not isinstance(self.init, str) or not self.init:
            fail(f"{prefix}.init", self.init, "pretrained, scratch or the path of a .keras encoder")
        if not self.blocks:
            fail(f"{prefix}.blocks", [], "a non-empty list of {filters, kernel, pool}")
        for i, b in enumerate(self.blocks):
            positive_int(f"{prefix}.blocks[{i}].filters", b.filters)
            for name in ("kernel", "pool"):
                v = getattr(b, name)
                if len(v) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in v):
                    fail(f"{prefix}.blocks[{i}].{name}", list(v), "two positive integers [time, frequency]")

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
                fail(f"{prefix}.blocks", blocks, "a list of {filters, kernel, pool}")
            out = []
            for i, b in enumerate(blocks):
                if not isinstance(b, Mapping):
                    fail(f"{prefix}.blocks[{i}]", b, "a mapping {filters, kernel, pool}")
                blk = build(ConvBlock, b, f"{prefix}.blocks[{i}]")
                out.append(ConvBlock(blk.filters, tuple(blk.kernel), tuple(blk.pool)))
            d["blocks"] = tuple(out)
        return build(cls, d, prefix)


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
    bed_prob : probability that a view gets a continuous background bed underneath it (a crop of
        ``pretrain.beds`` or a synthesized one: :func:`sound_cluster.embed.crops.synthetic_bed`)
    bed_below_db : the bed's mean power below that of the view's sound, drawn from
        [bed_below_db, bed_below_db + 14] dB
    mel_warp : the mel axis is stretched by a factor drawn from [1 - mel_warp, 1 + mel_warp] (as a
        longer or shorter vocal tract moves every formant by one factor); 0: none
    band_limit_prob : probability that everything above a random band (in the upper half of the
        mel axis) is set to the view's floor, as a lower sample rate or a telephone line does

    Attributes
    ----------
    view_max_shift_frames
        the two views of an example start at most this far apart
    mel_shift_bins
        random shift along the mel axis (pitch/formant invariance)
    time_mask_frames
        SpecAugment-style masks
    eq_nats
        a random smooth equaliser of up to this many nats (1 nat = 4.3 dB)
    mix_prob
        probability of another file's crop underneath a view
    mix_below_db
        its level below the view's: [mix_below_db, mix_below_db + 10] dB
    bed_prob
        probability of a continuous background bed underneath a view
    bed_below_db
        its level below the view's sound: [bed_below_db, bed_below_db + 14] dB
    mel_warp
        the mel axis stretched by a factor in [1 - mel_warp, 1 + mel_warp]
    band_limit_prob
        probability that a view loses everything above a random band
    """

    view_max_shift_frames: int = 16
    mel_shift_bins: int = 3
    time_mask_frames: int = 4
    freq_mask_bins: int = 8
    eq_nats: float = 1.0
    mix_prob: float = 0.0
    mix_below_db: float = 10.0
    bed_prob: float = 0.0
    bed_below_db: float = 3.0
    mel_warp: float = 0.0
    band_limit_prob: float = 0.0

    FLOATS = ("eq_nats", "mix_prob", "mix_below_db", "bed_prob", "bed_below_db", "mel_warp", "band_limit_prob")

    def check(self, prefix: str = "train.augment") -> None:
        for f in dataclasses.fields(self):
            non_negative(f"{prefix}.{f.name}", getattr(self, f.name), integer=f.name not in self.FLOATS)
        for name in ("mix_prob", "bed_prob", "band_limit_prob"):
            if getattr(self, name) > 1:
                fail(f"{prefix}.{name}", getattr(self, name), "in [0, 1]")
        if self.mel_warp >= 0.5:
            fail(f"{prefix}.mel_warp", self.mel_warp, "in [0, 0.5)")


@dataclass(frozen=True)
class TrainParams:
    """Training of the encoder (see :func:`sound_cluster.embed.training.train_encoder`).

    Attributes
    ----------
    steps_per_epoch
        null: about four passes over the frames per epoch, 5 to 40 steps
    batch_size
        examples per batch (two views each); keep well above model.n_clusters
    crop_frames
        frames per training crop (0.48 s at 100 frames/s)
    length_power
        files are drawn with probability ~ n_frames ** length_power: 0 draws each file equally often, so
        the batch marginal counts files as clusters.csv does; 1: each frame equally
    gamma
        weight of the batch-marginal entropy: > 1 pushes towards using every cluster
    consistency_weight
        two nearby crops of one file must agree
    contrastive_weight
        NT-Xent on the views' embeddings: each view must find its partner in the batch
    temperature
        of the contrastive term's cosine similarities
    lr_schedule
        constant | cosine (falls to nothing over epochs * steps_per_epoch)
    head_steps
        steps that train the cluster head to give each file's crops the file's cluster
    patience
        early stopping: epochs without the loss improving by min_delta
    strategy
        default: one device | mirrored: tf.distribute.MirroredStrategy over the local GPUs
    backbone
        with model.init other than scratch: frozen (the encoder is used as it is) | tuned (every layer
        trained on your folder with the losses above first)
    """

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
            positive_int(f"{prefix}.{name}", getattr(self, name))
        if self.steps_per_epoch is not None:
            positive_int(f"{prefix}.steps_per_epoch", self.steps_per_epoch)
        for name in ("gamma", "learning_rate", "temperature", "head_learning_rate"):
            positive_float(f"{prefix}.{name}", getattr(self, name))
        for name in ("consistency_weight", "contrastive_weight", "min_delta"):
            non_negative(f"{prefix}.{name}", getattr(self, name))
        one_of(f"{prefix}.strategy", self.strategy, ("default", "mirrored"))
        one_of(f"{prefix}.lr_schedule", self.lr_schedule, ("constant", "cosine"))
        one_of(f"{prefix}.backbone", self.backbone, ("tuned", "frozen"))
        non_negative(f"{prefix}.length_power", self.length_power, what="in [0, 1]")
        if self.length_power > 1:
            fail(f"{prefix}.length_power", self.length_power, "in [0, 1]")
        if n_clusters is not None and self.batch_size < 2 * n_clusters:
            # The marginal term needs many examples per cluster in each batch to mean anything.
            fail(f"{prefix}.batch_size", self.batch_size,
                  f"at least twice the cluster head's size ({head_key}): {2 * n_clusters}")
        self.augment.check(f"{prefix}.augment")


# Pre-training's recipe for the encoder (task=pretrain), where it differs from a fit's ``train``.
PRETRAIN_TRAIN = TrainParams(
    epochs=200, steps_per_epoch=50, crop_frames=96, lr_schedule="cosine",  # to nothing at the last step
    patience=200, min_delta=0.0,
    augment=AugmentParams(
        view_max_shift_frames=8,  # the two views hold the same sound (or the same place of two files of a group)
        mel_shift_bins=1,  # small: groups teach pitch and voice; a drum's pitch tells a kick from a tom
        time_mask_frames=10, freq_mask_bins=10,
        mix_prob=0.5, mix_below_db=6.0,  # another recording underneath half of the views
        mel_warp=0.06,  # voices and instruments of other sizes
        band_limit_prob=0.3))  # 8 kHz recordings, telephone lines


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
    beds : a folder of continuous background recordings (wind, rain, traffic, room tone; null: none)
        laid under views with ``pretrain.train.augment.bed_prob``, half of the time, beside
        synthesized beds (:func:`sound_cluster.embed.crops.synthetic_bed`)
    train : the training settings, every key of ``train``; pre-training's own recipe (:data:`PRETRAIN_TRAIN`)
        trains longer on crops of about a second (most words, notes and hits fit whole), with views
        nearer and augmentation stronger than a fit's
    """

    n_clusters: int = 64
    max_minutes: float | None = 105
    group_prob: float = 0.7
    source_power: float = 0.5
    beds: str | None = None
    train: TrainParams = field(default_factory=lambda: PRETRAIN_TRAIN)

    def check(self, prefix: str = "pretrain") -> None:
        int_at_least(f"{prefix}.n_clusters", self.n_clusters, 2)
        if self.max_minutes is not None:
            positive_float(f"{prefix}.max_minutes", self.max_minutes)
        for name in ("group_prob", "source_power"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                fail(f"{prefix}.{name}", value, "a number in [0, 1]")
        if self.beds is not None and not Path(self.beds).is_dir():
            fail(f"{prefix}.beds", str(self.beds), "an existing folder of background recordings, or null")
        self.train.check(f"{prefix}.train", n_clusters=self.n_clusters, head_key=f"{prefix}.n_clusters")

