"""Sounds and background in one file: where each sound rises out of the background and where it falls back.

The quiet between the sounds of a field recording is never silent: wind, rain, insects, traffic or
room tone lie under everything, and they rise and fall. A fixed level above the file's floor then
reads a loud stretch of the bed as a sound and a soft sound as bed. Here the background is
estimated per mel band as it goes, over a running window of ``window_s`` seconds
(:mod:`sound_cluster.ingest.levels`), and a frame's level is its total mel power over the
background's, in dB; a sound starts where that rises above ``rise_db`` and runs, with hysteresis, until it falls
below ``fall_db`` (its decay is part of it). Gaps shorter than ``min_gap_s`` join the sounds on
either side; sounds shorter than ``min_sound_s`` are dropped (a click in the bed).

Where a file is quiet between its sounds, the background is its quiet floor and this is a plain
envelope split; over a bed it follows the bed. A file where nothing rises above the rest (one steady
sound, a clip trimmed to its sound) is one sound from start to end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sound_cluster.embed.step_store import as_steps
from sound_cluster.ingest.levels import running_level_db
from sound_cluster.segment.onsets import onset_steps
from sound_cluster.segment.pauses import FoldInput

if TYPE_CHECKING:
    from sound_cluster.config import SegmentParams, SoundParams


@dataclass(frozen=True)
class Sounds:
    """One file's sounds, in frames.

    Attributes
    ----------
    starts, ends : np.ndarray [shape=(n_sounds,), dtype=int64]
        Each sound's first frame and the frame after its last (half-open), in time order, not overlapping.
    level_db : np.ndarray [shape=(n_frames,)]
        Each frame's level above the background (dB).
    """

    starts: np.ndarray
    ends: np.ndarray
    level_db: np.ndarray

    def __len__(self) -> int:
        return int(len(self.starts))


def find_sounds(frames: np.ndarray, *, frame_rate_hz: float, rise_db: float, fall_db: float, min_sound_s: float,
                min_gap_s: float, window_s: float) -> Sounds:
    """A file's sounds over its running background (see the module's text).

    Parameters
    ----------
    frames : np.ndarray [shape=(n_frames, n_mels)]
        Log-mel frames (natural log of power).
    frame_rate_hz : float
    rise_db : float
        A sound starts where the level above the background reaches this.
    fall_db : float
        ... and ends where it falls below this (at most ``rise_db``).
    min_sound_s : float
        Shorter sounds are dropped.
    min_gap_s : float
        Shorter gaps join the sounds on either side.
    window_s : float
        The background's running window.

    Returns
    -------
    Sounds
    """
    frames = np.asarray(frames)
    n = len(frames)
    if n == 0:
        return Sounds(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
    level = running_level_db(frames, frame_rate_hz=frame_rate_hz, window_s=window_s)
    on = level >= fall_db
    edges = np.diff(np.r_[0, on.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    # hysteresis: a run above fall_db is a sound only where it reaches rise_db
    peak = np.array([level[a:b].max() for a, b in zip(starts, ends)]) if len(starts) else np.empty(0)
    keep = peak >= rise_db
    starts, ends = starts[keep], ends[keep]
    gap = int(round(min_gap_s * frame_rate_hz))
    if len(starts) > 1 and gap > 0:
        join = (starts[1:] - ends[:-1]) < gap
        starts = np.r_[starts[:1], starts[1:][~join]]
        ends = np.r_[ends[:-1][~join], ends[-1:]]
    long_enough = (ends - starts) >= max(1, int(round(min_sound_s * frame_rate_hz)))
    return Sounds(starts[long_enough].astype(np.int64), ends[long_enough].astype(np.int64), level)


def sound_fold_input(embedding: np.ndarray, frames: np.ndarray, *, segment: "SegmentParams", sounds: "SoundParams",
                     time_pool: int, frame_rate_hz: float, detect: np.ndarray | None = None) -> FoldInput:
    """What one file is folded from when sounds are found over its background (``sounds.background``).

    The file is cut into pieces, its sounds and the background between them, each a run of whole
    encoder steps (a sound's steps are those its frames touch); the fold's barriers sit where every
    piece starts, so each piece folds into one node before pieces merge, and at the onsets inside
    sounds (``sounds.split_onsets``), where the file's own cut may keep a sound apart
    (:func:`sound_cluster.segment.segmenter.segment_file`). Leaves are the step embeddings as they are.

    Parameters
    ----------
    embedding : np.ndarray [shape=(n_steps, d)]
    frames : np.ndarray [shape=(n_frames, n_mels)]
    segment : SegmentParams
        ``min_sound_s`` and ``min_node_s`` are used.
    sounds : SoundParams
    time_pool : int
        Frames per step.
    frame_rate_hz : float
    detect : np.ndarray [shape=(n_frames, n_mels)], optional
        The frames sounds are found on, where they differ from ``frames`` (a gated file's frames before the
        gating); onsets are taken from ``frames``.
    """
    embedding = as_steps(embedding)  # rows on disk stay there: the fold input's leaves are read when folded
    n = len(embedding)
    step_rate_hz = frame_rate_hz / time_pool
    source = frames if detect is None or len(detect) != len(frames) else detect
    found = find_sounds(source, frame_rate_hz=frame_rate_hz, rise_db=sounds.rise_db, fall_db=sounds.fall_db,
                        min_sound_s=segment.min_sound_s, min_gap_s=sounds.min_gap_s, window_s=sounds.window_s)
    spans: list[list[int]] = []  # in steps; the exact frames of each edge beside them
    edge_frames: list[list[int]] = []
    for a, b in zip(found.starts, found.ends):
        sa, sb = int(a) // time_pool, min(n, -(-int(b) // time_pool))
        if sb <= sa:
            continue
        if spans and sa <= spans[-1][1]:  # two sounds in touching steps are one
            spans[-1][1] = max(spans[-1][1], sb)
            edge_frames[-1][1] = int(b)
        else:
            spans.append([sa, sb])
            edge_frames.append([int(a), int(b)])
    if not spans and n:  # nothing rises above the rest: the file is one steady sound, not all background
        spans, edge_frames = [[0, n]], [[0, len(frames)]]
    pieces, t = [], 0
    for sa, sb in spans:
        if sa > t:
            pieces.append((t, sa, 0))
        pieces.append((sa, sb, 1))
        t = sb
    if t < n:
        pieces.append((t, n, 0))
    pieces_arr = np.asarray(pieces, dtype=np.int64).reshape(-1, 3)
    quiet = np.ones(n, dtype=bool)
    for sa, sb in spans:
        quiet[sa:sb] = False
    min_size = segment.min_node_s * step_rate_hz
    splits = np.empty(0, dtype=np.int64)
    if sounds.split_onsets and spans:
        gap = max(1, int(np.ceil(min_size)))
        on = onset_steps(frames, frame_rate_hz=frame_rate_hz, time_pool=time_pool)
        keep = []
        for sa, sb in spans:
            last = sa
            for o in on[(on > sa) & (on < sb)]:
                if o - last >= gap and sb - o >= gap:  # no piece of a sound shorter than segment.min_node_s
                    keep.append(int(o))
                    last = o
        splits = np.asarray(keep, dtype=np.int64)
    barriers = np.zeros(n, dtype=np.int8)  # 1: an onset inside a sound; 2: where a sound starts or ends
    barriers[splits] = 1
    barriers[pieces_arr[1:, 0]] = 2
    edge_times = {}
    for (sa, sb), (fa, fb) in zip(spans, edge_frames):
        if 0 < sa:
            edge_times[sa] = fa / frame_rate_hz
        if sb < n:
            edge_times[sb] = fb / frame_rate_hz
    return FoldInput(embedding, quiet, np.asarray([s[0] for s in spans], dtype=np.int64),
                     barriers if barriers.any() else None, min_size, pieces_arr, splits, edge_times)
