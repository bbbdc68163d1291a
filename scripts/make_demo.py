"""Build the bundled demo (sound_cluster/demo/) from the Free Spoken Digit Dataset.

Usage: python scripts/make_demo.py --fsdd FSDD

Copies 30 clips (digits 0-9 from three speakers) and writes four files made by joining
clips of a fourth speaker, with pauses of 0.05-0.3 s or none, plus ``labels.csv``
(``path,label``) for the clips and ``segments.csv`` (``path,start_s,end_s,label``) for the
joined files. Deterministic: the same source gives the same demo.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
from labelled import data_folder  # scripts/ is on the path of a script run from it

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "sound_cluster" / "demo"
CLIP_SPEAKERS = ("george", "jackson", "nicolas")
SEQUENCES = {  # name: (digits, pause seconds or None)
    "sequences/lucas_3141.wav": ([3, 1, 4, 1], 0.2),
    "sequences/lucas_27182.wav": ([2, 7, 1, 8, 2], 0.1),
    "sequences/lucas_9265.wav": ([9, 2, 6, 5], 0.05),
    "sequences/lucas_860357_nopause.wav": ([8, 6, 0, 3, 5, 7], None),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fsdd", type=Path, default=data_folder("fsdd"), required=data_folder() is None,
                    help="the FSDD folder (its *.wav files); default: $SOUND_CLUSTER_DATA/fsdd")
    args = ap.parse_args()
    (DEMO / "clips").mkdir(parents=True, exist_ok=True)
    (DEMO / "sequences").mkdir(parents=True, exist_ok=True)
    labels = []
    for speaker in CLIP_SPEAKERS:
        for digit in range(10):
            name = f"{digit}_{speaker}_0.wav"
            shutil.copyfile(args.fsdd / name, DEMO / "clips" / name)
            labels.append((f"clips/{name}", digit))
    segments = []
    for rel, (digits, pause) in SEQUENCES.items():
        parts, t = [], 0.0
        for n, digit in enumerate(digits):
            y, sr = sf.read(args.fsdd / f"{digit}_lucas_{n + 1}.wav", dtype="float32")
            segments.append((rel, round(t, 4), round(t + len(y) / sr, 4), digit))
            parts.append(y)
            t += len(y) / sr
            if pause and n < len(digits) - 1:
                parts.append(np.zeros(int(round(pause * sr)), dtype=np.float32))
                t += pause
        sf.write(DEMO / rel, np.concatenate(parts), sr, subtype="PCM_16")
    with open(DEMO / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "label"])
        w.writerows(labels)
    with open(DEMO / "segments.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "start_s", "end_s", "label"])
        w.writerows(segments)


if __name__ == "__main__":
    main()
