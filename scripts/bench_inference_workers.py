"""What the encoder's inference could gain from running in worker processes instead of the main process.

Usage: python scripts/bench_inference_workers.py [--inputs 80] [--workers 2] [--seconds 60] [--seed 0]

Runs the shipped encoder (:class:`sound_cluster.embed.inference.Posteriors`, as a fit runs it) over ``--inputs``
inputs of random log-mel frames, each ``--seconds`` long, twice: in one process whose TensorFlow uses every core
(what a fit does today), and split evenly over ``--workers`` processes running at once, each with its share of
the cores (the best that inference on a process pool or a Dask LocalCluster of that many workers could do, before
sending work and results). Each process loads the encoder and runs one input before its clock starts, so the
seconds are inference alone. Prints both and their ratio; the last line is the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _one(n_inputs: int, threads: int, frames: int, seed: int) -> float:
    """Seconds for ``n_inputs`` inputs in this process with ``threads`` TensorFlow threads."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import numpy as np

    from sound_cluster.embed.encoder import load_encoder
    from sound_cluster.embed.inference import Posteriors
    from sound_cluster.embed.shipped import SHIPPED

    run = Posteriors(load_encoder(str(SHIPPED)))
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((frames, run.encoder.input_shape[-1])).astype(np.float32) for _ in range(n_inputs)]
    run(xs[0])  # built and warm before the clock starts
    print("ready", flush=True)
    sys.stdin.readline()  # every process starts its clock together
    t0 = time.perf_counter()
    for x in xs:
        run(x)
    return time.perf_counter() - t0


def _spawn(n_inputs: int, threads: int, frames: int, seed: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--one", str(n_inputs), str(threads), str(frames), str(seed)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _start(procs: list[subprocess.Popen]) -> None:
    """Waits until every process has loaded the encoder and run its first input, then starts them together."""
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise SystemExit("a measuring process failed before it was ready")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()


def _seconds(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a measuring process failed with status {proc.returncode}")
    return float(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=80)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60.0, help="each input's length (100 frames per second)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one", type=int, nargs=4, default=None, help=argparse.SUPPRESS)  # a child: inputs threads frames seed
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(_one(*args.one)))
        return
    cores = len(os.sched_getaffinity(0))
    frames = int(args.seconds * 100)
    one = _spawn(args.inputs, cores, frames, args.seed)
    _start([one])
    serial = _seconds(one)
    share, threads = args.inputs // args.workers, max(1, cores // args.workers)
    procs = [_spawn(share, threads, frames, args.seed + 1 + w) for w in range(args.workers)]
    _start(procs)
    each = [_seconds(p) for p in procs]
    print(f"one process, {cores} threads: {serial:.2f} s for {args.inputs} inputs of {args.seconds:g} s")
    print(f"{args.workers} processes of {threads} thread(s) at once, {share} inputs each: "
          + ", ".join(f"{s:.2f}" for s in each) + " s (the slowest sets the stage)")
    print(f"workers / one process: {max(each) * args.inputs / (args.workers * share) / serial:.2f}x")


if __name__ == "__main__":
    main()
