"""Benchmark the features stage against a bare librosa loop measured in the same run.

Usage: python scripts/bench_features.py [--minutes 20] [--file-seconds 30] [--repeats 3]

Builds N minutes of audio by joining the bundled demo clips (resampled once to the feature
rate, so no variant pays for resampling), then prints seconds of audio per second of wall
time, best of --repeats, for:
  a  bare loop: soundfile.read + librosa.feature.melspectrogram + log, per file
  b  ours, executor=serial, cold cache (decode, checks, hash, log-mel, atomic cache write)
  c  ours, executor=process, cold cache
  d  ours, warm cache (a rerun with the same settings)
and the ratios b/a, c/a, d/a (higher is faster).
"""

from __future__ import annotations

import argparse
import functools
import logging
import shutil
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from sound_cluster.config import ExecutorParams, FeatureParams
from sound_cluster.ingest.extract import extract_features
from sound_cluster.ingest.features import FeatureCache
from sound_cluster.run.executor import map_files
from sound_cluster.run.preflight import usable_cores
from sound_cluster.run.run_dir import demo_path


def make_audio(folder: Path, *, minutes: float, file_s: float, sr: int) -> list[Path]:
    clips = [librosa.resample(sf.read(p, dtype="float32")[0], orig_sr=sf.info(p).samplerate, target_sr=sr)
             for p in sorted((demo_path() / "clips").glob("*.wav"))]
    rng = np.random.default_rng(0)
    files = []
    for i in range(int(round(minutes * 60 / file_s))):
        parts, n = [], 0
        while n < file_s * sr:
            c = clips[rng.integers(len(clips))]
            parts.append(c)
            n += len(c)
        y = np.concatenate(parts)[: int(file_s * sr)]
        path = folder / f"bench_{i:04d}.wav"
        sf.write(path, y, sr, subtype="PCM_16")
        files.append(path)
    return files


def bare_loop(files: list[Path], params: FeatureParams) -> None:
    for f in files:
        y, sr = sf.read(f, dtype="float32")
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=params.n_fft, hop_length=params.hop_length,
                                             n_mels=params.n_mels, fmin=params.fmin, fmax=params.fmax)
        np.log(mel + params.log_offset)


def ours(files: list[Path], params: FeatureParams, cache_dir: Path, kind: str) -> list:
    cache = FeatureCache(cache_dir, params=params)
    cache.prepare()
    fn = functools.partial(extract_features, cache=cache)
    return map_files(fn, files, params=ExecutorParams(kind=kind), stage="features")


def best_of(repeats: int, fn, setup=lambda: None) -> float:
    times = []
    for _ in range(repeats):
        setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--file-seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = FeatureParams()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "audio").mkdir()
        files = make_audio(tmp / "audio", minutes=args.minutes, file_s=args.file_seconds, sr=params.sample_rate)
        audio_s = sum(sf.info(f).duration for f in files)
        cache_dir = tmp / "cache"
        clear = lambda: shutil.rmtree(cache_dir, ignore_errors=True)  # noqa: E731
        bare_loop(files[:1], params)  # warm up numba and the page cache
        ours(files[:1], params, tmp / "warmup", "serial")

        t = {
            "a bare librosa loop": best_of(args.repeats, lambda: bare_loop(files, params)),
            "b ours serial, cold cache": best_of(args.repeats, lambda: ours(files, params, cache_dir, "serial"), clear),
            "c ours process, cold cache": best_of(args.repeats, lambda: ours(files, params, cache_dir, "process"),
                                                  clear),
        }
        assert all(r.cache_hit for r in ours(files, params, cache_dir, "serial"))
        t["d ours warm cache"] = best_of(args.repeats, lambda: ours(files, params, cache_dir, "serial"))

    print(f"{len(files)} files, {audio_s / 60:.1f} min of audio at {params.sample_rate} Hz, "
          f"{usable_cores()} cores, best of {args.repeats}")
    print(f"{'variant':32s} {'wall s':>8s} {'audio s / s':>12s} {'ratio to a':>11s}")
    base = audio_s / t["a bare librosa loop"]
    for name, secs in t.items():
        speed = audio_s / secs
        print(f"{name:32s} {secs:8.2f} {speed:12.0f} {speed / base:10.2f}x")


if __name__ == "__main__":
    main()
