"""What a fit clusters (``units.kind``): whole files, or the sounds inside every file cut from its tree.

Segment units are cut in the process itself (the embed stage needs them before it clusters): each
file is folded with the merge autoencoder trained here, its tree cut at its own count, and the
folds are handed on so the fold stage writes the very trees the units came from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from sound_cluster.config import Params
from sound_cluster.ingest.features import detection_frames
from sound_cluster.segment.segmenter import Segmenter, segment_units, train_merge_model
from sound_cluster.segment.units import SEGMENT, UnitChoice, choose_unit, count_units, file_runs, typical_sound_length_s

log = logging.getLogger(__name__)


def plan_units(feats, steps: Sequence[np.ndarray], *, params: Params, timer, merges_dir: Path | None = None):
    """What a fit clusters (``units.kind``): files, or the sounds of every file.

    Parameters
    ----------
    feats : sequence of FileFeatures
        The files whose step embeddings are ``steps``.
    steps : sequence of np.ndarray [shape=(n_steps, D)]
        Each file's step embeddings.
    params : Params
    timer
        Times ``merge_model_train`` and ``units`` (segment units only).
    merges_dir : Path, optional
        Where each file's fold waits for the fold stage (created here; see :func:`segment_units`).

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
    if params.units.kind == "file":
        return None, choose_unit("file", sounds=[], durations_s=durations, min_file_s=params.units.min_file_s), \
            None, None
    if params.segment.pairing != "adjacent":  # units.kind=auto (segment is refused by the checks): segments are contiguous
        return None, UnitChoice("file", params.units.kind, f"segment.pairing={params.segment.pairing} folds are not contiguous "
                                "in time: files are the units"), None, None
    seg = Segmenter.of(params)
    fins = [seg.fold_input(e, np.load(f.cache_path, mmap_mode="r", allow_pickle=False),
                           detect=detection_frames(f.cache_path)) for f, e in zip(feats, steps)]
    choice = choose_unit(params.units.kind, sounds=[f.sounds for f in fins], durations_s=durations,
                         min_file_s=params.units.min_file_s)
    log.info("units: %s (%s)", choice.unit, choice.rule)
    if choice.unit != SEGMENT:
        return None, choice, None, None
    with timer.stage("merge_model_train"):
        trained = train_merge_model(fins, segment=params.segment, seed=params.seed)
    counts, length_s = None, None
    if not seg.over_background:  # with pauses, a long run between pauses holds loud time / L sounds
        runs = [file_runs(fin, np.load(f.cache_path, mmap_mode="r", allow_pickle=False),
                          frame_rate_hz=seg.frame_rate_hz, time_pool=seg.time_pool, step_rate_hz=seg.step_rate_hz)
                for fin, f in zip(fins, feats)]
        length_s, source = typical_sound_length_s(runs, default_s=params.units.sound_s)
        log.info("units: typical sound %.2f s (%s)", length_s, source)
        counts = [count_units(r, sound_length_s=length_s) for r in runs]
    with timer.stage("units"):
        if merges_dir is not None:
            merges_dir.mkdir(parents=True, exist_ok=True)
        units = segment_units(steps, [f.cache_path for f in feats], durations_s=durations,
                              weights=trained[0].fold_weights(), seg=seg, counts=counts, sound_length_s=length_s,
                              fins=fins, merges_dir=merges_dir)
    log.info("units: %d sounds in %d files (%.1f per file)", len(units), len(feats), len(units) / max(len(feats), 1))
    return units, choice, trained, length_s
