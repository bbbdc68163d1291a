"""Onsets of one file: peaks of librosa's onset strength, picked in numpy.

The peaks are picked here rather than by :func:`librosa.onset.onset_detect`, whose peak picker is a numba
gufunc cached on disk: when several processes first load it at once (the pipeline's workers on a fresh
install, or two test processes) the cached kernel and wrapper can come from different processes, and every
later call in that installation crashes the process (numba issue #10128). :func:`pick_peaks` gives the same
peaks as :func:`librosa.util.peak_pick`, down to how its compiled code rounds the window's mean (``tests/segment/test_onsets.py``).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Onsets: peaks of librosa's onset strength at least this far apart and this far above the local mean
# (the envelope normalised to [0, 1]). Measured on joined drum hits, instrument notes and spoken digits
# (scripts/bench_events.py --variants butted): the median interval between onsets lands within
# 0.05-0.15 s of the median event, where librosa's defaults count syllables and halve a spoken word.
ONSET_WAIT_S = 0.1
ONSET_DELTA = 0.2
# librosa.onset.onset_detect's windows (frames) at its default rate (22,050 Hz, hop 512): 30 ms before a
# peak for the maximum, 100 ms either side for the mean. Kept as librosa has them, whatever the frame rate.
PRE_MAX, POST_MAX, PRE_AVG, POST_AVG = 1, 1, 4, 5


def pick_peaks(x: np.ndarray, *, pre_max: int, post_max: int, pre_avg: int, post_avg: int, delta: float,
               wait: int) -> np.ndarray:
    """Peaks of a signal by the rule of :func:`librosa.util.peak_pick`.

    Frame ``n`` is a peak when ``x[n] == max(x[n - pre_max : n + post_max])``, ``x[n] >=
    mean(x[n - pre_avg : n + post_avg]) + delta`` (windows clipped at the ends), and it lies more than
    ``wait`` frames after the previous peak (taken greedily from the start).

    Parameters
    ----------
    x : np.ndarray [shape=(n,)]
    pre_max, post_max, pre_avg, post_avg : int
        Window extents in frames (``post_max`` and ``post_avg`` at least 1).
    delta : float
        Height above the local mean.
    wait : int
        Frames to skip after a peak.

    Returns
    -------
    np.ndarray [shape=(n_peaks,), dtype=int64]
        Frame indices, ascending.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    n = len(x)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    idx = np.arange(n)
    padded = np.concatenate([np.full(pre_max, -np.inf, x.dtype), x, np.full(post_max, -np.inf, x.dtype)])
    is_max = x == sliding_window_view(padded, pre_max + post_max)[:n].max(axis=1)
    # librosa's compiled picker sums each window front to back in x's dtype and divides in it; zeros padded at
    # the ends leave that sum unchanged bit for bit, so ties fall as they fall there
    padded = np.concatenate([np.zeros(pre_avg, x.dtype), x, np.zeros(post_avg, x.dtype)])
    windows = sliding_window_view(padded, pre_avg + post_avg)[:n]
    total = windows[:, 0].copy()
    for k in range(1, windows.shape[1]):
        total += windows[:, k]
    count = np.minimum(idx + post_avg, n) - np.maximum(idx - pre_avg, 0)
    above = x >= total / count.astype(x.dtype) + x.dtype.type(np.float32(delta))
    peaks, last = [], -wait - 1
    for i in np.flatnonzero(is_max & above):
        if i - last > wait:
            peaks.append(i)
            last = i
    return np.asarray(peaks, dtype=np.int64)


def onset_steps(frames: np.ndarray, *, frame_rate_hz: float, time_pool: int) -> np.ndarray:
    """The encoder steps where one file's onsets fall.

    The onset strength is :func:`librosa.onset.onset_strength` of the log-mel frames; its peaks are those
    :func:`librosa.onset.onset_detect` picks from it (normalised to [0, 1], ``delta=ONSET_DELTA``, a wait
    of ``ONSET_WAIT_S``).

    Parameters
    ----------
    frames : np.ndarray [shape=(n_frames, n_mels)]
        Log-mel frames (any log scale: the envelope is normalised before peaks are picked).
    frame_rate_hz : float
    time_pool : int
        Frames per step.

    Returns
    -------
    np.ndarray [shape=(n_onsets,), dtype=int64]
    """
    import librosa  # late: importing librosa costs a second

    frames = np.asarray(frames, dtype=np.float32)
    if len(frames) < 4:
        return np.empty(0, dtype=np.int64)
    env = librosa.onset.onset_strength(S=frames.T, lag=2, max_size=3)
    env = env - env.min()
    env /= env.max() + np.finfo(env.dtype).tiny
    if not env.any() or not np.all(np.isfinite(env)):
        return np.empty(0, dtype=np.int64)
    onsets = pick_peaks(env, pre_max=PRE_MAX, post_max=POST_MAX, pre_avg=PRE_AVG, post_avg=POST_AVG,
                        delta=ONSET_DELTA, wait=max(1, int(round(ONSET_WAIT_S * frame_rate_hz))))
    return onsets // time_pool
