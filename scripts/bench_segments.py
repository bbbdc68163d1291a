"""Segment boundaries of our trees against librosa's agglomerative segmentation, same run.

Usage: python scripts/bench_segments.py --fsdd FSDD [--files 40] [--seed 0] [override ...]

Builds files by joining 4-8 digit clips of one FSDD speaker: --files with pauses of 0.05-0.3 s
between digits, --files with none, and --files "noisy": the files with pauses mixed with
synthesized noise (white noise through a one-pole low-pass, a rumble-and-hiss mix) at 10 dB SNR,
so the true boundaries are known. Runs the real pipeline (``sound_cluster.run.pipeline.run``,
default config plus overrides) on them, then cuts each file's tree at the true number of
segments. Scores: boundary hit-rate F-measure at 0.1 s and 0.5 s (mir_eval.segment.detection,
first and last boundary trimmed) for
  ours        the trained fold (trees/<file>.json, boundaries as written: refined to onsets)
  grid        the same trees with boundaries on the encoder's step grid (no refinement)
  untrained   the same fold with a freshly initialised merge autoencoder (step grid)
(all three fold what the pipeline folds: step embeddings with pauses carried, segment.pause_db, and
each sound first where pauses separate sounds, segment.sounds_first)
  librosa     librosa.segment.agglomerative on the same files' log-mel frames, same count
and the ratio ours / librosa. For the automatic count (``auto_k`` of each tree): the fraction
of files whose count is within 1 of the truth, and F at 0.5 s of that cut. Last, the shortest
segment in any 2- to 8-segment cut of our trees.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from labelled import data_folder  # scripts/ is on the path of a script run from it


def make_files(fsdd: Path, out: Path, *, n_files: int, seed: int) -> dict[str, list[tuple[float, float]]]:
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[Path]] = {}
    for p in sorted(fsdd.glob("*.wav")):
        by_speaker.setdefault(p.stem.split("_")[1], []).append(p)
    speakers = sorted(by_speaker)
    truth = {}
    noisy = {}
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
            y = np.concatenate(parts)
            sf.write(out / rel, y, sr, subtype="PCM_16")
            truth[rel] = ref
            if kind == "pauses":
                noisy[f"noisy/{i:03d}.wav"] = (y, sr, ref)
    (out / "noisy").mkdir()
    for rel, (y, sr, ref) in noisy.items():
        sf.write(out / rel, add_noise(y, snr_db=10.0, rng=rng), sr, subtype="PCM_16")
        truth[rel] = ref
    return truth


def add_noise(y: np.ndarray, *, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``y`` plus seeded noise at ``snr_db`` (signal power over the whole file against noise power)."""
    from scipy.signal import lfilter

    white = rng.standard_normal(len(y))
    noise = 0.5 * white + lfilter([1.0], [1.0, -0.97], white) * 0.15  # hiss plus a low rumble
    noise *= np.sqrt(np.mean(y.astype(np.float64) ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    mixed = y + noise
    return (mixed / max(1.0, float(np.abs(mixed).max()))).astype(np.float32)


def f_measure(ref, est, window: float) -> float:
    import mir_eval

    return mir_eval.segment.detection(np.array(ref), np.array(est), window=window, trim=True)[2]


def intervals(bounds: np.ndarray, duration: float) -> list[tuple[float, float]]:
    edges = [0.0, *sorted(float(b) for b in bounds), duration]
    return list(zip(edges[:-1], edges[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fsdd", type=Path, default=data_folder("fsdd"), required=data_folder() is None,
                    help="the FSDD folder (its *.wav files); default: $SOUND_CLUSTER_DATA/fsdd")
    ap.add_argument("--files", type=int, default=40, help="files of each kind (with pauses, without)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()  # overrides may follow the options
    logging.basicConfig(level=logging.WARNING)

    import keras
    import librosa

    from sound_cluster.cli import compose_config
    from sound_cluster.config import params_from_config
    from sound_cluster.run.pipeline import run
    from sound_cluster.run_folder import RunFolder
    from sound_cluster.segment.merge_model import MergeAutoencoder
    from sound_cluster.segment.segmenter import Segmenter, segment_file
    from sound_cluster.segment.tree import doc_cut, read_tree_json

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth = make_files(args.fsdd, tmp / "audio", n_files=args.files, seed=args.seed)
        overrides = [f"data.path={tmp / 'audio'}", f"seed={args.seed}", "output.max_plots=0", "output.report=false",
                     *args.overrides]
        cfg = compose_config(overrides)
        params = params_from_config(cfg)
        result = run(params, output_dir=tmp / "run", config=cfg)
        by_rel = {f.path.relative_to(tmp / "audio").as_posix(): f for f in result.features}
        untrained = MergeAutoencoder(params.model.embedding_dim, size_weighted=params.segment.size_weighted,
                                     node_vector=params.segment.node_vector, linkage=params.segment.linkage)
        trained = keras.saving.load_model(str(RunFolder(tmp / "run").models.merge_model), safe_mode=True, compile=False)
        grid_seg = dataclasses.replace(Segmenter.of(params), boundary_refine_s=0.0)
        scores: dict[str, dict[str, list[float]]] = {}
        shortest = np.inf
        for rel, ref in truth.items():
            kind = rel.split("/")[0]
            k = len(ref)
            doc = read_tree_json(RunFolder(tmp / "run").tree(rel))
            dur = doc["duration_s"]
            est = {"ours": intervals([s["start_s"] for s in doc_cut(doc, k)[1:]], dur)}
            frames = np.load(by_rel[rel].cache_path)
            emb = RunFolder(tmp / "run").read_step_embeddings(rel)
            # what the pipeline folds (pauses carry the sound before them, sounds fold first), on the step grid
            for name, model in (("grid", trained), ("untrained", untrained)):
                segs = segment_file(emb, frames, duration_s=dur, weights=model.fold_weights(), seg=grid_seg)
                est[name] = intervals(segs.tree.boundaries_s(k), dur)
            b = librosa.segment.agglomerative(frames.T, k=k)[1:]
            est["librosa"] = intervals(b / params.features.frame_rate_hz, dur)
            for name, e in est.items():
                for w in (0.1, 0.5):
                    scores.setdefault(kind, {}).setdefault(f"{name}@{w}", []).append(f_measure(ref, e, w))
            auto = doc_cut(doc, "auto")
            scores[kind].setdefault("auto_within_1", []).append(float(abs(len(auto) - k) <= 1))
            scores[kind].setdefault("auto_k", []).append(float(len(auto)))
            scores[kind].setdefault("by_pauses", []).append(float(doc["auto_k_rule"]["name"] == "sounds_between_pauses"))
            scores[kind].setdefault("auto@0.5", []).append(
                f_measure(ref, intervals([s["start_s"] for s in auto[1:]], dur), 0.5) if len(auto) > 1 else 0.0)
            for kk in range(2, min(8, doc["n_leaves"]) + 1):
                segs = doc_cut(doc, kk)
                ends = [s["end_s"] for s in segs[:-1]] + [dur]
                shortest = min(shortest, min(e - s["start_s"] for s, e in zip(segs, ends)))

    print(f"{args.files} files each with pauses, without, and with pauses plus noise at 10 dB SNR; 4-8 digits each; "
          f"overrides: {args.overrides or 'none'}")
    print(f"{'files':10s} {'window':>6s} {'ours':>6s} {'grid':>6s} {'untrained':>9s} {'librosa':>8s} "
          f"{'ours/librosa':>12s}")
    for kind, s in scores.items():
        for w in (0.1, 0.5):
            o, g, u, lib = (float(np.mean(s[f"{n}@{w}"])) for n in ("ours", "grid", "untrained", "librosa"))
            print(f"{kind:10s} {w:6.1f} {o:6.3f} {g:6.3f} {u:9.3f} {lib:8.3f} {o / lib if lib else float('nan'):11.2f}x")
    print(f"\n{'files':10s} {'auto k within 1':>15s} {'mean auto k':>11s} {'true k':>6s} {'auto F@0.5':>10s} "
          f"{'counted by pauses':>17s}")
    for kind, s in scores.items():
        print(f"{kind:10s} {np.mean(s['auto_within_1']):15.2f} {np.mean(s['auto_k']):11.2f} "
              f"{np.mean([len(truth[r]) for r in truth if r.startswith(kind)]):6.2f} {np.mean(s['auto@0.5']):10.3f} "
              f"{np.mean(s['by_pauses']):17.2f}")
    print(f"\nshortest segment in any 2- to 8-segment cut of our trees: {shortest:.3f} s")

if __name__ == "__main__":
    main()
