"""Shared fixtures: audio synthesized into tmp_path, and the real Hydra config composed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sound_cluster.cli import compose_config
from sound_cluster.config import params_from_config
from sound_cluster.run.preflight import preflight

SR = 16000


def pytest_configure(config):
    """In the controlling process, before the test processes start: refuse a pytest whose test ids pytest-xdist
    cannot group (:func:`_xdist_can_group`), and compile the fold's numba code once (each process would otherwise
    compile it for itself, about 10 s each on a fresh install, and write the same cache files at the same moment)."""
    if hasattr(config, "workerinput"):  # a test process: the controller has compiled it already
        return
    if config.getoption("dist", "no") == "loadgroup" and not _xdist_can_group():
        raise pytest.UsageError("this pytest keeps test ids where pytest-xdist cannot add a test's xdist_group, so "
                                "each test process would make a group's shared fit again: install the dev extra's "
                                "pytest (<9.2)")
    from sound_cluster.segment.fold import FoldWeights, fold

    d = 2
    eye = np.eye(2 * d, d, dtype=np.float32)
    weights = FoldWeights(eye, np.zeros(d, np.float32), eye.T.copy(), np.zeros(2 * d, np.float32),
                          size_weighted=True, node_vector="mean", linkage="ward")
    steps = np.arange(1, 9, dtype=np.float32).reshape(4, d)
    fold(steps, weights=weights, barriers=np.array([0, 1, 0, 2], np.int8), min_size=1.0)


def _xdist_can_group() -> bool:
    """``--dist loadgroup`` ties a group's tests to one process by adding the group to each test's id through
    ``item._nodeid`` (pytest-xdist 3.8); pytest 9.2 reads ids from elsewhere, and the tests then spread silently."""
    import inspect

    from _pytest.nodes import Node

    try:
        return "_nodeid" in inspect.getsource(Node.nodeid.fget)
    except (AttributeError, OSError, TypeError):  # a pytest laid out otherwise: nothing to tell, nothing refused
        return True


def pytest_collection_modifyitems(config, items):
    """Longest first: the whole runs (marked slow), then the modules that share one long fit, then the rest, so
    neither test process is left running one long test alone at the end. The sort is stable: a module that
    shares a fit keeps its tests together."""
    def rank(item) -> int:
        if item.get_closest_marker("slow") is not None:
            return 0
        return 1 if item.get_closest_marker("xdist_group") is not None else 2

    groups: dict[str, int] = {}
    for item in items:  # a shared fit's tests all take the rank of its slowest one
        mark = item.get_closest_marker("xdist_group")
        if mark is not None:
            name = mark.args[0] if mark.args else mark.kwargs.get("name")
            groups[name] = min(groups.get(name, 2), rank(item))
    def key(item) -> int:
        mark = item.get_closest_marker("xdist_group")
        return groups[mark.args[0] if mark.args else mark.kwargs.get("name")] if mark is not None else rank(item)

    items.sort(key=key)


def tone(freq_hz: float = 440.0, seconds: float = 0.5, sr: int = SR, *, seed: int = 0) -> np.ndarray:
    """A sine with a little seeded noise, float32 in [-1, 1]."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return (0.5 * np.sin(2 * np.pi * freq_hz * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def compose_cfg(*overrides: str) -> dict:
    """The real config, composed with the Hydra compose API and resolved to a dict."""
    return compose_config(overrides)


def make_params(*overrides: str, base_dir: Path | None = None):
    """What the command line would run with: the composed config, checked, with the machine's settings resolved."""
    return preflight(params_from_config(compose_cfg(*overrides), base_dir=base_dir))


GOOD = {  # relative path -> (samples, sample rate, subtype)
    "tone.wav": lambda: (tone(440), SR, "PCM_16"),
    "sub/UPPER.WAV": lambda: (tone(660), SR, "PCM_16"),
    "sub/deep/chirp.flac": lambda: (tone(880, 0.7), SR, "PCM_16"),
    "vorbis.ogg": lambda: (tone(330, 0.6), SR, "VORBIS"),
    "stereo48k.wav": lambda: (np.stack([tone(440, 0.5, 48000), tone(550, 0.5, 48000)], axis=1), 48000, "PCM_24"),
    "eightbit.wav": lambda: (tone(500, 0.5, 8000), 8000, "PCM_U8"),
}

BAD = {  # relative path -> expected words in the reason
    "empty.wav": "empty file",
    "text.wav": "not a readable audio file",
    "random.mp3": "not a readable audio file",
    "truncated.wav": "truncated",
    "zero_frames.wav": "0 frames",
    "nan.wav": "NaN or infinite",
    "too_short.wav": "too short",
}


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A folder of good audio and of every kind of bad input the ingest stage must survive."""
    root = tmp_path / "corpus"
    for rel, make in GOOD.items():
        y, sr, subtype = make()
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        fmt = {"ogg": "OGG", "flac": "FLAC"}.get(rel.rsplit(".", 1)[-1].lower(), "WAV")
        sf.write(root / rel, y, sr, format=fmt, subtype=subtype)
    # Non-UTF-8 file name (Latin-1 'café.wav'), good audio.
    sf.write(bytes(root) + b"/caf\xe9.wav", tone(300), SR)

    (root / "empty.wav").write_bytes(b"")
    (root / "text.wav").write_text("this is not audio, just text renamed to .wav\n" * 20)
    (root / "random.mp3").write_bytes(np.random.default_rng(1).bytes(20000))
    sf.write(root / "full.tmp", tone(440, 1.0), SR, format="WAV", subtype="PCM_16")
    data = (root / "full.tmp").read_bytes()
    (root / "full.tmp").unlink()
    (root / "truncated.wav").write_bytes(data[: len(data) // 2 + 1])
    sf.write(root / "zero_frames.wav", np.zeros(0, dtype=np.float32), SR)
    y = tone(440)
    y[100] = np.nan
    y[200] = np.inf
    sf.write(root / "nan.wav", y, SR, subtype="FLOAT")
    sf.write(root / "too_short.wav", tone(440)[:100], SR)
    (root / "notes.txt").write_text("not audio and not an audio extension: ignored")
    # A symlink loop: sub/deep/loop -> sub
    os.symlink(root / "sub", root / "sub" / "deep" / "loop")
    return root


def good_names() -> set[str]:
    return set(GOOD) | {"caf\\xe9.wav"}
