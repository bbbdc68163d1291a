"""``task=recluster``: a finished run cut again at another K, without embedding anything again.

``sound-cluster task=recluster run=<run folder> model.n_clusters=21`` reads the run's settings from its
``summary.json`` (data, features, model, seed: everything but K and what the new run writes), its
units, their Ward hierarchy (``models/hierarchy.npz``) and each file's step embeddings
(``posteriors/``), cuts the hierarchy at the new K (``model.n_clusters=auto`` applies the rule again),
trains only the cluster head, and writes a complete new run folder: clusters.csv, posteriors, trees,
segments, report. Given the same embeddings the result is the one a fresh fit at that K would write:
the cut, the head (seeded by the run's seed) and the folds are the same functions of the same inputs.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from sound_cluster.config import Params, params_from_config, saved_model_params
from sound_cluster.embed.clusters import ClusterRecord, Hierarchy, clusters_at, read_clusters, unit_length
from sound_cluster.embed.step_store import StepStore
from sound_cluster.errors import ConfigError
from sound_cluster.ingest.failures import Failure, display_path
from sound_cluster.io_utils import atomic_write_json, read_arrays
from sound_cluster.run.saved_models import load_record, save_units
from sound_cluster.run_folder import ModelsFolder, RunFolder
from sound_cluster.segment.units import SEGMENT, UnitSteps, spans_by_file

log = logging.getLogger(__name__)


def recluster_params(params: Params) -> Params:
    """The settings of the run ``params.run`` with this command's K, output and executor.

    Raises
    ------
    ConfigError
        The run did not complete, or its recorded settings cannot be read or checked.
    """
    run = RunFolder(Path(params.run))
    try:
        summary = run.read_summary()
    except (OSError, ValueError) as err:
        raise ConfigError(f"run: cannot read {run.summary}: {err}") from None
    if summary.get("status") != "complete" or summary.get("task") not in ("fit", "recluster"):
        raise ConfigError(f"run must be a completed fit or recluster run, got {str(run.dir)!r} "
                          f"(task {summary.get('task')}, status {summary.get('status')})")
    config = summary.get("config") or {}
    if not isinstance(config, dict) or not isinstance(config.get("data") or {}, dict):
        raise ConfigError(f"run: {run.summary} holds no readable config")
    try:
        old = params_from_config({**config, "task": "fit", "run": None, "models": None,
                                  "data": _their_data(config, summary, params), "features": {
                                      **(config.get("features") or {}), "cache_dir": None}})
        saved = run.models.read_params()
    except (ConfigError, OSError, ValueError) as err:
        raise ConfigError(f"run: the settings recorded in {run.dir}: {err}") from None
    # The encoder's own architecture and features, as the models were saved with them.
    features, model = saved_model_params(saved, source=str(run.models.params))
    model = dataclasses.replace(model, n_clusters=params.model.n_clusters, max_clusters=params.model.max_clusters)
    return dataclasses.replace(old, task="recluster", run=run.dir, models=run.models.dir, model=model,
                               units=dataclasses.replace(old.units, max_clusters=params.units.max_clusters),
                               output=params.output, executor=params.executor,
                               features=dataclasses.replace(features, cache_dir=params.features.cache_dir))


def _their_data(config: dict, summary: dict, params: Params) -> dict:
    """The run's ``data`` settings that say which files it read, and nothing that points elsewhere.

    A run folder may come from someone else: its references (``data.labels``, ``data.segments``) and
    its cache folder are never taken from it, only from this command. The audio is where the run
    found it (``summary.json``'s absolute ``data_path``, or the bundled demo) unless this command
    gives ``data.path``.
    """
    data = dict(config.get("data") or {})
    keep = {k: data[k] for k in ("extensions", "follow_symlinks") if k in data}
    if params.data.path is not None:
        path = str(params.data.path)
    elif data.get("path") is None:  # the bundled demo, with its own references
        path = None
    else:
        path = summary.get("data_path")
        if not isinstance(path, str) or not Path(path).is_absolute():
            raise ConfigError(f"run: summary.json records no absolute data_path ({path!r}); give data.path")
    return {**keep, "path": path, "labels": params.data.labels and str(params.data.labels),
            "segments": params.data.segments and str(params.data.segments),
            "segments_format": params.data.segments_format, "strict": params.data.strict,
            "max_file_s": params.data.max_file_s}


@dataclasses.dataclass
class Recut:
    """What cutting the run again gave the embed stage: the encoder with its new head, and the units' clusters."""

    encoder: Any
    record: ClusterRecord
    known: dict[Path, Any]  # each file's step embeddings: an array, or rows in the step cache (StoredRows)
    file_labels: dict[Path, int] | None
    unit_counts: dict[Path, int]
    unit_spans: dict[Path, np.ndarray]  # per file, its units' start and end step and cluster, (n_units, 3)
    head_history: dict[str, list[float]]
    merges: dict[Path, Any]  # each file's merges, read back from the run's tree (K does not change a fold)
    held: dict[str, Any] = dataclasses.field(default_factory=dict)  # the summary's step_embeddings entry
    steps_at: dict[Path, Path] = dataclasses.field(default_factory=dict)  # each file's step embeddings: the run's posteriors


def recut(feats, *, params: Params, models: ModelsFolder, rel_root: Path, failures: list[Failure]) -> Recut:
    """Cut the run's hierarchy at ``params.model.n_clusters`` and train the head for it; writes ``models/``.

    Parameters
    ----------
    feats : sequence of FileFeatures
        The run's files, found again under its ``data.path``.
    models : ModelsFolder
        The new run's ``models/``.
    failures : list of Failure
        Files of the run that are gone or whose embeddings cannot be read are added here.

    Raises
    ------
    ConfigError
        The run's models do not fit its units, or none of its files can be read.
    """
    from sound_cluster.embed.encoder import load_encoder, save_encoder
    from sound_cluster.embed.head import head_for
    from sound_cluster.embed.step_cache import StepCache

    run = RunFolder(Path(params.run))
    old_models = run.models
    encoder = load_encoder(str(old_models.encoder))
    prior = load_record(old_models, head_clusters=int(encoder.get_layer("logits").units))
    try:
        hierarchy = Hierarchy.load(old_models.hierarchy)
        units = read_arrays(old_models.units, ("vectors", "unit_file", "start", "end", "files"))
        _check_units(units, n_units=len(hierarchy.x))
        names = {r.path: r.name for r in read_clusters(run.clusters)}
    except (OSError, ValueError) as err:
        raise ConfigError(f"run: {run.dir}: {err}") from None
    by_rel = {display_path(f.path, rel_root): f for f in feats}
    # Past executor.steps_in_memory_mb each file's step embeddings wait in the step cache (this encoder's folder,
    # as a fit leaves them there; put there from the run where missing) and are read from there when needed.
    cache = StepCache(feats[0].cache_path.parent, encoder=encoder) if feats else None
    if cache is not None:
        cache.prepare()
    store = StepStore(budget_bytes=params.executor.steps_in_memory_mb * 1e6 if cache is not None else np.inf)
    steps: list[Any] = []  # per file of the run: its step embeddings (an array, or rows in the step cache) or None
    dims = {int(units["vectors"].shape[1])}
    for rel in units["files"]:
        f = by_rel.get(str(rel))
        try:
            if f is None:
                raise OSError("the file is no longer under data.path")
            emb = run.read_step_embeddings(names[str(rel)])
            dims.add(int(emb.shape[1]))
            spill = not store.fits(emb) and cache.put(f.cache_path, emb)
            store.add(emb, stored=cache.path(f.cache_path) if spill else None)
            steps.append(store[-1])
            del emb
        except (OSError, KeyError, ValueError) as err:
            failures.append(Failure(f.path if f is not None else rel_root / str(rel), "recluster",
                                    f"the run's embeddings cannot be read: {err}"))
            steps.append(None)
    store.warn_over_budget()
    if all(s is None for s in steps):
        raise ConfigError(f"run: none of the files of {run.dir} can be read again")
    if any(s is None for s in steps):  # units of lost files leave the cut, which then is not the run's
        raise ConfigError(f"run: {sum(s is None for s in steps)} file(s) of {run.dir} are gone or unreadable "
                          "(failures.csv); recluster needs them all to cut the same hierarchy")
    n_steps = np.array([len(s) for s in steps])
    if (units["end"] > n_steps[units["unit_file"]]).any():
        raise ConfigError(f"run: {old_models.units} holds units that end past their file's steps")
    if len(dims) > 1:
        raise ConfigError(f"run: the step embeddings and units of {run.dir} differ in width ({sorted(dims)})")
    max_k = params.units.max_clusters if prior.unit == SEGMENT else params.model.max_clusters
    clusters = clusters_at(hierarchy, n_clusters=params.model.n_clusters, max_clusters=max_k)
    unit_steps = UnitSteps(_Spans(units), steps)  # each unit's rows, made when the head draws a crop of it
    encoder, history = head_for(encoder, clusters, unit_steps, model=params.model, train=params.train,
                                seed=params.seed)
    record = clusters.record(unit=prior.unit, sound_length_s=prior.sound_length_s)

    paths = [by_rel[str(rel)].path for rel in units["files"]]
    spans = {paths[i]: rows for i, rows in spans_by_file(units["unit_file"], units["start"], units["end"],
                                                         clusters.labels)}
    counts = {p: len(rows) for p, rows in spans.items()}
    models.dir.mkdir(parents=True, exist_ok=True)
    save_encoder(encoder, models.encoder)
    for old, new in ((old_models.params, models.params), (old_models.merge_model, models.dir / ModelsFolder.MERGE_MODEL),
                     (old_models.hierarchy, models.hierarchy)):
        shutil.copyfile(old, new)
    save_units(models.units, vectors=unit_length(units["vectors"]), labels=clusters.labels,
               files=[str(r) for r in units["files"]], units=_Spans(units), n_steps=[len(s) for s in steps])
    atomic_write_json(models.clusters, record.to_dict())
    log.info("recluster: %s cut at K=%d (%s)", run.dir, record.k, record.rule)
    merges = _run_merges(run, {by_rel[str(rel)].path: names[str(rel)] for rel in units["files"]}, steps)
    return Recut(encoder, record, {p: s for p, s in zip(paths, steps)},
                 None if prior.unit == SEGMENT else {p: int(c) for p, c in zip(paths, clusters.labels)},
                 counts if prior.unit == SEGMENT else {}, spans if prior.unit == SEGMENT else {}, history, merges,
                 store.summary(), {p: run.posteriors(names[str(rel)]) for p, rel in zip(paths, units["files"])})


def _run_merges(run: RunFolder, names: dict[Path, str], steps: list[np.ndarray]) -> dict[Path, Any]:
    """Each file's merges as the run's tree records them (the fold does not depend on K, so a fresh fit at the
    new K folds each file the same way); a file whose tree was written cut short, or does not match its steps,
    is folded again."""
    from sound_cluster.segment.fold import Merges
    from sound_cluster.segment.tree import SegmentTree, read_tree_json

    out: dict[Path, Any] = {}
    for (path, name), st in zip(names.items(), steps):
        try:
            tree = SegmentTree.from_json(read_tree_json(run.tree(name)))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if tree.n_leaves < 1 or tree.n_leaves > len(st):
            continue
        out[path] = Merges(tree.left, tree.right, tree.cost, np.empty((0, 0), np.float32))
    return out


def _check_units(units: dict[str, np.ndarray], *, n_units: int) -> None:
    """``models/units.npz`` of a run folder that may come from anyone: every index must point where it may.

    Raises
    ------
    ValueError
    """
    v, f, s, e, files = (units[k] for k in ("vectors", "unit_file", "start", "end", "files"))
    if v.ndim != 2 or v.dtype.kind != "f" or not np.isfinite(v).all() or len(v) != n_units:
        raise ValueError(f"units.npz: vectors must be a finite ({n_units}, D) float array (as many as "
                         f"hierarchy.npz), got {v.shape} {v.dtype}")
    if files.ndim != 1 or files.dtype.kind != "U" or len(set(files.tolist())) != len(files):
        raise ValueError("units.npz: files must be distinct paths")
    for key, a in (("unit_file", f), ("start", s), ("end", e)):
        if a.shape != (n_units,) or a.dtype.kind not in "iu":
            raise ValueError(f"units.npz: {key} must be {n_units} integers, got {a.shape} {a.dtype}")
    if n_units and (f.min() < 0 or f.max() >= len(files) or s.min() < 0 or (e <= s).any()):
        raise ValueError("units.npz: a unit's file index or step span is out of range")


@dataclasses.dataclass
class _Spans:
    """The run's units as :func:`sound_cluster.run.saved_models.save_units` takes them."""

    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.arrays["unit_file"])

    @property
    def file(self):
        return self.arrays["unit_file"]

    @property
    def start(self):
        return self.arrays["start"]

    @property
    def end(self):
        return self.arrays["end"]
