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
from sound_cluster.embed.clusters import ClusterRecord, Hierarchy, clusters_at, read_clusters
from sound_cluster.errors import ConfigError
from sound_cluster.ingest.failures import Failure, display_path
from sound_cluster.io_utils import atomic_write_json
from sound_cluster.run.saved_models import load_record, save_units
from sound_cluster.run_folder import ModelsFolder, RunFolder
from sound_cluster.segment.units import SEGMENT

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
    try:
        old = params_from_config({**config, "task": "fit", "run": None, "models": None})
        saved = run.models.read_params()
    except (ConfigError, OSError, ValueError) as err:
        raise ConfigError(f"run: the settings recorded in {run.dir}: {err}") from None
    # The encoder's own architecture and features, as the models were saved with them.
    features, model = saved_model_params(saved, source=str(run.models.params))
    model = dataclasses.replace(model, n_clusters=params.model.n_clusters, max_clusters=params.model.max_clusters,
                                max_segment_clusters=params.model.max_segment_clusters)
    return dataclasses.replace(old, task="recluster", run=run.dir, models=run.models.dir, model=model,
                               output=params.output, executor=params.executor,
                               features=dataclasses.replace(features, cache_dir=params.features.cache_dir
                                                            or old.features.cache_dir))


@dataclasses.dataclass
class Recut:
    """What cutting the run again gave the embed stage: the encoder with its new head, and the units' clusters."""

    encoder: Any
    record: ClusterRecord
    known: dict[Path, np.ndarray]
    file_labels: dict[Path, int] | None
    unit_counts: dict[Path, int]
    unit_spans: dict[Path, list[tuple[int, int, int]]]
    head_history: dict[str, list[float]]


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

    run = RunFolder(Path(params.run))
    old_models = run.models
    encoder = load_encoder(str(old_models.encoder))
    prior = load_record(old_models, head_clusters=int(encoder.get_layer("logits").units))
    hierarchy = Hierarchy.load(old_models.hierarchy)
    with np.load(old_models.units, allow_pickle=False) as z:
        units = {k: z[k] for k in ("vectors", "unit_file", "start", "end", "files")}
    if len(units["vectors"]) != len(hierarchy.x):
        raise ConfigError(f"run: {old_models.units} holds {len(units['vectors'])} units but "
                          f"hierarchy.npz {len(hierarchy.x)}")
    names = {r.path: r.name for r in read_clusters(run.clusters)}
    by_rel = {display_path(f.path, rel_root): f for f in feats}
    steps: list[np.ndarray | None] = []
    for rel in units["files"]:
        f = by_rel.get(str(rel))
        try:
            if f is None:
                raise OSError("the file is no longer under data.path")
            steps.append(run.read_step_embeddings(names[str(rel)]))
        except (OSError, KeyError, ValueError) as err:
            failures.append(Failure(f.path if f is not None else rel_root / str(rel), "recluster",
                                    f"the run's embeddings cannot be read: {err}"))
            steps.append(None)
    if all(s is None for s in steps):
        raise ConfigError(f"run: none of the files of {run.dir} can be read again")
    if any(s is None for s in steps):  # units of lost files leave the cut, which then is not the run's
        raise ConfigError(f"run: {sum(s is None for s in steps)} file(s) of {run.dir} are gone or unreadable "
                          "(failures.csv); recluster needs them all to cut the same hierarchy")
    max_k = params.model.max_segment_clusters if prior.unit == SEGMENT else params.model.max_clusters
    clusters = clusters_at(hierarchy, n_clusters=params.model.n_clusters, max_clusters=max_k)
    unit_steps = [steps[int(f)][int(s):int(e)] for f, s, e in zip(units["unit_file"], units["start"], units["end"])]
    encoder, history = head_for(encoder, clusters, unit_steps, model=params.model, train=params.train,
                                seed=params.seed)
    record = clusters.record(unit=prior.unit, sound_length_s=prior.sound_length_s)

    paths = [by_rel[str(rel)].path for rel in units["files"]]
    spans: dict[Path, list[tuple[int, int, int]]] = {}
    counts: dict[Path, int] = {}
    for f, s, e, c in zip(units["unit_file"], units["start"], units["end"], clusters.labels):
        spans.setdefault(paths[int(f)], []).append((int(s), int(e), int(c)))
        counts[paths[int(f)]] = counts.get(paths[int(f)], 0) + 1
    models.dir.mkdir(parents=True, exist_ok=True)
    save_encoder(encoder, models.encoder)
    for name in (ModelsFolder.PARAMS, ModelsFolder.MERGE_MODEL, ModelsFolder.HIERARCHY):
        shutil.copyfile(old_models.dir / name, models.dir / name)
    save_units(models.units, vectors=units["vectors"], labels=clusters.labels,
               files=[str(r) for r in units["files"]], units=_Spans(units), n_steps=[len(s) for s in steps])
    atomic_write_json(models.clusters, record.to_dict())
    log.info("recluster: %s cut at K=%d (%s)", run.dir, record.k, record.rule)
    return Recut(encoder, record, {p: s for p, s in zip(paths, steps)},
                 None if prior.unit == SEGMENT else {p: int(c) for p, c in zip(paths, clusters.labels)},
                 counts if prior.unit == SEGMENT else {}, spans if prior.unit == SEGMENT else {}, history)


@dataclasses.dataclass
class _Spans:
    """The run's units as :func:`sound_cluster.run.saved_models.save_units` takes them."""

    arrays: dict[str, np.ndarray]

    @property
    def file(self):
        return self.arrays["unit_file"]

    @property
    def start(self):
        return self.arrays["start"]

    @property
    def end(self):
        return self.arrays["end"]
