"""Training batches: random crops of log-mel frames, read from the memory-mapped feature cache.

Each example is a pair of *views*: two crops of the same file that lie close in time, each
independently augmented (a small shift along the mel axis, SpecAugment-style masks). The model
must give both views the same cluster, which is where invariance to pitch, loudness and exact
position comes from; random crops of one fixed length mean a clip's length carries no signal.
Nothing here loads the whole data set: only the frames a batch needs are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .config import AugmentParams


class CropSampler:
    """Endless batches of view pairs drawn from cached log-mel arrays.

    Parameters
    ----------
    paths : sequence of Path
        ``.npy`` files of shape (n_frames, n_mels), opened memory-mapped.
    crop_frames : int
        Frames per crop. Shorter files are padded with their quietest frame value.
    batch_size : int
        Examples per batch (each gives two views, so a batch holds ``2 * batch_size`` crops).
    augment : AugmentParams
    seed : int
    length_power : float
        A file is drawn with probability proportional to ``n_frames ** length_power``: 0 draws
        every file equally often (the batch marginal then counts files, as the clusters table
        does), 1 draws every frame equally often.
    """

    def __init__(self, paths: Sequence[Path], *, crop_frames: int, batch_size: int, augment: AugmentParams,
                 seed: int, length_power: float = 0.0) -> None:
        self.arrays = [np.load(p, mmap_mode="r", allow_pickle=False) for p in paths]
        if not self.arrays:
            raise ValueError("no feature arrays to train on")
        self.n_mels = int(self.arrays[0].shape[1])
        self.crop = crop_frames
        self.batch_size = batch_size
        self.aug = augment
        self.rng = np.random.default_rng(seed)
        lengths = np.array([a.shape[0] for a in self.arrays], dtype=np.float64)
        w = lengths ** length_power
        self.weights = w / w.sum()

    def _crop(self, arr: np.ndarray, start: int) -> np.ndarray:
        n = arr.shape[0]
        if n >= self.crop:
            return np.asarray(arr[start:start + self.crop], dtype=np.float32)
        out = np.full((self.crop, self.n_mels), float(np.min(arr)), dtype=np.float32)
        out[start:start + n] = arr  # a short file sits at a random place in a quiet crop
        return out

    def _augment(self, x: np.ndarray) -> np.ndarray:
        a, rng = self.aug, self.rng
        if a.mel_shift_bins:
            s = int(rng.integers(-a.mel_shift_bins, a.mel_shift_bins + 1))
            if s > 0:
                x = np.concatenate([np.repeat(x[:, :1], s, axis=1), x[:, :-s]], axis=1)
            elif s < 0:
                x = np.concatenate([x[:, -s:], np.repeat(x[:, -1:], -s, axis=1)], axis=1)
        x = x.copy()
        if a.eq_nats:
            # A smooth random equaliser: two cosine terms over the mel axis, random phase and size.
            f = np.linspace(0.0, np.pi, x.shape[1], dtype=np.float32)
            curve = sum(rng.uniform(-a.eq_nats, a.eq_nats) / (i + 1) * np.cos((i + 1) * f + rng.uniform(0, np.pi))
                        for i in range(2))
            x += curve.astype(np.float32)[None, :]
        fill = float(x.mean())
        if a.time_mask_frames:
            w = int(rng.integers(0, a.time_mask_frames + 1))
            t0 = int(rng.integers(0, max(1, x.shape[0] - w + 1)))
            x[t0:t0 + w] = fill
        if a.freq_mask_bins:
            w = int(rng.integers(0, a.freq_mask_bins + 1))
            f0 = int(rng.integers(0, max(1, x.shape[1] - w + 1)))
            x[:, f0:f0 + w] = fill
        return x

    def batch(self) -> np.ndarray:
        """One batch.

        Returns
        -------
        x : np.ndarray [shape=(2 * batch_size, crop_frames, n_mels), dtype=float32]
            Rows ``i`` and ``batch_size + i`` are the two views of example ``i``.
        """
        return self.batch_with_files()[0]

    def batch_with_files(self) -> tuple[np.ndarray, np.ndarray]:
        """One batch and the index of the file each row was cropped from.

        Returns
        -------
        x : np.ndarray [shape=(2 * batch_size, crop_frames, n_mels), dtype=float32]
        files : np.ndarray [shape=(2 * batch_size,), dtype=int32]
            Row ``i``'s file; the contrastive term must not treat two crops of one file as a
            negative pair.
        """
        rng, b = self.rng, self.batch_size
        files = rng.choice(len(self.arrays), size=b, p=self.weights)
        out = np.empty((2 * b, self.crop, self.n_mels), dtype=np.float32)
        for i, f in enumerate(files):
            arr = self.arrays[f]
            n = arr.shape[0]
            span = abs(n - self.crop)  # range of start offsets (of the crop, or of a short file in it)
            s1 = int(rng.integers(0, span + 1))
            lo = max(0, s1 - self.aug.view_max_shift_frames)
            hi = min(span, s1 + self.aug.view_max_shift_frames)
            s2 = int(rng.integers(lo, hi + 1))
            out[i] = self._augment(self._mix(self._crop(arr, s1)))
            out[b + i] = self._augment(self._mix(self._crop(arr, s2)))
        return out, np.concatenate([files, files]).astype(np.int32)

    def _mix(self, x: np.ndarray) -> np.ndarray:
        """With probability ``mix_prob``, a crop of a random file underneath ``x``, in the power domain.

        Its mean log power is set ``mix_below_db`` to ``mix_below_db + 10`` dB below ``x``'s, so
        the view's own sound still dominates: a background, not a second source of equal weight.
        """
        a, rng = self.aug, self.rng
        if not a.mix_prob or rng.random() >= a.mix_prob:
            return x
        other = self.arrays[int(rng.integers(len(self.arrays)))]
        y = self._crop(other, int(rng.integers(0, abs(other.shape[0] - self.crop) + 1)))
        below_nats = (a.mix_below_db + 10.0 * rng.random()) * np.log(10.0) / 10.0  # dB of power -> nats
        y = y - y.mean() + x.mean() - below_nats
        return np.logaddexp(x, y).astype(np.float32)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield self.batch_with_files()
