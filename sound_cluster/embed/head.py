"""The run's clusters and the cluster head that gives every step a posterior over them.

After the encoder is trained (``model.init=scratch``, or ``train.backbone=tuned``) or taken as it
is (a pretrained encoder with ``train.backbone=frozen``, the default), every file is embedded
once: its clip embedding (the mean of its step embeddings) goes to Ward's hierarchy
(:func:`sound_cluster.embed.clusters.cluster_clips`), which gives each file its cluster, and its step
embeddings train a new head of K clusters to give every crop of a file that file's cluster
(cross-entropy of the crop's mean posterior: a self-labelling pass, as in SCAN). Posteriors,
trees and clusters.csv then follow one set of clusters, and ``task=apply`` uses the head on new
files. The step embeddings are kept, so the run's posteriors come from them and the head alone
(:meth:`sound_cluster.embed.inference.Posteriors.from_embeddings`), not from a second pass of the encoder.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import keras
import numpy as np
from keras import layers, ops

from sound_cluster.config import AugmentParams, ModelParams, TrainParams
from sound_cluster.embed.clusters import ClipClusters, Hierarchy, clusters_at, ward_hierarchy
from sound_cluster.embed.crops import CropSampler
from sound_cluster.embed.encoder import HEADS, PACKAGE, build_encoder, time_geometry
from sound_cluster.embed.inference import Posteriors
from sound_cluster.embed.losses import masked_mean_log_posterior, step_mask
from sound_cluster.embed.shipped import transfer_weights
from sound_cluster.embed.step_cache import StepCache
from sound_cluster.embed.step_store import StepStore
from sound_cluster.embed.training import run_training

log = logging.getLogger(__name__)

HEAD_INPUT = "emb_norm"  # the layer whose output the cluster head reads


def clip_inputs(encoder: keras.Model, frames: Iterable[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each file's clip embedding and step embeddings, in one pass of the encoder.

    Parameters
    ----------
    encoder : keras.Model
        Built by :func:`sound_cluster.embed.encoder.build_encoder`.
    frames : iterable of np.ndarray [shape=(n_frames, n_mels)]
        One log-mel array per file (may be memory-mapped; a generator keeps one file open at a time).

    Returns
    -------
    clip_embeddings : np.ndarray [shape=(n_files, embedding_dim)]
        The mean of each file's step embeddings.
    steps : list of np.ndarray [shape=(n_steps, embedding_dim), dtype=float32]
        Each file's step embeddings (the encoder's ``embedding`` output); held in memory, 6.4 kB per
        second of audio at 25 steps per second and 64 dimensions.
    """
    run = Posteriors(encoder)
    steps = [run(f)[0] for f in frames]
    return _clip_embeddings(steps), steps


def embed_files(encoder: keras.Model, frames_paths: Sequence[Path], *, cache: StepCache | None = None,
                budget_bytes: float | None = None) -> tuple[np.ndarray, StepStore]:
    """:func:`clip_inputs` of the files whose features lie at ``frames_paths``, through a step cache.

    A file whose step embeddings ``cache`` holds is not run through the encoder; every other file's are
    stored there as they are made, so a run stopped in the middle and started again embeds only the rest.

    Parameters
    ----------
    encoder : keras.Model
    frames_paths : sequence of Path
        Each file's log-mel ``.npy`` (the feature cache's entry, memory-mapped while it is embedded).
    cache : StepCache, optional
        Built for ``encoder``.
    budget_bytes : float, optional
        The most bytes of step embeddings held in memory (``executor.steps_in_memory_mb``); beyond it, the
        files whose entries ``cache`` holds are read from there when needed. None: all in memory.

    Returns
    -------
    clip_embeddings : np.ndarray [shape=(n_files, embedding_dim)]
    steps : StepStore
        Each file's step embeddings (arrays, or rows read from the step cache when asked for).
    """
    run = Posteriors(encoder)
    store = StepStore(budget_bytes=budget_bytes if budget_bytes is not None and cache is not None else math.inf)
    clips, hits = [], 0
    for p in frames_paths:
        emb = cache.get(p) if cache is not None else None
        if emb is None:
            emb = run(np.load(p, mmap_mode="r", allow_pickle=False))[0]
            stored = cache is not None and cache.put(p, emb)
        else:
            hits, stored = hits + 1, True
        clips.append(emb.mean(axis=0))
        store.add(emb, stored=cache.path(p) if stored else None)
    if cache is not None:
        log.info("step embeddings: %d of %d files read from the step cache; %s", hits, len(store), store.describe())
    store.warn_over_budget()
    return np.array(clips), store


def _clip_embeddings(steps: Sequence[np.ndarray]) -> np.ndarray:
    """Each file's clip embedding: the mean of its step embeddings."""
    return np.array([emb.mean(axis=0) for emb in steps])


@keras.saving.register_keras_serializable(package=PACKAGE)
class LabelTrainer(keras.Model):
    """Trains a cluster head to give each crop its file's cluster.

    Input ``(N, T', D)``: crops of steps; target ``(N, 3)`` as
    :meth:`sound_cluster.embed.crops.CropSampler.batch_with_files` gives it, with the file's cluster in
    place of its group. Loss: the cross-entropy between the cluster and the crop's posterior, the
    mean over the crop's own steps (as a file's is at inference).
    """

    def __init__(self, head: keras.Model, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.head = head

    def call(self, x, training=False):
        return self.head(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits = y_pred["logits"]
        mask = step_mask(y, steps=ops.shape(logits)[1], time_pool=1)  # (N, T')
        log_q = masked_mean_log_posterior(ops.log_softmax(logits, axis=-1), mask)  # (N, K)
        target = ops.one_hot(y[:, 0], ops.shape(logits)[-1])
        return -ops.mean(ops.sum(target * log_q, axis=-1))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "head": keras.saving.serialize_keras_object(self.head)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "LabelTrainer":
        config = dict(config)
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        return cls(**config)


def train_label_head(steps: list[np.ndarray], labels: np.ndarray, *, k: int, train: TrainParams, time_pool: int,
                     seed: int, norm: layers.LayerNormalization | None = None, verbose: int = 0
                     ) -> tuple[list[np.ndarray], dict[str, list[float]]]:
    """Weights of a dense head of ``k`` clusters that gives every crop of a file the file's label.

    Parameters
    ----------
    steps : list of np.ndarray [shape=(n_steps, D)]
        Each file's step embeddings (:func:`clip_inputs`).
    labels : np.ndarray [shape=(n_files,)]
        Each file's cluster, 0..k-1.
    k : int
    train : TrainParams
        ``crop_frames`` (converted to steps), ``batch_size``, ``head_steps`` and
        ``head_learning_rate`` are used (``length_power`` draws files within a cluster; every
        cluster is drawn equally often); the spectrogram augmentations do not apply.
    time_pool : int
        The encoder's input frames per step.
    seed : int
    norm : keras.layers.LayerNormalization, optional
        The encoder's ``emb_norm`` layer, which the head reads through: a frozen copy of it comes
        before the dense layer. None: ``steps`` are read as they are.

    Returns
    -------
    weights : list of np.ndarray
        The kernel ``(D, k)`` and bias ``(k,)`` of the encoder's ``logits`` layer.
    history : dict
        Per-epoch ``loss`` (cross-entropy in nats).
    """

    keras.utils.set_random_seed(seed)
    dim = int(steps[0].shape[1])
    x_in = keras.Input(shape=(None, dim), name="steps")
    x = x_in
    if norm is not None:
        frozen = layers.LayerNormalization.from_config(norm.get_config())
        x = frozen(x)
        frozen.set_weights(norm.get_weights())
        frozen.trainable = False
    head = keras.Model(x_in, {"logits": layers.Dense(k, name="logits")(x)}, name="cluster_head")
    crop = max(1, -(-train.crop_frames // time_pool))
    # The file's cluster stands in its group's place, so each row carries its target; both views of
    # an example come from the file itself. Every cluster is drawn equally often: drawn by files, a
    # cluster of 2 files among 2,000 is seen in one crop of a thousand and the head never gives it
    # (measured: a 20-file and a 2-file cluster both left empty), so clusters.csv would lose it.
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    sampler = CropSampler(steps, crop_frames=crop, batch_size=train.batch_size,
                          augment=AugmentParams(view_max_shift_frames=crop, mel_shift_bins=0, time_mask_frames=0,
                                                freq_mask_bins=0, eq_nats=0.0),
                          seed=seed, length_power=train.length_power, groups=labels, group_prob=0.0,
                          weights=1.0 / sizes[labels])
    trainer = LabelTrainer(head)
    trainer.compile(optimizer=keras.optimizers.Adam(train.head_learning_rate))
    epochs = 10
    history = run_training(trainer, sampler, head_clusters=k, epochs=epochs,
                           steps_per_epoch=max(1, -(-train.head_steps // epochs)), patience=epochs, min_delta=0.0,
                           verbose=verbose, usage=False)
    return head.get_layer("logits").get_weights(), history


def with_head(encoder: keras.Model, *, model: ModelParams, k: int, weights: list[np.ndarray]) -> keras.Model:
    """A copy of ``encoder`` whose cluster head has ``k`` clusters and the given weights."""
    n_mels = int(encoder.input_shape[-1])
    out = build_encoder(dataclasses.replace(model, n_clusters=k, max_clusters=k), n_mels=n_mels)
    transfer_weights(encoder, out, skip=HEADS)
    out.get_layer("logits").set_weights(weights)
    return out


@dataclasses.dataclass
class FittedClusters:
    """What :func:`fit_clusters` found.

    Attributes
    ----------
    encoder : keras.Model
        The encoder with a head of K clusters.
    clusters : ClipClusters
        Each file's cluster and how K was chosen.
    history : dict
        The head's training history.
    step_embeddings : list of np.ndarray [shape=(n_steps, embedding_dim), dtype=float32]
        Each file's step embeddings, as ``encoder`` gives them (the head was not in their way):
        :meth:`sound_cluster.embed.inference.Posteriors.from_embeddings` turns them into posteriors.
    hierarchy : Hierarchy
        Ward's hierarchy the clusters were cut from (any other K is another cut of it).
    """

    encoder: keras.Model
    clusters: ClipClusters
    history: dict[str, list[float]]
    step_embeddings: list[np.ndarray]
    hierarchy: Hierarchy


def fit_clusters(encoder: keras.Model, frames: Iterable[np.ndarray], *, model: ModelParams, train: TrainParams,
                 seed: int, verbose: int = 0) -> FittedClusters:
    """The run's clusters of files and an encoder whose head gives them.

    Parameters
    ----------
    encoder : keras.Model
        The trained (or pretrained) encoder; its own head is not used.
    frames : iterable of np.ndarray [shape=(n_frames, n_mels)]
        The run's files.
    model : ModelParams
        ``n_clusters`` (an integer or ``auto``) and ``max_clusters`` (the largest K ``auto`` considers).
    train : TrainParams
    seed : int

    Returns
    -------
    FittedClusters
    """
    clip_embeddings, steps = clip_inputs(encoder, frames)
    return fit_unit_clusters(encoder, clip_embeddings, steps, steps, model=model, train=train, seed=seed,
                             verbose=verbose)


def fit_unit_clusters(encoder: keras.Model, vectors: np.ndarray, unit_steps: list[np.ndarray],
                      step_embeddings: list[np.ndarray], *, model: ModelParams, train: TrainParams, seed: int,
                      max_clusters: int | None = None, verbose: int = 0) -> FittedClusters:
    """Clusters of units (files, or segments of files) and an encoder whose head gives them.

    Parameters
    ----------
    encoder : keras.Model
    vectors : np.ndarray [shape=(n_units, D)] or Hierarchy
        Each unit's embedding (:func:`sound_cluster.embed.clusters.cluster_clips` clusters them), or Ward's
        hierarchy over them (:func:`~sound_cluster.embed.clusters.ward_hierarchy`) when the caller built it, so it
        need not hold the embeddings twice.
    unit_steps : list of np.ndarray [shape=(n_steps, D)]
        Each unit's step embeddings: the head learns to give crops of them the unit's cluster.
    step_embeddings : list of np.ndarray [shape=(n_steps, D)]
        Each file's step embeddings (kept in the result for the run's posteriors).
    model, train, seed
        As for :func:`fit_clusters`.
    max_clusters : int, optional
        The largest K ``auto`` considers; ``model.max_clusters`` by default.
    """
    hierarchy = vectors if isinstance(vectors, Hierarchy) else ward_hierarchy(vectors, seed=seed)
    clusters = clusters_at(hierarchy, n_clusters=model.n_clusters, max_clusters=max_clusters or model.max_clusters)
    encoder, history = head_for(encoder, clusters, unit_steps, model=model, train=train, seed=seed, verbose=verbose)
    return FittedClusters(encoder, clusters, history, step_embeddings, hierarchy)


def head_for(encoder: keras.Model, clusters: ClipClusters, unit_steps: list[np.ndarray], *, model: ModelParams,
             train: TrainParams, seed: int, verbose: int = 0) -> tuple[keras.Model, dict[str, list[float]]]:
    """``encoder`` with a head of ``clusters.k`` clusters trained to give each unit's steps its cluster.

    Everything but the head is ``encoder``'s own; the head depends only on the arguments (it is seeded by
    ``seed``), so cutting a run's hierarchy again (``task=recluster``) gives the head a fresh fit would.
    """
    log.info("training the cluster head: %d units in K=%d clusters", len(unit_steps), clusters.k)
    weights, history = train_label_head(unit_steps, clusters.labels, k=clusters.k, train=train,
                                        time_pool=time_geometry(encoder)[0], seed=seed,
                                        norm=encoder.get_layer(HEAD_INPUT), verbose=verbose)
    return with_head(encoder, model=model, k=clusters.k, weights=weights), history


def pretrained_backbone(init: keras.Model, *, model: ModelParams, n_mels: int) -> keras.Model:
    """An encoder of ``model``'s architecture holding every weight of ``init`` but its cluster heads."""
    encoder = build_encoder(model, n_mels=n_mels)
    copied = transfer_weights(init, encoder, skip=HEADS)
    log.info("encoder keeps %d pretrained layers (%s) as they are", len(copied), ", ".join(copied))
    return encoder
