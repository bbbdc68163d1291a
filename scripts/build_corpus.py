"""Build the pre-training corpus from Debian packages: ``python scripts/build_corpus.py OUT``.

Every package is fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``; its audio
files (wav, flac, ogg, mp3) are moved to ``OUT/audio/<package>/`` and everything else is deleted.
A soundfont package is rendered instead: one note per General MIDI program at several pitches and
velocities, and the drum kits of bank 128, through the ``fluidsynth`` command (``apt-get install
fluidsynth``), each note cut 50 ms after it falls 50 dB below its peak; a drum-kit package
(avldrums) is rendered one kit per font file; a GUS patch set (freepats) the same way through
``timidity`` (``apt-get install timidity``). Recorded drum kits (hydrogen-data's own GMRockKit and
TR808EmulationKit, exadrums' kit) give their hits as they are. These three are extras, fetched only
when ``--packages`` names them (``--packages freepats hydrogen-data exadrums`` adds them to a built
corpus): the shipped encoder's corpus is the default one.
Speech is also synthesized: every word and every short prompt of the Asterisk prompts'
transcripts (en, fr, es, it, ru; from the asterisk-core-sounds-XX packages' documentation) is
spoken by several voices of ``flite`` and ``espeak-ng`` (``apt-get install flite espeak-ng``),
with random pitch and speed.
``OUT/manifest.csv`` lists every file: package, version, licence, kind, file, duration_s, group;
``OUT/validation/`` holds the package kept out of pre-training (sonic-pi-samples, labelled by the
prefix of each file name: ``bd_``, ``drum_``, ``guit_``, ...) with its ``labels.csv``.

``group`` says which files are the same sound made differently, by how the corpus was made: one
General MIDI program of one soundfont at other pitches and velocities (``<font>:prog000``); one
General MIDI drum (by its GM name) in any kit, soundfont or sample folder (``drum:snare``); one
text said by any voice, synthesized or recorded (``say:en:thank you``); one line of the
hedgewars voice packs (``line:jump``). Pre-training takes a file of the same group as the
positive partner of a crop (``pretrain.group_prob`` of the time); files without a group (empty) are
their own group. Only the way each file was made is used, never a label of the benchmark sets.

Reserved for independent evaluation and never fetched here: every 0 A.D. package,
hydrogen-drumkits, timgm6mb-soundfont. fluid-soundfont-gm is left out as well: the bundled
instruments benchmark was rendered from it, and pre-training on its samples would make that
benchmark measure memory instead of transfer.
"""

from __future__ import annotations

import argparse
import csv
import functools
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
    ("opl3-soundfont", "soundfont"),
    ("csound-soundfont", "soundfont"),
    ("avldrums.lv2-soundfont", "drumfont"),  # two acoustic kits, each a soundfont of its own
]
# Fetched only when named in --packages: the shipped encoder was trained without them, so the default corpus
# stays the one its card describes. Over two pre-training seeds each they raise instruments and leave the other
# sets within the seed's spread; no encoder trained with them passed the rule for replacing the shipped one
# (BENCHMARKS.md).
EXTRA_PACKAGES = [
    ("freepats", "patchset"),  # sampled GM instruments and a drum set (GUS patches, rendered with timidity)
    ("hydrogen-data", "drumkit"),  # Hydrogen's own two kits (GMRockKit, TR808EmulationKit), not hydrogen-drumkits
    ("exadrums", "drumkit"),  # one acoustic kit's hits
]
# Where a package keeps the audio that is taken (others: all of it): hydrogen-data's click and empty sample are not drums.
AUDIO_UNDER = {"hydrogen-data": "usr/share/hydrogen/data/drumkits"}
# Synthesized speech: the programs that speak (their own packages, for version and licence)
# and the packages whose transcripts give the texts.
TTS_LANGUAGES = ("en", "fr", "es", "it", "ru")
TTS_ENGINES = ("flite", "espeak-ng")
VALIDATION = "sonic-pi-samples"
MAX_WORDS = 3  # a prompt this short is synthesized whole, and groups with its recordings

NOTE_S, GAP_S = 2.0, 1.0  # each rendered note sounds 2 s, then 1 s of release before the next
PITCHES = (36, 43, 48, 55, 60, 67, 72, 79, 84)
VELOCITIES = (70, 115)
KIT_VELOCITIES = (45, 85, 120)  # a drum font's velocity layers
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40, 48, 56)  # GM2 kit programs on bank 128 (missing ones fall back)
DRUM_NOTES = range(35, 82)
# General MIDI percussion (key 35-81) by drum, with GM's pitch qualifiers (low, high, floor, 1, 2) left
# out: a drum at another tuning is the same drum, as a note at another pitch is the same instrument.
# How it is played (closed, open, pedal, mute) changes the sound and is kept.
GM_DRUMS = {35: "bass drum", 36: "bass drum", 37: "side stick", 38: "snare", 39: "hand clap", 40: "snare",
            41: "tom", 42: "closed hi-hat", 43: "tom", 44: "pedal hi-hat", 45: "tom", 46: "open hi-hat",
            47: "tom", 48: "tom", 49: "crash cymbal", 50: "tom", 51: "ride cymbal", 52: "chinese cymbal",
            53: "ride bell", 54: "tambourine", 55: "splash cymbal", 56: "cowbell", 57: "crash cymbal",
            58: "vibraslap", 59: "ride cymbal", 60: "bongo", 61: "bongo", 62: "mute conga", 63: "open conga",
            64: "open conga", 65: "timbale", 66: "timbale", 67: "agogo", 68: "agogo", 69: "cabasa", 70: "maracas",
            71: "short whistle", 72: "long whistle", 73: "short guiro", 74: "long guiro", 75: "claves",
            76: "wood block", 77: "wood block", 78: "mute cuica", 79: "open cuica", 80: "mute triangle",
            81: "open triangle"}
# Sample names (lmms-common's drums, the drum-kit packages' hits) -> GM drum name; the first pattern
# that matches wins, case ignored. A snare's rimshot is a snare; a side stick is not.
SAMPLE_DRUMS = ((r"hihat_closed|hat_?closed", "closed hi-hat"), (r"hihat_foot|hat_?pedal", "pedal hi-hat"),
                (r"hihat_open|hat_?(semi)?open", "open hi-hat"), (r"rimshot", "snare"),
                (r"rim|sidestick", "side stick"), (r"bassdrum|kick|^bd_", "bass drum"), (r"snare|^snr_", "snare"),
                (r"clap", "hand clap"), (r"cowbell", "cowbell"), (r"crash", "crash cymbal"),
                (r"ride_?bell|^bell-", "ride bell"), (r"ride", "ride cymbal"), (r"splash", "splash cymbal"),
                (r"shaker", "maracas"), (r"clav", "claves"), (r"wood", "wood block"), (r"conga", "open conga"),
                (r"tom", "tom"))
DRUM_SAMPLE_PACKAGES = ("hydrogen-data", "exadrums")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                   "klatt3", "klatt4", "croak", "whisper", "adam", "Andy", "annie", "aunty", "benjamin", "david",
                   "ed", "edward", "Gene", "iven", "john", "linda", "max", "Michael", "paul", "quincy", "rob",
                   "robert", "steph", "Storm", "travis", "victor", "Alicia", "Andrea", "belinda", "grandma",
                   "grandpa", "shelby", "norbert", "zac")
FLITE_VOICES = ("kal16", "awb", "rms", "slt")


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
                          (r"GNU General Public License,?\s+(?:as published.*?)?version 2", "GPL-2"),
                          (r"GNU General Public License,?\s+(?:as published.*?)?version 3", "GPL-3"),
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


def write_midi(path: Path, *, channel: int, program: int, notes, bank: int = 0) -> None:
    """A format-0 MIDI file: one program, each (note, velocity) held NOTE_S then GAP_S of silence."""
    tps = 480  # ticks per quarter = ticks per second at 60 bpm
    ev = bytearray()
    ev += _vlq(0) + bytes([0xFF, 0x51, 0x03]) + (1_000_000).to_bytes(3, "big")  # 60 bpm
    ev += _vlq(0) + bytes([0xB0 | channel, 0x00, bank >> 7 & 0x7F])
    ev += _vlq(0) + bytes([0xB0 | channel, 0x20, bank & 0x7F])
    ev += _vlq(0) + bytes([0xC0 | channel, program])
    for note, velocity in notes:
        ev += _vlq(0) + bytes([0x90 | channel, note, velocity])
        ev += _vlq(int(NOTE_S * tps)) + bytes([0x80 | channel, note, 0])
        ev += _vlq(int(GAP_S * tps)) + bytes([0xFF, 0x01, 0x00])  # an empty text event marks the gap
    ev += _vlq(0) + bytes([0xFF, 0x2F, 0x00])
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + tps.to_bytes(2, "big")
    path.write_bytes(header + b"MTrk" + len(ev).to_bytes(4, "big") + bytes(ev))


def trim_tail(clip: np.ndarray, *, sample_rate: int, floor_db: float = 50.0, keep_s: float = 0.05) -> np.ndarray:
    """``clip`` without the silence after its sound: up to ``keep_s`` past the last sample within
    ``floor_db`` of its peak (a closed hi-hat rings 0.1 s of the 3 s each note is given)."""
    level = np.abs(clip)
    if clip.size == 0 or level.max() <= 0:
        return clip[:0]
    loud = np.flatnonzero(level >= level.max() * 10 ** (-floor_db / 20))
    return clip[: min(clip.size, int(loud[-1]) + 1 + int(keep_s * sample_rate))]


def render_soundfont(tree: Path, dest: Path, *, sample_rate: int = 16000, drums_only: bool = False
                     ) -> list[tuple[Path, float]]:
    """Render a soundfont package, one wav per note.

    A General MIDI font: every program at PITCHES x VELOCITIES and the drum kits of bank 128 at
    DRUM_NOTES. ``drums_only``: every font file of the package is one drum kit (its first preset),
    rendered at DRUM_NOTES x KIT_VELOCITIES as ``kit000``, ``kit001``, ...
    """
    if shutil.which("fluidsynth") is None:
        raise SystemExit("fluidsynth is needed to render soundfonts: apt-get install fluidsynth")
    fonts = sorted({p.resolve() for p in tree.rglob("*") if p.suffix.lower() in {".sf2", ".sf3"} and p.exists()})
    if not fonts:
        raise SystemExit(f"no soundfont in {tree}")
    if drums_only:
        kit_notes = [(n, v) for v in KIT_VELOCITIES for n in DRUM_NOTES]
        jobs = [(font, f"kit{i:03d}", 0, 0, 0, kit_notes) for i, font in enumerate(fonts)]
    else:
        pitched = [(n, v) for v in VELOCITIES for n in PITCHES]
        drums = [(n, v) for v in VELOCITIES for n in DRUM_NOTES]
        jobs = [(fonts[0], f"prog{p:03d}", 0, p, 0, pitched) for p in range(128)]
        jobs += [(fonts[0], f"kit{k:03d}", 9, k, 128, drums) for k in DRUM_KITS]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for font, name, channel, program, bank, notes in jobs:
            mid, wav = Path(tmp) / f"{name}.mid", Path(tmp) / f"{name}.wav"
            write_midi(mid, channel=channel, program=program, notes=notes, bank=bank)
            _run(["fluidsynth", "-ni", "-g", "0.6", "-r", str(sample_rate), "-F", str(wav), str(font), str(mid)])
            out += split_notes(wav, notes, dest / name, name=name)
    return out


def split_notes(wav: Path, notes, dest: Path, *, name: str) -> list[tuple[Path, float]]:
    """Cut a render of :func:`write_midi`'s notes into one wav per note, each without its silent tail."""
    audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    step = int((NOTE_S + GAP_S) * sr)
    out = []
    for i, (note, velocity) in enumerate(notes):
        clip = trim_tail(audio[i * step:(i + 1) * step], sample_rate=sr)
        if clip.size == 0 or np.max(np.abs(clip)) < 1e-3:  # a kit without this note
            continue
        target = dest / f"{name}_note{note:03d}_v{velocity:03d}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(target, clip, sr, subtype="PCM_16")
        out.append((target, clip.size / sr))
    return out


def render_patches(tree: Path, dest: Path, *, sample_rate: int = 16000) -> list[tuple[Path, float]]:
    """Render a GUS patch set (freepats) through ``timidity``, as :func:`render_soundfont` renders a font:
    every program its config lists at PITCHES x VELOCITIES, and its drum set at DRUM_NOTES x KIT_VELOCITIES."""
    if shutil.which("timidity") is None:
        raise SystemExit("timidity is needed to render GUS patches: apt-get install timidity")
    found = sorted(tree.glob("etc/timidity/*.cfg"))
    if not found:
        raise SystemExit(f"no timidity config in {tree}")
    lines = found[0].read_text(encoding="utf-8", errors="replace").splitlines()
    patches = tree / "usr/share/midi" / found[0].stem
    # The config names its patches under the installed path; point it at the unpacked tree.
    config = "\n".join(f"dir {patches}" if line.startswith("dir ") else line for line in lines)
    programs, section = [], None
    for line in lines:
        words = line.split()
        if words[:1] in (["bank"], ["drumset"]):
            section = words[0]
        elif section == "bank" and words and words[0].isdigit():
            programs.append(int(words[0]))
    pitched = [(n, v) for v in VELOCITIES for n in PITCHES]
    kit = [(n, v) for v in KIT_VELOCITIES for n in DRUM_NOTES]
    jobs = [(f"prog{p:03d}", 0, p, pitched) for p in programs] + [("kit000", 9, 0, kit)]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "patches.cfg"
        cfg.write_text(config + "\n", encoding="utf-8")
        for name, channel, program, notes in jobs:
            mid, wav = Path(tmp) / f"{name}.mid", Path(tmp) / f"{name}.wav"
            write_midi(mid, channel=channel, program=program, notes=notes)
            _run(["timidity", "-c", str(cfg), "-Ow1M", "-s", str(sample_rate), "-o", str(wav), str(mid)])
            out += split_notes(wav, notes, dest / name, name=name)
    return out


@functools.lru_cache(maxsize=None)  # speech synthesis and the recorded prompts' groups both read them
def transcripts(language: str, work: Path) -> dict[str, str]:
    """Asterisk's prompt transcripts for ``language``: prompt name (``digits/1``) -> text (``one``)."""
    import gzip

    package = f"asterisk-core-sounds-{language}"
    tree, _ = fetch(package, work)
    found = list(tree.glob(f"usr/share/doc/{package}/core-sounds-*.txt.gz"))
    if not found:
        raise SystemExit(f"{package} has no transcript")
    out = {}
    for line in gzip.open(found[0], "rt", encoding="utf-8", errors="replace").read().splitlines():
        if ":" in line and not line.startswith(";"):
            name, text = line.split(":", 1)
            out[name.strip()] = text.strip()
    return out


def normalise_text(text: str) -> str:
    """Lower case, letters and apostrophes only, single spaces: the key of a ``say:`` group."""
    return " ".join(re.findall(r"[^\W\d_]+(?:'[^\W\d_]+)?", text.lower()))


def spoken(text: str) -> str:
    """What a transcript line says, normalised; '' for a bracketed description of a tone (not speech)."""
    return "" if text.startswith("[") else normalise_text(text)


def tts_texts(texts: dict[str, str], *, max_words: int = MAX_WORDS) -> list[str]:
    """Every word of the transcripts and every prompt of at most ``max_words`` words."""
    out: list[str] = []
    for text in texts.values():
        said = spoken(text)
        for unit in ([said] if said and len(said.split()) <= max_words else []) + said.split():
            if unit not in out:
                out.append(unit)
    return out


def synthesize(text: str, language: str, wav: Path, *, engine: str, voice: str, rng) -> None:
    """Speak ``text`` into ``wav`` with ``flite`` or ``espeak-ng`` (pitch and speed drawn from ``rng``)."""
    if engine == "flite":
        _run(["flite", "-voice", voice, "--setf", f"duration_stretch={rng.uniform(0.85, 1.2):.2f}",
              "--setf", f"int_f0_target_mean={rng.uniform(85, 190):.0f}", "-t", text, "-o", str(wav)])
    else:
        _run(["espeak-ng", "-v", f"{language}+{voice}", "-p", str(int(rng.integers(20, 81))),
              "-s", str(int(rng.integers(130, 191))), "-w", str(wav), text])


def render_speech(out: Path, work: Path, *, languages=TTS_LANGUAGES, en_voices: int = 10, voices: int = 5,
                  seed: int = 0) -> list[dict]:
    """Synthesize the transcripts' words and short prompts; rows for the manifest (with their ``say:`` group).

    English gets ``en_voices`` renders per text (the four flite voices, the rest espeak-ng
    variants), other languages ``voices`` espeak-ng variants. Also returns the rows that give the
    recorded Asterisk prompts their ``say:`` groups (see :func:`asterisk_groups`).
    """
    for tool in ("flite", "espeak-ng"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed to synthesize speech: apt-get install flite espeak-ng")
    engines = {}
    for engine in TTS_ENGINES:
        tree, version = fetch(engine, work)
        engines[engine] = (version, licence_of(tree, engine))
        shutil.rmtree(tree, ignore_errors=True)
    rng = np.random.default_rng(seed)
    rows = []
    for language in languages:
        texts = tts_texts(transcripts(language, work))
        dest = out / "audio" / f"tts-{language}"
        shutil.rmtree(dest, ignore_errors=True)
        log.info("synthesizing %d texts in %s", len(texts), language)
        for i, text in enumerate(texts):
            n = en_voices if language == "en" else voices
            picks = [("flite", v) for v in FLITE_VOICES] if language == "en" else []
            picks += [("espeak-ng", str(v)) for v in rng.choice(ESPEAK_VARIANTS, size=n - len(picks), replace=False)]
            for engine, voice in picks:
                wav = dest / f"{engine}-{voice}" / f"{i:05d}.wav"
                wav.parent.mkdir(parents=True, exist_ok=True)
                synthesize(text, language, wav, engine=engine, voice=voice, rng=rng)
                d = duration_s(wav)
                if d is None or d < 0.05:
                    wav.unlink(missing_ok=True)
                    continue
                version, licence = engines[engine]
                rows.append({"package": engine, "version": version, "licence": licence, "kind": "speech-tts",
                             "file": str(wav.relative_to(out)), "duration_s": round(d, 3),
                             "group": f"say:{language}:{text}"})
    return rows


def asterisk_groups(work: Path, *, languages=TTS_LANGUAGES) -> dict[str, str]:
    """``<language>/<prompt name>`` -> ``say:`` group, for the recorded prompts of at most ``MAX_WORDS`` words."""
    out = {}
    for language in languages:
        for name, text in transcripts(language, work).items():
            said = spoken(text)
            if said and len(said.split()) <= MAX_WORDS:
                out[f"{language}/{name}"] = f"say:{language}:{said}"
    return out


def group_of(package: str, file: str, *, asterisk: dict[str, str]) -> str:
    """The ``group`` of a corpus file from how it was made (see the module docstring); '' for none."""
    path = Path(file)
    stem = path.stem
    if re.search(r"soundfont(-small)?$", package) or package == "freepats":
        m = re.match(r"(prog|kit)(\d+)_note(\d+)", stem)
        if m and m.group(1) == "prog":
            return f"{package}:prog{m.group(2)}"
        if m:
            return f"drum:{GM_DRUMS.get(int(m.group(3)), 'note' + m.group(3))}"
    if (package == "lmms-common" and path.parent.name == "drums") or package in DRUM_SAMPLE_PACKAGES:
        for pattern, name in SAMPLE_DRUMS:
            if re.search(pattern, stem, flags=re.IGNORECASE):
                return f"drum:{name}"
    if package == "hedgewars-data" and "voices" in path.parts:
        return f"line:{stem.lower()}"
    m = re.match(r"asterisk-core-sounds-(\w+)-wav$", package)
    if m:
        parts = path.parts
        rel = "/".join(parts[parts.index("sounds") + 2:]) if "sounds" in parts else stem
        return asterisk.get(f"{m.group(1)}/{rel.rsplit('.', 1)[0]}", "")
    return ""


def validation_label(name: str) -> str:
    """sonic-pi-samples' kind of sound, from its file name: ``bd_haus.flac`` -> ``bd``."""
    stem = Path(name).stem
    return stem.split("_")[0] if "_" in stem else stem.split("-")[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder for the corpus (about 2 GB while it is built)")
    ap.add_argument("--packages", nargs="*", help="only these packages, and 'speech' for the synthesized speech "
                                                   "(default: all but the extra ones: "
                                                   + ", ".join(p for p, _ in EXTRA_PACKAGES) + ")")
    ap.add_argument("--keep-debs", action="store_true", help="keep the downloaded .deb files")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = args.out.resolve()
    work = out / "_work"
    chosen = [p for p in PACKAGES if not args.packages or p[0] in args.packages]
    chosen += [p for p in EXTRA_PACKAGES if args.packages and p[0] in args.packages]
    rows = []
    for package, kind in chosen + [(VALIDATION, "validation")]:
        log.info("fetching %s", package)
        tree, version = fetch(package, work)
        licence = licence_of(tree, package)
        dest = out / ("validation" if kind == "validation" else "audio") / package
        shutil.rmtree(dest, ignore_errors=True)
        if kind in ("soundfont", "drumfont"):
            files = render_soundfont(tree, dest, drums_only=kind == "drumfont")
        elif kind == "patchset":
            files = render_patches(tree, dest)
        else:
            files = collect_audio(tree / AUDIO_UNDER.get(package, ""), dest)
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
    if not args.packages or "speech" in args.packages:
        rows += render_speech(out, work)
    manifest = out / "manifest.csv"
    if args.packages and manifest.exists():  # a partial rebuild keeps the other packages' rows
        with open(manifest, newline="", encoding="utf-8") as fh:
            done = {r["package"] for r in rows}
            rows = [r for r in csv.DictReader(fh) if r["package"] not in done] + rows
        for r in rows:
            r["duration_s"] = float(r["duration_s"])
    asterisk = asterisk_groups(work)
    for r in rows:  # synthesized speech has its group from its text; the rest from where it lies
        if r["kind"] not in ("speech-tts", "validation"):
            r["group"] = group_of(r["package"], r["file"], asterisk=asterisk)
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["package", "version", "licence", "kind", "file", "duration_s", "group"],
                           restval="")
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
