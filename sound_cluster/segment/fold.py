"""Greedy folding of a sequence into a binary segment tree with a merge autoencoder's weights.

The merge autoencoder (:mod:`sound_cluster.segment.merge_model`) scores a pair of neighbouring nodes
``(c1, c2)`` by how badly it reconstructs them from their merged code::

    h    = tanh(W_e [c1; c2] + b_e);   p = h / ||h||          (parent code, unit length)
    rec  = W_d p + b_d                                        (2d)
    cost = w1 ||rec[:d] - c1||^2 + w2 ||rec[d:] - c2||^2      (w = sizes / total, or 1/2 each)
    cost *= n1 n2 / (n1 + n2)                                 (linkage ward: Ward's size factor)

Folding repeatedly merges the cheapest pair until one node is left. Here that runs on the CPU
with the weights as plain arrays, never a Keras call per candidate: all n-1 neighbour pairs are
scored once, each merge rescores only the two new neighbour pairs, and a heap picks the next
merge, so a sequence of n leaves costs O(n log n). The loop is compiled with numba; each
candidate keeps its parent code (one slot per left node), so a merge needs no recomputation.

Result: a :class:`Merges` table with one row per merge (in order), from which
:class:`sound_cluster.segment.tree.SegmentTree` is built.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numba
import numpy as np


@dataclass(frozen=True)
class FoldWeights:
    """Merge autoencoder weights as arrays (float32).

    w_enc : (2d, d), b_enc : (d,), w_dec : (d, 2d), b_dec : (2d,); ``size_weighted`` selects the
    reconstruction weights (child sizes over total, or one half each). ``node_vector`` is what
    stands for a merged node in later merges: ``code``, its parent code (Socher et al.), or
    ``mean``, the unit-length mean of its leaves (see :mod:`sound_cluster.segment.merge_model` for why).
    ``linkage`` ``ward`` multiplies each cost by ``n1 n2 / (n1 + n2)`` (the children's sizes in
    leaves), as Ward's criterion weighs the distance of two means: merging a lone step into its
    neighbour is cheap and merging two long segments dear, so no sliver survives to the top of
    the tree for want of a similar neighbour; ``plain`` leaves the cost as it is.
    """

    w_enc: np.ndarray
    b_enc: np.ndarray
    w_dec: np.ndarray
    b_dec: np.ndarray
    size_weighted: bool
    node_vector: str
    linkage: str
    split_cost: float = float("inf")  # a sound splits at an onset where its merge costs more per step than this

    @property
    def dim(self) -> int:
        return int(self.b_enc.shape[0])


@dataclass(frozen=True)
class Merges:
    """The merges of one fold, in order.

    Node ids: leaves are ``0..n-1``; merge ``i`` creates node ``n + i``.

    Attributes
    ----------
    left, right : np.ndarray [shape=(n-1,), dtype=int64]
        Children of each merge's new node.
    cost : np.ndarray [shape=(n-1,), dtype=float64]
        The merge's reconstruction error.
    codes : np.ndarray [shape=(2n-1, d), dtype=float32]
        Every node's vector (unit length): leaves, then merged nodes (parent codes, or the
        means of their leaves, as ``FoldWeights.node_vector`` says).
    """

    left: np.ndarray
    right: np.ndarray
    cost: np.ndarray
    codes: np.ndarray

    @property
    def n_leaves(self) -> int:
        return int(self.left.shape[0]) + 1

    def without_codes(self) -> "Merges":
        """The merges without the node vectors, which only training reads: what a tree needs, kept for every file
        of a run without the 0.5 kB per merge (46 MB per hour of audio at 25 steps per second) the codes hold."""
        return Merges(self.left, self.right, self.cost, np.empty((0, self.codes.shape[1]), np.float32))

    def save(self, path) -> None:
        """Writes the merges without their codes (:meth:`without_codes`, what a tree needs) to ``path`` (``.npz``),
        so a run's folds wait on disk, not in its main process, for the stage that writes the trees."""
        np.savez(path, left=self.left, right=self.right, cost=self.cost, code_dim=np.int64(self.codes.shape[1]))

    @classmethod
    def load(cls, path) -> "Merges":
        """Merges written by :meth:`save` (without codes)."""
        from sound_cluster.io_utils import read_arrays

        z = read_arrays(path, ("left", "right", "cost", "code_dim"))
        return cls(z["left"], z["right"], z["cost"], np.empty((0, int(z["code_dim"])), np.float32))


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero); float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


@numba.njit(cache=True, fastmath=True)
def _score(c1, c2, n1, n2, w_enc_t, b_enc, w_dec_t, b_dec, size_weighted, ward, out_code, buf):
    """Cost of merging c1 and c2; writes the unit-length parent code into out_code.

    ``w_enc_t`` is (d, 2d) and ``w_dec_t`` is (2d, d), C-contiguous, so each product is one
    BLAS gemv (measured 1.5x faster here than hand-written loops); ``buf`` is (2d,) scratch.
    """
    d = c1.shape[0]
    buf[:d] = c1
    buf[d:] = c2
    h = np.tanh(w_enc_t @ buf + b_enc)
    norm = np.sqrt(np.sum(h * h))
    if norm < 1e-12:
        norm = 1e-12
    out_code[:] = h / norm
    diff = w_dec_t @ out_code + b_dec - buf
    diff = diff * diff
    e1 = np.sum(diff[:d])
    e2 = np.sum(diff[d:])
    if size_weighted:
        cost = (n1 * e1 + n2 * e2) / (n1 + n2)
    else:
        cost = 0.5 * (e1 + e2)
    if ward:
        cost *= n1 * n2 / (n1 + n2)
    return cost


@numba.njit(cache=True)
def _tier(level, n1, n2, min_size):
    """Which merges go first: 0 a node under ``min_size`` steps, 1 any other inside a piece, then across a
    barrier of level 1 (an onset inside a sound: tier 2), then of level 2 (where a sound starts or ends: tier 3)."""
    if level > 0:
        return 1.0 + level
    return 0.0 if n1 < min_size or n2 < min_size else 1.0


@numba.njit(cache=True)
def _fold_adjacent(leaves, leaf_sizes, barrier, min_size, w_enc_t, b_enc, w_dec_t, b_dec, size_weighted, use_mean,
                   ward):
    n, d = leaves.shape
    total = 2 * n - 1
    start = np.empty(total, dtype=np.int64)  # first leaf of each node: a pair crosses a barrier at its right node's
    start[:n] = np.arange(n)
    codes = np.empty((total, d), dtype=np.float32)
    codes[:n] = leaves
    sums = np.empty((total, d), dtype=np.float32)  # use_mean: sum of each node's leaves
    sums[:n] = leaves
    cand = np.empty((total, d), dtype=np.float32)  # cand[a]: parent code of (a, nxt[a])
    size = np.ones(total, dtype=np.float64)
    size[:n] = leaf_sizes
    prev = np.empty(total, dtype=np.int64)
    nxt = np.empty(total, dtype=np.int64)
    alive = np.zeros(total, dtype=np.bool_)
    for i in range(n):
        prev[i] = i - 1
        nxt[i] = i + 1 if i + 1 < n else -1
        alive[i] = True
    left = np.empty(n - 1, dtype=np.int64)
    right = np.empty(n - 1, dtype=np.int64)
    cost = np.empty(n - 1, dtype=np.float64)
    buf = np.empty(2 * d, dtype=np.float32)
    # Heap entries (tier, cost, left, right): a lower tier goes first whatever the costs (see _tier).
    heap = [(0.0, 0.0, np.int64(0), np.int64(0))]
    heap.pop()
    for a in range(n - 1):
        c = _score(codes[a], codes[a + 1], size[a], size[a + 1], w_enc_t, b_enc, w_dec_t, b_dec, size_weighted, ward, cand[a], buf)
        heap.append((_tier(barrier[a + 1], size[a], size[a + 1], min_size), c, np.int64(a), np.int64(a + 1)))
    heapq.heapify(heap)
    m = n
    while m < total:
        _, c, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b] and nxt[a] == b):
            continue  # stale: one of the pair was merged since this candidate was scored
        if use_mean:
            sums[m] = sums[a] + sums[b]
            norm = np.sqrt(np.sum(sums[m] * sums[m]))
            codes[m] = sums[m] / max(norm, 1e-12)
        else:
            codes[m] = cand[a]
        size[m] = size[a] + size[b]
        start[m] = start[a]
        left[m - n] = a
        right[m - n] = b
        cost[m - n] = c
        alive[a] = False
        alive[b] = False
        alive[m] = True
        p = prev[a]
        q = nxt[b]
        prev[m] = p
        nxt[m] = q
        if p >= 0:
            nxt[p] = m
            cp = _score(codes[p], codes[m], size[p], size[m], w_enc_t, b_enc, w_dec_t, b_dec, size_weighted,
                        ward, cand[p], buf)
            heapq.heappush(heap, (_tier(barrier[start[m]], size[p], size[m], min_size), cp, p, np.int64(m)))
        if q >= 0:
            prev[q] = m
            cq = _score(codes[m], codes[q], size[m], size[q], w_enc_t, b_enc, w_dec_t, b_dec, size_weighted,
                        ward, cand[m], buf)
            heapq.heappush(heap, (_tier(barrier[start[q]], size[m], size[q], min_size), cq, np.int64(m), q))
        m += 1
    return left, right, cost, codes


def _check_leaves(leaves: np.ndarray, weights: FoldWeights) -> np.ndarray:
    leaves = np.asarray(leaves)
    if leaves.ndim != 2 or leaves.shape[0] < 1 or leaves.shape[1] != weights.dim:
        raise ValueError(f"leaves must have shape (n >= 1, {weights.dim}), got {leaves.shape}")
    return normalize_rows(leaves)


def fold(leaves: np.ndarray, *, weights: FoldWeights, pairing: str = "adjacent",
         sizes: np.ndarray | None = None, barriers: np.ndarray | None = None, min_size: float = 0.0) -> Merges:
    """Fold a sequence into a binary tree by greedy merges.

    Parameters
    ----------
    leaves : np.ndarray [shape=(n, d)]
        One vector per time step; scaled to unit length before folding.
    weights : FoldWeights
    pairing : {"adjacent", "any"}
        ``adjacent``: only neighbours merge, so every node is a contiguous segment (O(n log n)).
        ``any``: the seed's search over every pair of current nodes (O(n^2) memory and time per
        fold; for small inputs only). Segments may then be non-contiguous.
    sizes : np.ndarray [shape=(n,)], optional
        Each leaf's size in steps (default 1): the last step of a file usually covers only part
        of a step, and counting it whole would let Ward's factor keep a few milliseconds apart.
    barriers : np.ndarray [shape=(n,), dtype=bool or int8], optional
        ``barriers[i]``: a sound starts (or ends) at leaf ``i`` (see :mod:`sound_cluster.segment.pauses` and
        :mod:`sound_cluster.segment.sounds`). A merge across a barrier waits until no merge is left that
        crosses none, so the tree first folds each piece between barriers into one node, then the
        pieces. Levels (int8): 1, an onset inside a sound, is crossed before 2, where a sound starts or
        ends (a bool's True), so a sound's parts join before the sound joins the background beside it.
        Adjacent pairing only.
    min_size : float
        A node smaller than this many steps merges with its cheaper neighbour (inside its sound)
        before any other merge, so every cut into at most as many segments as are left after
        those merges has no segment shorter than ``min_size`` steps (``segment.min_node_s``). 0: off.
        Adjacent pairing only.

    Returns
    -------
    Merges
    """
    x = _check_leaves(leaves, weights)
    leaf_sizes = np.ones(len(x)) if sizes is None else np.asarray(sizes, dtype=np.float64)
    if leaf_sizes.shape != (len(x),) or not np.all(leaf_sizes > 0):
        raise ValueError(f"sizes must be {len(x)} positive numbers, got shape {leaf_sizes.shape}")
    barrier = check_barriers(barriers, len(x))
    if pairing == "any":
        if barrier.any() or min_size > 0:
            raise ValueError("barriers and min_size need segment.pairing=adjacent")
        return _fold_any(x, weights, leaf_sizes)
    if pairing != "adjacent":
        raise ValueError(f"segment.pairing must be one of adjacent, any, got {pairing!r}")
    n, d = x.shape
    if n == 1:
        return Merges(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), x.copy())
    w = _layout(weights)
    left, right, cost, codes = _fold_adjacent(x, leaf_sizes, barrier, float(min_size), *w, weights.size_weighted,
                                              weights.node_vector == "mean", weights.linkage == "ward")
    return Merges(left, right, cost, codes)


def check_barriers(barriers: np.ndarray | None, n: int) -> np.ndarray:
    """``barriers`` as levels, an int8 array of shape ``(n,)``: 0 none, 1 soft (an onset inside a sound), 2 hard.

    A bool array's True is a hard barrier; None is no barrier at all.
    """
    if barriers is None:
        return np.zeros(n, dtype=np.int8)
    b = np.asarray(barriers)
    barrier = np.where(b, 2, 0).astype(np.int8) if b.dtype == np.bool_ else b.astype(np.int8)
    if barrier.shape != (n,) or barrier.min(initial=0) < 0 or barrier.max(initial=0) > 2:
        raise ValueError(f"barriers must have shape ({n},) and levels 0, 1 or 2, got {barrier.shape}")
    return barrier


def _layout(weights: FoldWeights):
    return (np.ascontiguousarray(weights.w_enc.T, dtype=np.float32), np.asarray(weights.b_enc, np.float32),
            np.ascontiguousarray(weights.w_dec.T, dtype=np.float32), np.asarray(weights.b_dec, np.float32))


def score_pairs(c1: np.ndarray, c2: np.ndarray, n1: np.ndarray, n2: np.ndarray, *,
                weights: FoldWeights) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised merge cost of many pairs at once (numpy; the reference for the compiled loop).

    Parameters
    ----------
    c1, c2 : np.ndarray [shape=(m, d)]
    n1, n2 : np.ndarray [shape=(m,)]
        Sizes (leaf counts) of the children.

    Returns
    -------
    cost : np.ndarray [shape=(m,)]
    codes : np.ndarray [shape=(m, d)]
        Unit-length parent codes.
    """
    x = np.concatenate([c1, c2], axis=1).astype(np.float64)  # (m, 2d)
    h = np.tanh(x @ weights.w_enc.astype(np.float64) + weights.b_enc)
    p = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    rec = p @ weights.w_dec.astype(np.float64) + weights.b_dec
    d = c1.shape[1]
    e1 = ((rec[:, :d] - c1) ** 2).sum(axis=1)
    e2 = ((rec[:, d:] - c2) ** 2).sum(axis=1)
    if weights.size_weighted:
        cost = (n1 * e1 + n2 * e2) / (n1 + n2)
    else:
        cost = 0.5 * (e1 + e2)
    if weights.linkage == "ward":
        cost = cost * (n1 * n2 / (n1 + n2))
    return cost, p.astype(np.float32)


class _SlowFold:
    """Bookkeeping shared by the two pure-Python folds: node vectors, sizes and the merge record."""

    def __init__(self, x: np.ndarray, weights: FoldWeights, sizes: np.ndarray | None = None) -> None:
        n, d = x.shape
        self.n, self.weights = n, weights
        self.codes = np.empty((2 * n - 1, d), dtype=np.float32)
        self.codes[:n] = x
        self.sums = self.codes.copy()  # sum of each node's leaves
        self.size = np.ones(2 * n - 1)
        if sizes is not None:
            self.size[:n] = sizes
        self.left: list[int] = []
        self.right: list[int] = []
        self.cost: list[float] = []

    def score(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return score_pairs(self.codes[a], self.codes[b], self.size[a], self.size[b], weights=self.weights)

    def merge(self, a: int, b: int, cost: float, code: np.ndarray) -> int:
        """Record the merge of ``a`` and ``b``; returns the new node's id."""
        m = self.n + len(self.left)
        self.sums[m] = self.sums[a] + self.sums[b]
        if self.weights.node_vector == "mean":
            self.codes[m] = self.sums[m] / max(float(np.linalg.norm(self.sums[m])), 1e-12)
        else:
            self.codes[m] = code
        self.size[m] = self.size[a] + self.size[b]
        self.left.append(int(a))
        self.right.append(int(b))
        self.cost.append(float(cost))
        return m

    def result(self) -> Merges:
        return Merges(np.array(self.left, np.int64), np.array(self.right, np.int64), np.array(self.cost),
                      self.codes)


def _fold_any(x: np.ndarray, weights: FoldWeights, sizes: np.ndarray | None = None) -> Merges:
    """Any-pair greedy search: every pair of current nodes is a candidate (the seed's rule)."""
    st = _SlowFold(x, weights, sizes)
    alive = list(range(st.n))
    pair_cost: dict[tuple[int, int], tuple[float, np.ndarray]] = {}

    def add_pairs(new: int, others: list[int]) -> None:
        if not others:
            return
        a = np.array([min(o, new) for o in others])
        b = np.array([max(o, new) for o in others])
        c, p = st.score(a, b)
        for i in range(len(others)):
            pair_cost[(int(a[i]), int(b[i]))] = (float(c[i]), p[i])

    for i in range(st.n):
        add_pairs(i, list(range(i)))
    for _ in range(st.n - 1):
        (a, b), (c, p) = min(pair_cost.items(), key=lambda kv: (kv[1][0], kv[0]))
        m = st.merge(a, b, c, p)
        alive = [k for k in alive if k not in (a, b)]
        pair_cost = {k: v for k, v in pair_cost.items() if a not in k and b not in k}
        add_pairs(m, alive)
        alive.append(m)
    return st.result()


def fold_reference(leaves: np.ndarray, *, weights: FoldWeights, sizes: np.ndarray | None = None,
                   barriers: np.ndarray | None = None, min_size: float = 0.0) -> Merges:
    """Direct O(n^2) implementation of the adjacent rule: rescore every neighbour pair each step.

    Pairs with a node under ``min_size`` come first, pairs across a barrier after every other
    pair (those across a level-1 barrier before those across a level-2 one); ties go to the pair
    whose left node has the smaller id, as in the heap. For tests.
    """
    st = _SlowFold(_check_leaves(leaves, weights), weights, sizes)
    barrier = check_barriers(barriers, st.n)
    first = list(range(st.n))  # first leaf of each node
    seq = list(range(st.n))
    for _ in range(st.n - 1):
        a = np.array(seq[:-1])
        b = np.array(seq[1:])
        c, p = st.score(a, b)
        tier = [1 + int(barrier[first[b[i]]]) if barrier[first[b[i]]] else
                0 if min(st.size[a[i]], st.size[b[i]]) < min_size else 1 for i in range(len(c))]
        best = min(range(len(c)), key=lambda i: (tier[i], c[i], a[i]))
        first.append(first[a[best]])
        m = st.merge(a[best], b[best], c[best], p[best])
        seq[best:best + 2] = [m]
    return st.result()
