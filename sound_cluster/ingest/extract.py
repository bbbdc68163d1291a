"""The per-file job of the features stage: a file's cached log-mel frames, read or computed."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sound_cluster.config import FeatureParams
from sound_cluster.errors import AudioError
from sound_cluster.ingest.audio import check_format, check_length, decode, probe, read_bytes
from sound_cluster.ingest.denoise import denoise
from sound_cluster.ingest.features import FeatureCache, content_key, file_content_key, log_mel


@dataclass(frozen=True)
class FileFeatures:
    """One file's log-mel frames, stored in the feature cache.

    Attributes
    ----------
    path : Path
        The audio file (absolute).
    cache_path : Path
        ``.npy`` of shape (n_frames, n_mels), float32.
    duration_s : float
        Duration of the audio in seconds.
    n_frames : int
        Number of log-mel frames.
    cache_hit : bool
        True when the frames came from the cache.
    """

    path: Path
    cache_path: Path
    duration_s: float
    n_frames: int
    cache_hit: bool


# Files larger than this are not read into memory whole (one hour of 16-bit stereo at 44.1 kHz is 635 MB).
STREAM_ABOVE_BYTES = 64 << 20


def extract_features(path: Path, *, cache: FeatureCache, max_seconds: float | None = None) -> FileFeatures:
    """Per-file job of the features stage: cached log-mel frames of ``path``.

    ``max_seconds`` (``data.max_file_s``) bounds the audio a file may hold; longer files fail.

    Raises
    ------
    AudioError
        The file cannot be used (see :func:`sound_cluster.ingest.audio.decode`).
    """
    params: FeatureParams = cache.params
    try:
        st = os.stat(path)
    except OSError as err:
        raise AudioError(f"cannot read file: {err.strerror}") from None
    entry = cache.lookup(path, st)
    if entry is not None:  # unchanged since a run with these settings: nothing to read
        check_length(entry.duration_s, max_seconds=max_seconds, said="")
        return FileFeatures(Path(path), cache.path(entry.key), entry.duration_s, entry.n_frames, True)
    if st.st_size > STREAM_ABOVE_BYTES:  # a long recording: decoded a block at a time, hashed once it is believed
        data: bytes | Path = Path(path)
    else:
        data = read_bytes(path)
    info = probe(data)
    check_format(info, Path(path))
    check_length(info.duration_s, max_seconds=max_seconds)
    try:
        key = content_key(data) if isinstance(data, bytes) else file_content_key(path)
    except OSError as err:
        raise AudioError(f"cannot read file: {err.strerror}") from None
    cached = cache.get(key, mmap=True)
    if cached is not None:  # same content seen under another name or before a touch
        n_frames, hit = int(cached.shape[0]), True
    else:
        raw = decode(data, sample_rate=params.sample_rate, min_samples=params.n_fft, info=info,
                     max_seconds=max_seconds)
        try:
            frames = log_mel(raw, params=params)
            y = denoise(raw, params=params, frames=frames)
            if y is not raw:  # gated: sounds are found on the frames before the gate (features.detection_frames)
                cache.put_ungated(key, frames)
                frames = log_mel(y, params=params)
        except Exception as err:  # noqa: BLE001 - librosa's own errors, reported per file
            raise AudioError(f"feature extraction failed: {type(err).__name__}: {err}", stage="features") from None
        del raw, y
        cache.put(key, frames)
        n_frames, hit = int(frames.shape[0]), False
    cache.remember(path, st, key=key, duration_s=info.duration_s, n_frames=n_frames)
    return FileFeatures(Path(path), cache.path(key), info.duration_s, n_frames, hit)
