"""Hostile inputs: audio entries, file names, reference tables and run folders made to break a run.

Usage::

    python scripts/fuzz_inputs.py --out DIR [--only KIND ...] [--timeout 300] [--max-gb 2] [overrides ...]

Builds under ``DIR`` and runs the ``sound-cluster`` command on:

1. **folder** (one fit): a few good clips beside every kind of bad audio the ingest handles (empty, text,
   random bytes, a PNG, truncated, no frames, NaN and infinite samples, too short, header only, unreadable
   when not root), entries that are not files (a FIFO, links to ``/dev/zero`` and ``/dev/urandom``, a
   socket, a folder, broken and self links), headers that lie (1 Hz and 10 MHz rates, a FLAC promising 2^36
   frames, a sparse 3 GB WAV, a WAV claiming 4 GB of data, 1,000 channels, more seconds than
   ``data.max_file_s``), content other than the extension promises (MAT5, FLAC and AIFF named ``.wav``),
   and good audio under hostile names (terminal escape sequences, newlines forging a log line, a bidi
   override, matplotlib maths, bytes that are not UTF-8, cells a spreadsheet runs as formulas, HTML).
   Every good file must be clustered and get its tree; every bad entry must be in ``failures.csv``;
   no log line may carry a raw control character; no CSV cell may start a formula.
2. **references** (one ``task=apply`` each, with the fit's models, on three short files): Raven tables
   with events past the files' end and times in milliseconds, 3,000 events per file, 13 events on a 1 s
   file, overlapping events, tables that are not UTF-8, short rows, a 200 kB field, a FIFO and a link to
   ``/dev/zero`` among the tables. Each must end with exit 0 (with a warning) or a one-line error (exit 2).
3. **runs** (one ``task=recluster`` or ``task=apply`` each, on a tampered copy of the fit's run folder):
   a summary pointing ``data.labels`` at ``/etc/passwd`` and the cache elsewhere, a ``clusters.csv`` name
   leading out of the folder, ``units.npz`` indices negative or past the end, ``hierarchy.npz`` of random
   bytes or holding a pickle, a ``params.json`` asking for 1.6 MHz, ``clusters.csv`` not UTF-8 or with short
   rows, a FIFO in place of a posteriors file, a ``summary.json`` that is not JSON, and the run reclustered
   from another working folder by a relative path.

Each command runs under a watchdog (``--timeout`` seconds; the process tree's resident memory sampled every
0.25 s, killed at twice ``--max-gb``). One line per probe: group, kind, outcome, seconds, peak GB of the run
it was part of. The last line reads ``fuzz: N probes, H hangs, M over memory, T tracebacks, L lost files,
D other defects``; the exit status is 0 only when all of them are 0. Extra arguments are config overrides
for every run (``debug=tiny`` is always given: the probes test the inputs, not the model).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from soak import descendants, rss  # scripts/ is on the path of a script run from it

from sound_cluster.ingest.failures import display_path
from sound_cluster.io_utils import from_spreadsheet_cell
from sound_cluster.run_folder import RunFolder

SR = 16000
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
CONTROL = [chr(c) for c in (*range(0, 9), *range(11, 32), 127)] + ["\u202e", "\u2066"]
FORGED = "[2026-01-01 00:00:00,000][sound_cluster][INFO] - forged"


# ---------------------------------------------------------------- audio

def _clip(seed: int, seconds: float = 1.0) -> np.ndarray:
    """A short synthetic sound: two kinds (tone bursts, noise bursts), so the fit has something to cluster."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    if seed % 2:
        y = np.sin(2 * np.pi * (300 + 40 * seed) * t)
    else:
        y = rng.standard_normal(len(t))
    return (0.3 * y * np.hanning(len(t))).astype(np.float32)


def _wav_header(*, rate: int, channels: int, bits: int, data_bytes: int) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", (36 + data_bytes) & 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_bytes & 0xFFFFFFFF))


def _write(path: Path, y: np.ndarray, sr: int = SR, *, format: str = "WAV", **kw) -> None:
    with open(path, "wb") as fh:  # opened here: a name that is not UTF-8 is no str libsndfile takes
        sf.write(fh, y, sr, format=format, **kw)


def _bad_audio(d: Path, only: set[str] | None) -> dict[str, tuple[bytes, str]]:
    """Bad entries (those in ``only``, or all): kind -> (file name, what is expected: ``failed`` or ``either``)."""
    made: dict[str, tuple[bytes, str]] = {}

    def put(kind: str, name: str, make, expect: str = "failed") -> None:
        if only is not None and kind not in only:
            return
        try:
            make(d / name)
        except OSError as err:  # e.g. sockets on a file system that refuses them
            print(f"fuzz: cannot build {kind}: {err}", file=sys.stderr)
            return
        made[kind] = (name.encode(), expect)

    put("empty", "empty.wav", lambda p: p.write_bytes(b""))
    put("text", "text.wav", lambda p: p.write_text("not audio\n" * 50))
    put("random_mp3", "random.mp3", lambda p: p.write_bytes(np.random.default_rng(1).bytes(20000)))
    put("png_as_ogg", "picture.ogg", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(4000)))

    def truncated(p):
        _write(p, _clip(3), subtype="PCM_16")
        p.write_bytes(p.read_bytes()[:9000])
    put("truncated", "truncated.wav", truncated)
    put("zero_frames", "zero_frames.wav", lambda p: _write(p, np.zeros(0, np.float32)))

    def nonfinite(value):
        def make(p):
            y = _clip(5)
            y[100] = value
            _write(p, y, subtype="FLOAT")
        return make
    put("nan", "nan.wav", nonfinite(np.nan))
    put("inf", "inf.wav", nonfinite(np.inf))
    put("too_short", "too_short.wav", lambda p: _write(p, _clip(7)[:100]))
    put("header_only", "header_only.wav", lambda p: p.write_bytes(_wav_header(rate=SR, channels=1, bits=16,
                                                                               data_bytes=0)))
    if not IS_ROOT:
        def unreadable(p):
            _write(p, _clip(9))
            os.chmod(p, 0)
        put("unreadable", "unreadable.wav", unreadable)
    # Entries that are not regular files.
    put("fifo", "pipe.wav", lambda p: os.mkfifo(p))
    put("dev_zero_link", "zero.wav", lambda p: os.symlink("/dev/zero", p))
    put("dev_urandom_link", "urandom.flac", lambda p: os.symlink("/dev/urandom", p))

    def sock(p):
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()
    put("socket", "sock.wav", sock)
    put("folder_named_wav", "folder.wav", lambda p: p.mkdir())
    put("broken_link", "broken.wav", lambda p: os.symlink(d / "nowhere.wav", p))
    put("self_link", "self.wav", lambda p: os.symlink(p, p))
    # Headers that lie.
    put("rate_1hz", "rate1.wav", lambda p: p.write_bytes(_wav_header(rate=1, channels=1, bits=16, data_bytes=600)
                                                          + bytes(600)))
    put("rate_10mhz", "rate10m.wav", lambda p: p.write_bytes(
        _wav_header(rate=10_000_000, channels=1, bits=16, data_bytes=32000) + bytes(32000)))

    def flac_forged(p):
        _write(p, _clip(11), format="FLAC", subtype="PCM_16")
        b = bytearray(p.read_bytes())
        b[8 + 13] |= 0x0F  # STREAMINFO: total samples (36 bits) all ones
        b[8 + 14:8 + 18] = b"\xff\xff\xff\xff"
        p.write_bytes(bytes(b))
    put("flac_2e36_frames", "forged.flac", flac_forged)

    def sparse(p):
        size = 3 << 30
        with open(p, "wb") as fh:
            fh.write(_wav_header(rate=8000, channels=1, bits=8, data_bytes=size - 44))
            fh.truncate(size)
    put("sparse_3gb", "sparse.wav", sparse)
    put("data_4gb_claimed", "claims4gb.wav", lambda p: p.write_bytes(
        _wav_header(rate=SR, channels=1, bits=16, data_bytes=0xFFFFFFF0) + (_clip(13) * 3e4).astype("<i2").tobytes()))

    def channels(p):
        n = 1000
        p.write_bytes(_wav_header(rate=SR, channels=n, bits=16, data_bytes=n * 2 * 2048) + bytes(n * 2 * 2048))
    put("channels_1000", "channels1000.wav", channels, expect="either")
    put("over_max_file_s", "long.wav", lambda p: _write(p, np.tile(_clip(15), 25)))
    # Content other than the extension promises.
    put("mat5_as_wav", "matlab.wav", lambda p: _write(p, _clip(17), format="MAT5", subtype="DOUBLE"))
    put("flac_as_wav", "flac_inside.wav", lambda p: _write(p, _clip(19), format="FLAC", subtype="PCM_16"))
    put("aiff_as_wav", "aiff_inside.wav", lambda p: _write(p, _clip(21), format="AIFF", subtype="PCM_16"))
    return made


# Good audio under hostile names: kind -> raw file name.
HOSTILE_NAMES = {
    "esc_name": b"\x1b]0;owned\x07\x1b[2Jesc.wav",
    "newline_name": ("a\n" + FORGED + ".wav").encode(),
    "cr_name": b"carriage\rreturn.wav",
    "bidi_name": "\u202ewav.exe.wav".encode(),
    "math_name": b"$\\undefinedmacro$.wav",
    "non_utf8_name": b"caf\xe9.wav",
    "formula_name": b"=1+2.wav",
    "plus_name": b"+cmd.wav",
    "minus_name": b"-2.wav",
    "at_name": b"@SUM(1).wav",
    "html_name": b"<img src=x onerror=alert(1)>.wav",
    "long_name": b"n" * 236 + b".wav",
}


def _deep_path(root: Path) -> bytes:
    """A good clip under 22 nested folders of 200 bytes: a path past Linux's 4,096-byte PATH_MAX."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for i in range(22):
            name = f"{i:02d}" + "d" * 198
            os.mkdir(name, dir_fd=fd)
            new = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = new
        with os.fdopen(os.open("deep.wav", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as fh:
            sf.write(fh, _clip(50), SR, format="WAV")
    finally:
        os.close(fd)
    return bytes(root) + b"".join(b"/" + f"{i:02d}".encode() + b"d" * 198 for i in range(22)) + b"/deep.wav"


def _npz_bomb(path: Path, key: str, *, gb: float = 3.0) -> None:
    """An npz whose ``key`` holds ``gb`` GB of zeros compressed into a few MB (other arrays of the file kept)."""
    import zipfile

    kept = {}
    if path.is_file() and not path.is_fifo():
        with np.load(path, allow_pickle=False) as z:
            kept = {k: z[k] for k in z.files if k != key}
    rows = int(gb * (1 << 30) / 64 / 4)
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, 64)}
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k, a in kept.items():
            with zf.open(f"{k}.npy", "w") as m:
                np.lib.format.write_array(m, a)
        with zf.open(f"{key}.npy", "w", force_zip64=True) as m:
            np.lib.format.write_array_header_1_0(m, header)
            zeros = bytes(64 << 20)
            for _ in range(rows * 64 * 4 // len(zeros)):
                m.write(zeros)
    path.unlink(missing_ok=True)
    tmp.rename(path)


@dataclass
class Run:
    rc: int | None
    seconds: float
    peak_gb: float
    stdout: str
    stderr: str
    killed: str = ""


@dataclass
class Probe:
    group: str
    kind: str
    outcome: str = ""
    defects: list[str] = field(default_factory=list)
    run: Run | None = None
    lost: int = 0


def _rss_tree(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    return sum(rss(p) for p in (pid, *descendants(pid)))


def run_cli(args: list[str], *, timeout: float, max_gb: float, cwd: Path | None = None) -> Run:
    """Run ``sound-cluster ARGS`` in its own process group under the watchdog."""
    exe = str(Path(sys.executable).with_name("sound-cluster"))
    t0 = time.perf_counter()
    proc = subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                            start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    out: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda k=k, s=s: out.__setitem__(k, s.read()), daemon=True)
               for k, s in (("out", proc.stdout), ("err", proc.stderr))]
    for r in readers:
        r.start()
    peak, killed = 0, ""
    while proc.poll() is None:
        peak = max(peak, _rss_tree(proc.pid))
        if peak > 2 * max_gb * (1 << 30):
            killed = f"over {2 * max_gb:g} GB"
        elif time.perf_counter() - t0 > timeout:
            killed = f"hung past {timeout:g} s"
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.25)
    proc.wait()
    for r in readers:
        r.join(10)
    dec = lambda b: (b or b"").decode("utf-8", "surrogateescape")  # noqa: E731
    return Run(proc.returncode, time.perf_counter() - t0, peak / (1 << 30), dec(out.get("out")), dec(out.get("err")),
               killed)


def _common_defects(run: Run, max_gb: float, *, ok_codes=(0, 2)) -> list[str]:
    d = []
    if "Traceback (most recent call last)" in run.stderr + run.stdout:
        d.append("traceback")
    if run.rc not in ok_codes and not run.killed:
        d.append(f"exit {run.rc}")
    return d


def _last_error(run: Run) -> str:
    """The error a failed command logged (its last ERROR line), without the log prefix."""
    lines = [ln for ln in (run.stdout + "\n" + run.stderr).splitlines() if "[ERROR]" in ln]
    return lines[-1].split("] - ", 1)[-1][:110] if lines else ""


def _raw_controls(text: str) -> list[str]:
    found = sorted({repr(c) for c in CONTROL if c in text})
    if any(line.startswith(FORGED) for line in text.splitlines()):
        found.append("a forged log line")
    return found


def _csv_cells(path: Path) -> list[list[str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return list(csv.reader(fh))


def folder_probes(out: Path, only: set[str] | None, *, timeout: float, max_gb: float, overrides: list[str]
                  ) -> tuple[list[Probe], Path | None]:
    """Group 1: one fit over good clips, bad audio entries and hostile names."""
    audio = out / "folder"
    shutil.rmtree(audio, ignore_errors=True)
    audio.mkdir(parents=True)
    good: dict[str, bytes] = {}
    for i in range(6):
        name = f"good{i}.wav".encode()
        _write(Path(os.fsdecode(bytes(audio) + b"/" + name)), _clip(i + 1))
        good[f"good{i}"] = name
    bad = _bad_audio(audio, only)
    names = {k: v for k, v in HOSTILE_NAMES.items() if only is None or k in only}
    for i, name in enumerate(names.values()):
        _write(Path(os.fsdecode(bytes(audio) + b"/" + name)), _clip(30 + i))
    deep = _deep_path(audio) if only is None or "deep_path" in only else None
    # A bad file with a hostile name: its reason is logged as a warning.
    (audio / "\x1b[31mred\nFORGED.wav").write_text("not audio")
    run_dir = out / "runs" / "fit"
    shutil.rmtree(run_dir, ignore_errors=True)
    run = run_cli([f"data.path={audio}", f"hydra.run.dir={run_dir}", f"features.cache_dir={out / 'cache'}",
                   "debug=tiny", "executor.kind=process", "executor.n_workers=2", "output.max_plots=100",
                   "data.max_file_s=20", "units.kind=file", *overrides], timeout=timeout, max_gb=max_gb)
    folder = RunFolder(run_dir)
    # Tables name files as display_path shows them, with the spreadsheet guard on text cells.
    shown = {display_path(Path(os.fsdecode(bytes(audio) + b"/" + n)), audio): n
             for n in [*good.values(), *(v[0] for v in bad.values()), *names.values()]}
    clustered = {shown.get(from_spreadsheet_cell(r[0])) for r in _csv_cells(folder.clusters)[1:]}
    failed = {shown.get(from_spreadsheet_cell(r[0])): r[2] for r in _csv_cells(folder.failures)[1:]}
    names_out = {shown.get(from_spreadsheet_cell(r[0])): from_spreadsheet_cell(r[4])
                 for r in _csv_cells(folder.clusters)[1:]}
    log_text = run.stderr + ((run_dir / "cli.log").read_text(encoding="utf-8", errors="surrogateescape")
                             if (run_dir / "cli.log").is_file() else "")
    common = _common_defects(run, max_gb, ok_codes=(0,))
    controls = _raw_controls(log_text)
    formula = [c for f in (folder.clusters, folder.failures, folder.segments) for row in _csv_cells(f)[1:]
               for c in row if c[:1] in ("=", "+", "@") or (c[:1] == "-" and not _is_number(c))]
    probes = []

    def finish(p: Probe, outcome: str, extra: list[str]) -> None:
        p.outcome, p.run = outcome, run
        p.defects = common + extra + ([f"raw {', '.join(controls)} in the log"] if controls else [])
        probes.append(p)

    for kind, name in good.items():
        p = Probe("folder", kind)
        p.lost = int(name not in clustered)
        finish(p, "clustered" if not p.lost else "lost", [])
    for kind, (name, expect) in bad.items():
        p = Probe("folder", kind)
        if name in failed:
            finish(p, f"failed: {failed[name][:80]}", [])
        elif name in clustered:
            finish(p, "clustered", [] if expect == "either" else ["read as audio"])
        else:
            finish(p, "not reported", ["neither clustered nor in failures.csv"])
    if deep is not None:  # good audio 4,400 bytes deep: clustered, or its folder reported
        rel = display_path(Path(os.fsdecode(deep)), audio)
        p = Probe("folder", "deep_path")
        rows = [from_spreadsheet_cell(r[0]) for r in _csv_cells(folder.clusters)[1:]]
        reported = [from_spreadsheet_cell(r[0]) for r in _csv_cells(folder.failures)[1:]
                    if rel.startswith(from_spreadsheet_cell(r[0]).rstrip("/") + "/")]
        finish(p, "clustered" if rel in rows else f"its folder failed: {reported[0][-30:]}" if reported else "lost",
               [] if rel in rows or reported else ["neither clustered nor its folder in failures.csv"])
    for kind, name in names.items():
        p = Probe("folder", kind)
        extra = []
        if name not in clustered:
            p.lost = 1
            extra.append(f"lost ({failed.get(name, 'not in failures.csv')[:60]})")
        elif not folder.tree(names_out[name]).is_file():
            extra.append("no tree")
        elif not folder.plot(names_out[name]).is_file():
            extra.append("no plot")
        if kind in ("formula_name", "plus_name", "minus_name", "at_name") and formula:
            extra.append(f"formula cells {formula[:3]}")
        finish(p, "clustered" if not p.lost else "lost", extra)
    return probes, (run_dir if run.rc == 0 else None)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------- references

def _reference_probes(d: Path) -> dict[str, tuple[list[str], str]]:
    """kind -> (overrides, what the log must say: '' for nothing)."""
    refs = d / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    probes: dict[str, tuple[list[str], str]] = {}

    def table(name: str, text: str | bytes) -> Path:
        p = refs / name
        p.write_bytes(text.encode() if isinstance(text, str) else text)
        return p

    raven_head = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tAnnotation\n"
    ms = d / "raven_ms"
    ms.mkdir(exist_ok=True)
    for f in ("a", "b", "c"):  # times written in milliseconds: every event past the 1 s files' end
        (ms / f"{f}.Table.1.selections.txt").write_text(
            raven_head + "".join(f"{i}\tSpectrogram 1\t1\t{i * 700}\t{i * 700 + 350}\tx\n" for i in range(1, 200)))
    probes["raven_past_end_ms"] = ([f"data.segments={ms}"], "start at or after its end")
    rows = "".join(f"{f}.wav,{i / 3000:.6f},{(i + 1) / 3000:.6f},e{i % 7}\n" for f in "abc" for i in range(3000))
    probes["refs_3000_per_file"] = ([f"data.segments={table('many.csv', 'path,start_s,end_s,label' + chr(10) + rows)}"],
                                    "")
    rows = "".join(f"a.wav,{i / 13:.6f},{(i + 1) / 13:.6f},e{i}\n" for i in range(13))
    probes["refs_13_on_1s"] = ([f"data.segments={table('thirteen.csv', 'path,start_s,end_s,label' + chr(10) + rows)}"],
                               "")
    rows = "".join(f"b.wav,{s},{e},o\n" for s, e in ((0, 0.9), (0.1, 0.5), (0.2, 0.95), (0.2, 0.95), (0.99, 5)))
    probes["refs_overlapping"] = ([f"data.segments={table('overlap.csv', 'path,start_s,end_s,label' + chr(10) + rows)}"],
                                  "")
    probes["labels_not_utf8"] = ([f"data.labels={table('latin1.csv', b'path,label' + bytes([10]) + b'a.wav,caf' + bytes([0xe9, 10]))}"],
                                 "not UTF-8")
    probes["segments_short_row"] = ([f"data.segments={table('short.csv', 'path,start_s,end_s,label' + chr(10) + 'a.wav,0.1' + chr(10))}"],
                                    "")
    probes["labels_200kb_field"] = ([f"data.labels={table('huge.csv', 'path,label' + chr(10) + 'a.wav,' + 'x' * 200_000 + chr(10))}"],
                                    "")
    probes["refs_nan_times"] = ([f"data.segments={table('nan.csv', 'path,start_s,end_s,label' + chr(10) + 'a.wav,nan,inf,x' + chr(10))}"],
                                "")
    odd = d / "odd_tables"
    odd.mkdir(exist_ok=True)
    (odd / "a.txt").write_text("0.1\t0.4\tx\n")
    os.mkfifo(odd / "b.txt")
    os.symlink("/dev/zero", odd / "c.txt")
    probes["tables_fifo_and_dev_zero"] = ([f"data.segments={odd}", "data.segments_format=audacity"], "not a regular file")
    probes["labels_fifo"] = ([f"data.labels={refs / 'fifo.csv'}"], "")
    os.mkfifo(refs / "fifo.csv")
    probes["labels_etc_passwd"] = (["data.labels=/etc/passwd"], "")
    return probes


def reference_probes(out: Path, models: Path, only: set[str] | None, *, timeout: float, max_gb: float,
                     overrides: list[str]) -> list[Probe]:
    d = out / "references"
    shutil.rmtree(d, ignore_errors=True)
    audio = d / "audio"
    audio.mkdir(parents=True)
    for i, f in enumerate("abc"):
        _write(audio / f"{f}.wav", _clip(40 + i))
    probes = []
    for kind, (args, says) in _reference_probes(d).items():
        if only is not None and kind not in only:
            continue
        run_dir = out / "runs" / f"ref-{kind}"
        shutil.rmtree(run_dir, ignore_errors=True)
        run = run_cli(["task=apply", f"models={models}", f"data.path={audio}", f"hydra.run.dir={run_dir}",
                       f"features.cache_dir={out / 'cache'}", "debug=tiny", *args, *overrides],
                      timeout=timeout, max_gb=max_gb)
        p = Probe("references", kind, run=run)
        p.defects = _common_defects(run, max_gb)
        if says and says not in run.stderr + run.stdout:
            p.defects.append(f"the log does not say {says!r}")
        if "root:x:0:0" in run.stderr + run.stdout:
            p.defects.append("printed a line of /etc/passwd")
        p.outcome = "exit 0" if run.rc == 0 else f"exit {run.rc}: {_last_error(run)}"
        probes.append(p)
    return probes


# ---------------------------------------------------------------- run folders

def _tamper(kind: str, run: RunFolder, out: Path) -> tuple[list[str], Path | None]:
    """Change the copy ``run`` for ``kind``; returns extra overrides and the working folder (None: default)."""
    models = run.models

    def edit_summary(fn) -> None:
        s = json.loads(run.summary.read_text())
        fn(s)
        run.summary.write_text(json.dumps(s))

    def npz(path: Path, **changes) -> None:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays.update(changes)
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)

    def units():
        with np.load(models.units, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    if kind == "summary_points_elsewhere":
        def f(s):
            s["config"]["data"]["labels"] = "/etc/passwd"
            s["config"]["data"]["segments"] = "/etc"
            s["config"]["features"]["cache_dir"] = str(out / "evil_cache")
        edit_summary(f)
    elif kind == "clusters_name_dotdot":
        rows = list(csv.reader(open(run.clusters, newline="")))
        rows[1][4] = "../../outside/evil"
        with open(run.clusters, "w", newline="") as fh:
            csv.writer(fh).writerows(rows)
    elif kind == "units_negative_index":
        npz(models.units, unit_file=np.full_like(units()["unit_file"], -1))
    elif kind == "units_past_end":
        npz(models.units, end=units()["end"] + 10_000)
    elif kind == "units_wrong_width":
        npz(models.units, vectors=np.ones((len(units()["vectors"]), 3), np.float32))
    elif kind == "hierarchy_random_bytes":
        models.hierarchy.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "hierarchy_pickle":
        with open(models.hierarchy, "wb") as fh:
            np.savez(fh, x=np.array([{"a": 1}], dtype=object), tree=np.zeros((0, 4)), item=np.zeros(1))
    elif kind == "hierarchy_bad_linkage":
        with np.load(models.hierarchy) as z:
            x, item = z["x"], z["item"]
        with open(models.hierarchy, "wb") as fh:
            np.savez(fh, x=x, tree=np.full((max(len(x) - 1, 1), 4), -5.0), item=item)
    elif kind == "params_1_6_mhz":
        p = json.loads(models.params.read_text())
        p["features"]["sample_rate"] = 1_600_000
        models.params.write_text(json.dumps(p))
        return ["task=apply", f"models={models.dir}", f"data.path={out / 'folder'}"], None
    elif kind == "clusters_not_utf8":
        run.clusters.write_bytes(run.clusters.read_bytes() + b"caf\xe9.wav,0,1.0,1.0,caf\xe9.wav\n")
    elif kind == "clusters_short_rows":
        run.clusters.write_text("path,cluster,confidence,duration_s,name\ngood0.wav,0\n")
    elif kind == "posteriors_fifo":
        p = next(run.dir.glob("posteriors/*.npz"))
        p.unlink()
        os.mkfifo(p)
    elif kind == "posteriors_zip_bomb":
        _npz_bomb(next(run.dir.glob("posteriors/*.npz")), "embedding")
    elif kind == "units_zip_bomb":
        _npz_bomb(models.units, "vectors")
    elif kind == "summary_not_json":
        run.summary.write_text("{not json")
    elif kind == "recluster_from_elsewhere":
        elsewhere = out / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        return [f"run={os.path.relpath(run.dir, elsewhere)}"], elsewhere
    return [], None


RUN_KINDS = ("summary_points_elsewhere", "clusters_name_dotdot", "units_negative_index", "units_past_end",
             "units_wrong_width", "hierarchy_random_bytes", "hierarchy_pickle", "hierarchy_bad_linkage",
             "params_1_6_mhz", "clusters_not_utf8", "clusters_short_rows", "posteriors_fifo", "posteriors_zip_bomb",
             "units_zip_bomb", "summary_not_json",
             "recluster_from_elsewhere")


def run_probes(out: Path, fit: Path, only: set[str] | None, *, timeout: float, max_gb: float,
               overrides: list[str]) -> list[Probe]:
    probes = []
    for kind in RUN_KINDS:
        if only is not None and kind not in only:
            continue
        copy = out / "tampered" / kind
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(fit, copy, ignore=shutil.ignore_patterns("report*", "plots", "cli.log", ".hydra"))
        extra, cwd = _tamper(kind, RunFolder(copy), out)
        run_dir = out / "runs" / f"run-{kind}"
        shutil.rmtree(run_dir, ignore_errors=True)
        args = extra if extra and extra[0] == "task=apply" else ["task=recluster", f"run={copy}", "model.n_clusters=3",
                                                                 *extra]
        run = run_cli([*args, f"hydra.run.dir={run_dir}", "debug=tiny", *overrides], timeout=timeout,
                      max_gb=max_gb, cwd=cwd)
        p = Probe("runs", kind, run=run)
        p.defects = _common_defects(run, max_gb)
        if "root:x:0:0" in run.stderr + run.stdout:
            p.defects.append("printed a line of /etc/passwd")
        if (out / "evil_cache").exists():
            p.defects.append("wrote into the cache folder the run's summary named")
        if kind == "recluster_from_elsewhere" and run.rc != 0:
            p.defects.append("a relative run path from another folder failed")
        if kind.startswith(("units_", "hierarchy_", "clusters_name", "params_", "posteriors_")) and run.rc == 0:
            p.defects.append("accepted")
        p.outcome = "exit 0" if run.rc == 0 else f"exit {run.rc}: {_last_error(run)}"
        probes.append(p)
    return probes


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="working folder (built anew)")
    ap.add_argument("--only", nargs="*", default=None, help="probe kinds to run (default: all)")
    ap.add_argument("--groups", nargs="*", default=["folder", "references", "runs"],
                    choices=["folder", "references", "runs"])
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds before a command counts as hung")
    ap.add_argument("--max-gb", type=float, default=2.0, help="peak resident memory a run may use")
    args, overrides = ap.parse_known_args(argv)
    out = args.out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only) if args.only else None
    probes, fit = folder_probes(out, only, timeout=args.timeout, max_gb=args.max_gb, overrides=overrides)
    if fit is None and ({"references", "runs"} & set(args.groups)):
        print("fuzz: the fit over the hostile folder failed; the reference and run-folder probes need its models",
              file=sys.stderr)
    elif fit is not None:
        if "references" in args.groups:
            probes += reference_probes(out, RunFolder(fit).models.dir, only, timeout=args.timeout,
                                       max_gb=args.max_gb, overrides=overrides)
        if "runs" in args.groups:
            probes += run_probes(out, fit, only, timeout=args.timeout, max_gb=args.max_gb, overrides=overrides)
    if "folder" not in args.groups:
        probes = [p for p in probes if p.group != "folder"]
    hangs = over = tracebacks = lost = other = 0
    for p in probes:
        r = p.run
        hang = bool(r and r.killed.startswith("hung"))
        mem = bool(r and (r.killed.startswith("over") or r.peak_gb > args.max_gb))
        tb = "traceback" in p.defects
        rest = [d for d in p.defects if d != "traceback"]
        hangs, over, tracebacks, lost = hangs + hang, over + mem, tracebacks + tb, lost + p.lost
        other += bool(rest) and not p.lost
        flags = ", ".join(([r.killed] if r and r.killed else []) + p.defects)
        print(f"{p.group:<10} {p.kind:<26} {p.outcome[:90]:<90} {r.seconds if r else 0:6.1f} s "
              f"{r.peak_gb if r else 0:5.2f} GB" + (f"  DEFECT: {flags}" if flags else ""))
    print(f"fuzz: {len(probes)} probes, {hangs} hangs, {over} over memory, {tracebacks} tracebacks, {lost} lost files, "
          f"{other} other defects")
    return int(bool(hangs or over or tracebacks or lost or other))


if __name__ == "__main__":
    sys.exit(main())
