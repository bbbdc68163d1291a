"""The embed stage: the run's models, then every file assigned to a cluster.

The models come one of three ways, one per task (the pipeline's dispatch picks it): :func:`fit_models`
(the encoder, the units and their clusters, the head), :func:`load_models` (``task=apply``) and
:func:`recluster_models` (``task=recluster``: the run's hierarchy cut again); each gives an
:class:`EmbedResult`. :func:`assign_stage` then writes every file's posteriors and ``clusters.csv``.
The encoder runs over the files in the main process or on the executor's workers (``executor.inference``;
:mod:`sound_cluster.run.inference_jobs`), with the same results.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sound_cluster.config import ExecutorParams, ModelParams, Params, saved_model_params
from sound_cluster.embed.clusters import Assignment, ClusterRecord, explain_k, near_choice, write_clusters
from sound_cluster.embed.shipped import resolve_init
from sound_cluster.errors import AudioError, ConfigError
from sound_cluster.ingest.failures import Failure, display_path
from sound_cluster.io_utils import atomic_write_json
from sound_cluster.run.recluster import recut
from sound_cluster.run.run_dir import Timer
from sound_cluster.run.saved_models import load_record, save_units
from sound_cluster.run.unit_plan import plan_units
from sound_cluster.run_folder import ModelsFolder, RunFolder
from sound_cluster.segment.units import SEGMENT, spans_by_file

log = logging.getLogger(__name__)


@dataclass
class UnitFit:
    """What the embed stage hands the fold stage about the units it clustered.

    Attributes
    ----------
    unit : str
        ``file`` or ``segment``.
    merges : dict of Path to Merges or Path
        Each file's fold that the units were cut from, or the file holding it (:meth:`Merges.save`).
    counts : dict of Path to int
        Each file's number of units (its tree's cut).
    spans : dict of Path to np.ndarray [shape=(n_units, 3), dtype=int64] or list of (int, int, int)
        Each file's units: start and end step and cluster (to compare with the head's).
    sound_length_s : float or None
        Segment units: the folder's typical sound length, which counts the sounds of files
        without pauses.
    """

    unit: str = "file"
    merges: dict[Path, Any] = field(default_factory=dict)
    counts: dict[Path, int] = field(default_factory=dict)
    spans: dict[Path, list[tuple[int, int, int]]] = field(default_factory=dict)
    sound_length_s: float | None = None


def with_model_features(params: Params) -> Params:
    """Apply mode: features must be computed as they were for training; take them from the models."""
    source = ModelsFolder(Path(params.models)).params
    try:
        saved = ModelsFolder(Path(params.models)).read_params()
    except (OSError, ValueError) as err:
        raise ConfigError(f"models: cannot read {source}: {err}") from None
    feats, model = saved_model_params(saved, source=str(source))
    feats = dataclasses.replace(feats, cache_dir=params.features.cache_dir)
    if params.model.n_clusters != ModelParams().n_clusters:
        log.warning("task=apply keeps the clusters of the models it loads; model.n_clusters=%s is ignored",
                    params.model.n_clusters)
    if feats.key_fields() != params.features.key_fields():
        log.warning("task=apply: using the feature settings the models were trained with: %s", feats.key_fields())
    return dataclasses.replace(params, features=feats, model=model)


@dataclass(frozen=True)
class MergeSource:
    """Where the fold stage gets the merge autoencoder: trained by the fit already, saved with models, or neither.

    Attributes
    ----------
    trained : tuple (MergeAutoencoder, list of float) or None
        Trained to cut the files into segment units, with its losses per epoch.
    path : Path or None
        A saved ``.keras`` model (``task=apply``, ``task=recluster``).

    With neither, the fold stage trains it on the run's files (a fit of file units).
    """

    trained: Any = None
    path: Path | None = None


@dataclass
class EmbedResult:
    """What the embed stage's models step gives the assignment and the fold stage.

    Attributes
    ----------
    encoder : keras.Model
        With the run's cluster head.
    record : ClusterRecord
        K, the rule that chose it, the unit.
    units : UnitFit
    known : dict of Path to np.ndarray or StoredRows [shape=(n_steps, D)]
        Step embeddings computed while clustering, by audio path (assigning them needs only the head); past
        ``executor.steps_in_memory_mb``, where they lie in the step cache. Empty where the workers assign.
    file_labels : dict of Path to int or None
        File units: each file's cluster in the hierarchy (to say how often the head agrees).
    merge : MergeSource
    extra : dict
        The summary's entries (``units``, ``training``, ``recluster``, ``models``).
    k_from : str or None
        ``task=apply``: the models folder that K came with.
    steps_at : dict of Path to Path
        Where each file's step embeddings lie on disk (a step-cache entry, an earlier run's posteriors), by audio
        path: assigning on the workers reads them there (a file without one is run through the encoder).
    encoder_path : Path or None
        The encoder with the run's head, saved: what the workers load to assign.
    """

    encoder: Any
    record: ClusterRecord
    units: UnitFit
    known: dict[Path, Any]
    file_labels: dict[Path, int] | None
    merge: MergeSource
    extra: dict[str, Any] = field(default_factory=dict)
    k_from: str | None = None
    steps_at: dict[Path, Path] = field(default_factory=dict)
    encoder_path: Path | None = None


@dataclass
class Assigned:
    """Every file's cluster (``clusters.csv``) and the summary's ``clusters`` entry.

    ``rows[i].index`` points into the run's files; files that could not be assigned went to the failures.
    """

    rows: list[Assignment]
    extra: dict[str, Any]


def fit_models(feats, *, params: Params, folder: RunFolder, rel_root: Path, timer: Timer,
               failures: list[Failure]) -> EmbedResult:
    """``task=fit``: the encoder (shipped, or trained), the units and their clusters, the head; writes ``models/``."""
    from sound_cluster.embed.backbone import fit_backbone
    from sound_cluster.embed.clusters import unit_length, ward_over
    from sound_cluster.embed.encoder import save_encoder
    from sound_cluster.embed.head import embed_files, fit_unit_clusters
    from sound_cluster.embed.step_cache import StepCache

    models = folder.models
    init = resolve_init(params.model, params.features)
    with timer.stage("train"):
        encoder, history = fit_backbone(
            [(f.cache_path, f.n_frames) for f in feats], model=params.model, train=params.train,
            n_mels=params.features.n_mels, seed=params.seed, init=str(init.path) if init else None,
            log_dir=str(folder.tensorboard), verbose=0)  # one log line per epoch comes from the usage callback
    with timer.stage("embed"):
        readable = _readable(feats, failures)
        cache = StepCache(readable[0].cache_path.parent, encoder=encoder) if readable else None
        if cache is not None:
            cache.prepare()
        steps_at: dict[Path, Path] = {}  # where the workers left each file's step embeddings
        if params.executor.on_workers and cache is not None and cache.writable:
            readable, clip_embeddings, steps = _embed_on_workers(readable, encoder=encoder, cache=cache,
                                                                 params=params, folder=folder, failures=failures)
            steps_at = {f.path: cache.path(f.cache_path) for f in readable}
        else:
            if params.executor.on_workers:
                log.warning("executor.inference: the encoder runs in the main process, as the step cache (%s) "
                            "cannot be written for the workers", cache.dir if cache is not None else None)
            clip_embeddings, steps = embed_files(encoder, [f.cache_path for f in readable], cache=cache,
                                                 budget_bytes=params.executor.steps_in_memory_mb * 1e6)
    held = steps.summary()  # executor.steps_in_memory_mb
    units, choice, trained, sound_length_s = plan_units(readable, steps, params=params, timer=timer,
                                                        merges_dir=folder.scratch / "merges")
    with timer.stage("cluster"):
        # The units' embeddings at unit length, as clustered, replace them before k-means runs: one copy held.
        if units is None:
            x, unit_steps = unit_length(clip_embeddings), steps
        else:
            x = units.vectors = unit_length(units.vectors)
            unit_steps = units.steps(steps)
        del clip_embeddings
        hierarchy = ward_over(x, seed=params.seed)
        del x
        fitted = fit_unit_clusters(encoder, hierarchy, unit_steps, steps, model=params.model, train=params.train,
                                   seed=params.seed, max_clusters=params.units.max_clusters
                                   if units is not None else params.model.max_clusters)
        del unit_steps
        encoder, clusters, head_history = fitted.encoder, fitted.clusters, fitted.history
        file_labels = None if units is not None else {f.path: int(c) for f, c in zip(readable, clusters.labels)}
        # Each file's step embeddings, from the pass that clustered them: assigning needs only the head. (On the
        # workers, assigning reads them from the step cache.)
        known = {} if steps_at else {f.path: e for f, e in zip(readable, fitted.step_embeddings)}
        fitted.hierarchy.save(models.hierarchy)  # any other K is another cut of it
        del fitted
        record = clusters.record(unit=choice.unit, sound_length_s=sound_length_s)
        save_units(models.units, vectors=hierarchy.x, labels=clusters.labels,
                   files=[display_path(f.path, rel_root) for f in readable], units=units,
                   n_steps=[len(e) for e in steps])
    del steps
    unit_fit = UnitFit(choice.unit, sound_length_s=sound_length_s)
    extra: dict[str, Any] = {"units": {**choice.to_dict(),
                                       "n_units": len(units) if units is not None else len(readable),
                                       "sound_length_s": None if sound_length_s is None else round(sound_length_s, 4)},
                          "step_embeddings": held}
    if units is not None:
        unit_fit.merges = {readable[i].path: m for i, m in units.merges.items()}
        unit_fit.counts = {readable[i].path: n for i, n in units.counts.items()}
        # Each unit's span and cluster by file, to say how often the head agrees with them.
        unit_fit.spans = {readable[i].path: rows
                          for i, rows in spans_by_file(units.file, units.start, units.end, clusters.labels)}
    save_encoder(encoder, models.encoder)
    atomic_write_json(models.params, {
        "features": params.features.key_fields(), "model": params.model.to_dict(), "units": params.units.to_dict(),
        "frame_rate_hz": params.features.frame_rate_hz,
        "step_rate_hz": params.features.frame_rate_hz / params.model.time_pool,
    })
    atomic_write_json(models.clusters, record.to_dict())
    epochs = len(history.get("loss", []))
    extra["training"] = {"init": str(init.path) if init else "scratch",
                         "backbone": "trained" if init is None or params.train.backbone == "tuned" else "frozen",
                         "epochs": epochs,
                         "seconds_per_epoch": round(timer.seconds["train"] / max(epochs, 1), 3) if epochs else None,
                         "history": history,
                         "head": {"steps": params.train.head_steps,
                                  "final_cross_entropy": round(head_history["loss"][-1], 4)}}
    return EmbedResult(encoder, record, unit_fit, known, file_labels, MergeSource(trained=trained), extra,
                       steps_at=steps_at, encoder_path=models.encoder)


def _embed_on_workers(readable: list, *, encoder, cache, params: Params, folder: RunFolder,
                      failures: list[Failure]) -> tuple[list, np.ndarray, Any]:
    """Every file's step embeddings made on the executor's workers, into the step cache (``executor.inference``).

    The main process reads back only what fits ``executor.steps_in_memory_mb``; the other files' stay on disk.

    Returns
    -------
    readable : list of FileFeatures
        The files embedded; the others are added to ``failures``.
    clip_embeddings : np.ndarray [shape=(n_files, embedding_dim), dtype=float32]
    steps : StepStore
    """
    from sound_cluster.embed.encoder import save_encoder
    from sound_cluster.embed.step_store import StepStore
    from sound_cluster.run.executor import map_files
    from sound_cluster.run.inference_jobs import EmbedJob, embed_fn

    encoder_path = folder.scratch_encoder  # in the run folder, which every worker can read
    save_encoder(encoder, encoder_path)
    results = map_files(embed_fn(encoder_path=encoder_path, cache=cache),
                        [EmbedJob(f.path, f.cache_path) for f in readable], params=params.executor, stage="embed",
                        progress=params.output.progress)
    store = StepStore(budget_bytes=params.executor.steps_in_memory_mb * 1e6)
    kept, clips, hits = [], [], 0
    for f, r in zip(readable, results):
        if isinstance(r, Failure):
            failures.append(r)
            continue
        kept.append(f)
        clips.append(r.clip)
        hits += r.cached
        store.add_stored(cache.path(f.cache_path), nbytes=r.n_steps * cache.dim * 4)
    if not kept:
        raise AudioError("no file could be embedded; reasons in failures.csv", stage="embed")
    log.info("step embeddings (on the workers): %d of %d files read from the step cache; %s", hits, len(kept),
             store.describe())
    return kept, np.array(clips), store


def recluster_models(feats, *, params: Params, folder: RunFolder, rel_root: Path, timer: Timer,
                     failures: list[Failure]) -> EmbedResult:
    """``task=recluster``: the run's hierarchy cut at another K and a head trained for it; writes ``models/``."""
    with timer.stage("cluster"):
        cut = recut(feats, params=params, models=folder.models, rel_root=rel_root, failures=failures)
    record = cut.record
    units = UnitFit(record.unit, merges=cut.merges, counts=cut.unit_counts, spans=cut.unit_spans,
                    sound_length_s=record.sound_length_s)
    extra = {"units": {"unit": record.unit, "requested": record.unit, "rule": "the run's unit",
                       "sound_length_s": record.sound_length_s},
             "step_embeddings": cut.held,
             "recluster": {"run": str(params.run), "merges_reused": len(cut.merges), "head": {
                 "steps": params.train.head_steps, "final_cross_entropy": round(cut.head_history["loss"][-1], 4)}}}
    return EmbedResult(cut.encoder, record, units, cut.known, cut.file_labels,
                       MergeSource(path=ModelsFolder(Path(params.models)).merge_model), extra,
                       steps_at=cut.steps_at, encoder_path=folder.models.encoder)


def load_models(feats, *, params: Params, folder: RunFolder, rel_root: Path, timer: Timer,
                failures: list[Failure]) -> EmbedResult:
    """``task=apply``: the models of ``params.models`` as they are."""
    from sound_cluster.embed.encoder import load_encoder

    saved = ModelsFolder(Path(params.models))
    encoder = load_encoder(str(saved.encoder))
    record = load_record(saved, head_clusters=int(encoder.get_layer("logits").units))
    extra = {"models": str(params.models),
             "units": {"unit": record.unit, "requested": record.unit, "rule": "the models' unit",
                       "sound_length_s": record.sound_length_s}}
    return EmbedResult(encoder, record, UnitFit(record.unit, sound_length_s=record.sound_length_s), {}, None,
                       MergeSource(path=saved.merge_model), extra, k_from=str(params.models),
                       encoder_path=saved.encoder)


def assign_stage(feats, names: list[str], models: EmbedResult, *, executor: ExecutorParams, folder: RunFolder,
                 rel_root: Path, timer: Timer, failures: list[Failure]) -> Assigned:
    """Every file's posteriors (``posteriors/``) and cluster (``clusters.csv``) under the run's head.

    In the main process, or on the executor's workers (``executor.inference``). Files that cannot be assigned
    are added to ``failures``.

    Raises
    ------
    AudioError
        No file could be assigned.
    """
    record = models.record
    unread = {x.path for x in failures if x.stage == "assign"}  # features unreadable while clustering
    todo = [(i, f, name) for i, (f, name) in enumerate(zip(feats, names)) if f.path not in unread]
    with timer.stage("assign"):
        on_workers = executor.on_workers and models.encoder_path is not None
        done = (_assign_on_workers(todo, models, executor=executor, folder=folder) if on_workers
                else _assign_here(todo, models, folder=folder))
    rows = []
    agree: list[bool] = []  # segment units: the head's cluster of each unit equals the unit's cluster
    for (i, f, name), r in zip(todo, done):
        if isinstance(r, Failure):
            failures.append(r)
            continue
        agree += r.agree
        rows.append(Assignment(display_path(f.path, rel_root), r.cluster, r.confidence, f.duration_s, name, i))
    if not rows:
        raise AudioError("no file could be assigned to a cluster; reasons in failures.csv", stage="assign")
    write_clusters(rows, folder.clusters)
    sizes = np.bincount([r.cluster for r in rows], minlength=record.k)
    clusters = {"n_clusters": record.k, "requested": record.requested,
                "head_clusters": record.k, "used": int((sizes > 0).sum()),
                "sizes": sizes.tolist(),
                "mean_confidence": round(float(np.mean([r.confidence for r in rows])), 4),
                "files_per_second": round(len(rows) / max(timer.seconds["assign"], 1e-9), 1),
                "choice": {"rule": record.rule, "why": explain_k(record, n_units=_n_units(models), models=models.k_from),
                           "near": list(near_choice(record)),
                           "criterion": {str(k): round(v, 6) for k, v in record.curve.items()},
                           "within_scatter": {str(k): round(v, 6) for k, v in record.scatter.items()}},
                "warnings": _cluster_warnings(record, sizes, n_files=len(rows)) if record.unit != SEGMENT else []}
    if agree:
        clusters["head_agrees"] = round(float(np.mean(agree)), 4)
    elif models.file_labels is not None:
        # clusters.csv holds the argmax of each file's mean posterior under the trained head; how
        # often that is the file's cluster in the hierarchy the head was trained on:
        clusters["head_agrees"] = round(float(np.mean([r.cluster == models.file_labels[feats[r.index].path]
                                                       for r in rows])), 4)
    for w in clusters["warnings"]:
        log.warning("%s", w)
    log.info("clusters: %s", clusters["choice"]["why"])
    log.info("clusters: %d of K=%d used, %s %s", clusters["used"], record.k,
             "files per dominant cluster" if record.unit == SEGMENT else "sizes", sizes.tolist())
    return Assigned(rows, {"clusters": clusters})


def _assign_here(todo: list, models: EmbedResult, *, folder: RunFolder) -> list:
    """:func:`assign_stage`'s files in the main process, from the step embeddings the models step kept."""
    from sound_cluster.embed.inference import Posteriors
    from sound_cluster.run.inference_jobs import assign_file

    run_encoder = Posteriors(models.encoder)
    known, spans = models.known, models.units.spans
    out: list[Any] = []
    for _, f, name in todo:
        try:  # one file's trouble (its cache entry, its output) must not cost the others
            # pop: the memory goes as the files are written (rows in the step cache are read there)
            out.append(assign_file(run_encoder, steps=known.pop(f.path, None), frames=f.cache_path, name=name,
                                   spans=spans.pop(f.path, ()), folder=folder))
        except (OSError, ValueError) as err:
            out.append(Failure(f.path, "assign", f"{type(err).__name__}: {err}"))
    return out


def _assign_on_workers(todo: list, models: EmbedResult, *, executor: ExecutorParams, folder: RunFolder) -> list:
    """:func:`assign_stage`'s files on the executor's workers: each reads its file's step embeddings where they lie
    on disk (or runs the encoder over its features), writes its posteriors and sends back its cluster."""
    import functools

    from sound_cluster.run.executor import map_files
    from sound_cluster.run.inference_jobs import AssignJob, assign_job

    spans = models.units.spans
    jobs = [AssignJob(f.path, f.cache_path, models.steps_at.get(f.path), name,
                      tuple(tuple(int(v) for v in row) for row in spans.pop(f.path, ())))
            for _, f, name in todo]
    return map_files(functools.partial(assign_job, encoder_path=str(models.encoder_path), run_dir=str(folder.dir)),
                     jobs, params=executor, stage="assign")


def _n_units(models: EmbedResult) -> int | None:
    """How many units the run's hierarchy held (None where it was not built here: task=apply)."""
    return (models.extra.get("units") or {}).get("n_units")


def _readable(feats, failures: list[Failure]) -> list:
    """The files whose cached features can be read; the others are added to ``failures``."""
    out = []
    for f in feats:
        try:
            np.load(f.cache_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            failures.append(Failure(f.path, "assign", f"{type(err).__name__}: {err}"))
            continue
        out.append(f)
    if not out:
        raise AudioError("no file could be assigned to a cluster; reasons in failures.csv", stage="assign")
    return out


def _cluster_warnings(record: ClusterRecord, sizes: np.ndarray, *, n_files: int) -> list[str]:
    """What the folder could not support: more clusters than files, clusters with one member or none."""
    out = []
    if record.requested != "auto" and int(record.requested) > n_files:
        out.append(f"model.n_clusters={record.requested} is more than the {n_files} files assigned: at most "
                   f"{n_files} clusters can hold a file")
    elif record.requested != "auto" and int(record.requested) > record.k:
        out.append(f"model.n_clusters={record.requested}: the model has only {record.k} clusters")
    singles = [int(c) for c in np.flatnonzero(sizes == 1)]
    if singles and n_files > 1:
        out.append(f"{len(singles)} cluster(s) hold a single file ({', '.join(map(str, singles[:10]))}): "
                   f"the folder may not support K={record.k}")
    empty = int((sizes == 0).sum())
    if empty:
        out.append(f"{empty} of the {record.k} clusters hold no file (no file's posterior peaks there)")
    return out
