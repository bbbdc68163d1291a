"""Per-file cluster assignments: the head's clusters merged into the run's K (chosen or given),
each file's cluster from its posteriors, and the ``clusters.csv`` table.

The encoder's head is trained with more clusters than the run keeps (``model.max_clusters``):
the clustering loss asks for clusters of equal size, real folders are not equal, so a kind of
sound with many members takes several head clusters. Those are merged along a Ward hierarchy of
their centroids in the clip-embedding space; ``model.n_clusters=auto`` stops the merging at the
knee of the within-cluster scatter curve (Satopaa et al. 2011, "Kneedle"). A merged cluster's
posterior is the sum of its head clusters' posteriors, so posteriors, trees and clusters.csv agree.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .io_utils import atomic_write_text

# ``name``: the output name of the file's trees/, posteriors/ and plots/ entries (the path itself,
# unless that is not UTF-8 or too long; see :mod:`sound_cluster.names`).
CLUSTER_COLUMNS = ("path", "cluster", "confidence", "duration_s", "name")


@dataclass(frozen=True)
class Assignment:
    """One file's cluster.

    Attributes
    ----------
    path : str
        Relative to ``data.path``, '/' separators.
    cluster : int
        Argmax of the file's mean posterior.
    confidence : float
        That maximum, in [1/K, 1].
    duration_s : float
    name : str
        Output name (``trees/<name>.json`` ...); defaults to ``path``.
    index : int
        Position of the file in the run's list of processed files (not written).
    """

    path: str
    cluster: int
    confidence: float
    duration_s: float
    name: str = ""
    index: int = -1

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.path)


def assign(posteriors: np.ndarray) -> tuple[int, float]:
    """A file's cluster and confidence from its per-step posteriors ``(n_steps, K)``."""
    mean = np.asarray(posteriors, dtype=np.float64).mean(axis=0)
    k = int(mean.argmax())
    return k, float(mean[k])


@dataclass(frozen=True)
class HeadMerge:
    """How the head's clusters map onto the run's clusters.

    Attributes
    ----------
    mapping : tuple of int [length = head clusters]
        The run's cluster of each head cluster; clusters are numbered 0..k-1 from the most files to
        the fewest.
    k : int
        The run's number of clusters (``auto``: the chosen one).
    requested : int or "auto"
        ``model.n_clusters`` as given.
    rule : str
        How ``k`` was chosen (``given`` for an integer).
    curve : dict of int to float
        ``auto``: the criterion at every candidate k (the normalised distance below the chord of
        the scatter curve; the chosen k has the largest); empty for an integer.
    scatter : dict of int to float
        The clips' within-cluster sum of squares at every candidate k (unit-length clip embeddings).
    """

    mapping: tuple[int, ...]
    k: int
    requested: int | str = "auto"
    rule: str = "given"
    curve: dict[int, float] = field(default_factory=dict)
    scatter: dict[int, float] = field(default_factory=dict)

    def merge(self, posteriors: np.ndarray) -> np.ndarray:
        """Head posteriors ``(n, head clusters)`` -> the run's ``(n, k)`` (sums of merged columns)."""
        p = np.asarray(posteriors)
        return _merged(p, np.asarray(self.mapping), self.k, dtype=p.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "requested": self.requested, "rule": self.rule, "mapping": list(self.mapping),
                "curve": {str(k): round(v, 6) for k, v in self.curve.items()},
                "scatter": {str(k): round(v, 6) for k, v in self.scatter.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HeadMerge":
        return cls(tuple(int(c) for c in d["mapping"]), int(d["k"]), d.get("requested", d["k"]),
                   d.get("rule", "given"), {int(k): float(v) for k, v in d.get("curve", {}).items()},
                   {int(k): float(v) for k, v in d.get("scatter", {}).items()})

    @classmethod
    def identity(cls, n_clusters: int) -> "HeadMerge":
        """No merging (models saved before heads were merged)."""
        return cls(tuple(range(n_clusters)), n_clusters, n_clusters)


def ward_partitions(clip_posteriors: np.ndarray, clip_embeddings: np.ndarray) -> dict[int, np.ndarray]:
    """Every partition of the head clusters along a weighted Ward hierarchy of their centroids.

    Parameters
    ----------
    clip_posteriors : np.ndarray [shape=(n_files, n_head)]
        Each file's mean posterior over the head's clusters (the soft weight of the file in each).
    clip_embeddings : np.ndarray [shape=(n_files, D)]
        Each file's representation, e.g. its unit-length mean embedding.

    Returns
    -------
    dict of int to np.ndarray [shape=(n_head,)]
        For k = n_head down to 1: the group (0..k-1, in no particular order) of every head cluster.
        Each merge joins the two groups whose union raises the within-group sum of squares least
        (Ward), with groups weighted by their posterior mass; empty head clusters go first.
    """
    p = np.asarray(clip_posteriors, dtype=np.float64)
    x = np.asarray(clip_embeddings, dtype=np.float64)
    n_head = p.shape[1]
    mass = p.sum(axis=0) + 1e-12
    centroid = (p.T @ x) / mass[:, None]  # (n_head, D)
    group = np.arange(n_head)
    alive = list(range(n_head))
    out = {n_head: _compact(group)}
    while len(alive) > 1:
        m, c = mass[alive], centroid[alive]
        d2 = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        cost = m[:, None] * m[None, :] / (m[:, None] + m[None, :]) * d2
        cost[np.tril_indices(len(alive))] = np.inf
        i, j = np.unravel_index(np.argmin(cost), cost.shape)
        a, b = alive[i], alive[j]
        centroid[a] = (mass[a] * centroid[a] + mass[b] * centroid[b]) / (mass[a] + mass[b])
        mass[a] += mass[b]
        group[group == b] = a
        alive.remove(b)
        out[len(alive)] = _compact(group)
    return out


def _compact(group: np.ndarray) -> np.ndarray:
    return np.unique(group, return_inverse=True)[1].astype(np.int64)


def within_scatter(x: np.ndarray, labels: np.ndarray) -> float:
    """Sum over clusters of the squared distances of the members ``x`` ``(n, D)`` to their mean."""
    total = 0.0
    for c in np.unique(labels):
        xc = x[labels == c]
        total += float(((xc - xc.mean(axis=0)) ** 2).sum())
    return total


def knee(ks: np.ndarray, values: np.ndarray) -> tuple[int, np.ndarray]:
    """The knee of a decreasing curve (Kneedle): the k farthest below the chord from its first to last point.

    Returns the chosen k and each k's normalised distance below the chord (all zero for a flat
    curve, where the smallest k is chosen).
    """
    ks = np.asarray(ks, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    span = v.max() - v.min()
    if len(ks) < 3 or span <= 1e-12 * max(abs(v.max()), 1.0):
        return int(ks[0]), np.zeros(len(ks))
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    gap = (1.0 - x) - (v - v.min()) / span
    return int(ks[int(np.argmax(gap))]), gap


def merge_heads(clip_posteriors: np.ndarray, clip_embeddings: np.ndarray, *, n_clusters: int | str) -> HeadMerge:
    """Merge the head's clusters into ``n_clusters`` (an integer, or ``"auto"``: chosen at the knee).

    Parameters
    ----------
    clip_posteriors : np.ndarray [shape=(n_files, n_head)]
        Each file's mean posterior over the head's clusters.
    clip_embeddings : np.ndarray [shape=(n_files, D)]
        Each file's mean embedding; made unit-length here (the scale of an embedding says nothing
        about its kind).
    n_clusters : int or "auto"
        An integer above the head's size keeps the head as it is.

    Returns
    -------
    HeadMerge
        Clusters numbered from the most files to the fewest (each file counted in the cluster of
        the argmax of its merged posterior).
    """
    p = np.asarray(clip_posteriors, dtype=np.float64)
    x = np.asarray(clip_embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n_head = p.shape[1]
    parts = ward_partitions(p, x)
    if n_clusters == "auto":
        ks = np.arange(1, min(n_head, len(p)) + 1)  # no more clusters than files
        scatter = np.array([within_scatter(x, _merged(p, parts[k], k).argmax(axis=1)) for k in ks])
        k, gap = knee(ks, scatter)
        if len(ks) < 3 and scatter[0] > 1e-9:  # two files that differ: too few for a knee, keep them apart
            k = int(ks[-1])
        curve = {int(a): float(b) for a, b in zip(ks, gap)}
        scat = {int(a): float(b) for a, b in zip(ks, scatter)}
        rule = "knee of the within-cluster scatter over a Ward merge of the head's clusters"
    else:
        k, curve, scat, rule = min(int(n_clusters), n_head), {}, {}, "given"
    group = parts[k]
    # Number clusters from the most files to the fewest (ties: more posterior mass first).
    merged = _merged(p, group, k)
    counts = np.bincount(merged.argmax(axis=1), minlength=k)
    order = np.lexsort((-merged.sum(axis=0), -counts))  # new cluster i = old cluster order[i]
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return HeadMerge(tuple(int(rank[g]) for g in group), k, n_clusters, rule, curve, scat)


def _merged(p: np.ndarray, group: np.ndarray, k: int, *, dtype=np.float64) -> np.ndarray:
    """Columns of ``p`` ``(n, head)`` summed by ``group`` (each head column's cluster) into ``(n, k)``."""
    out = np.zeros((p.shape[0], k), dtype=dtype)
    np.add.at(out.T, group, p.T)
    return out


def write_clusters(rows: Iterable[Assignment], out_path: Path) -> None:
    """Write ``clusters.csv`` atomically, one row per processed file."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CLUSTER_COLUMNS)
    for r in rows:
        w.writerow([r.path, r.cluster, f"{r.confidence:.6f}", f"{r.duration_s:.6f}", r.name])
    atomic_write_text(out_path, buf.getvalue())


def read_clusters(path: Path) -> list[Assignment]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [Assignment(r["path"], int(r["cluster"]), float(r["confidence"]), float(r["duration_s"]),
                           r.get("name") or r["path"], i) for i, r in enumerate(csv.DictReader(fh))]
