"""Sounds of joined spoken digits, each from its start to its end: ours against an envelope split and librosa.

Usage: python scripts/bench_segments.py --fsdd FSDD [--files 40] [--seed 0] [override ...]

Builds files by joining 4-8 digit clips of one FSDD speaker: --files with pauses of 0.05-0.3 s
between digits, --files with none, and --files "noisy": the files with pauses mixed with
synthesized noise (white noise through a one-pole low-pass, a rumble-and-hiss mix) at 10 dB SNR
(signal power over the whole file), so every digit's start and end are known. Runs the real
pipeline (``sound_cluster.run.pipeline.run``, default config plus overrides) on them and scores
the sounds of each file's own cut (``segments.csv``, rows of kind ``sound``) against the digits:
  found       the share of digits whose best-overlapping sound starts within 0.1 s of the digit and
              ends with it (after 90 % of its energy, at most 0.1 s past its end), as bench_events.py
  F starts    hit-rate F-measure of sound starts at 0.1 s (mir_eval.onset.f_measure)
  F ends      the same for sound ends
  per digit   sounds per digit over the folder
for
  ours        the pipeline's sounds
  envelope    librosa.effects.split at 30 dB below the file's peak
  librosa     librosa.segment.agglomerative on the same files' log-mel frames told the number of
              digits, each segment a sound from its boundary to the next
Last, the ratio of ours to the better of the two on each score.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from bench_events import edge_f, energy90_s, envelope_sounds, our_sounds, sounds_found
from labelled import data_folder  # scripts/ is on the path of a script run from it


def make_files(fsdd: Path, out: Path, *, n_files: int, seed: int) -> dict[str, list[tuple[float, float, float]]]:
    """Writes the three folders; per file, each digit's start, end and the time 90 % of its energy has passed."""
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
                intervals.append((t, t + len(y) / sr, t + energy90_s(y, sr)))
                parts.append(y)
                t += len(y) / sr
                if kind == "pauses" and j < len(clips) - 1:
                    gap = float(rng.uniform(0.05, 0.3))
                    parts.append(np.zeros(int(gap * sr), np.float32))
                    t += int(gap * sr) / sr
            ref = intervals  # each digit from its first sample to its last
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fsdd", type=Path, default=data_folder("fsdd"), required=data_folder() is None,
                    help="the FSDD folder (its *.wav files); default: $SOUND_CLUSTER_DATA/fsdd")
    ap.add_argument("--files", type=int, default=40, help="files of each kind (with pauses, without)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()  # overrides may follow the options
    logging.basicConfig(level=logging.WARNING)

    import librosa

    from sound_cluster.cli import compose_config
    from sound_cluster.config import params_from_config
    from sound_cluster.run.pipeline import run

    methods = ("ours", "envelope", "librosa")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth = make_files(args.fsdd, tmp / "audio", n_files=args.files, seed=args.seed)
        overrides = [f"data.path={tmp / 'audio'}", f"seed={args.seed}", "output.max_plots=0", "output.report=false",
                     *args.overrides]
        cfg = compose_config(overrides)
        params = params_from_config(cfg)
        result = run(params, output_dir=tmp / "run", config=cfg)
        by_rel = {f.path.relative_to(tmp / "audio").as_posix(): f for f in result.features}
        refs = {rel: [(s, e, "digit") for s, e, _ in ref] for rel, ref in truth.items()}
        e90 = {rel: [t90 for _, _, t90 in ref] for rel, ref in truth.items()}
        agglomerative = {}
        for rel, ref in truth.items():  # told the number of digits; each segment a sound to the next boundary
            b = librosa.segment.agglomerative(np.load(by_rel[rel].cache_path).T, k=len(ref))[1:]
            edges = [0.0, *sorted(float(x) for x in b / params.features.frame_rate_hz), sf.info(tmp / "audio" / rel).duration]
            agglomerative[rel] = list(zip(edges[:-1], edges[1:]))
        est = {"ours": our_sounds(tmp / "run"), "envelope": envelope_sounds(tmp / "audio", refs),
               "librosa": agglomerative}

    print(f"{args.files} files each with pauses, without, and with pauses plus noise at 10 dB SNR; 4-8 digits each; "
          f"overrides: {args.overrides or 'none'}")
    print(f"{'files':10s} {'method':9s} {'found':>6s} {'F starts':>8s} {'F ends':>7s} {'per digit':>9s}")
    for kind in ("pauses", "nopause", "noisy"):
        kind_refs = {rel: r for rel, r in refs.items() if rel.startswith(f"{kind}/")}
        table = {}
        for name in methods:
            got = {rel: est[name].get(rel, []) for rel in kind_refs}
            t = table[name] = {"found": sounds_found(kind_refs, e90, got), "starts": edge_f(kind_refs, got, which=0),
                               "ends": edge_f(kind_refs, got, which=1),
                               "per": sum(map(len, got.values())) / sum(map(len, kind_refs.values()))}
            print(f"{kind:10s} {name:9s} {t['found']:6.2f} {t['starts']:8.3f} {t['ends']:7.3f} {t['per']:9.2f}")
        ratio = "  ".join(f"{k} {table['ours'][k] / max(table['envelope'][k], table['librosa'][k], 1e-9):.2f}x"
                          for k in ("found", "starts", "ends"))
        print(f"{kind:10s} ours / the better baseline: {ratio}")


if __name__ == "__main__":
    main()
