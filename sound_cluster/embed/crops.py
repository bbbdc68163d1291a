"""Training batches: random crops of log-mel frames, read from the feature cache a crop at a time.

Each example is a pair of *views*: two crops of the same file that lie close in time, or, where
files are grouped (the same sound made differently: one note at another pitch, one word in
another voice), crops of two files of one group at the same relative position. Each view is
independently augmented (mel shift and warp, a random equaliser, a random band limit,
SpecAugment-style masks, another recording underneath, a continuous background bed underneath).
The model must give both views the same
cluster and embedding, which is where invariance to pitch, voice, loudness, channel and exact
position comes from. Every row also carries the frames of the crop that hold the file's own
audio, so a short file padded into a crop is pooled over its own frames only, as it is when the
whole file is embedded. Nothing here loads the whole data set: only the frames a batch needs are
read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from scipy.special import logsumexp

from sound_cluster.config import AugmentParams

# Columns of the per-row information a batch carries beside its crops.
GROUP, START, END = 0, 1, 2


class FrameFile:
    """The rows of a cached ``.npy`` array, read from disk when asked for.

    No file stays open between reads: a corpus can hold more files than a process may open (a
    memory map keeps its file open), and only the rows of a crop are read.
    ``shape``, ``len``, slicing with a step of 1 and ``np.asarray`` work as on the array.
    """

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)
            self.offset = fh.tell()
        if fortran or len(shape) != 2:
            raise ValueError(f"{path}: expected a C-ordered 2-d array, got shape {shape}")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice) -> np.ndarray:
        start, stop, step = index.indices(self.shape[0])
        if step != 1:
            raise IndexError("FrameFile reads contiguous rows only")
        n = max(0, stop - start)
        row = self.shape[1] * self.dtype.itemsize
        return np.fromfile(self.path, dtype=self.dtype, count=n * self.shape[1],
                           offset=self.offset + start * row).reshape(n, self.shape[1])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class CropSampler:
    """Endless batches of view pairs drawn from cached log-mel arrays.

    Parameters
    ----------
    paths : sequence of Path, np.ndarray or array-like
        ``.npy`` files of shape (n_frames, n_mels), read a crop at a time (:class:`FrameFile`), or
        arrays of that shape, or objects that give rows as arrays when sliced (``shape``, ``len``, contiguous
        slices and ``np.asarray``: :class:`sound_cluster.embed.step_store.StoredRows`). A sequence with a
        ``lengths`` array (each item's rows) is kept as it is and its items made when drawn
        (:class:`sound_cluster.segment.units.UnitSteps`).
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
    groups : sequence of int, optional
        A group per file (negative: none). The second view of an example whose file shares its
        group with other files is cropped from one of those, with probability ``group_prob``.
    group_prob : float
        See ``groups``.
    weights : sequence of float, optional
        Multiplies each file's probability of being drawn (e.g. to balance the sources of a corpus).
    beds : sequence of Path or np.ndarray, optional
        Log-mel arrays of continuous background recordings (wind, rain, traffic, room tone). A view
        that gets a bed (``augment.bed_prob``) takes a crop of one of them half of the time, and a
        synthesized bed (:func:`synthetic_bed`) otherwise; without them, always a synthesized one.
    """

    def __init__(self, paths: Sequence[Path | np.ndarray], *, crop_frames: int, batch_size: int, augment: AugmentParams,
                 seed: int, length_power: float = 0.0, groups: Sequence[int] | None = None, group_prob: float = 1.0,
                 weights: Sequence[float] | None = None, beds: Sequence[Path | np.ndarray] | None = None) -> None:
        self.beds = [FrameFile(p) if isinstance(p, (str, Path)) else p for p in (beds or ())]
        lazy = getattr(paths, "lengths", None)  # a sequence that makes its items when asked for: not listed
        self.arrays = paths if lazy is not None else [FrameFile(p) if isinstance(p, (str, Path)) else p for p in paths]
        if not len(self.arrays):
            raise ValueError("no feature arrays to train on")
        self.n_mels = int(self.arrays[0].shape[1])
        self.crop = crop_frames
        self.batch_size = batch_size
        self.aug = augment
        self.rng = np.random.default_rng(seed)
        lengths = np.asarray(lazy if lazy is not None else [a.shape[0] for a in self.arrays], dtype=np.float64)
        w = lengths ** length_power
        if weights is not None:
            w = w * np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum()
        n = len(self.arrays)
        g = np.full(n, -1, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
        if g.shape != (n,):
            raise ValueError(f"groups must give one value per file ({n}), got shape {g.shape}")
        # Files without a group are groups of one; ids stay distinct from the given ones.
        self.group = np.where(g >= 0, g, g.max(initial=-1) + 1 + np.arange(n))
        order = np.argsort(self.group, kind="stable")
        bounds = np.flatnonzero(np.diff(self.group[order])) + 1
        # Each group's files, once (each file's list of the others would be quadratic in a group's size: 1 GB for
        # the cluster head of 64,000 units in 28 clusters); a file's mates are its group's files but itself.
        self.members = np.split(order, bounds)  # in file order within each group
        self.member_of = np.empty(n, dtype=np.int64)  # each file's group, as an index into members
        self.position = np.empty(n, dtype=np.int64)  # each file's place among its group's files
        for i, m in enumerate(self.members):
            self.member_of[m] = i
            self.position[m] = np.arange(len(m))
        self.group_prob = float(group_prob)

    def _crop(self, arr: np.ndarray, start: int) -> tuple[np.ndarray, int, int]:
        """A crop starting at ``start`` (a short file: placed at ``start`` in a quiet crop), and its own frames."""
        n = arr.shape[0]
        if n >= self.crop:
            return np.asarray(arr[start:start + self.crop], dtype=np.float32), 0, self.crop
        arr = np.asarray(arr)
        out = np.full((self.crop, self.n_mels), float(np.min(arr)), dtype=np.float32)
        out[start:start + n] = arr  # a short file sits at a random place in a quiet crop
        return out, start, start + n

    def _augment(self, x: np.ndarray) -> np.ndarray:
        a, rng = self.aug, self.rng
        n_mels = x.shape[1]
        if a.mel_shift_bins or a.mel_warp:
            # One resampling of the mel axis: bin j of the view reads bin (j - shift) / factor of the
            # crop (a shift moves a sound up or down, a factor stretches it, as a longer or shorter
            # vocal tract does); edges repeat the last band.
            s = int(rng.integers(-a.mel_shift_bins, a.mel_shift_bins + 1)) if a.mel_shift_bins else 0
            factor = float(rng.uniform(1.0 - a.mel_warp, 1.0 + a.mel_warp)) if a.mel_warp else 1.0
            if s or factor != 1.0:
                src = np.clip((np.arange(n_mels) - s) / factor, 0.0, n_mels - 1.0)
                lo = np.floor(src).astype(np.int64)
                hi = np.minimum(lo + 1, n_mels - 1)
                frac = (src - lo).astype(np.float32)
                x = x[:, lo] * (1.0 - frac) + x[:, hi] * frac
        x = np.array(x, dtype=np.float32)
        if a.eq_nats:
            # A smooth random equaliser: two cosine terms over the mel axis, random phase and size.
            f = np.linspace(0.0, np.pi, n_mels, dtype=np.float32)
            curve = sum(rng.uniform(-a.eq_nats, a.eq_nats) / (i + 1) * np.cos((i + 1) * f + rng.uniform(0, np.pi))
                        for i in range(2))
            x += curve.astype(np.float32)[None, :]
        if a.band_limit_prob and rng.random() < a.band_limit_prob:
            # A lower sample rate or a telephone line: nothing above a random band.
            top = int(rng.integers(n_mels // 2, n_mels))
            x[:, top:] = x.min()
        fill = float(x.mean())
        if a.time_mask_frames:
            w = int(rng.integers(0, a.time_mask_frames + 1))
            t0 = int(rng.integers(0, max(1, x.shape[0] - w + 1)))
            x[t0:t0 + w] = fill
        if a.freq_mask_bins:
            w = int(rng.integers(0, a.freq_mask_bins + 1))
            f0 = int(rng.integers(0, max(1, n_mels - w + 1)))
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
        """One batch, the group of each row's file, and the frames of each crop that hold its file.

        Returns
        -------
        x : np.ndarray [shape=(2 * batch_size, crop_frames, n_mels), dtype=float32]
        info : np.ndarray [shape=(2 * batch_size, 3), dtype=int32]
            Per row: the group of its file (``GROUP``; a file without a group is a group of its
            own), and the first and one-past-last frame of the crop that hold the file's audio
            (``START``, ``END``; the rest is padding). The contrastive term must not treat two
            crops of one group as a negative pair.
        """
        rng, b = self.rng, self.batch_size
        files = rng.choice(len(self.arrays), size=b, p=self.weights)
        out = np.empty((2 * b, self.crop, self.n_mels), dtype=np.float32)
        info = np.empty((2 * b, 3), dtype=np.int32)
        shift = self.aug.view_max_shift_frames
        for i, f in enumerate(files):
            arr = self.arrays[f]
            span = abs(arr.shape[0] - self.crop)  # range of start offsets (of the crop, or of a short file in it)
            s1 = int(rng.integers(0, span + 1))
            group = self.members[self.member_of[f]]
            if len(group) > 1 and rng.random() < self.group_prob:
                # The same sound made differently: another file of the group, at the same relative place.
                j = int(rng.integers(len(group) - 1))  # the j-th of the others: skip the file itself
                f2 = int(group[j + (j >= self.position[f])])
                arr2 = self.arrays[f2]
                span2 = abs(arr2.shape[0] - self.crop)
                centre = round(s1 / span * span2) if span else int(rng.integers(0, span2 + 1))
            else:
                f2, arr2, span2, centre = f, arr, span, s1
            s2 = int(rng.integers(max(0, centre - shift), min(span2, centre + shift) + 1))
            for row, a, s in ((i, arr, s1), (b + i, arr2, s2)):
                crop, start, end = self._crop(a, s)
                out[row] = self._augment(self._under_bed(self._mix(crop), start, end))
                info[row] = (self.group[f], start, end)
        return out, info

    def _mix(self, x: np.ndarray) -> np.ndarray:
        """With probability ``mix_prob``, a crop of a random file underneath ``x``, in the power domain.

        Its mean log power is set ``mix_below_db`` to ``mix_below_db + 10`` dB below ``x``'s, so
        the view's own sound still dominates: a background, not a second source of equal weight.
        """
        a, rng = self.aug, self.rng
        if not a.mix_prob or rng.random() >= a.mix_prob:
            return x
        other = self.arrays[int(rng.integers(len(self.arrays)))]
        y = self._crop(other, int(rng.integers(0, abs(other.shape[0] - self.crop) + 1)))[0]
        below_nats = (a.mix_below_db + 10.0 * rng.random()) * np.log(10.0) / 10.0  # dB of power -> nats
        y = y - y.mean() + x.mean() - below_nats
        return np.logaddexp(x, y).astype(np.float32)

    def _under_bed(self, x: np.ndarray, start: int, end: int) -> np.ndarray:
        """With probability ``bed_prob``, a continuous background under the whole crop, in the power domain.

        The bed's mean power is set ``bed_below_db`` to ``bed_below_db + 14`` dB below the mean
        power of the crop's own frames (``start:end``: the sound, not the padding around a short
        one), as a sound of a field recording stands above its background; the two views of an
        example get beds of their own, so the encoder learns to give a sound the same embedding
        over any background.
        """
        a, rng = self.aug, self.rng
        if not a.bed_prob or rng.random() >= a.bed_prob:
            return x
        n = x.shape[0]
        if self.beds and rng.random() < 0.5:
            src = self.beds[int(rng.integers(len(self.beds)))]
            bed = self._crop(src, int(rng.integers(0, abs(src.shape[0] - n) + 1)))[0]
        else:
            bed = synthetic_bed(n, x.shape[1], rng)
        below_nats = (a.bed_below_db + 14.0 * rng.random()) * np.log(10.0) / 10.0  # dB of power -> nats
        level = _mean_log_power(x[start:end]) - below_nats
        bed = bed - _mean_log_power(bed) + level
        return np.logaddexp(x, bed).astype(np.float32)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield self.batch_with_files()


def _mean_log_power(x: np.ndarray) -> float:
    """The log of the mean power of log-power frames (natural log), computed without overflow."""
    return float(logsumexp(x) - np.log(x.size))


def synthetic_bed(n_frames: int, n_mels: int, rng: np.random.Generator) -> np.ndarray:
    """Log-mel frames of a random continuous background: coloured noise whose level drifts, sometimes a hum.

    A spectral slope from white to darker than brown noise with a smooth random equaliser on it;
    a level that drifts over the crop (a ramp and a slow swell, as wind and traffic rise and fall);
    frame-to-frame fluctuation that is larger in the low bands (fewer FFT bins per mel band) and
    smoothed over neighbouring frames (the STFT's windows overlap); with probability 0.3, a few
    narrow bands raised (hum, an engine, insects).

    Parameters
    ----------
    n_frames, n_mels : int
        Shape of the bed.
    rng : np.random.Generator

    Returns
    -------
    np.ndarray [shape=(n_frames, n_mels), dtype=float32]
        Natural-log power; the caller sets its level.
    """
    m = np.linspace(0.0, 1.0, n_mels, dtype=np.float32)
    shape = rng.uniform(-5.0, 0.5) * m  # nats from the lowest band to the highest
    shape += sum(rng.uniform(-1.5, 1.5) / (i + 1) * np.cos((i + 1) * np.pi * m + rng.uniform(0, np.pi))
                 for i in range(3))
    t = np.arange(n_frames, dtype=np.float32)
    period = rng.uniform(30.0, 300.0)  # frames: a swell of 0.3 to 3 s
    level = rng.uniform(-1.0, 1.0) * t / max(n_frames, 1) \
        + rng.uniform(0.0, 0.7) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    spread = rng.uniform(0.2, 0.6) * (1.0 + 1.5 * (1.0 - m))  # nats, larger where a band holds few bins
    noise = rng.standard_normal((n_frames + 2, n_mels)).astype(np.float32) * spread
    noise = (noise[:-2] + noise[1:-1] + noise[2:]) / np.sqrt(3.0)  # neighbouring frames share samples
    bed = shape[None, :] + level[:, None] + noise
    if rng.random() < 0.3:
        bands = rng.integers(0, n_mels, size=int(rng.integers(1, 4)))
        bed[:, bands] += rng.uniform(1.0, 3.0, size=len(bands)).astype(np.float32)
    return bed.astype(np.float32)
