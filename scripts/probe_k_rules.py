"""Rules for choosing K, the number of kinds, measured on labelled folders by one protocol written down first.

Usage::

    python scripts/probe_k_rules.py DATA --events RUNS [--work DIR] [--rules knee gap ...]

DATA is the folder holding ``fsdd/``, ``instruments/`` and ``drums/`` (each with ``labels.csv``); the
script fits each with the pipeline's defaults (``model.n_clusters=auto``; the embeddings do not depend
on K) into ``--work`` unless a run is there already. RUNS is the folder
``scripts/bench_events.py DATA --keep RUNS`` wrote: its eight folders of recordings, whose units are
segments, each labelled with the reference event it overlaps most.

Protocol (fixed before any rule was run):

- Every rule sees only what a run has: the unit embeddings of ``models/units.npz`` (unit length, as
  clustered) and Ward's hierarchy over them (``sound_cluster.embed.clusters``), and chooses K in
  1..M, M = 32 for clip folders and 64 for folders of recordings (the run's ``model.max_clusters``,
  ``units.max_clusters``). Clusters at any K are Ward's cut, as a run makes them.
- Scores per rule, over the 3 clip folders and the 8 folders of recordings: the mean relative error
  ``|K - kinds| / kinds``; how many folders land within 30 % of the kinds; and the NMI at the chosen K
  over the NMI at the true K (mean and minimum).
- Adopted: the rule with the most folders within 30 %, ties broken by the mean relative error; a rule
  whose minimum NMI ratio is below 0.9 is not adopted.

The folders: the 3 clip sets, the 8 event folders, and the bundled demo's 30 labelled clips (3 per word).

Rules: ``knee`` (Kneedle on the within-cluster scatter W(K), the rule before), ``log_knee`` (Kneedle on
log W(K)), ``adopted`` (what runs use: the log knee where the folder holds at least 4 units per candidate K,
else the knee), ``logx_knee`` (Kneedle against log K), ``knee_from2`` and
``log_knee_from2`` (the same from K = 2), ``log_knee_m64`` (log_knee over K = 1..64 for clips too),
``knee_heights`` (Kneedle on Ward's merge heights), ``knee2`` (a second knee beyond the first where the rest
still falls by a quarter), ``lmethod`` and ``lmethod_heights`` (Salvador and Chan's two-line fit on W(K) and on
the merge heights), ``gap`` (Tibshirani's gap
statistic, 8 uniform reference sets in the embeddings' principal box, Ward on each), ``stability`` (the
largest K whose mean adjusted Rand index between Ward cuts of two 80 % subsamples, on the units both
hold, is at least 0.8; 6 pairs), ``hdbscan`` (scikit-learn's HDBSCAN count on 16 principal components,
min_cluster_size = max(5, n / 100)), ``bic`` (a diagonal Gaussian mixture on 16 principal components:
the K of the lowest BIC), ``eigengap`` (the largest gap between consecutive eigenvalues of the
normalised Laplacian of a self-tuning kNN affinity, Zelnik-Manor and Perona 2004, local scale at the
7th neighbour), ``silhouette`` (cosine; K >= 2).
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from sound_cluster.run_folder import RunFolder

SETS = ("fsdd", "instruments", "drums")


def _ward(x: np.ndarray):
    from scipy.cluster.hierarchy import linkage

    return linkage(x, method="ward")


def _cut(tree, k: int) -> np.ndarray:
    from scipy.cluster.hierarchy import fcluster

    return fcluster(tree, k, criterion="maxclust") - 1


def rule_knee(x, tree, m, rng):
    from sound_cluster.embed.clusters import knee, within_scatter

    ks = np.arange(1, m + 1)
    return knee(ks, np.array([within_scatter(x, _cut(tree, int(k))) for k in ks]))[0]


def _log_w(x, tree, ks):
    from sound_cluster.embed.clusters import within_scatter

    return np.log(np.maximum([within_scatter(x, _cut(tree, int(k))) for k in ks], 1e-12))


def rule_gap(x, tree, m, rng, b=8):
    ks = np.arange(1, m + 1)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    z = (x - mean) @ vt.T
    lo, hi = z.min(axis=0), z.max(axis=0)
    refs = []
    for _ in range(b):
        r = rng.uniform(lo, hi, size=z.shape) @ vt + mean
        refs.append(_log_w(r, _ward(r), ks))
    refs = np.array(refs)
    gap = refs.mean(axis=0) - _log_w(x, tree, ks)
    s = refs.std(axis=0) * np.sqrt(1 + 1 / b)
    for i in range(len(ks) - 1):
        if gap[i] >= gap[i + 1] - s[i + 1]:
            return int(ks[i])
    return int(ks[-1])


def rule_stability(x, tree, m, rng, pairs=6, share=0.8, level=0.8):
    from sklearn.metrics import adjusted_rand_score

    n = len(x)
    scores = np.zeros(m + 1)
    for _ in range(pairs):
        a = np.sort(rng.choice(n, int(share * n), replace=False))
        b = np.sort(rng.choice(n, int(share * n), replace=False))
        both = np.intersect1d(a, b)
        ta, tb = _ward(x[a]), _ward(x[b])
        ia, ib = np.searchsorted(a, both), np.searchsorted(b, both)
        for k in range(2, m + 1):
            scores[k] += adjusted_rand_score(_cut(ta, k)[ia], _cut(tb, k)[ib]) / pairs
    ok = [k for k in range(2, m + 1) if scores[k] >= level]
    return max(ok) if ok else 1


def _pca(x, d=16):
    from sklearn.decomposition import PCA

    return PCA(min(d, x.shape[1], len(x) - 1), random_state=0).fit_transform(x)


def rule_hdbscan(x, tree, m, rng):
    from sklearn.cluster import HDBSCAN

    labels = HDBSCAN(min_cluster_size=max(5, len(x) // 100)).fit_predict(_pca(x))
    return max(1, len(set(labels) - {-1}))


def rule_bic(x, tree, m, rng):
    from sklearn.mixture import GaussianMixture

    z = _pca(x)
    bic = [GaussianMixture(k, covariance_type="diag", random_state=0, n_init=1).fit(z).bic(z) for k in range(1, m + 1)]
    return int(np.argmin(bic)) + 1


def rule_eigengap(x, tree, m, rng, neighbour=7):
    from scipy.linalg import eigh
    from scipy.spatial.distance import cdist

    d = cdist(x, x)
    sigma = np.sort(d, axis=1)[:, min(neighbour, len(x) - 1)]
    a = np.exp(-(d ** 2) / np.maximum(np.outer(sigma, sigma), 1e-12))
    np.fill_diagonal(a, 0.0)
    deg = np.maximum(a.sum(axis=1), 1e-12)
    lap = np.eye(len(x)) - a / np.sqrt(np.outer(deg, deg))
    ev = eigh(lap, eigvals_only=True, subset_by_index=[0, min(m, len(x) - 1)])
    gaps = np.diff(ev)  # gaps[k - 1]: after the k-th smallest eigenvalue
    return int(np.argmax(gaps[1:m]) + 2)


def rule_silhouette(x, tree, m, rng):
    from sklearn.metrics import silhouette_score

    ks = range(2, min(m, len(x) - 1) + 1)
    return max(ks, key=lambda k: silhouette_score(x, _cut(tree, k), metric="cosine"))


def _scatter(x, tree, ks):
    from sound_cluster.embed.clusters import within_scatter

    return np.array([within_scatter(x, _cut(tree, int(k))) for k in ks])


def _l_method(ks, v):
    """Salvador and Chan's L method: the split into two straight lines of least total squared error."""
    best, best_k = np.inf, int(ks[0])
    for c in range(2, len(ks) - 1):  # left: ks[:c], right: ks[c-1:] share the knee point
        err = 0.0
        for xs, ys in ((ks[:c], v[:c]), (ks[c - 1:], v[c - 1:])):
            fit = np.polyval(np.polyfit(xs, ys, 1), xs)
            err += len(xs) / len(ks) * np.sqrt(np.mean((ys - fit) ** 2))
        if err < best:
            best, best_k = err, int(ks[c - 1])
    return best_k


def rule_lmethod(x, tree, m, rng):
    ks = np.arange(1, m + 1)
    return _l_method(ks, _scatter(x, tree, ks))


def rule_lmethod_heights(x, tree, m, rng):
    h = tree[::-1, 2]  # h[k - 1]: the merge that leaves k clusters... from k + 1
    ks = np.arange(1, m + 1)
    return _l_method(ks, h[:m])


def _gap_below_chord(xs, v):
    x = (xs - xs[0]) / (xs[-1] - xs[0])
    return (1.0 - x) - (v - v.min()) / (v.max() - v.min())


def rule_knee_heights(x, tree, m, rng):
    h = tree[::-1, 2][: m]  # the height of the merge from k + 1 to k clusters, k = 1..m
    ks = np.arange(1, m + 1)
    return int(ks[np.argmax(_gap_below_chord(ks.astype(float), h))]) + 1


def rule_log_knee(x, tree, m, rng):
    """The knee of the log scatter over K = 1..M (K < n)."""
    ks = np.arange(1, min(m, len(x) - 1) + 1)
    v = np.log(np.maximum(_scatter(x, tree, ks), 1e-12))
    return int(ks[np.argmax(_gap_below_chord(ks.astype(float), v))])


def rule_adopted(x, tree, m, rng):
    """What runs use (``sound_cluster.embed.clusters.choose_k``): the log knee with 4 units per candidate K or
    more, else the knee of the scatter itself."""
    from sound_cluster.embed.clusters import choose_k, ward_hierarchy

    return choose_k(ward_hierarchy(x), max_clusters=m)[0]


def rule_logx_knee(x, tree, m, rng):
    ks = np.arange(1, m + 1)
    return int(ks[np.argmax(_gap_below_chord(np.log(ks), _scatter(x, tree, ks)))])


def rule_knee_logy_from2(x, tree, m, rng):
    ks = np.arange(2, m + 1)
    v = np.log(np.maximum(_scatter(x, tree, ks), 1e-12))
    return int(ks[np.argmax(_gap_below_chord(ks.astype(float), v))])


def rule_knee_from2(x, tree, m, rng):
    ks = np.arange(2, m + 1)
    v = _scatter(x, tree, ks)
    return int(ks[np.argmax(_gap_below_chord(ks.astype(float), v))])


def rule_log_knee_m64(x, tree, m, rng):
    return rule_log_knee(x, tree, 64, rng)


def rule_knee2(x, tree, m, rng):
    """The knee, then the knee of the rest of the curve when that rest still falls steeply."""
    ks = np.arange(1, m + 1)
    v = _scatter(x, tree, ks)
    k1 = int(ks[np.argmax(_gap_below_chord(ks.astype(float), v))])
    rest = ks >= k1
    if rest.sum() < 4:
        return k1
    g = _gap_below_chord(ks[rest].astype(float), v[rest])
    return int(ks[rest][np.argmax(g)]) if g.max() > 0.25 else k1


RULES: dict[str, Callable] = {
    "knee": rule_knee, "log_knee": rule_log_knee, "adopted": rule_adopted, "logx_knee": rule_logx_knee, "knee_from2": rule_knee_from2,
    "log_knee_from2": rule_knee_logy_from2, "log_knee_m64": rule_log_knee_m64, "knee_heights": rule_knee_heights,
    "knee2": rule_knee2, "lmethod": rule_lmethod, "lmethod_heights": rule_lmethod_heights, "gap": rule_gap,
    "stability": rule_stability, "hdbscan": rule_hdbscan, "bic": rule_bic, "eigengap": rule_eigengap,
    "silhouette": rule_silhouette,
}


def clip_sets(data: Path, work: Path) -> list[tuple[str, np.ndarray, list[str], int]]:
    """Fit each clip folder (once) and return (name, unit vectors, labels, M)."""
    from sound_cluster.cli import compose_config
    from sound_cluster.config import params_from_config
    from sound_cluster.outputs.references import read_labels
    from sound_cluster.run.pipeline import run

    out = []
    for name in SETS:
        run_dir = work / name
        if not RunFolder(run_dir).models.units.is_file():
            cfg = compose_config([f"data.path={data / name}", "output.report=false", "output.max_plots=0",
                                  "output.overwrite=true"])
            run(params_from_config(cfg), output_dir=run_dir, config=cfg)
        z = np.load(RunFolder(run_dir).models.units)
        labels = read_labels(data / name / "labels.csv")
        lab = [labels[str(f)] for f in z["files"][z["unit_file"]]]
        out.append((name, z["vectors"].astype(np.float64), lab, 32))
    # The bundled demo: its 30 labelled clips (labels.csv) beside its recordings.
    demo = Path(__file__).resolve().parents[1] / "sound_cluster" / "demo"
    run_dir = work / "demo"
    if not RunFolder(run_dir).models.units.is_file():
        cfg = compose_config(["output.report=false", "output.max_plots=0", "output.overwrite=true"])
        run(params_from_config(cfg), output_dir=run_dir, config=cfg)
    z = np.load(RunFolder(run_dir).models.units)
    labels = read_labels(demo / "labels.csv")
    keep = [i for i, f in enumerate(z["files"]) if str(f) in labels]
    out.append(("demo clips", z["vectors"][keep].astype(np.float64), [labels[str(z["files"][i])] for i in keep], 32))
    return out


def event_sets(runs: Path) -> list[tuple[str, np.ndarray, list[str], int]]:
    out = []
    for folder in sorted((runs / "audio").iterdir()):
        refs: dict[str, list] = {}
        with open(folder / "segments.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                refs.setdefault(r["path"], []).append((float(r["start_s"]), float(r["end_s"]), r["label"]))
        run = runs / "runs" / folder.name / "auto"
        rate = RunFolder(run).read_summary()["trees"]["leaf_rate_hz"]
        z = np.load(RunFolder(run).models.units)
        files = z["files"]
        labels = [max((min(e, b) - max(s, a), lab) for a, b, lab in refs[files[f]])[1]
                  for f, s, e in zip(z["unit_file"], z["start"] / rate, z["end"] / rate)]
        out.append((folder.name, z["vectors"].astype(np.float64), labels, 64))
    return out


def main() -> None:
    from sound_cluster.outputs.evaluate import clustering_scores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--events", type=Path, help="the folder bench_events.py --keep wrote")
    ap.add_argument("--work", type=Path, default=Path("k_rules_runs"))
    ap.add_argument("--rules", nargs="+", default=list(RULES))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sets = clip_sets(args.data, args.work) + (event_sets(args.events) if args.events else [])
    table: dict[str, list[tuple[int, int, float]]] = {r: [] for r in args.rules}
    print(f"{'folder':20s} {'kinds':>5s} {'units':>5s} " + " ".join(f"{r:>14s}" for r in args.rules))
    for name, x, labels, m in sets:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        tree = _ward(x)
        kinds = len(set(labels))
        true = clustering_scores(labels, _cut(tree, kinds))["nmi"]
        cells = []
        for r in args.rules:
            k = int(RULES[r](x, tree, m, np.random.default_rng(0)))
            ratio = clustering_scores(labels, _cut(tree, k))["nmi"] / true
            table[r].append((k, kinds, ratio))
            cells.append(f"{k:3d} ({ratio:4.2f})")
        print(f"{name:20s} {kinds:5d} {len(x):5d} " + " ".join(f"{c:>14s}" for c in cells), flush=True)
    print("\nper rule: folders within 30 % of the kinds, mean relative K error, NMI ratio mean / min")
    for r, rows in table.items():
        err = [abs(k - n) / n for k, n, _ in rows]
        ratios = [q for _, _, q in rows]
        print(f"{r:12s} {sum(e <= 0.3 for e in err):2d} of {len(rows)}  {np.mean(err):5.2f}  "
              f"{np.mean(ratios):4.2f} / {min(ratios):4.2f}")


if __name__ == "__main__":
    main()
