"""model.init (pretrained | scratch | a path), task=pretrain and the encoder card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sound_cluster.config import AugmentParams
from sound_cluster.crops import CropSampler
from sound_cluster.errors import ConfigError
from sound_cluster.pretrained import SHIPPED, card_path, resolve_init

from .conftest import SR, make_params, tone
from .test_cli import run_cli


def _folder(root: Path, n: int = 6) -> Path:
    """Tones and noise bursts, two kinds, ``n`` files."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        y = tone(300 + 100 * i, 0.8, seed=i) if i % 2 else (0.3 * rng.standard_normal(int(0.8 * SR))).astype("float32")
        sf.write(root / f"f{i}.wav", y, SR)
    return root


def _tiny_encoder_with_card(folder: Path, **model_overrides) -> Path:
    """A tiny untrained encoder saved with a card that records the tiny settings."""
    from sound_cluster import embedding

    params = make_params("debug=tiny", *[f"model.{k}={v}" for k, v in model_overrides.items()])
    encoder = embedding.build_encoder(params.model, n_mels=params.features.n_mels)
    path = folder / "enc.keras"
    embedding.save_encoder(encoder, path)
    card_path(path).write_text(json.dumps({"features": params.features.key_fields(), "model": params.model.to_dict()}))
    return path


def test_shipped_encoder_has_a_card_that_fits_the_default_settings():
    assert make_params().model.init == "scratch"  # measured better on the benchmark sets (BENCHMARKS.md)
    assert SHIPPED.is_file() and card_path(SHIPPED).name == "encoder.json"
    card = json.loads(card_path(SHIPPED).read_text())
    assert card["corpus"]["hours"] >= 10, card["corpus"]
    assert not any(p["package"].startswith(("0ad", "hydrogen", "timgm6mb")) for p in card["corpus"]["packages"])
    assert SHIPPED.stat().st_size <= 10 * 2**20
    params = make_params("model.init=pretrained")
    src = resolve_init(params.model, params.features)
    assert src is not None and src.path == SHIPPED


def test_feature_or_architecture_mismatch_is_refused_before_work(tmp_path):
    path = _tiny_encoder_with_card(tmp_path)
    make_params("debug=tiny", f"model.init={path}")  # matching settings are accepted
    with pytest.raises(ConfigError, match=r"features\.n_mels=64.*features\.n_mels=40"):
        make_params("debug=tiny", f"model.init={path}", "features.n_mels=40")
    with pytest.raises(ConfigError, match=r"model\.embedding_dim=16.*model\.embedding_dim=32"):
        make_params("debug=tiny", f"model.init={path}", "model.embedding_dim=32")
    with pytest.raises(ConfigError, match="model.init"):
        make_params("debug=tiny", f"model.init={tmp_path / 'missing.keras'}")
    with pytest.raises(ConfigError, match="features.sample_rate"):  # the shipped encoder, 8 kHz run
        make_params("model.init=pretrained", "features.sample_rate=8000")


def test_weights_transfer_by_layer_name_and_the_head_is_new_when_k_differs(tmp_path):
    from sound_cluster import embedding
    from sound_cluster.pretrained import transfer_weights

    source = embedding.load_encoder(str(_tiny_encoder_with_card(tmp_path)))
    params = make_params("debug=tiny", "model.n_clusters=12")  # the head: 12 wide, the source's 8
    target = embedding.build_encoder(params.model, n_mels=params.features.n_mels)
    copied = transfer_weights(source, target)
    assert "conv0" in copied and "embedding" in copied and "logits" not in copied
    for name in ("conv0", "context", "embedding"):
        for a, b in zip(source.get_layer(name).get_weights(), target.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert target.get_layer("logits").get_weights()[0].shape[-1] == 12


def test_pretrain_writes_an_encoder_and_card_that_a_fit_starts_from(tmp_path):
    audio = _folder(tmp_path / "audio")
    cache = tmp_path / "cache"
    pre = tmp_path / "pre"
    run_cli(f"data.path={audio}", "task=pretrain", f"features.cache_dir={cache}", f"hydra.run.dir={pre}",
            cwd=tmp_path)
    enc, card_file = pre / "models" / "encoder.keras", pre / "models" / "encoder.json"
    card = json.loads(card_file.read_text())
    assert card["model"]["n_clusters"] == 8 and card["features"]["n_mels"] == 64
    assert card["training"]["steps"] == 2 * 3 and card["corpus"]["files"] == 6
    assert card["corpus"]["seconds"] == pytest.approx(6 * 0.8, abs=0.1)
    assert not (pre / "clusters.csv").exists()  # pre-training assigns nothing
    summary = json.loads((pre / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["task"] == "pretrain"

    fit = tmp_path / "fit"
    run_cli(f"data.path={audio}", f"model.init={enc}", f"features.cache_dir={cache}", f"hydra.run.dir={fit}",
            cwd=tmp_path)
    summary = json.loads((fit / "summary.json").read_text())
    assert summary["training"]["init"] == str(enc)
    assert (fit / "clusters.csv").read_text().count("\n") == 7


def test_mixing_puts_another_recording_underneath_at_a_lower_level(tmp_path):
    quiet = np.full((100, 8), -10.0, dtype=np.float32)
    loud = np.full((100, 8), 0.0, dtype=np.float32)
    np.save(tmp_path / "a.npy", quiet)
    np.save(tmp_path / "b.npy", loud)
    aug = AugmentParams(view_max_shift_frames=0, mel_shift_bins=0, time_mask_frames=0, freq_mask_bins=0, eq_nats=0,
                        mix_prob=1.0, mix_below_db=10.0)
    s = CropSampler([tmp_path / "a.npy", tmp_path / "b.npy"], crop_frames=20, batch_size=16, augment=aug, seed=0)
    x = s._mix(quiet[:20])
    # The mix only adds power; the added crop lies 10 to 20 dB (2.3 to 4.6 nats) below the view.
    assert np.all(x >= quiet[:20]) and np.all(x > -10.0)
    assert np.all(x <= -10.0 + np.log1p(10 ** -1.0) + 1e-5)
