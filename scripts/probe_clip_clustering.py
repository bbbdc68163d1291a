"""How the clips' embeddings are clustered, without training: layers, poolings, clustering methods and K rules.

Usage: python scripts/probe_clip_clustering.py --data DATA [--sets fsdd instruments drums]
                                               [--validation CORPUS/validation] [--init pretrained [PATH ...]]
                                               [--draws 4]

For each labelled set (``labels.csv`` as ``bench_clustering.py`` reads it) the encoder of
``--init`` (``pretrained``, or the path of a ``.keras`` encoder) embeds every clip once (the mean
of its step embeddings, made unit-length, as a fit does). With several encoders, each clip's unit
embeddings from all of them are joined (scaled to unit length: an ensemble with equal weights) and
each encoder's Ward NMI alone is printed first. Then, at K = the number of labels:

  layers    Ward's NMI on the ``embedding`` layer's steps (what a fit clusters) and the ``context``
            layer's below it (the representation before the last projection, which transfers better
            in SimCLR's experiments), each pooled over the clip's steps by their mean (what a fit
            does) and by their maximum; for a set whose labels.csv has a ``speaker`` column, the NMI
            of the same clusters against the speaker too
  methods   NMI of Ward, k-means (n_init=10), spectral clustering of the 10-nearest-neighbour graph
            and average linkage on cosine distance, over trials: the whole set and ``--draws``
            random subsets of 3, 5 and 8 of its classes; printed as the mean difference from Ward
            and how often each beats it
  K rules   over the same trials and the unions of two sets, how far the K chosen without labels is
            from the number of labels (mean |log(chosen / true)|, and the share within 25 %):
            the knee of Ward's within-cluster scatter (``model.n_clusters=auto``) and the knee of its
            logarithm

Nothing is trained or tuned here; the subsets are drawn with a fixed seed.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

import numpy as np
from labelled import data_folder, labelled_features, speakers_of

HERE = Path(__file__).resolve().parent
# How a clip's step embeddings become one vector: the mean is what a fit uses.
POOLS = {"mean": np.mean, "max": np.max}
FIT = "embedding mean"  # the representation a fit clusters


def embed_sets(sets: list[tuple[str, Path]], *, inits: list[str]
               ) -> tuple[list[dict[str, dict[str, np.ndarray]]], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each set's unit-length clip embeddings by layer and pooling from each encoder, and its labels.

    Every clip's features are read once, for all encoders: ``embeddings[i][set]["embedding mean"]``
    (also ``"embedding max"``, ``"context mean"``, ``"context max"``) is encoder ``inits[i]``'s
    ``(n_clips, dim)`` array; ``labels[set]`` holds the ``set:label`` strings and, where labels.csv
    has a speaker column, ``speakers[set]`` the speakers.
    """
    import keras

    from sound_cluster.cli import compose_config
    from sound_cluster.config import params_from_config
    from sound_cluster.embed.encoder import load_encoder
    from sound_cluster.embed.shipped import resolve_init

    params = params_from_config(compose_config(["executor.kind=process"]))
    layers = ("embedding", "context")
    bodies = []
    for init in inits:
        model = params_from_config(compose_config([f"model.init={init}"])).model
        encoder = load_encoder(str(resolve_init(model, params.features).path))
        bodies.append(keras.Model(encoder.input, {name: encoder.get_layer(name).output for name in layers}))
    embeddings: list[dict[str, dict[str, np.ndarray]]] = [{} for _ in inits]
    labels, speakers = {}, {}
    for name, folder in sets:
        feats, rows, _ = labelled_features(folder, params=params)
        pooled = [{f"{layer} {pool}": [] for layer in layers for pool in POOLS} for _ in inits]
        for f in feats:  # clips are short: one call per clip, standardised as a whole, as Posteriors does
            x = np.load(f.cache_path)[None].astype(np.float32)
            for body, into in zip(bodies, pooled):
                y = body(x, training=False)
                for layer in layers:
                    steps = np.asarray(y[layer])[0]
                    for pool, fn in POOLS.items():
                        into[f"{layer} {pool}"].append(fn(steps, axis=0))
        for into, out in zip(pooled, embeddings):
            arrays = {k: np.array(v) for k, v in into.items()}
            out[name] = {k: a / np.linalg.norm(a, axis=1, keepdims=True) for k, a in arrays.items()}
        labels[name] = np.array([f"{name}:{r['label']}" for r in rows])
        if (spk := speakers_of(rows)) is not None:
            speakers[name] = np.array(spk)
    return embeddings, labels, speakers


def ward(x: np.ndarray, k: int) -> np.ndarray:
    from scipy.cluster.hierarchy import fcluster, linkage

    return fcluster(linkage(x, "ward"), t=k, criterion="maxclust")


def methods(x: np.ndarray, k: int) -> dict[str, np.ndarray]:
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.cluster import KMeans, SpectralClustering

    return {"ward": ward(x, k),
            "kmeans": KMeans(k, n_init=10, random_state=0).fit_predict(x),
            "spectral": SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=min(10, len(x) - 1),
                                           random_state=0, assign_labels="cluster_qr").fit_predict(x),
            "average-cosine": fcluster(linkage(x, "average", metric="cosine"), t=k, criterion="maxclust")}


def k_rules(x: np.ndarray, *, max_clusters: int = 32) -> dict[str, int]:
    from sound_cluster.embed.clusters import cluster_clips, knee

    found = cluster_clips(x, n_clusters="auto", max_clusters=max_clusters)  # as model.n_clusters=auto chooses
    ks = np.array(sorted(found.scatter))
    scatter = np.array([found.scatter[k] for k in ks])
    return {"knee": found.k, "knee-log": knee(ks, np.log(np.maximum(scatter, 1e-12)))[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=data_folder(""), required=data_folder() is None,
                    help="the folder holding fsdd/, instruments/ and drums/, each with labels.csv; default: $SOUND_CLUSTER_DATA")
    ap.add_argument("--sets", nargs="*", default=["fsdd", "instruments", "drums"])
    ap.add_argument("--validation", type=Path, default=None)
    ap.add_argument("--init", nargs="+", default=["pretrained"],
                    help="encoders; with several, each clip's unit embeddings from each are joined (an ensemble)")
    ap.add_argument("--draws", type=int, default=4)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # A small class subset's neighbour graph may fall apart; spectral clustering then says so for every trial.
    warnings.filterwarnings("ignore", message="Graph is not fully connected")
    from sklearn.metrics import normalized_mutual_info_score as nmi

    sets = [(n, args.data / n) for n in args.sets] + ([(args.validation.name, args.validation)]
                                                       if args.validation else [])
    each, labels, speakers = embed_sets(sets, inits=args.init)
    if len(each) > 1:
        for init, one in zip(args.init, each):
            print(f"encoder {init} alone (Ward, K = labels): " + ", ".join(
                f"{name} {nmi(y, ward(one[name][FIT], len(set(y)))):.3f}" for name, y in labels.items()))
    # Joined unit vectors scaled by 1/sqrt(n) stay unit-length: each encoder weighs the same in Ward's distances.
    data = {name: ({rep: np.concatenate([one[name][rep] for one in each], axis=1) / np.sqrt(len(each))
                    for rep in each[0][name]}, y) for name, y in labels.items()}
    print(f"encoder: {' + '.join(args.init)}\n\nlayers and pooling (Ward, K = labels; NMI against the label, and the speaker)")
    for name, (unit, y) in data.items():
        k = len(set(y))
        found = {rep: ward(x, k) for rep, x in unit.items()}
        print(f"  {name:12s} " + "  ".join(f"{rep} {nmi(y, lab):.3f}" for rep, lab in found.items()))
        if name in speakers:
            print(f"  {'  speaker':12s} " + "  ".join(f"{rep} {nmi(speakers[name], lab):.3f}" for rep, lab in found.items()))
    rng = np.random.default_rng(0)
    trials = []
    for name, (unit, y) in data.items():
        classes = np.unique(y)
        trials.append((name, unit[FIT], y))
        for size in (3, 5, 8):
            for _ in range(args.draws if size < len(classes) else 0):
                m = np.isin(y, rng.choice(classes, size=size, replace=False))
                trials.append((name, unit[FIT][m], y[m]))
    diffs: dict[str, dict[str, list[float]]] = {}
    k_err: dict[str, list[float]] = {}
    for name, x, y in trials:
        k = len(set(y))
        found = {m: nmi(y, lab) for m, lab in methods(x, k).items()}
        for m, v in found.items():
            diffs.setdefault(m, {}).setdefault(name, []).append(v - found["ward"])
    names = list(data)
    unions = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            (xa, ya), (xb, yb) = (data[names[a]][0][FIT], data[names[a]][1]), \
                                 (data[names[b]][0][FIT], data[names[b]][1])
            unions.append((f"{names[a]}+{names[b]}", np.vstack([xa, xb]), np.concatenate([ya, yb])))
    for _, x, y in trials + unions:
        for rule, k in k_rules(x).items():
            k_err.setdefault(rule, []).append(abs(np.log(k / len(set(y)))))
    print(f"\nmethods: mean NMI difference from Ward (wins) over the whole set and {args.draws} draws of 3, 5, 8 classes")
    print(f"  {'method':15s} " + " ".join(f"{n:>22s}" for n in names))
    for m, by in diffs.items():
        print(f"  {m:15s} " + " ".join(f"{np.mean(by[n]):+8.3f} ({sum(d > 0 for d in by[n]):2d}/{len(by[n]):2d} wins)"
                                       for n in names))
    print(f"\nK rules over {len(trials) + len(unions)} trials (the above and {len(unions)} unions of two sets)")
    for rule, e in k_err.items():
        e = np.array(e)
        print(f"  {rule:9s} mean |log(chosen/true)| {e.mean():.3f}, within 25 % of the true K: {np.mean(e < np.log(1.25)):.0%}")


if __name__ == "__main__":
    main()
