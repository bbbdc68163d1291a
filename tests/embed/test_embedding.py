"""The clustering loss, the encoder and its training, on small real inputs."""

import dataclasses
import math
from pathlib import Path

import keras
import numpy as np
import pytest

from sound_cluster.config import AugmentParams, ConvBlock, ModelParams, SegmentParams, TrainParams
from sound_cluster.embed.clusters import assign
from sound_cluster.embed.crops import CropSampler
from sound_cluster.embed.encoder import InputStandardize, build_encoder, load_encoder, save_encoder
from sound_cluster.embed.inference import Posteriors
from sound_cluster.embed.losses import entropy_terms, nt_xent
from sound_cluster.embed.training import ClusterTrainer, train_encoder
from sound_cluster.outputs.evaluate import clustering_scores

TINY = ModelParams(n_clusters=4, max_clusters=4, embedding_dim=8, blocks=(ConvBlock(4, (3, 3), (2, 2)), ConvBlock(8, (3, 3), (2, 2))),
                   context_kernel=3)


def _clustering_loss(logits, gamma):
    h_cond, h_marg = entropy_terms(logits)
    return float(h_cond) - gamma * float(h_marg)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("k", [2, 7, 10])
def test_loss_closed_forms(gamma, k):
    loss = lambda _, x: _clustering_loss(x, gamma)  # noqa: E731 - mean_i H(p_i) - gamma H(mean_i p_i)
    uniform = np.zeros((12, k), dtype=np.float32)
    assert float(loss(np.zeros(len(uniform)), uniform)) == pytest.approx((1 - gamma) * math.log(k), abs=1e-5)
    # Confident one-hot posteriors spread evenly over the K clusters: -gamma log K.
    even = np.tile(np.eye(k, dtype=np.float32) * 60.0, (3, 1))
    assert float(loss(np.zeros(len(even)), even)) == pytest.approx(-gamma * math.log(k), abs=1e-4)
    # All in one cluster: H(p_i) = 0 and H(mean p) = 0, worse than the even batch.
    collapsed = np.zeros((3 * k, k), dtype=np.float32)
    collapsed[:, 0] = 60.0
    assert float(loss(np.zeros(len(collapsed)), collapsed)) == pytest.approx(0.0, abs=1e-4)
    assert float(loss(np.zeros(len(collapsed)), collapsed)) > float(loss(np.zeros(len(even)), even))


def test_loss_is_finite_for_extreme_logits():
    loss = lambda _, x: _clustering_loss(x, 1.0)  # noqa: E731
    x = np.array([[1e30, -1e30, 0.0], [-1e30, 1e30, 0.0], [3e4, 3e4, -3e4]], dtype=np.float32)
    assert np.isfinite(float(loss(np.zeros(len(x)), x)))
    h_cond, h_marg = entropy_terms(x)
    assert np.isfinite(float(h_cond)) and np.isfinite(float(h_marg))


def test_layers_round_trip_through_keras_serialization():
    layer = InputStandardize(by_std=False, scale=0.3)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert again.get_config()["scale"] == 0.3 and again.get_config()["by_std"] is False


def test_encoder_shapes_gain_invariance_and_save_load(tmp_path):
    enc = build_encoder(TINY, n_mels=16)
    x = np.random.default_rng(0).standard_normal((2, 37, 16)).astype(np.float32)
    out = enc(x)
    assert out["embedding"].shape == (2, 10, 8)  # ceil(37 / 4) steps
    assert out["logits"].shape == (2, 10, 4)
    # A gain is an added constant in the log domain: it must not change anything.
    np.testing.assert_allclose(enc(x + 5.0)["logits"], out["logits"], atol=1e-4)
    save_encoder(enc, tmp_path / "models" / "embedding.keras")
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["embedding.keras"]
    loaded = load_encoder(str(tmp_path / "models" / "embedding.keras"))
    np.testing.assert_allclose(loaded(x)["logits"], out["logits"], atol=1e-5)
    emb, post = Posteriors(loaded)(x[0])
    assert emb.shape == (10, 8) and post.shape == (10, 4)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-5)


def test_nt_xent_closed_forms_and_same_file_exclusion():
    b = 4
    files = np.concatenate([np.arange(b), np.arange(b)]).astype(np.int32)
    # Identical embeddings: the partner is one of 2B - 1 equally likely candidates.
    z = np.ones((2 * b, 3), dtype=np.float32)
    assert float(nt_xent(z, files, temperature=0.5)) == pytest.approx(math.log(2 * b - 1), abs=1e-5)
    # Partners equal, examples orthogonal, a cold temperature: the partner is found for certain.
    z = np.concatenate([np.eye(b), np.eye(b)]).astype(np.float32)
    assert float(nt_xent(z, files, temperature=0.01)) == pytest.approx(0.0, abs=1e-5)
    # Two examples cropped from one file are not each other's negatives: with every row of the
    # same file excluded but the partner, identical embeddings give log(2B - 1 - 2).
    z = np.ones((2 * b, 3), dtype=np.float32)
    files = np.array([0, 0, 1, 2, 0, 0, 1, 2], dtype=np.int32)
    got = nt_xent(z, files, temperature=0.5)
    want = np.mean([math.log(5)] * 4 + [math.log(7)] * 4)  # rows of file 0 lose two negatives
    assert float(got) == pytest.approx(want, abs=1e-5)


def test_trainer_round_trips_with_its_encoder():
    trainer = ClusterTrainer(build_encoder(TINY, n_mels=16), gamma=1.3, consistency_weight=0.5,
                             contrastive_weight=0.7, temperature=0.2)
    again = ClusterTrainer.from_config(trainer.get_config())
    assert again.gamma == 1.3 and again.consistency_weight == 0.5
    assert again.contrastive_weight == 0.7 and again.temperature == 0.2
    assert again.encoder.count_params() == trainer.encoder.count_params()


def _two_kinds(tmp_path, n_per_kind=12, n_mels=16, frames=60):
    """Two kinds of 'sound' as log-mel arrays: energy low in frequency, or high; random gain."""
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for i in range(2 * n_per_kind):
        kind = i % 2
        x = rng.normal(-8, 0.5, (frames, n_mels)).astype(np.float32)
        band = slice(1, 5) if kind == 0 else slice(10, 14)
        x[:, band] += 6 + rng.normal(0, 0.5, (frames, 4))
        x += rng.uniform(-3, 3)  # loudness must not matter
        p = tmp_path / f"{i}.npy"
        np.save(p, x)
        paths.append(p)
        labels.append(kind)
    return paths, labels


@pytest.mark.parametrize("contrastive_weight", [0.0, 1.0])
def test_training_separates_two_kinds_of_sound(tmp_path, contrastive_weight):
    paths, labels = _two_kinds(tmp_path)
    model = ModelParams(n_clusters=2, max_clusters=2, embedding_dim=8, blocks=(ConvBlock(8, (3, 3), (2, 2)),), context_kernel=3)
    sampler = CropSampler(paths, crop_frames=24, batch_size=32, augment=AugmentParams(mel_shift_bins=1), seed=0)
    train = TrainParams(gamma=1.5, consistency_weight=1.0, contrastive_weight=contrastive_weight, learning_rate=3e-3,
                        epochs=6, patience=10, min_delta=0.0, lr_schedule="constant")
    enc, history = train_encoder(sampler, model=model, train=train, n_mels=16, steps_per_epoch=15, seed=0, verbose=0)
    assert {"loss", "h_cond", "h_marg", "consistency", "contrastive", "clusters_used"} <= set(history)
    assert history["loss"][-1] < history["loss"][0]
    run = Posteriors(enc)
    clusters = [assign(run(np.load(p))[1])[0] for p in paths]
    assert clustering_scores(labels, clusters)["acc"] == 1.0


def test_crop_sampler_views_and_short_files(tmp_path):
    short = tmp_path / "short.npy"
    np.save(short, np.repeat(np.arange(10, 15, dtype=np.float32)[:, None], 16, axis=1))  # rows 10..14
    s = CropSampler([short], crop_frames=12, batch_size=4, augment=AugmentParams(0, 0, 0, 0, 0.0), seed=1)
    b = s.batch()
    assert b.shape == (8, 12, 16) and b.dtype == np.float32
    # The short file (5 frames) sits whole somewhere inside a crop padded with its own minimum (10).
    for crop in b[:, :, 0]:
        start = int(np.flatnonzero(crop == 11)[0]) - 1
        assert crop[start:start + 5].tolist() == [10, 11, 12, 13, 14]
        assert (np.delete(crop, range(start, start + 5)) == 10).all()


@pytest.mark.parametrize("power, long_share", [(0.0, 0.5), (1.0, 400 / 410)])
def test_crop_sampler_draws_files_by_length_power(tmp_path, power, long_share):
    paths = [tmp_path / "short.npy", tmp_path / "long.npy"]
    np.save(paths[0], np.zeros((10, 4), dtype=np.float32))
    np.save(paths[1], np.zeros((400, 4), dtype=np.float32))
    s = CropSampler(paths, crop_frames=8, batch_size=200, augment=AugmentParams(0, 0, 0, 0, 0.0), seed=0,
                    length_power=power)
    files = np.concatenate([s.batch_with_files()[1][:, 0] for _ in range(10)])
    b = s.batch_size
    assert (files.reshape(-1, 2 * b)[:, :b] == files.reshape(-1, 2 * b)[:, b:]).all()  # both views, one file
    assert files.mean() == pytest.approx(long_share, abs=0.03)


def test_merge_autoencoder_trains_through_its_trees_and_round_trips(tmp_path):
    from sound_cluster.segment.merge_model import MergeAutoencoder, mean_fold_cost, train_merge_autoencoder

    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(10):  # piecewise-constant sequences: some merges are cheap, some are not
        parts = [np.tile(rng.standard_normal(8), (int(rng.integers(4, 12)), 1)) for _ in range(3)]
        x = np.concatenate(parts)
        seqs.append(x + 0.1 * rng.standard_normal(x.shape))
    untrained = mean_fold_cost(seqs, weights=MergeAutoencoder(8, size_weighted=True, node_vector="mean",
                                                              linkage="plain").fold_weights())
    small = SegmentParams(epochs=3, steps_per_epoch=5, batch_sequences=4, max_leaves=32, learning_rate=1e-2)
    for node_vector in ("code", "mean"):
        segment = dataclasses.replace(small, size_weighted=True, negative_weight=0.0, node_vector=node_vector)
        model, losses = train_merge_autoencoder(seqs, segment=segment, seed=0)
        assert len(losses) == 3 and losses[-1] < losses[0]
        assert mean_fold_cost(seqs, weights=model.fold_weights()) < untrained
    # The default objective adds a hinge on merges with leaves of other windows; it trains as well.
    model, losses = train_merge_autoencoder(seqs, segment=dataclasses.replace(small, size_weighted=False, negative_weight=1.0), seed=0)
    assert losses[-1] < losses[0]
    model.save(tmp_path / "rae.keras")
    again = keras.saving.load_model(tmp_path / "rae.keras", safe_mode=True)
    np.testing.assert_array_equal(again.fold_weights().w_dec, model.fold_weights().w_dec)
    assert again.size_weighted is False and again.dim == 8 and again.node_vector == "mean"


def test_splice_training_tells_a_splice_of_two_sounds_from_one_sound():
    from keras import ops

    from sound_cluster.segment.fold import score_pairs
    from sound_cluster.segment.merge_model import (
        calibrate_split_cost,
        crop_pairs,
        long_sounds,
        splice_loss,
        train_merge_autoencoder,
    )

    # Six kinds that differ in two of eight dimensions; inside a sound the other six wander far more: what a
    # merge must tell apart is not what reconstruction alone attends to.
    rng = np.random.default_rng(0)
    base = 2 * rng.standard_normal(8)
    kinds = np.zeros((6, 8))
    kinds[:, :2] = rng.standard_normal((6, 2))

    def sound(kind: int) -> np.ndarray:
        n = int(rng.integers(12, 30))
        wander = np.cumsum(0.3 * rng.standard_normal((n, 8)), axis=0)
        wander[:, :2] *= 0.1
        return base + kinds[kind] + wander + 0.2 * rng.standard_normal((n, 8))

    sounds = [sound(i % 6) for i in range(60)]
    files = [np.concatenate(sounds[i:i + 6]) for i in range(0, 60, 6)]
    small = SegmentParams(epochs=3, steps_per_epoch=8, batch_sequences=4, max_leaves=32, learning_rate=1e-2)
    held_out = crop_pairs(long_sounds(sounds), rng=np.random.default_rng(7), pairs=500)

    def accuracy(model) -> float:  # balanced accuracy at the calibrated split cost, on the held-out pairs
        cost = calibrate_split_cost(model, sounds, seed=0)
        n = np.full(500, held_out.size)
        factor = held_out.size / 2  # Ward's, as the fold scores them
        w = model.fold_weights()
        same = score_pairs(held_out.same_left, held_out.same_right, n, n, weights=w)[0] / factor
        spliced = score_pairs(held_out.spliced_left, held_out.spliced_right, n, n, weights=w)[0] / factor
        return 0.5 * (np.mean(same <= cost) + np.mean(spliced > cost))

    def ranking(model) -> float:
        return float(ops.convert_to_numpy(splice_loss(model, held_out, margin=small.splice_margin)))

    plain, _ = train_merge_autoencoder(files, segment=dataclasses.replace(small, splice_weight=0.0), seed=0)
    spliced, losses = train_merge_autoencoder(files, segment=small, seed=0, sounds=sounds)
    assert losses[-1] < losses[0]
    assert ranking(spliced) < 0.85 * ranking(plain)
    assert accuracy(spliced) > accuracy(plain)


MIRRORED = """
import logging, sys, numpy as np, tensorflow as tf
logging.basicConfig(level=logging.INFO)
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pathlib import Path
from sound_cluster.config import AugmentParams, ConvBlock, ModelParams, SegmentParams, TrainParams
from sound_cluster.embed.crops import CropSampler
from sound_cluster.embed.inference import Posteriors
from sound_cluster.embed.training import train_encoder
from sound_cluster.embed.clusters import assign
from sound_cluster.outputs.evaluate import clustering_scores
from tests.embed.test_embedding import _two_kinds
paths, labels = _two_kinds(Path(sys.argv[1]))
model = ModelParams(n_clusters=2, max_clusters=2, embedding_dim=8, blocks=(ConvBlock(8, (3, 3), (2, 2)),), context_kernel=3)
sampler = CropSampler(paths, crop_frames=24, batch_size=32, augment=AugmentParams(mel_shift_bins=1), seed=0)
assert tf.distribute.MirroredStrategy().num_replicas_in_sync == 2
train = TrainParams(gamma=1.5, consistency_weight=1.0, contrastive_weight=1.0, learning_rate=3e-3, epochs=6,
                    patience=10, min_delta=0.0, lr_schedule="constant", strategy="mirrored")
enc, history = train_encoder(sampler, model=model, train=train, n_mels=16, steps_per_epoch=15, seed=0, verbose=0)
assert history["loss"][-1] < history["loss"][0], history["loss"]
run = Posteriors(enc)
clusters = [assign(run(np.load(p))[1])[0] for p in paths]
print("ACC", clustering_scores(labels, clusters)["acc"])
"""


@pytest.mark.slow
def test_mirrored_strategy_trains_on_two_logical_devices(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path)], cwd=root, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training on 2 replicas (mirrored)" in proc.stderr
    assert float(proc.stdout.split("ACC")[1]) == 1.0


def test_replica_order_keeps_view_pairs_within_each_share():
    from sound_cluster.embed.training import replica_order

    assert replica_order(4, 1).tolist() == list(range(8))
    order = replica_order(4, 2)
    assert order.tolist() == [0, 1, 4, 5, 2, 3, 6, 7]
    for share in order.reshape(2, -1):  # first half of each share pairs with its second half
        half = len(share) // 2
        assert all(b - a == 4 for a, b in zip(share[:half], share[half:]))


@pytest.mark.parametrize("by_std", [False, True])
def test_windowed_inference_equals_one_call_on_the_whole_file(tmp_path, by_std):
    """Long files run in windows (bounded memory); the steps must be those of one whole-file call."""
    enc = build_encoder(dataclasses.replace(TINY, standardize_by_std=by_std), n_mels=16)
    rng = np.random.default_rng(1)
    for n_frames in (5, 64, 65, 130, 1003):  # shorter than a window, exactly one, just over, many with a ragged end
        frames = (rng.standard_normal((n_frames, 16)) + 4).astype(np.float32)
        np.save(tmp_path / "f.npy", frames)
        whole = enc(frames[None], training=False)
        emb, post = Posteriors(enc, window_steps=16)(np.load(tmp_path / "f.npy", mmap_mode="r"))
        assert emb.shape == (-(-n_frames // 4), 8) and post.shape == (-(-n_frames // 4), 4)
        np.testing.assert_allclose(emb, whole["embedding"][0], atol=1e-5)
        np.testing.assert_allclose(post, keras.ops.softmax(whole["logits"][0], axis=-1), atol=1e-5)


def test_windows_have_one_length_whatever_the_files_lengths():
    """TensorFlow keeps what it builds for every input shape: files of any length longer than a window meet at most
    ``time_pool + 1`` input lengths, and the windows' kept frames tile the file with a full margin of context."""
    from sound_cluster.embed.inference import window_plan

    lengths = set()
    for n in [*range(1, 200), 1003, 6000, 6001, 6002, 6003, 100_000]:
        plan = window_plan(n, window=64, margin=12, time_pool=4)
        assert plan[0][2] == 0 and plan[-1][3] == n
        assert all(x[3] == y[2] for x, y in zip(plan, plan[1:]))
        for lo, hi, a, b in plan:
            assert lo % 4 == 0 and a % 4 == 0 and lo <= a < b <= hi
            assert (lo == 0 or a - lo >= 12) and (hi == n or hi - b >= 12)
        if n > 64:
            lengths |= {hi - lo for lo, hi, _, _ in plan}
    assert lengths == {64, 65, 66, 67}
