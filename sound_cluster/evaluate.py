"""Scores against references: clip labels (NMI, ARI, accuracy under the best cluster-to-label matching)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import ConfigError


def clustering_scores(labels: Sequence, clusters: Sequence[int]) -> dict[str, float]:
    """NMI, ARI and accuracy of ``clusters`` against ``labels``.

    Accuracy matches clusters to labels one-to-one (Hungarian algorithm on the contingency
    table); with more clusters than labels the unmatched clusters count as errors.

    Returns
    -------
    dict
        ``nmi``, ``ari``, ``acc`` in [0, 1] (ARI may be slightly negative) and ``n``, the count.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.metrics.cluster import contingency_matrix

    labels = np.asarray([str(x) for x in labels])
    clusters = np.asarray(clusters)
    if labels.size == 0:
        return {"nmi": float("nan"), "ari": float("nan"), "acc": float("nan"), "n": 0}
    table = contingency_matrix(labels, clusters)  # (n_labels, n_clusters)
    rows, cols = linear_sum_assignment(-table)
    return {
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
        "acc": float(table[rows, cols].sum() / labels.size),
        "n": int(labels.size),
    }


def read_labels(path: Path) -> dict[str, str]:
    """``path,label`` CSV -> {relative path: label}. The first row must be that header.

    Raises
    ------
    ConfigError
        The file is missing or has no ``path`` and ``label`` columns.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data.labels must be an existing CSV file, got {str(path)!r}")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise ConfigError(f"data.labels file {path} must have columns path,label; got {reader.fieldnames}")
        return {row["path"].replace("\\", "/"): row["label"] for row in reader}


def score_assignments(labels: Mapping[str, str], assignments: Mapping[str, int]) -> dict[str, float] | None:
    """Scores over the files that have both a label and a cluster; None when there are none."""
    common = sorted(set(labels) & set(assignments))
    if not common:
        return None
    return clustering_scores([labels[p] for p in common], [assignments[p] for p in common])
