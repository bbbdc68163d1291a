"""Step embeddings on disk, beside the features they come from, one folder per encoder.

A fit embeds every file with the encoder (2.5 s per hour of audio on 2 cores, the costliest stage after the
features). With the shipped encoder kept as it is (the default), the same file gives the same step embeddings in
every run, and a seeded encoder trained again on the same folder gives them again: a run that stops in the middle
and is started again, or a second run over the same folder with other settings for the clusters, reads the
finished files' step embeddings here instead of running the encoder again.

Layout: ``<features cache>/<settings key>/steps/<encoder digest>/<content key>.npy`` (the content key is the
features' own file name). The digest covers every layer that the step embeddings pass through (names, settings,
weights), the code that runs them and the library versions, so another encoder or version never reads these.
Only the most recently used :data:`KEEP_ENCODERS` encoders' folders are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import keras
import numpy as np

from sound_cluster.embed import encoder as encoder_module
from sound_cluster.embed import inference
from sound_cluster.io_utils import atomic_open, remove_stale_temps

log = logging.getLogger(__name__)

STEPS_FOLDER = "steps"
STEPS_FORMAT = 1
KEEP_ENCODERS = 4  # a trained encoder is new in every run that trains it: older folders go
HEAD_LAYERS = ("logits",)  # the cluster head: the step embeddings do not pass through it


def encoder_digest(encoder: keras.Model) -> str:
    """A hash of what makes ``encoder``'s step embeddings: its layers but the head, their settings and weights, the
    code of the layers and of the inference (any edit to either makes new entries), and the library versions."""
    import tensorflow as tf

    h = hashlib.sha256(json.dumps({"format": STEPS_FORMAT, "keras": keras.__version__, "tensorflow": tf.__version__,
                                   "numpy": np.__version__}).encode())
    for module in (encoder_module, inference):
        h.update(Path(module.__file__).read_bytes())
    for layer in encoder.layers:
        if layer.name in HEAD_LAYERS:
            continue
        h.update(layer.name.encode())
        h.update(json.dumps(layer.get_config(), sort_keys=True, default=str).encode())
        for w in layer.get_weights():
            h.update(str((w.dtype.str, w.shape)).encode())
            h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:24]


class StepCache:
    """One encoder's step embeddings of the files whose features lie in one features folder.

    Parameters
    ----------
    features_dir : Path
        The folder of the features (:attr:`sound_cluster.ingest.features.FeatureCache.dir`).
    encoder : keras.Model
        Built by :func:`sound_cluster.embed.encoder.build_encoder`; its ``embedding`` output is cached.
    """

    def __init__(self, features_dir: Path, *, encoder: keras.Model) -> None:
        self.root = Path(features_dir) / STEPS_FOLDER
        self.dir = self.root / encoder_digest(encoder)
        self.dim = int(encoder.get_layer("embedding").output.shape[-1])
        self.writable = True

    @classmethod
    def at(cls, folder: Path, *, dim: int) -> "StepCache":
        """The cache whose encoder folder is ``folder`` (:attr:`dir` of one made from the encoder), as a worker
        process opens it without the encoder's weights at hand; :meth:`prepare` is the main process's."""
        cache = cls.__new__(cls)
        cache.dir, cache.root, cache.dim, cache.writable = Path(folder), Path(folder).parent, int(dim), True
        return cache

    def prepare(self) -> None:
        """Create this encoder's folder, mark it used, remove temporary files of killed runs and the folders
        of all but the :data:`KEEP_ENCODERS` most recently used encoders."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            os.utime(self.dir)
            remove_stale_temps(self.dir)
            others = sorted((p for p in self.root.iterdir() if p.is_dir() and p != self.dir),
                            key=lambda p: p.stat().st_mtime, reverse=True)
            for old in others[KEEP_ENCODERS - 1:]:
                shutil.rmtree(old, ignore_errors=True)
        except OSError as err:  # a read-only cache: embed every file, as without one
            log.warning("step embeddings are not cached (%s): %s", self.dir, err)
            self.writable = False

    def path(self, frames_path: Path) -> Path:
        return self.dir / Path(frames_path).name

    def get(self, frames_path: Path) -> np.ndarray | None:
        """The cached step embeddings of the file whose features are ``frames_path``, or None.

        An entry that is not a float32 array of ``(n_steps, dim)`` (damaged outside the atomic writes) is
        logged and None is returned, so the file is embedded again and the entry replaced.
        """
        p = self.path(frames_path)
        if not p.exists():
            return None
        try:
            arr = np.load(p, allow_pickle=False)
            if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[1] != self.dim or len(arr) == 0:
                raise ValueError(f"holds {arr.dtype} {arr.shape}, expected float32 (n_steps, {self.dim})")
            return arr
        except (OSError, ValueError, EOFError) as err:
            log.warning("embedding again a damaged step cache entry %s: %s", p, err)
            return None

    def put(self, frames_path: Path, steps: np.ndarray) -> bool:
        """Store ``steps`` atomically (no fsync: a torn entry fails :meth:`get` and is made again); whether it was."""
        if not self.writable:
            return False
        try:
            with atomic_open(self.path(frames_path), "wb", fsync=False) as fh:
                np.save(fh, np.ascontiguousarray(steps, dtype=np.float32), allow_pickle=False)
        except OSError as err:  # a full disk: the run goes on without the cache
            log.warning("step embeddings are no longer cached (%s): %s", self.dir, err)
            self.writable = False
            return False
        return True
