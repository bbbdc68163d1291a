from pathlib import Path

import pytest

from sound_cluster.config import params_from_config
from sound_cluster.errors import ConfigError
from tests.conftest import compose_cfg, make_params


def test_defaults_compose_and_check(tmp_path):
    p = make_params()
    assert p.features.n_mels == 64
    assert p.data.path is None  # the bundled demo
    assert p.executor.kind in ("serial", "process")
    assert p.features.frame_rate_hz == pytest.approx(100.0)


def test_overrides_reach_params(tmp_path):
    p = make_params("features.n_mels=40", "model.init=scratch", "data.path=audio", "executor.kind=serial",
                    "data.extensions=[wav]", base_dir=tmp_path)
    assert p.features.n_mels == 40
    assert p.data.path == tmp_path / "audio"  # relative paths are made absolute against the user's folder
    assert p.executor.kind == "serial"
    assert p.data.extensions == ("wav",)


def test_debug_tiny_overlay():
    p = make_params("debug=tiny")
    assert p.executor.kind == "serial" and p.model.n_clusters == 4 and p.train.epochs == 2


@pytest.mark.parametrize(
    "override, match",
    [
        ("features.n_mels=0", r"features\.n_mels must be a positive integer, got 0"),
        ("features.hop_length=-5", r"features\.hop_length .* got -5"),
        ("features.fmax=20000", r"features\.fmax .* got 20000"),
        ("features.hop_length=1024", r"features\.hop_length .* got 1024"),
        ("features.log_offset=0", r"features\.log_offset .* got 0"),
        ("features.denoise_min_background=1.5", r"features\.denoise_min_background must be a share in \[0, 1\), got 1\.5"),
        ("executor.kind=threads", r"executor\.kind must be one of auto, serial, process, dask, got 'threads'"),
        ("executor.n_workers=0", r"executor\.n_workers .* got 0"),
        ("task=train", r"task must be one of fit, apply, recluster, pretrain, export, got 'train'"),
        ("segment.node_vector=sum", r"segment\.node_vector must be one of mean, code, got 'sum'"),
        ("run=somewhere", r"run must be null unless task=recluster or task=export, got '.*somewhere'"),
        ("task=recluster", r"run must be a finished run's folder when task=recluster, got None"),
        ("task=export", r"run must be a finished run's folder when task=export, got None"),
        ("segment.min_node_s=0.5", r"segment\.min_node_s must be at most segment\.min_sound_s=0\.1, got 0\.5"),
        ("output.progress=sometimes", r"output\.progress must be auto, true or false, got 'sometimes'"),
        ("train.batch_size=20", r"train\.batch_size must be at least twice the cluster head's size "
                                r"\(model\.max_clusters, units\.max_clusters, or model\.n_clusters when "
                                r"larger\): 128, got 20"),
        ("model.n_clusters=80", r"train\.batch_size must be at least twice .*: 160, got 128"),
        ("train.temperature=0", r"train\.temperature .* got 0"),
        ("train.length_power=1.5", r"train\.length_power must be in \[0, 1\], got 1.5"),
        ("train.length_power=abc", r"train\.length_power must be in \[0, 1\], got 'abc'"),
        ("train.contrastive_weight=-1", r"train\.contrastive_weight .* got -1"),
        ("model.n_clusters=1", r"model\.n_clusters must be auto or an integer >= 2, got 1"),
        ("model.n_clusters=many", r"model\.n_clusters must be auto or an integer >= 2, got 'many'"),
        ("model.max_clusters=1", r"model\.max_clusters must be an integer >= 2, got 1"),
        ("data.strict=maybe", r"data\.strict must be true or false, got 'maybe'"),
        ("data.extensions=[]", r"data\.extensions .* got \[\]"),
    ],
)
def test_out_of_range_values_name_key_and_value(override, match):
    with pytest.raises(ConfigError, match=match):
        params_from_config(compose_cfg(override))


def test_unknown_key_is_an_error():
    cfg = compose_cfg()
    cfg["features"]["n_melz"] = 3
    with pytest.raises(ConfigError, match=r"unknown key features\.n_melz"):
        params_from_config(cfg)


def test_the_composed_default_config_is_the_dataclasses_defaults_field_by_field():
    """Defaults are stated once (the dataclasses); what Hydra composes must be exactly them."""
    import dataclasses

    from sound_cluster.config import Params

    built, default = params_from_config(compose_cfg()), Params()

    def walk(a, b, key):
        if dataclasses.is_dataclass(a):
            assert type(a) is type(b), key
            for f in dataclasses.fields(a):
                walk(getattr(a, f.name), getattr(b, f.name), f"{key}.{f.name}" if key else f.name)
        else:
            assert a == b and type(a) is type(b), (key, a, b)

    walk(built, default, "")
    assert default.model.init == "pretrained" and len(default.model.blocks) == 4  # what the shipped encoder needs


def test_no_group_of_the_config_is_stated_in_yaml():
    from sound_cluster.cli import config_dir

    assert sorted(p.relative_to(config_dir()).as_posix() for p in config_dir().rglob("*.yaml")) == \
        ["config.yaml", "debug/tiny.yaml"]


def test_the_old_name_of_the_segment_group_still_works(tmp_path):
    """``rae`` was the ``segment`` group's name: old command lines, API calls and config dicts keep working."""
    from sound_cluster.cli import compose_checked

    cfg = compose_checked(["rae.pause_db=3", "++rae.min_node_s=0.05"])
    assert cfg["segment"]["pause_db"] == 3 and cfg["segment"]["min_node_s"] == 0.05 and "rae" not in cfg
    old = compose_cfg()
    old["rae"] = {**old.pop("segment"), "linkage": "plain"}  # a config of an earlier version
    assert params_from_config(old).segment.linkage == "plain"


def test_the_old_names_of_the_unit_settings_still_work(tmp_path):
    """The unit settings were ``model.unit``, ``model.max_segment_clusters``, ``model.unit_min_file_s`` and
    ``model.unit_sound_s``: old command lines, API calls, a run folder's recorded config and saved models keep
    working."""
    import dataclasses
    import json

    from sound_cluster.cli import compose_checked
    from sound_cluster.config import UnitParams, saved_model_params

    cfg = compose_checked(["model.unit=segment", "model.max_segment_clusters=12", "model.unit_min_file_s=3",
                           "model.unit_sound_s=0.25"])
    params = params_from_config(cfg)
    assert params.units == UnitParams(kind="segment", max_clusters=12, min_file_s=3.0, sound_s=0.25)
    assert not {"unit", "max_segment_clusters"} & set(cfg["model"])
    old = compose_cfg()  # a config of an earlier version: the unit settings under model, no units group
    units = old.pop("units")
    old["model"].update(unit="file", max_segment_clusters=9, unit_min_file_s=units["min_file_s"],
                        unit_sound_s=units["sound_s"])
    assert params_from_config(old).units == dataclasses.replace(UnitParams(), kind="file", max_clusters=9)
    with pytest.raises(ConfigError, match=r"units\.kind must be one of auto, file, segment, got 'sounds'"):
        params_from_config(compose_checked(["model.unit=sounds"]))
    # Models saved with the unit settings under model (sound-cluster 0.1 and later, until the units group).
    saved = json.loads((Path(__file__).parent / "data" / "models_0_1" / "params.json").read_text())
    assert "unit" in saved["model"] and "units" not in saved
    assert saved_model_params(saved, source="params.json")[1].max_clusters == saved["model"]["max_clusters"]
