"""Sounds and background in one file: where each sound rises out of the background and where it falls back.

The quiet between the sounds of a field recording is never silent: wind, rain, insects, traffic or
room tone lie under everything, and they rise and fall. A fixed level above the file's floor then
reads a loud stretch of the bed as a sound and a soft sound as bed. Here the background is
estimated per mel band as it goes: the ``BACKGROUND_PERCENTILE``-th percentile of the band's power
over a running window of ``window_s`` seconds (on blocks of ``BLOCK_S``, so an hour costs
milliseconds). A frame's level above the background is its total mel power over the background's,
in dB; a sound starts where that rises above ``rise_db`` and runs, with hysteresis, until it falls
below ``fall_db`` (its decay is part of it). Gaps shorter than ``min_gap_s`` join the sounds on
either side; sounds shorter than ``min_sound_s`` are dropped (a click in the bed).

Where a file is quiet between its sounds, the background is its quiet floor and this is a plain
envelope split; over a bed it follows the bed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import percentile_filter

BLOCK_S = 0.25  # the background is estimated on blocks of this length, then interpolated to frames
BACKGROUND_PERCENTILE = 10.0  # of each band's block levels in the running window
_NATS_TO_DB = 10.0 / np.log(10.0)


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

    def active(self, n_frames: int | None = None) -> np.ndarray:
        """A bool per frame: inside a sound."""
        out = np.zeros(len(self.level_db) if n_frames is None else n_frames, dtype=bool)
        for a, b in zip(self.starts, self.ends):
            out[a:b] = True
        return out


def background_db(frames: np.ndarray, *, frame_rate_hz: float, window_s: float) -> np.ndarray:
    """The running background of each mel band, in the frames' log scale.

    Parameters
    ----------
    frames : np.ndarray [shape=(n_frames, n_mels)]
        Log-mel frames (natural log of power); may be memory-mapped.
    frame_rate_hz : float
    window_s : float
        The running window (seconds): long enough that sounds do not fill it, short enough to
        follow a bed that rises and falls.

    Returns
    -------
    np.ndarray [shape=(n_frames, n_mels), dtype=float32]
    """
    frames = np.asarray(frames, dtype=np.float32)
    n = len(frames)
    block = max(1, int(round(BLOCK_S * frame_rate_hz)))
    n_blocks = -(-n // block)
    pad = np.concatenate([frames, np.repeat(frames[-1:], n_blocks * block - n, axis=0)]) if n % block else frames
    # a block's level: the mean power of its frames, in the log scale
    top = pad.max(axis=0, keepdims=True)
    blocks = np.log(np.exp(pad - top).reshape(n_blocks, block, -1).mean(axis=1)) + top  # (n_blocks, n_mels)
    width = max(1, int(round(window_s / BLOCK_S)))
    bg = percentile_filter(blocks, BACKGROUND_PERCENTILE, size=(width, 1), mode="nearest")
    centres = (np.arange(n_blocks) + 0.5) * block
    t = np.arange(n)
    return np.stack([np.interp(t, centres, bg[:, m]) for m in range(bg.shape[1])], axis=1).astype(np.float32)


def level_above_background_db(frames: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Each frame's total mel power over the background's total, in dB (0 where the frame is the background)."""
    frames = np.asarray(frames, dtype=np.float64)
    background = np.asarray(background, dtype=np.float64)
    top = np.maximum(frames.max(axis=1, keepdims=True), background.max(axis=1, keepdims=True))
    p = np.exp(frames - top).sum(axis=1)
    b = np.exp(background - top).sum(axis=1)
    return (np.log(np.maximum(p, 1e-30)) - np.log(np.maximum(b, 1e-30))) * _NATS_TO_DB


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
    level = level_above_background_db(frames, background_db(frames, frame_rate_hz=frame_rate_hz, window_s=window_s))
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
