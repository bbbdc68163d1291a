"""One file's time axis in one place: its leaves, its fold, its tree, its own cut and its units.

:func:`segment_file` is the entry point every caller folds a file through: the fit (to cut the
files into sounds before clustering them), the fold stage of fit, apply and recluster (to write
the trees), and the benchmarks. It takes a file's step embeddings and log-mel frames and the
settings of :class:`Segmenter`, and gives a :class:`FileSegments`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from sound_cluster.embed.step_store import row_span
from sound_cluster.segment.boundaries import leaf_boundary_times
from sound_cluster.segment.fold import FoldWeights, Merges, fold
from sound_cluster.segment.pauses import FoldInput, fold_input
from sound_cluster.segment.sounds import sound_fold_input
from sound_cluster.segment.tree import SegmentTree
from sound_cluster.segment.units import Units, collect_units, count_units, file_runs

if TYPE_CHECKING:
    from sound_cluster.config import Params, SegmentParams, SoundParams


@dataclass(frozen=True)
class Segmenter:
    """What folding one file needs to know: the fold's settings, the automatic cut's and the features' geometry.

    Per-file jobs get this, not the whole :class:`~sound_cluster.config.Params` (a small pickle per worker).

    Attributes
    ----------
    segment : SegmentParams
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

    segment: "SegmentParams"
    auto_min_segment_s: float
    boundary_refine_s: float
    time_pool: int
    frame_rate_hz: float
    sounds: "SoundParams | None" = None

    @property
    def min_part_steps(self) -> int:
        """``sounds.min_part_s`` in steps (at least 1)."""
        return max(1, math.ceil(self.sounds.min_part_s * self.step_rate_hz - 1e-9)) if self.sounds else 1

    @classmethod
    def of(cls, params: "Params") -> "Segmenter":
        return cls(params.segment, params.output.auto_min_segment_s, params.output.boundary_refine_s,
                   params.model.time_pool, params.features.frame_rate_hz, params.sounds)

    @property
    def step_rate_hz(self) -> float:
        """Encoder steps (leaves) per second."""
        return self.frame_rate_hz / self.time_pool

    @property
    def over_background(self) -> bool:
        """Sounds are found over the file's running background (``sounds.background``), with adjacent pairing."""
        return self.sounds is not None and self.sounds.background and self.segment.pairing == "adjacent"

    def fold_input(self, embedding: np.ndarray, frames: np.ndarray, *, detect: np.ndarray | None = None) -> FoldInput:
        """The leaves, pauses or sounds and background a file is folded from.

        :func:`sound_cluster.segment.sounds.sound_fold_input` with ``sounds.background`` (sounds found on
        ``detect``, a gated file's frames before the gating, where given), else
        :func:`sound_cluster.segment.pauses.fold_input`.
        """
        if self.over_background:
            return sound_fold_input(embedding, frames, segment=self.segment, sounds=self.sounds, time_pool=self.time_pool,
                                    frame_rate_hz=self.frame_rate_hz, detect=detect)
        return fold_input(embedding, frames, segment=self.segment, time_pool=self.time_pool, step_rate_hz=self.step_rate_hz)


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
        ``segment.pause_db`` the pauses were found with.
    cut : list of (int, int, str) or None
        Sounds over a background: the file's own cut, ``(start leaf, end leaf, kind)`` (:func:`own_cut`).
    """

    fin: FoldInput
    merges: Merges
    tree: SegmentTree
    auto: dict[str, Any]
    pause_db: float
    cut: list[tuple[int, int, str]] | None = None

    @property
    def spans(self) -> list[tuple[int, int]]:
        """The file's own cut: its segments as half-open leaf spans."""
        if self.cut is not None:
            return [(a, b) for a, b, _ in self.cut]
        return self.tree.cut(int(self.auto["k"]))

    @property
    def sound_spans(self) -> list[tuple[int, int]]:
        """The file's units with segment units: its sounds (over a background), else every segment of its cut."""
        if self.cut is not None:
            return [(a, b) for a, b, kind in self.cut if kind == SOUND]
        return self.spans

    def record(self) -> tuple[str, dict[str, Any]]:
        """What the tree document records of the file's sounds: under ``sounds`` (found over the background:
        how many, the leaves of background, the onsets a sound may split at) or ``pauses``."""
        if self.cut is not None:
            return "sounds", {"sounds": self.fin.sounds, "background_leaves": int(self.fin.quiet.sum()),
                              "onsets": int(len(self.fin.splits)), "segments": len(self.cut)}
        return "pauses", {"pause_db": self.pause_db, "quiet_leaves": int(self.fin.quiet.sum()),
                          "sounds": self.fin.sounds, "sounds_first": self.fin.barriers is not None}


def leaf_sizes(n_leaves: int, *, duration_s: float, step_rate_hz: float) -> np.ndarray:
    """Each leaf's size in steps: 1, but the last step covers only the part of a step left in the file."""
    sizes = np.ones(n_leaves)
    sizes[-1] = float(np.clip(duration_s * step_rate_hz - (n_leaves - 1), 0.05, 1.0))
    return sizes


def fold_merges(fin: FoldInput, *, weights: FoldWeights, duration_s: float, seg: Segmenter) -> Merges:
    """One file's fold (:func:`sound_cluster.segment.fold.fold`) on the heap, from its :class:`FoldInput`."""
    sizes = leaf_sizes(len(fin.leaves), duration_s=duration_s, step_rate_hz=seg.step_rate_hz)
    return fold(fin.leaves, weights=weights, pairing=seg.segment.pairing, sizes=sizes, barriers=fin.barriers,
                min_size=fin.min_size)


def segment_file(embedding: np.ndarray, frames: np.ndarray, *, duration_s: float, weights: FoldWeights | None,
                 seg: Segmenter, merges: Merges | None = None, units: int | None = None,
                 sound_length_s: float | None = None, fin: FoldInput | None = None,
                 detect: np.ndarray | None = None) -> FileSegments:
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
    fin : FoldInput, optional
        What the file is folded from, when the caller found it already (``seg.fold_input`` of the same arrays).
    detect : np.ndarray [shape=(n_frames, n_mels)], optional
        A gated file's frames before the gating (:func:`sound_cluster.ingest.features.detection_frames`): its
        sounds are found on them.

    Returns
    -------
    FileSegments
    """
    fin = fin if fin is not None else seg.fold_input(embedding, frames, detect=detect)
    if merges is not None and len(merges.left) != max(len(fin.leaves) - 1, 0) and weights is not None:
        merges = None  # merges of other leaves (a tree read back from a run folder that does not fit): fold again
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
    if fin.edge_times:
        leaf_times = _with_edge_times(leaf_times, fin.edge_times)
    tree = SegmentTree.from_merges(merges, frame_rate_hz=seg.step_rate_hz, duration_s=duration_s,
                                   leaf_times=leaf_times)
    if fin.pieces is not None:
        split_cost = float("inf") if weights is None else weights.split_cost
        cut = own_cut(tree, fin, split_cost=split_cost, ward=seg.segment.linkage == "ward",
                      min_part=seg.min_part_steps)
        auto = {"k": len(cut), "name": SOUNDS_OVER_BACKGROUND, "rise_db": seg.sounds.rise_db,
                "fall_db": seg.sounds.fall_db, "split_cost": None if not np.isfinite(split_cost)
                else round(float(split_cost), 6)}
        return FileSegments(fin, merges, tree, auto, seg.segment.pause_db, cut)
    auto = tree.auto_choice(min_segment_s=seg.auto_min_segment_s, sounds=fin.sounds, min_sound_s=seg.segment.min_sound_s,
                            units=units, sound_length_s=sound_length_s)
    return FileSegments(fin, merges, tree, auto, seg.segment.pause_db)


SOUNDS_OVER_BACKGROUND = "sounds_over_background"  # the rule of the file's own cut (recorded in the tree)
SOUND, BACKGROUND = "sound", "background"


def _with_edge_times(leaf_times: np.ndarray, edges: dict[int, float]) -> np.ndarray:
    """Leaf boundary times with the boundaries where sounds start and end at their exact times (kept increasing)."""
    out = np.array(leaf_times, dtype=np.float64)
    for b, t in sorted(edges.items()):
        if 0 < b < len(out) - 1:
            out[b] = min(max(t, out[b - 1] + 1e-3), out[b + 1] - 1e-3)
    return out


def own_cut(tree: SegmentTree, fin: FoldInput, *, split_cost: float, ward: bool,
            min_part: int = 1) -> list[tuple[int, int, str]]:
    """A file's own cut over its background: every piece (a sound, or the background between sounds), and a sound
    split at every onset inside it where the merge that joined its two sides costs more per step than ``split_cost``
    and neither side is shorter than ``min_part`` steps.

    Parameters
    ----------
    tree : SegmentTree
        Folded with the barriers of ``fin`` (each piece, and each part of a sound between its onsets, is a node).
    fin : FoldInput
        With ``pieces`` and ``splits`` (:func:`sound_cluster.segment.sounds.sound_fold_input`).
    split_cost : float
        The merge autoencoder's split cost (:func:`sound_cluster.segment.merge_model.calibrate_split_cost`);
        ``inf``: sounds are never split.
    ward : bool
        The costs carry Ward's size factor (``segment.linkage=ward``), which the comparison takes out.
    min_part : int
        The shortest side, in steps, of a merge across an onset that may split a sound (``sounds.min_part_s``).

    Returns
    -------
    list of (int, int, str)
        ``(start leaf, end leaf, kind)`` in time order, covering the file; kind ``sound`` or ``background``.
    """
    n = tree.n_leaves
    by_span = {(int(tree.start[i]), int(tree.end[i])): i for i in range(2 * n - 1)}
    onsets = set(int(x) for x in (fin.splits if fin.splits is not None else ()))
    out: list[tuple[int, int, str]] = []
    for a, b, is_sound in fin.pieces:
        node = by_span.get((int(a), int(b)))
        if node is None or not is_sound:  # a piece is a node whenever the fold honoured its barriers
            out.append((int(a), int(b), SOUND if is_sound else BACKGROUND))
            continue
        # every onset inside the sound where the merge joining its two sides is dear is a cut, whatever the
        # merges above it cost (a cheap merge of two large halves must not hide a change of kind inside one)
        cuts, stack = [], [node]
        while stack:
            x = stack.pop()
            kids = tree.children(x)
            if kids is None:
                continue
            left, right = sorted(kids, key=lambda c: tree.start[c])
            cut_at = int(tree.start[right])
            if (cut_at in onsets and plain_cost(tree, x, ward=ward) > split_cost
                    and min(tree.end[left] - tree.start[left], tree.end[right] - tree.start[right]) >= min_part):
                cuts.append(cut_at)
            stack += [right, left]
        bounds = [int(a), *sorted(cuts), int(b)]
        parts = [(s, e, SOUND) for s, e in zip(bounds, bounds[1:])]
        out += parts
    return out


def plain_cost(tree: SegmentTree, node: int, *, ward: bool) -> float:
    """A merge's cost without Ward's size factor: how unlike the two children are, whatever their sizes."""
    if not ward:
        return tree.node_cost(node)
    left, right = tree.children(node)
    n1 = float(tree.end[left] - tree.start[left])
    n2 = float(tree.end[right] - tree.start[right])
    return tree.node_cost(node) / (n1 * n2 / (n1 + n2))


def segment_units(steps: Sequence[np.ndarray], frames: Sequence[Any], *, durations_s: Sequence[float], weights,
                  seg: Segmenter, counts: Sequence[int] | None = None, sound_length_s: float | None = None,
                  fins: Sequence[FoldInput] | None = None, merges_dir: Path | None = None) -> Units:
    """The sounds of every file as units: each file folded (:func:`segment_file`) and cut by its own cut.

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
    counts : sequence of int, optional
        With pauses (``sounds.background=false``): per file, its number of units
        (:func:`sound_cluster.segment.units.count_units`).
    sound_length_s : float, optional
        With pauses: the folder's typical sound length (:func:`sound_cluster.segment.units.typical_sound_length_s`).
    fins : sequence of FoldInput, optional
        Per file, what it is folded from, when the caller found it already (the sounds are not found twice).
    merges_dir : Path, optional
        An existing folder: each file's merges are written there (``<file index>.npz``, :meth:`Merges.save`) and
        the units keep their paths, so their memory does not grow with the hours (24 bytes per step).

    Returns
    -------
    Units
        With each file's merges (or the file holding them) and count, so the fold stage writes the trees the
        units were cut from.
    """
    spans, merges, quiet, n_units = [], {}, [], {}
    for i, (emb, fr, dur) in enumerate(zip(steps, frames, durations_s)):
        fr = np.load(fr, mmap_mode="r", allow_pickle=False) if isinstance(fr, (str, Path)) else fr
        emb = np.asarray(emb)  # rows on disk are read once per file, here
        segs = segment_file(emb, fr, duration_s=dur, weights=weights, seg=seg,
                            units=None if counts is None else counts[i], sound_length_s=sound_length_s,
                            fin=None if fins is None else fins[i])
        spans.append(segs.sound_spans)
        merges[i] = segs.merges.without_codes()  # kept for the fold stage, which writes the trees from them
        if merges_dir is not None:
            merges[i].save(path := Path(merges_dir) / f"{i}.npz")
            merges[i] = path
        quiet.append(segs.fin.quiet if segs.cut is None else np.zeros(len(emb), dtype=bool))
        n_units[i] = len(segs.sound_spans) if counts is None else int(counts[i])
    units = collect_units(spans, steps, quiet, merges=merges)
    units.counts = n_units
    return units


def sound_parts(fin: FoldInput) -> list[tuple[int, int]]:
    """The parts of a file's sounds between the onsets inside them, as half-open leaf spans (none without sounds
    found over a background): the stretches most likely to hold one kind of sound each."""
    if fin.pieces is None:
        return []
    splits = np.asarray(fin.splits if fin.splits is not None else (), dtype=np.int64)
    out = []
    for a, b, is_sound in fin.pieces:
        if is_sound:
            bounds = [int(a), *(int(x) for x in splits[(splits > a) & (splits < b)]), int(b)]
            out += list(zip(bounds, bounds[1:]))
    return out


def train_merge_model(fins: Sequence[FoldInput], *, segment: "SegmentParams", seed: int):
    """The merge autoencoder trained on the files' leaves (and on splices of their sounds, where sounds were found
    over a background), and then its split cost calibrated on those sounds (:func:`sound_cluster.segment.merge_model.calibrate_split_cost`).

    Returns
    -------
    model : MergeAutoencoder
    losses : list of float
        Mean merge cost per epoch.
    """
    from sound_cluster.segment.merge_model import calibrate_split_cost, train_merge_autoencoder  # TensorFlow

    sounds = [row_span(f.leaves, a, b) for f in fins for a, b in sound_parts(f)]  # views: nothing copied or read
    model, losses = train_merge_autoencoder([f.leaves for f in fins], segment=segment, seed=seed, sounds=sounds)
    if sounds:
        model.split_cost = calibrate_split_cost(model, sounds, seed=seed)
    return model, losses
