"""Segment boundaries of our trees against librosa's agglomerative segmentation, same run.

Usage: python scripts/bench_segments.py [--fsdd ../shared/data/fsdd] [--files 40] [--seed 0] [override ...]

Builds files by joining 4-8 digit clips of one FSDD speaker, --files with pauses of 0.05-0.3 s
between digits and --files with none, so the true boundaries are known. Runs the real pipeline
(``sound_cluster.pipeline.run``, default config plus overrides) on them, then cuts each file's
tree at the true number of segments. Scores: boundary hit-rate F-measure at 0.1 s and 0.5 s
(mir_eval.segment.detection, first and last boundary trimmed) for
  ours        the trained fold (trees/<file>.json)
  untrained   the same fold with a freshly initialised merge autoencoder
  librosa     librosa.segment.agglomerative on the same files' log-mel frames, same count
and the ratio ours / librosa.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent


def make_files(fsdd: Path, out: Path, *, n_files: int, seed: int) -> dict[str, list[tuple[float, float]]]:
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[Path]] = {}
    for p in sorted(fsdd.glob("*.wav")):
        by_speaker.setdefault(p.stem.split("_")[1], []).append(p)
    speakers = sorted(by_speaker)
    truth = {}
    for kind in ("pauses", "nopause"):
        (out / kind).mkdir(parents=True)
        for i in range(n_files):
            clips = rng.choice(by_speaker[speakers[i % len(speakers)]], size=int(rng.integers(4, 9)), replace=False)
            parts, intervals, t = [], [], 0.0
            for j, c in enumerate(clips):
                y, sr = sf.read(c, dtype="float32")
                intervals.append((t, t + len(y) / sr))
                parts.append(y)
                t += len(y) / sr
                if kind == "pauses" and j < len(clips) - 1:
                    gap = float(rng.uniform(0.05, 0.3))
                    parts.append(np.zeros(int(gap * sr), np.float32))
                    t += int(gap * sr) / sr
            # With pauses, a segment's reference span runs to the next digit's start (silence
            # belongs to the segment before it), so the reference boundaries are digit onsets.
            ref = [(intervals[j][0], intervals[j + 1][0]) for j in range(len(intervals) - 1)] + \
                  [(intervals[-1][0], t)]
            rel = f"{kind}/{i:03d}.wav"
            sf.write(out / rel, np.concatenate(parts), sr, subtype="PCM_16")
            truth[rel] = ref
    return truth


def f_measure(ref, est, window: float) -> float:
    import mir_eval

    return mir_eval.segment.detection(np.array(ref), np.array(est), window=window, trim=True)[2]


def intervals(bounds: np.ndarray, duration: float) -> list[tuple[float, float]]:
    edges = [0.0, *sorted(float(b) for b in bounds), duration]
    return list(zip(edges[:-1], edges[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fsdd", type=Path, default=HERE.parent.parent / "shared" / "data" / "fsdd")
    ap.add_argument("--files", type=int, default=40, help="files of each kind (with pauses, without)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import librosa

    from sound_cluster.cli import compose_config
    from sound_cluster.config import params_from_config
    from sound_cluster.fold import fold
    from sound_cluster.pipeline import run
    from sound_cluster.rae import MergeAutoencoder
    from sound_cluster.tree import SegmentTree, doc_cut, read_tree_json

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth = make_files(args.fsdd, tmp / "audio", n_files=args.files, seed=args.seed)
        overrides = [f"data.path={tmp / 'audio'}", f"seed={args.seed}", "output.max_plots=0", *args.overrides]
        cfg = compose_config(overrides)
        params = params_from_config(cfg)
        result = run(params, output_dir=tmp / "run", config=cfg)
        by_rel = {f.path.relative_to(tmp / "audio").as_posix(): f for f in result.features}
        untrained = MergeAutoencoder(params.model.embedding_dim, size_weighted=params.rae.size_weighted,
                                     node_vector=params.rae.node_vector)
        scores: dict[str, dict[str, list[float]]] = {}
        for rel, ref in truth.items():
            kind = rel.split("/")[0]
            k = len(ref)
            doc = read_tree_json(tmp / "run" / "trees" / f"{rel}.json")
            dur = doc["duration_s"]
            est = {"ours": intervals([s["start_s"] for s in doc_cut(doc, k)[1:]], dur)}
            with np.load(tmp / "run" / "posteriors" / f"{rel}.npz") as z:
                emb = z["embedding"]
            t = SegmentTree.from_merges(fold(emb, weights=untrained.fold_weights()), frame_rate_hz=doc["frame_rate_hz"],
                                        duration_s=dur)
            est["untrained"] = intervals(t.boundaries_s(k), dur)
            frames = np.load(by_rel[rel].cache_path)
            b = librosa.segment.agglomerative(frames.T, k=k)[1:]
            est["librosa"] = intervals(b / params.features.frame_rate_hz, dur)
            for name, e in est.items():
                for w in (0.1, 0.5):
                    scores.setdefault(f"{kind}", {}).setdefault(f"{name}@{w}", []).append(f_measure(ref, e, w))

    print(f"{args.files} files with pauses and {args.files} without, 4-8 digits each; "
          f"overrides: {args.overrides or 'none'}")
    print(f"{'files':10s} {'window':>6s} {'ours':>6s} {'untrained':>9s} {'librosa':>8s} {'ours/librosa':>12s}")
    for kind, s in scores.items():
        for w in (0.1, 0.5):
            o, u, lib = (float(np.mean(s[f"{n}@{w}"])) for n in ("ours", "untrained", "librosa"))
            print(f"{kind:10s} {w:6.1f} {o:6.3f} {u:9.3f} {lib:8.3f} {o / lib if lib else float('nan'):11.2f}x")


if __name__ == "__main__":
    main()
