"""Long recordings: wall time per stage and peak memory of a whole run on one file of 10, 30 and 60 minutes.

Usage: python scripts/bench_long.py [--minutes 10 30 60] [--keep DIR] [override ...]

Each length is one WAV (16 kHz, mono, 16-bit) made by joining the demo's clips with pauses and a
little noise, written block by block. Each run is ``sound-cluster`` in a fresh process with the
given overrides (default: ``train.epochs=2 segment.epochs=2``: fewer epochs change the time, not the
memory, which inference, features and the fold set); its peak resident memory comes from
``getrusage(RUSAGE_CHILDREN)`` of that process alone. Printed: seconds per stage from the run's
summary.json, peak RSS, and the slope of the peak against the audio's length next to the size of
the audio itself as float32 at 16 kHz (the reference: memory that grew with the file would grow at
least that fast).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sound_cluster.run_folder import RunFolder

HERE = Path(__file__).resolve().parent
SR = 16000


def make_long_wav(path: Path, *, minutes: float, seed: int = 0) -> None:
    """The demo's clips joined end to end with 0.2-1.5 s pauses and noise at -50 dBFS, written in blocks."""
    import soundfile as sf

    from sound_cluster.ingest.audio import load

    clips = [load(p, sample_rate=SR) for p in sorted((HERE.parent / "sound_cluster" / "demo" / "clips").glob("*.wav"))]
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * SR)
    written = 0
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, subtype="PCM_16") as fh:
        while written < total:
            y = np.concatenate([np.zeros(int(rng.uniform(0.2, 1.5) * SR), np.float32), clips[rng.integers(len(clips))]])
            y = (y + 0.003 * rng.standard_normal(y.size)).astype(np.float32)[: total - written]
            fh.write(y)
            written += y.size


def run_one(audio_dir: Path, run_dir: Path, overrides: list[str]) -> tuple[float, float, dict]:
    """One run in a fresh process: wall seconds, its peak RSS in MB, and its summary."""
    exe = Path(sys.executable).parent / "sound-cluster"
    t0 = time.perf_counter()
    # A fresh wrapper per run: RUSAGE_CHILDREN keeps the largest child ever waited for, so each run
    # is measured by a python child that reports its own child's peak.
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    proc = subprocess.run([sys.executable, "-c", code, str(exe), f"data.path={audio_dir}", f"hydra.run.dir={run_dir}",
                           "executor.kind=serial", *overrides], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak_kb = int(proc.stdout.strip().splitlines()[-1])
    return wall, peak_kb / 1024, RunFolder(run_dir).read_summary()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", nargs="+", type=float, default=[10, 30, 60])
    ap.add_argument("--keep", type=Path, default=None, help="write the audio and runs here (default: a temp dir)")
    ap.add_argument("overrides", nargs="*", default=["train.epochs=2", "segment.epochs=2"])
    args = ap.parse_intermixed_args()  # overrides may follow the options
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_long_"))
    rows = []
    for minutes in args.minutes:
        audio = work / f"audio_{minutes:g}min"
        audio.mkdir(parents=True, exist_ok=True)
        wav = audio / f"long_{minutes:g}min.wav"
        if not wav.exists():
            make_long_wav(wav, minutes=minutes)
        run_dir = work / f"run_{minutes:g}min_{os.getpid()}"
        wall, peak_mb, summary = run_one(audio, run_dir, [f"features.cache_dir={work / 'cache'}", *args.overrides])
        stages = summary["stage_seconds"]
        rows.append((minutes, wall, peak_mb, stages))
        print(f"{minutes:5.0f} min: {wall:7.1f} s wall, peak RSS {peak_mb:7.0f} MB; stages (s): "
              + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()), flush=True)
    print(f"\noverrides: {args.overrides}")
    print(f"{'minutes':>7s} {'wall s':>8s} {'peak MB':>8s} | " + " ".join(f"{k:>9s}" for k in rows[0][3]))
    for minutes, wall, peak, stages in rows:
        print(f"{minutes:7.0f} {wall:8.1f} {peak:8.0f} | " + " ".join(f"{stages.get(k, 0):9.1f}" for k in rows[0][3]))
    if len(rows) > 1:
        (m0, _, p0, _), (m1, _, p1, _) = rows[0], rows[-1]
        slope = (p1 - p0) / (m1 - m0)
        audio_mb = SR * 4 * 60 / 2**20
        print(f"peak RSS grows {slope:.1f} MB per minute of audio between {m0:g} and {m1:g} minutes; the audio "
              f"itself is {audio_mb:.2f} MB per minute as float32 at 16 kHz (ratio {slope / audio_mb:.2f}x)")


if __name__ == "__main__":
    main()
