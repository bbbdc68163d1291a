"""Segment boundaries at the frame rate: each leaf boundary moved to the nearby onset.

Leaves are encoder steps (25 per second by default), and the encoder's context makes a change
of sound show a step or more early or late. Each of the ``n + 1`` leaf boundaries is moved to
the frame, within ``radius_s``, where the frame energy rises most (a peak of the mean log energy
of the next frames minus that of the previous ones: an onset). Boundaries keep their order and
stay at least half a step apart, so an onset is taken by the first boundary that reaches it. The map from leaf boundary to time is a
property of the file, not of a cut, so every cut of a tree uses the same times and the tree
stays one consistent record of its merges.
"""

from __future__ import annotations

import numpy as np

from sound_cluster.segment.pauses import level_db

MIN_RISE_NATS = 0.1  # smallest energy rise that counts as an onset (0.43 dB)


def energy_rise(frames: np.ndarray, *, width_frames: int = 3) -> np.ndarray:
    """Onset novelty of log-mel frames.

    Parameters
    ----------
    frames : np.ndarray [shape=(n_frames, n_mels)]
        Log-mel frames (natural log of power).
    width_frames : int
        Frames averaged on each side.

    Returns
    -------
    rise : np.ndarray [shape=(n_frames,)]
        ``rise[f]`` = mean log energy of frames ``[f, f + w)`` minus that of ``[f - w, f)``;
        0 where either side would leave the file.
    """
    energy = level_db(frames) * (np.log(10.0) / 10.0)  # log of total power, in nats
    w = int(width_frames)
    csum = np.concatenate([[0.0], np.cumsum(energy)])
    rise = np.zeros(len(energy))
    f = np.arange(w, len(energy) - w + 1)
    rise[f] = (csum[f + w] - csum[f]) / w - (csum[f] - csum[f - w]) / w
    return rise


def leaf_boundary_times(frames: np.ndarray, *, n_leaves: int, time_pool: int, frame_rate_hz: float,
                        radius_s: float, duration_s: float) -> np.ndarray:
    """Times of the ``n_leaves + 1`` leaf boundaries, each moved to the strongest onset near it.

    Parameters
    ----------
    frames : np.ndarray [shape=(n_frames, n_mels)]
    n_leaves : int
        Encoder steps of the file (``ceil(n_frames / time_pool)``).
    time_pool : int
        Frames per step.
    frame_rate_hz : float
        Frames per second.
    radius_s : float
        How far a boundary may move, in seconds (0: boundaries stay on the step grid).
    duration_s : float
        The file's duration; no time exceeds it.

    Returns
    -------
    times : np.ndarray [shape=(n_leaves + 1,)]
        Increasing (boundaries at least half a step apart where the file allows),
        ``times[0] = 0`` and ``times[-1] = duration_s``.
    """
    radius = int(round(radius_s * frame_rate_hz))
    if radius <= 0 or n_leaves < 2:
        times = np.minimum(np.arange(n_leaves + 1) * time_pool / frame_rate_hz, duration_s)
        # the last step may start at the file's end (the frames' centring adds one): keep every leaf non-empty
        for b in range(n_leaves - 1, 0, -1):
            if times[b] < times[b + 1] - 1e-3:
                break
            times[b] = times[b + 1] - 1e-3
        return times
    rise = energy_rise(frames)
    n_frames = len(rise)
    # Onsets: local maxima of the rise, at least MIN_RISE_NATS (not the creep after a step, not rounding noise).
    peaks = np.zeros(n_frames, dtype=bool)
    peaks[1:-1] = (rise[1:-1] >= rise[:-2]) & (rise[1:-1] >= rise[2:]) & (rise[1:-1] > MIN_RISE_NATS)
    gap = max(1, time_pool // 2)  # boundaries stay at least half a step apart, in order
    chosen = np.arange(n_leaves + 1) * time_pool  # in frames
    for b in range(1, n_leaves):
        f0 = b * time_pool
        lo, hi = max(1, f0 - radius, chosen[b - 1] + gap), min(n_frames - 1, f0 + radius)
        if lo > hi:
            chosen[b] = max(f0, chosen[b - 1] + gap)
            continue
        window = np.where(peaks[lo:hi + 1], rise[lo:hi + 1], -np.inf)
        best = int(np.argmax(window))
        # No onset nearby: stay on the grid (or just past the previous boundary).
        chosen[b] = lo + best if np.isfinite(window[best]) else max(f0, chosen[b - 1] + gap)
    times = np.minimum(chosen / frame_rate_hz, duration_s)
    times[0], times[-1] = 0.0, duration_s
    for b in range(n_leaves - 1, 0, -1):  # a pushed boundary never reaches the end: keep every leaf non-empty
        times[b] = min(times[b], times[b + 1] - 1e-3)
    return times
