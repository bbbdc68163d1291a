"""Speed of the fold against librosa's agglomerative segmentation and the seed's Keras loop.

Usage: python scripts/bench_fold.py [--sizes 1000 10000 100000 360000] [--dim 64] [--skip-seed]

For each n: seconds for our adjacent fold (compiled, heap; first call's compilation excluded)
and for ``librosa.segment.agglomerative(frames, k=n // 100)`` on the same frames (leaves of
width --dim, random). librosa is skipped at larger n once one size has taken over 120 s.
Then the seed-style any-pair loop (one Keras call per candidate pair, every pair of current nodes
rescored at every step) at n = 16 and 32, against our folds on the same leaves. Ratios are
librosa / ours and seed / ours (higher: ours faster).
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from sound_cluster.fold import FoldWeights, fold


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000, 100000, 360000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--skip-seed", action="store_true")
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

    if args.skip_seed:
        return
    from sound_cluster.rae import MergeAutoencoder

    model = MergeAutoencoder(args.dim)
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
