"""Running a trained encoder over whole files of any length, in bounded memory."""

from __future__ import annotations

import functools

import keras
import numpy as np

from sound_cluster.embed.encoder import time_geometry


def window_plan(n_frames: int, *, window: int, margin: int, time_pool: int) -> list[tuple[int, int, int, int]]:
    """Where the encoder runs over a file of ``n_frames``: windows of one input length, so TensorFlow meets a handful
    of shapes whatever the files' lengths (it keeps what it builds for every input shape it meets: about 0.85 MB
    each, up to 1,024 shapes per thread, `scripts/probe_inference_memory.py`).

    A file of at most ``window`` frames runs whole. A longer one runs in windows of exactly ``window`` frames, the
    last one ending at the file's end (``window`` to ``window + time_pool - 1`` frames, starting on the pooling
    grid); each window keeps only the steps whose receptive field lies inside it or reaches a real edge of the file.

    Parameters
    ----------
    n_frames : int
    window : int
        Input frames per window, a multiple of ``time_pool`` greater than ``2 * margin``.
    margin : int
        Frames of context each side of a kept step (the receptive field's reach rounded up to the pooling grid).
    time_pool : int

    Returns
    -------
    list of (int, int, int, int)
        Per window: its input frames ``[lo, hi)`` and the frames ``[a, b)`` whose steps it gives; the ``[a, b)``
        tile ``[0, n_frames)`` in order, each ``a`` on the pooling grid.
    """
    if window <= 2 * margin or window % time_pool or margin % time_pool:
        raise ValueError(f"window {window} must be a multiple of time_pool {time_pool} above twice the margin {margin}")
    out, lo, a = [], 0, 0
    while lo + window < n_frames:
        b = lo + window - margin
        out.append((lo, lo + window, a, b))
        a, lo = b, b - margin
    start = max(0, (n_frames - window) // time_pool * time_pool)  # <= lo: its kept steps see a full margin
    out.append((start, n_frames, a, n_frames))
    return out


WINDOW_BATCH = 8  # windows per call of the encoder


def _batches(plan: list[tuple[int, int, int, int]], *, size: int) -> list[list[tuple[int, int, int, int]]]:
    """The plan's windows in order, in runs of at most ``size`` windows of one input length."""
    out: list[list[tuple[int, int, int, int]]] = []
    for w in plan:
        if out and len(out[-1]) < size and out[-1][0][1] - out[-1][0][0] == w[1] - w[0]:
            out[-1].append(w)
        else:
            out.append([w])
    return out


class Posteriors:
    """Runs an encoder over whole files in windows, without retracing for each length.

    Memory is set by ``window_steps``, not by the file's length, nor by how many lengths the files have: the
    input is standardised with the whole file's statistics (as :class:`InputStandardize` does in one call), then
    the rest of the encoder runs on overlapping windows of one length (:func:`window_plan`) aligned to its
    pooling grid; each window keeps only the steps whose receptive field lies inside it, so the result equals
    one call on the whole file within float tolerance.

    Parameters
    ----------
    encoder : keras.Model
        Built by :func:`build_encoder` (its ``standardize`` and ``add_channel`` layers are used).
    window_steps : int
        Output steps per window's input (256: 10.24 s at 25 steps per second); shorter files run whole.
    """

    def __init__(self, encoder: keras.Model, *, window_steps: int = 256) -> None:
        import tensorflow as tf

        self.encoder = encoder
        std = encoder.get_layer("standardize")
        self._by_std, self._scale, self._epsilon = std.by_std, std.scale, std.epsilon
        body = keras.Model(encoder.get_layer("add_channel").input, encoder.output)  # after standardising
        self.time_pool, receptive = time_geometry(encoder)
        self.margin_frames = -(-receptive // self.time_pool) * self.time_pool
        self.window_frames = max(int(window_steps), 2 * self.margin_frames // self.time_pool + 1) * self.time_pool
        n_mels = encoder.input_shape[-1]

        @tf.function(input_signature=[tf.TensorSpec((None, None, n_mels), tf.float32)], reduce_retracing=True)
        def _run(x):
            out = body(x, training=False)
            return out["embedding"], tf.nn.softmax(out["logits"], axis=-1)

        self._run = _run

    def _standardise(self, frames: np.ndarray) -> tuple[float, float]:
        """Offset and factor of :class:`InputStandardize` for the whole input, read in blocks (float64)."""
        n = frames.shape[0] * frames.shape[1]
        total = total_sq = 0.0
        for a in range(0, frames.shape[0], 65536):
            block = np.asarray(frames[a:a + 65536], dtype=np.float64)
            total += float(block.sum())
            total_sq += float(np.square(block).sum())
        mean = total / n
        if not self._by_std:
            return mean, self._scale
        std = np.sqrt(max(total_sq / n - mean * mean, 0.0))
        return mean, 1.0 / (std + self._epsilon)

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and posteriors of one file.

        Parameters
        ----------
        frames : np.ndarray [shape=(n_frames, n_mels)]
            May be memory-mapped: it is read one window at a time.

        Returns
        -------
        embeddings : np.ndarray [shape=(n_steps, embedding_dim), dtype=float32]
        posteriors : np.ndarray [shape=(n_steps, head clusters), dtype=float32]
            Rows sum to 1; ``n_steps = ceil(n_frames / time_pool)``.
        """
        offset, factor = self._standardise(frames)
        tp, plan = self.time_pool, window_plan(frames.shape[0], window=self.window_frames,
                                               margin=self.margin_frames, time_pool=self.time_pool)
        embs, posts = [], []
        # windows of one length run together, a few at a time (a call per window cost more than the windows' own
        # work on one-minute files): a handful of batch shapes, and at most WINDOW_BATCH windows in memory
        for group in _batches(plan, size=WINDOW_BATCH):
            x = np.stack([(np.asarray(frames[lo:hi], dtype=np.float32) - np.float32(offset)) * np.float32(factor)
                          for lo, hi, _, _ in group])
            emb, post = (t.numpy() for t in self._run(x))
            for row, (lo, _, a, b) in enumerate(group):
                keep = slice((a - lo) // tp, (a - lo) // tp + -(-(b - a) // tp))
                embs.append(emb[row, keep])
                posts.append(post[row, keep])
        return np.concatenate(embs), np.concatenate(posts)

    def from_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Posteriors of steps whose embeddings are known (the first output of :meth:`__call__`).

        Parameters
        ----------
        embeddings : np.ndarray [shape=(n_steps, embedding_dim)]

        Returns
        -------
        posteriors : np.ndarray [shape=(n_steps, head clusters), dtype=float32]
            As :meth:`__call__` gives them for the file, within float tolerance.
        """
        return self._head(np.asarray(embeddings, dtype=np.float32)).numpy()

    @functools.cached_property
    def _head(self):
        """The cluster head alone, from step embeddings, built on first use (``task=apply`` never needs it)."""
        import tensorflow as tf

        tail = keras.Model(self.encoder.get_layer("emb_norm").input, self.encoder.get_layer("logits").output)
        dim = int(self.encoder.get_layer("emb_norm").input.shape[-1])

        @tf.function(input_signature=[tf.TensorSpec((None, dim), tf.float32)])
        def head(e):
            return tf.nn.softmax(tail(e[None], training=False)[0], axis=-1)

        return head

