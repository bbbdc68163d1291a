import os

import numpy as np
import pytest
import soundfile as sf

from sound_cluster.config import FeatureParams
from sound_cluster.ingest.extract import extract_features
from sound_cluster.ingest.features import FeatureCache, log_mel
from sound_cluster.io_utils import TMP_PREFIX
from tests.conftest import SR, tone


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
    import os
    import time

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


@pytest.mark.parametrize("n_samples", [400, 48077, 48800, 160 * 999])
def test_log_mel_in_blocks_equals_one_call(n_samples):
    """Long files are computed a block of frames at a time (bounded memory); the frames must not change."""
    y = (0.1 * np.random.default_rng(n_samples).standard_normal(n_samples)).astype(np.float32)
    p = FeatureParams()
    whole = log_mel(y, params=p, block_frames=10**6)
    blocks = log_mel(y, params=p, block_frames=37)
    assert blocks.shape == whole.shape == (1 + n_samples // p.hop_length, p.n_mels)
    np.testing.assert_allclose(blocks, whole, atol=1e-5)


def test_large_files_are_hashed_and_decoded_in_blocks_with_the_same_result(tmp_path, monkeypatch):
    """Above STREAM_ABOVE_BYTES a file is never read whole; the cache key and frames must not change."""
    import sound_cluster.ingest.extract as extract

    wav = tmp_path / "stereo44k.wav"
    rng = np.random.default_rng(3)
    sf.write(wav, (0.1 * rng.standard_normal((44100 * 2 + 7, 2))).astype(np.float32), 44100, subtype="PCM_16")
    in_memory = _extract(wav, tmp_path / "c1")
    monkeypatch.setattr(extract, "STREAM_ABOVE_BYTES", 1000)
    streamed = _extract(wav, tmp_path / "c2")
    assert streamed.cache_path.name == in_memory.cache_path.name  # the same content key
    np.testing.assert_array_equal(np.load(streamed.cache_path), np.load(in_memory.cache_path))
    assert streamed.n_frames == in_memory.n_frames and streamed.duration_s == in_memory.duration_s


def test_decoding_in_blocks_equals_one_read(tmp_path):
    from sound_cluster.ingest.audio import decode

    wav = tmp_path / "a.wav"
    y = (0.1 * np.random.default_rng(4).standard_normal((22050 + 13, 2))).astype(np.float32)
    sf.write(wav, y, 22050, subtype="FLOAT")
    whole = decode(wav.read_bytes(), sample_rate=SR)
    for source in (wav.read_bytes(), wav):
        np.testing.assert_array_equal(decode(source, sample_rate=SR, block_frames=1000), whole)
    assert whole.shape == (int(np.ceil((22050 + 13) * SR / 22050)),)


def test_temporaries_of_a_killed_writer_go_at_once_and_a_live_writers_stay(tmp_path):
    """A worker SIGKILLed mid-write leaves its temporary file; the next run removes it without waiting for it to
    age, because its writer is named in it and is gone. A live writer's file stays."""
    import subprocess

    from sound_cluster.io_utils import _temp_prefix, remove_stale_temps

    cache = FeatureCache(tmp_path / "cache", params=FeatureParams())
    cache.dir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = _temp_prefix("a.npy")
    theirs = mine.replace(f"{TMP_PREFIX}{os.getpid()}@", f"{TMP_PREFIX}{dead.pid}@", 1)
    assert theirs != mine
    (cache.dir / (theirs + "abcdefgh")).write_bytes(b"half")
    (cache.dir / (mine + "ijklmnop")).write_bytes(b"in progress")
    (cache.dir / (TMP_PREFIX + "x.npy.123")).write_bytes(b"no writer recorded, fresh")
    (cache.dir / "index").mkdir()
    (cache.dir / "index" / (theirs.replace("a.npy", "a.json") + "qrstuvwx")).write_bytes(b"{")  # an index entry
    cache.prepare()
    assert sorted(p.name for p in cache.dir.iterdir() if p.is_file()) == sorted([mine + "ijklmnop",
                                                                                TMP_PREFIX + "x.npy.123"])
    assert not list((cache.dir / "index").iterdir())
    assert remove_stale_temps(cache.dir) == 0  # nothing more to remove


def test_the_api_gives_files_features_as_a_run_makes_them(tmp_path):
    """``sound_cluster.features``: what scripts use instead of making features their own way."""
    import sound_cluster

    sf.write(tmp_path / "a.wav", tone(440, 0.6), SR)
    (tmp_path / "b.wav").write_bytes(b"not audio")
    feats, failures = sound_cluster.features([tmp_path / "a.wav", tmp_path / "b.wav"], "executor.kind=serial",
                                             f"features.cache_dir={tmp_path / 'cache'}", "features.n_mels=40")
    assert [f.path.name for f in feats] == ["a.wav"] and [x.path.name for x in failures] == ["b.wav"]
    frames = np.load(feats[0].cache_path)
    assert frames.shape == (feats[0].n_frames, 40) and frames.dtype == np.float32
    assert "not a readable audio file" in failures[0].reason
    again = _extract(tmp_path / "a.wav", tmp_path / "cache", n_mels=40)  # the same cache entry a run reads
    assert again.cache_hit and again.cache_path == feats[0].cache_path
