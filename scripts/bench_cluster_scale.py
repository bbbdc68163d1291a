"""Clustering at archive scale: Ward's hierarchy and K chosen over hundreds of thousands to millions of units.

Usage: python scripts/bench_cluster_scale.py [--units 100000 1000000] [--dim 64] [--kinds 30] [--seed 0]

Units are synthetic (what a thousand hours of recordings would give the clustering step): ``--kinds`` Gaussian
kinds in ``--dim`` dimensions, spread as unit embeddings are, in equal shares. For each size, in a fresh process
each (so its peak resident memory is its own):

- ours: :func:`sound_cluster.embed.clusters.cluster_clips` with K chosen (``auto``, up to 64): MiniBatchKMeans
  into 4,000 centroids, Ward's hierarchy over them, the knee of the within-cluster scatter;
- baseline: scikit-learn's MiniBatchKMeans told the true K (one init, batches of 4,096), which chooses nothing.

Printed per size and method: seconds, peak resident memory (GB), K, NMI against the kinds; then our seconds and
memory as a ratio of the baseline's.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time


def _units(n: int, dim: int, kinds: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((kinds, dim)).astype(np.float32)
    labels = rng.integers(kinds, size=n)
    x = centers[labels] + np.float32(0.7) * rng.standard_normal((n, dim), dtype=np.float32)
    return x, labels


def _job(method: str, n: int, dim: int, kinds: int, seed: int, out) -> None:
    from sklearn.metrics import normalized_mutual_info_score

    x, truth = _units(n, dim, kinds, seed)
    t0 = time.perf_counter()
    if method == "ours":
        from sound_cluster.embed.clusters import cluster_clips

        got = cluster_clips(x, n_clusters="auto", max_clusters=64, seed=seed)
        labels, k = got.labels, got.k
    else:
        from sklearn.cluster import MiniBatchKMeans

        labels = MiniBatchKMeans(kinds, n_init=1, batch_size=4096, random_state=seed).fit_predict(x)
        k = kinds
    seconds = time.perf_counter() - t0
    nmi = normalized_mutual_info_score(truth, labels)
    out.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20), int(k), float(nmi)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--kinds", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    for n in args.units:
        res = {}
        for method in ("baseline", "ours"):
            q = ctx.Queue()
            p = ctx.Process(target=_job, args=(method, n, args.dim, args.kinds, args.seed, q))
            p.start()
            res[method] = q.get()
            p.join()
            s, gb, k, nmi = res[method]
            print(f"{n:>9,} units  {method:<8}  {s:7.1f} s  peak {gb:5.2f} GB  K={k:<3}  NMI {nmi:.3f}", flush=True)
        (s0, g0, _, _), (s1, g1, _, _) = res["baseline"], res["ours"]
        print(f"{n:>9,} units  ours / baseline: {s1 / s0:.2f}x the time, {g1 / g0:.2f}x the memory", flush=True)


if __name__ == "__main__":
    main()
