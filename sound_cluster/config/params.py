"""All of a run's settings (:class:`Params`), built from the resolved config and checked before any work."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sound_cluster.config.checks import build, fail, non_negative, one_of
from sound_cluster.config.embed import PRETRAIN_TRAIN, AugmentParams, ModelParams, PretrainParams, TrainParams
from sound_cluster.config.ingest import AUDIO_EXTENSIONS, DataParams, FeatureParams
from sound_cluster.config.run import ExecutorParams, OutputParams
from sound_cluster.config.segment import SegmentParams, SoundParams
from sound_cluster.config.units import UnitParams, moved_from_model
from sound_cluster.errors import ConfigError
from sound_cluster.run_folder import ModelsFolder, RunFolder

TASKS = ("fit", "apply", "recluster", "pretrain", "export")


@dataclass(frozen=True)
class Params:
    """All parameters of one run; each group's defaults are those of its dataclass (the only place they are stated).

    Attributes
    ----------
    task
        fit: train and assign | apply: assign with the trained models in ``models`` | recluster: cut
        the finished run ``run`` at another ``model.n_clusters`` and write a new run | pretrain: train an
        encoder on a large corpus (``pretrain``) | export: write ``output.export`` into the finished run ``run``
        from its trees, nothing computed again
    seed
        seeds every random draw of training and clustering
    models
        task=apply: a run's ``models/`` folder
    run
        task=recluster: a finished run's folder (its data, features and embeddings are reused); task=export: the
        run whose exports are written
    """

    data: DataParams = field(default_factory=DataParams)
    features: FeatureParams = field(default_factory=FeatureParams)
    model: ModelParams = field(default_factory=ModelParams)
    units: UnitParams = field(default_factory=UnitParams)
    train: TrainParams = field(default_factory=TrainParams)
    segment: SegmentParams = field(default_factory=SegmentParams)
    sounds: SoundParams = field(default_factory=SoundParams)
    pretrain: PretrainParams = field(default_factory=PretrainParams)
    executor: ExecutorParams = field(default_factory=ExecutorParams)
    output: OutputParams = field(default_factory=OutputParams)
    task: str = "fit"
    seed: int = 0
    models: Path | None = None
    run: Path | None = None

    @property
    def starts_from_init(self) -> bool:
        """The task starts its encoder from ``model.init`` (fit, pretrain); apply and recluster load a run's."""
        return self.task in ("fit", "pretrain")

    def check(self) -> None:
        one_of("task", self.task, TASKS)
        non_negative("seed", self.seed, integer=True)
        for group in ("data", "features", "model", "units", "executor", "output"):
            getattr(self, group).check(group)
        segment_k = self.units.max_clusters if self.units.kind != "file" and self.model.n_clusters == "auto" else 0
        self.train.check("train", n_clusters=max(self.model.head_clusters, segment_k),
                         head_key="model.max_clusters, units.max_clusters, or model.n_clusters when larger")
        self.segment.check("segment")
        self.sounds.check("sounds")
        if self.units.kind == "segment" and self.segment.pairing != "adjacent":
            fail("units.kind", self.units.kind, f"file or auto with segment.pairing={self.segment.pairing} (segment units "
                  "are contiguous pieces of each file's tree: segment.pairing=adjacent)")
        check_features_fit_training(self.features, self.train)
        if self.task == "pretrain":
            self.pretrain.check("pretrain")
            check_features_fit_training(self.features, self.pretrain.train, prefix="pretrain.train")
        if self.task == "recluster":
            if self.run is None:
                fail("run", None, "a finished run's folder when task=recluster")
            for name in RunFolder(Path(self.run)).missing_for_recluster()[:1]:
                fail("run", str(self.run), f"a finished run's folder holding {name} (written by sound-cluster "
                     "0.1 from this version on)")
        elif self.task == "export":
            if self.run is None:
                fail("run", None, "a finished run's folder when task=export")
            folder = RunFolder(Path(self.run))
            if not (folder.clusters.is_file() and folder.trees.is_dir()):
                fail("run", str(self.run), "a finished run's folder (holding clusters.csv and trees/)")
            if not self.output.exports():
                fail("output.export", list(self.output.export), "a non-empty list of audacity, raven, jams, "
                     "segments when task=export")
        elif self.run is not None:
            fail("run", str(self.run), "null unless task=recluster or task=export")
        if self.task == "apply":
            if self.models is None:
                fail("models", None, "a run's models/ folder when task=apply")
            for name in ModelsFolder(Path(self.models)).missing_for_apply()[:1]:
                fail("models", str(self.models), f"a folder holding {name} (a run's models/ folder)")


def check_features_fit_training(features: FeatureParams, train: TrainParams, *, prefix: str = "train") -> None:
    """Settings that are each in range but do not fit together (checked before any work).

    Raises
    ------
    ConfigError
        The mel shift or frequency mask spans all the mel bands, or the time mask spans the
        whole training crop.
    """
    a = train.augment
    if a.mel_shift_bins >= features.n_mels:
        fail(f"{prefix}.augment.mel_shift_bins", a.mel_shift_bins, f"below features.n_mels={features.n_mels}")
    if a.freq_mask_bins >= features.n_mels:
        fail(f"{prefix}.augment.freq_mask_bins", a.freq_mask_bins, f"below features.n_mels={features.n_mels}")
    if a.time_mask_frames >= train.crop_frames:
        fail(f"{prefix}.augment.time_mask_frames", a.time_mask_frames,
              f"below {prefix}.crop_frames={train.crop_frames}")


def saved_model_params(saved: Mapping[str, Any], *, source: str) -> tuple[FeatureParams, ModelParams]:
    """The feature and model settings recorded with trained models (``params.json``), checked as a run's are.

    Raises
    ------
    ConfigError
        A value is missing or out of range; the message names ``source`` and the key.
    """
    if not isinstance(saved, Mapping) or not isinstance(saved.get("features"), Mapping) \
            or not isinstance(saved.get("model"), Mapping):
        raise ConfigError(f"{source} must hold the objects 'features' and 'model' of a run's models/ folder")
    feats = build(FeatureParams, {**saved["features"], "cache_dir": None}, f"{source}: features")
    model_values, _ = moved_from_model(saved["model"])  # runs of earlier versions kept the unit settings there
    if model_values.get("overcluster", 0) == 0:  # sound-cluster 0.1 recorded this unused setting as 0
        model_values.pop("overcluster", None)
    model = ModelParams.from_dict(model_values, prefix=f"{source}: model")
    feats.check(f"{source}: features")
    model.check(f"{source}: model")
    return feats, model


def _path_or_none(key: str, value: Any, base: Path) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        fail(key, value, "a path or null")
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else base / path


def params_from_config(cfg: Mapping[str, Any], *, base_dir: Path | None = None) -> Params:
    """Build and check :class:`Params` from a resolved config mapping.

    Parameters
    ----------
    cfg : Mapping
        The resolved config (``OmegaConf.to_container(cfg, resolve=True)``).
    base_dir : Path, optional
        Folder that relative paths are taken from (the folder the user ran the command in).
        Defaults to the current working directory.

    A ``rae`` group (the ``segment`` group's name in earlier versions) is read as ``segment``, and the unit
    settings earlier versions kept under ``model`` (``model.unit``, ...) as ``units`` (a run folder's recorded
    config may be that old).

    Raises
    ------
    ConfigError
        A value is out of range or a key is unknown; the message names both.
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    data = dict(cfg.get("data") or {})
    data["path"] = _path_or_none("data.path", data.get("path"), base)
    data["labels"] = _path_or_none("data.labels", data.get("labels"), base)
    data["segments"] = _path_or_none("data.segments", data.get("segments"), base)
    exts = data.get("extensions", AUDIO_EXTENSIONS)
    if isinstance(exts, str) or not isinstance(exts, (list, tuple)):
        fail("data.extensions", exts, "a list of file extensions")
    data["extensions"] = tuple(str(e).lower().lstrip(".") for e in exts)
    for key in ("follow_symlinks", "strict"):
        if key in data and not isinstance(data[key], bool):
            fail(f"data.{key}", data[key], "true or false")

    feats = dict(cfg.get("features") or {})
    feats["cache_dir"] = _path_or_none("features.cache_dir", feats.get("cache_dir"), base)

    ex = dict(cfg.get("executor") or {})
    out = dict(cfg.get("output") or {})
    if isinstance(out.get("export"), list):
        out["export"] = tuple(out["export"])
    if "plot_cuts" in out:
        if not isinstance(out["plot_cuts"], (list, tuple)):
            fail("output.plot_cuts", out["plot_cuts"], "a list of integers >= 2")
        out["plot_cuts"] = tuple(out["plot_cuts"])

    train = dict(cfg.get("train") or {})
    train["augment"] = build(AugmentParams, train.get("augment"), "train.augment")
    pretrain = dict(cfg.get("pretrain") or {})
    ptrain = dict(pretrain.get("train") or {})
    ptrain["augment"] = build(PRETRAIN_TRAIN.augment, ptrain.get("augment"), "pretrain.train.augment")
    pretrain["train"] = build(PRETRAIN_TRAIN, ptrain, "pretrain.train")

    model, old_units = moved_from_model(cfg.get("model") or {})
    params = Params(
        data=build(DataParams, data, "data"),
        features=build(FeatureParams, feats, "features"),
        model=ModelParams.from_dict(model),
        units=build(UnitParams, {**old_units, **(cfg.get("units") or {})}, "units"),
        train=build(TrainParams, train, "train"),
        segment=build(SegmentParams, {**(cfg.get("rae") or {}), **(cfg.get("segment") or {})}, "segment"),
        sounds=build(SoundParams, cfg.get("sounds"), "sounds"),
        pretrain=build(PretrainParams, pretrain, "pretrain"),
        executor=build(ExecutorParams, ex, "executor"),
        output=build(OutputParams, out, "output"),
        task=cfg.get("task", "fit"),
        seed=cfg.get("seed", 0),
        models=_path_or_none("models", cfg.get("models"), base),
        run=_path_or_none("run", cfg.get("run"), base),
    )
    params.check()
    return params

