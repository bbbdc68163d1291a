"""Background beds: continuous ambience from a Debian package, for benchmarks and for pre-training.

Usage: python scripts/fetch_beds.py OUT [--package megaglest-data | scorched3d-data]

``megaglest-data`` (default; MegaGlest's game data, CC-BY-SA-3.0, see the package's
``/usr/share/doc/megaglest-data/copyright``): the ambience loops of its tilesets (day, night and
rain: wind, birds, insects, rain; 18 distinct recordings, about 11 minutes). These are the
benchmark beds: ``scripts/bench_events.py DATA --beds OUT`` lays them under its events.

``scorched3d-data`` (Scorched 3D's game data; GPL-2+, the Apocalypse mod's files CC-BY-SA-3, see
``/usr/share/doc/scorched3d-data/copyright``): its ambience loops (birds, frogs, ocean waves,
rain, lava, a factory, a city, a cheering crowd; 11 recordings, about 4 minutes). These are the
pre-training beds (``sound-cluster task=pretrain pretrain.beds=OUT``), kept apart from the
benchmark's so that the benchmark measures beds the encoder never heard.

The package is fetched with ``apt-get download``; each recording is written as mono 16 kHz WAV
into ``OUT``, with ``OUT/README.md`` giving the package, its version and licence and every file's
source path.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
# package: (licence, folder under the unpacked package, file stems kept: continuous loops, not single calls)
SOURCES = {
    "megaglest-data": ("CC-BY-SA-3.0 (MegaGlest data; see /usr/share/doc/megaglest-data/copyright in the package)",
                       "usr/share/games/megaglest/tilesets",
                       ("day", "night", "rain", "sunny_day", "nightime", "desertday")),
    "scorched3d-data": ("GPL-2+; the apoc mod's files CC-BY-SA-3 (see /usr/share/doc/scorched3d-data/copyright "
                        "in the package)", "usr/share/games/scorched3d/data/globalmods",
                        ("birds1", "birds2", "frogs", "oceanwaves", "rain", "lava1", "lava2", "factoryloop1",
                         "cheeringloop", "citysounds", "nuclearloop")),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--package", choices=sorted(SOURCES), default="megaglest-data",
                    help="megaglest-data: the benchmark beds; scorched3d-data: the pre-training beds")
    args = ap.parse_args()
    package = args.package
    licence, under, keep = SOURCES[package]
    import librosa

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["apt-get", "download", package], cwd=tmp, check=True)
        deb = next(tmp.glob(f"{package}_*.deb"))
        version = deb.name.split("_")[1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True)
        top = tmp / "x" / under
        seen, rows = set(), []
        for f in sorted(top.rglob("*")):
            if f.is_symlink() or not f.is_file() or f.stem not in keep or f.suffix.lower() not in (".wav", ".ogg"):
                continue
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            if digest in seen:  # tilesets share loops
                continue
            seen.add(digest)
            y, sr = sf.read(f, dtype="float32", always_2d=True)
            y = librosa.resample(y.mean(axis=1), orig_sr=sr, target_sr=SR)
            # megaglest: tileset_loop (tilesets share loop names); scorched3d: the loop names are unique
            name = f"{f.parts[-3]}_{f.stem}.wav" if package == "megaglest-data" else f"{f.stem}.wav"
            sf.write(args.out / name, (0.9 * y / max(float(np.abs(y).max()), 1e-9)).astype(np.float32), SR)
            rows.append(f"| {name} | {len(y) / SR:.1f} | {f.relative_to(top.parent)} |")
    (args.out / "README.md").write_text(
        f"# Background beds\n\nFrom the Debian package `{package}` {version}, licence {licence}.\n"
        "Each loop downmixed to mono, resampled to 16 kHz and peak-normalised.\n\n"
        "| file | seconds | source in the package |\n|---|---|---|\n" + "\n".join(rows) + "\n", encoding="utf-8")
    print(f"{len(rows)} beds in {args.out}")


if __name__ == "__main__":
    main()
