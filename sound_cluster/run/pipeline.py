"""run(params, output_dir): the stages in order, one dispatch on the task, per-file failures captured.

Every task goes the same way: references read, files found, features made (:func:`ingest`); then
``pretrain`` trains an encoder, and ``fit``, ``apply`` and ``recluster`` get their models one way
each (:data:`TASKS`), assign every file, fold every file into its tree, score the run against the
references and write the report. The task is looked up once, here.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sound_cluster.config import Params, as_config
from sound_cluster.embed.clusters import read_clusters
from sound_cluster.errors import AudioError, ConfigError, SoundClusterError
from sound_cluster.ingest.audio import discover
from sound_cluster.ingest.extract import FileFeatures, extract_features
from sound_cluster.ingest.failures import Failure, display_path, write_failures
from sound_cluster.ingest.features import FeatureCache, warm_up
from sound_cluster.ingest.names import output_names
from sound_cluster.outputs.evaluate import evaluate_run
from sound_cluster.outputs.references import match_references, read_labels, read_segments
from sound_cluster.outputs.report import write_report
from sound_cluster.run.embed_stage import (
    EmbedResult,
    assign_stage,
    fit_models,
    load_models,
    recluster_models,
    with_model_features,
)
from sound_cluster.run.executor import map_files
from sound_cluster.run.export_task import export_run
from sound_cluster.run.fold_stage import fold_stage
from sound_cluster.run.preflight import preflight
from sound_cluster.run.recluster import recluster_params
from sound_cluster.run.run_dir import RunResult, RunState, Timer, demo_path, log_done, prepare_run_dir, write_summary
from sound_cluster.run_folder import SEGMENTS, RunFolder
from sound_cluster.segment.units import SEGMENT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One task's way through the stages.

    Attributes
    ----------
    settings : callable
        The run's settings from the command's (``apply`` takes the models' features, ``recluster`` the run's).
    models : callable or None
        The models step of the embed stage (:mod:`sound_cluster.run.embed_stage`); None: ``pretrain``.
    fits : bool
        The task fits clusters to the folder (a folder of one file is worth a warning).
    run_files : bool
        Only the files of the run being cut again (``recluster``), not what the folder holds now.
    direct : callable or None
        A task that only writes from a finished run (``export``): it runs instead of the stages.
    """

    settings: Callable[[Params], Params]
    models: Callable[..., EmbedResult] | None
    fits: bool = False
    run_files: bool = False
    direct: Callable[[Params], RunResult] | None = None


def _as_given(params: Params) -> Params:
    return params


TASKS: dict[str, Task] = {
    "fit": Task(_as_given, fit_models, fits=True),
    "apply": Task(with_model_features, load_models),
    "recluster": Task(recluster_params, recluster_models, run_files=True),
    "pretrain": Task(_as_given, None),
    "export": Task(_as_given, None, direct=export_run),
}


def _prepare_cache(params: Params) -> FeatureCache:
    """The feature cache, or a clear error naming the folder and the setting when it cannot be written."""
    cache = FeatureCache(params.features.resolved_cache_dir(), params=params.features)
    try:
        cache.prepare()
    except OSError as err:
        raise ConfigError(f"features.cache_dir: cannot write the feature cache in {cache.dir}: "
                          f"{err.strerror or err}; set features.cache_dir to a writable folder") from None
    return cache


def run(params: Params, *, output_dir: Path, config: dict[str, Any] | None = None) -> RunResult:
    """Run the pipeline on ``params.data.path`` and write the run's files into ``output_dir``.

    ``summary.json`` is written first with ``"status": "running"`` and at the end with
    ``complete``, or ``interrupted`` / ``failed`` and the reason, so a folder never looks finished
    when it is not.

    Parameters
    ----------
    params : Params
        Checked parameters (:func:`sound_cluster.config.params_from_config`).
    output_dir : Path
        The run folder; ``failures.csv`` and ``summary.json`` are written there.
    config : dict, optional
        The resolved config, recorded in ``summary.json``.

    Raises
    ------
    ConfigError
        The run folder holds an earlier run (and ``output.overwrite`` is false), or the run
        folder or the feature cache cannot be written.
    AudioError
        ``data.path`` does not exist or holds no audio, no file could be used, or
        ``data.strict`` is set and a file failed.
    """
    output_dir = Path(output_dir)
    params = preflight(params)
    task = TASKS[params.task]
    if task.direct is not None:  # nothing to compute: no run folder of its own
        return task.direct(params)
    # Settings taken from a run or models folder, and the references: refused before a run folder is made.
    params = task.settings(params)
    references = read_references(params)
    prepare_run_dir(output_dir, overwrite=params.output.overwrite)
    state = RunState(params, params.data.path or demo_path(), config or as_config(params), Timer())
    state.references = references
    write_summary(output_dir, state, status="running")
    try:
        state.cache = _prepare_cache(params)
        ingest(state, RunFolder(output_dir), task=task)
        summary = (_pretrain if task.models is None else _cluster)(state, RunFolder(output_dir), task=task)
    except KeyboardInterrupt:
        write_summary(output_dir, state, status="interrupted", reason="interrupted (Ctrl-C or SIGTERM)")
        raise
    except BaseException as err:
        reason = str(err) if isinstance(err, SoundClusterError) else f"{type(err).__name__}: {err}"
        with contextlib.suppress(Exception):  # the original error matters more than a summary
            write_summary(output_dir, state, status="failed", reason=reason)
        raise
    log_done(summary, output_dir)
    return RunResult(state.root, state.feats, state.failures, summary)


@dataclass
class References:
    """The run's references, read before any work: clip labels and labelled segments (None where not given).

    Attributes
    ----------
    labels, segments : Path or None
        The tables.
    tables : dict
        What they hold, by setting (``data.labels``: {path: label}; ``data.segments``: {path: events}).
    """

    labels: Path | None
    segments: Path | None
    tables: dict[str, dict | None]


def read_references(params: Params) -> References:
    """Read ``data.labels`` and ``data.segments`` (on the bundled demo, its own unless others are given).

    Raises
    ------
    ConfigError
        A table is missing, unreadable or malformed.
    """
    demo = params.data.path is None
    labels = params.data.labels or (demo_path() / "labels.csv" if demo else None)
    segments = params.data.segments or (demo_path() / SEGMENTS if demo else None)
    return References(labels, segments, {
        "data.labels": read_labels(labels) if labels else None,
        "data.segments": read_segments(segments, fmt=params.data.segments_format) if segments else None})


def ingest(state: RunState, folder: RunFolder, *, task: Task) -> None:
    """References checked, files found and their features made; fills ``state`` (files, features, failures).

    Raises
    ------
    ConfigError
        A reference file is malformed.
    AudioError
        No audio found, none usable, or ``data.strict`` and a file failed.
    """
    params, root, timer = state.params, state.root, state.timer
    with timer.stage("discover"):
        files, failures = discover(root, extensions=params.data.extensions,
                                   follow_symlinks=params.data.follow_symlinks)
    rel_root = state.rel_root
    if task.run_files:  # the run's files, not what the folder holds now
        try:
            theirs = {r.path for r in read_clusters(RunFolder(params.run).clusters)}
        except (OSError, ValueError) as err:
            raise ConfigError(f"run: {params.run}: clusters.csv: {err}") from None
        files = [f for f in files if display_path(f, rel_root) in theirs]
    state.files, state.failures = files, failures
    _check_references(state.references.tables, files, rel_root, state.extra, demo=params.data.path is None)
    if params.data.strict and failures:
        f = failures[0]
        raise AudioError(f"{f.path}: {f.reason} (data.strict=true stops at the first problem)", stage=f.stage)
    if not files:
        raise AudioError(f"no audio files ({', '.join(params.data.extensions)}) found under {root}",
                         stage="discover")
    log.info("found %d audio files under %s", len(files), root)
    if len(files) == 1 and task.fits:
        log.warning("only one audio file (%s): clusters need several files to mean anything; its segment tree "
                    "is still built. Point data.path at a folder of files to compare them.", files[0])

    with timer.stage("features"):
        state.feats, failed = extract_files(files, params=params, cache=state.cache, progress=params.output.progress)
    state.failures += failed
    for f in state.failures:
        log.warning("skipped %s (%s): %s", f.path, f.stage, f.reason)
    write_failures(state.failures, folder.failures, root=rel_root)
    if not state.feats:
        raise AudioError(f"none of the {len(files)} audio files under {root} could be used; "
                         f"reasons in {folder.failures}", stage="features")


def extract_files(files: list[Path], *, params: Params, cache: FeatureCache,
                  progress: bool = False) -> tuple[list[FileFeatures], list[Failure]]:
    """Every file's features through ``cache`` on the run's executor, as a run makes them.

    Returns
    -------
    feats : list of FileFeatures
        The files whose features could be made, in the order of ``files``.
    failures : list of Failure
        The others, each with its reason (with ``data.strict``, the first one ends the map).
    """
    if params.executor.kind == "process":
        warm_up(params.features)  # forked workers inherit the loaded libraries
    results = map_files(functools.partial(extract_features, cache=cache, max_seconds=params.data.max_file_s),
                        files, params=params.executor, stage="features", progress=progress,
                        stop_on_failure=params.data.strict)
    return [r for r in results if isinstance(r, FileFeatures)], [r for r in results if isinstance(r, Failure)]


def _pretrain(state: RunState, folder: RunFolder, *, task: Task) -> dict[str, Any]:
    """``task=pretrain``: an encoder and its card from the folder's features."""
    from sound_cluster.embed.pretraining import pretrain

    params, feats = state.params, state.feats
    beds = _bed_features(params, cache=state.cache) if params.pretrain.beds else []
    with state.timer.stage("pretrain"):
        state.extra["pretrain"] = pretrain(
            [(f.cache_path, f.n_frames) for f in feats], params=params, output_dir=folder.dir, corpus_root=state.root,
            audio_seconds=sum(f.duration_s for f in feats), audio_paths=[f.path for f in feats], beds=beds)
    return write_summary(folder.dir, state, status="complete")


def _bed_features(params: Params, *, cache: FeatureCache) -> list[FileFeatures]:
    """The features of ``pretrain.beds``' recordings, through the feature cache.

    Raises
    ------
    AudioError
        The folder holds no usable audio.
    """
    root = Path(params.pretrain.beds)
    files, problems = discover(root, extensions=params.data.extensions, follow_symlinks=params.data.follow_symlinks)
    feats, failed = extract_files(files, params=params, cache=cache)
    for f in [*problems, *failed]:
        log.warning("pretrain.beds: skipped %s (%s): %s", f.path, f.stage, f.reason)
    if not feats:
        raise AudioError(f"pretrain.beds: no usable audio under {root}", stage="features")
    log.info("pretrain.beds: %d recordings, %.1f minutes", len(feats), sum(f.duration_s for f in feats) / 60)
    return feats


def _cluster(state: RunState, folder: RunFolder, *, task: Task) -> dict[str, Any]:
    """``fit``, ``apply``, ``recluster``: the task's models, every file assigned and folded, scores, the report."""
    try:
        return _cluster_steps(state, folder, task=task)
    finally:
        shutil.rmtree(folder.scratch, ignore_errors=True)


def _cluster_steps(state: RunState, folder: RunFolder, *, task: Task) -> dict[str, Any]:
    params, feats, timer, extra, rel_root = state.params, state.feats, state.timer, state.extra, state.rel_root
    names = output_names([f.path for f in feats], root=rel_root)
    n_failed = len(state.failures)
    try:
        models = task.models(feats, params=params, folder=folder, rel_root=rel_root, timer=timer,
                             failures=state.failures)
        extra.update(models.extra)
        assigned = assign_stage(feats, names, models, executor=params.executor, folder=folder, rel_root=rel_root,
                                timer=timer, failures=state.failures)
    finally:  # also when no file could be assigned: that error sends the user to failures.csv
        if len(state.failures) > n_failed:
            write_failures(state.failures, folder.failures, root=rel_root)
    extra.update(assigned.extra)
    rows, unit = assigned.rows, models.units.unit
    folded = fold_stage([feats[r.index] for r in rows], rows, params=params, output_dir=folder.dir, timer=timer,
                        merge=models.merge, units=models.units,
                        segments="segments" in params.output.exports() or unit == SEGMENT)
    del models
    shutil.rmtree(folder.scratch, ignore_errors=True)  # the folds the trees were written from
    extra.update(folded.extra)
    if unit == SEGMENT and "segments" in folded.extra:
        log.info("segments: %d in %d files, per cluster %s (segments.csv)", folded.extra["segments"]["rows"],
                 folded.extra["trees"]["written"], folded.extra["segments"]["sizes"])
    refs = state.references
    with timer.stage("evaluate"):
        extra.update(evaluate_run(folder.dir, labels=refs.labels, segments=refs.segments,
                                  segments_format=params.data.segments_format))
    _log_scores(extra)
    if folded.failures:
        state.failures += folded.failures
        write_failures(state.failures, folder.failures, root=rel_root)
    if not params.output.report:
        return write_summary(folder.dir, state, status="complete")
    # summary.json is written before the report (a failing report must not cost it) and
    # again after, to record the report's seconds.
    summary = write_summary(folder.dir, state, status="running")
    with timer.stage("report"):
        path = write_report(folder.dir, summary=summary, rows=rows, audio_paths=[feats[r.index].path for r in rows],
                            sample_rate=params.features.sample_rate, excerpt_s=params.output.report_excerpt_s,
                            n_files=params.output.max_plots, segments_k=params.output.segments,
                            n_segments=folded.n_segments)
    log.info("report: %s", path)
    return write_summary(folder.dir, state, status="complete")


def _log_scores(extra: dict[str, Any]) -> None:
    if "metrics" in extra:
        m = extra["metrics"]
        log.info("against %s: NMI %.3f, ARI %.3f, accuracy %.3f (%d files)", m["labels"], m["nmi"], m["ari"],
                 m["acc"], m["n"])
    if "segment_metrics" in extra:
        m = extra["segment_metrics"]
        log.info("against %s: boundary F %.3f at 0.1 s, %.3f at 0.5 s, L-measure %.3f (%d files)", m["segments"],
                 m["mean"]["f_0.1"], m["mean"]["f_0.5"], m["mean"]["l_measure"], m["n"])
    if "event_metrics" in extra:
        m = extra["event_metrics"]
        log.info("against %s: events NMI %.3f, ARI %.3f, accuracy %.3f (%d events in %d files)", m["segments"],
                 m["nmi"], m["ari"], m["acc"], m["n"], m["files"])


def _check_references(references: dict[str, dict | None], files: list[Path], rel_root: Path,
                      extra: dict[str, Any], *, demo: bool = False) -> None:
    """Say how many found files each reference (labels, segments) covers; warn when it covers few or none.

    The demo's own references cover only part of it by design (labels the clips, segments the
    recordings): that is said at INFO level.
    """

    found = {display_path(f, rel_root) for f in files}
    for key, ref in references.items():
        if ref is None:
            continue
        matched = len(match_references(ref, found))
        extra.setdefault("references", {})[key] = {"rows": len(ref), "files_matched": matched,
                                                   "files_without": len(found) - matched}
        if matched == 0:
            log.warning("%s names none of the %d files found (paths must be relative to data.path, e.g. %r); "
                        "it will not be scored", key, len(found), sorted(found)[0] if found else "a/b.wav")
        elif matched < len(found):
            (log.info if demo else log.warning)("%s: %d of %d files have no entry and are not scored", key,
                                                len(found) - matched, len(found))
