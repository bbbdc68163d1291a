"""Rules for the number of kinds on segment units: the knee over several ranges and classic indices.

Usage: python scripts/probe_unit_k.py RUNS

RUNS is the folder ``scripts/bench_events.py DATA --keep RUNS`` wrote (``audio/<folder>/segments.csv``
and ``runs/<folder>/auto/models/units.npz``). For every folder, each unit is labelled with the
reference event it overlaps most, and Ward's hierarchy over the unit embeddings is cut by: the knee of
the within-cluster scatter over K = 1..M for M = 32, 48, 64, 96 (``cluster_clips``), the best
silhouette (cosine), Calinski-Harabasz and Davies-Bouldin index over K = 2..39, and the largest ratio
of consecutive Ward merge heights. Prints each rule's K and, for the knees, the units' NMI at that K as
a ratio of the NMI at the true K.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from sound_cluster.run_folder import RunFolder


def main() -> None:
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    from sound_cluster.embed.clusters import cluster_clips
    from sound_cluster.outputs.evaluate import clustering_scores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path)
    args = ap.parse_args()
    print(f"{'folder':20s} {'kinds':>5s} {'units':>5s} | knee over 1..M: K (NMI / NMI at true K) "
          f"{'M=32':>11s} {'M=48':>11s} {'M=64':>11s} {'M=96':>11s} | silhouette  CH  DB  height ratio")
    for folder in sorted((args.runs / "audio").iterdir()):
        refs: dict[str, list] = {}
        with open(folder / "segments.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                refs.setdefault(r["path"], []).append((float(r["start_s"]), float(r["end_s"]), r["label"]))
        run = args.runs / "runs" / folder.name / "auto"
        rate = float(RunFolder(run).read_summary()["trees"]["leaf_rate_hz"])
        z = np.load(RunFolder(run).models.units)
        files, v = z["files"], z["vectors"].astype(np.float64)
        labels = []
        for f, s, e in zip(z["unit_file"], z["start"] / rate, z["end"] / rate):
            labels.append(max((min(e, b) - max(s, a), lab) for a, b, lab in refs[files[f]])[1])
        kinds = len(set(labels))
        true = clustering_scores(labels, cluster_clips(v, n_clusters=kinds, max_clusters=kinds).labels)["nmi"]
        knees = []
        for m in (32, 48, 64, 96):
            c = cluster_clips(v, n_clusters="auto", max_clusters=m)
            knees.append(f"{c.k:3d} ({clustering_scores(labels, c.labels)['nmi'] / true:.2f})")
        tree = linkage(v, method="ward")
        ks = range(2, min(40, len(v) - 1))
        cuts = {k: fcluster(tree, k, criterion="maxclust") for k in ks}
        sil = max(ks, key=lambda k: silhouette_score(v, cuts[k], metric="cosine"))
        ch = max(ks, key=lambda k: calinski_harabasz_score(v, cuts[k]))
        db = min(ks, key=lambda k: davies_bouldin_score(v, cuts[k]))
        h = tree[:, 2]
        ratio = max((k for k in ks if k < len(h)), key=lambda k: h[-(k - 1)] / h[-k])
        print(f"{folder.name:20s} {kinds:5d} {len(v):5d} | {'':41s}" + " ".join(knees) +
              f" | {sil:10d} {ch:3d} {db:3d} {ratio:13d}")


def json_value(path: Path, *keys: str):
    import json

    d = json.loads(path.read_text())
    for k in keys:
        d = d[k]
    return d


if __name__ == "__main__":
    main()
