"""An hour of recordings end to end with segment units: wall time, peak memory, units.

Usage: python scripts/bench_hour.py DATA [--files 60] [--minutes 1.0] [--seed 0] [override ...]

DATA holds the labelled ``drums/``, ``instruments/`` and ``fsdd/`` folders (as for bench_events.py).
Builds ``--files`` recordings of ``--minutes`` each from their events (all three mixed, 0.2-0.6 s of
quiet between events), then runs ``sound-cluster`` on them as a user would (a fresh feature cache,
the default settings plus the overrides) and prints: wall time of the whole command, the seconds of
each stage (summary.json), the number of units and clusters, event NMI against the events, and the
peak resident memory of the command's process tree (sampled every 0.2 s; the main process and its
workers added up). Baseline in the same run: the same folder with ``units.kind=file``, which is what
the pipeline did before segment units.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench_archive import timed_run  # scripts/ is on the path of a script run from it
from bench_events import build

from sound_cluster.run_folder import RunFolder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()  # overrides may follow the options
    per_file = int(args.minutes * 60 / 0.92)  # events of 0.3-1.0 s plus 0.2-0.6 s of quiet: 0.92 s on average
    exe = str(Path(sys.executable).with_name("sound-cluster"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build(args.data, tmp / "audio", sets=["mix"], n_files=args.files, events=(per_file, per_file),
              seed=args.seed, variants=("pauses",))
        folder = tmp / "audio" / "mix_pauses"
        hours = sum(float(os.path.getsize(p)) for p in folder.glob("*.wav")) / (16000 * 2 * 3600)
        print(f"{args.files} recordings, {hours:.2f} h of audio (16 kHz), {per_file} events each")
        for name, extra in (("segment units (auto)", []), ("file units (baseline)", ["units.kind=file"])):
            run_dir = tmp / "runs" / name.split()[0]
            cmd = [exe, str(folder), f"data.segments={folder / 'segments.csv'}", f"features.cache_dir={run_dir}-cache",
                   f"hydra.run.dir={run_dir}", f"seed={args.seed}", *extra, *args.overrides]
            wall, peaks, rc = timed_run(cmd)
            if rc:
                print(f"{name}: failed with exit code {rc}")
                continue
            s = RunFolder(run_dir).read_summary()
            ev = s.get("event_metrics", {})
            stages = ", ".join(f"{k} {v:.1f}" for k, v in s["stage_seconds"].items() if v >= 0.5)
            print(f"{name}: {wall:.0f} s wall, peak {peaks['tree'] / 2 ** 30:.2f} GB (process tree); unit "
                  f"{s['units']['unit']}, {s['units']['n_units']} units, K={s['clusters']['n_clusters']}, event NMI "
                  f"{ev.get('nmi', float('nan')):.3f} over {ev.get('n', 0)} events\n    stage seconds: {stages}")


if __name__ == "__main__":
    main()
