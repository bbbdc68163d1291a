"""Ingest: find audio files under a folder and decode them to mono float32 at one sample rate.

Decoding goes through soundfile (libsndfile: wav, flac, ogg, mp3). Each file is read into
memory once, so that hashing it for the feature cache and decoding it cost one read, and
so that file names which are not valid UTF-8 still open (libsndfile is given bytes, not a name).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from sound_cluster.errors import AudioError
from sound_cluster.ingest.failures import Failure
from sound_cluster.io_utils import NotRegularFile, open_regular

log = logging.getLogger(__name__)

# libsndfile logs "data : 32000 (should be 15979)" when a WAV's data chunk is cut short.
_TRUNCATED_RE = re.compile(r"data\s*:\s*(\d+)\s*\(should be (\d+)\)")


def discover(
    root: Path,
    *,
    extensions: tuple[str, ...],
    follow_symlinks: bool = True,
) -> tuple[list[Path], list[Failure]]:
    """Find audio files under ``root``, recursively.

    Parameters
    ----------
    root : Path
        Folder to search (or a single audio file).
    extensions : tuple of str
        Allowed extensions without the dot, matched case-insensitively.
    follow_symlinks : bool
        Follow symlinked folders and files (false: neither is read; each file link is listed in the failures).
        A folder already visited (a symlink loop) is skipped. Only regular files are read: a pipe, a device
        or a socket named like audio is listed in the failures, never opened.

    Returns
    -------
    files : list of Path
        Absolute paths, sorted, each real file once even when reachable by several links.
    failures : list of Failure
        Folders that could not be listed and symlink loops, with stage ``discover``.

    Raises
    ------
    AudioError
        ``root`` does not exist.
    """
    root = Path(os.path.abspath(root))
    allowed = {e.lower().lstrip(".") for e in extensions}
    if not root.exists():
        raise AudioError(f"data.path does not exist: {root}", stage="discover")
    if not root.is_dir():
        if not stat.S_ISREG(root.stat().st_mode):
            raise AudioError(f"data.path is not a folder or a regular file (a pipe, device or socket): {root}",
                             stage="discover")
        return [root], []

    files: list[Path] = []
    failures: list[Failure] = []
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()

    def on_error(err: OSError) -> None:
        failures.append(Failure(Path(err.filename or root), "discover", f"cannot list folder: {err.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=follow_symlinks):
        try:
            st = os.stat(dirpath)
        except OSError as err:
            on_error(err)
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            failures.append(Failure(Path(dirpath), "discover", "symlink loop: folder already visited, skipped"))
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for name in dirnames:  # searched as a folder; say so, since its name promises one audio file
            if "." in name and name.rsplit(".", 1)[-1].lower() in allowed:
                failures.append(Failure(Path(dirpath) / name, "discover",
                                        "a folder named like an audio file: searched as a folder, not read as audio"))
        for name in sorted(filenames):
            if name.rsplit(".", 1)[-1].lower() not in allowed or "." not in name:
                continue
            path = Path(dirpath) / name
            try:
                if not follow_symlinks and os.path.islink(path):
                    failures.append(Failure(path, "discover", "a symlink, not read (data.follow_symlinks=false)"))
                    continue
                fst = os.stat(path)
            except OSError:
                failures.append(Failure(path, "discover", "broken symlink or unreadable entry"))
                continue
            if not stat.S_ISREG(fst.st_mode):  # a FIFO would block the read forever, a device never end
                failures.append(Failure(path, "discover", "not a regular file (a pipe, device or socket): not read"))
                continue
            if (fst.st_dev, fst.st_ino) in seen_files:
                continue  # same file reached through another link
            seen_files.add((fst.st_dev, fst.st_ino))
            files.append(path)
    return sorted(files), failures


def read_bytes(path: Path, *, max_bytes: int | None = None) -> bytes:
    """Read a whole regular file, turning OS errors into :class:`AudioError` with a readable reason.

    Only a regular file is read, and its open never blocks (:func:`sound_cluster.io_utils.open_regular`).
    """
    try:
        with open_regular(path, max_bytes=max_bytes) as fh:
            data = fh.read()
    except FileNotFoundError:
        raise AudioError("file does not exist") from None
    except IsADirectoryError:
        raise AudioError("is a folder, not a file") from None
    except NotRegularFile as err:
        raise AudioError(err.strerror) from None
    except OSError as err:
        raise AudioError(f"cannot read file: {err.strerror}") from None
    if not data:
        raise AudioError("empty file (0 bytes)")
    return data


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about a file. ``duration_s`` is in seconds."""

    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    format: str
    subtype: str


@contextlib.contextmanager
def _sound_file(data: bytes | Path) -> Iterator[sf.SoundFile]:
    """libsndfile reading the bytes in memory, or the file itself (large files are not read whole).

    A path is opened here, as a regular file only and without blocking, rather than by libsndfile.
    """
    if isinstance(data, (bytes, bytearray)):
        source = io.BytesIO(data)
    else:
        try:
            source = open_regular(data)
        except OSError as err:
            raise AudioError(f"cannot read file: {err.strerror}") from None
    with source, sf.SoundFile(source) as f:
        yield f


def probe(data: bytes | Path) -> AudioInfo:
    """Parse the header of an encoded file (its bytes, or its path) and check it is complete.

    Raises
    ------
    AudioError
        Not an audio format libsndfile reads, or a WAV whose data is cut short.
    """
    try:
        with _sound_file(data) as f:
            info = AudioInfo(f.samplerate, f.channels, f.frames, f.frames / f.samplerate, f.format, f.subtype)
            extra = f.extra_info
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"not a readable audio file ({_sf_message(err)})") from None
    m = _TRUNCATED_RE.search(extra or "")
    if m and int(m.group(2)) < int(m.group(1)):
        declared, held = int(m.group(1)), int(m.group(2))
        raise AudioError(f"truncated file: header declares {declared} bytes of audio but only {held} are present")
    if info.sample_rate <= 0 or info.channels <= 0:
        raise AudioError(f"invalid header: sample rate {info.sample_rate}, {info.channels} channels")
    if not MIN_SAMPLE_RATE_HZ <= info.sample_rate <= MAX_SAMPLE_RATE_HZ:  # a forged rate makes a tiny file endless
        raise AudioError(f"sample rate {info.sample_rate} Hz in the header: outside {MIN_SAMPLE_RATE_HZ}-"
                         f"{MAX_SAMPLE_RATE_HZ} Hz, not read")
    return info


# The sample rates read (recorders from 1 kHz telemetry to 768 kHz ultrasound); outside them a header is not believed.
MIN_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ = 1000, 768000
# What each extension promises, as libsndfile names the formats: a file is decoded only as what its name says.
FORMATS_BY_EXTENSION = {"wav": {"WAV", "WAVEX", "RF64", "W64"}, "wave": {"WAV", "WAVEX", "RF64", "W64"},
                        "flac": {"FLAC"}, "ogg": {"OGG"}, "oga": {"OGG"}, "opus": {"OGG"}, "mp3": {"MP3"},
                        "aif": {"AIFF"}, "aiff": {"AIFF"}, "aifc": {"AIFF"}, "au": {"AU"}, "caf": {"CAF"}}


def check_length(duration_s: float, *, max_seconds: float | None, said: str = " in the header") -> None:
    """Refuse a file that holds more than ``max_seconds`` of audio (``data.max_file_s``), as its header (or,
    ``said=""``, the feature cache) says.

    Raises
    ------
    AudioError
    """
    if max_seconds is not None and duration_s > max_seconds:
        raise AudioError(f"{duration_s:.0f} s of audio{said}: longer than data.max_file_s={max_seconds:g} s, not "
                         "read (raise data.max_file_s for longer recordings)")


def check_format(info: AudioInfo, path: Path) -> None:
    """Refuse a file whose content is another format than its extension promises (MAT5 data named ``.wav``).

    Extensions this table does not know are not checked.

    Raises
    ------
    AudioError
    """
    ext = Path(path).suffix.lower().lstrip(".")
    allowed = FORMATS_BY_EXTENSION.get(ext)
    if allowed is not None and info.format not in allowed:
        raise AudioError(f"the file is {info.format} data, not what .{ext} promises ({', '.join(sorted(allowed))})")


def decode(data: bytes | Path, *, sample_rate: int, min_samples: int = 1, info: AudioInfo | None = None,
           block_frames: int = 1 << 20, max_seconds: float | None = None) -> np.ndarray:
    """Decode an encoded file to mono float32 at ``sample_rate``, a block at a time.

    Parameters
    ----------
    data : bytes or Path
        The whole encoded file, or its path (then it is read a block at a time, so a long
        recording never sits in memory at its original rate and channel count).
    sample_rate : int
        Target rate in Hz; other rates are resampled (soxr, high quality, as a stream: the output
        equals resampling the whole signal at once).
    min_samples : int
        Fewest samples (at ``sample_rate``) accepted, e.g. one analysis window.
    info : AudioInfo, optional
        The result of :func:`probe` on ``data``, when the caller already has it.
    block_frames : int
        Frames (at the file's rate) decoded at once, fewer for files of many channels (a block holds
        at most 16 MB of samples).
    max_seconds : float, optional
        Longest audio accepted, in seconds: checked against the header before any decoding and
        against the samples as they come (a header that under-states its length is caught too).

    Returns
    -------
    y : np.ndarray [shape=(n_samples,), dtype=float32]
        Mono waveform, channels averaged.

    Raises
    ------
    AudioError
        Unreadable, empty, non-finite or too short audio; the reason says which.
    """
    info = info or probe(data)
    if info.frames == 0:
        raise AudioError("no audio samples (0 frames)")
    check_length(info.duration_s, max_seconds=max_seconds)
    block_frames = max(1024, min(block_frames, (4 << 20) // info.channels))
    max_frames = None if max_seconds is None else int(max_seconds * info.sample_rate) + block_frames
    resampler = None
    if info.sample_rate != sample_rate:
        import soxr

        resampler = soxr.ResampleStream(info.sample_rate, sample_rate, 1, dtype="float32", quality="HQ")
    # The output is written into one array of the length the header promises (grown if it lied), so
    # the decoded chunks are never held twice.
    ratio = float(sample_rate) / info.sample_rate
    out = np.empty(int(np.ceil(info.frames * ratio)) + 16, dtype=np.float32)
    filled, bad, total = 0, 0, 0
    try:
        with _sound_file(data) as f:
            while True:
                y = f.read(block_frames, dtype="float32", always_2d=True)  # (n, channels)
                last = y.shape[0] < block_frames
                total += y.size
                if max_frames is not None and total // info.channels > max_frames:
                    raise AudioError(f"longer than data.max_file_s={max_seconds:g} s once decoded (the header "
                                     f"says {info.duration_s:.1f} s); raise data.max_file_s to read it")
                finite = np.isfinite(y)
                if not finite.all():
                    bad += int(y.size - np.count_nonzero(finite))
                # Downmix: (n, channels) -> (n,); a mono file needs no arithmetic.
                y = y[:, 0] if y.shape[1] == 1 else y.mean(axis=1, dtype=np.float32)
                if resampler is not None:
                    y = resampler.resample_chunk(np.ascontiguousarray(y), last=last)
                if filled + y.shape[0] > out.shape[0]:
                    out = np.concatenate([out[:filled], np.empty(max(y.shape[0], out.shape[0] // 2), np.float32)])
                out[filled:filled + y.shape[0]] = y
                filled += y.shape[0]
                if last:
                    break
    except (sf.LibsndfileError, RuntimeError, ValueError) as err:
        raise AudioError(f"decoding failed ({_sf_message(err)})") from None
    if total == 0:
        raise AudioError("no audio samples (0 frames)")
    if bad:
        raise AudioError(f"{bad} of {total} samples are NaN or infinite")
    y = out[:filled]
    if resampler is not None:  # the length librosa.resample gives (ceil of the ratio), as the cache always held
        n = int(np.ceil((total // info.channels) * ratio))
        y = out[:n] if out.shape[0] >= n else np.pad(out, (0, n - out.shape[0]))
        y[filled:] = 0.0
    if y.shape[0] < min_samples:
        raise AudioError(
            f"too short: {y.shape[0]} samples at {sample_rate} Hz ({y.shape[0] / sample_rate * 1000:.1f} ms), "
            f"shorter than one analysis frame ({min_samples} samples)"
        )
    return y


def load(path: Path, *, sample_rate: int, min_samples: int = 1) -> np.ndarray:
    """Read and decode one file: ``path -> (n_samples,) float32`` mono at ``sample_rate`` Hz.

    See :func:`decode` for the checks made and the errors raised.
    """
    return decode(read_bytes(path), sample_rate=sample_rate, min_samples=min_samples)


def _sf_message(err: Exception) -> str:
    msg = str(err).strip()
    # soundfile prefixes "Error opening <_io.BytesIO object at 0x...>: "; the object name helps nobody.
    msg = re.sub(r"^Error opening <[^>]*>:\s*", "", msg)
    # We hand libsndfile bytes, so its "does not exist ... (possibly a pipe?)" means it found no
    # format it knows in them; its decoder notes that follow only confuse.
    if "not a regular file" in msg:
        msg = "unrecognised or corrupt data"
    return msg.split("\n")[0].strip() or type(err).__name__
