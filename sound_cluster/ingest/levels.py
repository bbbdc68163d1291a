"""A file's level above its running background, per frame: what finding sounds and telling a bed rest on.

The background of each mel band is estimated as it goes: the ``BACKGROUND_PERCENTILE``-th percentile of the
band's power over a running window (on blocks of ``BLOCK_S``, so an hour costs milliseconds). A frame's level
above the background is its total mel power over the background's, in dB. Used by the ingest stage to tell a
recording over a bed (:mod:`sound_cluster.ingest.denoise`) and by the fold to find sounds
(:mod:`sound_cluster.segment.sounds`).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import percentile_filter

BLOCK_S = 0.1  # the background is estimated on blocks of this length (short: a pause of 0.1 s is one), then interpolated
BACKGROUND_PERCENTILE = 10.0  # of each band's block levels in the running window
_NATS_TO_DB = 10.0 / np.log(10.0)


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


LEVEL_BLOCK_FRAMES = 1 << 16  # frames converted to float64 at a time (about 34 MB at 64 mels), so hours stay bounded


def level_above_background_db(frames: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Each frame's total mel power over the background's total, in dB (0 where the frame is the background).

    Computed ``LEVEL_BLOCK_FRAMES`` frames at a time: the float64 copies of a long file's frames would
    otherwise cost 0.7 GB an hour.
    """
    out = np.empty(len(frames), dtype=np.float64)
    for a in range(0, len(frames), LEVEL_BLOCK_FRAMES):
        f = np.asarray(frames[a:a + LEVEL_BLOCK_FRAMES], dtype=np.float64)
        g = np.asarray(background[a:a + LEVEL_BLOCK_FRAMES], dtype=np.float64)
        top = np.maximum(f.max(axis=1, keepdims=True), g.max(axis=1, keepdims=True))
        p = np.exp(f - top).sum(axis=1)
        b = np.exp(g - top).sum(axis=1)
        out[a:a + len(f)] = (np.log(np.maximum(p, 1e-30)) - np.log(np.maximum(b, 1e-30))) * _NATS_TO_DB
    return out


def running_level_db(frames: np.ndarray, *, frame_rate_hz: float, window_s: float) -> np.ndarray:
    """Each frame's level above the file's own running background (:func:`background_db`), in dB.

    Returns
    -------
    np.ndarray [shape=(n_frames,), dtype=float64]
    """
    return level_above_background_db(frames, background_db(frames, frame_rate_hz=frame_rate_hz, window_s=window_s))


def background_share(frames: np.ndarray, *, frame_rate_hz: float, window_s: float, within_db: float) -> float:
    """The share of a file's frames within ``within_db`` of its running background (0-1): how much of it is bed.

    Parameters
    ----------
    frames : np.ndarray [shape=(n_frames, n_mels)]
        Log-mel frames (natural log of power).
    frame_rate_hz : float
    window_s : float
        The background's running window.
    within_db : float
        A frame this close to the background (dB) is background.
    """
    if len(frames) == 0:
        return 0.0
    level = running_level_db(frames, frame_rate_hz=frame_rate_hz, window_s=window_s)
    return float(np.mean(level < within_db))
