"""Spectral gating before the log-mel, for recordings over a bed (``features.denoise``).

A continuous bed of wind, rain, insects or room tone under every sound changes what the encoder
sees of the sound itself: the shipped encoder's embeddings of the same events lose a third of their
clustering score over a bed (BENCHMARKS.md, section 2). ``noisereduce``'s non-stationary spectral
gating (Sainburg et al.) estimates the bed per frequency over a running window and gates what does
not rise above it; measured on the bench's bed folders it gives most of that back. On recordings
that are quiet between their sounds it costs (drum hits lose a fifth), and on a clip trimmed to its
sound there is no bed to estimate, so ``auto`` gates only a file of at least ``MIN_SECONDS`` whose
quiet lies within ``features.denoise_range_db`` of its loud level and that has stretches of bed between
its sounds (:func:`needs_denoise`).
"""

from __future__ import annotations

import numpy as np

from sound_cluster.config import FeatureParams, SoundParams
from sound_cluster.ingest.levels import background_share

MIN_SECONDS = 3.0  # a shorter file holds too little bed to estimate it (noisereduce's window is 2 s)
QUIET_PERCENTILE, LOUD_PERCENTILE = 10.0, 95.0
# The bed test's running window and closeness: the sound finder's defaults (sounds.window_s, sounds.fall_db).
BED_WINDOW_S, BED_WITHIN_DB = SoundParams.window_s, SoundParams.fall_db
_FRAME_S = 0.032


def level_range_db(y: np.ndarray, *, sample_rate: int) -> float:
    """How far a file's loud frames stand above its quiet ones: the 95th minus the 10th percentile of the
    frame levels (32 ms frames, dB)."""
    n = max(1, int(_FRAME_S * sample_rate))
    usable = len(y) // n * n
    if usable == 0:
        return float("inf")
    power = np.mean(np.square(y[:usable].astype(np.float64).reshape(-1, n)), axis=1)
    level = 10.0 * np.log10(power + 1e-20)
    quiet, loud = np.percentile(level, [QUIET_PERCENTILE, LOUD_PERCENTILE])
    return float(loud - quiet)


def needs_denoise(y: np.ndarray, *, params: FeatureParams, frames: np.ndarray | None = None) -> bool:
    """Whether ``features.denoise`` gates this file (``auto``: a recording over a bed).

    ``auto`` asks for a file of at least ``MIN_SECONDS`` whose quiet lies within ``features.denoise_range_db``
    of its loud level and, given its log-mel ``frames``, of which at least ``features.denoise_min_background``
    lies within ``BED_WITHIN_DB`` of its running background (:func:`sound_cluster.ingest.levels.background_share`):
    stretches of bed between the sounds, which the gate estimates the bed from. Joined or overlapping
    sounds whose decays keep the level range small have almost none, and gating them cuts into their
    decays (BENCHMARKS.md, section 2).
    """
    if isinstance(params.denoise, bool):
        return params.denoise
    if len(y) < MIN_SECONDS * params.sample_rate or \
            level_range_db(y, sample_rate=params.sample_rate) >= params.denoise_range_db:
        return False
    return frames is None or background_share(frames, frame_rate_hz=params.frame_rate_hz, window_s=BED_WINDOW_S,
                                              within_db=BED_WITHIN_DB) >= params.denoise_min_background


def denoise(y: np.ndarray, *, params: FeatureParams, frames: np.ndarray | None = None) -> np.ndarray:
    """``y`` through non-stationary spectral gating where :func:`needs_denoise` says so, else as it is.

    Parameters
    ----------
    y : np.ndarray [shape=(n_samples,), dtype=float32]
        Mono waveform at ``params.sample_rate``.
    params : FeatureParams
    frames : np.ndarray [shape=(n_frames, n_mels)], optional
        The log-mel of ``y``, for the bed test of ``auto``.

    Returns
    -------
    np.ndarray [shape=(n_samples,), dtype=float32]
        ``y`` itself where it is not gated.
    """
    if not needs_denoise(y, params=params, frames=frames):
        return y
    import noisereduce  # imports matplotlib: only when a file is gated

    return noisereduce.reduce_noise(y=y, sr=params.sample_rate, stationary=False).astype(np.float32)
