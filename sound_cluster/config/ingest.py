"""Settings of the ingest stage: where the audio is (``data``) and its log-mel features (``features``)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sound_cluster.config.checks import fail, non_negative, one_of, positive_float, positive_int

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "mp3")

SEGMENT_FORMATS = ("auto", "csv", "audacity", "raven")  # data.segments_format (sound_cluster.outputs.evaluate reads them)



@dataclass(frozen=True)
class DataParams:
    """Where the audio is. ``path`` is absolute once built (``None`` means the bundled demo).

    Attributes
    ----------
    path
        folder of audio; null runs on the demo bundled with the package
    extensions
        matched case-insensitively
    follow_symlinks
        true: symlinked folders and files are followed (loops detected and skipped) | false: neither is read, each
        file link listed in failures.csv
    strict
        true: the first bad file stops the run with an error
    labels
        optional CSV path,label: adds NMI, ARI, accuracy to summary.json
    segments
        optional reference segments: a CSV path,start_s,end_s,label, or a folder of Audacity label tracks
        or Raven selection tables (matched to audio files by name): scores each tree (boundary F,
        L-measure) and, with labels, the events (event NMI)
    segments_format
        auto | csv | audacity | raven
    max_file_s
        seconds; a file holding more audio is not read and goes to failures.csv (raise it for longer
        recordings: a file is decoded whole, 230 MB per hour at 16 kHz)
    """

    path: Path | None = None
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS
    follow_symlinks: bool = True
    strict: bool = False
    labels: Path | None = None
    segments: Path | None = None
    segments_format: str = "auto"
    max_file_s: float = 14400.0

    def check(self, prefix: str = "data") -> None:
        positive_float(f"{prefix}.max_file_s", self.max_file_s)
        if self.labels is not None and not Path(self.labels).is_file():
            fail(f"{prefix}.labels", str(self.labels), "an existing CSV file (path,label) or null")
        one_of(f"{prefix}.segments_format", self.segments_format, SEGMENT_FORMATS)
        if self.segments is not None:
            seg = Path(self.segments)
            if self.segments_format == "csv" and not seg.is_file() or not (seg.is_file() or seg.is_dir()):
                fail(f"{prefix}.segments", str(self.segments), "an existing CSV file (path,start_s,end_s,label), a "
                      "folder of Audacity label tracks or Raven selection tables, or null")
            if self.segments_format in ("audacity", "raven") and not seg.is_dir():
                fail(f"{prefix}.segments", str(self.segments), f"a folder of {self.segments_format} files with "
                      f"{prefix}.segments_format={self.segments_format}")
        if not self.extensions or not all(isinstance(e, str) and e.strip(".") for e in self.extensions):
            fail(f"{prefix}.extensions", list(self.extensions), "a non-empty list of file extensions")


@dataclass(frozen=True)
class FeatureParams:
    """Log-mel settings. Every field except ``cache_dir`` is part of the cache key.

    Attributes
    ----------
    sample_rate
        Hz, 4000-192000; audio is resampled to this rate
    n_fft
        samples per analysis window (32 ms at 16 kHz)
    hop_length
        samples between frames (10 ms: 100 frames per second)
    fmin
        Hz
    fmax
        Hz; null = sample_rate / 2
    log_offset
        added to the power before the log, so silence stays finite
    denoise
        spectral gating (noisereduce, non-stationary) of a file before its log-mel: auto (a file of at least
        3 s whose quiet lies within denoise_range_db of its loud level: a recording over a bed of wind, rain or
        room tone) | true (every file) | false
    denoise_range_db
        denoise=auto: a file whose 95th and 10th percentile frame levels are closer than this has a bed
    denoise_min_background
        denoise=auto: ... if at least this share of its frames lies within 8 dB of its running background
        (stretches of bed between its sounds; joined sounds whose decays keep the level range small have few)
    cache_dir
        null = $XDG_CACHE_HOME/sound_cluster (or ~/.cache/sound_cluster)
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None
    log_offset: float = 1e-6
    denoise: bool | str = "auto"
    denoise_range_db: float = 30.0
    denoise_min_background: float = 0.2
    cache_dir: Path | None = None

    # What a file goes through before its log-mel, not what the encoder reads: not part of an encoder's card.
    FRONT_END = ("denoise", "denoise_range_db", "denoise_min_background")

    def check(self, prefix: str = "features") -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            positive_int(f"{prefix}.{name}", getattr(self, name))
        if not 4000 <= self.sample_rate <= 192000:  # beyond, a cache entry grows without bound for no gain
            fail(f"{prefix}.sample_rate", self.sample_rate, "between 4000 and 192000 (Hz)")
        non_negative(f"{prefix}.fmin", self.fmin, what="a number >= 0 (Hz)")
        nyquist = self.sample_rate / 2
        if self.fmax is not None:
            if isinstance(self.fmax, bool) or not isinstance(self.fmax, (int, float)):
                fail(f"{prefix}.fmax", self.fmax, "a number (Hz) or null")
            if not self.fmin < self.fmax <= nyquist:
                fail(f"{prefix}.fmax", self.fmax, f"above fmin={self.fmin} and at most sample_rate/2={nyquist}")
        elif self.fmin >= nyquist:
            fail(f"{prefix}.fmin", self.fmin, f"below sample_rate/2={nyquist}")
        positive_float(f"{prefix}.log_offset", self.log_offset)
        if self.denoise != "auto" and not isinstance(self.denoise, bool):
            fail(f"{prefix}.denoise", self.denoise, "auto, true or false")
        positive_float(f"{prefix}.denoise_range_db", self.denoise_range_db)
        if isinstance(self.denoise_min_background, bool) or not isinstance(self.denoise_min_background, (int, float)) \
                or not 0.0 <= self.denoise_min_background < 1.0:
            fail(f"{prefix}.denoise_min_background", self.denoise_min_background, "a share in [0, 1)")
        if self.hop_length > self.n_fft:
            fail(f"{prefix}.hop_length", self.hop_length, f"at most n_fft={self.n_fft} (frames would skip audio)")
        if self.n_mels > self.n_fft // 2 + 1:
            fail(f"{prefix}.n_mels", self.n_mels, f"at most n_fft/2+1={self.n_fft // 2 + 1}")

    @property
    def frame_rate_hz(self) -> float:
        """Frames per second of the log-mel output."""
        return self.sample_rate / self.hop_length

    def key_fields(self) -> dict[str, Any]:
        """The settings that change the features (everything but where they are cached)."""
        d = dataclasses.asdict(self)
        d.pop("cache_dir")
        return d

    def encoder_fields(self) -> dict[str, Any]:
        """The settings an encoder is trained for: the log-mel's (its card records them), not the front end's."""
        d = self.key_fields()
        for name in self.FRONT_END:
            d.pop(name)
        return d

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "sound_cluster"

