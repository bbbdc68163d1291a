"""The merge autoencoder (Keras) and its training through the trees it chooses.

Socher et al. (2011) style: encoder ``2d -> d`` (tanh, then scaled to unit length, so the
error cannot be lowered by shrinking codes), decoder ``d -> 2d``, merge cost = reconstruction
error of the two children, optionally weighted by their sizes. Folding itself runs on plain
arrays (:mod:`sound_cluster.segment.fold`); this module owns the weights and their training.

Training: build each tree with the current weights, without gradients (the greedy search is
never recorded on a tape), then recompute the chosen merges differentiably, all merges of one
height together, and step on their mean reconstruction error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import keras
import numpy as np
from keras import layers, ops

from sound_cluster.config import SegmentParams
from sound_cluster.segment.fold import FoldWeights, Merges, fold, normalize_rows, score_pairs

log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="sound_cluster")
class MergeAutoencoder(keras.Model):
    """Scores merges of pairs of ``dim``-vectors.

    ``call(pairs)`` maps ``(batch, 2 * dim)`` concatenated children to their reconstruction
    ``(batch, 2 * dim)`` through the unit-length parent code.
    """

    def __init__(self, dim: int, *, size_weighted: bool, node_vector: str, linkage: str,
                 split_cost: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # a sound splits at an onset inside it where the merge there costs more than this (calibrate_split_cost);
        # None (models of 0.1 and untrained ones): sounds are not split
        self.split_cost = None if split_cost is None else float(split_cost)
        if node_vector not in ("mean", "code"):
            raise ValueError(f"segment.node_vector must be one of mean, code, got {node_vector!r}")
        if linkage not in ("ward", "plain"):
            raise ValueError(f"segment.linkage must be one of ward, plain, got {linkage!r}")
        self.linkage = linkage
        self.dim = int(dim)
        self.size_weighted = bool(size_weighted)
        self.node_vector = node_vector
        self.enc = layers.Dense(self.dim, activation="tanh", name="merge_encoder")
        self.dec = layers.Dense(2 * self.dim, name="merge_decoder")
        self.build((None, 2 * self.dim))

    def build(self, input_shape) -> None:
        self.enc.build((None, 2 * self.dim))
        self.dec.build((None, self.dim))
        self.built = True

    def encode(self, pairs):
        """``(batch, 2d) -> (batch, d)`` unit-length parent codes."""
        h = self.enc(pairs)
        return h / ops.maximum(ops.sqrt(ops.sum(h * h, axis=-1, keepdims=True)), 1e-12)

    def call(self, pairs):
        return self.dec(self.encode(pairs))

    def cost(self, c1, c2, n1, n2):
        """Merge costs ``(batch,)`` and parent codes ``(batch, d)`` of children ``(batch, d)`` of sizes ``(batch,)``."""
        pairs = ops.concatenate([c1, c2], axis=-1)
        p = self.encode(pairs)
        rec = self.dec(p)
        e1 = ops.sum((rec[:, : self.dim] - c1) ** 2, axis=-1)
        e2 = ops.sum((rec[:, self.dim:] - c2) ** 2, axis=-1)
        if self.size_weighted:
            return (n1 * e1 + n2 * e2) / (n1 + n2), p
        return 0.5 * (e1 + e2), p

    def fold_weights(self) -> FoldWeights:
        """The weights as arrays for :func:`sound_cluster.segment.fold.fold`."""
        w_e, b_e = (ops.convert_to_numpy(v) for v in self.enc.weights)
        w_d, b_d = (ops.convert_to_numpy(v) for v in self.dec.weights)
        return FoldWeights(w_e.astype(np.float32), b_e.astype(np.float32), w_d.astype(np.float32),
                           b_d.astype(np.float32), self.size_weighted, self.node_vector, self.linkage,
                           float("inf") if self.split_cost is None else self.split_cost)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "size_weighted": self.size_weighted,
                "node_vector": self.node_vector, "linkage": self.linkage, "split_cost": self.split_cost}


@dataclass(frozen=True)
class _Schedule:
    """Chosen merges of a batch of trees, grouped by height, as indices into one node table."""

    leaves: np.ndarray  # (n_leaves_total, d)
    internal: np.ndarray  # (n_nodes - n_leaves_total, d): the fold's own vectors of merged nodes
    owners: np.ndarray  # (n_merges,): the window of each merge, in level order
    leaf_offsets: np.ndarray  # (n_windows + 1,): where each window's leaves start in the table
    n_nodes: int
    levels: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # left, right, new, n1, n2


def _schedule(trees: Sequence[tuple[np.ndarray, Merges]]) -> _Schedule:
    leaves, internal, levels_acc = [], [], {}
    n_leaf_total = sum(len(x) for x, _ in trees)
    leaf_off, int_off = 0, n_leaf_total
    for w, (x, m) in enumerate(trees):
        n = len(x)
        # table index of local node id: leaves -> leaf_off + id, internal -> int_off + (id - n)
        def gid(ids, n=n, lo=leaf_off, io=int_off):
            ids = np.asarray(ids)
            return np.where(ids < n, lo + ids, io + ids - n)
        height = np.zeros(2 * n - 1, dtype=np.int64)
        size = np.ones(2 * n - 1)
        for i, (a, b) in enumerate(zip(m.left, m.right)):
            height[n + i] = max(height[a], height[b]) + 1
            size[n + i] = size[a] + size[b]
        for i in range(n - 1):
            h = int(height[n + i])
            levels_acc.setdefault(h, []).append((gid(m.left[i]), gid(m.right[i]), int_off + i,
                                                 size[m.left[i]], size[m.right[i]], w))
        leaves.append(x)
        internal.append(m.codes[n:])
        leaf_off += n
        int_off += n - 1
    levels, owners = [], []
    for h in sorted(levels_acc):
        rows = levels_acc[h]
        levels.append(tuple(np.array([r[j] for r in rows]) for j in range(5)))
        owners.extend(r[5] for r in rows)
    return _Schedule(np.concatenate(leaves).astype(np.float32), np.concatenate(internal).astype(np.float32),
                     np.array(owners, dtype=np.int64), np.cumsum([0] + [len(x) for x, _ in trees]), int_off, levels)


def merge_loss(model: MergeAutoencoder, schedule: _Schedule, *, negatives: np.ndarray | None, margin: float,
               negative_weight: float):
    """Mean reconstruction error of all chosen merges, differentiable in the model's weights.

    With ``negatives`` (one leaf index per chosen merge, taken from another window), a hinge
    term ``negative_weight * mean(relu(margin - cost(left child, negative leaf)))`` keeps
    merges of unrelated content dear: reconstruction alone is lowest when every pair is cheap
    to merge, which flattens the costs the fold ranks by.
    """
    import tensorflow as tf

    d = schedule.leaves.shape[1]
    costs, lefts, sizes = [], [], []
    if model.node_vector == "mean":
        # Node vectors are leaf means, fixed by the tree: every merge scores in one batch.
        table = tf.constant(np.concatenate([schedule.leaves, schedule.internal]))
        left, right, _, n1, n2 = (np.concatenate(col) for col in zip(*schedule.levels))
        c1 = tf.gather(table, left)
        c, _ = model.cost(c1, tf.gather(table, right), tf.constant(n1, tf.float32), tf.constant(n2, tf.float32))
        costs, lefts, sizes = [c], [c1], [n1]
    else:
        table = tf.concat([tf.constant(schedule.leaves),
                           tf.zeros((schedule.n_nodes - len(schedule.leaves), d), tf.float32)], axis=0)
        for left, right, new, n1, n2 in schedule.levels:  # one batch per height: children are ready
            c1 = tf.gather(table, left)
            c, p = model.cost(c1, tf.gather(table, right), tf.constant(n1, tf.float32),
                              tf.constant(n2, tf.float32))
            table = tf.tensor_scatter_nd_update(table, new[:, None], p)
            costs.append(c)
            lefts.append(c1)
            sizes.append(n1)
    loss = tf.reduce_mean(tf.concat(costs, axis=0))
    if negatives is not None and negative_weight > 0:
        c1 = tf.concat(lefts, axis=0)
        n1 = tf.constant(np.concatenate(sizes), tf.float32)
        neg, _ = model.cost(c1, tf.gather(table, negatives), n1, tf.ones_like(n1))
        loss += negative_weight * tf.reduce_mean(tf.nn.relu(margin - neg))
    return loss


def train_merge_autoencoder(
    sequences: Sequence[np.ndarray],
    *,
    segment: SegmentParams,
    seed: int,
    sounds: Sequence[np.ndarray] | None = None,
) -> tuple[MergeAutoencoder, list[float]]:
    """Train a merge autoencoder on leaf sequences (e.g. one file's embeddings each) by the settings ``segment``.

    Each step folds ``segment.batch_sequences`` random windows of at most ``segment.max_leaves`` leaves
    with the current weights (no gradients), then takes one Adam step on the chosen merges (see
    :func:`merge_loss`; each merge's negative is a random leaf of another window). With ``sounds``
    (two or more of ``2 * SPLICE_CROP`` steps) and ``segment.splice_weight`` > 0, the step also ranks
    merges across splices of two sounds above merges inside one (:func:`splice_loss`, on
    ``segment.splice_pairs`` fresh pairs of each kind), so the split cost the fold's own cut compares
    with tells them apart. The vectors' size is the sequences'.

    Returns
    -------
    model : MergeAutoencoder
    losses : list of float
        Mean merge cost per epoch.
    """
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    # the windows are normalised as they are drawn: a copy of every sequence would grow with the hours
    seqs = [s for s in sequences if len(s) >= 2]
    if not seqs:
        raise ValueError("no sequence of two or more leaves to train the merge autoencoder on")
    model = MergeAutoencoder(seqs[0].shape[1], size_weighted=segment.size_weighted, node_vector=segment.node_vector,
                             linkage=segment.linkage)
    opt = keras.optimizers.Adam(segment.learning_rate)
    long = long_sounds(sounds or [])
    splicing = len(long) >= 2 and segment.splice_weight > 0
    losses = []
    for epoch in range(segment.epochs):
        total = 0.0
        for _ in range(segment.steps_per_epoch):
            weights = model.fold_weights()
            batch = []
            for i in rng.integers(len(seqs), size=segment.batch_sequences):
                s = seqs[i]
                n = min(len(s), segment.max_leaves)
                t0 = int(rng.integers(0, len(s) - n + 1))
                x = normalize_rows(s[t0:t0 + n])
                batch.append((x, fold(x, weights=weights)))  # the greedy search: plain arrays, no tape
            schedule = _schedule(batch)
            negatives = _negatives(schedule, rng)
            with tf.GradientTape() as tape:
                loss = merge_loss(model, schedule, negatives=negatives, margin=segment.margin,
                                  negative_weight=segment.negative_weight)
                if splicing:
                    pairs = crop_pairs(long, rng=rng, pairs=segment.splice_pairs)
                    loss += segment.splice_weight * splice_loss(model, pairs, margin=segment.splice_margin)
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            total += float(loss)
        losses.append(total / segment.steps_per_epoch)
        log.info("merge autoencoder epoch %d: mean merge cost %.5f", epoch + 1, losses[-1])
    return model, losses


def _negatives(schedule: _Schedule, rng: np.random.Generator) -> np.ndarray:
    """For each merge (in the schedule's level order), a leaf index from another window."""
    offsets, n_windows = schedule.leaf_offsets, len(schedule.leaf_offsets) - 1
    out = np.empty(len(schedule.owners), dtype=np.int64)
    for i, w in enumerate(schedule.owners):
        other = (w + 1 + int(rng.integers(n_windows - 1))) % n_windows if n_windows > 1 else w
        out[i] = offsets[other] + int(rng.integers(offsets[other + 1] - offsets[other]))
    return out


def mean_fold_cost(sequences: Sequence[np.ndarray], *, weights: FoldWeights) -> float:
    """Mean merge cost over full folds of ``sequences`` (lower: the tree explains the data better)."""
    costs = [fold(s, weights=weights).cost for s in sequences if len(s) >= 2]
    return float(np.mean(np.concatenate(costs))) if costs else float("nan")


SPLICE_CROP = 5  # steps per crop of the spliced pairs (0.2 s at 25 steps per second)


@dataclass(frozen=True)
class CropPairs:
    """Pairs of crops scored as the fold scores a merge of two nodes (each the unit-length mean of its leaves).

    Attributes
    ----------
    same_left, same_right : np.ndarray [shape=(pairs, d)]
        Two neighbouring crops of one sound.
    spliced_left, spliced_right : np.ndarray [shape=(pairs, d)]
        Crops of two different sounds, spliced together.
    size : float
        Steps per crop.
    """

    same_left: np.ndarray
    same_right: np.ndarray
    spliced_left: np.ndarray
    spliced_right: np.ndarray
    size: float


def long_sounds(sounds: Sequence[np.ndarray], *, crop: int = SPLICE_CROP) -> list[np.ndarray]:
    """The sounds of at least ``2 * crop`` steps (what :func:`crop_pairs` samples), not copied."""
    return [s for s in sounds if len(s) >= 2 * crop]


def crop_pairs(long: Sequence[np.ndarray], *, rng: np.random.Generator, pairs: int,
               crop: int = SPLICE_CROP) -> CropPairs:
    """``pairs`` pairs of each kind drawn from ``long`` (two or more sounds of ``2 * crop`` steps or more)."""
    def mean(x: np.ndarray) -> np.ndarray:  # of the crop's rows at unit length
        v = normalize_rows(x).mean(axis=0)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    same, spliced = [], []
    for _ in range(pairs):
        s = long[int(rng.integers(len(long)))]
        t0 = int(rng.integers(0, len(s) - 2 * crop + 1))
        same.append((mean(s[t0:t0 + crop]), mean(s[t0 + crop:t0 + 2 * crop])))
        i, j = rng.choice(len(long), size=2, replace=False)
        a, b = long[i], long[j]
        ta, tb = int(rng.integers(0, len(a) - crop + 1)), int(rng.integers(0, len(b) - crop + 1))
        spliced.append((mean(a[ta:ta + crop]), mean(b[tb:tb + crop])))
    sl, sr = (np.asarray(x, dtype=np.float32) for x in zip(*same))
    pl, pr = (np.asarray(x, dtype=np.float32) for x in zip(*spliced))
    return CropPairs(sl, sr, pl, pr, float(crop))


def splice_loss(model: MergeAutoencoder, batch: CropPairs, *, margin: float):
    """``mean(relu(margin - (cost(spliced) - cost(same))))``: a merge across a splice of two sounds must cost
    ``margin`` more than a merge of two neighbouring parts of one sound (costs without Ward's factor, as
    :func:`calibrate_split_cost` and the file's own cut compare them). Differentiable in the model's weights."""
    n = ops.full((len(batch.same_left),), batch.size)
    same, _ = model.cost(ops.convert_to_tensor(batch.same_left), ops.convert_to_tensor(batch.same_right), n, n)
    spliced, _ = model.cost(ops.convert_to_tensor(batch.spliced_left), ops.convert_to_tensor(batch.spliced_right),
                            n, n)
    return ops.mean(ops.relu(margin - (spliced - same)))


def calibrate_split_cost(model: MergeAutoencoder, sounds: Sequence[np.ndarray], *, seed: int, crop: int = SPLICE_CROP,
                         pairs: int = 2000) -> float | None:
    """The cost per step above which a merge joins two different sounds rather than two parts of one.

    Pairs of crops of ``crop`` steps are scored as the fold scores a merge of two nodes (each the
    unit-length mean of its leaves, Ward's factor taken out): two neighbouring crops of one sound,
    and two crops of different sounds spliced together (:func:`crop_pairs`). The split cost is the
    threshold that best tells them apart (the mean of the two rates of correct calls is highest), so
    the fold's own costs decide where a long sound changes kind.

    Parameters
    ----------
    model : MergeAutoencoder
    sounds : sequence of np.ndarray [shape=(n_steps, d)]
        The step embeddings of the folder's sounds.
    seed : int
    crop : int
        Steps per crop.
    pairs : int
        Pairs of each kind.

    Returns
    -------
    float or None
        None when there are fewer than two sounds of ``2 * crop`` steps.
    """
    long = long_sounds(sounds, crop=crop)
    if len(long) < 2:
        return None
    w = model.fold_weights()
    batch = crop_pairs(long, rng=np.random.default_rng(seed), pairs=pairs, crop=crop)
    n = np.full(pairs, float(crop))
    factor = crop / 2.0 if w.linkage == "ward" else 1.0
    cost_same = score_pairs(batch.same_left, batch.same_right, n, n, weights=w)[0] / factor
    cost_spliced = score_pairs(batch.spliced_left, batch.spliced_right, n, n, weights=w)[0] / factor
    cands = np.unique(np.r_[cost_same, cost_spliced])
    # balanced accuracy of "split where the cost exceeds t" at every candidate threshold
    tnr = np.searchsorted(np.sort(cost_same), cands, side="right") / pairs
    tpr = 1.0 - np.searchsorted(np.sort(cost_spliced), cands, side="right") / pairs
    best = int(np.argmax(tnr + tpr))
    log.info("merge autoencoder: split cost %.4f (tells a splice of two sounds from one sound %.0f%% of the time)",
             cands[best], 50 * (tnr[best] + tpr[best]))
    return float(cands[best])
