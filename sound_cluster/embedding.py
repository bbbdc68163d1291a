"""Embed and categorize: a CNN over log-mel frames, trained with the entropy clustering loss.

The encoder is convolutional in time: one call on a whole file's frames ``(T, n_mels)`` gives
an embedding and cluster logits for each output step, ``T' = ceil(T / time_pool)`` steps at
``frame_rate_hz / time_pool``. Training follows Jansen et al. (ICASSP 2020): the loss
``mean_i H(p_i) - gamma * H(mean_i p_i)`` wants each example confident and the batch to use
every cluster; two nearby, independently augmented crops of the same file must agree.

Normalisation is per input (:class:`InputStandardize`), never across the batch: batch
statistics let the marginal term be met in training mode only (all clips then fall into one
cluster at inference).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Sequence

import keras
import numpy as np
from keras import layers, ops

from .config import ModelParams, TrainParams

log = logging.getLogger(__name__)

PACKAGE = "sound_cluster"
HEADS = ("logits", "logits_over")  # the cluster heads: a fit never keeps a pretrained one, it trains its own K


# ----------------------------------------------------------------------------------------------
# Loss


def entropy_terms(logits) -> tuple[Any, Any]:
    """Mean per-example entropy and entropy of the mean posterior, in nats, from logits.

    Parameters
    ----------
    logits : tensor [shape=(..., K)]
        Every leading index is one example.

    Returns
    -------
    h_cond : scalar tensor
        ``mean_i H(p_i)``.
    h_marg : scalar tensor
        ``H(mean_i p_i)``; ``log(mean_i p_i)`` is computed as a log-sum-exp, so it stays finite
        even where a cluster gets no mass at all.
    """
    k = ops.shape(logits)[-1]
    logp = ops.log_softmax(ops.reshape(logits, (-1, k)), axis=-1)  # (N, K)
    p = ops.exp(logp)
    h_cond = -ops.mean(ops.sum(p * logp, axis=-1))
    n = ops.cast(ops.shape(logp)[0], logp.dtype)
    log_pbar = ops.logsumexp(logp, axis=0) - ops.log(n)  # (K,)
    h_marg = -ops.sum(ops.exp(log_pbar) * log_pbar)
    return h_cond, h_marg


@keras.saving.register_keras_serializable(package=PACKAGE)
class EntropyClusteringLoss(keras.losses.Loss):
    """``mean_i H(p_i) - gamma * H(mean_i p_i)`` with ``p_i = softmax(logits_i)``.

    ``y_true`` is ignored (the loss needs no labels). ``y_pred`` holds logits of shape
    ``(..., K)``; all leading positions are examples of one batch. Closed forms: uniform
    posteriors give ``(1 - gamma) log K``; confident posteriors spread evenly over the K
    clusters give ``-gamma log K``, the minimum.
    """

    def __init__(self, gamma: float = 1.0, name: str = "entropy_clustering", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        h_cond, h_marg = entropy_terms(y_pred)
        return h_cond - self.gamma * h_marg

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "gamma": self.gamma}


def nt_xent(z, files, *, temperature: float):
    """SimCLR's NT-Xent loss for view pairs, in nats.

    Parameters
    ----------
    z : tensor [shape=(2B, D)]
        Rows ``i`` and ``B + i`` are the two views of one example.
    files : tensor [shape=(2B,)]
        Each row's source file, or group of files; rows of one file or group other than the
        partner are not negatives.
    temperature : float
        Scale of the cosine similarities.
    """
    n = ops.shape(z)[0]
    b = n // 2
    z = z / (ops.norm(z, axis=-1, keepdims=True) + 1e-6)
    sim = ops.matmul(z, ops.transpose(z)) / temperature  # (2B, 2B)
    idx = ops.arange(n)
    partner = ops.concatenate([idx[b:], idx[:b]])
    files = ops.reshape(files, (-1,))
    same_file = ops.equal(files[:, None], files[None, :])
    is_partner = ops.equal(idx[None, :], partner[:, None])
    excluded = ops.logical_and(same_file, ops.logical_not(is_partner))  # self and other crops of the file
    sim = ops.where(excluded, ops.full_like(sim, -1e9), sim)
    pos = ops.take_along_axis(sim, partner[:, None], axis=1)[:, 0]
    return ops.mean(ops.logsumexp(sim, axis=1) - pos)


# ----------------------------------------------------------------------------------------------
# Encoder


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

    ``H = params.head_clusters``; the run's K clusters are merged from these (:mod:`sound_cluster.clusters`).

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
    if params.overcluster:
        # IIC's over-clustering: a finer partition trained alongside shapes the embedding; only
        # the K-way head assigns clusters.
        outputs["logits_over"] = layers.Dense(params.overcluster * params.head_clusters, name="logits_over")(normed)
    return keras.Model(x_in, outputs, name="sound_encoder")


# ----------------------------------------------------------------------------------------------
# Training


def step_mask(info, *, steps, time_pool: int):
    """Which output steps of each crop hold its file's own audio.

    Parameters
    ----------
    info : tensor [shape=(N, 3)]
        Per crop: group, first and one-past-last frame of the file's audio (see
        :meth:`sound_cluster.crops.CropSampler.batch_with_files`).
    steps : int
        Output steps per crop, ``ceil(crop_frames / time_pool)``.
    time_pool : int
        Input frames per output step.

    Returns
    -------
    tensor [shape=(N, steps), dtype=float32]
        1 where the step's frames overlap the file's audio, else 0.
    """
    from .crops import END, START

    first = ops.arange(steps) * time_pool  # (T',) first frame of each step
    start = ops.cast(info[:, START], first.dtype)[:, None]
    end = ops.cast(info[:, END], first.dtype)[:, None]
    inside = ops.logical_and(first[None, :] < end, first[None, :] + time_pool > start)
    return ops.cast(inside, "float32")


def masked_mean_log_posterior(logp, mask):
    """Log of each crop's mean posterior over its own steps.

    Parameters
    ----------
    logp : tensor [shape=(N, T', K)]
        Log posteriors of every step.
    mask : tensor [shape=(N, T')]
        :func:`step_mask`: 1 for the steps that hold the crop's file.

    Returns
    -------
    tensor [shape=(N, K)]
        ``log mean_t p_t`` over the masked steps; already normalised.
    """
    log_mask = ops.where(mask > 0, ops.zeros_like(mask), ops.full_like(mask, -1e9))[:, :, None]
    return ops.logsumexp(logp + ops.cast(log_mask, logp.dtype), axis=1) \
        - ops.log(ops.cast(ops.sum(mask, axis=1, keepdims=True), logp.dtype))


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClusterTrainer(keras.Model):
    """Trains an encoder on batches of view pairs (see :class:`sound_cluster.crops.CropSampler`).

    Input ``(2B, T, n_mels)``: rows ``i`` and ``B + i`` are two views of one example; the target
    ``y`` ``(2B, 3)`` gives each row's group and the frames that hold its file's audio (a crop's
    posterior and embedding are means over those steps only, as a file's are over its own steps).
    Loss: the clustering loss over the crops of both views, plus ``consistency_weight`` times the
    cross-entropy between the two views' mean posteriors (each view the other's target), plus
    ``contrastive_weight`` times an NT-Xent term on the views' mean embeddings (SimCLR: each view
    must pick its partner out of the batch at ``temperature``; other crops of the same group are
    left out of the negatives).
    """

    def __init__(self, encoder: keras.Model, gamma: float = 1.0, consistency_weight: float = 1.0,
                 contrastive_weight: float = 0.0, temperature: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder
        self.gamma = float(gamma)
        self.consistency_weight = float(consistency_weight)
        self.contrastive_weight = float(contrastive_weight)
        self.temperature = float(temperature)
        self.time_pool = _time_geometry(encoder)[0]
        self.trackers = {n: keras.metrics.Mean(name=n) for n in ("h_cond", "h_marg", "consistency", "contrastive")}

    def call(self, x, training=False):
        return self.encoder(x, training=training)

    def _head_terms(self, logits, mask):
        """Entropy terms and the two views' consistency for one head's logits ``(2B, T', K)``."""
        b = ops.shape(logits)[0] // 2
        logp = ops.log_softmax(logits, axis=-1)  # (2B, T', K)
        # Each crop is one example; its posterior is the mean over its own steps, as a file's is at
        # inference. log q is already normalised, so it serves as logits for the entropy terms.
        log_q = masked_mean_log_posterior(logp, mask)  # (2B, K)
        h_cond, h_marg = entropy_terms(log_q)
        qa, qb = ops.exp(log_q[:b]), ops.exp(log_q[b:])
        la, lb = log_q[:b], log_q[b:]
        # Each view is the other's target: the two crops of one file must fall in one cluster.
        consistency = -0.5 * ops.mean(ops.sum(ops.stop_gradient(qb) * la + ops.stop_gradient(qa) * lb, axis=-1))
        return h_cond, h_marg, consistency

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        emb = y_pred["embedding"]
        steps = ops.shape(emb)[1]
        if y is None:  # no information: every step counts, every row is its own group
            n = ops.shape(emb)[0]
            y = ops.stack([ops.cast(ops.arange(n), "int32"), ops.zeros((n,), "int32"),
                           ops.cast(ops.full((n,), steps * self.time_pool), "int32")], axis=1)
        mask = step_mask(y, steps=steps, time_pool=self.time_pool)  # (2B, T')
        h_cond, h_marg, consistency = self._head_terms(y_pred["logits"], mask)
        loss = h_cond - self.gamma * h_marg + self.consistency_weight * consistency
        if "logits_over" in y_pred:
            hc, hm, cons = self._head_terms(y_pred["logits_over"], mask)
            loss = loss + hc - self.gamma * hm + self.consistency_weight * cons
        contrastive = ops.zeros(())
        if self.contrastive_weight > 0:
            m = ops.cast(mask, emb.dtype)[:, :, None]
            pooled = ops.sum(emb * m, axis=1) / ops.sum(m, axis=1)  # (2B, D): mean over the file's own steps
            contrastive = nt_xent(pooled, y[:, 0], temperature=self.temperature)
            loss = loss + self.contrastive_weight * contrastive
        self.trackers["h_cond"].update_state(h_cond)
        self.trackers["h_marg"].update_state(h_marg)
        self.trackers["consistency"].update_state(consistency)
        self.trackers["contrastive"].update_state(contrastive)
        return loss

    @property
    def metrics(self):
        return [*super().metrics, *self.trackers.values()]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "encoder": keras.saving.serialize_keras_object(self.encoder),
                "gamma": self.gamma, "consistency_weight": self.consistency_weight,
                "contrastive_weight": self.contrastive_weight, "temperature": self.temperature}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ClusterTrainer":
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


class ClusterUsage(keras.callbacks.Callback):
    """At each epoch end, assign a fixed probe batch in inference mode and log cluster usage.

    Adds ``clusters_used`` (clusters that are the argmax of at least one probe crop) and
    ``probe_h_marg`` to the epoch's logs, so they reach the history, TensorBoard and the log.
    """

    def __init__(self, probe: np.ndarray, n_clusters: int) -> None:
        super().__init__()
        self.probe = probe
        self.n_clusters = n_clusters
        self.history: list[list[int]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logits = self.model.encoder(self.probe, training=False)["logits"]
        post = ops.convert_to_numpy(ops.mean(ops.softmax(logits, axis=-1), axis=1))  # (N, K)
        counts = np.bincount(post.argmax(axis=1), minlength=self.n_clusters)
        self.history.append(counts.tolist())
        pbar = post.mean(axis=0)
        h = float(-(pbar * np.log(np.maximum(pbar, 1e-12))).sum())
        if logs is not None:
            logs["clusters_used"] = int((counts > 0).sum())
            logs["probe_h_marg"] = h
        # The one line per epoch (Keras' own output is off); the usage histogram goes to the history.
        log.info("epoch %d%s: loss %.4f, H(p_i) %.3f, H(mean p) %.3f, clusters used %d/%d",
                 epoch + 1, f"/{self.params['epochs']}" if self.params.get("epochs") else "",
                 (logs or {}).get("loss", float("nan")), (logs or {}).get("h_cond", float("nan")),
                 (logs or {}).get("h_marg", float("nan")), int((counts > 0).sum()), self.n_clusters)


def replica_order(batch_size: int, replicas: int) -> np.ndarray:
    """Row order that gives every replica whole view pairs.

    A distributed batch is split into ``replicas`` contiguous shares, and the loss pairs row
    ``i`` with row ``n/2 + i`` of its share. Rows ``i`` and ``B + i`` of the sampler's batch
    (``B = batch_size``) are two views of one example, so each share must hold a block of first
    views followed by the same block of second views. One replica: the identity.
    """
    per = batch_size // replicas
    idx = np.arange(batch_size).reshape(replicas, per)
    return np.concatenate([np.concatenate([blk, blk + batch_size]) for blk in idx])


class TimeBudget(keras.callbacks.Callback):
    """Stops training at the end of the first epoch that ends past ``max_seconds`` of training."""

    def __init__(self, max_seconds: float) -> None:
        super().__init__()
        self.max_seconds = float(max_seconds)
        self.start = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        import time

        self.start = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        import time

        if time.monotonic() - self.start > self.max_seconds:
            log.info("stopping after epoch %d: the time budget of %.0f s is spent", epoch + 1, self.max_seconds)
            self.model.stop_training = True


# ----------------------------------------------------------------------------------------------
# Inference


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
        self.time_pool, receptive = _time_geometry(encoder)
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


def _time_geometry(encoder: keras.Model) -> tuple[int, int]:
    """Input frames per output step, and the receptive field in input frames, of the encoder's time axis."""
    pool, receptive = 1, 1
    for layer in encoder.layers:
        if isinstance(layer, (layers.Conv2D, layers.Conv1D)):
            receptive += (layer.kernel_size[0] - 1) * pool
        elif isinstance(layer, layers.MaxPooling2D):
            receptive += (layer.pool_size[0] - 1) * pool
            pool *= layer.pool_size[0]
    return pool, receptive


def train_encoder(
    sampler,
    *,
    model: ModelParams,
    n_mels: int,
    gamma: float,
    consistency_weight: float,
    learning_rate: float,
    contrastive_weight: float = 0.0,
    temperature: float = 0.1,
    epochs: int,
    steps_per_epoch: int,
    patience: int,
    min_delta: float,
    seed: int,
    log_dir: str | None = None,
    verbose: int = 2,
    init: keras.Model | None = None,
    max_seconds: float | None = None,
    checkpoint: str | None = None,
    strategy: str = "default",
    lr_schedule: str = "constant",
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train an encoder on ``sampler``'s batches with ``model.fit``.

    ``lr_schedule="cosine"``: the learning rate falls from ``learning_rate`` to nothing along a
    half cosine over ``epochs * steps_per_epoch`` steps (a run stopped early by its time budget
    or by early stopping ends before the bottom).

    ``strategy="mirrored"`` builds and trains under ``tf.distribute.MirroredStrategy``: every
    local GPU (or logical CPU device) holds a copy and gets an equal share of each batch; the
    loss terms (batch marginal, contrastive negatives) are then computed within each share.

    ``init``: an encoder whose weights the new one starts from (every layer whose name and
    shapes match; the cluster head is new when K differs); ``None`` starts from random weights.
    ``max_seconds``: stop at the end of the first epoch past this much training time.
    ``checkpoint``: a ``.keras`` path the encoder is saved to (atomically) after every epoch,
    so a long run that is stopped keeps its last epoch.

    Returns
    -------
    encoder : keras.Model
    history : dict
        Per-epoch ``loss``, ``h_cond``, ``h_marg``, ``consistency``, ``clusters_used``.
    """
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    import contextlib

    dist = tf.distribute.MirroredStrategy() if strategy == "mirrored" else None
    if dist is not None:
        log.info("training on %d replicas (%s)", dist.num_replicas_in_sync, strategy)
    with dist.scope() if dist is not None else contextlib.nullcontext():
        encoder = build_encoder(model, n_mels=n_mels)
        if init is not None:
            from .pretrained import transfer_weights

            copied = transfer_weights(init, encoder)
            log.info("encoder starts from %d pretrained layers (%s)", len(copied), ", ".join(copied))
        trainer = ClusterTrainer(encoder, gamma=gamma, consistency_weight=consistency_weight,
                                 contrastive_weight=contrastive_weight, temperature=temperature)
        rate = (keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=epochs * steps_per_epoch)
                if lr_schedule == "cosine" else learning_rate)
        trainer.compile(optimizer=keras.optimizers.Adam(rate))
    on_epoch_end = (lambda epoch, logs: save_encoder(encoder, checkpoint)) if checkpoint else None
    history = run_training(trainer, sampler, head_clusters=model.head_clusters,
                           replicas=dist.num_replicas_in_sync if dist is not None else 1, epochs=epochs,
                           steps_per_epoch=steps_per_epoch, patience=patience, min_delta=min_delta,
                           max_seconds=max_seconds, on_epoch_end=on_epoch_end, log_dir=log_dir, verbose=verbose)
    return encoder, history


def run_training(trainer: keras.Model, sampler, *, head_clusters: int, replicas: int = 1, epochs: int,
                 steps_per_epoch: int, patience: int, min_delta: float, max_seconds: float | None = None,
                 on_epoch_end=None, log_dir: str | None = None, verbose: int = 2,
                 usage: bool = True) -> dict[str, list[float]]:
    """``trainer.fit`` on ``sampler``'s batches, with the usage log, early stopping and time budget.

    ``replicas``: the batch is reordered so that each of that many contiguous shares holds whole
    view pairs (see :func:`replica_order`). ``on_epoch_end(epoch, logs)``, if given, is called
    after every epoch (e.g. to save a checkpoint). ``usage``: log the clusters a probe batch uses
    after every epoch (:class:`ClusterUsage`; the trainer must have an ``encoder``).

    Returns
    -------
    dict
        Per-epoch ``loss``, ``h_cond``, ``h_marg``, ``consistency``, ``contrastive``, ``clusters_used``.
    """
    import tensorflow as tf

    shape = (2 * sampler.batch_size, sampler.crop, sampler.n_mels)
    if sampler.batch_size % replicas:
        raise ValueError(f"train.batch_size={sampler.batch_size} must be a multiple of the {replicas} replicas")

    def batches():
        for x, files in sampler:
            order = replica_order(sampler.batch_size, replicas)
            yield x[order], files[order]

    ds = tf.data.Dataset.from_generator(batches, output_signature=(
        tf.TensorSpec(shape, tf.float32), tf.TensorSpec((shape[0], 3), tf.int32)))
    ds = ds.prefetch(2)
    probe = np.concatenate([sampler.batch()[: sampler.batch_size] for _ in range(4)])
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.EarlyStopping(monitor="loss", patience=patience, min_delta=min_delta),
    ]
    if usage:
        callbacks.insert(0, ClusterUsage(probe, head_clusters))
    if max_seconds is not None:
        callbacks.append(TimeBudget(max_seconds))
    if on_epoch_end is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end))
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False))
    import warnings

    with warnings.catch_warnings():  # Keras warns that shuffle=True does nothing on a generator's dataset
        warnings.filterwarnings("ignore", message=".*shuffle.*")
        hist = trainer.fit(ds, epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                           verbose=verbose)
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


def fit_encoder(
    frame_files: Sequence[tuple[str, int]],
    *,
    model: ModelParams,
    train: TrainParams,
    n_mels: int,
    seed: int,
    log_dir: str | None = None,
    verbose: int = 2,
    init: str | None = None,
    max_seconds: float | None = None,
    checkpoint: str | None = None,
    groups: Sequence[int] | None = None,
    group_prob: float = 1.0,
    weights: Sequence[float] | None = None,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train an encoder on cached log-mel files with the settings of ``train``.

    Parameters
    ----------
    frame_files : sequence of (path, n_frames)
        The ``.npy`` arrays (n_frames, n_mels) of the feature cache and their lengths.
    init : str, optional
        A ``.keras`` encoder to start from (see :func:`train_encoder`); ``None``: random weights.
    max_seconds : float, optional
        Training time budget (see :func:`train_encoder`).
    checkpoint : str, optional
        Where to save the encoder after every epoch (see :func:`train_encoder`).
    groups, group_prob, weights : optional
        Files that are the same sound made differently, and how files are drawn (see
        :class:`sound_cluster.crops.CropSampler`).

    Returns
    -------
    See :func:`train_encoder`.
    """
    from .crops import CropSampler

    if init is not None and train.backbone == "frozen":
        # Nothing of the encoder trains: the run's clusters and their head come after (sound_cluster.head).
        from .head import pretrained_backbone

        return pretrained_backbone(load_encoder(init), model=model, n_mels=n_mels), {}
    sampler = CropSampler([p for p, _ in frame_files], crop_frames=train.crop_frames, batch_size=train.batch_size,
                          augment=train.augment, seed=seed, length_power=train.length_power, groups=groups,
                          group_prob=group_prob, weights=weights)
    return train_encoder(
        sampler, model=model, n_mels=n_mels, gamma=train.gamma, consistency_weight=train.consistency_weight,
        contrastive_weight=train.contrastive_weight, temperature=train.temperature,
        learning_rate=train.learning_rate, epochs=train.epochs,
        steps_per_epoch=train.resolved_steps_per_epoch(sum(n for _, n in frame_files)), patience=train.patience,
        min_delta=train.min_delta, seed=seed, log_dir=log_dir, verbose=verbose,
        init=load_encoder(init) if init is not None else None, max_seconds=max_seconds, checkpoint=checkpoint,
        strategy=train.strategy, lr_schedule=train.lr_schedule)


def save_encoder(encoder: keras.Model, path) -> None:
    """Save an encoder to ``path`` (a ``.keras`` file) atomically (:func:`sound_cluster.io_utils.save_keras_model`)."""
    from .io_utils import save_keras_model

    save_keras_model(encoder, path)


def load_encoder(path: str) -> keras.Model:
    """Load a saved encoder (``models/embedding.keras``) in Keras safe mode."""
    return keras.saving.load_model(path, safe_mode=True, compile=False)
