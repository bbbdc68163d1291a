"""task=recluster: a finished run cut at another K without embedding again, equal to a fresh fit at that K."""

from __future__ import annotations

import html
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from sound_cluster.errors import ConfigError
from sound_cluster.run.pipeline import run
from tests.conftest import make_params
from tests.run.test_cli import EXE
from tests.segment.test_units import write_recordings

OUTPUTS = ("clusters.csv", "failures.csv", "summary.json", "trees", "posteriors", "models/embedding.keras",
           "models/merge_model.keras", "models/params.json", "models/clusters.json", "models/units.npz",
           "models/hierarchy.npz")


def _fit(tmp_path, name, *overrides):
    out = tmp_path / name
    run(make_params("debug=tiny", f"features.cache_dir={tmp_path / 'cache'}", *overrides), output_dir=out)
    return out


def _same_outputs(a: Path, b: Path) -> None:
    assert (a / "clusters.csv").read_text() == (b / "clusters.csv").read_text()
    trees_a = sorted(p.relative_to(a) for p in (a / "trees").rglob("*.json"))
    assert trees_a == sorted(p.relative_to(b) for p in (b / "trees").rglob("*.json")) and trees_a
    for rel in trees_a:
        assert (a / rel).read_text() == (b / rel).read_text(), rel


@pytest.mark.slow
def test_recluster_of_clips_equals_a_fresh_fit_at_that_k(tmp_path):
    """The demo's clips and recordings (file units): fit with K chosen, cut again at 3, against a fit at 3."""
    first = _fit(tmp_path, "auto", "output.report=false")
    again = tmp_path / "recut"
    run(make_params("debug=tiny", "task=recluster", f"run={first}", "model.n_clusters=3",
                    f"features.cache_dir={tmp_path / 'cache'}"), output_dir=again)
    fresh = _fit(tmp_path, "fresh", "output.report=false", "model.n_clusters=3")
    _same_outputs(again, fresh)
    for name in OUTPUTS:
        assert (again / name).exists(), name
    summary = json.loads((again / "summary.json").read_text())
    assert summary["task"] == "recluster" and summary["status"] == "complete"
    assert summary["clusters"]["n_clusters"] == 3 and summary["recluster"]["run"] == str(first)
    assert summary["recluster"]["merges_reused"] == summary["files_processed"]  # every fold read back, not redone
    assert "train" not in summary["stage_seconds"] and "embed" not in summary["stage_seconds"]  # nothing embedded
    # The report shows the hierarchy and, for each candidate K, a command that runs as written.
    page = (again / "report.html").read_text()
    assert 'id="hierarchy"' in page and (again / "report" / "hierarchy.png").is_file()
    commands = [html.unescape(c) for c in re.findall(r'<code class="recluster">([^<]+)</code>', page)]
    assert [c.rsplit("=", 1)[1] for c in commands] == ["3", "auto"]  # a given K: itself, and the rule
    assert all(c.startswith(f"sound-cluster task=recluster run={again}") for c in commands)
    args = shlex.split(commands[1])[1:] + [f"hydra.run.dir={tmp_path / 'from_report'}", "output.report=false",
                                           f"features.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run([EXE, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from_report = json.loads((tmp_path / "from_report" / "summary.json").read_text())
    assert from_report["task"] == "recluster" and from_report["clusters"]["requested"] == "auto"
    # task=apply on the new models gives the new clusters.
    applied = tmp_path / "applied"
    run(make_params("debug=tiny", "task=apply", f"models={again / 'models'}", "output.report=false",
                    f"features.cache_dir={tmp_path / 'cache'}"), output_dir=applied)
    assert (applied / "clusters.csv").read_text() == (again / "clusters.csv").read_text()


@pytest.mark.slow
def test_recluster_of_recordings_keeps_the_segments_of_a_fresh_fit(tmp_path):
    audio = tmp_path / "audio"
    write_recordings(audio, n_files=4, seed=1)
    first = _fit(tmp_path, "auto", f"data.path={audio}", "output.report=false", "units.kind=segment")
    again = tmp_path / "recut"
    run(make_params("debug=tiny", "task=recluster", f"run={first}", "model.n_clusters=2", "output.report=false",
                    f"features.cache_dir={tmp_path / 'cache'}"), output_dir=again)
    fresh = _fit(tmp_path, "fresh", f"data.path={audio}", "output.report=false", "units.kind=segment",
                 "model.n_clusters=2")
    _same_outputs(again, fresh)
    assert (again / "segments.csv").read_text() == (fresh / "segments.csv").read_text()
    assert json.loads((again / "models" / "clusters.json").read_text())["unit"] == "segment"
    summary = json.loads((again / "summary.json").read_text())
    assert summary["recluster"]["merges_reused"] == summary["files_processed"]
    assert summary["step_embeddings"]["files_in_memory"] == 4
    # Forbidden to hold step embeddings, it reads them from the step cache when needed: the same run.
    capped = tmp_path / "capped"
    run(make_params("debug=tiny", "task=recluster", f"run={first}", "model.n_clusters=2", "output.report=false",
                    f"features.cache_dir={tmp_path / 'cache'}", "executor.steps_in_memory_mb=0"), output_dir=capped)
    _same_outputs(capped, again)
    assert (capped / "segments.csv").read_text() == (again / "segments.csv").read_text()
    held = json.loads((capped / "summary.json").read_text())["step_embeddings"]
    assert held == {"files_in_memory": 0, "mb_in_memory": 0.0, "files_read_from_step_cache": 4}


def test_recluster_refuses_a_folder_that_is_not_a_finished_run(tmp_path):
    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(ConfigError, match=r"run must be a finished run's folder holding summary\.json"):
        make_params("task=recluster", f"run={tmp_path / 'not_a_run'}")
