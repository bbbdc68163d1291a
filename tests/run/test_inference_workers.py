"""executor.inference=workers: the encoder runs on the executor's workers, and a run writes what it writes when the
encoder runs in the main process (fit, apply, recluster), with the main process never running it over a file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sound_cluster.embed.inference import Posteriors
from sound_cluster.run.pipeline import run
from sound_cluster.run.run_dir import demo_path
from sound_cluster.run_folder import RunFolder
from tests.conftest import make_params


def _run(tmp_path: Path, name: str, *overrides: str) -> Path:
    out = tmp_path / name
    run(make_params("debug=tiny", f"data.path={demo_path()}", f"features.cache_dir={tmp_path / 'cache'}",
                    "output.report=false", "output.max_plots=0", "executor.n_workers=2", *overrides), output_dir=out)
    return out


def _same_outputs(a: Path, b: Path) -> None:
    assert (a / "clusters.csv").read_text() == (b / "clusters.csv").read_text()
    assert (a / "segments.csv").read_text() == (b / "segments.csv").read_text()
    trees = sorted(p.relative_to(a) for p in (a / "trees").rglob("*.json"))
    assert trees and trees == sorted(p.relative_to(b) for p in (b / "trees").rglob("*.json"))
    assert all((a / t).read_text() == (b / t).read_text() for t in trees)
    posteriors = sorted(p.relative_to(a) for p in (a / "posteriors").rglob("*.npz"))
    assert posteriors and posteriors == sorted(p.relative_to(b) for p in (b / "posteriors").rglob("*.npz"))
    for rel in posteriors:
        with np.load(a / rel) as x, np.load(b / rel) as y:
            for key in ("embedding", "posteriors"):  # one TensorFlow thread against several: float tolerance
                np.testing.assert_allclose(x[key], y[key], rtol=1e-5, atol=1e-6, err_msg=f"{rel} {key}")


def _forbid_inference_here(monkeypatch) -> None:
    """The main process may not run the encoder over a file; a pool's workers start from a clean fork server, so
    they are not patched."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("the main process ran the encoder over a file")

    monkeypatch.setattr(Posteriors, "__call__", refuse)
    monkeypatch.setattr(Posteriors, "from_embeddings", refuse)


@pytest.mark.slow
def test_fit_apply_and_recluster_on_the_workers_write_what_the_main_process_writes(tmp_path, monkeypatch):
    """The demo (clips and recordings, segment units) on a process pool of 2: the main process holds no step
    embeddings (a budget of 0) and never runs the encoder over a file, as the workers do it all."""
    here = _run(tmp_path, "main", "executor.kind=serial", "executor.inference=main")
    on_workers = ("executor.kind=process", "executor.inference=workers")
    _forbid_inference_here(monkeypatch)
    fit = _run(tmp_path, "workers", *on_workers, "executor.steps_in_memory_mb=0")
    apply = _run(tmp_path, "apply-workers", *on_workers, "task=apply", f"models={here / 'models'}")
    recut = _run(tmp_path, "recluster-workers", *on_workers, "task=recluster", f"run={here}", "model.n_clusters=3")
    monkeypatch.undo()
    _same_outputs(here, fit)
    summary = json.loads((fit / "summary.json").read_text())
    assert summary["executor"] == {"kind": "process", "n_workers": 2, "inference": "workers"}
    assert summary["step_embeddings"]["files_in_memory"] == 0
    assert not RunFolder(fit).scratch.exists()  # the encoder the workers loaded went with the run
    main = ("executor.kind=serial", "executor.inference=main")
    _same_outputs(_run(tmp_path, "apply-main", *main, "task=apply", f"models={here / 'models'}"), apply)
    _same_outputs(_run(tmp_path, "recluster-main", *main, "task=recluster", f"run={here}", "model.n_clusters=3"),
                  recut)


def test_inference_is_checked_and_auto_means_the_workers_under_dask_only():
    from sound_cluster.errors import ConfigError

    with pytest.raises(ConfigError, match="executor.inference"):
        make_params("executor.inference=gpu")
    assert make_params("executor.kind=dask").executor.on_workers
    assert not make_params("executor.kind=process").executor.on_workers
    assert make_params("executor.kind=serial", "executor.inference=workers").executor.on_workers


def test_an_embed_job_writes_the_step_cache_once_and_a_broken_file_is_that_file_s_failure(tmp_path):
    from sound_cluster.config import ExecutorParams
    from sound_cluster.embed.encoder import build_encoder, save_encoder
    from sound_cluster.embed.step_cache import StepCache
    from sound_cluster.ingest.failures import Failure
    from sound_cluster.run.executor import map_files
    from sound_cluster.run.inference_jobs import Embedded, EmbedJob, embed_fn

    params = make_params("debug=tiny")
    encoder = build_encoder(params.model, n_mels=params.features.n_mels)
    save_encoder(encoder, tmp_path / "encoder.keras")
    frames = np.random.default_rng(0).standard_normal((300, params.features.n_mels)).astype(np.float32)
    np.save(tmp_path / "good.npy", frames)
    (tmp_path / "broken.npy").write_bytes(b"not an array")
    cache = StepCache(tmp_path, encoder=encoder)
    cache.prepare()
    jobs = [EmbedJob(tmp_path / "good.wav", tmp_path / "good.npy"), EmbedJob(tmp_path / "broken.wav",
                                                                             tmp_path / "broken.npy")]
    fn = embed_fn(encoder_path=tmp_path / "encoder.keras", cache=cache)
    first, broken = map_files(fn, jobs, params=ExecutorParams(kind="serial"), stage="embed")
    assert isinstance(first, Embedded) and not first.cached
    assert isinstance(broken, Failure) and broken.path == tmp_path / "broken.wav" and broken.stage == "embed"
    steps = Posteriors(encoder)(frames)[0]
    np.testing.assert_allclose(cache.get(tmp_path / "good.npy"), steps, rtol=1e-5, atol=1e-6)
    assert first.n_steps == len(steps)
    np.testing.assert_allclose(first.clip, steps.mean(axis=0), rtol=1e-5, atol=1e-6)
    again = map_files(fn, jobs[:1], params=ExecutorParams(kind="serial"), stage="embed")[0]
    assert again.cached and again.n_steps == first.n_steps
