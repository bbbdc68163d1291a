"""Speed of the fold against librosa's agglomerative segmentation and the seed's Keras loop.

Usage: python scripts/bench_fold.py [--sizes 1000 10000 100000 360000] [--dim 64] [--skip-seed]
                                   [--batch 64] [--batch-leaves 250 1000] [--skip-lockstep]

For each n: seconds for our adjacent fold (compiled, heap; first call's compilation excluded)
and for ``librosa.segment.agglomerative(frames, k=n // 100)`` on the same frames (leaves of
width --dim, random). librosa is skipped at larger n once one size has taken over 120 s.
Then the seed-style any-pair loop (one Keras call per candidate pair, every pair of current nodes
rescored at every step) at n = 16 and 32, against our folds on the same leaves. Ratios are
librosa / ours and seed / ours (higher: ours faster).
Then the batched lockstep fold (``segment.fold_device=gpu``, :mod:`sound_cluster.segment.lockstep`) on
--batch files of --batch-leaves leaves each, against the heap fold of the same files one after
another, on whatever device the Keras backend picks (TensorFlow on this machine's CPU; with
``KERAS_BACKEND=jax`` on a GPU machine); the first call, which compiles, is timed apart.
Ratio: heap / lockstep (above 1: the batched fold is faster).
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from sound_cluster.segment.fold import FoldWeights, fold


def random_weights(d: int, seed: int = 0) -> FoldWeights:
    """Random weights with the default fold settings (unweighted reconstruction, mean nodes, Ward's factor)."""
    rng = np.random.default_rng(seed)
    s = 1 / np.sqrt(2 * d)
    return FoldWeights((rng.standard_normal((2 * d, d)) * s).astype(np.float32), np.zeros(d, np.float32),
                       (rng.standard_normal((d, 2 * d)) * s).astype(np.float32), np.zeros(2 * d, np.float32),
                       size_weighted=False, node_vector="mean", linkage="ward")


def seed_style(x: np.ndarray, model) -> float:
    """The seed's rule: at every step score every pair of current nodes with one Keras call each."""
    nodes = [v for v in x]
    t0 = time.perf_counter()
    while len(nodes) > 1:
        best = None
        for i, j in itertools.combinations(range(len(nodes)), 2):
            pair = np.concatenate([nodes[i], nodes[j]])[None].astype(np.float32)
            rec = np.asarray(model(pair))[0]
            err = float(((rec - pair[0]) ** 2).sum())
            if best is None or err < best[0]:
                best = (err, i, j, pair)
        _, i, j, pair = best
        code = np.asarray(model.encode(pair))[0]
        nodes = [n for k, n in enumerate(nodes) if k not in (i, j)] + [code]
    return time.perf_counter() - t0


def lockstep(w: FoldWeights, rng: np.random.Generator, *, batch: int, sizes: list[int]) -> None:
    """The batched fold against the heap fold on the same files; checks the merges agree."""
    import keras

    from sound_cluster.segment.lockstep import fold_lockstep

    print(f"\nlockstep fold of {batch} files at once ({keras.backend.backend()} backend) against the heap fold")
    print(f"{'leaves':>8s} {'heap s':>9s} {'lockstep s':>11s} {'first call':>11s} {'ratio':>7s} {'same merges':>12s}")
    for n in sizes:
        xs = [rng.standard_normal((n, w.dim)).astype(np.float32) for _ in range(batch)]
        t0 = time.perf_counter()
        heap = [fold(x, weights=w) for x in xs]
        heap_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        fold_lockstep(xs, weights=w)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = fold_lockstep(xs, weights=w)
        lock_s = time.perf_counter() - t0
        same = sum(np.array_equal(a.left, b.left) and np.array_equal(a.right, b.right) for a, b in zip(got, heap))
        print(f"{n:8d} {heap_s:9.3f} {lock_s:11.3f} {first:11.3f} {heap_s / lock_s:6.2f}x {same:5d}/{batch}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000, 100000, 360000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--skip-seed", action="store_true")
    ap.add_argument("--batch", type=int, default=64, help="files per lockstep batch")
    ap.add_argument("--batch-leaves", nargs="+", type=int, default=[250, 1000], help="leaves per file")
    ap.add_argument("--skip-lockstep", action="store_true")
    args = ap.parse_args()
    import librosa

    w = random_weights(args.dim)
    rng = np.random.default_rng(0)
    fold(rng.standard_normal((10, args.dim)), weights=w)  # compile (or load numba's cache) outside the timing
    print(f"leaves of width {args.dim}; seconds (ratio = other / ours)")
    print(f"{'n':>8s} {'ours':>9s} {'librosa':>9s} {'ratio':>7s}")
    librosa_ok = True
    for n in args.sizes:
        x = rng.standard_normal((n, args.dim)).astype(np.float32)
        t0 = time.perf_counter()
        m = fold(x, weights=w)
        ours = time.perf_counter() - t0
        assert m.n_leaves == n
        lib = float("nan")
        if librosa_ok:
            t0 = time.perf_counter()
            librosa.segment.agglomerative(x.T, k=max(2, n // 100))
            lib = time.perf_counter() - t0
            librosa_ok = lib < 120
        print(f"{n:8d} {ours:9.3f} {lib:9.3f} {lib / ours:6.1f}x"
              + ("" if lib == lib else "   (librosa skipped: the previous size took over 120 s)"), flush=True)

    if not args.skip_lockstep:
        lockstep(w, rng, batch=args.batch, sizes=args.batch_leaves)
    if args.skip_seed:
        return
    from sound_cluster.segment.merge_model import MergeAutoencoder

    model = MergeAutoencoder(args.dim, size_weighted=False, node_vector="mean", linkage="ward")
    print(f"\n{'n':>8s} {'seed loop':>10s} {'ours any':>9s} {'ours adj':>9s} {'seed/any':>9s} {'seed/adj':>9s}")
    for n in (16, 32):
        x = rng.standard_normal((n, args.dim)).astype(np.float32)
        seed_s = seed_style(x, model)
        wts = model.fold_weights()
        fold(x, weights=wts, pairing="any")
        t0 = time.perf_counter()
        fold(x, weights=wts, pairing="any")
        any_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        fold(x, weights=wts)
        adj_s = time.perf_counter() - t0
        print(f"{n:8d} {seed_s:10.2f} {any_s:9.4f} {adj_s:9.5f} {seed_s / any_s:8.0f}x {seed_s / adj_s:8.0f}x",
              flush=True)


if __name__ == "__main__":
    main()
