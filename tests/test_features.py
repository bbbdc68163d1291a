import functools

import numpy as np
import pytest
import soundfile as sf

from sound_cluster.config import FeatureParams
from sound_cluster.features import FeatureCache, log_mel
from sound_cluster.io_utils import TMP_PREFIX
from sound_cluster.pipeline import extract_features

from .conftest import SR, tone


def test_log_mel_shape_and_values():
    p = FeatureParams(n_mels=40)
    y = tone(1000, 1.0)
    m = log_mel(y, params=p)
    assert m.shape == (1 + len(y) // p.hop_length, 40) and m.dtype == np.float32
    assert np.isfinite(m).all()
    # A 1 kHz tone puts its energy in the mel band around 1 kHz.
    import librosa

    centres = librosa.mel_frequencies(n_mels=40 + 2, fmax=SR / 2)[1:-1]
    assert abs(centres[m.mean(axis=0).argmax()] - 1000) < 150
    # Silence stays finite thanks to the offset.
    assert np.isfinite(log_mel(np.zeros(SR, np.float32), params=p)).all()


def _extract(path, cache_dir, **settings):
    cache = FeatureCache(cache_dir, params=FeatureParams(cache_dir=cache_dir, **settings))
    cache.prepare()
    return extract_features(path, cache=cache)


def test_cache_hit_miss_and_invalidation(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a, tone(440), SR)
    sf.write(b, tone(880), SR)
    cache_dir = tmp_path / "cache"
    first = [_extract(p, cache_dir) for p in (a, b)]
    assert [r.cache_hit for r in first] == [False, False]
    again = [_extract(p, cache_dir) for p in (a, b)]
    assert [r.cache_hit for r in again] == [True, True]
    assert np.array_equal(np.load(first[0].cache_path), np.load(again[0].cache_path))

    # A feature setting changes: everything recomputes, under another folder.
    other = [_extract(p, cache_dir, n_mels=32) for p in (a, b)]
    assert [r.cache_hit for r in other] == [False, False]
    assert np.load(other[0].cache_path).shape[1] == 32
    assert other[0].cache_path.parent != first[0].cache_path.parent

    # One file changes: exactly that file recomputes.
    sf.write(b, tone(990), SR)
    changed = [_extract(p, cache_dir) for p in (a, b)]
    assert [r.cache_hit for r in changed] == [True, False]


def test_cache_never_unpickles(tmp_path):
    cache = FeatureCache(tmp_path, params=FeatureParams())
    cache.prepare()
    # An object array would need pickle; planting one where an entry belongs must not execute or load it.
    np.save(cache.path("k"), np.array([{"x": 1}], dtype=object), allow_pickle=True)
    assert cache.get("k") is None


def test_stale_temp_files_are_cleaned(tmp_path):
    import os, time

    cache = FeatureCache(tmp_path, params=FeatureParams())
    cache.prepare()
    stale = cache.dir / (TMP_PREFIX + "x.npy.123")
    stale.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = cache.dir / (TMP_PREFIX + "y.npy.456")
    fresh.write_bytes(b"in progress")
    cache.prepare()
    assert not stale.exists() and fresh.exists()
