"""One file's time axis in one place: its leaves, its fold, its tree, its own cut and its units.

:func:`segment_file` is the entry point every caller folds a file through: the fit (to cut the
files into sounds before clustering them), the fold stage of fit, apply and recluster (to write
the trees), and the benchmarks. It takes a file's step embeddings and log-mel frames and the
settings of :class:`Segmenter`, and gives a :class:`FileSegments`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from sound_cluster.segment.boundaries import leaf_boundary_times
from sound_cluster.segment.fold import FoldWeights, Merges, fold
from sound_cluster.segment.pauses import FoldInput, fold_input
from sound_cluster.segment.tree import SegmentTree
from sound_cluster.segment.units import Units, collect_units, count_units, file_runs

if TYPE_CHECKING:
    from sound_cluster.config import Params, RaeParams


@dataclass(frozen=True)
class Segmenter:
    """What folding one file needs to know: the fold's settings, the automatic cut's and the features' geometry.

    Per-file jobs get this, not the whole :class:`~sound_cluster.config.Params` (a small pickle per worker).

    Attributes
    ----------
    rae : RaeParams
        The fold: pairing, pauses, sounds first, smallest node.
    auto_min_segment_s : float
        ``output.auto_min_segment_s``: the merge-cost rule's shortest segment.
    boundary_refine_s : float
        ``output.boundary_refine_s``: how far leaf boundaries move to onsets.
    time_pool : int
        Input frames per encoder step.
    frame_rate_hz : float
        Log-mel frames per second.
    """

    rae: "RaeParams"
    auto_min_segment_s: float
    boundary_refine_s: float
    time_pool: int
    frame_rate_hz: float

    @classmethod
    def of(cls, params: "Params") -> "Segmenter":
        return cls(params.rae, params.output.auto_min_segment_s, params.output.boundary_refine_s,
                   params.model.time_pool, params.features.frame_rate_hz)

    @property
    def step_rate_hz(self) -> float:
        """Encoder steps (leaves) per second."""
        return self.frame_rate_hz / self.time_pool

    def fold_input(self, embedding: np.ndarray, frames: np.ndarray) -> FoldInput:
        """The leaves, pauses and sounds a file is folded from (:func:`sound_cluster.segment.pauses.fold_input`)."""
        return fold_input(embedding, frames, rae=self.rae, time_pool=self.time_pool, step_rate_hz=self.step_rate_hz)


@dataclass(frozen=True)
class FileSegments:
    """One file folded: what it was folded from, its merges, its tree and its own cut.

    Attributes
    ----------
    fin : FoldInput
        Leaves, pauses and sounds.
    merges : Merges
    tree : SegmentTree
    auto : dict
        The file's own number of segments and the rule that chose it
        (:meth:`sound_cluster.segment.tree.SegmentTree.auto_choice`): ``{"k": int, "name": str, ...}``.
    pause_db : float
        ``rae.pause_db`` the pauses were found with.
    """

    fin: FoldInput
    merges: Merges
    tree: SegmentTree
    auto: dict[str, Any]
    pause_db: float

    @property
    def spans(self) -> list[tuple[int, int]]:
        """The file's own cut: its segments as half-open leaf spans (its units, with segment units)."""
        return self.tree.cut(int(self.auto["k"]))

    def pauses(self) -> dict[str, Any]:
        """What the tree document records of the file's pauses."""
        return {"pause_db": self.pause_db, "quiet_leaves": int(self.fin.quiet.sum()), "sounds": self.fin.sounds,
                "sounds_first": self.fin.barriers is not None}


def leaf_sizes(n_leaves: int, *, duration_s: float, step_rate_hz: float) -> np.ndarray:
    """Each leaf's size in steps: 1, but the last step covers only the part of a step left in the file."""
    sizes = np.ones(n_leaves)
    sizes[-1] = float(np.clip(duration_s * step_rate_hz - (n_leaves - 1), 0.05, 1.0))
    return sizes


def fold_merges(fin: FoldInput, *, weights: FoldWeights, duration_s: float, seg: Segmenter) -> Merges:
    """One file's fold (:func:`sound_cluster.segment.fold.fold`) on the heap, from its :class:`FoldInput`."""
    sizes = leaf_sizes(len(fin.leaves), duration_s=duration_s, step_rate_hz=seg.step_rate_hz)
    return fold(fin.leaves, weights=weights, pairing=seg.rae.pairing, sizes=sizes, barriers=fin.barriers,
                min_size=fin.min_size)


def segment_file(embedding: np.ndarray, frames: np.ndarray, *, duration_s: float, weights: FoldWeights | None,
                 seg: Segmenter, merges: Merges | None = None, units: int | None = None,
                 sound_length_s: float | None = None) -> FileSegments:
    """Fold one file and choose its own cut.

    Parameters
    ----------
    embedding : np.ndarray [shape=(n_steps, D)]
        The file's step embeddings.
    frames : np.ndarray [shape=(n_frames, n_mels)]
        Its log-mel frames (pauses and sounds are found in them; leaf boundaries move to onsets
        with ``output.boundary_refine_s``).
    duration_s : float
    weights : FoldWeights or None
        The merge autoencoder's (None only when ``merges`` are given).
    seg : Segmenter
    merges : Merges, optional
        The file's fold when it was made before (the fit's, or a batched fold's).
    units : int, optional
        Segment units: the file's number of units when the fit counted them.
    sound_length_s : float, optional
        Segment units: the folder's typical sound length; with ``units`` None, the file's units
        are counted from it (``task=apply``).

    Returns
    -------
    FileSegments
    """
    fin = seg.fold_input(embedding, frames)
    if merges is None:
        if weights is None:
            raise ValueError("segment_file needs the merge autoencoder's weights or the file's merges")
        merges = fold_merges(fin, weights=weights, duration_s=duration_s, seg=seg)
    if units is None and sound_length_s:  # segment units the fit did not count
        units = count_units(file_runs(fin, frames, frame_rate_hz=seg.frame_rate_hz, time_pool=seg.time_pool,
                                      step_rate_hz=seg.step_rate_hz), sound_length_s=sound_length_s)
    leaf_times = leaf_boundary_times(frames, n_leaves=len(fin.leaves), time_pool=seg.time_pool,
                                     frame_rate_hz=seg.frame_rate_hz, radius_s=seg.boundary_refine_s,
                                     duration_s=duration_s)
    tree = SegmentTree.from_merges(merges, frame_rate_hz=seg.step_rate_hz, duration_s=duration_s,
                                   leaf_times=leaf_times)
    auto = tree.auto_choice(min_segment_s=seg.auto_min_segment_s, sounds=fin.sounds, min_sound_s=seg.rae.min_sound_s,
                            units=units, sound_length_s=sound_length_s)
    return FileSegments(fin, merges, tree, auto, seg.rae.pause_db)


def segment_units(steps: Sequence[np.ndarray], frames: Sequence[Any], *, durations_s: Sequence[float], weights,
                  seg: Segmenter, counts: Sequence[int], sound_length_s: float) -> Units:
    """The sounds of every file as units: each file folded (:func:`sound_cluster.segment.segmenter.segment_file`)
    and cut at its own count.

    Parameters
    ----------
    steps : sequence of np.ndarray [shape=(n_steps, D)]
        Per file, the step embeddings (units are embedded from them, pauses left out).
    frames : sequence of np.ndarray or path
        Per file, its log-mel frames (or the ``.npy`` holding them).
    durations_s : sequence of float
    weights : FoldWeights
        The trained merge autoencoder's.
    seg : Segmenter
    counts : sequence of int
        Per file, its number of units (:func:`sound_cluster.segment.units.count_units`).
    sound_length_s : float
        The folder's typical sound length (:func:`sound_cluster.segment.units.typical_sound_length_s`).

    Returns
    -------
    Units
        With each file's merges and count, so the fold stage writes the trees the units were cut from.
    """
    spans, merges, quiet = [], {}, []
    for i, (emb, fr, dur, n) in enumerate(zip(steps, frames, durations_s, counts)):
        fr = np.load(fr, mmap_mode="r", allow_pickle=False) if isinstance(fr, (str, Path)) else fr
        segs = segment_file(emb, fr, duration_s=dur, weights=weights, seg=seg, units=n, sound_length_s=sound_length_s)
        spans.append(segs.spans)
        merges[i] = segs.merges
        quiet.append(segs.fin.quiet)
    units = collect_units(spans, steps, quiet, merges=merges)
    units.counts = {i: int(n) for i, n in enumerate(counts)}
    return units
