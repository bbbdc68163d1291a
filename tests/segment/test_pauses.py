"""Pauses carry the sound before them: which steps are quiet, and what the fold is given."""

import numpy as np
import pytest

from sound_cluster.config import FeatureParams
from sound_cluster.ingest.features import log_mel
from sound_cluster.segment import pauses
from sound_cluster.segment.pauses import carry_sources, fold_leaves, level_db, quiet_steps, sound_barriers, sound_onsets
from tests.conftest import SR, tone

POOL = 4


def _frames(y):
    params = FeatureParams(sample_rate=SR)
    return log_mel(y, params=params), params.frame_rate_hz


def test_level_is_total_power_in_db_and_blocks_change_nothing(monkeypatch):
    n_mels = 8
    power = np.array([1e-6, 1.0, 100.0])
    frames = np.log(np.repeat(power[:, None] / n_mels, n_mels, axis=1))
    np.testing.assert_allclose(level_db(frames), 10 * np.log10(power), atol=1e-9)
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(1000, 16)).astype(np.float32)
    whole = level_db(frames)
    monkeypatch.setattr(pauses, "_BLOCK_FRAMES", 7)  # the block size only bounds memory
    np.testing.assert_allclose(level_db(frames), whole, rtol=1e-12)


@pytest.mark.parametrize("gap", ["silence", "hiss"])
def test_the_steps_of_a_pause_between_two_sounds_are_quiet(gap):
    rng = np.random.default_rng(1)
    a, b = tone(300, 0.6), tone(1200, 0.6, seed=1)
    pause = np.zeros(int(0.4 * SR), np.float32)
    if gap == "hiss":  # a pause in a noisy room: 40 dB below the tones, not digital silence
        pause = (0.003 * rng.standard_normal(len(pause))).astype(np.float32)
        a, b = a + 0.003 * rng.standard_normal(len(a)), b + 0.003 * rng.standard_normal(len(b))
    frames, rate = _frames(np.concatenate([a, pause, b]).astype(np.float32))
    n_steps = -(-len(frames) // POOL)
    quiet = quiet_steps(frames, n_steps=n_steps, time_pool=POOL, pause_db=10.0)
    step_s = POOL / rate
    t = (np.arange(n_steps) + 0.5) * step_s
    inside = (t > 0.6 + step_s) & (t < 1.0 - step_s)  # well inside the pause (the frames' windows overlap its ends)
    assert quiet[inside].all()
    assert not quiet[(t < 0.6 - step_s) | (t > 1.0 + step_s)].any()  # the tones are never quiet
    assert not quiet_steps(frames, n_steps=n_steps, time_pool=POOL, pause_db=0.0).any()  # 0: off


def test_steady_sound_has_no_pauses():
    """A tone with a little tremolo: floor and loud level close together, so nothing is a pause."""
    y = tone(440, 2.0) * (1 + 0.3 * np.sin(2 * np.pi * 3 * np.arange(2 * SR) / SR))
    frames, _ = _frames(y.astype(np.float32))
    assert not quiet_steps(frames, n_steps=-(-len(frames) // POOL), time_pool=POOL, pause_db=10.0).any()


def test_a_quiet_step_takes_the_last_loud_step_before_it():
    quiet = np.array([True, True, False, True, True, False, False, True])
    np.testing.assert_array_equal(carry_sources(quiet), [0, 1, 2, 2, 2, 5, 6, 6])
    assert carry_sources(np.zeros(0, bool)).shape == (0,)


def test_fold_leaves_copies_the_sound_into_its_pause():
    a, b = tone(300, 0.6), tone(1200, 0.6, seed=1)
    frames, _ = _frames(np.concatenate([a, np.zeros(int(0.4 * SR), np.float32), b]))
    n_steps = -(-len(frames) // POOL)
    emb = np.random.default_rng(2).normal(size=(n_steps, 5)).astype(np.float32)
    leaves, quiet = fold_leaves(emb, frames, time_pool=POOL, pause_db=10.0)
    np.testing.assert_array_equal(quiet, quiet_steps(frames, n_steps=n_steps, time_pool=POOL, pause_db=10.0))
    first = int(np.flatnonzero(quiet)[0])
    assert first > 0 and quiet.sum() > 0
    np.testing.assert_array_equal(leaves[quiet], np.repeat(emb[first - 1][None], quiet.sum(), axis=0))
    np.testing.assert_array_equal(leaves[~quiet], emb[~quiet])
    assert len(sound_onsets(quiet, min_steps=3)) == 2
    same, none = fold_leaves(emb, frames, time_pool=POOL, pause_db=0.0)
    assert not none.any() and np.array_equal(same, emb)


def test_sounds_are_runs_of_loud_steps_long_enough_and_barriers_mark_all_but_the_first():
    q = np.array([1, 0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0], bool)
    np.testing.assert_array_equal(sound_onsets(q, min_steps=1), [1, 5, 8, 13])
    np.testing.assert_array_equal(sound_onsets(q, min_steps=3), [1, 8, 13])  # the blip at 5 is no sound
    assert len(sound_onsets(q, min_steps=5)) == 0
    np.testing.assert_array_equal(sound_onsets(np.zeros(5, bool), min_steps=3), [0])  # no pause: one sound
    assert len(sound_onsets(np.ones(5, bool), min_steps=1)) == 0
    barriers = sound_barriers(sound_onsets(q, min_steps=3), n_steps=len(q))
    np.testing.assert_array_equal(np.flatnonzero(barriers), [8, 13])  # the first sound starts the file
    assert sound_barriers(np.array([4]), n_steps=9) is None
