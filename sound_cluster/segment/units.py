"""Units of clustering: whole files (a folder of clips), or the sounds inside every file (a folder of recordings).

In ``segment`` units each file's tree is cut where the tree cuts it by itself (one segment per sound
where pauses separate sounds, else the cut before the largest jump in merge cost; see
:meth:`sound_cluster.segment.tree.SegmentTree.auto_choice`), each segment's embedding is the mean of its
loud steps (the pause a segment carries after its sound is the same in every kind of sound), and the
clusters are found over the segments of all files at once, so a kind of sound is one cluster
wherever it occurs. The cluster head is then trained on crops of the segments, so every step's
posterior, every tree node, every segment and every file's summary follow the same clusters.

``auto`` chooses ``segment`` for a folder whose typical (median) file holds two or more sounds
separated by pauses, or lasts ``units.min_file_s`` or longer, or where recordings (files of two
sounds or more lasting that long) hold most of the audio (a folder of clips beside a few long
recordings), and ``file`` otherwise: a spoken digit, a note or a drum hit is one sound (its clusters
do not change), a soundscape, a meeting or a sequence of calls is many.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sound_cluster.embed.step_store import Steps, row_span
from sound_cluster.segment.onsets import onset_steps

log = logging.getLogger(__name__)

FILE, SEGMENT = "file", "segment"


@dataclass(frozen=True)
class UnitChoice:
    """What a run clusters and why.

    Attributes
    ----------
    unit : str
        ``file`` or ``segment``.
    requested : str
        ``units.kind`` as given (``auto``, ``file`` or ``segment``).
    rule : str
        Why ``unit`` (the rule's words, for ``summary.json`` and the log).
    median_sounds : float
        Sounds between pauses in the median file (:attr:`sound_cluster.segment.pauses.FoldInput.sounds`).
    median_duration_s : float
    """

    unit: str
    requested: str
    rule: str
    median_sounds: float = 0.0
    median_duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "requested": self.requested, "rule": self.rule,
                "median_sounds": round(float(self.median_sounds), 3),
                "median_duration_s": round(float(self.median_duration_s), 3)}


def choose_unit(requested: str, *, sounds: Sequence[int], durations_s: Sequence[float],
                min_file_s: float) -> UnitChoice:
    """The unit of clustering for a folder (``units.kind``).

    Parameters
    ----------
    requested : {"auto", "file", "segment"}
    sounds : sequence of int
        Each file's number of sounds separated by pauses.
    durations_s : sequence of float
        Each file's duration in seconds.
    min_file_s : float
        ``auto``: a median file at least this long is a recording (``units.min_file_s``).

    Returns
    -------
    UnitChoice
    """
    med_sounds = float(np.median(sounds)) if len(sounds) else 0.0
    med_dur = float(np.median(durations_s)) if len(durations_s) else 0.0
    if requested != "auto":
        return UnitChoice(requested, requested, "given", med_sounds, med_dur)
    if med_sounds >= 2:
        return UnitChoice(SEGMENT, requested, f"the median file holds {med_sounds:g} sounds (>= 2)",
                          med_sounds, med_dur)
    if med_dur >= min_file_s:
        return UnitChoice(SEGMENT, requested, f"the median file lasts {med_dur:.1f} s (>= units.min_file_s="
                          f"{min_file_s:g})", med_sounds, med_dur)
    dur = np.asarray(durations_s, dtype=float)
    long_many = (np.asarray(sounds) >= 2) & (dur >= min_file_s)
    share = float(dur[long_many].sum() / dur.sum()) if len(dur) and dur.sum() > 0 else 0.0
    if share > 0.5:
        return UnitChoice(SEGMENT, requested, f"recordings (files of 2 sounds or more, at least {min_file_s:g} s) "
                          f"hold {share:.0%} of the audio", med_sounds, med_dur)
    return UnitChoice(FILE, requested, f"the median file holds {med_sounds:g} sound(s) and lasts "
                      f"{med_dur:.1f} s (< units.min_file_s={min_file_s:g}): one sound per file", med_sounds,
                      med_dur)


MIN_INTERVALS = 8  # fewer intervals between onsets inside sounds than this: they do not set the length


@dataclass(frozen=True)
class SoundRuns:
    """One file's sounds between pauses (runs): each one's loud time and the onsets inside it.

    Attributes
    ----------
    loud_s : np.ndarray [shape=(n_runs,)]
        Loud time of each run, from its onset to the next run's, pauses left out (seconds).
    intervals_s : np.ndarray [shape=(n_intervals,)]
        Seconds between consecutive onsets inside one run (intervals across a pause left out).
    onsets : np.ndarray [shape=(n_runs,), dtype=int64]
        Onsets inside each run (at least one: a run starts with its sound).
    """

    loud_s: np.ndarray
    intervals_s: np.ndarray
    onsets: np.ndarray


def sound_runs(quiet: np.ndarray, run_starts: np.ndarray, onset_steps_: np.ndarray, *,
               step_rate_hz: float) -> SoundRuns:
    """A file's runs of sound and the onsets inside them.

    Parameters
    ----------
    quiet : np.ndarray [shape=(n_steps,), dtype=bool]
    run_starts : np.ndarray [shape=(n_runs,), dtype=int64]
        First step of each sound (:func:`sound_cluster.segment.pauses.sound_onsets`); each run lasts to the
        next one's start.
    onset_steps_ : np.ndarray [shape=(n_onsets,), dtype=int64]
        :func:`sound_cluster.segment.onsets.onset_steps`.
    step_rate_hz : float
    """
    loud = ~np.asarray(quiet, dtype=bool)
    edges = np.r_[np.asarray(run_starts, dtype=np.int64), len(loud)]
    lengths, intervals, counts = [], [], []
    on = np.asarray(onset_steps_, dtype=np.int64)
    for a, b in zip(edges[:-1], edges[1:]):
        lengths.append(loud[a:b].sum() / step_rate_hz)
        inside = on[(on >= a) & (on < b)]
        intervals.append(np.diff(inside) / step_rate_hz)
        counts.append(max(1, len(inside)))
    return SoundRuns(np.asarray(lengths, dtype=np.float64),
                     np.concatenate(intervals) if intervals else np.empty(0), np.asarray(counts, dtype=np.int64))


def file_runs(fin, frames: np.ndarray, *, frame_rate_hz: float, time_pool: int, step_rate_hz: float) -> SoundRuns:
    """One file's sounds between pauses and the onsets inside them.

    Parameters
    ----------
    fin : FoldInput
        What the file is folded from (:func:`sound_cluster.segment.pauses.fold_input`): its quiet
        steps and where its sounds between pauses start.
    frames : np.ndarray [shape=(n_frames, n_mels)]
        The file's log-mel frames (:func:`sound_cluster.segment.onsets.onset_steps` finds the onsets in them).
    frame_rate_hz, time_pool, step_rate_hz
        Frames per second, frames per step, steps per second.
    """
    onsets = onset_steps(frames, frame_rate_hz=frame_rate_hz, time_pool=time_pool)
    return sound_runs(fin.quiet, fin.onsets, onsets, step_rate_hz=step_rate_hz)


def typical_sound_length_s(runs: Sequence[SoundRuns], *, default_s: float) -> tuple[float, str]:
    """The folder's typical length of one sound, and where it came from.

    Where most runs between pauses hold one onset, a run is one sound: the median run's loud time.
    Where most hold several (sounds joined without pauses between them), the median interval
    between onsets inside runs. ``default_s`` when neither can be measured (a silent folder).
    """
    loud = np.concatenate([r.loud_s for r in runs]) if len(runs) else np.empty(0)
    counts = np.concatenate([r.onsets for r in runs]) if len(runs) else np.empty(0)
    iois = np.concatenate([r.intervals_s for r in runs]) if len(runs) else np.empty(0)
    if len(counts) and np.mean(counts >= 2) >= 0.5 and len(iois) >= MIN_INTERVALS:
        return float(np.median(iois)), (f"median interval between onsets inside sounds ({len(iois)} intervals; "
                                        f"{np.mean(counts >= 2):.0%} of the sounds between pauses hold several onsets)")
    loud = loud[loud > 0]
    if len(loud):
        return float(np.median(loud)), f"median loud time of the {len(loud)} sounds between pauses"
    return float(default_s), "units.sound_s (no sound measured)"


def count_units(runs: SoundRuns, *, sound_length_s: float) -> int:
    """A file's number of units: each run between pauses holds ``floor(loud time / sound_length_s)`` sounds,
    at least one (a sound up to twice the typical length stays whole; n joined sounds of about that length
    are n)."""
    if not len(runs.loud_s):
        return 1
    return int(np.maximum(1, np.floor(runs.loud_s / sound_length_s + 1e-9)).sum())


def unit_vector(steps: np.ndarray, quiet: np.ndarray) -> np.ndarray:
    """One unit's embedding: the unit-length mean of its loud steps (of all its steps when none is loud).

    Parameters
    ----------
    steps : np.ndarray [shape=(n_steps, D)]
        The unit's step embeddings.
    quiet : np.ndarray [shape=(n_steps,), dtype=bool]
        Which of them are pauses (:func:`sound_cluster.segment.pauses.quiet_steps`).

    Returns
    -------
    np.ndarray [shape=(D,), dtype=float64]
    """
    steps = np.asarray(steps, dtype=np.float64)
    loud = ~np.asarray(quiet, dtype=bool)
    v = steps[loud].mean(axis=0) if loud.any() else steps.mean(axis=0)
    return v / max(float(np.linalg.norm(v)), 1e-12)


@dataclass
class Units:
    """The segments of every file that a run clusters.

    Attributes
    ----------
    file : np.ndarray [shape=(n_units,), dtype=int64]
        Each unit's file (an index into the run's files).
    start, end : np.ndarray [shape=(n_units,), dtype=int64]
        Each unit's span in its file's steps, half-open.
    vectors : np.ndarray [shape=(n_units, D)]
        Each unit's embedding (:func:`unit_vector`).
    merges : dict of int to Merges or Path
        Each file's fold (or the file holding it), by file index, so the fold stage writes the trees the units
        came from.
    counts : dict of int to int
        Each file's number of units, by file index (the cut of its tree).
    """

    file: np.ndarray
    start: np.ndarray
    end: np.ndarray
    vectors: np.ndarray
    merges: dict[int, Any] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.file))

    def steps(self, step_embeddings: Sequence[Steps]) -> "UnitSteps":
        """Each unit's step embeddings: views into ``step_embeddings`` (one per file), nothing copied or read."""
        return UnitSteps(self, step_embeddings)


class UnitSteps(Sequence):
    """Each unit's step embeddings, made when asked for (:func:`row_span` of its file's), so millions of units
    hold no object each; ``lengths`` gives every unit's number of steps without making them."""

    def __init__(self, units: "Units", step_embeddings: Sequence[Steps]) -> None:
        self.units, self.step_embeddings = units, step_embeddings
        self.lengths = units.end - units.start

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, i):
        u = self.units
        return row_span(self.step_embeddings[int(u.file[i])], int(u.start[i]), int(u.end[i]))


def spans_by_file(file: np.ndarray, start: np.ndarray, end: np.ndarray,
                  clusters: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Units grouped by their file: per file index, in order, its units' rows ``(start, end, cluster)``.

    Parameters
    ----------
    file, start, end, clusters : np.ndarray [shape=(n_units,)]
        Each unit's file index, step span and cluster.

    Returns
    -------
    list of (int, np.ndarray [shape=(n_file_units, 3), dtype=int64])
        One array per file (not a tuple per unit), each file's units in their order.
    """
    file = np.asarray(file)
    order = np.argsort(file, kind="stable")
    table = np.column_stack([start, end, clusters]).astype(np.int64)[order]
    files = file[order]
    first = np.flatnonzero(np.r_[True, files[1:] != files[:-1]]) if len(files) else np.empty(0, np.int64)
    return [(int(i), rows) for i, rows in zip(files[first], np.split(table, first[1:]))]


def collect_units(spans: Sequence[Sequence[tuple[int, int]]], step_embeddings: Sequence[np.ndarray],
                  quiet: Sequence[np.ndarray], *, merges: dict[int, Any] | None = None) -> Units:
    """Every file's segments as units.

    Parameters
    ----------
    spans : sequence of sequences of (int, int)
        Per file, its segments as half-open step spans (``SegmentTree.cut``).
    step_embeddings : sequence of np.ndarray [shape=(n_steps, D)]
        Per file.
    quiet : sequence of np.ndarray [shape=(n_steps,), dtype=bool]
        Per file, its pauses.
    merges : dict, optional
        Per file index, its fold (kept with the units).
    """
    # Filled in place: a list of a small array per unit would leave the heap fragmented (tens of MB at 16 hours).
    n = sum(len(f) for f in spans)
    dim = int(step_embeddings[0].shape[1]) if len(step_embeddings) else 0
    files = np.repeat(np.arange(len(spans), dtype=np.int64), [len(f) for f in spans])
    bounds = np.asarray([(s, e) for f in spans for s, e in f], dtype=np.int64).reshape(n, 2)
    vecs = np.empty((n, dim), dtype=np.float64)
    u = 0
    for file_spans, emb, q in zip(spans, step_embeddings, quiet):
        emb = np.asarray(emb)  # rows on disk are read once per file
        for s, e in file_spans:
            vecs[u] = unit_vector(emb[s:e], q[s:e])
            u += 1
    return Units(files, bounds[:, 0].copy(), bounds[:, 1].copy(), vecs, dict(merges or {}))
