"""Build the bundled demo (sound_cluster/demo/): six clearly different kinds of sound, as clips and recordings.

Usage: python scripts/make_demo.py [--data DATA]

DATA (default ``$SOUND_CLUSTER_DATA``) holds the labelled ``fsdd/``, ``drums/`` and ``instruments/`` folders.
The kinds: speech (spoken digits of the Free Spoken Digit Dataset), kick, snare and closed hi-hat (one-shot
hits of the three Hydrogen kits under free licences: Audiophob, BJA_Pacific, rumpf_kit_z01_h2), piano and
flute (notes of the FluidR3_GM soundfont). Writes 16 kHz mono 16-bit WAV:

- ``clips/``: five sounds of each kind, one per file, in a shuffled order (``sound_01.wav`` ...: a name says
  nothing of its kind), and ``labels.csv`` (``path,label``);
- ``recordings/``: four files of eight sounds each (other instances than the clips), 0.3-0.7 s of quiet
  between them, and ``segments.csv`` (``path,start_s,end_s,label``: each sound's start and end);
- ``sources.csv``: where each sound comes from (``path,start_s,source,licence``; ``start_s`` in a recording).

Every sound is trimmed to at most 1.2 s (with a 50 ms fade), so the demo stays small, and peak-normalised to
-6 dBFS. Deterministic: the same sources give the same demo. Licences and sources go to ``demo/README.md``.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
from labelled import data_folder, read_labels  # scripts/ is on the path of a script run from it

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "sound_cluster" / "demo"
SR = 16000
MAX_S, FADE_S, PEAK = 1.2, 0.05, 0.5
LICENCES = {"fsdd": "CC-BY-SA-4.0 (Free Spoken Digit Dataset, Zohar Jackson and contributors)",
            "Audiophob": "CC0-1.0 (Hydrogen drumkit Audiophob)",
            "BJA_Pacific": "CC-BY-SA-3.0-us (Hydrogen drumkit BJA_Pacific, Luc Tunguay)",
            "rumpf_kit_z01_h2": "CC-BY-3.0 (Hydrogen drumkit rumpf_kit_z01_h2, Emanuel Rumpf)",
            "instruments": "MIT (FluidR3_GM soundfont, Frank Wen and contributors)"}
FREE_KITS = ("Audiophob", "BJA_Pacific", "rumpf_kit_z01_h2")
KINDS = {"speech": ("fsdd", None), "kick": ("drums", "kick"), "snare": ("drums", "snare"),
         "hihat": ("drums", "hihat_closed"), "piano": ("instruments", "piano"), "flute": ("instruments", "flute")}
CLIPS_PER_KIND, RECORDINGS, SOUNDS_PER_RECORDING = 5, 4, 8


def _sources(data: Path, kind: str, rng: np.random.Generator) -> list[tuple[Path, str]]:
    """The files of one kind with their licence, in a seeded order (drums: the kits under free licences only)."""
    folder, label = KINDS[kind]
    rows, paths = read_labels(data / folder)
    keep = [(p, LICENCES[r["kit"] if folder == "drums" else folder]) for r, p in zip(rows, paths)
            if (label is None or r["label"] == label) and (folder != "drums" or r.get("kit") in FREE_KITS)]
    return [keep[i] for i in rng.permutation(len(keep))]


def _sound(path: Path) -> np.ndarray:
    """A source file as 16 kHz mono float32, trimmed to MAX_S with a fade, peak at PEAK."""
    import soxr

    y, sr = sf.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != SR:
        y = soxr.resample(y, sr, SR)
    y = y[: int(MAX_S * SR)].copy()
    fade = min(int(FADE_S * SR), len(y))
    y[len(y) - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return (PEAK * y / max(float(np.abs(y).max()), 1e-9)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=data_folder(), required=data_folder() is None,
                    help="folder holding fsdd/, drums/ and instruments/; default: $SOUND_CLUSTER_DATA")
    ap.add_argument("--out", type=Path, default=DEMO, help="where to write it (default: the package's demo/)")
    args = ap.parse_args()
    out = args.out
    rng = np.random.default_rng(0)
    pools = {kind: _sources(args.data, kind, rng) for kind in KINDS}
    for sub in ("clips", "recordings", "sequences"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "clips").mkdir(parents=True)
    (out / "recordings").mkdir(parents=True)
    labels: list[tuple[str, str]] = []
    segments, sources = [], []
    clips = [(kind, src) for kind, pool in pools.items() for src in pool[:CLIPS_PER_KIND]]
    for i, j in enumerate(rng.permutation(len(clips))):  # names say nothing of the kind: labels.csv does
        kind, (src, licence) = clips[j]
        rel = f"clips/sound_{i + 1:02d}.wav"
        sf.write(out / rel, _sound(src), SR, subtype="PCM_16")
        labels.append((rel, kind))
        sources.append((rel, "", src.name, licence))
    left = {kind: pool[CLIPS_PER_KIND:] for kind, pool in pools.items()}
    order = [k for _ in range(RECORDINGS * SOUNDS_PER_RECORDING // len(KINDS) + 1) for k in KINDS]
    for r in range(RECORDINGS):
        rel = f"recordings/recording_{r + 1}.wav"
        kinds = list(rng.permutation(order[r * SOUNDS_PER_RECORDING:(r + 1) * SOUNDS_PER_RECORDING]))
        parts, t = [np.zeros(int(0.3 * SR), np.float32)], 0.3
        for kind in kinds:
            src, licence = left[kind].pop(0)
            y = _sound(src)
            segments.append((rel, round(t, 4), round(t + len(y) / SR, 4), kind))
            sources.append((rel, f"{t:.4f}", src.name, licence))
            gap = np.zeros(int(rng.uniform(0.3, 0.7) * SR), np.float32)
            parts += [y, gap]
            t += (len(y) + len(gap)) / SR
        sf.write(out / rel, np.concatenate(parts), SR, subtype="PCM_16")
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "label"])
        w.writerows(sorted(labels))
    with open(out / "segments.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "start_s", "end_s", "label"])
        w.writerows(segments)
    with open(out / "sources.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "start_s", "source", "licence"])
        w.writerows(sorted(sources))
    print(f"demo: {len(labels)} clips, {RECORDINGS} recordings of {SOUNDS_PER_RECORDING} sounds in {out}")


if __name__ == "__main__":
    main()
