"""The greedy fold of :mod:`sound_cluster.segment.fold` for an accelerator: many files in lockstep, as tensor operations.

The heap fold is a loop of tiny steps per file, which a GPU runs badly. Here a batch of files,
padded to the longest, advances together: at every step each file merges its cheapest neighbour
pair (an argmin over its candidate costs), then rescores only the two pairs the merge created,
all files at once with ``keras.ops`` (so it runs under any Keras backend: TensorFlow here, JAX on
a machine without TensorFlow). The merges are the heap fold's (same costs, same greedy order);
the costs are computed in float32 by the backend, so a near-tie between two candidates (closer
than float32 rounding) may be broken the other way.

Time: ``n - 1`` steps of O(batch * n) work each (the argmin), so O(batch * n^2) in all, against
the heap's O(n log n) per file: worth it only where many files run in parallel on a device.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from sound_cluster.segment.fold import FoldWeights, Merges, check_barriers, normalize_rows


def fold_lockstep(batch: Sequence[np.ndarray], *, weights: FoldWeights,
                  sizes: Sequence[np.ndarray] | None = None,
                  barriers: Sequence[np.ndarray | None] | None = None, min_size: float = 0.0) -> list[Merges]:
    """Fold every sequence of ``batch`` (adjacent pairs only), all in lockstep.

    Parameters
    ----------
    batch : sequence of np.ndarray [shape=(n_b, d)]
        One leaf sequence per file; rows are scaled to unit length.
    weights : FoldWeights
    sizes : sequence of np.ndarray [shape=(n_b,)], optional
        Each leaf's size in steps (default 1), as :func:`sound_cluster.segment.fold.fold` takes them.
    barriers : sequence of (np.ndarray [shape=(n_b,), dtype=bool or int8] or None), optional
        Where sounds start, as :func:`sound_cluster.segment.fold.fold` takes them.
    min_size : float
        Steps below which a node merges first, as in :func:`sound_cluster.segment.fold.fold`.

    Returns
    -------
    list of Merges
        One per sequence, as :func:`sound_cluster.segment.fold.fold` gives it.
    """
    from keras import ops

    xs = [normalize_rows(x) for x in batch]
    lengths = np.array([len(x) for x in xs], dtype=np.int64)
    if len(xs) == 0:
        return []
    if np.any(lengths < 1) or any(x.shape[1] != weights.dim for x in xs):
        raise ValueError(f"every sequence must have shape (n >= 1, {weights.dim})")
    b, n, d = len(xs), int(lengths.max()), weights.dim
    leaves = np.zeros((b, n, d), np.float32)
    size0 = np.zeros((b, n), np.float32)
    barrier = np.zeros((b, n), np.int8)
    for i, x in enumerate(xs):
        leaves[i, :len(x)] = x
        size0[i, :len(x)] = 1.0 if sizes is None else np.asarray(sizes[i], np.float32)
        if barriers is not None and barriers[i] is not None:
            barrier[i, :len(x)] = check_barriers(barriers[i], len(x))
    pos = np.arange(n)
    nxt0 = np.where(pos[None, :] + 1 < lengths[:, None], pos[None, :] + 1, -1)  # (B, N); -1: no right neighbour
    prv0 = np.broadcast_to(pos - 1, (b, n)).copy()

    if n == 1:
        return [Merges(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), x.copy()) for x in xs]
    flags = (weights.linkage == "ward", bool(weights.size_weighted), weights.node_vector == "mean")
    out_lr, out_cost, out_vec = _compiled_loop(flags)(
        leaves, size0, barrier, np.float32(min_size), nxt0.astype(np.int32), prv0.astype(np.int32), lengths.astype(np.int32),
        *(np.asarray(v, np.float32) for v in (weights.w_enc, weights.b_enc, weights.w_dec, weights.b_dec)))

    lr = ops.convert_to_numpy(out_lr).astype(np.int64)  # (B, N - 1, 2): the children of every merge
    left, right = lr[..., 0], lr[..., 1]
    costs = ops.convert_to_numpy(out_cost).astype(np.float64)
    vecs = ops.convert_to_numpy(out_vec)  # (B, N - 1, d)
    out = []
    for k, x in enumerate(xs):
        m = len(x) - 1
        out.append(Merges(left[k, :m], right[k, :m], costs[k, :m], np.concatenate([x, vecs[k, :m]])))
    return out


def _loop(leaves, size0, barrier, min_size, nxt0, prv0, n_leaves, w_enc, b_enc, w_dec, b_dec, *, ward: bool,
          size_weighted: bool, use_mean: bool):
    """The whole fold as one ``fori_loop`` over steps; returns the merge records (children, costs, vectors)."""
    from keras import ops

    vec = ops.convert_to_tensor(leaves)
    size = ops.convert_to_tensor(size0)
    nxt, prv = ops.convert_to_tensor(nxt0), ops.convert_to_tensor(prv0)
    b, n, d = leaves.shape
    inf = np.float32(np.inf)

    def score(c1, c2, n1, n2):
        """Costs ``(M,)`` and unit-length parent codes ``(M, d)`` of pairs ``(M, d)`` with sizes ``(M,)``."""
        h = ops.tanh(ops.matmul(ops.concatenate([c1, c2], axis=-1), w_enc) + b_enc)
        p = h / ops.maximum(ops.sqrt(ops.sum(h * h, axis=-1, keepdims=True)), 1e-12)
        rec = ops.matmul(p, w_dec) + b_dec  # (M, 2d)
        e1 = ops.sum(ops.square(rec[:, :d] - c1), axis=-1)
        e2 = ops.sum(ops.square(rec[:, d:] - c2), axis=-1)
        cost = (n1 * e1 + n2 * e2) / (n1 + n2) if size_weighted else 0.5 * (e1 + e2)
        return (cost * (n1 * n2 / (n1 + n2)) if ward else cost), p

    # vec (B, N, d): each alive node's vector, at its leftmost position
    sums = vec  # sums of each node's leaves (node_vector=mean)
    node = ops.broadcast_to(ops.arange(n, dtype="int32")[None, :], (b, n))  # node id at each position
    c0, cand = score(ops.reshape(vec, (-1, d)), ops.reshape(ops.roll(vec, -1, axis=1), (-1, d)),
                     ops.reshape(size, (-1,)), ops.reshape(ops.roll(size, -1, axis=1), (-1,)))
    cost = ops.where(nxt >= 0, ops.reshape(c0, (b, n)), inf)  # (B, N): merging position i with nxt[i]
    cand = ops.reshape(cand, (b, n, d))  # parent code of that pair
    rows = ops.arange(b, dtype="int32")

    def at(t, i):  # t[(row, i[row])] for every row; i clamped into range
        i = ops.clip(i, 0, n - 1)
        return ops.take_along_axis(t, ops.reshape(i, (b, 1) + (1,) * (len(t.shape) - 2)), axis=1)[:, 0]

    def put(t, i, value, mask):  # t[(row, i[row])] = value where mask, for every row
        i = ops.clip(i, 0, n - 1)
        value = ops.where(ops.reshape(mask, (b,) + (1,) * (len(t.shape) - 2)), value, at(t, i))
        return ops.scatter_update(t, ops.stack([rows, i], axis=1), value)

    def step(t, state):
        sums, vec, size, nxt, prv, node, cost, cand, out_lr, out_cost, out_vec = state
        active = t < n_leaves - 1  # (B,): files with merges left
        # Tiers as in the heap fold: a pair with a node under min_size first; a pair across a barrier
        # (a sound starts at its right node, whose position is its first leaf) waits for every other.
        right = ops.clip(nxt, 0, n - 1)
        level = ops.where(nxt >= 0, ops.take_along_axis(barrier, right, axis=1), 0)
        small = ops.logical_or(size < min_size, ops.take_along_axis(size, right, axis=1) < min_size)
        within = ops.where(level > 0, inf, cost)
        first = ops.where(small, within, inf)
        soft = ops.where(level == 1, cost, inf)  # across an onset inside a sound: before a sound's edges
        pick = ops.where(ops.any(first < inf, axis=1, keepdims=True), first,
                         ops.where(ops.any(within < inf, axis=1, keepdims=True), within,
                                   ops.where(ops.any(soft < inf, axis=1, keepdims=True), soft, cost)))
        i = ops.cast(ops.argmin(pick, axis=1), "int32")
        j = at(nxt, i)
        slot = ops.stack([rows, ops.full((b,), t, dtype="int32")], axis=1)  # where this step's record goes
        out_lr = ops.scatter_update(out_lr, slot, ops.stack([at(node, i), at(node, j)], axis=1))
        out_cost = ops.scatter_update(out_cost, slot, at(cost, i))
        new_sum = at(sums, i) + at(sums, j)
        new_size = at(size, i) + at(size, j)
        if use_mean:
            new_vec = new_sum / ops.maximum(ops.sqrt(ops.sum(new_sum * new_sum, axis=-1, keepdims=True)), 1e-12)
        else:
            new_vec = at(cand, i)
        out_vec = ops.scatter_update(out_vec, slot, new_vec)
        q = at(nxt, j)  # the new node's right neighbour (-1: none)
        p = at(prv, i)  # and its left one
        sums, vec, size = put(sums, i, new_sum, active), put(vec, i, new_vec, active), put(size, i, new_size, active)
        nxt = put(nxt, i, q, active)
        prv = put(prv, q, i, active & (q >= 0))
        node = put(node, i, n_leaves + t, active)
        cost = put(cost, j, ops.full((b,), inf), active)
        # Rescore the two pairs the merge made: (p, new) and (new, q).
        cp, codep = score(at(vec, p), new_vec, at(size, p), new_size)
        cq, codeq = score(new_vec, at(vec, q), new_size, at(size, q))
        cost = put(cost, p, cp, active & (p >= 0))
        cand = put(cand, p, codep, active & (p >= 0))
        cost = put(cost, i, ops.where(q >= 0, cq, inf), active)
        cand = put(cand, i, codeq, active & (q >= 0))
        return sums, vec, size, nxt, prv, node, cost, cand, out_lr, out_cost, out_vec

    def run(state):
        return ops.fori_loop(0, n - 1, step, state)

    state = (sums, vec, size, nxt, prv, node, cost, cand, ops.zeros((b, max(n - 1, 1), 2), "int32"),
             ops.zeros((b, max(n - 1, 1)), "float32"), ops.zeros((b, max(n - 1, 1), d), "float32"))
    return run(state)[-3:]


@functools.lru_cache(maxsize=None)
def _compiled_loop(flags: tuple[bool, bool, bool]):
    """:func:`_loop` compiled by the Keras backend in use (one graph for the whole fold, not an op at a
    time), once per setting and batch shape."""
    import keras

    fn = functools.partial(_loop, ward=flags[0], size_weighted=flags[1], use_mean=flags[2])
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn
