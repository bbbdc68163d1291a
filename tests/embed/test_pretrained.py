"""model.init (pretrained | scratch | a path), task=pretrain and the encoder card."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sound_cluster.config import AugmentParams
from sound_cluster.embed.crops import CropSampler
from sound_cluster.embed.shipped import SHIPPED, card_path, resolve_init
from sound_cluster.errors import ConfigError
from sound_cluster.run.pipeline import run
from tests.conftest import SR, make_params, tone
from tests.run.test_cli import run_cli


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
    from sound_cluster.embed import encoder as embedding

    params = make_params("debug=tiny", *[f"model.{k}={v}" for k, v in model_overrides.items()])
    encoder = embedding.build_encoder(params.model, n_mels=params.features.n_mels)
    path = folder / "enc.keras"
    embedding.save_encoder(encoder, path)
    card_path(path).write_text(json.dumps({"features": params.features.key_fields(), "model": params.model.to_dict()}))
    return path


def test_shipped_encoder_has_a_card_that_fits_the_default_settings():
    assert make_params().model.init == "pretrained"  # measured better on the benchmark sets (BENCHMARKS.md)
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
    from sound_cluster.embed import encoder as embedding
    from sound_cluster.embed.shipped import transfer_weights

    source = embedding.load_encoder(str(_tiny_encoder_with_card(tmp_path)))
    params = make_params("debug=tiny", "model.n_clusters=12")  # the head: 12 wide, the source's 8
    target = embedding.build_encoder(params.model, n_mels=params.features.n_mels)
    copied = transfer_weights(source, target)
    assert "conv0" in copied and "embedding" in copied and "logits" not in copied
    for name in ("conv0", "context", "embedding"):
        for a, b in zip(source.get_layer(name).get_weights(), target.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert target.get_layer("logits").get_weights()[0].shape[-1] == 12


@pytest.mark.slow
def test_pretrain_writes_an_encoder_and_card_that_a_fit_starts_from(tmp_path, caplog):
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

    # The fit and the second pre-training run in this process (the command line is the first run's subject).
    fit = tmp_path / "fit"
    run(make_params("debug=tiny", f"data.path={audio}", f"model.init={enc}", f"features.cache_dir={cache}"),
        output_dir=fit)
    summary = json.loads((fit / "summary.json").read_text())
    assert summary["training"]["init"] == str(enc)
    assert (fit / "clusters.csv").read_text().count("\n") == 7
    # train.backbone=frozen (the default): every pretrained layer is kept; the head is new, one output per cluster.
    from sound_cluster.embed import encoder as embedding

    pre_enc, fit_enc = embedding.load_encoder(str(enc)), embedding.load_encoder(str(fit / "models" / "embedding.keras"))
    for layer in pre_enc.layers:
        if layer.weights and layer.name != "logits":
            for a, b in zip(layer.get_weights(), fit_enc.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)
    assert fit_enc.get_layer("logits").units == summary["clusters"]["n_clusters"] == 4

    # Pre-training on from that encoder: the new card keeps the first run, so it tells the whole training.
    # With beds under every view: a background recording of its own folder.
    beds = tmp_path / "beds"
    beds.mkdir()
    rng = np.random.default_rng(3)
    sf.write(beds / "wind.wav", (0.05 * rng.standard_normal(SR * 3)).astype(np.float32), SR)
    (beds / "gone.wav").symlink_to(tmp_path / "nowhere.wav")  # skipped, and said so
    more = tmp_path / "more"
    with caplog.at_level(logging.WARNING, logger="sound_cluster"):
        run(make_params("debug=tiny", f"data.path={audio}", "task=pretrain", f"model.init={enc}",
                        f"features.cache_dir={cache}", f"pretrain.beds={beds}", "pretrain.train.augment.bed_prob=1.0"),
            output_dir=more)
    assert "pretrain.beds: skipped" in caplog.text and "gone.wav" in caplog.text
    card2 = json.loads((more / "models" / "encoder.json").read_text())
    assert card2["training"]["beds"] == {"files": 1, "minutes": 0.1, "folder": "beds"}
    assert card2["init"] == enc.name and card2["started_from"]["init"] == "scratch"  # a file name, never a path
    assert card2["started_from"]["steps"] == 6 and card2["started_from"]["wall_seconds"] == card["training"]["wall_seconds"]


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


def test_beds_lie_under_the_whole_crop_at_a_level_below_its_sound(tmp_path):
    sound = np.full((20, 8), -30.0, dtype=np.float32)
    sound[5:10] = 0.0  # a short sound in a quiet crop: the bed's level follows the sound, not the crop
    bed = np.full((200, 8), -5.0, dtype=np.float32)
    aug = AugmentParams(view_max_shift_frames=0, mel_shift_bins=0, time_mask_frames=0, freq_mask_bins=0, eq_nats=0,
                        bed_prob=1.0, bed_below_db=10.0)
    s = CropSampler([sound], crop_frames=20, batch_size=4, augment=aug, seed=0, beds=[bed])
    for _ in range(20):  # half of them a crop of the recording, half synthesized
        x = s._under_bed(sound, 5, 10)
        assert np.all(x >= sound)
        # Under the sound: 10 to 24 dB below it. Between sounds the bed is what is heard (far above -30).
        below_db = 10 * np.log10(np.exp(0.0) / np.mean(np.exp(x[:5])))
        assert 10 - 1.5 <= below_db <= 24 + 1.5
        assert np.all(x[5:10] <= np.log1p(10 ** -1.0) + 1.5)
    # Off by default: the views, and the draws after them, are the same as without the setting.
    plain = AugmentParams(view_max_shift_frames=0)
    a = CropSampler([sound, bed], crop_frames=20, batch_size=4, augment=plain, seed=1)
    b = CropSampler([sound, bed], crop_frames=20, batch_size=4, augment=plain, seed=1, beds=[bed])
    np.testing.assert_array_equal(a.batch(), b.batch())


def test_synthetic_beds_are_continuous_and_vary():
    from sound_cluster.embed.crops import synthetic_bed

    rng = np.random.default_rng(0)
    beds = [synthetic_bed(100, 64, rng) for _ in range(8)]
    for bed in beds:
        assert bed.shape == (100, 64) and bed.dtype == np.float32 and np.all(np.isfinite(bed))
        # No pause: every frame within a few nats of the bed's median level.
        frame_level = np.log(np.mean(np.exp(bed), axis=1))
        assert np.ptp(frame_level) < 5.0
    slopes = [np.polyfit(np.arange(64), b.mean(axis=0), 1)[0] for b in beds]
    assert np.ptp(slopes) > 0.02  # colours differ from bed to bed


def test_pretrain_beds_must_be_a_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"pretrain.beds"):
        make_params("task=pretrain", f"pretrain.beds={tmp_path / 'nowhere'}")


def test_corpus_manifest_gives_groups_and_balances_sources(tmp_path):
    from sound_cluster.embed.pretraining import corpus_sampling

    rows = [("audio/tts-en/flite-slt/00001.wav", "say:en:one"), ("audio/tts-en/espeak-ng-m3/00001.wav", "say:en:one"),
            ("audio/tts-en/espeak-ng-m3/00002.wav", "say:en:two"),  # a group of one is no group
            ("audio/font/prog000/prog000_note060_v070.wav", "font:prog000"),
            ("audio/font/prog000/prog000_note067_v070.wav", "font:prog000"),
            ("audio/font/kit000/kit000_note038_v070.wav", "drum:snare"),
            ("audio/lmms/drums/snare01.ogg", "drum:snare"), ("audio/lmms/drums/zap.ogg", "")]
    lines = ["package,version,licence,kind,file,duration_s,group"]
    lines += [f"{f.split('/')[1]},1,MIT,k,{f},1.0,{g}" for f, g in rows]
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    audio = [tmp_path / f for f, _ in rows] + [tmp_path / "audio" / "elsewhere.wav"]  # one file the manifest lacks
    groups, weights, summary = corpus_sampling(audio, root=tmp_path / "audio", source_power=0.0)
    assert groups[0] == groups[1] >= 0 and groups[2] == -1 and groups[7] == groups[8] == -1
    assert groups[3] == groups[4] >= 0 and groups[5] == groups[6] >= 0 and len(set(groups[:7]) - {-1}) == 3
    # A soundfont's instruments and its kits are two sources; source_power=0 draws every source equally often.
    assert summary["sources"] == {"tts-en": 3, "font/prog": 2, "font/kit": 1, "lmms": 2, "(not in the manifest)": 1}
    share = {}
    for (f, _), w in zip(rows, weights):
        share[f.split("/")[1]] = share.get(f.split("/")[1], 0) + w
    assert share["tts-en"] == pytest.approx(1.0) and share["lmms"] == pytest.approx(1.0)
    assert weights[3] == pytest.approx(0.5) and weights[5] == pytest.approx(1.0)
    assert corpus_sampling(audio, root=tmp_path / "nowhere" / "x", source_power=0.5) == (None, None, {})
