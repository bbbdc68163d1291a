"""Untrusted folders, tables and run folders: nothing hangs, nothing eats the machine, nothing escapes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sound_cluster.errors import AudioError, ConfigError
from tests.conftest import SR, make_params, tone

ROOT = Path(__file__).resolve().parents[2]


def test_reads_are_of_regular_files_only_never_blocking_and_capped(tmp_path):
    """A FIFO put where a file was listed would block an ordinary open until a writer came: refused at once."""
    from sound_cluster.ingest.audio import read_bytes
    from sound_cluster.io_utils import NotRegularFile, open_regular

    os.mkfifo(tmp_path / "pipe.wav")
    with pytest.raises(NotRegularFile):
        open_regular(tmp_path / "pipe.wav")
    with pytest.raises(AudioError, match="not a regular file"):
        read_bytes(tmp_path / "pipe.wav")
    with pytest.raises(AudioError, match="not a regular file"):
        read_bytes(Path("/dev/zero"))
    (tmp_path / "big.bin").write_bytes(bytes(1000))
    with pytest.raises(OSError, match="larger than 100 bytes"):
        open_regular(tmp_path / "big.bin", max_bytes=100)


def test_decoded_length_is_bounded_by_data_max_file_s(tmp_path):
    """A FLAC whose header promises 2^36 frames, and an honest file over the cap: refused before decoding."""
    from sound_cluster.ingest.audio import decode
    from sound_cluster.ingest.extract import extract_features
    from sound_cluster.ingest.features import FeatureCache

    sf.write(tmp_path / "forged.flac", tone(seconds=0.5), SR, format="FLAC", subtype="PCM_16")
    b = bytearray((tmp_path / "forged.flac").read_bytes())
    b[8 + 13] |= 0x0F  # STREAMINFO's 36-bit total samples, all ones
    b[8 + 14:8 + 18] = b"\xff\xff\xff\xff"
    (tmp_path / "forged.flac").write_bytes(bytes(b))
    with pytest.raises(AudioError, match="longer than data.max_file_s=14400"):
        decode(bytes(b), sample_rate=SR, max_seconds=14400)
    sf.write(tmp_path / "three.wav", tone(seconds=3.0), SR)
    params = make_params(f"features.cache_dir={tmp_path / 'cache'}")
    cache = FeatureCache(tmp_path / "cache", params=params.features)
    with pytest.raises(AudioError, match="3 s of audio in the header: longer than data.max_file_s=2"):
        extract_features(tmp_path / "three.wav", cache=cache, max_seconds=2.0)
    assert extract_features(tmp_path / "three.wav", cache=cache, max_seconds=4.0).duration_s == pytest.approx(3.0)
    with pytest.raises(AudioError, match="longer than data.max_file_s=2"):  # a cache hit is held to the cap too
        extract_features(tmp_path / "three.wav", cache=cache, max_seconds=2.0)


def test_sample_rates_and_caps_out_of_range_fail_before_work(tmp_path):
    """features.sample_rate=1.6 MHz (from the command or a models folder's params.json) is refused, naming the key."""
    from sound_cluster.config import saved_model_params

    with pytest.raises(ConfigError, match="features.sample_rate must be between 4000 and 192000"):
        make_params("features.sample_rate=1600000")
    with pytest.raises(ConfigError, match="data.max_file_s must be a positive number"):
        make_params("data.max_file_s=0")
    saved = json.loads((ROOT / "tests/data/models_0_1/params.json").read_text())
    saved["features"]["sample_rate"] = 1_600_000
    with pytest.raises(ConfigError, match="sample_rate"):
        saved_model_params(saved, source="params.json")


def test_reference_tables_never_hang_and_are_bounded(tmp_path, caplog):
    """A FIFO and a link to /dev/zero among Raven/Audacity tables are skipped; too many events are refused."""
    from sound_cluster.outputs import references
    from sound_cluster.outputs.references import read_labels, read_segments

    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "a.txt").write_text("0.1\t0.4\tx\n")
    os.mkfifo(folder / "b.txt")
    os.symlink("/dev/zero", folder / "c.txt")
    with caplog.at_level(logging.WARNING):
        assert read_segments(folder) == {"a": [(0.1, 0.4, "x")]}
    assert sum("not a regular file" in r.message for r in caplog.records) == 2
    os.mkfifo(tmp_path / "labels.csv")
    with pytest.raises(ConfigError, match="data.labels"):
        read_labels(tmp_path / "labels.csv")
    (tmp_path / "huge_field.csv").write_text("path,label\na.wav," + "x" * 200_000 + "\n")
    with pytest.raises(ConfigError, match="data.labels .*huge_field.csv: cannot read it as a table"):
        read_labels(tmp_path / "huge_field.csv")
    n = references.MAX_EVENTS_PER_FILE + 1
    (tmp_path / "many.csv").write_text("path,start_s,end_s,label\n" + "".join(
        f"a.wav,{i * 1e-4:.4f},{(i + 1) * 1e-4:.4f},e\n" for i in range(n)))
    with pytest.raises(ConfigError, match=f"{n} events for one audio file"):
        read_segments(tmp_path / "many.csv")


def test_events_past_a_files_end_are_left_out_with_a_warning(caplog):
    """Times written in milliseconds put every event past a 1 s file's end: scored without them, and said."""
    from sound_cluster.outputs.evaluate import score_trees
    from sound_cluster.segment.tree import SegmentTree

    tree = SegmentTree(np.array([0, 2, 4]), np.array([1, 3, 5]), np.array([0.1, 0.2, 0.3]), 4.0, 1.0)
    doc = tree.to_json(source="a.wav")
    refs = {"a.wav": [(100.0, 350.0, "x"), (700.0, 1050.0, "y"), (0.2, 0.5, "z")]}
    with caplog.at_level(logging.WARNING):
        scores = score_trees({"a.wav": doc}, refs)
    assert scores["per_file"]["a.wav"]["n_segments"] == 3  # gap, z, gap
    assert any("2 of its 3 reference events start at or after its end" in r.message for r in caplog.records)


def test_a_run_folders_names_and_arrays_are_checked(tmp_path):
    """clusters.csv names that lead outside, npz files of random bytes or pickles, bad linkages, indices out of range."""
    from sound_cluster.embed.clusters import Hierarchy, read_clusters, ward_hierarchy
    from sound_cluster.run.recluster import _check_units
    from sound_cluster.run_folder import RunFolder

    folder = RunFolder(tmp_path)
    for name in ("../../outside/evil", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(ValueError, match="not an output name"):
            folder.posteriors(name)
    assert folder.tree("sub/caf\\xe9.wav").name == "caf\\xe9.wav.json"  # escaped names stay valid
    (tmp_path / "posteriors").mkdir()
    os.mkfifo(tmp_path / "posteriors" / "x.wav.npz")
    with pytest.raises(OSError, match="not a regular file"):
        folder.read_step_embeddings("x.wav")
    h = ward_hierarchy(np.random.default_rng(0).standard_normal((6, 4)))
    h.save(tmp_path / "h.npz")
    assert len(Hierarchy.load(tmp_path / "h.npz").x) == 6
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(ValueError):
        Hierarchy.load(tmp_path / "random.npz")
    with open(tmp_path / "pickle.npz", "wb") as fh:
        np.savez(fh, x=np.array([{"a": 1}], dtype=object), tree=np.zeros((0, 4)), item=np.zeros(1, np.int64))
    with pytest.raises(ValueError):
        Hierarchy.load(tmp_path / "pickle.npz")
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as zf:  # a header promising 4 GB in a file of a few bytes
        with zf.open("embedding.npy", "w") as m:
            np.lib.format.write_array_header_1_0(m, {"descr": "<f4", "fortran_order": False, "shape": (1 << 24, 64)})
            m.write(bytes(1024))
        with zf.open("posteriors.npy", "w") as m:
            np.lib.format.write_array(m, np.zeros((4, 2), np.float32))
    shutil.copyfile(tmp_path / "bomb.npz", tmp_path / "posteriors" / "bomb.wav.npz")
    with pytest.raises(ValueError, match="would take 42949673.. bytes from a .*-byte file"):
        folder.read_posteriors("bomb.wav")
    with open(tmp_path / "linkage.npz", "wb") as fh:
        np.savez(fh, x=h.x, tree=np.full_like(h.tree, -5.0), item=h.item)
    with pytest.raises(ValueError, match="not a valid linkage"):
        Hierarchy.load(tmp_path / "linkage.npz")
    units = {"vectors": np.ones((2, 4), np.float32), "unit_file": np.array([0, 1]), "start": np.array([0, 0]),
             "end": np.array([3, 2]), "files": np.array(["a.wav", "b.wav"])}
    _check_units(units, n_units=2)
    for key, bad in (("unit_file", np.array([0, -1])), ("unit_file", np.array([0, 2])), ("end", np.array([0, 2])),
                     ("start", np.array([-1, 0]))):
        with pytest.raises(ValueError, match="out of range"):
            _check_units({**units, key: bad}, n_units=2)
    with pytest.raises(ValueError, match="as many as hierarchy.npz"):
        _check_units(units, n_units=3)
    (tmp_path / "clusters.csv").write_bytes(b"path,cluster,confidence,duration_s,name\ncaf\xe9.wav,0,1,1,x\n")
    with pytest.raises(ValueError):
        read_clusters(tmp_path / "clusters.csv")
    (tmp_path / "clusters.csv").write_text("path,cluster,confidence,duration_s,name\na.wav,0\n")
    with pytest.raises(ValueError, match="2 cells where the header has 5"):
        read_clusters(tmp_path / "clusters.csv")


def test_recluster_takes_no_paths_but_the_audio_from_a_run_folder(tmp_path, monkeypatch):
    """A summary naming /etc/passwd as labels and a cache elsewhere: neither is used; the audio path is absolute."""
    from sound_cluster.run.recluster import recluster_params
    from sound_cluster.run_folder import RunFolder

    run = RunFolder(tmp_path / "theirs")
    shutil.copytree(ROOT / "tests/data/models_0_1", run.models.dir)
    audio = tmp_path / "audio"
    audio.mkdir()
    config = {"data": {"path": "relative/audio", "labels": "/etc/passwd", "segments": "/etc",
                       "extensions": ["wav"]},
              "features": {"cache_dir": str(tmp_path / "evil_cache")}, "seed": 3}
    run.write_summary({"status": "complete", "task": "fit", "data_path": str(audio), "config": config})
    for name in run.missing_for_recluster():  # what preflight looks for; recluster_params reads only the two above
        (run.dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run.dir / name).mkdir() if name == "posteriors" else (run.dir / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)  # a folder where the run's relative path means nothing
    params = recluster_params(make_params("task=recluster", f"run={run.dir}", "model.n_clusters=3"))
    assert params.data.labels is None and params.data.segments is None
    assert params.features.cache_dir is None and params.data.path == audio
    assert params.data.extensions == ("wav",) and params.seed == 3
    mine = recluster_params(make_params("task=recluster", f"run={run.dir}", f"data.path={tmp_path}",
                                        f"data.labels={ROOT / 'sound_cluster/demo/labels.csv'}"))
    assert mine.data.path == tmp_path and mine.data.labels == ROOT / "sound_cluster/demo/labels.csv"


def test_csv_cells_cannot_run_as_formulas_and_survive_a_carriage_return(tmp_path):
    """'=1+2.wav' is written '\\'=1+2.wav' and read back as it was; a name holding a bare CR stays one row."""
    from sound_cluster.embed.clusters import Assignment, read_clusters, write_clusters
    from sound_cluster.io_utils import from_spreadsheet_cell, spreadsheet_cell

    for text in ("=1+2.wav", "+a", "-2.wav", "@SUM(1)", "'=x", "''@y", "plain", "'quoted", "\tx"):
        assert from_spreadsheet_cell(spreadsheet_cell(text)) == text
        assert not spreadsheet_cell(text).startswith(("=", "+", "-", "@", "\t"))
    rows = [Assignment(p, 0, 0.5, 1.0, p, i) for i, p in enumerate(["=1+2.wav", "car\rriage.wav", 'q"uote,.wav'])]
    write_clusters(rows, tmp_path / "clusters.csv")
    assert "\n'=1+2.wav," in (tmp_path / "clusters.csv").read_text()
    assert [r.path for r in read_clusters(tmp_path / "clusters.csv")] == [r.path for r in rows]


def test_control_characters_are_escaped_in_log_lines():
    """An ESC sequence, a newline that forges a log line and a bidi override in a name: shown escaped."""
    from sound_cluster.logs import EscapeControl, printable

    assert printable("\x1b]0;owned\x07a\nb\u202ec.wav") == "\\x1b]0;owned\\x07a\\nb\\u202ec.wav"
    assert printable("café 音.wav") == "café 音.wav"
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "skipped %s: %s", ("a\nFORGED.wav", "bad"), None)
    assert EscapeControl().filter(record) and record.getMessage() == "skipped a\\nFORGED.wav: bad"


def test_a_file_name_is_not_parsed_as_mathtext_in_its_plot(tmp_path):
    """'$\\undefinedmacro$.wav' used to fail its plot (and so its fold): the title is drawn as text."""
    from sound_cluster.outputs.report import plot_file
    from sound_cluster.segment.tree import SegmentTree

    # Four leaves: (0, 1) merged first, then (2, 3), then the two.
    tree = SegmentTree(np.array([0, 2, 4]), np.array([1, 3, 5]), np.array([0.1, 0.2, 0.3]), 10.0, 0.4)
    plot_file(np.zeros((20, 8), np.float32), np.full((4, 2), 0.5, np.float32), tree, out_path=tmp_path / "p.png",
              title="$\\undefinedmacro$.wav", sample_rate=SR, hop_length=160, cuts=(2,))
    assert (tmp_path / "p.png").stat().st_size > 0


def test_report_snippets_of_a_name_that_is_not_utf8(tmp_path):
    """A Latin-1 name has no str libsndfile can take: the snippet is read through an opened file."""
    from sound_cluster.outputs.report_segments import write_snippet

    path = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.wav"))
    with open(path, "wb") as fh:
        sf.write(fh, tone(seconds=1.0), SR, format="WAV")
    write_snippet(path, tmp_path / "s.wav", start_s=0.2, end_s=0.5)
    assert sf.info(tmp_path / "s.wav").duration == pytest.approx(0.3, abs=0.01)


@pytest.mark.slow
def test_fuzz_inputs_subset_is_clean(tmp_path):
    """scripts/fuzz_inputs.py on a subset: the hostile entries and names of the folder group, one fit."""
    only = ["fifo", "dev_zero_link", "flac_2e36_frames", "mat5_as_wav", "esc_name", "newline_name", "cr_name",
            "math_name", "non_utf8_name", "formula_name"]
    done = subprocess.run([sys.executable, str(ROOT / "scripts/fuzz_inputs.py"), "--out", str(tmp_path), "--groups",
                           "folder", "--timeout", "240", "--only", *only, "executor.kind=serial"],
                          capture_output=True, text=True, timeout=600)
    last = done.stdout.strip().splitlines()[-1]
    assert last == f"fuzz: {6 + len(only)} probes, 0 hangs, 0 over memory, 0 tracebacks, 0 lost files, 0 other defects", \
        done.stdout + done.stderr[-3000:]
    assert done.returncode == 0
