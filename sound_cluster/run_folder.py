"""RunFolder: the one owner of a run folder's layout (README, "Outputs"; DESIGN.md section 4).

Every path of a run folder is named here, and the pipeline, the outputs, ``task=recluster``,
``task=apply``, the Python API and the scripts reach a run's files through it, so the layout is
stated once. Per-file outputs are named by the file's output name (``clusters.csv``'s ``name``
column, :mod:`sound_cluster.ingest.names`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sound_cluster.io_utils import atomic_open, atomic_write_json, read_arrays, read_json_object

SUMMARY = "summary.json"
CLUSTERS = "clusters.csv"
FAILURES = "failures.csv"
SEGMENTS = "segments.csv"
REPORT = "report.html"
# What a run writes into its folder; a folder holding any of these already holds a run.
OUTPUTS = (SUMMARY, CLUSTERS, FAILURES, SEGMENTS, REPORT, "trees", "posteriors", "plots", "models", "tensorboard",
           "report", "jams", "export")


def output_name(name: str) -> str:
    """``name`` if it is an output name: a relative path, ``/``-separated (:mod:`sound_cluster.ingest.names`).

    A name read from a run folder someone else made (``clusters.csv``) must not lead outside it.

    Raises
    ------
    ValueError
        The name is absolute, holds an empty, ``.`` or ``..`` component, or a NUL.
    """
    if not isinstance(name, str) or "\0" in name or any(p in ("", ".", "..") for p in name.split("/")):
        raise ValueError(f"{name!r} is not an output name (a relative path without '..')")
    return name


@dataclass(frozen=True)
class ModelsFolder:
    """A run's ``models/`` folder (``task=apply`` reads one by itself: ``models=DIR``).

    Attributes
    ----------
    dir : Path
    """

    dir: Path

    ENCODER = "embedding.keras"
    MERGE_MODEL = "merge_model.keras"
    OLD_MERGE_MODEL = "rae.keras"  # its name in models saved by earlier versions
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
        """The merge autoencoder: ``merge_model.keras``, or ``rae.keras`` in a folder saved before it was renamed."""
        new, old = self.dir / self.MERGE_MODEL, self.dir / self.OLD_MERGE_MODEL
        return old if not new.is_file() and old.is_file() else new

    def missing_for_apply(self) -> list[str]:
        """What :data:`FOR_APPLY` the folder lacks (the merge autoencoder under either of its names)."""
        return [name for name in self.FOR_APPLY
                if not (self.merge_model if name == self.MERGE_MODEL else self.dir / name).is_file()]

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
        """``params.json``: the feature and model settings the models were trained with.

        Raises
        ------
        OSError, ValueError
            Not a regular file of at most 16 MB holding a JSON object.
        """
        return read_json_object(self.params, max_bytes=16 << 20)


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
    def scratch(self) -> Path:
        """``.scratch/``: what a run keeps on disk only while it runs (each file's fold, from the units to the
        trees); removed when the run ends, also when it fails or is interrupted (a run killed outright leaves it to
        the next run in the folder)."""
        return self.dir / ".scratch"

    @property
    def scratch_encoder(self) -> Path:
        """``.scratch/encoder.keras``: a fit's encoder while the workers embed the files (``executor.inference``)."""
        return self.scratch / "encoder.keras"

    @property
    def trees(self) -> Path:
        """``trees/``: one tree document per file."""
        return self.dir / "trees"

    def tree(self, name: str) -> Path:
        """``trees/<name>.json``."""
        return self.trees / f"{output_name(name)}.json"

    def plot(self, name: str) -> Path:
        """``plots/<name>.png``."""
        return self.dir / "plots" / f"{output_name(name)}.png"

    def posteriors(self, name: str) -> Path:
        """``posteriors/<name>.npz``: ``embedding`` (n_steps, D) and ``posteriors`` (n_steps, K)."""
        return self.dir / "posteriors" / f"{output_name(name)}.npz"

    def audacity(self, name: str) -> Path:
        return self.dir / "export" / "audacity" / f"{output_name(name)}.txt"

    def raven(self, name: str) -> Path:
        return self.dir / "export" / "raven" / f"{output_name(name)}.selections.txt"

    def jams(self, name: str) -> Path:
        return self.dir / "jams" / f"{output_name(name)}.jams"

    def report_image(self, name: str) -> Path:
        """``report/<name>``: one of the report's images."""
        return self.report_files / name

    def report_audio(self, rel: str) -> Path:
        """``report/audio/<rel>.wav``: an excerpt the report plays."""
        return self.report_files / "audio" / f"{rel}.wav"

    def report_snippet(self, name: str, segment: int) -> Path:
        """``report/audio/segments/<name>.<segment>.wav``: one segment's excerpt."""
        return self.report_files / "audio" / "segments" / f"{output_name(name)}.{int(segment)}.wav"

    def rel(self, path: Path) -> str:
        """``path`` (inside the folder) relative to it, with '/' separators (the report's links)."""
        return Path(path).relative_to(self.dir).as_posix()

    def outputs_present(self) -> list[str]:
        """The names of :data:`OUTPUTS` that the folder already holds."""
        return [name for name in OUTPUTS if (self.dir / name).exists()]

    def missing_for_recluster(self) -> list[str]:
        """What :data:`FOR_RECLUSTER` the folder lacks."""
        def present(name: str) -> bool:
            if name == f"models/{ModelsFolder.MERGE_MODEL}":  # under either of its names
                return self.models.merge_model.is_file()
            return (self.dir / name).is_dir() if name == "posteriors" else (self.dir / name).is_file()

        return [name for name in self.FOR_RECLUSTER if not present(name)]

    def read_summary(self) -> dict[str, Any]:
        """``summary.json`` (a regular file of at most 64 MB holding a JSON object).

        Raises
        ------
        OSError, ValueError
        """
        return read_json_object(self.summary, max_bytes=64 << 20)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary, summary)

    def read_step_embeddings(self, name: str) -> np.ndarray:
        """A file's step embeddings ``(n_steps, D)`` from ``posteriors/<name>.npz``.

        Raises
        ------
        OSError, ValueError
            Missing, not a regular file, not an npz of finite 2-D float arrays, or a name that is not an output name.
        """
        return self._read_steps(name, ("embedding",))[0]

    def read_posteriors(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """A file's step embeddings ``(n_steps, D)`` and posteriors ``(n_steps, K)`` (errors: as above)."""
        emb, post = self._read_steps(name, ("embedding", "posteriors"))
        if len(emb) != len(post):
            raise ValueError(f"{len(emb)} step embeddings but {len(post)} posteriors")
        return emb, post

    def _read_steps(self, name: str, keys: tuple[str, ...]) -> list[np.ndarray]:
        """The arrays ``keys`` of ``posteriors/<name>.npz`` (only those read), each a finite 2-D float array."""
        z = read_arrays(self.posteriors(name), keys)
        for key, a in z.items():
            if a.ndim != 2 or a.dtype.kind != "f" or not np.isfinite(a).all():
                raise ValueError(f"{key} is not a finite 2-D float array (shape {a.shape}, dtype {a.dtype})")
        return [z[k] for k in keys]

    def write_posteriors(self, name: str, *, embedding: np.ndarray, posteriors: np.ndarray) -> None:
        with atomic_open(self.posteriors(name), "wb", fsync=False) as fh:
            np.savez(fh, embedding=embedding, posteriors=posteriors)
