"""run(params, output_dir): the stages in order, per-file failures captured, outputs written."""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Any

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
from sound_cluster.run.embed_stage import embed_stage, with_model_features
from sound_cluster.run.executor import map_files
from sound_cluster.run.fold_stage import fold_stage
from sound_cluster.run.preflight import preflight
from sound_cluster.run.recluster import recluster_params
from sound_cluster.run.run_dir import RunResult, RunState, Timer, demo_path, log_done, prepare_run_dir, write_summary
from sound_cluster.run_folder import SEGMENTS, RunFolder
from sound_cluster.segment.units import SEGMENT

log = logging.getLogger(__name__)



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
    prepare_run_dir(output_dir, overwrite=params.output.overwrite)
    if params.task == "apply":
        params = with_model_features(params)
    elif params.task == "recluster":

        params = recluster_params(params)
    state = RunState(params, params.data.path or demo_path(), config or as_config(params), Timer())
    write_summary(output_dir, state, status="running")
    try:
        state.cache = _prepare_cache(params)
        summary = _run_stages(state, output_dir)
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


def _run_stages(state: RunState, output_dir: Path) -> dict[str, Any]:
    params, root, timer = state.params, state.root, state.timer
    folder = RunFolder(output_dir)
    # On the bundled demo its own references are used unless others are given.
    labels_path = params.data.labels or (demo_path() / "labels.csv" if params.data.path is None else None)
    segments_path = params.data.segments or (demo_path() / SEGMENTS if params.data.path is None else None)

    # References are read before any work: a malformed file fails now, not after training.
    references = {"data.labels": read_labels(labels_path) if labels_path else None,
                  "data.segments": read_segments(segments_path, fmt=params.data.segments_format) if segments_path
                  else None}

    with timer.stage("discover"):
        files, failures = discover(root, extensions=params.data.extensions,
                                   follow_symlinks=params.data.follow_symlinks)
    rel_root = root if root.is_dir() else root.parent
    if params.task == "recluster":  # the run's files, not what the folder holds now

        theirs = {r.path for r in read_clusters(RunFolder(params.run).clusters)}
        files = [f for f in files if display_path(f, rel_root) in theirs]
    state.files, state.failures = files, failures
    _check_references(references, files, rel_root, state.extra, demo=params.data.path is None)
    if params.data.strict and failures:
        f = failures[0]
        raise AudioError(f"{f.path}: {f.reason} (data.strict=true stops at the first problem)", stage=f.stage)
    if not files:
        raise AudioError(f"no audio files ({', '.join(params.data.extensions)}) found under {root}",
                         stage="discover")
    log.info("found %d audio files under %s", len(files), root)
    if len(files) == 1 and params.task == "fit":
        log.warning("only one audio file (%s): clusters need several files to mean anything; its segment tree "
                    "is still built. Point data.path at a folder of files to compare them.", files[0])

    with timer.stage("features"):
        if params.executor.kind == "process":
            warm_up(params.features)  # forked workers inherit the loaded libraries
        results = map_files(
            functools.partial(extract_features, cache=state.cache),
            files,
            params=params.executor,
            stage="features",
            progress=params.output.progress,
            stop_on_failure=params.data.strict,
        )
    state.feats = [r for r in results if isinstance(r, FileFeatures)]
    state.failures += [r for r in results if isinstance(r, Failure)]
    feats = state.feats
    for f in state.failures:
        log.warning("skipped %s (%s): %s", f.path, f.stage, f.reason)

    write_failures(state.failures, folder.failures, root=rel_root)
    if not feats:
        raise AudioError(f"none of the {len(files)} audio files under {root} could be used; "
                         f"reasons in {folder.failures}", stage="features")

    if params.task == "pretrain":
        from sound_cluster.embed.pretraining import pretrain

        with timer.stage("pretrain"):
            state.extra["pretrain"] = pretrain(
                [(f.cache_path, f.n_frames) for f in feats], params=params, output_dir=output_dir, corpus_root=root,
                audio_seconds=sum(f.duration_s for f in feats), audio_paths=[f.path for f in feats])
        return write_summary(output_dir, state, status="complete")

    extra = state.extra
    names = output_names([f.path for f in feats], root=rel_root)
    n_failed = len(state.failures)
    try:
        embed_extra, rows, unit_fit = embed_stage(feats, names, params=params, output_dir=output_dir, rel_root=rel_root,
                                         timer=timer, failures=state.failures)
    finally:  # also when no file could be assigned: that error sends the user to failures.csv
        if len(state.failures) > n_failed:
            write_failures(state.failures, folder.failures, root=rel_root)
    extra.update(embed_extra)
    fold_extra, fold_failures, n_segments = fold_stage(
        [feats[r.index] for r in rows], rows, params=params, output_dir=output_dir, timer=timer,
        trained=unit_fit.trained, merges=unit_fit.merges, counts=unit_fit.counts,
        segments="segments" in params.output.exports() or unit_fit.unit == SEGMENT,
        sound_length_s=unit_fit.sound_length_s)
    extra.update(fold_extra)
    if unit_fit.unit == SEGMENT and "segments" in fold_extra:
        log.info("segments: %d in %d files, per cluster %s (segments.csv)", fold_extra["segments"]["rows"],
                 fold_extra["trees"]["written"], fold_extra["segments"]["sizes"])
    with timer.stage("evaluate"):
        extra.update(evaluate_run(output_dir, labels=labels_path, segments=segments_path,
                                  segments_format=params.data.segments_format))
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
    if fold_failures:
        state.failures += fold_failures
        write_failures(state.failures, folder.failures, root=rel_root)
    if not params.output.report:
        return write_summary(output_dir, state, status="complete")
    # summary.json is written before the report (a failing report must not cost it) and
    # again after, to record the report's seconds.

    summary = write_summary(output_dir, state, status="running")
    with timer.stage("report"):
        path = write_report(output_dir, summary=summary, rows=rows, audio_paths=[feats[r.index].path for r in rows],
                            sample_rate=params.features.sample_rate, excerpt_s=params.output.report_excerpt_s,
                            n_files=params.output.max_plots, segments_k=params.output.segments,
                            n_segments=n_segments)
    log.info("report: %s", path)
    return write_summary(output_dir, state, status="complete")


def _check_references(references: dict[str, dict | None], files: list[Path], rel_root: Path,
                      extra: dict[str, Any], *, demo: bool = False) -> None:
    """Say how many found files each reference (labels, segments) covers; warn when it covers few or none.

    The demo's own references cover only part of it by design (labels the clips, segments the
    joined sequences): that is said at INFO level.
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
