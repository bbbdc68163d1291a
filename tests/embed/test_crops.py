"""Training batches: views from files of one group, the frames a crop holds, the augmentations."""

from __future__ import annotations

import os

import numpy as np
import pytest

from sound_cluster.config import AugmentParams
from sound_cluster.embed.crops import GROUP, CropSampler, FrameFile

QUIET = AugmentParams(view_max_shift_frames=0, mel_shift_bins=0, time_mask_frames=0, freq_mask_bins=0, eq_nats=0.0)


def _constant_files(tmp_path, lengths, n_mels=4):
    """File i holds the value i everywhere, so a crop tells which file it came from."""
    paths = []
    for i, n in enumerate(lengths):
        p = tmp_path / f"f{i}.npy"
        np.save(p, np.full((n, n_mels), float(i), dtype=np.float32))
        paths.append(p)
    return paths


def test_frame_files_read_rows_without_keeping_files_open(tmp_path):
    a = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    before = len(os.listdir("/proc/self/fd"))
    files = [FrameFile(tmp_path / "a.npy") for _ in range(200)]
    assert len(os.listdir("/proc/self/fd")) == before  # a memory map would hold one descriptor each
    f = files[0]
    assert f.shape == (50, 7) and len(f) == 50
    np.testing.assert_array_equal(f[3:10], a[3:10])
    np.testing.assert_array_equal(f[45:60], a[45:50])  # past the end: the rows there are
    np.testing.assert_array_equal(np.asarray(f), a)
    with pytest.raises(IndexError):
        f[0:10:2]


def test_second_view_comes_from_another_file_of_the_group(tmp_path):
    paths = _constant_files(tmp_path, [30, 30, 30, 30])
    groups = [0, 0, -1, -1]  # files 0 and 1 are one sound made twice; 2 and 3 have no group
    s = CropSampler(paths, crop_frames=10, batch_size=64, augment=QUIET, seed=0, groups=groups, group_prob=1.0)
    x, info = s.batch_with_files()
    b = s.batch_size
    first, second = x[:b, 0, 0], x[b:, 0, 0]
    grouped = first < 2
    assert grouped.any() and (~grouped).any()
    assert (second[grouped] == 1 - first[grouped]).all()  # always the other file of the group
    assert (second[~grouped] == first[~grouped]).all()  # no group: two crops of the one file
    assert (info[:b, GROUP] == info[b:, GROUP]).all()
    # Files without a group get groups of their own, apart from each other and from the given ones.
    g = dict(zip(first.astype(int), info[:b, GROUP]))
    assert len({g[0], g[2], g[3]}) == 3 and g[0] == g[1]
    never = CropSampler(paths, crop_frames=10, batch_size=64, augment=QUIET, seed=0, groups=groups, group_prob=0.0)
    x, _ = never.batch_with_files()
    assert (x[:b, 0, 0] == x[b:, 0, 0]).all()


def test_grouped_views_are_cropped_at_the_same_relative_place(tmp_path):
    # Each frame holds its own index (plus 1000 in the long file), so a crop tells where it starts.
    np.save(tmp_path / "short.npy", np.repeat(np.arange(40, dtype=np.float32)[:, None], 4, axis=1))
    np.save(tmp_path / "long.npy", np.repeat(1000 + np.arange(120, dtype=np.float32)[:, None], 4, axis=1))
    s = CropSampler([tmp_path / "short.npy", tmp_path / "long.npy"], crop_frames=20, batch_size=64, augment=QUIET,
                    seed=0, groups=[5, 5])
    x, _ = s.batch_with_files()
    b = s.batch_size

    def place(crop):  # the crop's start as a fraction of its file's range of starts
        first = float(crop[0, 0])
        return (first - 1000) / (120 - 20) if first >= 1000 else first / (40 - 20)

    a, c = np.array([place(v) for v in x[:b]]), np.array([place(v) for v in x[b:]])
    assert ((x[:b, 0, 0] >= 1000) != (x[b:, 0, 0] >= 1000)).all()  # always the other file
    assert np.abs(a - c).max() <= 0.5 / 20 + 1e-6  # rounding to the shorter file's whole frames


def test_short_files_report_the_frames_they_fill(tmp_path):
    paths = _constant_files(tmp_path, [5, 40])
    s = CropSampler(paths, crop_frames=12, batch_size=32, augment=QUIET, seed=3)
    x, info = s.batch_with_files()
    for crop, (_, start, end) in zip(x, info):
        if crop.max() == 0:  # the short file (value 0, padded with its own minimum, also 0)
            assert end - start == 5 and 0 <= start <= 7
        else:
            assert (start, end) == (0, 12)


def test_step_mask_and_masked_posteriors_ignore_padding():
    import keras
    from keras import ops

    from sound_cluster.embed.losses import step_mask
    from sound_cluster.embed.training import ClusterTrainer

    info = np.array([[0, 0, 12], [1, 3, 8], [2, 9, 12]], dtype=np.int32)
    mask = np.asarray(step_mask(info, steps=3, time_pool=4))
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 1]]
    # A trainer over a head that passes its input through: a crop's posterior is the mean over
    # the steps of its own audio, so padded steps change nothing.
    x_in = keras.Input((None, 3))
    head = keras.Model(x_in, {"embedding": x_in, "logits": keras.layers.Identity(name="logits")(x_in)})
    trainer = ClusterTrainer(head, gamma=1.0, consistency_weight=1.0)
    logits = np.log(np.array([[[0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [9, 9, 9]],
                              [[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [9, 9, 9]]], dtype=np.float32))
    two = np.array([[0, 0, 8], [1, 0, 8]], dtype=np.int32)
    got = [float(v) for v in trainer._head_terms(ops.convert_to_tensor(logits), step_mask(two, steps=3, time_pool=4))]
    clean = [float(v) for v in trainer._head_terms(ops.convert_to_tensor(logits[:, :2]),
                                                   ops.ones((2, 2), "float32"))]
    np.testing.assert_allclose(got, clean, rtol=1e-5)


def test_mel_warp_moves_a_band_by_the_factor_and_band_limit_empties_the_top(tmp_path):
    x = np.zeros((10, 64), dtype=np.float32)
    x[:, 30] = 10.0
    warp = AugmentParams(view_max_shift_frames=0, mel_shift_bins=0, time_mask_frames=0, freq_mask_bins=0, eq_nats=0.0,
                         mel_warp=0.2)
    np.save(tmp_path / "a.npy", x)
    s = CropSampler([tmp_path / "a.npy"], crop_frames=10, batch_size=2, augment=warp, seed=0)
    peaks = [float(np.argmax(s._augment(x)[0])) for _ in range(200)]
    assert min(peaks) >= 30 * 0.8 - 1 and max(peaks) <= 30 * 1.2 + 1 and np.std(peaks) > 1
    limit = AugmentParams(view_max_shift_frames=0, mel_shift_bins=0, time_mask_frames=0, freq_mask_bins=0,
                          eq_nats=0.0, band_limit_prob=1.0)
    s = CropSampler([tmp_path / "a.npy"], crop_frames=10, batch_size=2, augment=limit, seed=0)
    y = np.random.default_rng(0).standard_normal((10, 64)).astype(np.float32)
    for _ in range(20):
        z = s._augment(y)
        top = int(np.argmax((z == z.min()).all(axis=0)))  # the first band set to the floor everywhere
        assert 32 <= top < 64 and (z[:, top:] == y.min()).all() and (z[:, :top] == y[:, :top]).all()


def test_files_are_drawn_by_weight(tmp_path):
    paths = _constant_files(tmp_path, [20, 20, 20])
    s = CropSampler(paths, crop_frames=8, batch_size=300, augment=QUIET, seed=0, weights=[1.0, 1.0, 2.0])
    first = np.concatenate([s.batch_with_files()[0][:300, 0, 0] for _ in range(10)])
    assert np.mean(first == 2) == pytest.approx(0.5, abs=0.03)
