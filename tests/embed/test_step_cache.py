"""The step cache: one folder per encoder, entries checked on use, and a run started again embeds only the rest."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import soundfile as sf

import sound_cluster
from sound_cluster.embed import encoder as embedding
from sound_cluster.embed.head import clip_inputs, embed_files
from sound_cluster.embed.step_cache import KEEP_ENCODERS, STEPS_FOLDER, StepCache, encoder_digest
from sound_cluster.run_folder import RunFolder
from tests.conftest import SR, make_params, tone


@pytest.fixture(scope="module")
def tiny():
    params = make_params("debug=tiny")
    return params, embedding.build_encoder(params.model, n_mels=params.features.n_mels)


def _frames(tmp_path, n: int, n_mels: int) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"{i:02d}.npy"
        np.save(p, rng.standard_normal((40 + 13 * i, n_mels)).astype(np.float32))
        paths.append(p)
    return paths


def test_the_digest_follows_the_layers_the_steps_pass_through_not_the_head(tiny):
    params, enc = tiny
    digest = encoder_digest(enc)
    assert encoder_digest(enc) == digest
    twin = embedding.build_encoder(params.model, n_mels=params.features.n_mels)
    twin.set_weights(enc.get_weights())
    assert encoder_digest(twin) == digest
    logits = twin.get_layer("logits")
    logits.set_weights([w + 1.0 for w in logits.get_weights()])  # the head: other clusters, the same steps
    assert encoder_digest(twin) == digest
    conv = twin.get_layer("conv0")
    conv.set_weights([w + 1e-6 for w in conv.get_weights()])
    assert encoder_digest(twin) != digest


def test_embedding_through_the_cache_equals_embedding_without_it(tiny, tmp_path, caplog):
    params, enc = tiny
    paths = _frames(tmp_path, 5, params.features.n_mels)
    clips, steps = clip_inputs(enc, (np.load(p) for p in paths))
    cache = StepCache(tmp_path, encoder=enc)
    cache.prepare()
    with caplog.at_level(logging.INFO, logger="sound_cluster"):
        first = embed_files(enc, paths, cache=cache)
        again = embed_files(enc, paths, cache=cache)
    assert "0 of 5 files read from the step cache" in caplog.text
    assert "5 of 5 files read from the step cache" in caplog.text
    for got in (first, again):
        np.testing.assert_array_equal(got[0], clips)
        for a, b in zip(got[1], steps):
            np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in cache.dir.iterdir()) == sorted(p.name for p in paths)


def test_a_damaged_entry_is_embedded_again_and_replaced(tiny, tmp_path, caplog):
    params, enc = tiny
    paths = _frames(tmp_path, 2, params.features.n_mels)
    cache = StepCache(tmp_path, encoder=enc)
    cache.prepare()
    _, steps = embed_files(enc, paths, cache=cache)
    cache.path(paths[0]).write_bytes(cache.path(paths[0]).read_bytes()[:100])  # a copy cut short
    np.save(cache.path(paths[1]), np.zeros((3, 5), np.float32))  # not this encoder's width
    with caplog.at_level(logging.WARNING):
        assert cache.get(paths[0]) is None and cache.get(paths[1]) is None
    assert "damaged step cache entry" in caplog.text
    _, again = embed_files(enc, paths, cache=cache)
    for a, b in zip(again, steps):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(cache.get(paths[0]), steps[0])


def test_only_the_most_recently_used_encoders_keep_a_folder(tiny, tmp_path):
    _, enc = tiny
    root = tmp_path / STEPS_FOLDER
    for i in range(KEEP_ENCODERS + 2):
        old = root / f"old{i}"
        old.mkdir(parents=True)
        os.utime(old, (1000 + i, 1000 + i))
    cache = StepCache(tmp_path, encoder=enc)
    cache.prepare()
    kept = sorted(p.name for p in root.iterdir())
    assert cache.dir.name in kept and len(kept) == KEEP_ENCODERS
    assert {f"old{KEEP_ENCODERS + 1}", f"old{KEEP_ENCODERS}"} <= set(kept)  # the newest of the others


@pytest.mark.slow
@pytest.mark.parametrize("inference", ["main", "workers"])
def test_a_run_stopped_during_inference_embeds_only_the_rest_and_equals_an_uninterrupted_run(tmp_path, caplog,
                                                                                              inference):
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        y = tone(300 + 150 * i, 0.8, seed=i) if i % 2 else (0.3 * rng.standard_normal(int(0.8 * SR))).astype("float32")
        sf.write(audio / f"f{i}.wav", y, SR)
    cache = tmp_path / "cache"
    settings = ("debug=tiny", f"features.cache_dir={cache}", f"executor.inference={inference}")
    whole = sound_cluster.cluster(audio, *settings, output_dir=tmp_path / "whole", log=False)
    entries = sorted(cache.glob(f"*/{STEPS_FOLDER}/*/*.npy"))
    assert len(entries) == 6
    for p in entries[::2]:  # as if the run had stopped with three files embedded
        p.unlink()
    with caplog.at_level(logging.INFO, logger="sound_cluster"):
        again = sound_cluster.cluster(audio, *settings, output_dir=tmp_path / "again", log=False)
    assert "3 of 6 files read from the step cache" in caplog.text
    assert list(again.clusters) == list(whole.clusters) and len(whole.clusters) == 6
    a, b = RunFolder(whole.dir), RunFolder(again.dir)
    for row in whole.clusters:
        with np.load(a.posteriors(row["name"])) as x, np.load(b.posteriors(row["name"])) as y:
            for key in ("embedding", "posteriors"):
                np.testing.assert_array_equal(x[key], y[key])
