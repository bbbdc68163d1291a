"""Clip clustering quality: ours against k-means on MFCC statistics, measured in the same run.

Usage: python scripts/bench_clustering.py [--data ../shared/data] [--sets fsdd instruments drums]
                                          [--seeds 0 1 2] [override ...]

For each labelled set (``<data>/<set>/labels.csv`` with ``filename,label``), K = the number of
labels. Ours: the default config (``conf/``, plus any Hydra-style overrides given, e.g.
``train.epochs=20``) trains an encoder on every clip and assigns each clip to the argmax of its
mean posterior. Baseline: k-means (n_init=10) on the per-clip mean and standard deviation of 20
MFCCs, standardised. Both are scored by NMI, ARI and accuracy (Hungarian matching), averaged
over the seeds; the last column is NMI ours / baseline. Also printed: training seconds per
epoch and clips per second at inference.
"""

from __future__ import annotations

import argparse
import csv
import functools
import logging
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--sets", nargs="+", default=["fsdd", "instruments", "drums"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--cache", type=Path, default=None, help="feature cache folder (default: the user cache)")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=20")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    import librosa
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    from sound_cluster.audio import load
    from sound_cluster.cli import compose_config
    from sound_cluster.clusters import assign
    from sound_cluster.config import params_from_config
    from sound_cluster.evaluate import clustering_scores
    from sound_cluster.executor import map_files
    from sound_cluster.features import FeatureCache, warm_up
    from sound_cluster.pipeline import FileFeatures, extract_features

    rows_out = []
    for name in args.sets:
        with open(args.data / name / "labels.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        k = len({r["label"] for r in rows})
        overrides = [f"model.n_clusters={k}", "executor.kind=process", *args.overrides]
        if args.cache:
            overrides.append(f"features.cache_dir={args.cache}")
        cfg = compose_config(overrides)
        params = params_from_config(cfg)
        files = [args.data / name / r["filename"] for r in rows]
        cache = FeatureCache(params.features.resolved_cache_dir(), params=params.features)
        cache.prepare()
        warm_up(params.features)
        res = map_files(functools.partial(extract_features, cache=cache), files, params=params.executor,
                        stage="features")
        keep = [i for i, r in enumerate(res) if isinstance(r, FileFeatures)]
        feats = [res[i] for i in keep]
        labels = [rows[i]["label"] for i in keep]
        skipped = len(files) - len(keep)

        # Baseline features: MFCC mean and std per clip, from the same decoded audio.
        sr = params.features.sample_rate
        stats = []
        for f in feats:
            m = librosa.feature.mfcc(y=load(f.path, sample_rate=sr), sr=sr, n_mfcc=20)
            stats.append(np.concatenate([m.mean(axis=1), m.std(axis=1)]))
        x_base = StandardScaler().fit_transform(np.array(stats))

        from sound_cluster import embedding  # TensorFlow from here on

        ours, base, per_epoch, clips_s = [], [], [], []
        for seed in args.seeds:
            km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x_base)
            base.append(clustering_scores(labels, km))
            t0 = time.perf_counter()
            enc, hist = embedding.fit_encoder([(f.cache_path, f.n_frames) for f in feats], model=params.model,
                                              train=params.train, n_mels=params.features.n_mels, seed=seed,
                                              verbose=0)
            per_epoch.append((time.perf_counter() - t0) / len(hist["loss"]))
            run = embedding.Posteriors(enc)
            t0 = time.perf_counter()
            clusters = [assign(run(np.load(f.cache_path))[1])[0] for f in feats]
            clips_s.append(len(feats) / (time.perf_counter() - t0))
            ours.append(clustering_scores(labels, clusters))
            print(f"  {name} seed {seed}: ours NMI {ours[-1]['nmi']:.3f} ({len(hist['loss'])} epochs of "
                  f"{params.train.resolved_steps_per_epoch(sum(f.n_frames for f in feats))} steps, "
                  f"{len(set(clusters))}/{k} clusters used), baseline NMI {base[-1]['nmi']:.3f}", flush=True)
        mean = lambda s, key: float(np.mean([d[key] for d in s]))  # noqa: E731
        rows_out.append((name, len(feats), skipped, k, {m: mean(ours, m) for m in ("nmi", "ari", "acc")},
                         {m: mean(base, m) for m in ("nmi", "ari", "acc")}, float(np.mean(per_epoch)),
                         float(np.mean(clips_s))))

    print(f"\nmeans over seeds {args.seeds}; overrides: {args.overrides or 'none'}")
    print(f"{'set':12s} {'clips':>5s} {'K':>3s} | {'ours NMI':>8s} {'ARI':>6s} {'ACC':>6s} | "
          f"{'base NMI':>8s} {'ARI':>6s} {'ACC':>6s} | {'NMI ratio':>9s} | {'s/epoch':>7s} {'clips/s':>7s}")
    for name, n, skipped, k, o, b, spe, cps in rows_out:
        print(f"{name:12s} {n:5d} {k:3d} | {o['nmi']:8.3f} {o['ari']:6.3f} {o['acc']:6.3f} | "
              f"{b['nmi']:8.3f} {b['ari']:6.3f} {b['acc']:6.3f} | {o['nmi'] / b['nmi']:8.2f}x | "
              f"{spe:7.1f} {cps:7.0f}" + (f"   ({skipped} clips skipped: too short or unreadable)" if skipped else ""))


if __name__ == "__main__":
    main()
