"""Running a trained encoder over whole files of any length, in bounded memory."""

from __future__ import annotations

import functools

import keras
import numpy as np

from sound_cluster.embed.encoder import time_geometry


class Posteriors:
    """Runs an encoder over whole files in windows, without retracing for each length.

    Memory is set by ``window_steps``, not by the file's length: the input is standardised with
    the whole file's statistics (as :class:`InputStandardize` does in one call), then the rest of
    the encoder runs on overlapping windows aligned to its pooling grid; each window keeps only
    the steps whose receptive field lies inside it, so the result equals one call on the whole
    file within float tolerance.

    Parameters
    ----------
    encoder : keras.Model
        Built by :func:`build_encoder` (its ``standardize`` and ``add_channel`` layers are used).
    window_steps : int
        Output steps computed per call (2048: 82 s at 25 steps per second).
    """

    def __init__(self, encoder: keras.Model, *, window_steps: int = 2048) -> None:
        import tensorflow as tf

        self.encoder = encoder
        std = encoder.get_layer("standardize")
        self._by_std, self._scale, self._epsilon = std.by_std, std.scale, std.epsilon
        body = keras.Model(encoder.get_layer("add_channel").input, encoder.output)  # after standardising
        self.time_pool, receptive = time_geometry(encoder)
        self.margin_frames = -(-receptive // self.time_pool) * self.time_pool
        self.window_frames = int(window_steps) * self.time_pool
        n_mels = encoder.input_shape[-1]

        @tf.function(input_signature=[tf.TensorSpec((1, None, n_mels), tf.float32)], reduce_retracing=True)
        def _run(x):
            out = body(x, training=False)
            return out["embedding"][0], tf.nn.softmax(out["logits"][0], axis=-1)

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
        n = frames.shape[0]
        offset, factor = self._standardise(frames)
        tp, m = self.time_pool, self.margin_frames
        embs, posts = [], []
        for a in range(0, n, self.window_frames):
            b = min(n, a + self.window_frames)
            lo, hi = max(0, a - m), min(n, b + m)  # lo stays on the pooling grid: a and m are multiples of tp
            x = (np.asarray(frames[lo:hi], dtype=np.float32) - np.float32(offset)) * np.float32(factor)
            emb, post = self._run(x[None])
            first = (a - lo) // tp
            keep = slice(first, first + -(-(b - a) // tp))
            embs.append(emb.numpy()[keep])
            posts.append(post.numpy()[keep])
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

