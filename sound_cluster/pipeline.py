"""run(params, output_dir): the stages in order, per-file failures captured, outputs written."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import __version__
from .audio import decode, discover, probe, read_bytes
from .clusters import Assignment, HeadMerge, assign, write_clusters
from .config import FeatureParams, ModelParams, Params, saved_model_params
from .errors import AudioError, ConfigError, SoundClusterError
from .evaluate import evaluate_run, read_labels, read_segments
from .executor import map_files
from .failures import Failure, display_path, write_failures
from .features import FeatureCache, content_key, file_content_key, log_mel, warm_up
from .fold_stage import fold_stage
from .io_utils import atomic_open, atomic_write_json
from .names import output_names
from .units import SEGMENT

log = logging.getLogger(__name__)


def demo_path() -> Path:
    """The folder of demo audio bundled with the package (used when ``data.path`` is null)."""
    return Path(str(resources.files("sound_cluster") / "demo"))


@dataclass(frozen=True)
class FileFeatures:
    """One file's log-mel frames, stored in the feature cache.

    Attributes
    ----------
    path : Path
        The audio file (absolute).
    cache_path : Path
        ``.npy`` of shape (n_frames, n_mels), float32.
    duration_s : float
        Duration of the audio in seconds.
    n_frames : int
        Number of log-mel frames.
    cache_hit : bool
        True when the frames came from the cache.
    """

    path: Path
    cache_path: Path
    duration_s: float
    n_frames: int
    cache_hit: bool


# Files larger than this are not read into memory whole (one hour of 16-bit stereo at 44.1 kHz is 635 MB).
STREAM_ABOVE_BYTES = 64 << 20


def extract_features(path: Path, *, cache: FeatureCache) -> FileFeatures:
    """Per-file job of the features stage: cached log-mel frames of ``path``.

    Raises
    ------
    AudioError
        The file cannot be used (see :func:`sound_cluster.audio.decode`).
    """
    params: FeatureParams = cache.params
    try:
        st = os.stat(path)
    except OSError as err:
        raise AudioError(f"cannot read file: {err.strerror}") from None
    entry = cache.lookup(path, st)
    if entry is not None:  # unchanged since a run with these settings: nothing to read
        return FileFeatures(Path(path), cache.path(entry.key), entry.duration_s, entry.n_frames, True)
    if st.st_size > STREAM_ABOVE_BYTES:  # a long recording: hashed and decoded a block at a time
        try:
            key = file_content_key(path)
        except OSError as err:
            raise AudioError(f"cannot read file: {err.strerror}") from None
        data: bytes | Path = Path(path)
    else:
        data = read_bytes(path)
        key = content_key(data)
    info = probe(data)
    cached = cache.get(key, mmap=True)
    if cached is not None:  # same content seen under another name or before a touch
        n_frames, hit = int(cached.shape[0]), True
    else:
        y = decode(data, sample_rate=params.sample_rate, min_samples=params.n_fft, info=info)
        try:
            frames = log_mel(y, params=params)
        except Exception as err:  # noqa: BLE001 - librosa's own errors, reported per file
            raise AudioError(f"feature extraction failed: {type(err).__name__}: {err}", stage="features") from None
        cache.put(key, frames)
        n_frames, hit = int(frames.shape[0]), False
    cache.remember(path, st, key=key, duration_s=info.duration_s, n_frames=n_frames)
    return FileFeatures(Path(path), cache.path(key), info.duration_s, n_frames, hit)


@dataclass
class RunResult:
    """What a run produced: features per usable file, failures, and the summary written."""

    root: Path
    features: list[FileFeatures]
    failures: list[Failure]
    summary: dict[str, Any] = field(default_factory=dict)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t0, 4)


def library_versions() -> dict[str, str]:
    import hydra
    import librosa
    import numpy
    import soundfile

    return {
        "sound_cluster": __version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "librosa": librosa.__version__,
        "soundfile": soundfile.__version__,
        "libsndfile": soundfile.__libsndfile_version__,
        "hydra": hydra.__version__,
    }


# What a run writes into its folder; a folder holding any of these already holds a run.
RUN_OUTPUTS = ("summary.json", "clusters.csv", "failures.csv", "segments.csv", "report.html", "trees", "posteriors",
               "plots", "models", "tensorboard", "report", "jams", "export")


@dataclass
class _RunState:
    """What the summary reports, filled in as the stages go (so an interrupted run can say how far it got)."""

    params: Params
    root: Path
    config: dict[str, Any]
    timer: "_Timer"
    cache: FeatureCache | None = None
    files: list[Path] = field(default_factory=list)
    feats: list[FileFeatures] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def prepare_run_dir(output_dir: Path, *, overwrite: bool) -> None:
    """Make ``output_dir`` ready for a new run: refuse one that holds an earlier run, unless ``overwrite``.

    Raises
    ------
    ConfigError
        The folder holds an earlier run's outputs and ``overwrite`` is false, or it cannot be written.
    """
    import shutil

    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        old = [name for name in RUN_OUTPUTS if (output_dir / name).exists()]
        if old and not overwrite:
            raise ConfigError(f"the run folder {output_dir} already holds a run ({', '.join(old)}); choose another "
                              "hydra.run.dir, or set output.overwrite=true to delete those outputs first")
        for name in old:
            p = output_dir / name
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        if old:
            log.warning("output.overwrite=true: removed %s from %s", ", ".join(old), output_dir)
        probe = output_dir / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write to the run folder {output_dir} (hydra.run.dir): "
                          f"{err.strerror or err}") from None


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
    prepare_run_dir(output_dir, overwrite=params.output.overwrite)
    if params.task == "apply":
        params = _with_model_features(params)
    state = _RunState(params, params.data.path or demo_path(), config or {}, _Timer())
    _write_summary(output_dir, state, status="running")
    try:
        state.cache = _prepare_cache(params)
        summary = _run_stages(state, output_dir)
    except KeyboardInterrupt:
        _write_summary(output_dir, state, status="interrupted", reason="interrupted (Ctrl-C or SIGTERM)")
        raise
    except BaseException as err:
        reason = str(err) if isinstance(err, SoundClusterError) else f"{type(err).__name__}: {err}"
        with contextlib.suppress(Exception):  # the original error matters more than a summary
            _write_summary(output_dir, state, status="failed", reason=reason)
        raise
    _log_done(summary, output_dir)
    return RunResult(state.root, state.feats, state.failures, summary)


def _run_stages(state: _RunState, output_dir: Path) -> dict[str, Any]:
    params, root, timer = state.params, state.root, state.timer
    # On the bundled demo its own references are used unless others are given.
    labels_path = params.data.labels or (demo_path() / "labels.csv" if params.data.path is None else None)
    segments_path = params.data.segments or (demo_path() / "segments.csv" if params.data.path is None else None)

    # References are read before any work: a malformed file fails now, not after training.
    references = {"data.labels": read_labels(labels_path) if labels_path else None,
                  "data.segments": read_segments(segments_path, fmt=params.data.segments_format) if segments_path
                  else None}

    with timer.stage("discover"):
        files, failures = discover(root, extensions=params.data.extensions,
                                   follow_symlinks=params.data.follow_symlinks)
    state.files, state.failures = files, failures
    rel_root = root if root.is_dir() else root.parent
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

    write_failures(state.failures, output_dir / "failures.csv", root=rel_root)
    if not feats:
        raise AudioError(f"none of the {len(files)} audio files under {root} could be used; "
                         f"reasons in {output_dir / 'failures.csv'}", stage="features")

    if params.task == "pretrain":
        from .pretrain import pretrain

        with timer.stage("pretrain"):
            state.extra["pretrain"] = pretrain(
                [(f.cache_path, f.n_frames) for f in feats], params=params, output_dir=output_dir, corpus_root=root,
                audio_seconds=sum(f.duration_s for f in feats), audio_paths=[f.path for f in feats])
        return _write_summary(output_dir, state, status="complete")

    extra = state.extra
    names = output_names([f.path for f in feats], root=rel_root)
    n_failed = len(state.failures)
    try:
        embed_extra, rows, unit_fit = _embed_stage(feats, names, params=params, output_dir=output_dir, rel_root=rel_root,
                                         timer=timer, failures=state.failures)
    finally:  # also when no file could be assigned: that error sends the user to failures.csv
        if len(state.failures) > n_failed:
            write_failures(state.failures, output_dir / "failures.csv", root=rel_root)
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
        write_failures(state.failures, output_dir / "failures.csv", root=rel_root)
    if not params.output.report:
        return _write_summary(output_dir, state, status="complete")
    # summary.json is written before the report (a failing report must not cost it) and
    # again after, to record the report's seconds.
    from .report import write_report

    summary = _write_summary(output_dir, state, status="running")
    with timer.stage("report"):
        path = write_report(output_dir, summary=summary, rows=rows, audio_paths=[feats[r.index].path for r in rows],
                            sample_rate=params.features.sample_rate, excerpt_s=params.output.report_excerpt_s,
                            n_files=params.output.max_plots, segments_k=params.output.segments,
                            n_segments=n_segments)
    log.info("report: %s", path)
    return _write_summary(output_dir, state, status="complete")


def _check_references(references: dict[str, dict | None], files: list[Path], rel_root: Path,
                      extra: dict[str, Any], *, demo: bool = False) -> None:
    """Say how many found files each reference (labels, segments) covers; warn when it covers few or none.

    The demo's own references cover only part of it by design (labels the clips, segments the
    joined sequences): that is said at INFO level.
    """
    from .evaluate import match_references

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


def _with_model_features(params: Params) -> Params:
    """Apply mode: features must be computed as they were for training; take them from the models."""
    source = Path(params.models) / "params.json"
    try:
        saved = json.loads(source.read_text(encoding="utf-8"))
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


def _embed_stage(feats, names: list[str], *, params: Params, output_dir: Path, rel_root: Path, timer: "_Timer",
                 failures: list[Failure]) -> tuple[dict[str, Any], list[Assignment]]:
    """Train (fit) or load (apply) the encoder, then assign every file; writes clusters.csv.

    Returns the summary's entries and one row per assigned file (``rows[i].index`` points into
    ``feats``); the files that could not be assigned are added to ``failures``, even when none could.
    """
    from . import embedding  # imports TensorFlow: only when this stage runs

    models_dir = output_dir / "models"
    extra: dict[str, Any] = {}
    unit_fit = UnitFit()
    if params.task == "fit":
        from .fold_stage import plan_units
        from .head import clip_inputs, fit_unit_clusters
        from .pretrained import resolve_init

        init = resolve_init(params.model, params.features)
        with timer.stage("train"):
            encoder, history = embedding.fit_encoder(
                [(f.cache_path, f.n_frames) for f in feats], model=params.model, train=params.train,
                n_mels=params.features.n_mels, seed=params.seed, log_dir=str(output_dir / "tensorboard"),
                verbose=0,  # one log line per epoch comes from the usage callback
                init=str(init.path) if init else None)
        with timer.stage("embed"):
            readable = _readable(feats, failures)
            clip_embeddings, steps = clip_inputs(
                encoder, (np.load(f.cache_path, mmap_mode="r", allow_pickle=False) for f in readable))
        units, choice, trained, sound_length_s = plan_units(readable, steps, params=params, timer=timer)
        with timer.stage("cluster"):
            if units is None:
                vectors, unit_steps = clip_embeddings, steps
            else:
                vectors, unit_steps = units.vectors, units.steps(steps)
            fitted = fit_unit_clusters(encoder, vectors, unit_steps, steps, model=params.model, train=params.train,
                                       seed=params.seed, max_clusters=params.model.max_segment_clusters
                                       if units is not None else params.model.max_clusters)
            del unit_steps
            encoder, clusters, head_history = fitted.encoder, fitted.clusters, fitted.history
            # Each file's step embeddings, from the pass that clustered them: assigning needs only the head.
            known = {f.path: e for f, e in zip(readable, fitted.step_embeddings)}
            del fitted
            merge = clusters.record(unit=choice.unit, sound_length_s=sound_length_s)
            _save_units(models_dir / "units.npz", vectors=vectors, labels=clusters.labels,
                        files=[display_path(f.path, rel_root) for f in readable], units=units,
                        n_steps=[len(e) for e in steps])
        del steps
        unit_fit = UnitFit(choice.unit, trained, sound_length_s=sound_length_s)
        extra["units"] = {**choice.to_dict(), "n_units": len(units) if units is not None else len(readable),
                          "sound_length_s": None if sound_length_s is None else round(sound_length_s, 4)}
        if units is not None:
            unit_fit.merges = {readable[i].path: m for i, m in units.merges.items()}
            unit_fit.counts = {readable[i].path: n for i, n in units.counts.items()}
            # Each unit's span and cluster by file, to say how often the head agrees with them.
            for f, s, e, c in zip(units.file, units.start, units.end, clusters.labels):
                unit_fit.spans.setdefault(readable[int(f)].path, []).append((int(s), int(e), int(c)))
        embedding.save_encoder(encoder, models_dir / "embedding.keras")
        atomic_write_json(models_dir / "params.json", {
            "features": params.features.key_fields(), "model": params.model.to_dict(),
            "frame_rate_hz": params.features.frame_rate_hz,
            "step_rate_hz": params.features.frame_rate_hz / params.model.time_pool,
        })
        _save_merge(models_dir, merge)
        epochs = len(history.get("loss", []))
        extra["training"] = {"init": str(init.path) if init else "scratch",
                             "backbone": "trained" if init is None or params.train.backbone == "tuned" else "frozen",
                             "epochs": epochs,
                             "seconds_per_epoch": round(timer.seconds["train"] / max(epochs, 1), 3) if epochs else None,
                             "history": history,
                             "head": {"steps": params.train.head_steps,
                                      "final_cross_entropy": round(head_history["loss"][-1], 4)}}
    else:
        known = {}
        encoder = embedding.load_encoder(str(Path(params.models) / "embedding.keras"))
        extra["models"] = str(params.models)
        # The loaded head's width, not the params': models saved before heads were merged have no max_clusters.
        merge = _load_merge(Path(params.models), head_clusters=int(encoder.get_layer("logits").units))
        unit_fit = UnitFit(merge.unit, sound_length_s=merge.sound_length_s)
        extra["units"] = {"unit": merge.unit, "requested": merge.unit, "rule": "the models' unit",
                          "sound_length_s": merge.sound_length_s}

    with timer.stage("assign"):
        run_encoder = embedding.Posteriors(encoder)
        rows = []
        agree: list[bool] = []  # segment units: the head's cluster of each unit equals the unit's cluster
        unread = {x.path for x in failures if x.stage == "assign"}  # features unreadable while clustering
        for i, (f, name) in enumerate(zip(feats, names)):
            if f.path in unread:
                continue
            try:  # one file's trouble (its cache entry, its output) must not cost the others
                emb = known.pop(f.path, None)  # pop: the memory goes as the files are written
                if emb is None:
                    emb, post = run_encoder(np.load(f.cache_path, mmap_mode="r", allow_pickle=False))
                else:
                    post = run_encoder.from_embeddings(emb)
                post = merge.merge(post)  # (T', K): the run's clusters
                with atomic_open(output_dir / "posteriors" / f"{name}.npz", "wb", fsync=False) as fh:
                    np.savez(fh, embedding=emb, posteriors=post)
            except (OSError, ValueError) as err:
                failures.append(Failure(f.path, "assign", f"{type(err).__name__}: {err}"))
                continue
            k, conf = assign(post)
            agree += [int(post[a:b].mean(axis=0).argmax()) == c for a, b, c in unit_fit.spans.pop(f.path, ())]
            rows.append(Assignment(display_path(f.path, rel_root), k, conf, f.duration_s, name, i))
    if not rows:
        raise AudioError("no file could be assigned to a cluster; reasons in failures.csv", stage="assign")
    write_clusters(rows, output_dir / "clusters.csv")
    sizes = np.bincount([r.cluster for r in rows], minlength=merge.k)
    extra["clusters"] = {"n_clusters": merge.k, "requested": merge.requested,
                         "head_clusters": len(merge.mapping), "used": int((sizes > 0).sum()),
                         "sizes": sizes.tolist(),
                         "mean_confidence": round(float(np.mean([r.confidence for r in rows])), 4),
                         "files_per_second": round(len(rows) / max(timer.seconds["assign"], 1e-9), 1),
                         "choice": {"rule": merge.rule, "criterion": {str(k): round(v, 6) for k, v in merge.curve.items()},
                                    "within_scatter": {str(k): round(v, 6) for k, v in merge.scatter.items()}},
                         "warnings": _cluster_warnings(merge, sizes, n_files=len(rows)) if merge.unit != SEGMENT
                         else []}
    if agree:
        extra["clusters"]["head_agrees"] = round(float(np.mean(agree)), 4)
    elif params.task == "fit":
        # clusters.csv holds the argmax of each file's mean posterior under the trained head; how
        # often that is the file's cluster in the hierarchy the head was trained on:
        label = {f.path: int(c) for f, c in zip(readable, clusters.labels)}
        extra["clusters"]["head_agrees"] = round(float(np.mean([r.cluster == label[feats[r.index].path]
                                                                for r in rows])), 4)
    for w in extra["clusters"]["warnings"]:
        log.warning("%s", w)
    log.info("clusters: K=%d (%s), %d used, %s %s", merge.k,
             "chosen: " + merge.rule if merge.requested == "auto" else "given", extra["clusters"]["used"],
             "files per dominant cluster" if merge.unit == SEGMENT else "sizes", sizes.tolist())
    return extra, rows, unit_fit


@dataclass
class UnitFit:
    """What the embed stage hands the fold stage about the units it clustered.

    Attributes
    ----------
    unit : str
        ``file`` or ``segment``.
    trained : tuple (MergeAutoencoder, list of float) or None
        The merge autoencoder trained to cut files into segment units (the fold stage reuses it).
    merges : dict of Path to Merges
        Each file's fold that the units were cut from.
    counts : dict of Path to int
        Each file's number of units (its tree's cut).
    spans : dict of Path to list of (int, int, int)
        Each file's units: start and end step and cluster (to compare with the head's).
    sound_length_s : float or None
        Segment units: the folder's typical sound length, which counts the sounds of files
        without pauses.
    """

    unit: str = "file"
    trained: Any = None
    merges: dict[Path, Any] = field(default_factory=dict)
    counts: dict[Path, int] = field(default_factory=dict)
    spans: dict[Path, list[tuple[int, int, int]]] = field(default_factory=dict)
    sound_length_s: float | None = None


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


def _save_units(path: Path, *, vectors: np.ndarray, labels: np.ndarray, files: list[str], units,
                n_steps: list[int]) -> None:
    """``models/units.npz``: what was clustered (each unit's file, step span and embedding) and its cluster.

    Arrays: ``vectors`` (n_units, D) float32, unit length as clustered; ``cluster``, ``unit_file``,
    ``start``, ``end`` (n_units,) int64 (steps, half-open); ``files`` (n_files,) str, the paths of
    clusters.csv. File units span their whole file.
    """
    if units is None:
        file, start, end = np.arange(len(files)), np.zeros(len(files), np.int64), np.asarray(n_steps, np.int64)
    else:
        file, start, end = units.file, units.start, units.end
    v = np.asarray(vectors, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    with atomic_open(path, "wb", fsync=False) as fh:
        np.savez(fh, vectors=v.astype(np.float32), cluster=np.asarray(labels, np.int64), unit_file=np.asarray(file),
                 start=np.asarray(start), end=np.asarray(end), files=np.asarray(files, dtype=str))


def _save_merge(models_dir: Path, merge: HeadMerge) -> None:
    atomic_write_json(models_dir / "clusters.json", merge.to_dict())


def _load_merge(models: Path, *, head_clusters: int) -> HeadMerge:
    """The merge a fit saved with its models (models from before merging had none: the head is the clusters)."""
    path = models / "clusters.json"
    if not path.is_file():
        return HeadMerge.identity(head_clusters)
    try:
        merge = HeadMerge.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"models: cannot read {path}: {err}") from None
    if len(merge.mapping) != head_clusters or min(merge.mapping) < 0 or max(merge.mapping) >= merge.k:
        raise ConfigError(f"models: {path} maps {len(merge.mapping)} head clusters onto {merge.k}, but the encoder "
                          f"has {head_clusters}")
    return merge


def _cluster_warnings(merge: HeadMerge, sizes: np.ndarray, *, n_files: int) -> list[str]:
    """What the folder could not support: more clusters than files, clusters with one member or none."""
    out = []
    if merge.requested != "auto" and int(merge.requested) > n_files:
        out.append(f"model.n_clusters={merge.requested} is more than the {n_files} files assigned: at most "
                   f"{n_files} clusters can hold a file")
    elif merge.requested != "auto" and int(merge.requested) > merge.k:
        out.append(f"model.n_clusters={merge.requested}: the model has only {merge.k} clusters")
    singles = [int(c) for c in np.flatnonzero(sizes == 1)]
    if singles and n_files > 1:
        out.append(f"{len(singles)} cluster(s) hold a single file ({', '.join(map(str, singles[:10]))}): "
                   f"the folder may not support K={merge.k}")
    empty = int((sizes == 0).sum())
    if empty:
        out.append(f"{empty} of the {merge.k} clusters hold no file (no file's posterior peaks there)")
    return out


def _write_summary(output_dir: Path, state: _RunState, *, status: str, reason: str | None = None) -> dict:
    """Write ``summary.json`` for the run so far; ``status`` is running, complete, interrupted or failed."""
    params, feats, failures = state.params, state.feats, state.failures
    hits = sum(f.cache_hit for f in feats)
    by_stage = [f.stage for f in failures]
    summary: dict[str, Any] = {
        "sound_cluster_version": __version__,
        "status": status,
        **({"reason": reason} if reason else {}),
        "task": params.task,
        "data_path": str(state.root),
        # found = processed + failed; problems with folders (unlistable, symlink loops) are counted apart
        "files_found": len(state.files),
        "files_processed": len(feats),
        "files_failed": sum(s not in ("discover", "fold") for s in by_stage),
        "discover_problems": by_stage.count("discover"),
        "trees_failed": by_stage.count("fold"),
        "audio_seconds": round(sum(f.duration_s for f in feats), 3),
        "frames": sum(f.n_frames for f in feats),
        "frame_rate_hz": params.features.frame_rate_hz,
        "cache": {"dir": str(state.cache.dir) if state.cache else None, "hits": hits, "misses": len(feats) - hits},
        "executor": {"kind": params.executor.kind, "n_workers": params.executor.n_workers},
        **state.extra,
        "stage_seconds": state.timer.seconds,
        "versions": library_versions(),
        "config": state.config,
    }
    atomic_write_json(output_dir / "summary.json", summary)
    return summary


def _log_done(summary: dict, output_dir: Path) -> None:
    log.info("processed %d of %d files (%.1f s of audio, %d cache hits); %d failed; outputs in %s",
             summary["files_processed"], summary["files_found"], summary["audio_seconds"], summary["cache"]["hits"],
             summary["files_failed"] + summary["trees_failed"], output_dir)
