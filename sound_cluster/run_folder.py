"""RunFolder: the one owner of a run folder's layout (README, "Outputs"; DESIGN.md section 4).

Every path of a run folder is named here, and the pipeline, the outputs, ``task=recluster``,
``task=apply``, the Python API and the scripts reach a run's files through it, so the layout is
stated once. Per-file outputs are named by the file's output name (``clusters.csv``'s ``name``
column, :mod:`sound_cluster.ingest.names`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sound_cluster.io_utils import atomic_open, atomic_write_json

SUMMARY = "summary.json"
CLUSTERS = "clusters.csv"
FAILURES = "failures.csv"
SEGMENTS = "segments.csv"
REPORT = "report.html"
# What a run writes into its folder; a folder holding any of these already holds a run.
OUTPUTS = (SUMMARY, CLUSTERS, FAILURES, SEGMENTS, REPORT, "trees", "posteriors", "plots", "models", "tensorboard",
           "report", "jams", "export")


@dataclass(frozen=True)
class ModelsFolder:
    """A run's ``models/`` folder (``task=apply`` reads one by itself: ``models=DIR``).

    Attributes
    ----------
    dir : Path
    """

    dir: Path

    ENCODER = "embedding.keras"
    MERGE_MODEL = "rae.keras"
    PARAMS = "params.json"
    CLUSTERS = "clusters.json"
    UNITS = "units.npz"
    HIERARCHY = "hierarchy.npz"
    ENCODER_CARD = "encoder.json"  # task=pretrain's encoder and its card
    PRETRAINED = "encoder.keras"
    # What task=apply needs.
    FOR_APPLY = (ENCODER, MERGE_MODEL, PARAMS, CLUSTERS)

    @property
    def encoder(self) -> Path:
        return self.dir / self.ENCODER

    @property
    def merge_model(self) -> Path:
        return self.dir / self.MERGE_MODEL

    @property
    def params(self) -> Path:
        return self.dir / self.PARAMS

    @property
    def clusters(self) -> Path:
        return self.dir / self.CLUSTERS

    @property
    def units(self) -> Path:
        return self.dir / self.UNITS

    @property
    def hierarchy(self) -> Path:
        return self.dir / self.HIERARCHY

    @property
    def pretrained(self) -> Path:
        return self.dir / self.PRETRAINED

    @property
    def pretrained_card(self) -> Path:
        return self.dir / self.ENCODER_CARD

    @property
    def checkpoint(self) -> Path:
        """``task=pretrain``: the last finished epoch's encoder while it trains."""
        return self.dir / "checkpoint.keras"

    def read_params(self) -> dict[str, Any]:
        """``params.json``: the feature and model settings the models were trained with."""
        return json.loads(self.params.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class RunFolder:
    """A run folder and every path in it.

    Attributes
    ----------
    dir : Path
    """

    dir: Path

    # What task=recluster reads from the run it cuts again (relative paths).
    FOR_RECLUSTER = (SUMMARY, CLUSTERS, "posteriors", *(f"models/{n}" for n in
                                                       (*ModelsFolder.FOR_APPLY, ModelsFolder.UNITS,
                                                        ModelsFolder.HIERARCHY)))

    @property
    def summary(self) -> Path:
        return self.dir / SUMMARY

    @property
    def clusters(self) -> Path:
        return self.dir / CLUSTERS

    @property
    def failures(self) -> Path:
        return self.dir / FAILURES

    @property
    def segments(self) -> Path:
        return self.dir / SEGMENTS

    @property
    def report(self) -> Path:
        return self.dir / REPORT

    @property
    def report_files(self) -> Path:
        """``report/``: the report's images and audio excerpts."""
        return self.dir / "report"

    @property
    def models(self) -> ModelsFolder:
        return ModelsFolder(self.dir / "models")

    @property
    def tensorboard(self) -> Path:
        return self.dir / "tensorboard"

    @property
    def trees(self) -> Path:
        """``trees/``: one tree document per file."""
        return self.dir / "trees"

    def tree(self, name: str) -> Path:
        """``trees/<name>.json``."""
        return self.trees / f"{name}.json"

    def plot(self, name: str) -> Path:
        """``plots/<name>.png``."""
        return self.dir / "plots" / f"{name}.png"

    def posteriors(self, name: str) -> Path:
        """``posteriors/<name>.npz``: ``embedding`` (n_steps, D) and ``posteriors`` (n_steps, K)."""
        return self.dir / "posteriors" / f"{name}.npz"

    def audacity(self, name: str) -> Path:
        return self.dir / "export" / "audacity" / f"{name}.txt"

    def raven(self, name: str) -> Path:
        return self.dir / "export" / "raven" / f"{name}.selections.txt"

    def jams(self, name: str) -> Path:
        return self.dir / "jams" / f"{name}.jams"

    def report_image(self, name: str) -> Path:
        """``report/<name>``: one of the report's images."""
        return self.report_files / name

    def report_audio(self, rel: str) -> Path:
        """``report/audio/<rel>.wav``: an excerpt the report plays."""
        return self.report_files / "audio" / f"{rel}.wav"

    def report_snippet(self, name: str, segment: int) -> Path:
        """``report/audio/segments/<name>.<segment>.wav``: one segment's excerpt."""
        return self.report_files / "audio" / "segments" / f"{name}.{segment}.wav"

    def rel(self, path: Path) -> str:
        """``path`` (inside the folder) relative to it, with '/' separators (the report's links)."""
        return Path(path).relative_to(self.dir).as_posix()

    def outputs_present(self) -> list[str]:
        """The names of :data:`OUTPUTS` that the folder already holds."""
        return [name for name in OUTPUTS if (self.dir / name).exists()]

    def missing_for_recluster(self) -> list[str]:
        """What :data:`FOR_RECLUSTER` the folder lacks."""
        return [name for name in self.FOR_RECLUSTER if not (self.dir / name).exists()]

    def read_summary(self) -> dict[str, Any]:
        """``summary.json``."""
        return json.loads(self.summary.read_text(encoding="utf-8"))

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary, summary)

    def read_step_embeddings(self, name: str) -> np.ndarray:
        """A file's step embeddings ``(n_steps, D)`` from ``posteriors/<name>.npz``."""
        with np.load(self.posteriors(name), allow_pickle=False) as z:
            return z["embedding"]

    def read_posteriors(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A file's step embeddings ``(n_steps, D)`` and posteriors ``(n_steps, K)``."""
        with np.load(self.posteriors(name), allow_pickle=False) as z:
            return z["embedding"], z["posteriors"]

    def write_posteriors(self, name: str, *, embedding: np.ndarray, posteriors: np.ndarray) -> None:
        with atomic_open(self.posteriors(name), "wb", fsync=False) as fh:
            np.savez(fh, embedding=embedding, posteriors=posteriors)
