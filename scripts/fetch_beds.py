"""Background beds for the field-recording benchmarks: continuous outdoor ambience from a Debian package.

Usage: python scripts/fetch_beds.py OUT

Downloads ``megaglest-data`` (``apt-get download``; MegaGlest's game data, CC-BY-SA-3.0, see the
package's ``/usr/share/doc/megaglest-data/copyright``), takes the ambience loops of its tilesets
(day, night and rain: wind, birds, insects, rain; 18 distinct recordings, about 11 minutes), and
writes each one as mono 16 kHz WAV into ``OUT``, with ``OUT/README.md`` giving the package, its
version and licence and every file's source path. ``scripts/bench_events.py DATA --beds OUT`` lays
them under its events.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

PACKAGE = "megaglest-data"
LICENCE = "CC-BY-SA-3.0 (MegaGlest data; see /usr/share/doc/megaglest-data/copyright in the package)"
SR = 16000
KEEP = ("day", "night", "rain", "sunny_day", "nightime", "desertday")  # continuous loops, not single calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    import librosa

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["apt-get", "download", PACKAGE], cwd=tmp, check=True)
        deb = next(tmp.glob(f"{PACKAGE}_*.deb"))
        version = deb.name.split("_")[1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True)
        tilesets = tmp / "x" / "usr" / "share" / "games" / "megaglest" / "tilesets"
        seen, rows = set(), []
        for f in sorted(tilesets.glob("*/sounds/*")):
            if f.is_symlink() or f.stem not in KEEP:
                continue
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            if digest in seen:  # tilesets share loops
                continue
            seen.add(digest)
            y, sr = sf.read(f, dtype="float32", always_2d=True)
            y = librosa.resample(y.mean(axis=1), orig_sr=sr, target_sr=SR)
            name = f"{f.parts[-3]}_{f.stem}.wav"
            sf.write(args.out / name, (0.9 * y / max(float(np.abs(y).max()), 1e-9)).astype(np.float32), SR)
            rows.append(f"| {name} | {len(y) / SR:.1f} | tilesets/{f.parts[-3]}/sounds/{f.name} |")
    (args.out / "README.md").write_text(
        f"# Background beds\n\nFrom the Debian package `{PACKAGE}` {version}, licence {LICENCE}.\n"
        "Each loop downmixed to mono, resampled to 16 kHz and peak-normalised.\n\n"
        "| file | seconds | source in the package |\n|---|---|---|\n" + "\n".join(rows) + "\n", encoding="utf-8")
    print(f"{len(rows)} beds in {args.out}")


if __name__ == "__main__":
    main()
