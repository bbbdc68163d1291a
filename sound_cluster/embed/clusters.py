"""Per-file cluster assignments: the files' clusters (K chosen or given), each file's cluster from
its posteriors, and the ``clusters.csv`` table.

The clusters are found among the files themselves: Ward's hierarchy over the files' clip
embeddings (the unit-length mean of each file's step embeddings), cut at K. Ward's clusters need
not be of equal size, as real folders are not (the clustering loss asks for equal clusters, and
the argmax of a head trained with it threw away what the embedding knew: measured in
BENCHMARKS.md). ``model.n_clusters=auto`` chooses K at the knee of the within-cluster scatter
over the cuts K = 1..``model.max_clusters``, on a log scale where the folder holds enough units
(Satopaa et al. 2011, "Kneedle"; :func:`choose_k`); the
hierarchy is kept with the models, so ``task=recluster`` cuts it at another K in seconds. The encoder's
cluster head is then trained to give every file's steps its cluster (a self-labelling pass, as in
SCAN; :mod:`sound_cluster.embed.head`), so posteriors, trees and clusters.csv agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from sound_cluster.io_utils import (
    atomic_open,
    atomic_write_text,
    csv_text,
    read_arrays,
    read_table,
    spreadsheet_cell,
)

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


# Above this many units the scatter of every cut comes from per-leaf sums (:func:`scatter_by_sums`): the same
# quantity, whose rounding differs from the direct sum's only far below the knee's resolution.
SCATTER_BY_SUMS_ABOVE = 20000


def scatter_by_sums(h: "Hierarchy", ks) -> np.ndarray:
    """:func:`within_scatter` of the hierarchy cut at each of ``ks``, from per-leaf sums.

    ``sum ||x - mean_c||^2 = sum ||x||^2 - sum_c ||S_c||^2 / n_c`` with ``S_c`` the sum of cluster ``c``'s
    members: the units are summed once per leaf of the hierarchy, and each cut adds up leaves, so a million
    units cost one pass, not one per cluster per K.
    """
    n_leaves = len(h.tree) + 1
    sums = np.zeros((n_leaves, h.x.shape[1]))
    np.add.at(sums, h.item, h.x)
    counts = np.bincount(h.item, minlength=n_leaves).astype(np.float64)
    total = float(np.einsum("ij,ij->", h.x, h.x))
    from scipy.cluster.hierarchy import fcluster

    out = []
    for k in ks:
        leaf_cluster = (fcluster(h.tree, int(k), criterion="maxclust") - 1) if len(h.tree) else np.zeros(1, int)
        m = int(leaf_cluster.max()) + 1
        cs = np.zeros((m, sums.shape[1]))
        np.add.at(cs, leaf_cluster, sums)
        cn = np.bincount(leaf_cluster, weights=counts, minlength=m)
        keep = cn > 0
        out.append(max(total - float((np.einsum("ij,ij->i", cs[keep], cs[keep]) / cn[keep]).sum()), 0.0))
    return np.array(out)


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


RULE_LOG = "knee of the log within-cluster scatter over Ward's hierarchy of the units"
RULE_LINEAR = ("knee of the within-cluster scatter over Ward's hierarchy of the units (fewer than "
               "4 units per candidate K for the log scale)")


@dataclass(frozen=True)
class Hierarchy:
    """Ward's hierarchy over a run's units, kept with its models (``models/hierarchy.npz``) so any K is a cut.

    Attributes
    ----------
    x : np.ndarray [shape=(n_units, D), dtype=float64]
        The units' embeddings, unit length, as clustered.
    tree : np.ndarray [shape=(n_nodes - 1, 4)]
        scipy's linkage matrix over the hierarchy's leaves.
    item : np.ndarray [shape=(n_units,), dtype=int64]
        Each unit's leaf: the unit itself, or above ``max_exact`` units its k-means centroid.
    """

    x: np.ndarray
    tree: np.ndarray
    item: np.ndarray

    def cut(self, k: int) -> np.ndarray:
        """Each unit's cluster (0-based, in scipy's order) when the hierarchy is cut into ``k`` clusters."""
        from scipy.cluster.hierarchy import fcluster

        if len(self.tree) == 0:  # one unit
            return np.zeros(len(self.item), dtype=np.int64)
        return (fcluster(self.tree, k, criterion="maxclust") - 1)[self.item]

    def candidates(self, max_clusters: int) -> np.ndarray:
        """The K that ``auto`` considers: 1..``max_clusters``, no more than there are units."""
        return np.arange(1, min(max_clusters, len(self.x)) + 1)

    def save(self, path: Path) -> None:
        with atomic_open(path, "wb", fsync=False) as fh:
            np.savez(fh, x=self.x, tree=self.tree, item=self.item)

    @classmethod
    def load(cls, path: Path) -> "Hierarchy":
        """Read a saved hierarchy and check that its arrays fit together.

        Raises
        ------
        OSError, ValueError
            Unreadable, or arrays of the wrong shape, non-finite, a linkage scipy calls invalid, leaves out of range.
        """
        from scipy.cluster.hierarchy import is_valid_linkage

        z = read_arrays(path, ("x", "tree", "item"))
        x, tree, item = z["x"], z["tree"], z["item"]
        if x.ndim != 2 or x.dtype.kind != "f" or not np.isfinite(x).all() or len(x) == 0:
            raise ValueError(f"hierarchy: x must be a finite (n_units, D) float array, got {x.shape} {x.dtype}")
        if item.shape != (len(x),) or item.dtype.kind not in "iu":
            raise ValueError(f"hierarchy: item must be {len(x)} integers, got {item.shape} {item.dtype}")
        n_leaves = len(tree) + 1
        if len(tree) and (tree.dtype.kind != "f" or not is_valid_linkage(tree)):
            raise ValueError("hierarchy: tree is not a valid linkage matrix")
        if item.min() < 0 or item.max() >= n_leaves:
            raise ValueError(f"hierarchy: item holds leaves outside 0..{n_leaves - 1}")
        return cls(x, tree, item.astype(np.int64))


def unit_length(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` [shape=(n, D)] scaled to unit length, as float64 (as :func:`ward_hierarchy` clusters them)."""
    x = np.asarray(vectors, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def ward_hierarchy(vectors: np.ndarray, *, max_exact: int = 4000, seed: int = 0) -> Hierarchy:
    """Ward's hierarchy over unit embeddings.

    Parameters
    ----------
    vectors : np.ndarray [shape=(n_units, D)]
        Each unit's embedding; made unit-length here (its scale says nothing about its kind).
    max_exact : int
        Above this many units the hierarchy is built over the centroids of ``max_exact`` k-means
        clusters of the units (each centroid counted once), so memory stays at ``max_exact ** 2``
        distances whatever the folder's size.
    seed : int
        Seeds that k-means (the hierarchy itself is deterministic).
    """
    return ward_over(unit_length(vectors), max_exact=max_exact, seed=seed)


def ward_over(x: np.ndarray, *, max_exact: int = 4000, seed: int = 0) -> Hierarchy:
    """:func:`ward_hierarchy` of embeddings already at unit length (:func:`unit_length`), kept as the hierarchy's
    ``x`` without a copy: a caller holding many units lets its own copy go before k-means runs."""
    from scipy.cluster.hierarchy import linkage

    n = len(x)
    if n == 1:
        return Hierarchy(x, np.zeros((0, 4)), np.zeros(1, dtype=np.int64))
    if n > max_exact:
        from sklearn.cluster import MiniBatchKMeans

        micro = MiniBatchKMeans(max_exact, random_state=seed, n_init=1, batch_size=4096).fit(x)
        nodes, item = micro.cluster_centers_, micro.labels_.astype(np.int64)
    else:
        nodes, item = x, np.arange(n, dtype=np.int64)
    return Hierarchy(x, linkage(nodes, method="ward"), item)


NEAR_SHARE = 0.01  # candidates whose criterion is within this share of the chosen K's are "as good"


def near_choice(record: "ClusterRecord") -> tuple[int, int]:
    """The run of K around the chosen one whose criterion is within :data:`NEAR_SHARE` of its value.

    Returns ``(k, k)`` for a given K or a single clear choice.
    """
    crit = record.curve
    if record.k not in crit:
        return record.k, record.k
    floor = crit[record.k] - NEAR_SHARE * abs(crit[record.k])
    lo = hi = record.k
    while lo - 1 in crit and crit[lo - 1] >= floor:
        lo -= 1
    while hi + 1 in crit and crit[hi + 1] >= floor:
        hi += 1
    return lo, hi


def explain_k(record: "ClusterRecord", *, n_units: int | None = None, models: str | None = None) -> str:
    """Why the run has K clusters, in one sentence a user reads (the log, the report, summary.json).

    Parameters
    ----------
    n_units : int, optional
        How many units the hierarchy held.
    models : str, optional
        ``task=apply``: the models folder K came from.
    """
    what = "sounds" if record.unit == "segment" else "files"
    if models is not None:
        return f"K={record.k} comes with the models ({models}); apply keeps their clusters"
    if record.requested != "auto":
        return f"K={record.k} as given (model.n_clusters={record.requested})"
    if not record.curve or len(record.curve) < 3:
        return f"K={record.k}: {record.rule}"
    ks = sorted(record.curve)
    held = f" of the {n_units} {what}" if n_units else f" of the {what}"
    text = (f"K={record.k} chosen from the data: Ward's hierarchy{held} was cut at every K from {ks[0]} to "
            f"{ks[-1]}, and K={record.k} is where splitting further stops paying (the knee of the within-cluster "
            "scatter)")
    lo, hi = near_choice(record)
    if hi > lo:
        text += (f"; K from {lo} to {hi} score within {NEAR_SHARE:.0%} of it, so the data do not single out one K "
                 "there: any of them is as defensible (task=recluster cuts the run at another in seconds)")
    return text


UNITS_PER_CANDIDATE = 4  # the log scale needs this many units per candidate K (see choose_k)


def choose_k(h: Hierarchy, *, max_clusters: int) -> tuple[int, dict[int, float], dict[int, float], str]:
    """``model.n_clusters=auto``: K at the knee (Kneedle) of the within-cluster scatter W(K) of Ward's cuts.

    With at least :data:`UNITS_PER_CANDIDATE` units per candidate K, the knee of ``log W(K)``: on the
    scatter itself the first big drop (families of kinds: instrument families before instruments)
    hides the rest, and its logarithm weighs each drop by what is left. With fewer units the cuts
    near the last candidate hold one or two units each and ``log W`` plunges there, which puts the
    knee at the first few K (the bundled demo, 3 clips per word: K = 1), so the knee of ``W(K)``
    itself is taken. Chosen by ``scripts/probe_k_rules.py`` (BENCHMARKS.md). The cut into as many
    clusters as units is left out (its scatter is zero); two units that differ stay apart.

    Returns
    -------
    k : int
    criterion : dict of int to float
        Each candidate's normalised distance below the chord (the chosen k has the largest).
    scatter : dict of int to float
        Each candidate's within-cluster sum of squares (unit-length embeddings).
    rule : str
        Which curve the knee was taken on.
    """
    n = len(h.x)
    if n == 1:
        return 1, {1: 0.0}, {1: 0.0}, "one unit"
    ks = h.candidates(max_clusters)
    if n > SCATTER_BY_SUMS_ABOVE:  # one pass over the units for all K, not one per cluster per K
        scatter = scatter_by_sums(h, ks)
    else:
        scatter = np.array([within_scatter(h.x, h.cut(int(k))) for k in ks])
    scat = {int(a): float(b) for a, b in zip(ks, scatter)}
    if len(ks) < 3:  # two units: too few for a knee; apart when they differ
        k = int(ks[-1]) if scatter[0] > 1e-9 else 1
        return k, {int(a): float(a == k) for a in ks}, scat, "two units"
    use = ks < n if ks[-1] == n else np.ones(len(ks), bool)
    if use.sum() >= 3 and n >= UNITS_PER_CANDIDATE * int(ks[use][-1]):
        floor = max(float(scatter[0]), 1e-12) * 1e-9  # identical units: a scatter of zero
        k, gap = knee(ks[use], np.log(np.maximum(scatter[use], floor)))
        crit = dict.fromkeys((int(a) for a in ks), 0.0)
        crit.update({int(a): float(g) for a, g in zip(ks[use], gap)})
        return k, crit, scat, RULE_LOG
    k, gap = knee(ks, scatter)
    return k, {int(a): float(g) for a, g in zip(ks, gap)}, scat, RULE_LINEAR


def clusters_at(h: Hierarchy, *, n_clusters: int | str, max_clusters: int) -> ClipClusters:
    """The units' clusters: the hierarchy cut at ``n_clusters`` (``auto``: :func:`choose_k`).

    An integer larger than the number of units gives one cluster per unit. Clusters are numbered
    from the most units to the fewest (ties: the cluster of the earlier unit first).
    """
    n = len(h.x)
    if n_clusters == "auto":
        k, curve, scat, rule = choose_k(h, max_clusters=max_clusters)
    else:
        k, curve, scat, rule = min(int(n_clusters), n), {}, {}, "given"
    labels = h.cut(k) if n > 1 else np.zeros(1, dtype=np.int64)
    found, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    rank = np.empty(int(found.max()) + 1, dtype=np.int64)
    rank[found[order]] = np.arange(len(found))
    # Identical units can leave fewer clusters than asked for: k is what the cut holds.
    return ClipClusters(rank[labels], len(found), n_clusters, rule, curve, scat)


def cluster_clips(clip_embeddings: np.ndarray, *, n_clusters: int | str, max_clusters: int,
                  max_exact: int = 4000, seed: int = 0) -> ClipClusters:
    """Cluster units (files, or the sounds inside them) by Ward's hierarchy over their embeddings.

    :func:`ward_hierarchy` then :func:`clusters_at`; see there for the parameters.
    """
    return clusters_at(ward_hierarchy(clip_embeddings, max_exact=max_exact, seed=seed), n_clusters=n_clusters,
                       max_clusters=max_clusters)


def write_clusters(rows: Iterable[Assignment], out_path: Path) -> None:
    """Write ``clusters.csv`` atomically, one row per processed file."""
    atomic_write_text(out_path, csv_text(CLUSTER_COLUMNS, (
        [spreadsheet_cell(r.path), r.cluster, f"{r.confidence:.6f}", f"{r.duration_s:.6f}", spreadsheet_cell(r.name)]
        for r in rows)))


def read_clusters(path: Path) -> list[Assignment]:
    """``clusters.csv``, as :func:`write_clusters` wrote it.

    Raises
    ------
    OSError, ValueError
        Not a readable table of the columns path, cluster, confidence, duration_s (and name).
    """
    try:
        return [Assignment(r["path"], int(r["cluster"]), float(r["confidence"]), float(r["duration_s"]),
                           r.get("name") or r["path"], i) for i, r in enumerate(read_table(path))]
    except KeyError as err:
        raise ValueError(f"{Path(path).name} lacks the column {err}") from None
