import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sound_cluster.errors import AudioError
from sound_cluster.ingest.audio import discover, load
from sound_cluster.ingest.failures import display_path
from tests.conftest import BAD, SR, good_names, tone

EXTS = ("wav", "flac", "ogg", "mp3")


def test_discover_is_recursive_case_insensitive_and_survives_symlink_loops(corpus):
    files, failures = discover(corpus, extensions=EXTS)
    names = {display_path(f, corpus) for f in files}
    assert good_names() <= names
    assert set(BAD) <= names
    assert "notes.txt" not in names
    # The loop sub/deep/loop -> sub is reported once and not followed again.
    assert any("symlink loop" in f.reason for f in failures)
    assert len(files) == len(set(files))


def test_discover_extension_allow_list(corpus):
    files, _ = discover(corpus, extensions=("flac",))
    assert [display_path(f, corpus) for f in files] == ["sub/deep/chirp.flac"]


def test_discover_missing_folder_names_it(tmp_path):
    with pytest.raises(AudioError, match=str(tmp_path / "nope")):
        discover(tmp_path / "nope", extensions=EXTS)


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: folder permissions do not apply")
def test_unlistable_folder_is_a_failure_not_a_crash(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    sf.write(tmp_path / "ok.wav", tone(), SR)
    locked.chmod(0)
    try:
        files, failures = discover(tmp_path, extensions=EXTS)
    finally:
        locked.chmod(0o755)
    assert [f.name for f in files] == ["ok.wav"]
    assert any("cannot list folder" in f.reason for f in failures)


def test_load_downmixes_and_resamples(corpus):
    y = load(corpus / "stereo48k.wav", sample_rate=SR)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - SR // 2) <= 1  # 0.5 s at 16 kHz
    y8 = load(corpus / "eightbit.wav", sample_rate=SR)
    assert abs(len(y8) - SR // 2) <= 1
    # The 500 Hz tone survives 8-bit storage and resampling: its spectral peak is still at 500 Hz.
    spec = np.abs(np.fft.rfft(y8))
    assert abs(np.argmax(spec) * SR / len(y8) - 500) < 5


@pytest.mark.parametrize("name, words", sorted(BAD.items()))
def test_each_bad_file_has_a_readable_reason(corpus, name, words):
    with pytest.raises(AudioError, match=words):
        load(corpus / name, sample_rate=SR, min_samples=512)


def test_non_utf8_name_loads_and_displays(corpus):
    path = Path(os.fsdecode(bytes(corpus) + b"/caf\xe9.wav"))
    assert load(path, sample_rate=SR).size == SR // 2
    assert display_path(path, corpus) == "caf\\xe9.wav"


def test_only_regular_files_are_read_and_file_links_follow_the_setting(tmp_path):
    """A FIFO named like audio would hang the read, a link to /dev/zero never end: neither is opened."""
    import os

    import soundfile as sf

    from sound_cluster.ingest.audio import discover
    from tests.conftest import SR, tone

    root, outside = tmp_path / "in", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    sf.write(root / "good.wav", tone(), SR)
    sf.write(outside / "elsewhere.wav", tone(), SR)
    os.mkfifo(root / "pipe.wav")
    os.symlink("/dev/zero", root / "zero.wav")
    os.symlink(outside / "elsewhere.wav", root / "link.wav")
    files, failures = discover(root, extensions=("wav",), follow_symlinks=True)
    assert [f.name for f in files] == ["good.wav", "link.wav"]
    reasons = {f.path.name: f.reason for f in failures}
    assert "not a regular file" in reasons["pipe.wav"] and "not a regular file" in reasons["zero.wav"]
    files, failures = discover(root, extensions=("wav",), follow_symlinks=False)
    assert [f.name for f in files] == ["good.wav"]
    assert "data.follow_symlinks=false" in {f.path.name: f.reason for f in failures}["link.wav"]


def test_headers_that_lie_are_not_believed(tmp_path):
    """A WAV claiming 1 Hz (a 644-byte file that would decode to minutes) and MAT5 data named .wav: both refused."""
    import soundfile as sf

    from sound_cluster.errors import AudioError
    from sound_cluster.ingest.audio import check_format, probe
    from tests.conftest import SR, tone

    sf.write(tmp_path / "slow.wav", tone(seconds=0.02), 1, format="WAV", subtype="PCM_16")  # 320 frames "at 1 Hz"
    with pytest.raises(AudioError, match="sample rate 1 Hz"):
        probe(tmp_path / "slow.wav")
    sf.write(tmp_path / "matlab.wav", tone(), SR, format="MAT5", subtype="DOUBLE")
    with pytest.raises(AudioError, match="MAT5 data, not what .wav promises"):
        check_format(probe(tmp_path / "matlab.wav"), tmp_path / "matlab.wav")
    sf.write(tmp_path / "ok.wav", tone(), SR)
    check_format(probe(tmp_path / "ok.wav"), tmp_path / "ok.wav")  # an honest WAV passes
