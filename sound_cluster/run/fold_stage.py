"""The fold stage: the merge autoencoder trained (fit) or loaded (apply), every file folded into its tree.

Per-file work (:func:`fold_file`: the file's segments from :func:`sound_cluster.segment.segmenter.segment_file`,
the tree JSON, the exports, the plot) runs through the executor. When a run clusters the sounds inside its
files, the fit folded them before it clustered (:mod:`sound_cluster.run.unit_plan`) and its merges come
with the jobs, so the units come from the very trees written here.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sound_cluster.config import OutputParams, Params
from sound_cluster.errors import AudioError
from sound_cluster.ingest.failures import Failure
from sound_cluster.ingest.features import detection_frames
from sound_cluster.io_utils import save_keras_model
from sound_cluster.outputs.export import segment_lines, write_file_exports, write_segment_lines
from sound_cluster.run.embed_stage import MergeSource, UnitFit
from sound_cluster.run.executor import map_files
from sound_cluster.run_folder import RunFolder
from sound_cluster.segment.fold import Merges
from sound_cluster.segment.segmenter import Segmenter, leaf_sizes, segment_file, train_merge_model
from sound_cluster.segment.tree import doc_cut, resolve_k, write_tree_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldSettings:
    """What one file's fold job needs: the segmenter's settings, the outputs' and the audio's geometry.

    Per-file jobs get this, not the whole :class:`~sound_cluster.config.Params` (a small pickle per worker).
    """

    seg: Segmenter
    output: OutputParams
    sample_rate: int
    hop_length: int

    @classmethod
    def of(cls, params: Params) -> "FoldSettings":
        return cls(Segmenter.of(params), params.output, params.features.sample_rate, params.features.hop_length)


@dataclass(frozen=True)
class FoldJob:
    """One file's work in the fold stage (small, so it travels cheaply to a worker process)."""

    path: Path
    rel: str
    name: str
    npz: Path
    frames: Path
    duration_s: float
    plot: bool
    merges: Any = None  # the file's Merges (or its .npz) when made before (segment units, or the batched fold)
    units: int | None = None  # segment units: the file's count, when the fit counted it already


def _job_arrays(job: FoldJob) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """One job's step embeddings, posteriors, (memory-mapped) frames, and the frames its sounds are found on
    where the file was gated (:func:`~sound_cluster.ingest.features.detection_frames`; else None).

    Raises
    ------
    OSError, ValueError, KeyError
        The posteriors or the frames cannot be read.
    """
    with np.load(job.npz, allow_pickle=False) as z:
        emb, post = z["embedding"], z["posteriors"]
    return emb, post, np.load(job.frames, mmap_mode="r", allow_pickle=False), detection_frames(job.frames)


def _job_fold_input(job: FoldJob, seg: Segmenter):
    """What one job's file is folded from (its step embeddings and frames; the posteriors are not needed)."""
    emb, _, frames, detect = _job_arrays(job)
    return seg.fold_input(emb, frames, detect=detect)


def fold_file(job: FoldJob, *, weights, fs: FoldSettings, output_dir: Path,
              segments: bool = False, sound_length_s: float | None = None) -> dict[str, Any]:
    """Per-file job of the fold stage: tree JSON (and a plot) of one file.

    ``segments``: also return the file's rows of ``segments.csv`` (``output.export_segments``,
    or a run whose units are segments). ``sound_length_s``: segment units, the folder's typical
    sound length (see :func:`file_tree`).

    Raises
    ------
    AudioError
        With stage ``fold``: the file is too long for ``segment.pairing=any``.
    """

    emb, post, frames, detect = _job_arrays(job)
    segment = fs.seg.segment
    if segment.pairing == "any" and len(emb) > segment.max_any_leaves:
        raise AudioError(f"{len(emb)} leaves are too many for segment.pairing=any "
                         f"(segment.max_any_leaves={segment.max_any_leaves}); use segment.pairing=adjacent", stage="fold")
    out_params = fs.output
    merges = Merges.load(job.merges) if isinstance(job.merges, Path) else job.merges
    segs = segment_file(emb, frames, duration_s=job.duration_s, weights=weights, seg=fs.seg, merges=merges,
                        units=job.units, sound_length_s=sound_length_s, detect=detect)
    tree, auto = segs.tree, segs.auto
    doc = tree.to_json(source=job.rel, posteriors=post, max_depth=out_params.max_tree_depth,
                       min_segment_s=out_params.min_segment_s, auto=auto, boundary_refine_s=out_params.boundary_refine_s,
                       cut=segs.cut)
    root = doc.pop("root")  # the small header first, so a reader sees it before the tree
    key, record = segs.record()
    doc[key] = record
    doc["root"] = root
    folder = RunFolder(output_dir)
    write_tree_json(doc, folder.tree(job.name))
    out: dict[str, Any] = {"n_leaves": tree.n_leaves, "depth": tree.depth(), "auto_k": doc["auto_k"],
                           "n_segments": resolve_k(doc, out_params.segments)}
    rows = write_file_exports(doc, folder=folder, name=job.name, audio_path=job.path,
                              exports=fs.output.exports() | ({"segments"} if segments else set()),
                              k=fs.output.export_k or fs.output.segments, default_nyquist_hz=fs.sample_rate / 2)
    if segments:  # as text and cluster numbers: a few bytes a row in the main process
        out["segment_lines"], out["segment_rows"] = segment_lines(rows), len(rows)
        out["segment_clusters"] = [int(r[4]) for r in rows if r[4] != ""]
    if job.plot:
        from sound_cluster.outputs.report import plot_file

        own = [(c["start_s"], c["end_s"], c.get("kind", "sound")) for c in doc_cut(doc, "auto")] \
            if doc.get("auto_cut") else None
        plot_file(frames, post, tree, out_path=folder.plot(job.name),
                  title=f"{job.rel}: cluster {doc.get('cluster')} ({doc.get('confidence', 0):.2f})",
                  sample_rate=fs.sample_rate, hop_length=fs.hop_length,
                  cuts=fs.output.plot_cuts, own_cut=own)
    return out


@dataclass
class FoldResult:
    """What the fold stage gives the writer of the summary and the report.

    Attributes
    ----------
    extra : dict
        The summary's entries: ``trees``, ``segments`` (when written), ``merge_model_training`` (a fit).
    failures : list of Failure
        Files whose fold failed.
    n_segments : dict of str to int
        Each written tree's number of segments at ``output.segments``, by output name (the report
        orders files by it).
    """

    extra: dict[str, Any]
    failures: list[Failure]
    n_segments: dict[str, int]


def merge_model_for(merge: MergeSource, jobs: list[FoldJob], *, params: Params, seg: Segmenter, timer):
    """The merge autoencoder: the fit's, the saved one, or one trained now on the jobs' files (a fit of file units).

    Returns the model and its training losses (None when it was loaded).
    """
    import keras

    from sound_cluster.segment import merge_model  # noqa: F401 - TensorFlow; registers MergeAutoencoder for loading

    if merge.path is not None:
        return keras.saving.load_model(str(merge.path), safe_mode=True, compile=False), None
    if merge.trained is not None:
        return merge.trained
    with timer.stage("merge_model_train"):
        return train_merge_model([_job_fold_input(j, seg) for j in jobs],
                                 segment=params.segment, seed=params.seed)


def fold_stage(feats, rows, *, params: Params, output_dir: Path, timer, merge: MergeSource, units: UnitFit,
               segments: bool = False) -> FoldResult:
    """Every file folded into its tree (and its segments and exports written), with the run's merge autoencoder.

    Parameters
    ----------
    feats : sequence of FileFeatures
        The files, in the order of ``rows``.
    rows : sequence of Assignment
    merge : MergeSource
        Where the merge autoencoder comes from; one trained here is saved with the models.
    units : UnitFit
        The run's units: each file's fold and count where the fit made them, and the typical
        sound length of segment units.
    segments : bool
        Write ``segments.csv`` (``output.export_segments``, or segment units).
    """

    folder = RunFolder(output_dir)
    jobs = [FoldJob(f.path, r.path, r.name, folder.posteriors(r.name), f.cache_path, f.duration_s,
                    i < params.output.max_plots, units.merges.get(f.path), units.counts.get(f.path))
            for i, (f, r) in enumerate(zip(feats, rows))]
    extra: dict[str, Any] = {}
    fs = FoldSettings.of(params)
    model, losses = merge_model_for(merge, jobs, params=params, seg=fs.seg, timer=timer)
    if losses is not None:  # trained by this run: kept with its models
        save_keras_model(model, folder.models.merge_model)
        extra["merge_model_training"] = {"epochs": len(losses), "mean_merge_cost": losses}
    with timer.stage("fold"):
        device = fold_device(params.segment.fold_device)
        if device == "gpu":
            jobs = _fold_batched(jobs, weights=model.fold_weights(), seg=fs.seg)
        results = map_files(
            functools.partial(fold_file, weights=model.fold_weights(), fs=fs, output_dir=output_dir,
                              segments=segments, sound_length_s=units.sound_length_s),
            jobs, params=params.executor, stage="fold", progress=params.output.progress)
    done = [r for r in results if not isinstance(r, Failure)]
    if segments:
        write_segment_lines((d["segment_lines"] for d in done), folder.segments)
        clusters = [c for d in done for c in d["segment_clusters"]]
        extra["segments"] = {"rows": sum(d["segment_rows"] for d in done),
                             "k": params.output.export_k or params.output.segments,
                             "sizes": np.bincount(clusters).tolist() if clusters else []}
    extra["trees"] = {"written": len(done), "pairing": params.segment.pairing, "linkage": params.segment.linkage,
                      "fold_device": device,
                      "leaf_rate_hz": fs.seg.step_rate_hz,
                      "auto_k_mean": round(float(np.mean([d["auto_k"] for d in done])), 3) if done else None,
                      "leaves": int(sum(d["n_leaves"] for d in done)),
                      "max_depth": int(max((d["depth"] for d in done), default=0)),
                      "plots": int(sum(j.plot for j, r in zip(jobs, results) if not isinstance(r, Failure)))}
    n_segments = {j.name: r["n_segments"] for j, r in zip(jobs, results) if not isinstance(r, Failure)}
    return FoldResult(extra, [r for r in results if isinstance(r, Failure)], n_segments)


def fold_device(setting: str) -> str:
    """``segment.fold_device`` resolved: ``auto`` is ``gpu`` when TensorFlow sees one."""
    if setting != "auto":
        return setting
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def _fold_batched(jobs: list[FoldJob], *, weights, seg: Segmenter) -> list[FoldJob]:
    """The jobs with their merges made by the lockstep fold, ``segment.fold_batch`` files at a time, in order of length.

    A file whose posteriors or frames cannot be read keeps no merges: its own job reports the error.
    """
    from sound_cluster.segment.lockstep import fold_lockstep

    batch = seg.segment.fold_batch
    seqs: dict[int, tuple[Any, np.ndarray]] = {}  # job index -> (FoldInput, leaf sizes)
    for k, j in enumerate(jobs):
        try:
            fin = _job_fold_input(j, seg)
        except (OSError, ValueError, KeyError):
            continue
        seqs[k] = fin, leaf_sizes(len(fin.leaves), duration_s=j.duration_s, step_rate_hz=seg.step_rate_hz)
    order = sorted(seqs, key=lambda k: len(seqs[k][0].leaves))  # similar lengths together: little padding
    out = list(jobs)
    for a in range(0, len(order), batch):
        chunk = order[a:a + batch]
        fins = [seqs[k][0] for k in chunk]
        # min_size comes from the settings, the same for every file, as the heap fold reads it (FoldInput)
        merges = fold_lockstep([f.leaves for f in fins], weights=weights, sizes=[seqs[k][1] for k in chunk],
                               barriers=[f.barriers for f in fins], min_size=fins[0].min_size)
        for k, m in zip(chunk, merges):
            out[k] = dataclasses.replace(jobs[k], merges=m)
    return out
