"""Units of clustering: whole files (a folder of clips), or the sounds inside every file (a folder of recordings).

In ``segment`` units each file's tree is cut where the tree cuts it by itself (one segment per sound
where pauses separate sounds, else the cut before the largest jump in merge cost; see
:meth:`sound_cluster.tree.SegmentTree.auto_choice`), each segment's embedding is the mean of its
loud steps (the pause a segment carries after its sound is the same in every kind of sound), and the
clusters are found over the segments of all files at once, so a kind of sound is one cluster
wherever it occurs. The cluster head is then trained on crops of the segments, so every step's
posterior, every tree node, every segment and every file's summary follow the same clusters.

``auto`` chooses ``segment`` for a folder whose typical (median) file holds two or more sounds
separated by pauses, or lasts ``model.unit_min_file_s`` or longer, and ``file`` otherwise: a
spoken digit, a note or a drum hit is one sound (its clusters do not change), a soundscape, a
meeting or a sequence of calls is many.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

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
        ``model.unit`` as given (``auto``, ``file`` or ``segment``).
    rule : str
        Why ``unit`` (the rule's words, for ``summary.json`` and the log).
    median_sounds : float
        Sounds between pauses in the median file (:attr:`sound_cluster.pauses.FoldInput.sounds`).
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
    """The unit of clustering for a folder (``model.unit``).

    Parameters
    ----------
    requested : {"auto", "file", "segment"}
    sounds : sequence of int
        Each file's number of sounds separated by pauses.
    durations_s : sequence of float
        Each file's duration in seconds.
    min_file_s : float
        ``auto``: a median file at least this long is a recording (``model.unit_min_file_s``).

    Returns
    -------
    UnitChoice
    """
    med_sounds = float(np.median(sounds)) if len(sounds) else 0.0
    med_dur = float(np.median(durations_s)) if len(durations_s) else 0.0
    if requested != "auto":
        return UnitChoice(requested, requested, "given", med_sounds, med_dur)
    if med_sounds >= 2:
        return UnitChoice(SEGMENT, requested, f"the median file holds {med_sounds:g} sounds between pauses (>= 2)",
                          med_sounds, med_dur)
    if med_dur >= min_file_s:
        return UnitChoice(SEGMENT, requested, f"the median file lasts {med_dur:.1f} s (>= model.unit_min_file_s="
                          f"{min_file_s:g})", med_sounds, med_dur)
    return UnitChoice(FILE, requested, f"the median file holds {med_sounds:g} sound(s) between pauses and lasts "
                      f"{med_dur:.1f} s (< model.unit_min_file_s={min_file_s:g}): one sound per file", med_sounds,
                      med_dur)


def sound_lengths_s(quiet: np.ndarray, onsets: np.ndarray, *, step_rate_hz: float) -> np.ndarray:
    """The loud time of each sound that pauses separate (from its onset to the next sound's, pauses left out).

    Parameters
    ----------
    quiet : np.ndarray [shape=(n_steps,), dtype=bool]
    onsets : np.ndarray [shape=(n_sounds,), dtype=int64]
        :func:`sound_cluster.pauses.sound_onsets`.
    step_rate_hz : float

    Returns
    -------
    np.ndarray [shape=(n_sounds,)]
        Seconds; empty when fewer than two sounds (a lone sound's length is the file's, not a sound's).
    """
    if len(onsets) < 2:
        return np.empty(0)
    loud = ~np.asarray(quiet, dtype=bool)
    edges = np.r_[np.asarray(onsets), len(loud)]
    return np.array([loud[a:b].sum() for a, b in zip(edges[:-1], edges[1:])], dtype=np.float64) / step_rate_hz


def typical_sound_length_s(lengths: Sequence[np.ndarray], *, default_s: float) -> tuple[float, str]:
    """The folder's typical sound length: the median of the sounds pauses separate, else ``default_s``.

    Returns the length in seconds and where it came from.
    """
    pooled = np.concatenate([np.asarray(x, dtype=np.float64) for x in lengths]) if len(lengths) else np.empty(0)
    if len(pooled):
        return float(np.median(pooled)), f"median of the {len(pooled)} sounds between pauses"
    return float(default_s), "model.unit_sound_s (no file has pauses between sounds)"


def unit_vector(steps: np.ndarray, quiet: np.ndarray) -> np.ndarray:
    """One unit's embedding: the unit-length mean of its loud steps (of all its steps when none is loud).

    Parameters
    ----------
    steps : np.ndarray [shape=(n_steps, D)]
        The unit's step embeddings.
    quiet : np.ndarray [shape=(n_steps,), dtype=bool]
        Which of them are pauses (:func:`sound_cluster.pauses.quiet_steps`).

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
    merges : dict of int to Merges
        Each file's fold, by file index, so the fold stage writes the trees the units came from.
    """

    file: np.ndarray
    start: np.ndarray
    end: np.ndarray
    vectors: np.ndarray
    merges: dict[int, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.file))

    def steps(self, step_embeddings: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each unit's step embeddings (views into ``step_embeddings``, one array per file)."""
        return [step_embeddings[f][s:e] for f, s, e in zip(self.file, self.start, self.end)]


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
    files, starts, ends, vecs = [], [], [], []
    for i, (file_spans, emb, q) in enumerate(zip(spans, step_embeddings, quiet)):
        for s, e in file_spans:
            files.append(i)
            starts.append(s)
            ends.append(e)
            vecs.append(unit_vector(emb[s:e], q[s:e]))
    dim = int(step_embeddings[0].shape[1]) if len(step_embeddings) else 0
    return Units(np.asarray(files, dtype=np.int64), np.asarray(starts, dtype=np.int64),
                 np.asarray(ends, dtype=np.int64), np.asarray(vecs).reshape(-1, dim), dict(merges or {}))
