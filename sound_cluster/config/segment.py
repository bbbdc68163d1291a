"""Settings of the fold stage: the merge autoencoder and the fold (``segment``)."""

from __future__ import annotations

from dataclasses import dataclass

from sound_cluster.config.checks import fail, int_at_least, non_negative, one_of, positive_float, positive_int


@dataclass(frozen=True)
class SegmentParams:
    """The merge autoencoder and the fold (see :mod:`sound_cluster.segment.merge_model`, :mod:`sound_cluster.segment.fold`).

    Attributes
    ----------
    pairing
        adjacent: contiguous segments, O(n log n) | any: the seed's any-pair search (small inputs)
    node_vector
        what stands for a merged node in later merges: mean (unit-length mean of its leaves) | code (its
        parent code, as in Socher et al. 2011; trained folds then degenerate)
    linkage
        ward: each merge cost times n1*n2/(n1+n2) (children's sizes), so lone steps join a neighbour early
        and no sliver is left to the last merges | plain: the cost alone
    size_weighted
        true: weight each child's reconstruction error by its share of the leaves
    epochs
        training through chosen trees
    batch_sequences
        windows folded per step
    max_leaves
        leaves per training window
    negative_weight
        hinge on merging a leaf of another window: keeps unrelated merges dear
    margin
        hinge margin for merging a leaf of another window (2.0 measured better than 1.0 with ward)
    splice_weight
        weight of the splice ranking: a merge across a splice of two of the folder's sounds must cost
        splice_margin more than a merge of two neighbouring parts of one sound | 0: off
    splice_margin
        the cost by which a splice must exceed a sound's inside (costs per step, without Ward's factor)
    splice_pairs
        pairs of each kind per training step
    max_any_leaves
        pairing=any refuses longer files (its cost grows as n^2 per merge)
    fold_device
        auto: the batched lockstep fold when TensorFlow sees a GPU, else the heap fold on the CPU | cpu:
        the heap fold (numba) | gpu: the batched fold (on the CPU too when no GPU is seen)
    fold_batch
        files folded together by the batched fold (sorted by length, so padding stays small)
    pause_db
        a step within this many dB of the file's floor (and as far below its loud level) is a pause: it
        takes the leaf of the sound before it, so cuts fall where sounds start | 0: off
    min_sound_s
        a run of loud steps between pauses this long (seconds) or longer is a sound; shorter ones (a
        click, noise in a pause) belong to the sound before them
    sounds_first
        where pauses separate sounds, each sound folds into one node before sounds merge, so the cut into
        as many segments as sounds is the sounds (the automatic count uses it)
    min_node_s
        a node shorter than this (seconds) merges into its cheaper neighbour before any other merge, so no
        cut into a few segments holds a sliver | 0: off (at most min_sound_s)
    """

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
    splice_weight: float = 1.0
    splice_margin: float = 0.5
    splice_pairs: int = 64
    max_any_leaves: int = 1500
    fold_device: str = "auto"
    fold_batch: int = 64
    pause_db: float = 10.0
    min_sound_s: float = 0.1
    sounds_first: bool = True
    min_node_s: float = 0.1

    def check(self, prefix: str = "segment") -> None:
        one_of(f"{prefix}.pairing", self.pairing, ("adjacent", "any"))
        one_of(f"{prefix}.fold_device", self.fold_device, ("auto", "cpu", "gpu"))
        positive_int(f"{prefix}.fold_batch", self.fold_batch)
        if self.fold_device == "gpu" and self.pairing != "adjacent":
            fail(f"{prefix}.fold_device", self.fold_device, f"cpu or auto with {prefix}.pairing={self.pairing} "
                  "(the batched fold merges adjacent pairs only)")
        one_of(f"{prefix}.node_vector", self.node_vector, ("mean", "code"))
        one_of(f"{prefix}.linkage", self.linkage, ("ward", "plain"))
        if not isinstance(self.size_weighted, bool):
            fail(f"{prefix}.size_weighted", self.size_weighted, "true or false")
        for name in ("epochs", "steps_per_epoch", "batch_sequences", "max_any_leaves", "splice_pairs"):
            positive_int(f"{prefix}.{name}", getattr(self, name))
        int_at_least(f"{prefix}.max_leaves", self.max_leaves, 2)
        positive_float(f"{prefix}.learning_rate", self.learning_rate)
        positive_float(f"{prefix}.margin", self.margin)
        non_negative(f"{prefix}.negative_weight", self.negative_weight)
        non_negative(f"{prefix}.splice_weight", self.splice_weight)
        positive_float(f"{prefix}.splice_margin", self.splice_margin)
        non_negative(f"{prefix}.pause_db", self.pause_db, what="a number of dB >= 0 (0: pauses off)")
        positive_float(f"{prefix}.min_sound_s", self.min_sound_s)
        if not isinstance(self.sounds_first, bool):
            fail(f"{prefix}.sounds_first", self.sounds_first, "true or false")
        non_negative(f"{prefix}.min_node_s", self.min_node_s, what="a number of seconds >= 0 (0: off)")
        if self.min_node_s > self.min_sound_s:  # a sound shorter than min_node_s could not grow to it
            fail(f"{prefix}.min_node_s", self.min_node_s, f"at most segment.min_sound_s={self.min_sound_s}")



@dataclass(frozen=True)
class SoundParams:
    """Where sounds start and end (see :mod:`sound_cluster.segment.sounds`).

    Attributes
    ----------
    background
        true: a sound is where the frames rise above the file's running background (a bed of wind, rain or
        room tone included) until they fall back; between sounds lies background, a segment of its own |
        false: pauses are steps within segment.pause_db of the file's floor, each carried by the sound before it
    rise_db
        a sound starts where the frames' power reaches this many dB over the background's
    fall_db
        ... and lasts until it falls below this many dB over it (its decay is part of it)
    window_s
        the running window (seconds) over which each mel band's background is its 10th percentile
    min_gap_s
        sounds closer than this (seconds) are one sound
    split_onsets
        a long sound may split at an onset inside it where the merge autoencoder finds the two sides unlike
        (the split cost it learnt on spliced sequences); false: every sound is one segment
    min_part_s
        ... but only where both sides of the merge at that onset last at least this long (seconds): the short
        part a sound starts with (a consonant before its vowel, a stick's attack before a cymbal's ring) stays
        with it | 0 (the default): any length; 0.2 keeps a spoken word whole (BENCHMARKS.md, section 2)
    """

    background: bool = True
    rise_db: float = 12.0
    fall_db: float = 8.0
    window_s: float = 3.0
    min_gap_s: float = 0.1
    split_onsets: bool = True
    min_part_s: float = 0.0

    def check(self, prefix: str = "sounds") -> None:
        for name in ("background", "split_onsets"):
            if not isinstance(getattr(self, name), bool):
                fail(f"{prefix}.{name}", getattr(self, name), "true or false")
        positive_float(f"{prefix}.rise_db", self.rise_db)
        non_negative(f"{prefix}.fall_db", self.fall_db, what="a number of dB >= 0")
        if self.fall_db > self.rise_db:
            fail(f"{prefix}.fall_db", self.fall_db, f"at most {prefix}.rise_db={self.rise_db}")
        positive_float(f"{prefix}.window_s", self.window_s)
        non_negative(f"{prefix}.min_gap_s", self.min_gap_s, what="a number of seconds >= 0")
        non_negative(f"{prefix}.min_part_s", self.min_part_s, what="a number of seconds >= 0 (0: any length)")
