"""How the encoder's inference alone moves a process's memory: files of many lengths, nothing kept.

Usage: python scripts/probe_inference_memory.py [--files 1500] [--min-frames 4000] [--max-frames 8192] [--seed 0]
    [--window-steps N]

Runs the shipped encoder (:class:`sound_cluster.embed.inference.Posteriors`, as a fit and ``task=apply`` run it)
over ``--files`` inputs of random log-mel frames whose lengths are drawn from ``[--min-frames, --max-frames)``
(4,000-8,192 frames: 40-82 s, one inference window), keeps none of the results, and prints every 150 inputs: the
inputs so far, how many distinct lengths they had, the process's resident memory in MB and the seconds so far.

TensorFlow keeps the oneDNN primitives it makes for each input shape in a cache of at most 1,024 entries per
thread, so a process that ran the encoder on each file's whole length grew with the number of distinct lengths
until that cache was full. The inference runs files longer than one window in windows of one length, run a few
together (:func:`sound_cluster.embed.inference.window_plan`), so the memory printed here should stay flat after
the first inputs whatever their lengths; ``--window-steps`` sets the window (shorter files run whole).
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import psutil

from sound_cluster.embed.encoder import load_encoder
from sound_cluster.embed.inference import Posteriors
from sound_cluster.embed.shipped import SHIPPED


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1500)
    ap.add_argument("--min-frames", type=int, default=4000)
    ap.add_argument("--max-frames", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window-steps", type=int, default=None, help="Posteriors' window_steps (its default if not given)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("probe_inference_memory")
    encoder = load_encoder(str(SHIPPED))
    run = Posteriors(encoder) if args.window_steps is None else Posteriors(encoder, window_steps=args.window_steps)
    rng = np.random.default_rng(args.seed)
    lengths = rng.integers(args.min_frames, args.max_frames, size=args.files)
    proc = psutil.Process()
    log.info("before any input: %.0f MB", proc.memory_info().rss / 2 ** 20)
    t0 = time.monotonic()
    for i, n in enumerate(lengths, start=1):
        run(rng.standard_normal((int(n), run.encoder.input_shape[-1])).astype(np.float32))
        if i % 150 == 0 or i == len(lengths):
            log.info("%5d inputs, %5d distinct lengths: %.0f MB, %.0f s", i, len(np.unique(lengths[:i])),
                     proc.memory_info().rss / 2 ** 20, time.monotonic() - t0)


if __name__ == "__main__":
    main()
