"""What a fit clusters (``model.unit``): whole files, or the sounds inside every file cut from its tree.

Segment units are cut in the process itself (the embed stage needs them before it clusters): each
file is folded with the merge autoencoder trained here, its tree cut at its own count, and the
folds are handed on so the fold stage writes the very trees the units came from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from sound_cluster.config import Params
from sound_cluster.run.fold_stage import FoldSettings, file_tree, fold_merges, train_merge_model
from sound_cluster.segment.pauses import fold_input
from sound_cluster.segment.units import (SEGMENT, UnitChoice, choose_unit, collect_units, count_units, file_runs,
                                         typical_sound_length_s)

if TYPE_CHECKING:
    from sound_cluster.segment.pauses import FoldInput
    from sound_cluster.segment.units import Units

log = logging.getLogger(__name__)


def segment_units(fins: Sequence["FoldInput"], steps: Sequence[np.ndarray], frames: Sequence[Any], *,
                  durations_s: Sequence[float], weights, fs: FoldSettings, counts: Sequence[int],
                  sound_length_s: float) -> "Units":
    """The sounds of every file as units: each file folded, its tree cut at its own count.

    Parameters
    ----------
    fins : sequence of FoldInput
        Per file (:func:`sound_cluster.segment.pauses.fold_input` of its step embeddings).
    steps : sequence of np.ndarray [shape=(n_steps, D)]
        Per file, the step embeddings (units are embedded from them, pauses left out).
    frames : sequence of np.ndarray or path
        Per file, its log-mel frames (or the ``.npy`` holding them).
    durations_s : sequence of float
    weights : FoldWeights
        The trained merge autoencoder's.
    fs : FoldSettings
    counts : sequence of int
        Per file, its number of units (:func:`sound_cluster.segment.units.count_units`).
    sound_length_s : float
        The folder's typical sound length (:func:`sound_cluster.segment.units.typical_sound_length_s`).

    Returns
    -------
    Units
        With each file's merges and count, so the fold stage writes the trees the units were cut from.
    """
    step_rate_hz = fs.step_rate_hz
    spans, merges = [], {}
    for i, (fin, fr, dur, n) in enumerate(zip(fins, frames, durations_s, counts)):
        fr = np.load(fr, mmap_mode="r", allow_pickle=False) if isinstance(fr, (str, Path)) else fr
        m = fold_merges(fin, weights=weights, duration_s=dur, fs=fs, step_rate_hz=step_rate_hz)
        tree, auto = file_tree(fin, m, fr, duration_s=dur, fs=fs, step_rate_hz=step_rate_hz, units=n,
                               sound_length_s=sound_length_s)
        spans.append(tree.cut(int(auto["k"])))
        merges[i] = m
    units = collect_units(spans, steps, [f.quiet for f in fins], merges=merges)
    units.counts = {i: int(n) for i, n in enumerate(counts)}
    return units


def plan_units(feats, steps: Sequence[np.ndarray], *, params: Params, timer):
    """What a fit clusters (``model.unit``): files, or the sounds of every file.

    Parameters
    ----------
    feats : sequence of FileFeatures
        The files whose step embeddings are ``steps``.
    steps : sequence of np.ndarray [shape=(n_steps, D)]
        Each file's step embeddings.
    params : Params
    timer
        Times ``rae_train`` and ``units`` (segment units only).

    Returns
    -------
    units : Units or None
        The segments of every file; None for file units.
    choice : UnitChoice
    trained : tuple (MergeAutoencoder, list of float) or None
        The merge autoencoder trained to cut the files (segment units), for the fold stage.
    sound_length_s : float or None
        Segment units: the folder's typical sound length.
    """

    durations = [f.duration_s for f in feats]
    if params.model.unit == "file":
        return None, choose_unit("file", sounds=[], durations_s=durations, min_file_s=params.model.unit_min_file_s), \
            None, None
    if params.rae.pairing != "adjacent":  # model.unit=auto (segment is refused by the checks): segments are contiguous
        return None, UnitChoice("file", params.model.unit, f"rae.pairing={params.rae.pairing} folds are not contiguous "
                                "in time: files are the units"), None, None
    fs = FoldSettings.of(params)
    step_rate_hz = fs.step_rate_hz
    fins = [fold_input(e, np.load(f.cache_path, mmap_mode="r", allow_pickle=False), rae=params.rae,
                       time_pool=params.model.time_pool, step_rate_hz=step_rate_hz) for f, e in zip(feats, steps)]
    choice = choose_unit(params.model.unit, sounds=[f.sounds for f in fins], durations_s=durations,
                         min_file_s=params.model.unit_min_file_s)
    log.info("units: %s (%s)", choice.unit, choice.rule)
    if choice.unit != SEGMENT:
        return None, choice, None, None
    runs = [file_runs(fin, np.load(f.cache_path, mmap_mode="r", allow_pickle=False), frame_rate_hz=fs.frame_rate_hz,
                      time_pool=fs.time_pool, step_rate_hz=step_rate_hz) for fin, f in zip(fins, feats)]
    length_s, source = typical_sound_length_s(runs, default_s=params.model.unit_sound_s)
    log.info("units: typical sound %.2f s (%s)", length_s, source)
    counts = [count_units(r, sound_length_s=length_s) for r in runs]
    with timer.stage("rae_train"):
        trained = train_merge_model([f.leaves for f in fins], rae=params.rae, seed=params.seed)
    with timer.stage("units"):
        units = segment_units(fins, steps, [f.cache_path for f in feats], durations_s=durations,
                              weights=trained[0].fold_weights(), fs=fs, counts=counts,
                              sound_length_s=length_s)
    log.info("units: %d segments in %d files (%.1f per file)", len(units), len(feats), len(units) / max(len(feats), 1))
    return units, choice, trained, length_s
