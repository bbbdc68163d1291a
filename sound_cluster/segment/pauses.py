"""Pauses in the fold's leaves: a quiet step carries the sound before it.

A segment of sound starts where the sound starts. Folded as they are, the quiet steps between
two words (or two hits) are a third kind of sound, as unlike the word before them as the word
after, so a cut lands at either end of the pause at random: on joined spoken digits half the
boundaries fell where the previous word ended, up to 0.3 s before the next one began. Here a
step whose loudest frame is quiet takes the leaf vector of the step before it, so a pause
folds into the sound it follows and a cut between the two falls where the next sound begins.

Quiet is relative to the file: a step is quiet when its loudest frame is within ``pause_db`` of
the file's floor (the 5th percentile of frame levels) and at least ``pause_db`` below its loud
level (the 95th percentile). The second bound keeps a file of steady sound (little range
between floor and loud) from being read as one long pause. Steps before the first loud step
keep their own vectors (there is no sound before them to carry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sound_cluster.embed.step_store import as_steps, take_rows

if TYPE_CHECKING:
    from sound_cluster.config import SegmentParams

FLOOR_PERCENTILE = 5.0
LOUD_PERCENTILE = 95.0
_BLOCK_FRAMES = 65536  # frames per block, so a three-hour file never holds a float64 copy of its frames


def level_db(frames: np.ndarray) -> np.ndarray:
    """Each frame's total power in dB.

    Parameters
    ----------
    frames : np.ndarray [shape=(n_frames, n_mels)]
        Log-mel frames (natural log of power); may be memory-mapped.

    Returns
    -------
    level : np.ndarray [shape=(n_frames,), dtype=float64]
        ``10 log10(sum_m exp(frames[:, m]))``, computed stably block by block.
    """
    out = np.empty(len(frames))
    for a in range(0, len(frames), _BLOCK_FRAMES):
        x = np.asarray(frames[a:a + _BLOCK_FRAMES], dtype=np.float64)
        top = x.max(axis=1, keepdims=True)
        out[a:a + len(x)] = (top[:, 0] + np.log(np.exp(x - top).sum(axis=1))) * (10.0 / np.log(10.0))
    return out


def quiet_steps(frames: np.ndarray, *, n_steps: int, time_pool: int, pause_db: float) -> np.ndarray:
    """Which encoder steps are pauses.

    Parameters
    ----------
    frames : np.ndarray [shape=(n_frames, n_mels)]
        The file's log-mel frames.
    n_steps : int
        Encoder steps of the file (``ceil(n_frames / time_pool)``).
    time_pool : int
        Frames per step.
    pause_db : float
        Range in dB above the floor (and below the loud level) that counts as quiet; 0 turns
        pauses off (no step is quiet).

    Returns
    -------
    quiet : np.ndarray [shape=(n_steps,), dtype=bool]
    """
    quiet = np.zeros(int(n_steps), dtype=bool)
    if pause_db <= 0 or len(frames) == 0 or n_steps == 0:
        return quiet
    level = level_db(frames)
    floor, loud = np.percentile(level, [FLOOR_PERCENTILE, LOUD_PERCENTILE])
    threshold = min(floor + pause_db, loud - pause_db)
    # A step's loudest frame decides: one loud frame (an onset) keeps the step.
    loudest = np.full(n_steps * time_pool, -np.inf)
    m = min(len(level), len(loudest))
    loudest[:m] = level[:m]
    return loudest.reshape(n_steps, time_pool).max(axis=1) < threshold


def carry_sources(quiet: np.ndarray) -> np.ndarray:
    """For each step, the step whose vector it takes: itself, or the last loud step before a quiet one.

    Parameters
    ----------
    quiet : np.ndarray [shape=(n_steps,), dtype=bool]

    Returns
    -------
    source : np.ndarray [shape=(n_steps,), dtype=int64]
        Steps before the first loud step are their own source (no sound before them to carry).
    """
    quiet = np.asarray(quiet, dtype=bool)
    idx = np.arange(len(quiet))
    if not len(idx):
        return idx
    last_loud = np.maximum.accumulate(np.where(quiet, -1, idx))
    return np.where(quiet & (last_loud >= 0), last_loud, idx)


def fold_leaves(embedding: np.ndarray, frames: np.ndarray, *, time_pool: int, pause_db: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """The leaves a file is folded from: its step embeddings with pauses carried over.

    Parameters
    ----------
    embedding : np.ndarray or StoredRows [shape=(n_steps, d)]
    frames : np.ndarray [shape=(n_frames, n_mels)]
    time_pool : int
    pause_db : float
        See :func:`quiet_steps`.

    Returns
    -------
    leaves : np.ndarray or StoredRows [shape=(n_steps, d)]
        As ``embedding`` is: rows on disk stay on disk.
    quiet : np.ndarray [shape=(n_steps,), dtype=bool]
        The steps read as pauses (all but leading ones carry the sound before them).
    """
    quiet = quiet_steps(frames, n_steps=len(embedding), time_pool=time_pool, pause_db=pause_db)
    embedding = as_steps(embedding)
    return (take_rows(embedding, carry_sources(quiet)) if quiet.any() else embedding), quiet


def sound_onsets(quiet: np.ndarray, *, min_steps: int) -> np.ndarray:
    """Where the sounds that pauses separate start: runs of loud steps at least ``min_steps`` long.

    Parameters
    ----------
    quiet : np.ndarray [shape=(n_steps,), dtype=bool]
    min_steps : int
        Shorter runs (a click, a burst of noise in a pause) are not sounds: they belong to the
        sound before them, as the pause does.

    Returns
    -------
    onsets : np.ndarray [shape=(n_sounds,), dtype=int64]
        The first step of each sound; empty when no run is long enough (a silent file).
    """
    loud = np.r_[False, ~np.asarray(quiet, dtype=bool), False].astype(np.int8)
    edges = np.diff(loud)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return starts[(ends - starts) >= max(1, int(min_steps))]


def sound_barriers(onsets: np.ndarray, *, n_steps: int) -> np.ndarray | None:
    """The fold's barriers (:func:`sound_cluster.segment.fold.fold`): True at the onset of every sound but the first.

    Each sound then runs from its onset to the next sound's onset (its pause and any short
    blip in it included), the first from the file's start. None when there are fewer than two
    sounds.
    """
    if len(onsets) < 2:
        return None
    barriers = np.zeros(int(n_steps), dtype=bool)
    barriers[np.asarray(onsets)[1:]] = True
    return barriers


@dataclass(frozen=True)
class FoldInput:
    """What one file's fold starts from.

    Attributes
    ----------
    leaves : np.ndarray [shape=(n_steps, d)]
        Step embeddings, pauses carried over.
    quiet : np.ndarray [shape=(n_steps,), dtype=bool]
        Steps read as pauses.
    onsets : np.ndarray [shape=(n_sounds,), dtype=int64]
        First step of each sound the pauses separate.
    barriers : np.ndarray [shape=(n_steps,), dtype=bool] or None
        For :func:`sound_cluster.segment.fold.fold`: sounds fold first (``segment.sounds_first``, two or
        more sounds, adjacent pairing); else None.
    min_size : float
        For :func:`sound_cluster.segment.fold.fold`: nodes under this many steps merge first
        (``segment.min_node_s``; 0 with any-pair folds).
    pieces : np.ndarray [shape=(n_pieces, 3), dtype=int64] or None
        Sounds over a background (``sounds.background``): the file as consecutive pieces ``(start step,
        end step, is_sound)``, sounds and the background between them; None with pauses.
    splits : np.ndarray [shape=(n_splits,), dtype=int64] or None
        Steps inside sounds where an onset may split the sound (barriers of the fold too).
    edge_times : dict of int to float or None
        The exact time (seconds) of the leaf boundaries where sounds start and end.
    """

    leaves: np.ndarray
    quiet: np.ndarray
    onsets: np.ndarray
    barriers: np.ndarray | None
    min_size: float = 0.0
    pieces: np.ndarray | None = None
    splits: np.ndarray | None = None
    edge_times: dict[int, float] | None = None

    @property
    def sounds(self) -> int:
        return len(self.onsets)


def fold_input(embedding: np.ndarray, frames: np.ndarray, *, segment: "SegmentParams", time_pool: int,
               step_rate_hz: float) -> FoldInput:
    """Leaves, pauses and sounds of one file, as the ``segment`` settings ask.

    Parameters
    ----------
    embedding : np.ndarray [shape=(n_steps, d)]
    frames : np.ndarray [shape=(n_frames, n_mels)]
    segment : SegmentParams
        ``pause_db``, ``min_sound_s``, ``sounds_first``, ``min_node_s`` and ``pairing`` are used.
    time_pool : int
        Frames per step.
    step_rate_hz : float
        Steps per second.
    """
    leaves, quiet = fold_leaves(embedding, frames, time_pool=time_pool, pause_db=segment.pause_db)
    min_steps = int(np.ceil(segment.min_sound_s * step_rate_hz - 1e-9))
    onsets = sound_onsets(quiet, min_steps=min_steps)
    barriers, min_size = None, 0.0
    if segment.pairing == "adjacent":
        min_size = segment.min_node_s * step_rate_hz
        if segment.sounds_first:
            barriers = sound_barriers(onsets, n_steps=len(quiet))
    return FoldInput(leaves, quiet, onsets, barriers, min_size)
