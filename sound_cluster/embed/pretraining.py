"""``task=pretrain``: train the encoder self-supervised on a large corpus and write it with its card.

The training is the fit's (clustering loss, two-view consistency, contrastive term) with the
settings of ``pretrain.train`` (stronger augmentation, another recording mixed underneath) and a
head of ``pretrain.n_clusters``. Where the corpus' ``manifest.csv`` (``scripts/build_corpus.py``)
groups files that are the same sound made differently (one note at other pitches, one drum in
other kits, one text in other voices), an example's second view is drawn from another file of its
group with probability ``pretrain.group_prob``; its sources (packages) are balanced by
``pretrain.source_power``. The run folder's ``models/`` receives ``encoder.keras`` and
``encoder.json``, the card: corpus, steps, wall time, machine, final losses, commit, and the
feature and model settings a fit must share to start from it (``model.init=<path>``).
Copying both files into ``sound_cluster/embed/pretrained/`` makes them the shipped encoder.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from sound_cluster.config import Params
from sound_cluster.embed.shipped import CARD_FORMAT, resolve_init
from sound_cluster.io_utils import atomic_write_json
from sound_cluster.run_folder import RunFolder

if TYPE_CHECKING:
    from sound_cluster.ingest.extract import FileFeatures

log = logging.getLogger(__name__)


def find_manifest(root: Path) -> Path | None:
    """``manifest.csv`` in the corpus folder or beside it (``data.path`` may be ``OUT`` or ``OUT/audio``)."""
    return next((m for m in (root / "manifest.csv", root.parent / "manifest.csv") if m.is_file()), None)


def corpus_sampling(audio_paths: Sequence[Path], *, root: Path, source_power: float
                    ) -> tuple[list[int] | None, list[float] | None, dict[str, Any]]:
    """Groups and drawing weights of the corpus files, from the manifest.

    Parameters
    ----------
    audio_paths : sequence of Path
        The files that go into training, in training order.
    root : Path
        ``data.path``; the manifest is looked for in it and beside it.
    source_power : float
        A source (a package: for synthesized speech the program that spoke it; a rendered
        soundfont's instruments and its drum kits are two sources) with n files is drawn with
        probability ~ n ** source_power.

    Returns
    -------
    groups : list of int or None
        Per file, its group's index (-1: no group); None without a manifest.
    weights : list of float or None
        Per file, a weight proportional to its chance of being drawn.
    summary : dict
        Files per source, groups with at least two files and the files in them (for the card).
    """
    manifest = find_manifest(root)
    if manifest is None:
        return None, None, {}
    by_path: dict[str, tuple[str, str]] = {}
    with open(manifest, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            parts = Path(row["file"]).parts
            source = row["package"]
            render = re.match(r"(prog|kit)\d+$", parts[2]) if len(parts) > 3 else None
            if render:  # a soundfont's instruments and its drum kits are two sources
                source += "/" + render.group(1)
            by_path[str((manifest.parent / row["file"]).resolve())] = (source, row.get("group") or "")
    found = [by_path.get(str(Path(p).resolve()), ("(not in the manifest)", "")) for p in audio_paths]
    sizes: dict[str, int] = {}
    members: dict[str, int] = {}
    for source, group in found:
        sizes[source] = sizes.get(source, 0) + 1
        if group:
            members[group] = members.get(group, 0) + 1
    ids = {g: i for i, g in enumerate(sorted(g for g, n in members.items() if n > 1))}
    groups = [ids.get(g, -1) for _, g in found]
    weights = [sizes[s] ** (source_power - 1.0) for s, _ in found]
    summary = {"sources": dict(sorted(sizes.items())), "groups": len(ids),
               "files_in_groups": sum(g >= 0 for g in groups)}
    return groups, weights, summary


def corpus_card(root: Path, *, seconds: float, n_files: int) -> dict[str, Any]:
    """What the encoder was trained on: hours, files, and the packages of ``root/manifest.csv`` if any.

    Parameters
    ----------
    root : Path
        The corpus folder (``data.path``); ``manifest.csv`` is looked for in it and beside it.
    seconds, n_files : float, int
        Audio seconds and files that went into training (after failures).
    """
    card: dict[str, Any] = {"hours": round(seconds / 3600, 3), "seconds": round(seconds, 1),
                            "files": n_files}
    # build_corpus.py writes OUT/manifest.csv and OUT/audio/: data.path may be either folder.
    manifest = find_manifest(root)
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


def source_commit() -> dict[str, Any] | None:
    """The git commit the package was loaded from, when it is a checkout (None for an installed wheel).

    ``clean`` is false when the checkout had uncommitted changes: the commit alone then does not
    reproduce the training.
    """
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"id": out, "clean": not dirty}


def started_from(card: dict[str, Any]) -> dict[str, Any]:
    """The part of an encoder's card that the card of an encoder trained on from it keeps (and its own lineage)."""
    training, corpus = card.get("training") or {}, card.get("corpus") or {}
    out = {"init": card.get("init"), "steps": training.get("steps"), "wall_seconds": training.get("wall_seconds"),
           "corpus_hours": corpus.get("hours"), "corpus_files": corpus.get("files"),
           "commit": card.get("commit"), "written": card.get("written")}
    if "started_from" in card:
        out["started_from"] = card["started_from"]
    return out


def pretrain(frame_files: Sequence[tuple[str, int]], *, params: Params, output_dir: Path, corpus_root: Path,
             audio_seconds: float, audio_paths: Sequence[Path] | None = None,
             beds: Sequence[FileFeatures] = ()) -> dict[str, Any]:
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
    audio_paths : sequence of Path, optional
        The audio file of each entry of ``frame_files``, to find its group and source in the
        corpus' manifest; without them every file is its own group and drawn equally often.
    beds : sequence of FileFeatures
        The features of ``pretrain.beds``' recordings (``cache_path``, ``n_frames``,
        ``duration_s``), laid under views with ``pretrain.train.augment.bed_prob``.

    Returns
    -------
    dict
        The card, also written to ``models/encoder.json``.
    """
    from sound_cluster.embed.encoder import save_encoder
    from sound_cluster.embed.training import fit_encoder

    pt = params.pretrain
    model = dataclasses.replace(params.model, n_clusters=pt.n_clusters, max_clusters=pt.n_clusters)
    init = resolve_init(params.model, params.features)
    groups, weights, sampling = (corpus_sampling(audio_paths, root=corpus_root, source_power=pt.source_power)
                                 if audio_paths is not None else (None, None, {}))
    if sampling:
        log.info("corpus: %d sources, %d groups holding %d of %d files", len(sampling["sources"]),
                 sampling["groups"], sampling["files_in_groups"], len(frame_files))
    start = time.monotonic()
    folder = RunFolder(output_dir)
    models = folder.models
    encoder, history = fit_encoder(
        frame_files, model=model, train=dataclasses.replace(pt.train, backbone="tuned"),  # every layer trains
        n_mels=params.features.n_mels, seed=params.seed,
        log_dir=str(folder.tensorboard), verbose=0, init=str(init.path) if init else None,
        max_seconds=pt.max_minutes * 60 if pt.max_minutes else None,
        checkpoint=str(models.checkpoint),  # a stopped run keeps its last epoch
        groups=groups, group_prob=pt.group_prob, weights=weights, beds=[b.cache_path for b in beds])
    wall = time.monotonic() - start
    epochs = len(history.get("loss", []))
    steps = epochs * pt.train.resolved_steps_per_epoch(sum(n for _, n in frame_files))
    save_encoder(encoder, models.pretrained)
    models.checkpoint.unlink(missing_ok=True)
    card = {
        "format": CARD_FORMAT,
        "features": params.features.key_fields(),
        "model": model.to_dict(),
        # "scratch", "pretrained" or the starting encoder's file name: never a machine's path.
        "init": params.model.init if init is None or params.model.init == "pretrained" else init.path.name,
        # An encoder trained on from another: that one's run, so the card tells the whole training.
        **({"started_from": started_from(init.card)} if init is not None else {}),
        "corpus": {**corpus_card(corpus_root, seconds=audio_seconds, n_files=len(frame_files)), "sampling": sampling},
        "training": {
            "epochs": epochs, "steps": steps, "batch_size": pt.train.batch_size,
            "crop_frames": pt.train.crop_frames, "seed": params.seed, "wall_seconds": round(wall, 1),
            "group_prob": pt.group_prob, "source_power": pt.source_power,
            **({"beds": {"files": len(beds), "minutes": round(sum(b.duration_s for b in beds) / 60, 1),
                         "folder": Path(pt.beds).name}} if beds else {}),
            "settings": dataclasses.asdict(pt.train),
            "final": {k: round(v[-1], 4) for k, v in history.items() if v},
        },
        # The machine by kind and size, never by name or path.
        "machine": {"processor": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "commit": source_commit(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(models.pretrained_card, card)
    log.info("pre-trained encoder: %s (%d epochs, %d steps, %.0f s); card %s", models.pretrained,
             epochs, steps, wall, models.pretrained_card)
    return card
