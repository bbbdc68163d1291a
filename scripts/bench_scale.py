"""Scale: the per-file stages under the serial, process and Dask executors, and a whole fit, on hours of audio.

Usage: python scripts/bench_scale.py --audio CORPUS/audio [--manifest CORPUS/manifest.csv] [--hours 2]
       [--max-file-s 60] [--seed 0] [--keep DIR] [override ...] [--executors serial process dask]

Takes files from ``--manifest`` (``scripts/build_corpus.py`` writes one: package, file, duration_s)
in a seeded shuffle until ``--hours`` of audio, spread over every package, and copies them into one
folder. Then, each ``sound-cluster`` in a fresh process:

1. ``task=fit`` with ``executor.kind=process`` and a fresh feature cache: the whole job, wall time
   and seconds per stage (what a user waits for, per hour of audio);
2. ``task=apply`` with the fit's models, once per executor (``serial``, ``process``, ``dask`` with a
   LocalCluster sized to the machine), each with its own fresh feature cache, so every run decodes
   and computes every file's features itself.

The fit's main process is sampled every 0.2 s for its resident memory, split as the kernel counts it:
anonymous (its own arrays, TensorFlow, the model) and file-backed (pages of mapped files: training reads
random crops from the memory-mapped feature cache, so the cache appears here, and these pages can be
dropped and read again when memory is short). ``--executors`` with no value runs the fit alone, for
measuring that memory on corpora of different sizes.

Printed: seconds per stage, files per second for the per-file stages (``features``: decode,
resample, log-mel, cache; ``fold``: fold, tree JSON, plots) and their ratio to ``serial`` measured
in the same run. Apply runs also embed every file (``assign``), which the executor does not spread.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sound_cluster.run_folder import RunFolder

log = logging.getLogger("bench_scale")
PER_FILE = ("features", "fold")


def pick_files(manifest: Path, *, hours: float, seed: int, max_file_s: float) -> list[dict]:
    """Rows of the manifest (files up to ``max_file_s`` long), shuffled and taken from each package in turn,
    until ``hours`` of audio."""
    rows = [r for r in csv.DictReader(manifest.open(encoding="utf-8")) if 0 < float(r["duration_s"]) <= max_file_s]
    rng = np.random.default_rng(seed)
    by_pkg: dict[str, list[dict]] = {}
    for r in rows:
        by_pkg.setdefault(r["package"], []).append(r)
    queues = {p: [rs[i] for i in rng.permutation(len(rs))] for p, rs in sorted(by_pkg.items())}
    out, total = [], 0.0
    while total < hours * 3600 and any(queues.values()):
        for q in queues.values():  # round robin: every package contributes, long files do not crowd out short ones
            if q and total < hours * 3600:
                r = q.pop()
                out.append(r)
                total += float(r["duration_s"])
    return out


def _memory_mb(pid: int) -> dict[str, float]:
    """The process's resident memory now, in MB: anonymous (its own heap) and file-backed (mapped files,
    such as the memory-mapped feature cache, which the kernel can drop and read again)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def run(args: list[str]) -> tuple[float, dict, dict[str, float]]:
    """One ``sound-cluster`` run in a fresh process: wall seconds, its summary, and the peaks of its main
    process's anonymous and file-backed resident memory (MB, sampled every 0.2 s)."""
    exe = Path(sys.executable).parent / "sound-cluster"
    run_dir = next(a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir="))
    t0 = time.perf_counter()
    peaks = {"RssAnon": 0.0, "RssFile": 0.0}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=err)
        while proc.poll() is None:
            for key, mb in _memory_mb(proc.pid).items():
                peaks[key] = max(peaks[key], mb)
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-3000:]
            sys.exit(f"sound-cluster {' '.join(args)} failed ({proc.returncode}):\n{tail}")
    return wall, RunFolder(Path(run_dir)).read_summary(), peaks


def cache_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.npy")) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio", type=Path, required=True, help="the corpus's audio folder (paths in the manifest are "
                                                                 "relative to its parent)")
    ap.add_argument("--manifest", type=Path, help="default: AUDIO/../manifest.csv")
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-file-s", type=float, default=60.0, help="leave out longer files (many files, not a few "
                                                                    "long ones)")
    ap.add_argument("--keep", type=Path, help="work here and keep the runs (default: a temporary folder)")
    ap.add_argument("--executors", nargs="*", default=["serial", "process", "dask"],
                    choices=["serial", "process", "dask"],
                    help="apply runs to compare (none: the fit alone, e.g. to measure its memory); "
                         "put overrides before this option or after --")
    ap.add_argument("--reuse-fit", action="store_true", help="with --keep: take the fit already in DIR/fit "
                                                               "(its time and memory are then not measured)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()  # overrides may follow the options
    if args.reuse_fit and not args.keep:
        ap.error("--reuse-fit needs --keep DIR")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest = args.manifest or args.audio.parent / "manifest.csv"

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        picked = pick_files(manifest, hours=args.hours, seed=args.seed, max_file_s=args.max_file_s)
        folder = work / "audio"
        for i, r in enumerate(picked):
            src = args.audio.parent / r["file"]
            dst = folder / r["package"] / f"{i:05d}_{src.name}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                shutil.copyfile(src, dst)
        hours = sum(float(r["duration_s"]) for r in picked) / 3600
        n_pkg = len({r["package"] for r in picked})
        log.info("%d files, %.2f h of audio from %d packages; %d cores", len(picked), hours, n_pkg, os.cpu_count())
        common = [f"data.path={folder}", "output.report=false", "output.max_plots=0", *args.overrides]

        fit_dir = work / "fit"
        if args.reuse_fit:
            fit = RunFolder(fit_dir).read_summary()
            if fit.get("status") != "complete":
                sys.exit(f"--reuse-fit: {fit_dir} holds no complete fit")
            fit_wall, fit_mem = float("nan"), {"RssAnon": float("nan"), "RssFile": float("nan")}
        else:
            shutil.rmtree(fit_dir, ignore_errors=True)
            shutil.rmtree(work / "cache_fit", ignore_errors=True)
            fit_wall, fit, fit_mem = run([*common, "task=fit", "executor.kind=process", f"hydra.run.dir={fit_dir}",
                                          f"features.cache_dir={work / 'cache_fit'}"])
        log.info("fit (process): %.0f s wall; stages %s; peak memory %s MB", fit_wall, fit["stage_seconds"], fit_mem)

        results = {}
        for kind in args.executors:
            out = work / f"apply_{kind}"
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(work / f"cache_{kind}", ignore_errors=True)
            wall, summary, _ = run([*common, "task=apply", f"models={fit_dir / 'models'}", f"executor.kind={kind}",
                                    f"hydra.run.dir={out}", f"features.cache_dir={work / f'cache_{kind}'}"])
            # A fresh cache still hits where two files of the folder hold the same audio (the fit, on its own
            # fresh cache, counts those): more hits than that mean the cache was not fresh.
            if summary["cache"].get("hits", 0) > fit["cache"].get("hits", 0):
                sys.exit(f"{kind}: the feature cache was not fresh")
            results[kind] = wall, summary
            log.info("apply (%s): %.0f s wall; stages %s", kind, wall, summary["stage_seconds"])

        n = fit["files_processed"]
        print(f"\n{n} files, {hours:.2f} h of audio ({n_pkg} packages), {os.cpu_count()} cores; "
              f"overrides: {args.overrides or 'none'}")
        print(f"fit, executor.kind=process: {fit_wall:.0f} s wall ({fit_wall / hours:.0f} s per hour of audio); "
              + ", ".join(f"{k} {v:.0f} s" for k, v in fit["stage_seconds"].items()))
        # Training reads random crops from the memory-mapped cache: the cache shows up as file-backed pages,
        # which the kernel can drop under pressure; what must fit in memory is the anonymous part.
        print(f"fit memory: feature cache {cache_mb(work / 'cache_fit'):.0f} MB on disk; peak resident "
              f"anonymous {fit_mem['RssAnon']:.0f} MB, file-backed {fit_mem['RssFile']:.0f} MB (main process)")
        base = results.get("serial")
        print(f"\n{'executor':10s} {'wall s':>7s} " + " ".join(f"{s + ' s':>10s} {s + ' files/s':>15s} {'x serial':>8s}"
                                                          for s in PER_FILE) + f" {'assign s':>8s}")
        for kind, (wall, s) in results.items():
            cells = []
            for stage in PER_FILE:
                sec = s["stage_seconds"].get(stage, float("nan"))
                ratio = base[1]["stage_seconds"][stage] / sec if base else float("nan")
                cells.append(f"{sec:10.1f} {n / sec:15.1f} {ratio:7.2f}x")
            print(f"{kind:10s} {wall:7.0f} " + " ".join(cells) + f" {s['stage_seconds'].get('assign', 0):8.1f}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
