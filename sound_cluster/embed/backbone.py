"""The encoder a fit clusters with: the one ``model.init`` names, used as it is or trained on the folder first."""

from __future__ import annotations

import logging
from typing import Sequence

import keras

from sound_cluster.config import ModelParams, TrainParams
from sound_cluster.embed.encoder import load_encoder
from sound_cluster.embed.head import pretrained_backbone
from sound_cluster.embed.training import fit_encoder

log = logging.getLogger(__name__)


def fit_backbone(frame_files: Sequence[tuple[str, int]], *, model: ModelParams, train: TrainParams, n_mels: int,
                 seed: int, init: str | None, log_dir: str | None = None,
                 verbose: int = 0) -> tuple[keras.Model, dict[str, list[float]]]:
    """The fit's encoder before its clusters: ``init`` frozen (``train.backbone=frozen``), else trained here.

    Parameters
    ----------
    frame_files : sequence of (path, n_frames)
        The folder's cached log-mel arrays (``.npy``, (n_frames, n_mels)) and their lengths.
    init : str or None
        A ``.keras`` encoder to start from (:func:`sound_cluster.embed.shipped.resolve_init`); None: random
        weights, always trained.

    Returns
    -------
    encoder : keras.Model
        Its own head is not the run's: the run's comes after its clusters (:mod:`sound_cluster.embed.head`).
    history : dict
        Per-epoch training history; empty when nothing was trained.
    """
    if init is not None and train.backbone == "frozen":
        return pretrained_backbone(load_encoder(init), model=model, n_mels=n_mels), {}
    return fit_encoder(frame_files, model=model, train=train, n_mels=n_mels, seed=seed, log_dir=log_dir,
                       verbose=verbose, init=init)
