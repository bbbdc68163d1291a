"""Labelled folders for the benchmark and probe scripts: ``labels.csv`` rows, their files and features.

A labelled folder holds ``labels.csv`` with ``filename,label`` (the shared sets; fsdd adds ``speaker``)
or ``path,label`` (the corpus's validation package), paths relative to the folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

DATA_ENV = "SOUND_CLUSTER_DATA"


def data_folder(sub: str = "") -> Path | None:
    """The labelled data folder from ``$SOUND_CLUSTER_DATA`` (with ``sub`` under it), or None when it is not set.

    It holds ``fsdd/``, ``instruments/`` and ``drums/``, each with ``labels.csv``.
    """
    import os

    root = os.environ.get(DATA_ENV)
    return None if not root else Path(root).expanduser() / sub


def read_labels(folder: Path) -> tuple[list[dict[str, str]], list[Path]]:
    """The rows of ``folder/labels.csv`` and the audio file each names, in file order."""
    with open(folder / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return rows, [folder / (r.get("filename") or r["path"]) for r in rows]


def speakers_of(rows: list[dict[str, str]]) -> list[str] | None:
    """Each row's ``speaker``, or None where labels.csv has no such column (every set but fsdd)."""
    return [r["speaker"] for r in rows] if rows and "speaker" in rows[0] else None


def labelled_features(folder: Path, *, params) -> tuple[list, list[dict[str, str]], int]:
    """Features of a labelled folder's clips through the run's feature cache.

    Parameters
    ----------
    folder : Path
        A labelled folder.
    params : sound_cluster.config.Params
        A run's parameters: ``params.features`` (cache and settings) and ``params.executor``.

    Returns
    -------
    feats : list of sound_cluster.ingest.extract.FileFeatures
        The clips whose features could be made, in file order.
    rows : list of dict
        Their ``labels.csv`` rows.
    skipped : int
        Clips left out (too short or unreadable).
    """
    from sound_cluster.ingest.features import FeatureCache
    from sound_cluster.run.pipeline import extract_files

    rows, files = read_labels(folder)
    cache = FeatureCache(params.features.resolved_cache_dir(), params=params.features)
    cache.prepare()
    made = {f.path: f for f in extract_files(files, params=params, cache=cache)[0]}
    keep = [i for i, p in enumerate(files) if p in made]
    return [made[files[i]] for i in keep], [rows[i] for i in keep], len(files) - len(keep)
