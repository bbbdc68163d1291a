"""Features: log-mel frames, and the on-disk cache that keeps them between runs.

Cache layout: ``<cache_dir>/<settings key>/<content key>.npy``. The settings key hashes the
feature settings and the versions of the libraries that compute them; the content key hashes
the file's bytes. A changed setting or a changed file therefore misses the cache, and nothing
else does. Arrays are written atomically and read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sound_cluster.config import FeatureParams
from sound_cluster.io_utils import atomic_open, atomic_write_json, open_regular, remove_stale_temps

log = logging.getLogger(__name__)

CACHE_FORMAT = 3  # 2: a gated file keeps its frames before the gating beside its frames (ungated_path); 3: the bed test


@dataclass(frozen=True)
class IndexEntry:
    """What the cache remembers about one path, so that a rerun need not re-read the file.

    The file's identity (size, modification and change times in ns, inode) must match the
    current ``os.stat`` exactly; otherwise the file is read and hashed again.
    """

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    key: str
    duration_s: float
    n_frames: int

    @staticmethod
    def identity(st: os.stat_result) -> tuple[int, int, int, int]:
        return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def log_mel(y: np.ndarray, *, params: FeatureParams, block_frames: int = 8192) -> np.ndarray:
    """Log-mel spectrogram of a mono waveform, computed in blocks of frames.

    Parameters
    ----------
    y : np.ndarray [shape=(n_samples,), dtype=float32]
        Mono audio at ``params.sample_rate`` Hz.
    params : FeatureParams
        Settings; the output is ``log(mel_power + params.log_offset)``.
    block_frames : int
        Frames per block (8192: 82 s at 100 frames/s). The short-time spectrum of a block is all
        that is held at once, so memory does not grow with the file beyond the output itself;
        the frames equal one call on the whole waveform (centred windows, zero padding at the ends).

    Returns
    -------
    frames : np.ndarray [shape=(n_frames, n_mels), dtype=float32]
        One row per hop of ``params.hop_length`` samples (centred windows, so
        ``n_frames = 1 + n_samples // hop_length``).
    """
    hop, n_fft = params.hop_length, params.n_fft
    n_frames = 1 + len(y) // hop
    if n_frames <= block_frames:
        return _log_mel_block(y, params=params, center=True)
    out = np.empty((n_frames, params.n_mels), dtype=np.float32)
    for a in range(0, n_frames, block_frames):
        b = min(n_frames, a + block_frames)
        # Frame j is centred on sample j * hop: it spans [j * hop - n_fft // 2, ... + n_fft).
        lo, hi = a * hop - n_fft // 2, (b - 1) * hop - n_fft // 2 + n_fft
        seg = y[max(lo, 0):min(hi, len(y))]
        if lo < 0 or hi > len(y):  # the zeros centred framing puts beyond the ends
            seg = np.pad(seg, (max(0, -lo), max(0, hi - len(y))))
        out[a:b] = _log_mel_block(seg, params=params, center=False)
    return out


def _log_mel_block(y: np.ndarray, *, params: FeatureParams, center: bool) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(
        y=y,
        sr=params.sample_rate,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        n_mels=params.n_mels,
        fmin=params.fmin,
        fmax=params.fmax,
        power=2.0,
        center=center,
        pad_mode="constant",
    ).astype(np.float32, copy=False)  # (n_mels, n_frames)
    mel += params.log_offset
    np.log(mel, out=mel)
    return np.ascontiguousarray(mel.T)  # (n_frames, n_mels)


def warm_up(params: FeatureParams) -> None:
    """Import and exercise librosa once (about 2 s the first time in a process).

    Worth doing in a parent before it forks workers, which then start warm.
    """
    log_mel(np.zeros(params.n_fft * 4, dtype=np.float32), params=params)


def content_key(data: bytes) -> str:
    """Hash of a file's bytes (the part of the cache key that follows the audio)."""
    return hashlib.sha256(data).hexdigest()[:40]  # sha256 has CPU support: about 2x blake2b here


def file_content_key(path: Path, *, chunk_bytes: int = 1 << 20) -> str:
    """:func:`content_key` of a file's bytes, read a chunk at a time (for files too large to hold whole)."""
    h = hashlib.sha256()
    with open_regular(path) as fh:
        while chunk := fh.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()[:40]


def settings_key(params: FeatureParams) -> str:
    """Hash of the feature settings and of the library versions that compute them."""
    import librosa
    import soundfile

    try:
        import soxr

        soxr_version = soxr.__version__
    except ImportError:  # pragma: no cover - librosa may resample without soxr
        soxr_version = None
    spec = {
        "format": CACHE_FORMAT,
        "settings": params.key_fields(),
        "librosa": librosa.__version__,
        "numpy": np.__version__,
        "libsndfile": soundfile.__libsndfile_version__,
        "soxr": soxr_version,
    }
    if params.denoise is not False:  # the gating's own version decides the frames of gated files
        from importlib.metadata import PackageNotFoundError, version

        try:
            spec["noisereduce"] = version("noisereduce")
        except PackageNotFoundError:  # pragma: no cover - a dependency of the package
            spec["noisereduce"] = None
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


UNGATED_SUFFIX = ".ungated"  # beside a gated file's frames: its frames before the gating, where sounds are found


def ungated_path(frames_path: Path) -> Path:
    """Where the frames of ``frames_path`` before spectral gating lie (present only for files that were gated)."""
    frames_path = Path(frames_path)
    return frames_path.with_name(f"{frames_path.stem}{UNGATED_SUFFIX}.npy")


def detection_frames(frames_path: Path) -> np.ndarray | None:
    """A gated file's frames before the gating (memory-mapped), or None for a file that was not gated.

    Sounds are found on them (:func:`sound_cluster.segment.sounds.find_sounds`): the gate dips inside a
    sustained sound where its level falls near the bed, which would break the sound in two, and the
    running background that detection estimates is the bed itself. The encoder still embeds the gated frames.
    """
    p = ungated_path(frames_path)
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):  # not gated, or an entry damaged outside our writes: the gated frames
        return None


class FeatureCache:
    """Log-mel arrays on disk, one ``.npy`` per distinct audio content.

    Parameters
    ----------
    root : Path
        Cache folder (``features.cache_dir``); a sub-folder per settings key is made in it.
    params : FeatureParams
        The feature settings this cache holds.
    """

    def __init__(self, root: Path, *, params: FeatureParams) -> None:
        self.params = params
        self.dir = Path(root) / settings_key(params)

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.npy"

    def put_ungated(self, key: str, frames: np.ndarray) -> Path:
        """Store the log-mel of a gated file's waveform before the gating (:func:`ungated_path`), atomically."""
        return self.put(f"{key}{UNGATED_SUFFIX}", frames)

    def prepare(self) -> None:
        """Create the folder and remove temporary files of killed runs (arrays and index entries)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        n = remove_stale_temps(self.dir) + remove_stale_temps(self.dir / "index")
        if n:
            log.info("removed %d temporary files left by an interrupted run in %s", n, self.dir)

    def get(self, key: str, *, mmap: bool = False, n_frames: int | None = None) -> np.ndarray | None:
        """The cached array for ``key``, or None when absent, unreadable or not of the expected shape.

        Every entry is checked on use (header, length of the data, ``(n_frames, n_mels)`` float32),
        so an entry damaged outside our atomic writes (a full disk, a copy cut short, a hand edit)
        is logged and recomputed (the new array replaces it atomically) instead of failing later runs.
        """
        p = self.path(key)
        if not p.exists():
            return None
        try:
            arr = np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
            expected = (n_frames if n_frames is not None else arr.shape[0], self.params.n_mels)
            if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape != expected:
                raise ValueError(f"holds {arr.dtype} {arr.shape}, expected float32 {expected}")
            return arr
        except (OSError, ValueError, EOFError) as err:  # damaged outside our atomic writes
            log.warning("recomputing damaged cache entry %s: %s", p, err)
            return None

    def _index_path(self, path: Path) -> Path:
        name = hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:32]
        return self.dir / "index" / f"{name}.json"

    def lookup(self, path: Path, st: os.stat_result) -> IndexEntry | None:
        """The entry remembered for ``path`` if the file is unchanged and its array present."""
        try:
            entry = IndexEntry(**json.loads(self._index_path(path).read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if IndexEntry.identity(st) != (entry.size, entry.mtime_ns, entry.ctime_ns, entry.ino):
            return None
        return entry if self.get(entry.key, mmap=True, n_frames=entry.n_frames) is not None else None

    def remember(self, path: Path, st: os.stat_result, *, key: str, duration_s: float, n_frames: int) -> None:
        """Record that ``path`` (as ``st`` describes it) has content ``key``."""
        size, mtime_ns, ctime_ns, ino = IndexEntry.identity(st)
        entry = IndexEntry(size, mtime_ns, ctime_ns, ino, key, duration_s, n_frames)
        atomic_write_json(self._index_path(path), asdict(entry), fsync=False)

    def put(self, key: str, frames: np.ndarray) -> Path:
        """Store ``frames`` atomically; returns the final path."""
        p = self.path(key)
        # No fsync: the cache can always be rebuilt, and a torn file after a power cut fails to
        # load and is recomputed. Atomic rename still guarantees no half-written file on a crash.
        with atomic_open(p, "wb", fsync=False) as fh:
            np.save(fh, np.ascontiguousarray(frames), allow_pickle=False)
        return p
