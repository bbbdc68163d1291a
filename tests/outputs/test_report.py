"""report.html in a real headless browser, evaluation of an existing run, and exports."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from sound_cluster.run.pipeline import run
from sound_cluster.run.run_dir import demo_path
from tests.conftest import compose_cfg, make_params

pytestmark = pytest.mark.xdist_group("report_demo_run")  # its tests share one module-scoped fixture

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    overrides = ["debug=tiny", f"features.cache_dir={tmp / 'cache'}", "output.export_segments=true",
                 "output.export_jams=true", "output.export_k=3", "output.max_plots=40"]
    params = make_params(*overrides)
    result = run(params, output_dir=tmp / "run", config=compose_cfg(*overrides))
    return tmp / "run", result


def test_report_links_and_players_exist(demo_run):
    run_dir, result = demo_run
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    srcs = re.findall(r'<audio[^>]* src="([^"]+)"', page)
    assert len(srcs) >= 4
    for ref in srcs + re.findall(r'<img[^>]* src="([^"]+)"', page) + re.findall(r'<a href="([^"]+)"', page):
        assert (run_dir / unquote(ref.split("#")[0])).is_file(), ref
    # Segment players play their segment of the excerpt through a media fragment.
    assert any("#t=" in s for s in srcs)
    assert "recordings/recording_1.wav" in page and "NMI" in page and "L-measure" in page
    # Every member of every cluster is listed (played on demand from its source file), with a legend.
    members = re.findall(r'<li data-path="([^"]+)"><button class="play" type="button" data-src="([^"]+)"', page)
    assert sorted(p for p, _ in members) == sorted(r.path for r in result_rows(run_dir))
    assert all(src.startswith("file://") for _, src in members)
    assert page.count('class="legend-item"') == json.loads((run_dir / "summary.json").read_text())["clusters"]["used"]
    assert "labels (files)" in page  # the demo's labels, per cluster
    # Files come most segmented first: the recordings lead.
    first = re.search(r'<details class="file" id="file-1" data-path="([^"]+)"', page).group(1)
    assert first.startswith("recordings/"), first


def result_rows(run_dir):
    from sound_cluster.embed.clusters import read_clusters

    return read_clusters(run_dir / "clusters.csv")


def test_report_escapes_names(tmp_path):
    import numpy as np
    import soundfile as sf

    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    for name in ("<em>bold<em>.wav", "a&b #1.wav", "plain.wav"):
        sf.write(audio / name, (0.1 * rng.standard_normal(8000)).astype("float32"), 16000)
    params = make_params("debug=tiny", f"data.path={audio}", f"features.cache_dir={tmp_path / 'c'}")
    run(params, output_dir=tmp_path / "run")
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "<em>bold" not in page and "&lt;em&gt;bold&lt;em&gt;.wav" in page
    assert "a&amp;b #1.wav" in page and 'src="report/audio/a%26b%20%231.wav.wav"' in page
    assert (tmp_path / "run" / "report" / "audio" / "a&b #1.wav.wav").is_file()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian package 'chromium'; .ci/run installs it)")
def test_report_in_headless_chromium(demo_run, tmp_path):
    run_dir, _ = demo_run
    url = (run_dir / "report.html").as_uri()
    proc = subprocess.run([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
                           "--v=0", "--virtual-time-budget=10000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body[^>]*>", proc.stdout).group(0)
    players = int(re.search(r'data-players="(\d+)"', body).group(1))
    assert players >= 4
    assert 'data-audio-checked="yes"' in body, "not every player loaded its source's metadata"
    assert "data-audio-failed" not in body, body
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    # The filter box: the page opened with ?filter= shows only the matching file sections.
    proc = subprocess.run([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile3'}",
                           "--virtual-time-budget=5000", "--dump-dom", url + "?filter=recording_1"],
                          capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", proc.stdout).group(0)
    assert 'data-files-shown="1"' in body, body
    assert proc.stdout.count('<details class="file"') == 34 and proc.stdout.count("hidden=") == 33
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--hide-scrollbars",
                    "--window-size=1280,1500", f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SOUND_CLUSTER_UPDATE_SCREENSHOT"):  # refresh the README's picture
        shutil.copyfile(shot, ROOT / "docs" / "report.png")


def test_eval_command_reproduces_summary_metrics(demo_run):
    run_dir, result = demo_run
    summary = json.loads((run_dir / "summary.json").read_text())
    proc = subprocess.run([sys.executable, "-m", "sound_cluster.outputs.evaluate", str(run_dir), "--labels",
                           str(demo_path() / "labels.csv"), "--segments", str(demo_path() / "segments.csv")],
                          capture_output=True, text=True, check=True)
    again = json.loads(proc.stdout)
    assert again["metrics"] == summary["metrics"]
    assert again["segment_metrics"] == summary["segment_metrics"]
    assert summary["segment_metrics"]["n"] == 4
    per = summary["segment_metrics"]["per_file"]["recordings/recording_1.wav"]
    # 8 sounds, the lead-in, 7 gaps and the tail:
    assert per["n_segments"] == 17 and 0 <= per["f_0.1"] <= per["f_0.5"] <= 1 and 0 <= per["l_measure"] <= 1


def test_exports_segments_csv_and_jams(demo_run):
    import jams
    import mir_eval

    run_dir, result = demo_run
    with open(run_dir / "segments.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    per_file = {}
    for r in rows:
        per_file.setdefault(r["path"], []).append(r)
    assert len(per_file) == 34
    segs = per_file["recordings/recording_1.wav"]
    assert len(segs) == 3 and float(segs[0]["start_s"]) == 0.0
    assert all(a["end_s"] == b["start_s"] for a, b in zip(segs, segs[1:]))
    jam = jams.load(str(run_dir / "jams" / "recordings" / "recording_1.wav.jams"))
    (ann,) = jam.search(namespace="multi_segment")
    intervals, labels = jams.eval.hierarchy_flatten(ann)
    assert len(intervals) >= 2 and len(intervals[0]) == 2 and len(intervals[1]) == 4
    import numpy as np

    mir_eval.hierarchy.validate_hier_intervals([np.asarray(i) for i in intervals])


def test_long_plots_are_drawn_from_a_decimated_view():
    import numpy as np

    from sound_cluster.outputs.report import _decimate

    x = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    view, factor = _decimate(x, max_columns=4)
    assert factor == 3 and view.shape == (4, 3)
    np.testing.assert_allclose(view[0], x[:3].mean(axis=0))
    np.testing.assert_allclose(view[-1], x[9])  # the last, partial group
    same, one = _decimate(x, max_columns=10)
    assert one == 1 and same is x
