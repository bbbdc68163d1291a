"""A soak at archive scale: thousands of files, one in ten broken, a worker killed and the run stopped mid-way.

Usage::

    python scripts/soak.py --out DIR [--files 10000] [--bad-share 0.1] [--executors process dask] [overrides ...]

Builds ``DIR/audio``: ``--files`` short files in nested folders (two levels, at most 100 files a folder),
synthesized (tones, chirps, noise bands) and cut from the bundled demo clips, as wav, flac, ogg and mp3 at
8 to 48 kHz, a few with names that are not UTF-8, 240 bytes long, or that collide once escaped. A share of
``--bad-share`` is broken in every way the ingest knows: empty, text named .wav, random bytes named .mp3, a
PNG named .ogg, truncated, no frames, NaN samples, too short, and (not as root) unreadable; one folder
holds a symlink loop. Then, for each executor:

1. ``uninterrupted``: a fit from a cold feature cache;
2. ``interrupted``: the same fit from another cold cache, a worker SIGKILLed once a fifth of the features
   are cached (a small folder's features may all be done before a worker is seen: then the first worker of a
   later stage), the run SIGTERMed once the fold has written trees, then the same command again with
   ``output.overwrite=true``;

and checks: every good file has a row in clusters.csv and a tree whose source is that file (a tree or row of
another file counts as mixed); every bad file has a row in failures.csv; ``files_found = processed + failed``;
the resumed run's clusters.csv and trees equal the uninterrupted run's; no temporary file is left in the run
folders or the caches; the report stays under 10 MB. It prints the peak resident memory of the main process
and of its workers (sampled every 0.25 s), files per second per stage, the main process's peak on a fifth of
the files against all of them (its growth per 1,000 files), and the report's size and, when Chromium is
installed, the seconds to render it headless. Extra arguments are config overrides for every run (e.g.
``debug=tiny`` for a quick soak). Exits 0 only when every check holds; the last line reads
``soak: N files, B bad, lost L, mixed M, resume equal yes|no, peak GB G``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from sound_cluster.run_folder import RunFolder

FORMATS = (("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS"),
           ("mp3", "MP3", "MPEG_LAYER_III"))
RATES = (8000, 16000, 22050, 44100, 48000)
BAD_KINDS = ("empty", "text", "random", "png", "truncated", "zero_frames", "nan", "too_short", "unreadable")
TMP_PREFIX = ".tmp-"


@dataclass
class Folder:
    """What was built: the good files' relative paths (as bytes) and the bad ones' with their kind."""

    root: Path
    good: list[bytes] = field(default_factory=list)
    bad: dict[bytes, str] = field(default_factory=dict)


def _rel(root: Path, path: bytes) -> bytes:
    return path[len(os.fsencode(root)) + 1:]


def _clip(rng: np.random.Generator, demo: list[np.ndarray], sr: int) -> np.ndarray:
    import librosa

    n = int(rng.uniform(0.3, 1.5) * sr)
    t = np.arange(n) / sr
    kind = int(rng.integers(4))
    if kind == 0:
        y = np.sin(2 * np.pi * rng.uniform(150, 1500) * t)
    elif kind == 1:
        f0, f1 = rng.uniform(200, 800), rng.uniform(1500, min(6000, sr / 2.5))
        y = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * t[-1])))
    elif kind == 2:
        y = np.convolve(rng.standard_normal(n), np.ones(int(rng.integers(2, 12))), mode="same") / 4
    else:
        d = demo[int(rng.integers(len(demo)))]
        y = librosa.resample(d, orig_sr=8000, target_sr=sr)[:n] if sr != 8000 else d[:n]
    env = np.minimum(1.0, np.minimum(np.arange(len(y)), len(y) - np.arange(len(y))) / (0.01 * sr))
    return (rng.uniform(0.1, 0.6) * env * y / max(np.abs(y).max(), 1e-6)).astype(np.float32)


def build(root: Path, *, n_files: int, bad_share: float, seed: int = 0) -> Folder:
    """Write the soak folder (see the module docstring)."""
    rng = np.random.default_rng(seed)
    demo_dir = Path(__file__).resolve().parents[1] / "sound_cluster" / "demo" / "clips"
    demo = [sf.read(p, dtype="float32")[0] for p in sorted(demo_dir.glob("*.wav"))]
    out = Folder(root)
    n_bad = int(round(n_files * bad_share))
    kinds = [BAD_KINDS[i % len(BAD_KINDS)] for i in range(n_bad)]
    if os.geteuid() == 0:  # root reads every file: unreadable ones would not be
        kinds = [k if k != "unreadable" else "nan" for k in kinds]
    order = rng.permutation(n_files)
    bad_at = {int(i): kinds[j] for j, i in enumerate(order[:n_bad])}
    for i in range(n_files):
        folder = root / f"d{i // 10000:02d}" / f"d{(i // 100) % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = os.fsencode(folder)
        if i in bad_at:
            kind = bad_at[i]
            ext = {"random": "mp3", "png": "ogg"}.get(kind, "wav")
            path = base + f"/bad_{kind}_{i}.{ext}".encode()
            _write_bad(path, kind, rng)
            out.bad[_rel(root, path)] = kind
            continue
        ext, fmt, subtype = FORMATS[i % len(FORMATS)]
        sr = RATES[int(rng.integers(len(RATES)))]
        name = f"clip_{i}.{ext}".encode()
        if i % 997 == 5:  # not UTF-8 (Latin-1 'é'), and its escaped twin spelt literally
            name = f"caf\xe9_{i}.{ext}".encode("latin-1")
        elif i % 997 == 6:
            name = f"caf\\xe9_{i - 1}.{ext}".encode()
        elif i % 997 == 7:  # near the file system's limit
            name = (f"long_{i}_" + "x" * 230)[: 240 - len(ext) - 1].encode() + f".{ext}".encode()
        path = base + b"/" + name
        sf.write(path, _clip(rng, demo, sr), sr, format=fmt, subtype=subtype)
        out.good.append(_rel(root, path))
    os.symlink(root / "d00", root / "d00" / "d00" / "loop")  # a folder that holds its own parent
    return out


def _write_bad(path: bytes, kind: str, rng: np.random.Generator) -> None:
    p = path.decode("utf-8", "surrogateescape")
    if kind == "empty":
        open(p, "wb").close()
    elif kind == "text":
        Path(p).write_text("not audio, just text named .wav\n" * 20)
    elif kind == "random":
        Path(p).write_bytes(rng.bytes(20000))
    elif kind == "png":
        Path(p).write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(4000))
    elif kind == "truncated":
        sf.write(p, rng.standard_normal(16000).astype(np.float32) * 0.1, 16000, subtype="PCM_16")
        data = Path(p).read_bytes()
        Path(p).write_bytes(data[: len(data) // 2 + 1])
    elif kind == "zero_frames":
        sf.write(p, np.zeros(0, dtype=np.float32), 16000)
    elif kind == "nan":
        y = rng.standard_normal(8000).astype(np.float32) * 0.1
        y[100] = np.nan
        sf.write(p, y, 16000, subtype="FLOAT")
    elif kind == "too_short":
        sf.write(p, rng.standard_normal(100).astype(np.float32) * 0.1, 16000)
    elif kind == "unreadable":
        sf.write(p, rng.standard_normal(8000).astype(np.float32) * 0.1, 16000)
        os.chmod(p, 0)


class Sampler:
    """Peak resident memory of a process and of its descendants, sampled every 0.25 s from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid, self.main, self.workers, self.total = pid, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            kids = descendants(self.pid)
            main, workers = rss(self.pid), sum(rss(k) for k in kids)
            self.main, self.workers = max(self.main, main), max(self.workers, workers)
            self.total = max(self.total, main + workers)
            time.sleep(0.25)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def rss(pid: int) -> int:
    """Resident memory of one process in bytes (0 once it has ended)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = _parent(int(entry))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _command(audio: Path, run_dir: Path, cache: Path, executor: str, overrides: list[str]) -> list[str]:
    exe = str(Path(sys.executable).with_name("sound-cluster"))
    return [exe, f"data.path={audio}", f"hydra.run.dir={run_dir}", f"features.cache_dir={cache}",
            f"executor.kind={executor}", "output.max_plots=0", *overrides]


@dataclass
class Run:
    seconds: float
    main_gb: float
    workers_gb: float
    total_gb: float
    events: list[str] = field(default_factory=list)


def run_cli(cmd: list[str], *, log: Path, interrupt: tuple[Path, Path, int] | None = None) -> Run:
    """Run one command; with ``interrupt`` (cache dir, run dir, files) kill a worker and stop the run mid-way."""
    t0 = time.perf_counter()
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        sampler = Sampler(proc.pid)
        events = []
        if interrupt is not None:
            cache, run_dir, n = interrupt
            killed = stopped = False
            while proc.poll() is None:
                cached = sum(len(files) for _, _, files in os.walk(cache))
                if not killed and cached >= n // 5:
                    workers = pool_workers(proc.pid)
                    if workers:
                        os.kill(workers[-1], signal.SIGKILL)
                        killed = True
                        events.append(f"SIGKILL worker {workers[-1]} with {cached} cache files written")
                trees = RunFolder(run_dir).trees
                if killed and not stopped and trees.is_dir() and any(trees.rglob("*.json")):
                    proc.send_signal(signal.SIGTERM)
                    stopped = True
                    events.append("SIGTERM the run once the fold had written trees")
                time.sleep(0.2)
            if not (killed and stopped):
                events.append(f"the run ended before it could be interrupted (killed {killed}, stopped {stopped})")
        proc.wait()
        sampler.stop()
    if interrupt is None and proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    gb = 1 << 30
    return Run(time.perf_counter() - t0, sampler.main / gb, sampler.workers / gb, sampler.total / gb, events)


def _cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().split(b"\0")
    except OSError:
        return []


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def pool_workers(pid: int) -> list[int]:
    """The run's worker processes: its Python descendants but multiprocessing's helpers (the resource tracker,
    and the fork server, the run's own child that forks the workers: killing it tests no worker's loss)."""
    out = []
    for k in descendants(pid):
        cmd = _cmdline(k)
        if not cmd or b"python" not in cmd[0] or any(b"resource_tracker" in c for c in cmd):
            continue
        if _parent(k) == pid and any(b"multiprocessing.forkserver import main" in c for c in cmd):
            continue
        out.append(k)
    return out


def check_run(run_dir: Path, folder: Folder) -> dict:
    """Lost and mixed files, failures accounted for, and the summary's counts of one finished run."""
    run = RunFolder(run_dir)
    with open(run.clusters, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with open(run.failures, newline="", encoding="utf-8") as fh:
        failed = list(csv.DictReader(fh))
    summary = run.read_summary()
    by_path = {r["path"]: r for r in rows}
    good = {g.decode("utf-8", "backslashreplace"): g for g in folder.good}
    lost = [p for p in good if p not in by_path or not run.tree(by_path[p]["name"]).is_file()]
    mixed = 0
    for p, r in by_path.items():
        tree = run.tree(r["name"])
        if tree.is_file() and json.loads(tree.read_text()).get("source") != p:
            mixed += 1
    failed_paths = {f["path"] for f in failed if f["stage"] not in ("discover",)}
    bad = {b.decode("utf-8", "backslashreplace") for b in folder.bad}
    return {"rows": len(rows), "lost": len(lost), "lost_examples": lost[:5], "mixed": mixed,
            "bad_unreported": sorted(bad - failed_paths)[:5], "n_bad_unreported": len(bad - failed_paths),
            "good_failed": sorted(set(good) & failed_paths)[:5],
            "found_balance": summary["files_found"] == summary["files_processed"] + summary["files_failed"],
            "summary": summary}


def same_outputs(a: Path, b: Path) -> bool:
    ra, rb = RunFolder(a), RunFolder(b)
    if ra.clusters.read_bytes() != rb.clusters.read_bytes():
        return False
    ta = sorted(p.relative_to(a) for p in ra.trees.rglob("*.json"))
    return ta == sorted(p.relative_to(b) for p in rb.trees.rglob("*.json")) and all(
        (a / t).read_bytes() == (b / t).read_bytes() for t in ta)


def temporaries(*dirs: Path) -> list[str]:
    return [str(p) for d in dirs if d.is_dir() for p in d.rglob(f"{TMP_PREFIX}*")]


def render_seconds(report: Path, shot: Path) -> float | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        return None
    t0 = time.perf_counter()
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                           "--window-size=1280,2000", report.as_uri()], capture_output=True, timeout=300)
    return time.perf_counter() - t0 if proc.returncode == 0 and shot.is_file() else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--bad-share", type=float, default=0.1)
    ap.add_argument("--executors", nargs="+", default=["process", "dask"], choices=["process", "dask", "serial"])
    ap.add_argument("--no-slope", action="store_true", help="skip the two runs that measure memory against N")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()  # overrides may follow the options
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    audio, runs, caches, logs = out / "audio", out / "runs", out / "caches", out / "logs"
    for d in (runs, caches, logs):
        d.mkdir(parents=True)
    t0 = time.perf_counter()
    folder = build(audio, n_files=args.files, bad_share=args.bad_share)
    print(f"built {len(folder.good) + len(folder.bad)} files ({len(folder.bad)} bad) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    ok, lost, mixed, equal, peak = True, 0, 0, True, 0.0

    def fail(msg: str) -> None:
        nonlocal ok
        ok = False
        print(f"  FAILED: {msg}", flush=True)

    for ex in args.executors:
        base = runs / f"{ex}_uninterrupted"
        r = run_cli(_command(audio, base, caches / f"{ex}_a", ex, args.overrides), log=logs / f"{ex}_a.log")
        c = check_run(base, folder)
        s = c["summary"]
        peak = max(peak, r.total_gb)
        rates = {k: round(s["files_processed"] / v, 1) for k, v in s["stage_seconds"].items() if v > 0}
        print(f"{ex}, uninterrupted: {r.seconds:.0f} s; peak memory main {r.main_gb:.2f} GB, workers "
              f"{r.workers_gb:.2f} GB, together {r.total_gb:.2f} GB; files per second by stage {rates}", flush=True)
        print(f"  found {s['files_found']}, processed {s['files_processed']}, failed {s['files_failed']}, "
              f"folder problems {s['discover_problems']}; lost {c['lost']}, mixed {c['mixed']}, bad files not in "
              f"failures.csv {c['n_bad_unreported']}", flush=True)
        lost, mixed = lost + c["lost"], mixed + c["mixed"]
        for key, msg in (("lost", "good files without a row or a tree"), ("mixed", "trees of another file"),
                         ("n_bad_unreported", "bad files missing from failures.csv")):
            if c[key]:
                fail(f"{c[key]} {msg}: {c.get('lost_examples') if key == 'lost' else c['bad_unreported']}")
        if not c["found_balance"]:
            fail("files_found != files_processed + files_failed")
        if c["good_failed"]:
            fail(f"good files in failures.csv: {c['good_failed']}")
        report = RunFolder(base).report
        if report.is_file():
            mb = (report.stat().st_size + sum(p.stat().st_size for p in RunFolder(base).report_files.rglob("*")
                                              if p.is_file())
                  ) / 1e6
            page_mb = report.stat().st_size / 1e6
            shot = render_seconds(report, logs / f"{ex}_report.png")
            print(f"  report.html {page_mb:.1f} MB ({mb:.1f} MB with its folder); headless Chromium "
                  f"{'not installed' if shot is None else f'rendered it in {shot:.1f} s'}", flush=True)
            if page_mb > 10:
                fail(f"report.html is {page_mb:.1f} MB (over 10 MB)")

        again = runs / f"{ex}_resumed"
        cmd = _command(audio, again, caches / f"{ex}_b", ex, args.overrides)
        r1 = run_cli(cmd, log=logs / f"{ex}_b.log", interrupt=(caches / f"{ex}_b", again, args.files))
        for e in r1.events:
            print(f"  {ex}, interrupted: {e}", flush=True)
        r2 = run_cli([*cmd, "output.overwrite=true"], log=logs / f"{ex}_b.log")
        peak = max(peak, r1.total_gb, r2.total_gb)
        c2 = check_run(again, folder)
        same = same_outputs(base, again)
        equal = equal and same
        lost, mixed = lost + c2["lost"], mixed + c2["mixed"]
        print(f"  {ex}, resumed in {r2.seconds:.0f} s: lost {c2['lost']}, mixed {c2['mixed']}, clusters.csv and "
              f"trees equal to the uninterrupted run's: {'yes' if same else 'no'}", flush=True)
        if not same:
            fail("the resumed run differs from the uninterrupted one")
        if c2["lost"] or c2["mixed"]:
            fail(f"resumed run: lost {c2['lost']}, mixed {c2['mixed']}")
        left = temporaries(base, again, caches / f"{ex}_a", caches / f"{ex}_b")
        if left:
            fail(f"{len(left)} temporary files left, e.g. {left[:3]}")

    # The main process's memory against the number of files: a fifth of the folder, then all of it.
    ex = args.executors[0]
    if args.no_slope:
        print(f"soak: {args.files} files, {len(folder.bad)} bad, lost {lost}, mixed {mixed}, "
              f"resume equal {'yes' if equal else 'no'}, peak GB {peak:.2f}", flush=True)
        return 0 if ok else 1
    small = out / "audio_fifth"
    fifth = build(small, n_files=max(args.files // 5, 10), bad_share=args.bad_share, seed=1)
    rs = run_cli(_command(small, runs / "fifth", caches / f"{ex}_a", ex, args.overrides), log=logs / "fifth.log")
    rf = run_cli(_command(audio, runs / "all_again", caches / f"{ex}_a", ex, args.overrides), log=logs / "all.log")
    n_small = len(fifth.good) + len(fifth.bad)
    slope = (rf.main_gb - rs.main_gb) * 1024 / max(args.files - n_small, 1) * 1000
    print(f"main process peak: {rs.main_gb:.2f} GB at {n_small} files, {rf.main_gb:.2f} GB at {args.files} "
          f"(warm cache): {slope:.1f} MB per 1,000 files", flush=True)
    if peak > 2.5:
        fail(f"peak memory {peak:.2f} GB (over 2.5 GB)")
    print(f"soak: {args.files} files, {len(folder.bad)} bad, lost {lost}, mixed {mixed}, "
          f"resume equal {'yes' if equal else 'no'}, peak GB {peak:.2f}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
