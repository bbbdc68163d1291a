"""Which clip similarity clusters a labelled folder best, without training: a probe for better clip similarities.

Usage: python scripts/probe_clip_similarity.py --data DATA [--sets fsdd instruments drums]
                                               [--max-clips 800] [--neighbours 10 20] [--seeds 0 1 2]

For each labelled set (``labels.csv`` with ``filename`` or ``path``, and ``label``; a ``speaker``
or ``kit`` column is scored too), K = the number of labels, on the same clips (a seeded sample of
``--max-clips`` where a set is larger):

  kmeans-stats   the baseline of ``bench_clustering.py``: k-means (n_init=10) on the standardised mean
                 and standard deviation of 20 MFCCs (librosa's defaults)
  spectral-stats spectral clustering of the symmetrised k-nearest-neighbour graph of those statistics
  spectral-dtw   the same graph built from dynamic time warping distances between the clips' MFCC
                 sequences (coefficients 1-19, 50 frames per second), each clip's mean removed first
                 (cepstral mean normalisation: what a clip's channel and voice add to every frame)
  spectral-dtw-raw  the same without the mean removed (coefficient 0 kept)

NMI against the label (and against the ``speaker``/``kit`` column where there is one); the
ratio is against ``kmeans-stats``. Nothing here is tuned: the neighbour counts are printed side by side.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numba
import numpy as np
from labelled import data_folder, read_labels

HERE = Path(__file__).resolve().parent


@numba.njit(cache=True)
def _dtw(a, b):
    """Length-normalised DTW cost between two sequences ``(n, d)`` and ``(m, d)`` (Euclidean frames)."""
    n, m = a.shape[0], b.shape[0]
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d = 0.0
            for k in range(a.shape[1]):
                t = a[i - 1, k] - b[j - 1, k]
                d += t * t
            acc[i, j] = np.sqrt(d) + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    return acc[n, m] / (n + m)


@numba.njit(parallel=True, cache=True)
def _all_pairs(flat, offsets):
    n = len(offsets) - 1
    out = np.zeros((n, n))
    for i in numba.prange(n):
        for j in range(i + 1, n):
            out[i, j] = _dtw(flat[offsets[i]:offsets[i + 1]], flat[offsets[j]:offsets[j + 1]])
    return out + out.T


def dtw_distances(seqs: list[np.ndarray]) -> np.ndarray:
    """Pairwise DTW distances ``(n, n)`` between sequences of frames."""
    offsets = np.r_[0, np.cumsum([len(s) for s in seqs])].astype(np.int64)
    return _all_pairs(np.ascontiguousarray(np.concatenate(seqs), dtype=np.float64), offsets)


def knn_spectral(dist: np.ndarray, *, k: int, neighbours: int, seed: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    graph = np.zeros_like(dist)
    nearest = np.argsort(dist, axis=1)[:, 1:neighbours + 1]
    graph[np.arange(len(dist))[:, None], nearest] = 1.0
    graph = np.maximum(graph, graph.T)
    return SpectralClustering(k, affinity="precomputed", random_state=seed).fit_predict(graph)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=data_folder(""), required=data_folder() is None,
                    help="the folder holding fsdd/, instruments/ and drums/, each with labels.csv; default: $SOUND_CLUSTER_DATA")
    ap.add_argument("--sets", nargs="+", default=["fsdd", "instruments", "drums"])
    ap.add_argument("--max-clips", type=int, default=800)
    ap.add_argument("--neighbours", nargs="+", type=int, default=[10, 20])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    import warnings

    import librosa
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score as nmi
    from sklearn.preprocessing import StandardScaler

    from sound_cluster.ingest.audio import load

    warnings.filterwarnings("ignore", message="Graph is not fully connected")
    sr = 16000
    for name in args.sets:
        folder = args.data / name
        rows, files = read_labels(folder)
        if len(rows) > args.max_clips:
            pick = sorted(np.random.default_rng(0).choice(len(rows), args.max_clips, replace=False))
            rows, files = [rows[i] for i in pick], [files[i] for i in pick]
        labels, other, stats, seqs_cmn, seqs_raw = [], [], [], [], []
        for r, path in zip(rows, files):
            y = load(path, sample_rate=sr)
            if len(y) < 2048:  # shorter than librosa's default window
                y = np.pad(y, (0, 2048 - len(y)))
            m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)  # (20, frames) at 31 Hz
            stats.append(np.r_[m.mean(axis=1), m.std(axis=1)])
            seq = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20, hop_length=sr // 50).T / 10.0  # (frames, 20)
            seqs_raw.append(seq)
            seqs_cmn.append((seq - seq.mean(axis=0))[:, 1:])
            labels.append(r["label"])
            other.append(r.get("speaker") or r.get("kit") or "")
        labels_a, k = np.array(labels), len(set(labels))
        x = StandardScaler().fit_transform(np.array(stats))
        dists = {"spectral-stats": np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)),
                 "spectral-dtw": dtw_distances(seqs_cmn), "spectral-dtw-raw": dtw_distances(seqs_raw)}
        results: dict[str, list[tuple[float, float]]] = {"kmeans-stats": []}
        for seed in args.seeds:
            pred = KMeans(k, n_init=10, random_state=seed).fit_predict(x)
            results["kmeans-stats"].append((nmi(labels_a, pred), nmi(other, pred)))
        for method, dist in dists.items():
            for nb in args.neighbours:
                key = f"{method} ({nb} nn)"
                results[key] = []
                for seed in args.seeds:
                    pred = knn_spectral(dist, k=k, neighbours=nb, seed=seed)
                    results[key].append((nmi(labels_a, pred), nmi(other, pred)))
        base = np.mean([v[0] for v in results["kmeans-stats"]])
        col = "speaker" if "speaker" in rows[0] else "kit" if "kit" in rows[0] else None
        print(f"\n{name}: {len(rows)} clips, K = {k}; NMI means over seeds {args.seeds}")
        print(f"{'method':28s} {'NMI':>6s} {'ratio':>6s}" + (f" {'NMI ' + col:>12s}" if col else ""))
        for key, vals in results.items():
            a = np.array(vals)
            line = f"{key:28s} {a[:, 0].mean():6.3f} {a[:, 0].mean() / base:5.2f}x"
            print(line + (f" {a[:, 1].mean():12.3f}" if col else ""))


if __name__ == "__main__":
    main()
