"""README's usage examples, pasted into bash as written (training ones with debug=tiny appended)."""

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = ("--help", "--version", "--cfg")


def usage_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Usage\n.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


# README's usage block in three runs of consecutive commands (so two test processes share them); each run
# starts with a fit, which the recluster, apply, export and show commands after it read back. The split points
# are chosen among the fits so that the three runs cost about the same.
CHUNKS = 3


def _starts_a_chunk(cmd: str) -> bool:
    return (not any(q in cmd for q in QUICK) and "task=" not in cmd and "-show" not in cmd and " -m " not in cmd
            and cmd != "sound-cluster debug=tiny")  # not run (see below)


def _cost(cmd: str) -> float:
    """Roughly what the command costs under this test, in tiny fits of the demo (about 12 s each on 2 cores)."""
    if any(q in cmd for q in QUICK) or "-show" in cmd or cmd == "sound-cluster debug=tiny":  # the last: not run
        return 0.05
    for words, cost in (("task=export", 0.1), ("task=apply", 0.6), ("task=recluster", 0.8), (" -m ", 1.4)):
        if words in cmd:
            return cost
    return 1.0


def test_usage_block_splits_into_chunks_that_each_start_with_a_fit():
    commands = usage_commands()
    assert len(commands) >= 10 and all(c.startswith("sound-cluster") for c in commands)
    chunks = _chunks(commands)
    assert len(chunks) == CHUNKS and sum(chunks, []) == commands
    for chunk in chunks:
        assert _starts_a_chunk(chunk[0]), chunk[0]


def _chunks(commands: list[str]) -> list[list[str]]:
    import itertools

    starts = [i for i, c in enumerate(commands) if i > 0 and _starts_a_chunk(c)]
    best = None
    for cut in itertools.combinations(starts, CHUNKS - 1):
        bounds = [0, *cut, len(commands)]
        worst = max(sum(_cost(c) for c in commands[a:b]) for a, b in zip(bounds, bounds[1:]))
        if best is None or worst < best[0]:
            best = (worst, bounds)
    bounds = best[1]
    return [commands[a:b] for a, b in zip(bounds, bounds[1:])]


@pytest.mark.slow
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_usage_examples_run_as_written(tmp_path, chunk):
    commands = _chunks(usage_commands())[chunk]
    # A working folder where the examples' relative paths (sound_cluster/demo/...) resolve and
    # outputs/ is this test's own.
    (tmp_path / "sound_cluster").symlink_to(ROOT / "sound_cluster")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for cmd in commands:
        if cmd == "sound-cluster debug=tiny":  # with debug=tiny appended to every run, the first command runs it
            continue
        line = cmd
        if cmd.startswith("sound-cluster ") or cmd == "sound-cluster":
            if not any(q in cmd for q in QUICK):
                # Same command, small model: checks paths, keys and quoting, not training quality (the last
                # value of a key given twice wins, so a README's longer training is cut to debug=tiny's).
                line = f"{cmd} debug=tiny features.cache_dir={tmp_path / 'cache'}"
                if "train.epochs=" in cmd:
                    line += " train.epochs=2"
                if cmd != "sound-cluster":  # the first run writes the report; the others skip it and plots
                    line += " output.report=false output.max_plots=0"
        proc = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 0, f"{line}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        if "--help" in cmd:
            assert "usage: sound-cluster" in proc.stdout and "powered by Hydra" not in proc.stdout
        if "--version" in cmd:
            assert proc.stdout.startswith("sound-cluster ") and "tensorflow" in proc.stdout
        if "--segments auto" in cmd:
            lines = proc.stdout.splitlines()  # eight sounds with quiet between: four sounds or more, background between
            assert "segments by sounds_over_background" in lines[0]
            assert sum("cluster" in line for line in lines[1:]) >= 4 and any("background" in x for x in lines[1:])
    if any(" -m " in c for c in commands):
        assert (tmp_path / "outputs" / "multirun").is_dir()
        assert list((tmp_path / "outputs" / "multirun").rglob("multirun.csv"))


@pytest.mark.parametrize("key, hint", [("model.n_cluster=4", "did you mean 'model.n_clusters'"),
                                       ("trian.epochs=3", "did you mean 'train.epochs'")])
def test_misspelt_key_names_the_closest(tmp_path, key, hint):
    proc = subprocess.run(["sound-cluster", key], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and hint in proc.stderr and "+model" not in proc.stderr
    assert not (tmp_path / "outputs").exists()  # nothing left behind


@pytest.mark.slow
def test_labels_with_filename_header_checked_before_work(tmp_path):
    import soundfile as sf

    from tests.conftest import SR, tone

    (tmp_path / "a").mkdir()
    for i in range(2):
        sf.write(tmp_path / "a" / f"{i}.wav", tone(300 + 200 * i), SR)
    (tmp_path / "labels.csv").write_text("filename,label\n0.wav,x\n1.wav,y\n")
    (tmp_path / "bad.csv").write_text("file,class\n0.wav,x\n")
    proc = subprocess.run(["sound-cluster", str(tmp_path / "a"), f"data.labels={tmp_path / 'bad.csv'}",
                           f"hydra.run.dir={tmp_path / 'r1'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "must have columns path (or file, or filename),label" in proc.stdout + proc.stderr
    assert not (tmp_path / "r1").exists()  # refused before any run folder is made
    proc = subprocess.run(["sound-cluster", str(tmp_path / "a"), f"data.labels={tmp_path / 'labels.csv'}",
                           "debug=tiny", f"features.cache_dir={tmp_path / 'c'}", f"hydra.run.dir={tmp_path / 'r2'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert '"nmi"' in (tmp_path / "r2" / "summary.json").read_text()
    # A labels file that names none of the run's files: the eval command says so and fails.
    (tmp_path / "other.csv").write_text("path,label\nnot/there.wav,x\n")
    proc = subprocess.run(["sound-cluster-eval", str(tmp_path / "r2"), "--labels", str(tmp_path / "other.csv")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "names none of the run's files" in proc.stderr


def test_show_on_something_that_is_not_a_tree(tmp_path):
    import soundfile as sf

    from tests.conftest import SR, tone

    sf.write(tmp_path / "a.wav", tone(), SR)
    (tmp_path / "summary.json").write_text('{"status": "complete"}')
    for target, words in ((tmp_path / "a.wav", "is not a tree file"), (tmp_path, "is a folder"),
                          (tmp_path / "summary.json", "is not a tree file of sound_cluster"),
                          (tmp_path / "missing.json", "does not exist")):
        proc = subprocess.run(["sound-cluster-show", str(target)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("value", ["/a b/c", "/it's", "/x\\y", "/e,f=g", "/q\\", "/r\\'s", "/plain/path_1.wav"])
def test_path_values_reach_the_config_intact(value, tmp_path):
    from sound_cluster.cli import _rewrite_args, compose_config

    (arg,) = _rewrite_args([f"data.path={value}"])
    assert compose_config([arg])["data"]["path"] == value
    home = os.path.expanduser("~")
    (arg,) = _rewrite_args(["data.labels=~/x y.csv"])
    assert compose_config([arg])["data"]["labels"] == f"{home}/x y.csv"
    folder = tmp_path / "my rec,1"
    folder.mkdir()
    (arg,) = _rewrite_args([str(folder)])  # a bare existing folder is data.path
    assert compose_config([arg])["data"]["path"] == str(folder)
