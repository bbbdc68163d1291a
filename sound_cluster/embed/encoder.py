"""The encoder: a CNN over log-mel frames, convolutional in time, with a cluster head.

One call on a whole file's frames ``(T, n_mels)`` gives an embedding and cluster logits for
each output step, ``T' = ceil(T / time_pool)`` steps at ``frame_rate_hz / time_pool``.
Normalisation is per input (:class:`InputStandardize`), never across the batch: batch
statistics let the clustering loss's marginal term be met in training mode only (all clips then
fall into one cluster at inference). Layers are registered under the package name, so saved
``.keras`` files load wherever the classes live.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from sound_cluster.config import ModelParams
from sound_cluster.io_utils import save_keras_model

PACKAGE = "sound_cluster"
HEADS = ("logits",)  # the cluster head: a fit never keeps a pretrained one, it trains its own K


@keras.saving.register_keras_serializable(package=PACKAGE)
class InputStandardize(layers.Layer):
    """Per-input standardisation: subtract the input's mean and divide by its spread.

    In the log domain a gain is an added constant, so after this no cluster can be decided by
    loudness alone. Statistics are of each input on its own (never of the batch).
    Input and output: ``(batch, time, n_mels)``.
    """

    def __init__(self, by_std: bool = True, scale: float = 0.2, epsilon: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.by_std = bool(by_std)
        self.scale = float(scale)
        self.epsilon = float(epsilon)

    def call(self, x):
        x = x - ops.mean(x, axis=(1, 2), keepdims=True)
        if self.by_std:
            return x / (ops.std(x, axis=(1, 2), keepdims=True) + self.epsilon)
        return x * self.scale  # keeps the input's contrast: a quiet crop stays flat

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "by_std": self.by_std, "scale": self.scale, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FlattenFrequency(layers.Layer):
    """``(batch, time, freq, channels) -> (batch, time, freq * channels)``; ``freq`` must be static."""

    def call(self, x):
        s = ops.shape(x)
        return ops.reshape(x, (s[0], s[1], x.shape[2] * x.shape[3]))

    def compute_output_shape(self, input_shape):
        b, t, f, c = input_shape
        return (b, t, f * c)


def build_encoder(params: ModelParams, *, n_mels: int) -> keras.Model:
    """The encoder: ``(batch, time, n_mels)`` -> ``{"embedding": (batch, time', D), "logits": (batch, time', H)}``.

    ``H = params.head_clusters``; the run's K clusters are merged from these (:mod:`sound_cluster.embed.clusters`).

    ``time' = ceil(time / params.time_pool)``; every layer pads 'same', so any length works.
    """
    x_in = keras.Input(shape=(None, n_mels), name="log_mel")
    x = InputStandardize(by_std=params.standardize_by_std, name="standardize")(x_in)
    x = layers.Reshape((-1, n_mels, 1), name="add_channel")(x)  # (B, T, F, 1)
    for i, blk in enumerate(params.blocks):
        x = layers.Conv2D(blk.filters, tuple(blk.kernel), padding="same", name=f"conv{i}")(x)
        x = layers.Activation("gelu", name=f"gelu{i}")(x)
        x = layers.MaxPooling2D(tuple(blk.pool), padding="same", name=f"pool{i}")(x)  # (B, T/pt, F/pf, C)
    x = FlattenFrequency(name="flatten_freq")(x)  # (B, T', F' * C)
    x = layers.Conv1D(params.embedding_dim * 2, params.context_kernel, padding="same", activation="gelu",
                      name="context")(x)  # (B, T', 2D): context across neighbouring steps
    emb = layers.Dense(params.embedding_dim, name="embedding")(x)  # (B, T', D)
    normed = layers.LayerNormalization(name="emb_norm")(emb)
    outputs = {"embedding": emb, "logits": layers.Dense(params.head_clusters, name="logits")(normed)}
    return keras.Model(x_in, outputs, name="sound_encoder")


def time_geometry(encoder: keras.Model) -> tuple[int, int]:
    """Input frames per output step, and the receptive field in input frames, of the encoder's time axis."""
    pool, receptive = 1, 1
    for layer in encoder.layers:
        if isinstance(layer, (layers.Conv2D, layers.Conv1D)):
            receptive += (layer.kernel_size[0] - 1) * pool
        elif isinstance(layer, layers.MaxPooling2D):
            receptive += (layer.pool_size[0] - 1) * pool
            pool *= layer.pool_size[0]
    return pool, receptive


def save_encoder(encoder: keras.Model, path) -> None:
    """Save an encoder to ``path`` (a ``.keras`` file) atomically (:func:`sound_cluster.io_utils.save_keras_model`)."""
    save_keras_model(encoder, path)


def load_encoder(path: str) -> keras.Model:
    """Load a saved encoder (``models/embedding.keras``) in Keras safe mode."""
    return keras.saving.load_model(path, safe_mode=True, compile=False)

