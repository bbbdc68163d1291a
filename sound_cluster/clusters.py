"""Per-file cluster assignments: computing them from posteriors and the ``clusters.csv`` table."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

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
