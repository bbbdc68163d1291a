"""Per-file cluster assignments: the files' clusters (K chosen or given), each file's cluster from
its posteriors, and the ``clusters.csv`` table.

The clusters are found among the files themselves: Ward's hierarchy over the files' clip
embeddings (the unit-length mean of each file's step embeddings), cut at K. Ward's clusters need
not be of equal size, as real folders are not (the clustering loss asks for equal clusters, and
the argmax of a head trained with it threw away what the embedding knew: measured in
BENCHMARKS.md). ``model.n_clusters=auto`` chooses K at the knee of the within-cluster scatter
over the cuts K = 1..``model.max_clusters`` (Satopaa et al. 2011, "Kneedle"). The encoder's
cluster head is then trained to give every file's steps its cluster (a self-labelling pass, as in
SCAN; :mod:`sound_cluster.embed.head`), so posteriors, trees and clusters.csv agree.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from sound_cluster.io_utils import atomic_write_text

# ``name``: the output name of the file's trees/, posteriors/ and plots/ entries (the path itself,
# unless that is not UTF-8 or too long; see :mod:`sound_cluster.ingest.names`).
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
class ClusterRecord:
    """How a fit's K was chosen and what it clustered (``models/clusters.json``).

    Attributes
    ----------
    k : int
        The run's number of clusters (``auto``: the chosen one); the head has k outputs.
    requested : int or "auto"
        ``model.n_clusters`` as given.
    rule : str
        How ``k`` was chosen (``given`` for an integer).
    curve : dict of int to float
        ``auto``: the criterion at every candidate k (the chosen k has the largest); empty for an integer.
    scatter : dict of int to float
        The units' within-cluster sum of squares at every candidate k (unit-length embeddings).
    unit : str
        What was clustered: ``file`` or ``segment`` (:mod:`sound_cluster.segment.units`);
        ``task=apply`` writes segments.csv for segment units.
    sound_length_s : float or None
        Segment units: the typical sound length the fit counted sounds by in files without pauses.
    """

    k: int
    requested: int | str = "auto"
    rule: str = "given"
    curve: dict[int, float] = field(default_factory=dict)
    scatter: dict[int, float] = field(default_factory=dict)
    unit: str = "file"
    sound_length_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "requested": self.requested, "rule": self.rule, "unit": self.unit,
                "sound_length_s": self.sound_length_s,
                "curve": {str(k): round(v, 6) for k, v in self.curve.items()},
                "scatter": {str(k): round(v, 6) for k, v in self.scatter.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ClusterRecord":
        """Read a record; one written with a ``mapping`` (models of sound-cluster 0.1) must map each cluster to itself.

        Raises
        ------
        ValueError
            A key is missing, or the mapping merges clusters (models from before heads of exactly K).
        """
        k = int(d["k"])
        if "mapping" in d and [int(c) for c in d["mapping"]] != list(range(k)):
            raise ValueError("these models merge a wider head's clusters (written before sound-cluster 0.1); "
                             "fit them again")
        return cls(k, d.get("requested", k), d.get("rule", "given"),
                   {int(c): float(v) for c, v in d.get("curve", {}).items()},
                   {int(c): float(v) for c, v in d.get("scatter", {}).items()}, str(d.get("unit", "file")),
                   None if d.get("sound_length_s") is None else float(d["sound_length_s"]))


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


@dataclass(frozen=True)
class ClipClusters:
    """The files' clusters.

    Attributes
    ----------
    labels : np.ndarray [shape=(n_files,), dtype=int64]
        Each file's cluster, numbered 0..k-1 from the most files to the fewest.
    k, requested, rule, curve, scatter
        As in :class:`ClusterRecord`.
    """

    labels: np.ndarray
    k: int
    requested: int | str = "auto"
    rule: str = "given"
    curve: dict[int, float] = field(default_factory=dict)
    scatter: dict[int, float] = field(default_factory=dict)

    def record(self, *, unit: str, sound_length_s: float | None = None) -> ClusterRecord:
        """The record a run keeps (``models/clusters.json``)."""
        return ClusterRecord(self.k, self.requested, self.rule, self.curve, self.scatter, unit, sound_length_s)


def cluster_clips(clip_embeddings: np.ndarray, *, n_clusters: int | str, max_clusters: int,
                  max_exact: int = 4000, seed: int = 0) -> ClipClusters:
    """Cluster files by Ward's hierarchy over their clip embeddings.

    Parameters
    ----------
    clip_embeddings : np.ndarray [shape=(n_files, D)]
        Each file's mean embedding; made unit-length here (its scale says nothing about its kind).
    n_clusters : int or "auto"
        ``auto``: K at the knee of the within-cluster scatter of the cuts K = 1..max_clusters (no
        more than there are files). An integer larger than the number of files gives one
        cluster per file.
    max_clusters : int
        The largest K ``auto`` considers.
    max_exact : int
        Above this many files the hierarchy is built over the centroids of ``max_exact`` k-means
        clusters of the files (each centroid counted once), so memory stays at
        ``max_exact ** 2`` distances whatever the folder's size.
    seed : int
        Seeds that k-means (the hierarchy itself is deterministic).

    Returns
    -------
    ClipClusters
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    x = np.asarray(clip_embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    if n == 1:
        return ClipClusters(np.zeros(1, dtype=np.int64), 1, n_clusters, "one file" if n_clusters == "auto" else "given")
    if n > max_exact:
        from sklearn.cluster import MiniBatchKMeans

        micro = MiniBatchKMeans(max_exact, random_state=seed, n_init=1, batch_size=4096).fit(x)
        nodes, of_file = micro.cluster_centers_, micro.labels_
    else:
        nodes, of_file = x, np.arange(n)
    tree = linkage(nodes, method="ward")

    def cut(k: int) -> np.ndarray:
        return (fcluster(tree, k, criterion="maxclust") - 1)[of_file]

    if n_clusters == "auto":
        ks = np.arange(1, min(max_clusters, n) + 1)
        scatter = np.array([within_scatter(x, cut(int(k))) for k in ks])
        k, gap = knee(ks, scatter)
        if len(ks) < 3 and scatter[0] > 1e-9:  # two files that differ: too few for a knee, keep them apart
            k = int(ks[-1])
        curve = {int(a): float(b) for a, b in zip(ks, gap)}
        scat = {int(a): float(b) for a, b in zip(ks, scatter)}
        rule = "knee of the within-cluster scatter over Ward's hierarchy of the units"
    else:
        k, curve, scat, rule = min(int(n_clusters), n), {}, {}, "given"
    labels = cut(k)
    # Number clusters from the most files to the fewest (ties: the cluster of the earlier file first).
    found, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    rank = np.empty(int(found.max()) + 1, dtype=np.int64)
    rank[found[order]] = np.arange(len(found))
    # Identical files can leave fewer clusters than asked for: k is what the cut holds.
    return ClipClusters(rank[labels], len(found), n_clusters, rule, curve, scat)


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
