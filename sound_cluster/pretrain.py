"""``task=pretrain``: train the encoder self-supervised on a large corpus and write it with its card.

The training is the fit's (clustering loss, two-view consistency, contrastive term) with the
settings of ``pretrain.train`` (views farther apart, another recording mixed underneath) and a
head of ``pretrain.n_clusters``. The run folder's ``models/`` receives ``encoder.keras`` and
``encoder.json``, the card: corpus, steps, wall time, machine, final losses, commit, and the
feature and model settings a fit must share to start from it (``model.init=<path>``).
Copying both files into ``sound_cluster/pretrained/`` makes them the shipped encoder.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from .config import Params
from .io_utils import atomic_write_json
from .pretrained import CARD_FORMAT

log = logging.getLogger(__name__)


def corpus_card(root: Path, *, seconds: float, n_files: int) -> dict[str, Any]:
    """What the encoder was trained on: hours, files, and the packages of ``root/manifest.csv`` if any.

    Parameters
    ----------
    root : Path
        The corpus folder (``data.path``); ``manifest.csv`` is looked for in it and beside it.
    seconds, n_files : float, int
        Audio seconds and files that went into training (after failures).
    """
    card: dict[str, Any] = {"path": str(root), "hours": round(seconds / 3600, 3), "seconds": round(seconds, 1),
                            "files": n_files}
    # build_corpus.py writes OUT/manifest.csv and OUT/audio/: data.path may be either folder.
    manifest = next((m for m in (root / "manifest.csv", root.parent / "manifest.csv") if m.is_file()), None)
    if manifest is not None:
        packages: dict[str, dict[str, Any]] = {}
        with open(manifest, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row.get("kind") == "validation":
                    continue
                p = packages.setdefault(row["package"], {"package": row["package"], "version": row["version"],
                                                          "licence": row["licence"], "kind": row["kind"],
                                                          "files": 0, "hours": 0.0})
                p["files"] += 1
                p["hours"] += float(row["duration_s"]) / 3600
        for p in packages.values():
            p["hours"] = round(p["hours"], 3)
        card["packages"] = sorted(packages.values(), key=lambda p: p["package"])
    return card


def source_commit() -> str | None:
    """The git commit the package was loaded from, when it is a checkout (None for an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out + ("-dirty" if dirty else "")


def pretrain(frame_files: Sequence[tuple[str, int]], *, params: Params, output_dir: Path, corpus_root: Path,
             audio_seconds: float) -> dict[str, Any]:
    """Pre-train an encoder and write ``models/encoder.keras`` and its card ``models/encoder.json``.

    Parameters
    ----------
    frame_files : sequence of (path, n_frames)
        The corpus' cached log-mel arrays ``(n_frames, n_mels)``.
    params : Params
        ``params.pretrain`` sets the training, ``params.model`` the architecture (its
        ``n_clusters`` is replaced by ``pretrain.n_clusters``), ``params.model.init`` the start.
    output_dir : Path
        The run folder.
    corpus_root : Path
        ``data.path``; its ``manifest.csv`` (from ``scripts/build_corpus.py``) goes into the card.
    audio_seconds : float
        Seconds of audio in ``frame_files``.

    Returns
    -------
    dict
        The card, also written to ``models/encoder.json``.
    """
    from . import embedding
    from .pretrained import resolve_init

    pt = params.pretrain
    model = dataclasses.replace(params.model, n_clusters=pt.n_clusters, max_clusters=pt.n_clusters, overcluster=0)
    init = resolve_init(params.model, params.features)
    start = time.monotonic()
    models = output_dir / "models"
    encoder, history = embedding.fit_encoder(
        frame_files, model=model, train=pt.train, n_mels=params.features.n_mels, seed=params.seed,
        log_dir=str(output_dir / "tensorboard"), verbose=0, init=str(init.path) if init else None,
        max_seconds=pt.max_minutes * 60 if pt.max_minutes else None,
        checkpoint=str(models / "checkpoint.keras"))  # a stopped run keeps its last epoch
    wall = time.monotonic() - start
    epochs = len(history.get("loss", []))
    steps = epochs * pt.train.resolved_steps_per_epoch(sum(n for _, n in frame_files))
    embedding.save_encoder(encoder, models / "encoder.keras")
    (models / "checkpoint.keras").unlink(missing_ok=True)
    card = {
        "format": CARD_FORMAT,
        "features": params.features.key_fields(),
        "model": model.to_dict(),
        "init": params.model.init if init is None else str(init.path),
        "corpus": corpus_card(corpus_root, seconds=audio_seconds, n_files=len(frame_files)),
        "training": {
            "epochs": epochs, "steps": steps, "batch_size": pt.train.batch_size,
            "crop_frames": pt.train.crop_frames, "seed": params.seed, "wall_seconds": round(wall, 1),
            "settings": dataclasses.asdict(pt.train),
            "final": {k: round(v[-1], 4) for k, v in history.items() if v},
        },
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cores": os.cpu_count(), "python": platform.python_version()},
        "commit": source_commit(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(models / "encoder.json", card)
    log.info("pre-trained encoder: %s (%d epochs, %d steps, %.0f s); card %s", models / "encoder.keras",
             epochs, steps, wall, models / "encoder.json")
    return card
