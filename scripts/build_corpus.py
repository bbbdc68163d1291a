"""Build the pre-training corpus from Debian packages: ``python scripts/build_corpus.py OUT``.

Every package is fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``; its audio
files (wav, flac, ogg, mp3) are moved to ``OUT/audio/<package>/`` and everything else is deleted.
A soundfont package is rendered instead: one note per General MIDI program at several pitches,
and the drum kits of bank 128, through the ``fluidsynth`` command (``apt-get install fluidsynth``).
``OUT/manifest.csv`` lists every file: package, version, licence, kind, file, duration_s;
``OUT/validation/`` holds the package kept out of pre-training (sonic-pi-samples, labelled by the
prefix of each file name: ``bd_``, ``drum_``, ``guit_``, ...) with its ``labels.csv``.

Reserved for independent evaluation and never fetched here: every 0 A.D. package,
hydrogen-drumkits, timgm6mb-soundfont. fluid-soundfont-gm is left out as well: the bundled
instruments benchmark was rendered from it, and pre-training on its samples would make that
benchmark measure memory instead of transfer.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

log = logging.getLogger("build_corpus")

AUDIO = {".wav", ".flac", ".ogg", ".mp3"}
ARCHIVES = {".zip", ".wz", ".pk3"}  # games that keep their sounds in a zip (warzone2100's base.wz)
RESERVED = re.compile(r"^(0ad.*|hydrogen-drumkits.*|timgm6mb-soundfont)$")

# (package, kind). Kinds are for the card and for reading the manifest; training uses no labels.
PACKAGES = [
    ("asterisk-core-sounds-en-wav", "speech"),
    ("asterisk-core-sounds-fr-wav", "speech"),
    ("asterisk-core-sounds-es-wav", "speech"),
    ("klettres-data", "speech"),
    ("ktuberling-data", "speech"),
    ("asterisk-core-sounds-it-wav", "speech"),
    ("asterisk-core-sounds-ru-wav", "speech"),
    ("tuxpaint-stamps-default", "effects"),
    ("wesnoth-1.16-data", "effects"),
    ("hedgewars-data", "effects"),
    ("warzone2100-data", "effects"),
    ("colobot-common-sounds", "effects"),
    ("frozen-bubble-data", "effects"),
    ("extremetuxracer-data", "effects"),
    ("pingus-data", "effects"),
    ("lmms-common", "samples"),
    ("wesnoth-1.16-music", "music"),
    ("musescore-general-soundfont-small", "soundfont"),
]
VALIDATION = "sonic-pi-samples"

NOTE_S, GAP_S = 2.0, 1.0  # each rendered note sounds 2 s, then 1 s of release before the next
PITCHES = (36, 43, 48, 55, 60, 67, 72, 79, 84)
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40, 48, 56)  # GM2 kit programs on bank 128 (missing ones fall back)
DRUM_NOTES = range(35, 82)


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def fetch(package: str, work: Path) -> tuple[Path, str]:
    """Download and unpack ``package``; the unpacked tree and the package version."""
    if RESERVED.match(package):
        raise SystemExit(f"{package} is reserved for independent evaluation and must not be used")
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        _run(["apt-get", "download", package], cwd=debs)
        found = sorted(debs.glob(f"{package}_*.deb"))
    deb = found[-1]
    version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    tree = work / "unpacked" / package
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    _run(["dpkg-deb", "-x", str(deb), str(tree)])
    return tree, version


def licence_of(tree: Path, package: str) -> str:
    """The licences named in the package's Debian copyright file (DEP-5 ``License:`` lines)."""
    copyright_file = tree / "usr/share/doc" / package / "copyright"
    if not copyright_file.exists():
        docs = list((tree / "usr/share/doc").glob("*/copyright"))
        copyright_file = docs[0] if docs else copyright_file
    try:
        text = copyright_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown (no copyright file)"
    names = []
    for m in re.finditer(r"^License:\s*(\S.*)$", text, flags=re.M):
        name = m.group(1).strip()
        if len(name.split()) <= 6 and name not in names:  # an identifier, not a sentence of prose
            names.append(name)
    if names:
        return "; ".join(names)
    # Not machine-readable: name the licences the text mentions, in the order they appear.
    found = []
    for pattern, name in ((r"\(MIT[,)]|\bMIT licen[sc]e", "MIT"), (r"\bCC0\b", "CC0"),
                          (r"GNU General Public License,? (?:as published.*?)?version 2", "GPL-2"),
                          (r"GNU General Public License,? (?:as published.*?)?version 3", "GPL-3"),
                          (r"/usr/share/common-licenses/GPL-2", "GPL-2")):
        if re.search(pattern, text, flags=re.S) and name not in found:
            found.append(name)
    return "; ".join(found) + " (from the copyright text)" if found else "see copyright file"


def duration_s(path: Path) -> float | None:
    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - anything libsndfile cannot read is left out
        return None
    return info.frames / info.samplerate if info.samplerate else None


def unzip_audio(tree: Path) -> None:
    """Extract the audio members of every zip archive in ``tree`` into a folder beside it."""
    import zipfile

    for arc in sorted(p for p in tree.rglob("*") if p.suffix.lower() in ARCHIVES and p.is_file()):
        try:
            with zipfile.ZipFile(arc) as z:
                members = [m for m in z.namelist() if Path(m).suffix.lower() in AUDIO and ".." not in m]
                z.extractall(arc.with_name(arc.name + ".d"), members=members)
        except zipfile.BadZipFile:
            continue


def collect_audio(tree: Path, dest: Path) -> list[tuple[Path, float]]:
    """Move the readable audio files of ``tree`` (and of its zip archives) into ``dest``."""
    unzip_audio(tree)
    out = []
    for p in sorted(tree.rglob("*")):
        if p.suffix.lower() not in AUDIO or not p.is_file() or p.is_symlink():
            continue
        d = duration_s(p)
        if d is None or d < 0.05:
            continue
        target = dest / p.relative_to(tree)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(p), target)
        out.append((target, d))
    return out


def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, *, channel: int, program: int, notes, velocity: int = 100, bank: int = 0) -> None:
    """A format-0 MIDI file: one program, each note held NOTE_S then GAP_S of silence (480 ticks/s)."""
    tps = 480  # ticks per quarter = ticks per second at 60 bpm
    ev = bytearray()
    ev += _vlq(0) + bytes([0xFF, 0x51, 0x03]) + (1_000_000).to_bytes(3, "big")  # 60 bpm
    ev += _vlq(0) + bytes([0xB0 | channel, 0x00, bank >> 7 & 0x7F])
    ev += _vlq(0) + bytes([0xB0 | channel, 0x20, bank & 0x7F])
    ev += _vlq(0) + bytes([0xC0 | channel, program])
    for note in notes:
        ev += _vlq(0) + bytes([0x90 | channel, note, velocity])
        ev += _vlq(int(NOTE_S * tps)) + bytes([0x80 | channel, note, 0])
        ev += _vlq(int(GAP_S * tps)) + bytes([0xFF, 0x01, 0x00])  # an empty text event marks the gap
    ev += _vlq(0) + bytes([0xFF, 0x2F, 0x00])
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + tps.to_bytes(2, "big")
    path.write_bytes(header + b"MTrk" + len(ev).to_bytes(4, "big") + bytes(ev))


def render_soundfont(tree: Path, dest: Path, *, sample_rate: int = 16000) -> list[tuple[Path, float]]:
    """Render every GM program at PITCHES and the drum kits' DRUM_NOTES, one wav per note."""
    if shutil.which("fluidsynth") is None:
        raise SystemExit("fluidsynth is needed to render soundfonts: apt-get install fluidsynth")
    fonts = sorted(p for p in tree.rglob("*") if p.suffix.lower() in {".sf2", ".sf3"})
    if not fonts:
        raise SystemExit(f"no soundfont in {tree}")
    font = fonts[0]
    jobs = [(f"prog{p:03d}", 0, p, 0, PITCHES) for p in range(128)]
    jobs += [(f"kit{k:03d}", 9, k, 128, DRUM_NOTES) for k in DRUM_KITS]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, channel, program, bank, notes in jobs:
            mid, wav = Path(tmp) / f"{name}.mid", Path(tmp) / f"{name}.wav"
            write_midi(mid, channel=channel, program=program, notes=notes, bank=bank)
            _run(["fluidsynth", "-ni", "-g", "0.6", "-r", str(sample_rate), "-F", str(wav), str(font), str(mid)])
            audio, sr = sf.read(wav, dtype="float32", always_2d=True)
            audio = audio.mean(axis=1)
            step = int((NOTE_S + GAP_S) * sr)
            for i, note in enumerate(notes):
                clip = audio[i * step:(i + 1) * step]
                if clip.size == 0 or np.max(np.abs(clip)) < 1e-3:  # a kit without this note
                    continue
                target = dest / name / f"{name}_note{note:03d}.wav"
                target.parent.mkdir(parents=True, exist_ok=True)
                sf.write(target, clip, sr, subtype="PCM_16")
                out.append((target, clip.size / sr))
    return out


def validation_label(name: str) -> str:
    """sonic-pi-samples' kind of sound, from its file name: ``bd_haus.flac`` -> ``bd``."""
    stem = Path(name).stem
    return stem.split("_")[0] if "_" in stem else stem.split("-")[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for the corpus (about 2 GB while it is built)")
    ap.add_argument("--packages", nargs="*", help="only these packages (default: all)")
    ap.add_argument("--keep-debs", action="store_true", help="keep the downloaded .deb files")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = args.out.resolve()
    work = out / "_work"
    chosen = [p for p in PACKAGES if not args.packages or p[0] in args.packages]
    rows = []
    for package, kind in chosen + [(VALIDATION, "validation")]:
        log.info("fetching %s", package)
        tree, version = fetch(package, work)
        licence = licence_of(tree, package)
        dest = out / ("validation" if kind == "validation" else "audio") / package
        shutil.rmtree(dest, ignore_errors=True)
        files = render_soundfont(tree, dest) if kind == "soundfont" else collect_audio(tree, dest)
        # Licence texts travel with the audio.
        dest.mkdir(parents=True, exist_ok=True)
        for c in (tree / "usr/share/doc").glob("*/copyright"):
            shutil.copy(c, dest / f"copyright.{c.parent.name}")
        shutil.rmtree(tree, ignore_errors=True)
        hours = sum(d for _, d in files) / 3600
        log.info("%s %s: %d files, %.2f h, licence %s", package, version, len(files), hours, licence)
        for path, d in files:
            rows.append({"package": package, "version": version, "licence": licence, "kind": kind,
                         "file": str(path.relative_to(out)), "duration_s": round(d, 3)})
    manifest = out / "manifest.csv"
    if args.packages and manifest.exists():  # a partial rebuild keeps the other packages' rows
        with open(manifest, newline="", encoding="utf-8") as fh:
            done = {r["package"] for r in rows}
            rows = [r for r in csv.DictReader(fh) if r["package"] not in done] + rows
        for r in rows:
            r["duration_s"] = float(r["duration_s"])
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["package", "version", "licence", "kind", "file", "duration_s"])
        w.writeheader()
        w.writerows(rows)
    val = [r for r in rows if r["kind"] == "validation"]
    with open(out / "validation" / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for r in val:
            rel = Path(r["file"]).relative_to("validation")
            w.writerow([str(rel), validation_label(Path(r["file"]).name)])
    if not args.keep_debs:
        shutil.rmtree(work, ignore_errors=True)
    train_h = sum(r["duration_s"] for r in rows if r["kind"] != "validation") / 3600
    log.info("corpus: %d files, %.2f h for pre-training; %d validation files; manifest %s",
             len(rows) - len(val), train_h, len(val), out / "manifest.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
