"""Re-clustering a finished run (``task=recluster``) against a fresh fit at the same K: seconds and equality.

Usage::

    python scripts/bench_recluster.py DATA/fsdd [--k 12] [--work DIR]

Runs the command line three times on the folder (default: 2,000 spoken digits, ``DATA/fsdd``): a fit with
K chosen, ``task=recluster`` of that run at ``--k``, and a fresh fit at ``--k``; each with the feature
cache warm (the first fit warms it). Prints each command's wall time, the recluster's stage seconds with
and without the fold, the ratio of the recluster's wall time to the fresh fit's, and whether
clusters.csv and every tree of the recluster equal the fresh fit's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from soak import same_outputs  # scripts/ is on the path when a script runs

from sound_cluster.run_folder import RunFolder


def _cli(*args: str) -> float:
    exe = str(Path(sys.executable).with_name("sound-cluster"))
    t0 = time.perf_counter()
    proc = subprocess.run([exe, *args, "output.report=false", "output.max_plots=0"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"sound-cluster {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--work", type=Path, default=Path("bench_recluster_runs"))
    args = ap.parse_args()
    work = args.work.resolve()
    fit, again, fresh = work / "fit", work / f"recluster_{args.k}", work / f"fit_{args.k}"
    common = ["output.overwrite=true"]
    _cli(str(args.folder), f"hydra.run.dir={fit}", *common)  # warms the cache
    t_fit = _cli(str(args.folder), f"hydra.run.dir={fit}", *common)
    t_re = _cli("task=recluster", f"run={fit}", f"model.n_clusters={args.k}", f"hydra.run.dir={again}", *common)
    t_fresh = _cli(str(args.folder), f"model.n_clusters={args.k}", f"hydra.run.dir={fresh}", *common)
    s = RunFolder(again).read_summary()
    stages = s["stage_seconds"]
    no_fold = sum(v for k, v in stages.items() if k != "fold")
    k_auto = RunFolder(fit).read_summary()["clusters"]["n_clusters"]
    print(f"{s['files_processed']} files; fit with K chosen ({k_auto}): {t_fit:.1f} s")
    print(f"recluster at K={args.k}: {t_re:.1f} s wall (stages {sum(stages.values()):.1f} s, without the fold "
          f"{no_fold:.1f} s: {', '.join(f'{k} {v:.1f}' for k, v in stages.items())})")
    print(f"fresh fit at K={args.k}: {t_fresh:.1f} s; recluster / fresh fit: {t_re / t_fresh:.2f}")
    print(f"recluster outputs equal the fresh fit's (clusters.csv and every tree): {'yes' if same_outputs(again, fresh) else 'no'}")


if __name__ == "__main__":
    main()
