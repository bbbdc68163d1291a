"""Training the encoder with ``model.fit``: the trainer model, its callbacks and the entry points.

Training follows Jansen et al. (ICASSP 2020): the loss ``mean_i H(p_i) - gamma * H(mean_i p_i)``
(:mod:`sound_cluster.embed.losses`) over crops of the folder's files; two nearby, independently
augmented crops of the same file must agree (consistency) and pick each other out of the batch
(NT-Xent).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from sound_cluster.config import ModelParams, TrainParams
from sound_cluster.embed.crops import CropSampler
from sound_cluster.embed.encoder import PACKAGE, build_encoder, load_encoder, save_encoder, time_geometry
from sound_cluster.embed.losses import entropy_terms, masked_mean_log_posterior, nt_xent, step_mask
from sound_cluster.embed.shipped import transfer_weights

log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClusterTrainer(keras.Model):
    """Trains an encoder on batches of view pairs (see :class:`sound_cluster.embed.crops.CropSampler`).

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
        self.time_pool = time_geometry(encoder)[0]
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
        self.start = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if time.monotonic() - self.start > self.max_seconds:
            log.info("stopping after epoch %d: the time budget of %.0f s is spent", epoch + 1, self.max_seconds)
            self.model.stop_training = True


def train_encoder(
    sampler,
    *,
    model: ModelParams,
    train: TrainParams,
    n_mels: int,
    steps_per_epoch: int,
    seed: int,
    init: keras.Model | None = None,
    max_seconds: float | None = None,
    checkpoint: str | None = None,
    log_dir: str | None = None,
    verbose: int = 2,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train an encoder on ``sampler``'s batches with ``model.fit``, by the settings of ``train``.

    ``train.lr_schedule="cosine"``: the learning rate falls from ``train.learning_rate`` to nothing
    along a half cosine over ``train.epochs * steps_per_epoch`` steps (a run stopped early by its
    time budget or by early stopping ends before the bottom).

    ``train.strategy="mirrored"`` builds and trains under ``tf.distribute.MirroredStrategy``: every
    local GPU (or logical CPU device) holds a copy and gets an equal share of each batch; the
    loss terms (batch marginal, contrastive negatives) are then computed within each share.

    Parameters
    ----------
    sampler : CropSampler
        Batches of view pairs (:class:`sound_cluster.embed.crops.CropSampler`).
    steps_per_epoch : int
        Batches per epoch (:meth:`TrainParams.resolved_steps_per_epoch`).
    init : keras.Model, optional
        An encoder whose weights the new one starts from (every layer whose name and shapes match;
        the cluster head is new when K differs); ``None`` starts from random weights.
    max_seconds : float, optional
        Stop at the end of the first epoch past this much training time.
    checkpoint : str, optional
        A ``.keras`` path the encoder is saved to (atomically) after every epoch, so a long run
        that is stopped keeps its last epoch.

    Returns
    -------
    encoder : keras.Model
    history : dict
        Per-epoch ``loss``, ``h_cond``, ``h_marg``, ``consistency``, ``clusters_used``.
    """
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    dist = tf.distribute.MirroredStrategy() if train.strategy == "mirrored" else None
    if dist is not None:
        log.info("training on %d replicas (%s)", dist.num_replicas_in_sync, train.strategy)
    with dist.scope() if dist is not None else contextlib.nullcontext():
        encoder = build_encoder(model, n_mels=n_mels)
        if init is not None:
            copied = transfer_weights(init, encoder)
            log.info("encoder starts from %d pretrained layers (%s)", len(copied), ", ".join(copied))
        trainer = ClusterTrainer(encoder, gamma=train.gamma, consistency_weight=train.consistency_weight,
                                 contrastive_weight=train.contrastive_weight, temperature=train.temperature)
        rate = (keras.optimizers.schedules.CosineDecay(train.learning_rate, decay_steps=train.epochs * steps_per_epoch)
                if train.lr_schedule == "cosine" else train.learning_rate)
        trainer.compile(optimizer=keras.optimizers.Adam(rate))
    on_epoch_end = (lambda epoch, logs: save_encoder(encoder, checkpoint)) if checkpoint else None
    history = run_training(trainer, sampler, head_clusters=model.head_clusters,
                           replicas=dist.num_replicas_in_sync if dist is not None else 1, epochs=train.epochs,
                           steps_per_epoch=steps_per_epoch, patience=train.patience, min_delta=train.min_delta,
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
    if not trainer.optimizer.built:  # built inside the first step, its variables would make TF trace that step twice
        with trainer.distribute_strategy.scope():
            trainer.optimizer.build(trainer.trainable_variables)
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
    beds: Sequence[str | Path] = (),
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
    groups, group_prob, weights, beds : optional
        Files that are the same sound made differently, how files are drawn, and background
        recordings' log-mel arrays (see :class:`sound_cluster.embed.crops.CropSampler`).

    Returns
    -------
    See :func:`train_encoder`.
    """
    sampler = CropSampler([p for p, _ in frame_files], crop_frames=train.crop_frames, batch_size=train.batch_size,
                          augment=train.augment, seed=seed, length_power=train.length_power, groups=groups,
                          group_prob=group_prob, weights=weights, beds=beds)
    return train_encoder(
        sampler, model=model, train=train, n_mels=n_mels,
        steps_per_epoch=train.resolved_steps_per_epoch(sum(n for _, n in frame_files)), seed=seed,
        init=load_encoder(init) if init is not None else None, max_seconds=max_seconds, checkpoint=checkpoint,
        log_dir=log_dir, verbose=verbose)

