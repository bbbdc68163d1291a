"""A run's settings: typed, frozen dataclasses, checked before any work.

Hydra stays in :mod:`sound_cluster.cli`; everything else receives these dataclasses. Each group's
defaults are stated once, in its dataclass; :func:`default_nodes` hands them to Hydra's config
store, so ``conf/`` holds only the root config and its presets (``debug=tiny``), and a setting
documented here is the setting a run uses. :func:`params_from_config` turns a plain mapping (the
resolved config) into :class:`Params` and raises :class:`~sound_cluster.errors.ConfigError`
naming the key and the value received when something is out of range. What depends on the
machine (cores, a terminal, optional packages, the encoder's card) is checked by
:func:`sound_cluster.run.preflight.preflight`.

======================  ===============================================  ==============================
group                   dataclass                                        module
======================  ===============================================  ==============================
``data``, ``features``  :class:`DataParams`, :class:`FeatureParams`      :mod:`sound_cluster.config.ingest`
``model``, ``train``,   :class:`ModelParams`, :class:`TrainParams`,      :mod:`sound_cluster.config.embed`
``pretrain``            :class:`PretrainParams`
``units``               :class:`UnitParams`                              :mod:`sound_cluster.config.units`
``segment``, ``sounds`` :class:`SegmentParams`, :class:`SoundParams`     :mod:`sound_cluster.config.segment`
``executor``,           :class:`ExecutorParams`, :class:`OutputParams`   :mod:`sound_cluster.config.run`
``output``
======================  ===============================================  ==============================
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sound_cluster.config.embed import (
    PRETRAIN_TRAIN,
    AugmentParams,
    ConvBlock,
    ModelParams,
    PretrainParams,
    TrainParams,
)
from sound_cluster.config.ingest import AUDIO_EXTENSIONS, SEGMENT_FORMATS, DataParams, FeatureParams
from sound_cluster.config.params import Params, check_features_fit_training, params_from_config, saved_model_params
from sound_cluster.config.run import EXPORTS, ExecutorParams, OutputParams
from sound_cluster.config.segment import SegmentParams, SoundParams
from sound_cluster.config.units import UNITS, UnitParams

GROUPS = ("data", "features", "model", "units", "train", "segment", "sounds", "pretrain", "executor", "output")
TOP_LEVEL = ("task", "seed", "models", "run")  # the root's own keys

__all__ = ["AUDIO_EXTENSIONS", "EXPORTS", "GROUPS", "PRETRAIN_TRAIN", "SEGMENT_FORMATS", "UNITS", "AugmentParams",
           "ConvBlock", "DataParams", "ExecutorParams", "FeatureParams", "ModelParams", "OutputParams", "Params",
           "PretrainParams", "SegmentParams", "SoundParams", "TrainParams", "UnitParams", "as_config", "check_features_fit_training", "default_nodes",
           "params_from_config", "saved_model_params"]


def _plain(value: Any) -> Any:
    """A dataclass value as plain config data: tuples as lists, paths as strings."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def as_config(params: Params) -> dict[str, Any]:
    """``params`` as the plain config mapping :func:`params_from_config` builds them from (what summary.json records)."""
    return {**{k: _plain(getattr(params, k)) for k in TOP_LEVEL}, **{g: _plain(getattr(params, g)) for g in GROUPS}}


def default_nodes() -> dict[str, dict[str, Any]]:
    """Every group's defaults as plain config data, keyed by group, and the root's under ``""``."""
    p = Params()
    return {"": {k: _plain(getattr(p, k)) for k in TOP_LEVEL}, **{g: _plain(getattr(p, g)) for g in GROUPS}}
