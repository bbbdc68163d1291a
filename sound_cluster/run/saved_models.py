"""What a fit keeps in ``models/`` besides the Keras models: the record of K and the units it clustered."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sound_cluster.embed.clusters import ClusterRecord
from sound_cluster.errors import ConfigError
from sound_cluster.io_utils import atomic_open, read_json_object
from sound_cluster.run_folder import ModelsFolder


def load_record(models: ModelsFolder, *, head_clusters: int) -> ClusterRecord:
    """The record a fit saved with its models (``models/clusters.json``), checked against the encoder's head.

    Raises
    ------
    ConfigError
        The record is missing or unreadable, or its K is not the head's number of outputs.
    """
    path = models.clusters
    try:
        record = ClusterRecord.from_dict(read_json_object(path, max_bytes=64 << 20))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"models: cannot read {path}: {err}") from None
    if record.k != head_clusters:
        raise ConfigError(f"models: {path} records {record.k} clusters, but the encoder's head has {head_clusters}")
    return record


def save_units(path: Path, *, vectors: np.ndarray, labels: np.ndarray, files: list[str], units,
                n_steps: list[int]) -> None:
    """``models/units.npz``: what was clustered (each unit's file, step span and embedding) and its cluster.

    Arrays: ``vectors`` (n_units, D) float32, unit length as clustered; ``cluster``, ``unit_file``,
    ``start``, ``end`` (n_units,) int64 (steps, half-open); ``files`` (n_files,) str, the paths of
    clusters.csv. File units span their whole file.

    ``vectors`` must be unit length already (:func:`sound_cluster.embed.clusters.unit_length`, the hierarchy's
    ``x``), so a fit need not keep a second copy of its units' embeddings to save them.
    """
    if units is None:
        file, start, end = np.arange(len(files)), np.zeros(len(files), np.int64), np.asarray(n_steps, np.int64)
    else:
        file, start, end = units.file, units.start, units.end
    v = np.asarray(vectors)
    with atomic_open(path, "wb", fsync=False) as fh:
        np.savez(fh, vectors=v.astype(np.float32), cluster=np.asarray(labels, np.int64), unit_file=np.asarray(file),
                 start=np.asarray(start), end=np.asarray(end), files=np.asarray(files, dtype=str))

