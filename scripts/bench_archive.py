"""Archives: how the main process's and a worker's memory, and each stage's time, grow with the hours.

Usage: python scripts/bench_archive.py DATA [--hours 1 4 16] [--executors process dask] [--apply] [--again]
    [--seed 0] [override ...]

DATA holds the labelled ``drums/``, ``instruments/`` and ``fsdd/`` folders (as for bench_events.py).
For each number of hours, builds a folder of one-minute recordings from their events (all three mixed,
0.2-0.6 s of quiet between events; the folder of the smaller hours is the start of the larger one),
then runs ``sound-cluster`` on it as a user would (a fresh feature cache, no report and no plots, the
default settings plus the overrides) under each executor: ``process`` (the process pool) and ``dask``
(a LocalCluster of the machine's cores). Prints per run: hours, files, units, the main process's peak
resident memory and the largest of one worker process's (high-water marks: ``VmHWM``), the whole process tree's
peak (sampled every 0.2 s), and seconds per
hour of audio of each stage (summary.json); the last lines give, per executor, the main process's growth
in MB per hour of recordings (least squares over the hours). ``--apply``: also ``task=apply`` of the models of
the smallest folder's fit on every folder (executor ``apply``), the way to take an archive too large for one fit.
When several executors run, a line per executor after the first gives its embed and assign stages' seconds per hour
against the first's, per size (where the encoder runs: ``executor.inference``, e.g. ``auto`` puts it on the workers
under dask only). ``--again``: each fit once more on the same feature cache (executor ``again``), as a run started again after an
interruption or a second run over the same folder; the last lines compare its embed stage and wall time with the
first fit's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from bench_events import build  # scripts/ is on the path of a script run from it

from sound_cluster.run_folder import RunFolder


def high_water(proc) -> int:
    """The most resident bytes a process has held so far (the kernel's ``VmHWM``, which no short peak between two
    samples escapes); its resident bytes now where the system does not report it."""
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return proc.memory_info().rss


def sample_peaks(proc: subprocess.Popen, period_s: float = 0.2) -> dict[str, int]:
    """Peak resident bytes of the main process, of any one descendant (each its own high-water mark), and of the
    whole tree (the sum of their resident bytes at the same sample), until it exits."""
    import psutil

    peaks = {"main": 0, "worker": 0, "tree": 0}
    main = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            m, m_high = main.memory_info().rss, high_water(main)
            kids, kids_high = [], []
            for q in main.children(recursive=True):
                try:
                    kids.append(q.memory_info().rss)
                    kids_high.append(high_water(q))
                except psutil.Error:
                    pass
        except psutil.Error:
            break
        peaks["main"] = max(peaks["main"], m_high)
        peaks["worker"] = max(peaks["worker"], max(kids_high, default=0))
        peaks["tree"] = max(peaks["tree"], m + sum(kids))
        time.sleep(period_s)
    return peaks


def timed_run(args: list[str]) -> tuple[float, dict[str, int], int]:
    """Wall seconds, peak resident bytes (main, one worker, tree), exit code."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out: dict[str, dict[str, int]] = {}
    t = threading.Thread(target=lambda: out.setdefault("peaks", sample_peaks(proc)), daemon=True)
    t.start()
    _, err = proc.communicate()
    t.join()
    if proc.returncode:
        print(err[-3000:], file=sys.stderr)
    return time.perf_counter() - t0, out.get("peaks", {"main": 0, "worker": 0, "tree": 0}), proc.returncode


PER_FILE = int(60 / 0.92)  # events per one-minute file: 0.3-1.0 s each plus 0.2-0.6 s of quiet, 0.92 s on average


def hour_folders(data: Path, out: Path, *, hours: list[float], seed: int) -> dict[float, Path]:
    """A folder of one-minute recordings (mixed events with quiet between) for each number of ``hours`` under ``out``;
    the smaller folders hold the first files of the larger (hard links, built once)."""
    build(data, out / "audio", sets=["mix"], n_files=int(round(max(hours) * 60)), events=(PER_FILE, PER_FILE),
          seed=seed, variants=("pauses",))
    everything = sorted((out / "audio" / "mix_pauses").glob("*.wav"))
    folders = {}
    for h in sorted(hours):
        folders[h] = out / f"h{h:g}"
        folders[h].mkdir()
        for p in everything[: int(round(h * 60))]:
            os.link(p, folders[h] / p.name)
    return folders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--hours", type=float, nargs="+", default=[1, 4, 16])
    ap.add_argument("--executors", nargs="+", default=["process", "dask"], choices=["serial", "process", "dask"])
    ap.add_argument("--apply", action="store_true", help="also apply the smallest folder's models to every folder")
    ap.add_argument("--again", action="store_true", help="run each fit again on the same feature cache")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()  # overrides may follow the options
    exe = str(Path(sys.executable).with_name("sound-cluster"))
    kinds = [*args.executors, *(["again"] if args.again else []), *(["apply"] if args.apply else [])]
    growth: dict[str, list[tuple[float, float]]] = {e: [] for e in kinds}
    seconds: dict[str, list[tuple[float, float]]] = {args.executors[0]: [], "again": []}
    inference: dict[str, list[float]] = {e: [] for e in args.executors}  # embed and assign seconds per hour, per size
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = hour_folders(args.data, tmp, hours=args.hours, seed=args.seed)
        print("hours  files  units  executor  main GB  worker GB  tree GB  wall s  stage seconds per hour of audio")
        for hours, folder in folders.items():
            audio_h = sum(os.path.getsize(p) for p in folder.glob("*.wav")) / (16000 * 2 * 3600)
            for kind in kinds:
                run_dir = tmp / "runs" / f"h{hours:g}-{kind}"
                task = [f"executor.kind={kind}"]
                if kind == "again":  # the first executor's fit again, on its feature cache
                    task = [f"executor.kind={args.executors[0]}"]
                    cache = tmp / "runs" / f"h{hours:g}-{args.executors[0]}-cache"
                else:
                    cache = Path(f"{run_dir}-cache")
                if kind == "apply":
                    first = tmp / "runs" / f"h{min(args.hours):g}-{args.executors[0]}" / "models"
                    task = ["task=apply", f"models={first}", f"executor.kind={args.executors[0]}"]
                cmd = [exe, str(folder), *task, f"features.cache_dir={cache}",
                       f"hydra.run.dir={run_dir}", f"seed={args.seed}", "output.report=false", "output.max_plots=0",
                       *args.overrides]
                wall, peaks, rc = timed_run(cmd)
                if rc:
                    print(f"{hours:g} h, {kind}: failed with exit code {rc}")
                    continue
                s = RunFolder(run_dir).read_summary()
                stages = ", ".join(f"{k} {v / audio_h:.1f}" for k, v in s["stage_seconds"].items() if v >= 0.5)
                units = s["units"].get("n_units")  # task=apply clusters none
                print(f"{audio_h:5.2f}  {s['files_processed']:5d}  {'-' if units is None else units:>5}  {kind:8s}  "
                      f"{peaks['main'] / 2 ** 30:7.2f}  {peaks['worker'] / 2 ** 30:9.2f}  {peaks['tree'] / 2 ** 30:7.2f}  "
                      f"{wall:6.0f}  {stages}", flush=True)
                growth[kind].append((audio_h, peaks["main"] / 2 ** 20))
                if kind in (args.executors[0], "again"):
                    seconds[kind].append((s["stage_seconds"].get("embed", 0.0), wall))
                if kind in args.executors:
                    inference[kind].append(sum(s["stage_seconds"].get(k, 0.0) for k in ("embed", "assign")) / audio_h)
    for kind, points in growth.items():
        if len(points) >= 2:
            h, mb = np.array(points).T
            slope = np.polyfit(h, mb, 1)[0]
            print(f"{kind}: the main process grows by {slope:.0f} MB per hour of recordings "
                  f"({h.min():.2f} to {h.max():.2f} h)")
    base = args.executors[0]
    for kind in args.executors[1:]:
        if inference[kind] and len(inference[kind]) == len(inference[base]):
            ratios = ", ".join(f"{a / max(b, 1e-9):.2f}x" for a, b in zip(inference[kind], inference[base]))
            print(f"{kind}: embed and assign stages' seconds per hour against {base}'s: {ratios} (per size)")
    if seconds["again"]:
        (e1, w1), (e2, w2) = (np.sum(seconds[k], axis=0) for k in (args.executors[0], "again"))
        print(f"again: embed stage {e2:.1f} s against {e1:.1f} s the first time ({e2 / max(e1, 1e-9):.2f}x), "
              f"wall {w2:.0f} s against {w1:.0f} s ({w2 / w1:.2f}x), all sizes together")


if __name__ == "__main__":
    main()
