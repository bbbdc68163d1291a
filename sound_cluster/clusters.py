"""Per-file cluster assignments: computing them from posteriors and the ``clusters.csv`` table."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .io_utils import atomic_write_text

CLUSTER_COLUMNS = ("path", "cluster", "confidence", "duration_s")


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
    """

    path: str
    cluster: int
    confidence: float
    duration_s: float


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
        w.writerow([r.path, r.cluster, f"{r.confidence:.6f}", f"{r.duration_s:.6f}"])
    atomic_write_text(out_path, buf.getvalue())


def read_clusters(path: Path) -> list[Assignment]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [Assignment(r["path"], int(r["cluster"]), float(r["confidence"]), float(r["duration_s"]))
                for r in csv.DictReader(fh)]
