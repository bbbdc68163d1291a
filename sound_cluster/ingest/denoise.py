"""Spectral gating before the log-mel, for recordings over a bed (``features.denoise``).

A continuous bed of wind, rain, insects or room tone under every sound changes what the encoder
sees of the sound itself: the shipped encoder's embeddings of the same events lose a third of their
clustering score over a bed (BENCHMARKS.md, section 2). ``noisereduce``'s non-stationary spectral
gating (Sainburg et al.) estimates the bed per frequency over a running window and gates what does
not rise above it; measured on the bench's bed folders it gives most of that back. On recordings
that are quiet between their sounds it costs (drum hits lose a fifth), and on a clip trimmed to its
sound there is no bed to estimate, so ``auto`` gates only a file of at least ``MIN_SECONDS`` whose
quiet lies within ``features.denoise_range_db`` of its loud level.
"""

from __future__ import annotations

import numpy as np

from sound_cluster.config import FeatureParams

MIN_SECONDS = 3.0  # a shorter file holds too little bed to estimate it (noisereduce's window is 2 s)
QUIET_PERCENTILE, LOUD_PERCENTILE = 10.0, 95.0
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


def needs_denoise(y: np.ndarray, *, params: FeatureParams) -> bool:
    """Whether ``features.denoise`` gates this file (``auto``: a recording over a bed)."""
    if isinstance(params.denoise, bool):
        return params.denoise
    return len(y) >= MIN_SECONDS * params.sample_rate and \
        level_range_db(y, sample_rate=params.sample_rate) < params.denoise_range_db


def denoise(y: np.ndarray, *, params: FeatureParams) -> np.ndarray:
    """``y`` through non-stationary spectral gating where :func:`needs_denoise` says so, else as it is.

    Parameters
    ----------
    y : np.ndarray [shape=(n_samples,), dtype=float32]
        Mono waveform at ``params.sample_rate``.
    params : FeatureParams

    Returns
    -------
    np.ndarray [shape=(n_samples,), dtype=float32]
    """
    if not needs_denoise(y, params=params):
        return y
    import noisereduce  # imports matplotlib: only when a file is gated

    return noisereduce.reduce_noise(y=y, sr=params.sample_rate, stationary=False).astype(np.float32)
