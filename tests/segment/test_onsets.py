"""Onsets: the numpy peak picker gives librosa's peaks, and onsets land where sounds start."""

from __future__ import annotations

import librosa.util.utils
import numba
import numpy as np
import pytest

from sound_cluster.segment.onsets import ONSET_DELTA, POST_AVG, POST_MAX, PRE_AVG, PRE_MAX, onset_steps, pick_peaks

# librosa's peak picker compiled here as librosa compiles it, but without its cache on disk: calling librosa's
# cached gufunc could crash this process where two processes first compiled it at once (numba issue #10128)
_LIBROSA_PEAK_PICK = numba.guvectorize(
    ["void(float32[:], uint32, uint32, uint32, uint32, float32, uint32, bool_[:])"], "(n),(),(),(),(),(),()->(n)",
    nopython=True)(librosa.util.utils.__dict__["__peak_pick"].gufunc_builder.py_func)


def _librosa_peaks(x, **kw) -> list[int]:
    out = np.zeros(len(x), dtype=bool)
    _LIBROSA_PEAK_PICK(x, kw["pre_max"], kw["post_max"], kw["pre_avg"], kw["post_avg"], kw["delta"], kw["wait"], out)
    return np.flatnonzero(out).tolist()


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("quantized", [False, True])
def test_pick_peaks_gives_librosa_s_peaks(seed, quantized):
    rng = np.random.default_rng(seed)
    x = rng.random(int(rng.integers(1, 400)), dtype=np.float32)
    if quantized:  # plateaus, equal neighbours and means that tie with the threshold: where the rules show
        x = np.round(x * 5).astype(np.float32) / 5
    kw = dict(pre_max=int(rng.integers(0, 4)), post_max=int(rng.integers(1, 4)), pre_avg=int(rng.integers(0, 6)),
              post_avg=int(rng.integers(1, 6)), delta=float(rng.choice([0.0, 0.07, 0.2])), wait=int(rng.integers(0, 8)))
    assert pick_peaks(x, **kw).tolist() == _librosa_peaks(x, **kw)


def test_onset_detect_settings_give_librosa_s_peaks_on_a_real_envelope():
    rng = np.random.default_rng(1)
    env = np.abs(np.convolve(rng.standard_normal(3000), np.hanning(9), mode="same")).astype(np.float32)
    env = (env - env.min()) / env.max()
    kw = dict(pre_max=PRE_MAX, post_max=POST_MAX, pre_avg=PRE_AVG, post_avg=POST_AVG, delta=ONSET_DELTA, wait=9)
    peaks = pick_peaks(env, **kw)
    assert len(peaks) > 20 and peaks.tolist() == _librosa_peaks(env, **kw)


def test_onsets_land_where_sounds_start():
    frame_rate, n_mels = 100.0, 16
    frames = np.full((400, n_mels), -80.0, dtype=np.float32)
    starts = [50, 130, 260]
    for s in starts:  # a decaying burst at each start
        frames[s:s + 40] = -10.0 - np.arange(40, dtype=np.float32)[:, None]
    steps = onset_steps(frames, frame_rate_hz=frame_rate, time_pool=2)
    assert steps.dtype == np.int64
    assert len(steps) == len(starts)
    assert np.all(np.abs(steps * 2 - np.asarray(starts)) <= 2)


def test_no_onsets_in_silence_or_a_short_file():
    assert onset_steps(np.full((300, 8), -80.0), frame_rate_hz=100.0, time_pool=1).size == 0
    assert onset_steps(np.zeros((3, 8)), frame_rate_hz=100.0, time_pool=1).size == 0
    assert pick_peaks(np.empty(0, np.float32), pre_max=1, post_max=1, pre_avg=1, post_avg=1, delta=0.1,
                      wait=1).size == 0
