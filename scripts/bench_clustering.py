"""Clip clustering quality: ours against k-means on MFCC statistics, measured in the same run.

Usage: python scripts/bench_clustering.py --data DATA [--sets fsdd instruments drums]
                                          [--validation CORPUS/validation] [--inits pretrained scratch]
                                          [--seeds 0 1 2] [override ...]

For each labelled set (``<data>/<set>/labels.csv`` with ``filename,label``, or ``path,label``), K =
the number of labels. ``--validation`` adds the package that ``scripts/build_corpus.py`` keeps out
of pre-training. Ours, once per ``model.init`` in ``--inits``: the default config (``conf/``, plus
any Hydra-style overrides given, e.g. ``train.epochs=20``) trains an encoder on every clip (or, with a
pretrained encoder and ``train.backbone=frozen``, takes it as it is), clusters the clips and trains the
cluster head on them as a run does (``model.n_clusters=K``), and assigns each clip to the argmax of its
mean posterior (clusters.csv). Baseline: k-means (n_init=10) on the per-clip mean and standard
deviation of 20 MFCCs, standardised. All are scored by NMI, ARI and accuracy (Hungarian matching),
averaged over the seeds; the ratio column is NMI ours / baseline. Auto K: the same encoder with
``model.n_clusters=auto`` (the knee of the within-cluster scatter over Ward's hierarchy), and the same
knee rule applied to k-means on the MFCC statistics (inertia at K = 1..max_clusters).
Where labels.csv has a ``speaker`` column (fsdd), NMI against the speaker is printed too. Also:
seconds to fit (encoder, clusters, head) and clips per second at inference.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
from labelled import data_folder, labelled_features, read_labels, speakers_of

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=data_folder(""), required=data_folder() is None,
                    help="the folder holding fsdd/, instruments/ and drums/, each with labels.csv; default: $SOUND_CLUSTER_DATA")
    ap.add_argument("--sets", nargs="*", default=["fsdd", "instruments", "drums"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--validation", type=Path, default=None, help="a labelled folder (labels.csv: path,label)")
    ap.add_argument("--inits", nargs="+", default=["pretrained", "scratch"], help="model.init values to compare")
    ap.add_argument("--cache", type=Path, default=None, help="feature cache folder (default: the user cache)")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=20")
    args = ap.parse_intermixed_args()  # overrides may follow the options
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    import librosa
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    from sound_cluster.cli import compose_config
    from sound_cluster.config import params_from_config
    from sound_cluster.embed.clusters import assign, knee
    from sound_cluster.embed.shipped import resolve_init
    from sound_cluster.ingest.audio import load
    from sound_cluster.outputs.evaluate import clustering_scores

    rows_out = []
    sets = [(name, args.data / name) for name in args.sets]
    if args.validation:
        sets.append((args.validation.name, args.validation))
    for name, folder in sets:
        rows, _ = read_labels(folder)
        k = len({r["label"] for r in rows})
        overrides = [f"model.n_clusters={k}", "executor.kind=process", "model.init=scratch", *args.overrides]
        if args.cache:
            overrides.append(f"features.cache_dir={args.cache}")
        cfg = compose_config(overrides)
        params = params_from_config(cfg)
        feats, rows, skipped = labelled_features(folder, params=params)
        labels = [r["label"] for r in rows]
        speakers = speakers_of(rows)

        # Baseline features: MFCC mean and std per clip, from the same decoded audio.
        sr = params.features.sample_rate
        stats = []
        for f in feats:
            m = librosa.feature.mfcc(y=load(f.path, sample_rate=sr), sr=sr, n_mfcc=20)
            stats.append(np.concatenate([m.mean(axis=1), m.std(axis=1)]))
        x_base = StandardScaler().fit_transform(np.array(stats))

        from sound_cluster.embed import inference  # TensorFlow from here on
        from sound_cluster.embed.backbone import fit_backbone
        from sound_cluster.embed.head import fit_clusters

        base, base_spk, base_auto = [], [], []
        for seed in args.seeds:
            km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x_base)
            base.append(clustering_scores(labels, km))
            if speakers:
                base_spk.append(clustering_scores(speakers, km)["nmi"])
            ks = np.arange(1, min(params.model.max_clusters, len(x_base)) + 1)
            inertia = [KMeans(n_clusters=int(c), n_init=4, random_state=seed).fit(x_base).inertia_ for c in ks]
            k_auto = knee(ks, inertia)[0]
            km_auto = KMeans(n_clusters=k_auto, n_init=10, random_state=seed).fit_predict(x_base)
            base_auto.append((k_auto, clustering_scores(labels, km_auto)["nmi"]))
        mean = lambda s, key: float(np.mean([d[key] for d in s]))  # noqa: E731
        base_mean = {m: mean(base, m) for m in ("nmi", "ari", "acc")}
        for init in args.inits:
            p = params_from_config(compose_config([*overrides, f"model.init={init}"]))
            ours, spk, clips_s, auto, fit_s = [], [], [], [], []
            for j, seed in enumerate(args.seeds):
                t0 = time.perf_counter()
                src = resolve_init(p.model, p.features)
                enc, hist = fit_backbone([(f.cache_path, f.n_frames) for f in feats], model=p.model,
                                         train=p.train, n_mels=p.features.n_mels, seed=seed, verbose=0,
                                         init=str(src.path) if src else None)  # as a fit makes it
                def frames(feats=feats):
                    return (np.load(f.cache_path, mmap_mode="r") for f in feats)

                final = fit_clusters(enc, frames(), model=p.model, train=p.train, seed=seed).encoder
                fit_s.append(time.perf_counter() - t0)  # encoder, clusters and head: a run's train + cluster
                run = inference.Posteriors(final)
                t0 = time.perf_counter()  # a whole pass of the encoder, as task=apply makes it
                clusters = np.array([assign(run(x)[1])[0] for x in frames()])  # as clusters.csv has them
                clips_s.append(len(feats) / (time.perf_counter() - t0))
                ours.append(clustering_scores(labels, clusters))
                p_auto = dataclasses.replace(p.model, n_clusters="auto")
                fitted = fit_clusters(enc, frames(), model=p_auto, train=p.train, seed=seed)
                run = inference.Posteriors(fitted.encoder)  # from the kept step embeddings, as a run assigns
                auto.append((fitted.clusters.k, clustering_scores(
                    labels, [assign(run.from_embeddings(e))[0] for e in fitted.step_embeddings])["nmi"]))
                if speakers:
                    spk.append(clustering_scores(speakers, clusters)["nmi"])
                print(f"  {name} {init} seed {seed}: NMI {ours[-1]['nmi']:.3f} ({len(hist.get('loss', []))} encoder epochs, "
                      f"{len(set(clusters))}/{k} clusters used), baseline NMI {base[j]['nmi']:.3f}"
                      + (f"; NMI vs speaker {spk[-1]:.3f}" if speakers else "")
                      + f"; auto K {auto[-1][0]} NMI {auto[-1][1]:.3f}, baseline auto K {base_auto[j][0]} "
                        f"NMI {base_auto[j][1]:.3f}", flush=True)
            rows_out.append((name, init, len(feats), skipped, k, {m: mean(ours, m) for m in ("nmi", "ari", "acc")},
                             base_mean, float(np.mean(fit_s)), float(np.mean(clips_s)),
                             (float(np.mean(spk)), float(np.mean(base_spk))) if speakers else None,
                             (auto, base_auto),
                             [(o["nmi"], b["nmi"]) for o, b in zip(ours, base)]))

    print(f"\nmeans over seeds {args.seeds}; overrides: {args.overrides or 'none'}")
    print(f"{'set':12s} {'init':10s} {'clips':>5s} {'K':>3s} | {'ours NMI':>8s} {'ARI':>6s} {'ACC':>6s} | "
          f"{'base NMI':>8s} {'ARI':>6s} {'ACC':>6s} | {'NMI ratio':>9s} {'wins':>4s} | {'fit s':>7s} {'clips/s':>7s}")
    for name, init, n, skipped, k, o, b, spe, cps, spk, _, per_seed in rows_out:
        wins = sum(a > c for a, c in per_seed)
        print(f"{name:12s} {init:10s} {n:5d} {k:3d} | {o['nmi']:8.3f} {o['ari']:6.3f} {o['acc']:6.3f} | "
              f"{b['nmi']:8.3f} {b['ari']:6.3f} {b['acc']:6.3f} | {o['nmi'] / b['nmi']:8.2f}x {wins:2d}/{len(per_seed)} | "
              f"{spe:7.1f} {cps:7.0f}" + (f"   ({skipped} clips skipped: too short or unreadable)" if skipped else ""))
        if spk:
            print(f"{'':12s} {'':10s} NMI against the speaker: ours {spk[0]:.3f}, baseline {spk[1]:.3f}")
    print("\nauto K (means over seeds; K error = |chosen - true| / true; NMI ratio = NMI at auto K / NMI at true K)")
    print(f"{'set':12s} {'init':10s} {'K':>3s} | {'ours K':>6s} {'K err':>6s} {'NMI':>6s} {'ratio':>6s} | "
          f"{'base K':>6s} {'K err':>6s} {'NMI':>6s} {'ratio':>6s}")
    for name, init, _n, _skipped, k, o, b, _spe, _cps, _spk, (auto, base_auto), _per_seed in rows_out:
        ka, na = np.mean([a for a, _ in auto]), np.mean([x for _, x in auto])
        kb, nb = np.mean([a for a, _ in base_auto]), np.mean([x for _, x in base_auto])
        print(f"{name:12s} {init:10s} {k:3d} | {ka:6.1f} {abs(ka - k) / k:6.0%} {na:6.3f} {na / o['nmi']:5.2f}x | "
              f"{kb:6.1f} {abs(kb - k) / k:6.0%} {nb:6.3f} {nb / b['nmi']:5.2f}x   (per seed K: ours "
              f"{[a for a, _ in auto]}, baseline {[a for a, _ in base_auto]})")
    print("per seed, ours / baseline NMI: " + "; ".join(
        f"{r[0]} {r[1]}: " + ", ".join(f"{a:.3f}/{c:.3f}" for a, c in r[-1]) for r in rows_out))


if __name__ == "__main__":
    main()
