"""The wheel carries the configs and the demo, and an installed copy finds them; saved models keep loading."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("wheel")  # its tests share one module-scoped fixture

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(proc.stdout + proc.stderr)
    (whl,) = out.glob("sound_cluster-*.whl")
    return whl


def test_wheel_contains_configs_and_demo(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for conf in sorted((ROOT / "conf").rglob("*.yaml")):
        assert f"sound_cluster/conf/{conf.relative_to(ROOT / 'conf').as_posix()}" in names
    assert "sound_cluster/demo/clips/sound_01.wav" in names and "sound_cluster/demo/recordings/recording_1.wav" in names
    assert {"sound_cluster/demo/README.md", "sound_cluster/demo/sources.csv"} <= names  # the demo's licences
    assert wheel.stat().st_size < 10 << 20  # small enough to install anywhere
    assert {"sound_cluster/embed/pretrained/encoder.keras", "sound_cluster/embed/pretrained/encoder.json",
            "sound_cluster/outputs/templates/report.html.j2"} <= names


def test_installed_wheel_composes_its_own_config(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    code = (
        "from hydra import compose, initialize_config_dir\n"
        "import sound_cluster.cli as c, sound_cluster.run.run_dir as p\n"
        "d = c.config_dir()\n"
        "assert str(d).startswith(%r), d\n"
        "with initialize_config_dir(version_base='1.3', config_dir=str(d)):\n"
        "    cfg = compose(config_name='config', overrides=['features.n_mels=40'])\n"
        "assert cfg.features.n_mels == 40\n"
        "assert (p.demo_path() / 'clips' / 'sound_01.wav').is_file()\n"
        "assert str(p.demo_path()).startswith(%r)\n"
        "import sound_cluster.embed.shipped as pt, sound_cluster.embed.encoder as e\n"
        "assert str(pt.SHIPPED).startswith(%r), pt.SHIPPED\n"
        "enc = e.load_encoder(str(pt.SHIPPED))\n"  # safe mode: only registered classes may load
        "assert enc.get_layer('logits') is not None\n"
    ) % (str(target), str(target), str(target))
    env = dict(os.environ, PYTHONPATH=str(target))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_importing_the_package_does_not_import_tensorflow():
    proc = subprocess.run([sys.executable, "-c", "import sound_cluster, sys; print('tensorflow' in sys.modules)"],
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


@pytest.mark.slow
def test_apply_reads_models_saved_by_sound_cluster_0_1(tmp_path):
    """``tests/data/models_0_1``: a tiny fit of the demo's joined digits (an earlier demo) saved before the package was laid out by stage
    (segment units, so the merge autoencoder and the unit record are read too). Keras finds the saved classes by
    their registered names wherever their modules now live."""
    from tests.run.test_cli import run_cli

    models = Path(__file__).parent / "data" / "models_0_1"
    run = tmp_path / "run"
    proc = run_cli("task=apply", f"models={models}", "data.path=sound_cluster/demo/recordings",
                   f"hydra.run.dir={run}", "output.report=false", cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["units"]["unit"] == "segment"
    rows = (run / "clusters.csv").read_text().splitlines()
    assert len(rows) == 1 + summary["files_processed"] and summary["files_failed"] == 0
    assert (run / "segments.csv").is_file() and len(list((run / "trees").rglob("*.json"))) == len(rows) - 1
