"""Where the main process's memory grows with the hours: its resident memory at each step of a run.

Usage: python scripts/probe_memory.py DATA [--hours 1 2] [--seed 0] [--trace] [override ...]

DATA holds the labelled ``drums/``, ``instruments/`` and ``fsdd/`` folders (as for bench_events.py).
Builds the folders of one-minute recordings that ``bench_archive.py`` builds, runs the pipeline on each in a
fresh process of its own (``sound_cluster.cluster``, a fresh feature cache, no report and no plots, the default
settings plus the overrides), and records the process's resident memory at the log lines that end its steps
(:data:`STEPS`) and the most it held during each step (the kernel's high-water mark, set back at each step).
Prints both for each step at every number of hours, and their growth in MB per hour. ``--trace``: also the bytes
still held at the end of each step that sound_cluster's own lines allocated (``tracemalloc``, the most recent frame
in the package: arrays made there, not what the libraries it calls keep for themselves); the runs take about 3x as
long, and the resident tables then include tracemalloc's own memory (compare them only between runs without it).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_archive import hour_folders  # scripts/ is on the path of a script run from it

STEPS = {  # the log line that ends a step -> the step's name
    "encoder keeps": "features made, encoder built",
    "units: segment": "step embeddings and fold inputs of every file",
    "merge autoencoder: split cost": "merge autoencoder trained",
    "units: ": "units cut",
    "training the cluster head": "units clustered, K chosen",
    "clusters: K=": "cluster head trained, posteriors written",
    "segments: ": "trees and segments written",
}


def _high_water() -> int:
    """This process's resident high-water mark in bytes (the kernel's ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _reset_high_water() -> None:
    """Sets the high-water mark back to the resident memory now (``clear_refs`` 5, Linux 4.0 and later)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _held_by_package() -> int:
    """Bytes alive now whose allocation's most recent frame lies in sound_cluster's code (``tracemalloc``)."""
    import tracemalloc

    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/sound_cluster/*")])
    return sum(s.size for s in snap.statistics("filename"))


class StepMemory(logging.Handler):
    """Resident bytes of this process at the first log line of each step in :data:`STEPS`, and the most it held
    during each step: the kernel's high-water mark, set back at the start of each step, so a transient between
    two samples counts (a step's transient peak is what sets a run's peak)."""

    def __init__(self, *, trace: bool = False) -> None:
        super().__init__()
        self.at: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.held: dict[str, int] = {}  # --trace: what the package's own lines hold (_held_by_package)
        self.trace = trace
        _reset_high_water()

    def emit(self, record: logging.LogRecord) -> None:
        import psutil

        msg = record.getMessage()
        for start, name in STEPS.items():
            if msg.startswith(start) and name not in self.at:
                self.at[name] = psutil.Process().memory_info().rss
                self.peak[name] = _high_water()
                if self.trace:
                    self.held[name] = _held_by_package()
                _reset_high_water()
                return


def measure(folder: Path, cache: Path, out: Path, overrides: list[str], *,
            trace: bool = False) -> dict[str, dict[str, int]]:
    """One run on ``folder`` in this process; resident bytes at the end of each step (``at``), the most during
    it (``peak``) and, with ``trace``, what the package's own lines hold then (``held``)."""
    import tracemalloc

    import sound_cluster

    if trace:
        tracemalloc.start()
    handler = StepMemory(trace=trace)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    sound_cluster.cluster(folder, "output.report=false", "output.max_plots=0", f"features.cache_dir={cache}",
                          *overrides, output_dir=out, log=False)
    return {"at": handler.at, "peak": handler.peak, "held": handler.held}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--hours", type=float, nargs="+", default=[1, 2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trace", action="store_true", help="also what sound_cluster's own lines hold (tracemalloc)")
    ap.add_argument("--one", type=Path, default=None, help=argparse.SUPPRESS)  # a child: one run, JSON out
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()  # overrides may follow the options
    if args.one is not None:
        print(json.dumps(measure(args.one, args.one.with_name(args.one.name + "-cache"),
                                 args.one.with_name(args.one.name + "-run"), args.overrides, trace=args.trace)))
        return
    rows: dict[float, dict[str, dict[str, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for hours, folder in hour_folders(args.data, Path(tmp), hours=args.hours, seed=args.seed).items():
            # Each run in a fresh process, so one run's memory does not carry into the next.
            proc = subprocess.run([sys.executable, __file__, "--one", str(folder), *(["--trace"] if args.trace else []),
                                   str(args.data), f"seed={args.seed}", *args.overrides], capture_output=True, text=True,
                                  check=True)
            rows[hours] = json.loads(proc.stdout.strip().splitlines()[-1])
    hours = sorted(rows)
    tables = [("at", "resident MB at the end of each step"), ("peak", "resident MB the most during each step")]
    if args.trace:
        tables.append(("held", "MB that sound_cluster's own lines allocated, still held at the end of each step"))
    for key, what in tables:
        print(f"main process, {what}: " + "  ".join(f"{h:g} h" for h in hours) + "  (growth MB per hour)")
        for name in STEPS.values():
            mb = [rows[h][key].get(name, float("nan")) / 2 ** 20 for h in hours]
            slope = np.polyfit(hours, mb, 1)[0] if len(hours) >= 2 else float("nan")
            print(f"  {name:45s} " + "  ".join(f"{m:6.0f}" for m in mb) + f"  ({slope:+.1f})")


if __name__ == "__main__":
    main()
