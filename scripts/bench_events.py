"""Kinds of sound inside recordings: event NMI of our segment units against the baselines, same run.

Usage: python scripts/bench_events.py DATA [--beds BEDS] [--files 12] [--events 8 14] [--sets ...]
       [--variants ...] [--seed 0] [--untrained] [--keep DIR] [override ...]

DATA is a folder holding the labelled sets ``drums/``, ``instruments/`` and ``fsdd/``, each with a
``labels.csv`` (``filename,label``; audio paths relative to the set's folder). From them the script
builds folders of recordings, each file a sequence of labelled events (drum hits; instrument notes,
cut to 1 s; spoken digits; and ``mix``, all three together), in the variants ``pauses`` (0.2-0.6 s
of quiet between events), ``butted`` (joined end to end), and with ``--beds BEDS`` (a folder of
background recordings, ``scripts/fetch_beds.py``) also ``bed`` (the pauses variant laid over a
continuous real background bed, each event 6-20 dB above it) and ``overlap`` (each event starts
0.05-0.15 s before the one before it ends). Every event's kind, start and end are known.

For each folder, in the same run:
  ours auto      the real pipeline (``sound_cluster.run.pipeline.run``, units.kind=auto, K chosen)
  ours true K    the same with model.n_clusters = the number of kinds
  mfcc k-means   k-means at the true K on MFCC frames (20 coefficients, 100 Hz) smoothed over 0.5 s
  avgn hdbscan   the AVGN / VocalPy recipe (Sainburg et al. 2020): cuts where the envelope rises
                 above the file's floor + 12 dB, each cut's log-mel resized to 32 x 32, UMAP to 2-D,
                 HDBSCAN (its own count)
  avgn k-means   the same UMAP embedding, k-means at the true K
  nr k-means     the same after noisereduce's non-stationary spectral gating of every file (as field
                 recordings are denoised before the envelope cuts)
  encoder@truth  our encoder's step embeddings averaged over each true event, Ward at the true K:
                 the ceiling that our segmentation allows
Scores: event NMI (each event takes the cluster that most of its steps or frames take), the number
of clusters found, boundary F at 0.5 s of our trees and the AVGN cuts; then for our sounds
(segments.csv rows of kind sound): "found", the share of events whose best-overlapping sound starts
within 0.1 s of the event and ends after 90 % of its energy and at most 0.1 s past its end, against
"env", the same for a plain envelope split (librosa.effects.split at 30 dB); hit-rate F at 0.1 s of
sound starts and of sound ends; and sounds per event. Per folder, our auto-K NMI as a ratio of the
best baseline at the true K; last, for each bed folder, its NMI over the NMI without the bed.

--untrained also runs ours (auto K) with an untrained merge autoencoder (segment.epochs=1,
segment.steps_per_epoch=1, segment.learning_rate=1e-9), to see whether training it gives better units.
"""

from __future__ import annotations

import argparse
import csv
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from sound_cluster.run_folder import RunFolder

SR = 16000
MAX_EVENT_S = 1.0


def _read_set(folder: Path) -> list[tuple[Path, str]]:
    with open(folder / "labels.csv", newline="") as fh:
        return [(folder / (r.get("filename") or r["path"]), r["label"]) for r in csv.DictReader(fh)]


def _event(path: Path) -> np.ndarray:
    import librosa

    y, sr = sf.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != SR:
        y = librosa.resample(y, orig_sr=sr, target_sr=SR)
    n = int(MAX_EVENT_S * SR)
    if len(y) > n:  # long notes and cymbals: the first second, faded out over 30 ms
        y = y[:n].copy()
        fade = int(0.03 * SR)
        y[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    peak = float(np.abs(y).max()) or 1.0
    return (0.5 * y / peak).astype(np.float32)


VARIANTS = ("pauses", "butted", "bed", "overlap")


def _beds(folder: Path | None) -> list[np.ndarray]:
    """The background recordings under ``folder`` (``scripts/fetch_beds.py`` writes them), mono at ``SR``."""
    if folder is None:
        return []
    out = []
    for f in sorted(folder.glob("*.wav")):
        y, sr = sf.read(f, dtype="float32", always_2d=True)
        if sr == SR:
            out.append(y.mean(axis=1))
    return out


def _bed(beds: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of continuous background: pieces of random beds from random places, cross-faded over 0.5 s."""
    fade = int(0.5 * SR)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    longest = int(12.0 * SR)
    out, pos = np.zeros(n + longest, np.float32), 0
    while pos < n:
        src = beds[int(rng.integers(len(beds)))]
        length = min(len(src), int(rng.uniform(4.0, 12.0) * SR))
        start = int(rng.integers(0, len(src) - length + 1))
        piece = src[start:start + length].copy()
        piece /= max(float(np.sqrt(np.mean(piece ** 2))), 1e-6)  # each piece at one level: the bed, not its source
        if pos:
            piece[:fade] *= ramp
        piece[-fade:] *= ramp[::-1]
        out[pos:pos + length] += piece
        pos += length - fade
    return out[:n]


def energy90_s(y: np.ndarray, sr: int = SR) -> float:
    """Seconds from an event's start until 90 % of its energy has passed (where a segment must not end before)."""
    e = np.cumsum(y.astype(np.float64) ** 2)
    return float(np.searchsorted(e, 0.9 * e[-1]) / sr)


def build(data: Path, out: Path, *, sets: list[str], n_files: int, events: tuple[int, int], seed: int,
          variants: tuple[str, ...] = ("pauses", "butted"), beds: Path | None = None) -> dict[str, int]:
    """Write ``out/<set>_<variant>/`` folders of sequences with ``segments.csv``; returns each folder's kinds.

    ``segments.csv``: ``path,start_s,end_s,label,energy90_s`` (the last: when 90 % of the event's energy has
    passed). Variants: ``pauses`` (0.2-0.6 s of quiet between events), ``butted`` (joined end to end),
    ``bed`` (``pauses`` laid over a continuous background from ``beds``, each event 6-20 dB above it), and
    ``overlap`` (each event starts 0.05-0.15 s before the one before it ends).
    """
    pools = {name: _read_set(data / name) for name in ("drums", "instruments", "fsdd")}
    bed_audio = _beds(beds)
    if "bed" in variants and not bed_audio:
        raise SystemExit("the bed variant needs --beds DIR: 16 kHz WAV recordings of background (scripts/fetch_beds.py)")
    kinds = {}
    for name in sets:
        # One generator per set, so a folder is the same whatever other sets and variants are built.
        rng = np.random.default_rng([seed, ["drums", "instruments", "fsdd", "mix"].index(name)])
        if name == "mix":
            pool = [(p, f"{src}:{lab}") for src in ("drums", "instruments", "fsdd") for p, lab in pools[src]]
        else:
            pool = pools[name]
        plan = [[pool[i] for i in rng.choice(len(pool), size=int(rng.integers(events[0], events[1] + 1)),
                                             replace=False)] for _ in range(n_files)]
        for variant in variants:
            rng = np.random.default_rng([seed, ["drums", "instruments", "fsdd", "mix"].index(name), 1])
            folder = out / f"{name}_{variant}"
            folder.mkdir(parents=True)
            rows, seen = [], set()
            for i, evs in enumerate(plan):
                placed, t = [], 0.0  # (start sample, event)
                for j, (p, lab) in enumerate(evs):
                    y = _event(p)
                    start = int(round(t * SR))
                    placed.append((start, y))
                    rows.append([f"rec{i:02d}.wav", round(start / SR, 4), round(start / SR + len(y) / SR, 4), lab,
                                 round(start / SR + energy90_s(y), 4)])
                    seen.add(lab)
                    t = start / SR + len(y) / SR
                    if j < len(evs) - 1:
                        if variant in ("pauses", "bed"):
                            t += rng.uniform(0.2, 0.6)
                        elif variant == "overlap":
                            t -= min(rng.uniform(0.05, 0.15), 0.5 * len(y) / SR)
                n = max(s + len(y) for s, y in placed)
                # the bed's own draws, so the events and gaps equal the pauses variant's
                brng = np.random.default_rng([seed, ["drums", "instruments", "fsdd", "mix"].index(name), 2, i])
                if variant == "bed":
                    n += int(brng.uniform(0.3, 1.0) * SR)  # the bed goes on after the last event
                    lead = int(brng.uniform(0.3, 1.0) * SR)  # and starts before the first
                    for r in rows[-len(placed):]:
                        r[1], r[2], r[4] = (round(v + lead / SR, 4) for v in (r[1], r[2], r[4]))
                    placed = [(s + lead, y) for s, y in placed]
                    n += lead
                mix = np.zeros(n, np.float32)
                if variant == "bed":
                    bed = _bed(bed_audio, n, brng)
                    bed_rms = 0.02
                    mix += bed_rms * bed
                for s, y in placed:
                    if variant == "bed":  # each event 6-20 dB above the bed (RMS over the event)
                        snr = brng.uniform(6.0, 20.0)
                        y = y * (bed_rms * 10 ** (snr / 20) / max(float(np.sqrt(np.mean(y ** 2))), 1e-9))
                    mix[s:s + len(y)] += y
                mix = mix + brng.normal(0, 1e-4, len(mix)).astype(np.float32)  # a recording's floor, not digital zero
                mix /= max(1.0, float(np.abs(mix).max()) / 0.99)
                sf.write(folder / f"rec{i:02d}.wav", mix, SR)
            with open(folder / "segments.csv", "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["path", "start_s", "end_s", "label", "energy90_s"])
                w.writerows(rows)
            kinds[folder.name] = len(seen)
    return kinds


def _refs(folder: Path) -> dict[str, list[tuple[float, float, str]]]:
    out: dict[str, list] = {}
    with open(folder / "segments.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            out.setdefault(r["path"], []).append((float(r["start_s"]), float(r["end_s"]), r["label"]))
    return out


def _energy90(folder: Path) -> dict[str, list[float]]:
    out: dict[str, list] = {}
    with open(folder / "segments.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            out.setdefault(r["path"], []).append(float(r["energy90_s"]))
    return out


def sounds_found(refs, e90, est: dict[str, list[tuple[float, float]]], tol: float = 0.1) -> float:
    """The share of reference events whose best-overlapping estimated sound starts within ``tol`` of the event
    and ends with it: after 90 % of the event's energy has passed and at most ``tol`` after its end."""
    ok = total = 0
    for p, evs in refs.items():
        cand = est.get(p, [])
        for (s, e, _), t90 in zip(evs, e90[p]):
            total += 1
            if not cand:
                continue
            overlap = [max(0.0, min(e, b) - max(s, a)) for a, b in cand]
            a, b = cand[int(np.argmax(overlap))]
            ok += max(overlap) > 0 and abs(a - s) <= tol and t90 <= b <= e + tol
    return ok / max(total, 1)


def edge_f(refs, est: dict[str, list[tuple[float, float]]], *, which: int, window: float = 0.1) -> float:
    """Hit-rate F of sound starts (``which=0``) or ends (``which=1``) at ``window`` seconds (mir_eval)."""
    import mir_eval

    scores = []
    for p, evs in refs.items():
        ref = np.array(sorted(e[which] for e in evs))
        got = np.array(sorted(x[which] for x in est.get(p, [])))
        if len(ref) == 0 or len(got) == 0:
            scores.append(0.0)
            continue
        scores.append(mir_eval.onset.f_measure(ref, got, window=window)[0])
    return float(np.mean(scores))


def envelope_sounds(folder: Path, refs) -> dict[str, list[tuple[float, float]]]:
    """A plain envelope split: ``librosa.effects.split`` at 30 dB below the file's peak."""
    import librosa

    out = {}
    for p in refs:
        y, sr = sf.read(folder / p, dtype="float32")
        out[p] = [(a / sr, b / sr) for a, b in librosa.effects.split(y, top_db=30, frame_length=512, hop_length=128)]
    return out


def our_sounds(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """Our sounds from segments.csv (rows of kind ``sound`` where the table says; every row otherwise)."""
    from sound_cluster.outputs.export import read_segments_table

    out: dict[str, list] = {}
    for r in read_segments_table(RunFolder(run_dir).segments):
        if r.get("kind", "sound") == "sound":
            out.setdefault(r["path"], []).append((r["start_s"], r["end_s"]))
    return out


def _event_nmi(refs, frame_clusters: dict[str, np.ndarray], rate_hz: float) -> float:
    from sound_cluster.outputs.evaluate import score_events

    return score_events(refs, {p: (c, rate_hz) for p, c in frame_clusters.items()})["nmi"]


def _boundary_f(refs, cuts: dict[str, list[float]], window: float = 0.5) -> float:
    import mir_eval

    scores = []
    for p, evs in refs.items():
        ref = np.array([e[0] for e in evs[1:]])
        est = np.array(sorted(cuts.get(p, [])))
        if len(ref) == 0 or len(est) == 0:
            scores.append(0.0)
            continue
        ri = np.c_[np.r_[0.0, ref], np.r_[ref, ref[-1] + 1.0]]
        ei = np.c_[np.r_[0.0, est], np.r_[est, est[-1] + 1.0]]
        scores.append(mir_eval.segment.detection(ri, ei, window=window, trim=True)[2])
    return float(np.mean(scores))


def mfcc_kmeans(folder: Path, refs, k: int, seed: int) -> float:
    import librosa
    from scipy.ndimage import uniform_filter1d
    from sklearn.cluster import KMeans

    feats = {}
    for p in refs:
        y, _ = sf.read(folder / p, dtype="float32")
        m = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20, hop_length=SR // 100).T  # (frames, 20) at 100 Hz
        feats[p] = uniform_filter1d(m, size=50, axis=0)
    x = np.concatenate(list(feats.values()))
    mu, sd = x.mean(0), x.std(0) + 1e-9
    km = KMeans(k, n_init=4, random_state=seed).fit((x - mu) / sd)
    return _event_nmi(refs, {p: km.predict((f - mu) / sd) for p, f in feats.items()}, 100.0)


def avgn(folder: Path, refs, k: int, seed: int, *, denoise: bool = False) -> tuple[float, float, int, float]:
    """AVGN recipe: (NMI with HDBSCAN's count, NMI with k-means at k, HDBSCAN's count, boundary F@0.5).

    ``denoise``: each file through ``noisereduce``'s non-stationary spectral gating first, as it is applied to
    field recordings before the envelope cuts.
    """
    import librosa
    import umap
    from scipy.ndimage import zoom
    from sklearn.cluster import HDBSCAN, KMeans

    cuts, specs, owner = {}, [], []
    n_frames = {}
    for p in refs:
        y, _ = sf.read(folder / p, dtype="float32")
        if denoise:
            import noisereduce

            y = noisereduce.reduce_noise(y=y, sr=SR, stationary=False).astype(np.float32)
        mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=SR, n_fft=512, hop_length=SR // 100,
                                                                 n_mels=64))
        env = mel.max(axis=0)
        loud = env > np.percentile(env, 5) + 12.0
        edges = np.diff(np.r_[0, loud.astype(np.int8), 0])
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        keep = (ends - starts) >= 5  # at least 50 ms
        starts, ends = starts[keep], ends[keep]
        n_frames[p] = mel.shape[1]
        cuts[p] = [s / 100.0 for s in starts[1:]]
        for s, e in zip(starts, ends):
            seg = mel[:, s:e]
            specs.append(zoom(seg, (32 / seg.shape[0], 32 / seg.shape[1]), order=1).ravel())
            owner.append((p, s, e))
    x = np.array(specs)
    emb = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(x) - 1)).fit_transform(x)
    hdb = HDBSCAN(min_cluster_size=5).fit_predict(emb)
    km = KMeans(k, n_init=4, random_state=seed).fit_predict(emb)
    out = []
    for labels in (hdb, km):
        frames = {p: np.full(n, -2, dtype=np.int64) for p, n in n_frames.items()}  # -2: outside every cut
        for (p, s, e), c in zip(owner, labels):
            frames[p][s:e] = c
        out.append(_event_nmi(refs, {p: f + 2 for p, f in frames.items()}, 100.0))
    return out[0], out[1], len(set(hdb) - {-1}), _boundary_f(refs, cuts)


def ours(folder: Path, overrides: list[str], run_dir: Path) -> dict:
    from sound_cluster.cli import compose_config
    from sound_cluster.config import params_from_config
    from sound_cluster.run.pipeline import run

    cfg = compose_config([f"data.path={folder}", f"data.segments={folder / 'segments.csv'}", "output.max_plots=0",
                          "output.report=false", *overrides])
    t0 = time.perf_counter()
    result = run(params_from_config(cfg), output_dir=run_dir, config=cfg)
    s = result.summary
    return {"nmi": s["event_metrics"]["nmi"], "k": s["clusters"]["n_clusters"], "unit": s["units"]["unit"],
            "f05": s["segment_metrics"]["mean"]["f_0.5"], "seconds": time.perf_counter() - t0,
            "units": s["units"].get("n_units")}


def encoder_at_truth(run_dir: Path, refs, k: int) -> float:

    from scipy.cluster.hierarchy import fcluster, linkage

    from sound_cluster.outputs.evaluate import clustering_scores

    rate = RunFolder(run_dir).read_summary()["trees"]["leaf_rate_hz"]  # steps per second
    vecs, labels = [], []
    for p, evs in refs.items():
        emb = RunFolder(run_dir).read_step_embeddings(p)
        for s, e, lab in evs:
            a, b = int(s * rate), max(int(s * rate) + 1, int(e * rate))
            v = emb[a:b].mean(axis=0)
            vecs.append(v / (np.linalg.norm(v) + 1e-12))
            labels.append(lab)
    c = fcluster(linkage(np.array(vecs), method="ward"), k, criterion="maxclust")
    return clustering_scores(labels, c)["nmi"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="folder with drums/, instruments/ and fsdd/ (each with labels.csv)")
    ap.add_argument("--files", type=int, default=12, help="recordings per folder")
    ap.add_argument("--events", type=int, nargs=2, default=(8, 14), help="events per recording: min max")
    ap.add_argument("--sets", nargs="+", default=["drums", "instruments", "fsdd", "mix"],
                    choices=["drums", "instruments", "fsdd", "mix"])
    ap.add_argument("--variants", nargs="+", default=None, choices=VARIANTS,
                    help="default: pauses butted, and bed overlap when --beds is given")
    ap.add_argument("--beds", type=Path, help="a folder of 16 kHz WAV background recordings (scripts/fetch_beds.py)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--untrained", action="store_true", help="also ours with an untrained merge autoencoder")
    ap.add_argument("--keep", type=Path, help="build the folders and write the runs here (kept) instead of a "
                    "temporary folder")
    ap.add_argument("overrides", nargs="*", help="pipeline overrides for our runs, e.g. segment.pause_db=8")
    args = ap.parse_intermixed_args()  # overrides may follow the options
    logging.basicConfig(level=logging.WARNING)
    for name in ("drums", "instruments", "fsdd"):
        if not (args.data / name / "labels.csv").is_file():
            ap.error(f"{args.data / name / 'labels.csv'} not found: DATA must hold drums/, instruments/, fsdd/")
    variants = args.variants or (list(VARIANTS) if args.beds else ["pauses", "butted"])

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.keep or Path(tmp)
        kinds = build(args.data, tmp / "audio", sets=args.sets, n_files=args.files, events=tuple(args.events),
                      seed=args.seed, variants=tuple(variants), beds=args.beds)
        for name, k in kinds.items():
            folder = tmp / "audio" / name
            refs, e90 = _refs(folder), _energy90(folder)
            common = [f"seed={args.seed}", *args.overrides]
            auto = ours(folder, common, tmp / "runs" / name / "auto")
            true = ours(folder, [*common, f"model.n_clusters={k}"], tmp / "runs" / name / "true")
            row = {"folder": name, "kinds": k, "events": sum(len(v) for v in refs.values()), "files": len(refs),
                   "auto": auto, "true": true, "mfcc": mfcc_kmeans(folder, refs, k, args.seed)}
            row["avgn_hdb"], row["avgn_km"], row["avgn_k"], row["avgn_f05"] = avgn(folder, refs, k, args.seed)
            row["nr_km"] = avgn(folder, refs, k, args.seed, denoise=True)[1]
            row["ceiling"] = encoder_at_truth(tmp / "runs" / name / "true", refs, k)
            mine, env = our_sounds(tmp / "runs" / name / "auto"), envelope_sounds(folder, refs)
            row["found"], row["env_found"] = sounds_found(refs, e90, mine), sounds_found(refs, e90, env)
            row["start_f"], row["end_f"] = edge_f(refs, mine, which=0), edge_f(refs, mine, which=1)
            row["units_per_event"] = sum(len(v) for v in mine.values()) / row["events"]
            if args.untrained:
                row["untrained"] = ours(folder, [*common, "segment.epochs=1", "segment.steps_per_epoch=1",
                                                 "segment.learning_rate=1e-9"], tmp / "runs" / name / "untrained")
            rows.append(row)
            _print_row(row, header=len(rows) == 1, untrained=args.untrained)
    ratios = [r["auto"]["nmi"] / _best(r) for r in rows]
    print(f"\nours (auto K) / best baseline at the true K: min {min(ratios):.2f}x, mean {np.mean(ratios):.2f}x; "
          f"K within 30 % of the kinds on {sum(abs(r['auto']['k'] - r['kinds']) <= 0.3 * r['kinds'] for r in rows)} "
          f"of {len(rows)} folders")
    by = {r["folder"]: r for r in rows}
    for r in rows:
        if r["folder"].endswith("_bed") and r["folder"][:-4] + "_pauses" in by:
            clean = by[r["folder"][:-4] + "_pauses"]
            print(f"{r['folder']}: event NMI over the bed / without it: {r['auto']['nmi'] / clean['auto']['nmi']:.2f}x")


def _best(r: dict) -> float:
    """The best baseline at the true K: k-means on MFCC frames, AVGN, AVGN after noisereduce."""
    return max(r["mfcc"], r["avgn_km"], r["nr_km"])


def _print_row(r: dict, *, header: bool, untrained: bool) -> None:
    if header:
        print(f"{'folder':20s} {'kinds':>5s} {'events':>6s} | {'ours auto':>9s} {'K':>3s} {'F@.5':>5s} "
              f"{'s':>4s} | {'true K':>6s} | {'mfcc km':>7s} | {'avgn hdb':>8s} {'K':>3s} {'avgn km':>7s} "
              f"{'F@.5':>5s} {'nr km':>6s} | {'enc@truth':>9s} | {'ratio':>5s} | {'found':>5s} {'env':>5s} "
              f"{'F st':>5s} {'F end':>5s} {'u/ev':>5s}" + ("  | untrained merge model" if untrained else ""))
    line = (f"{r['folder']:20s} {r['kinds']:5d} {r['events']:6d} | {r['auto']['nmi']:9.3f} {r['auto']['k']:3d} "
            f"{r['auto']['f05']:5.2f} {r['auto']['seconds']:4.0f} | {r['true']['nmi']:6.3f} | {r['mfcc']:7.3f} | "
            f"{r['avgn_hdb']:8.3f} {r['avgn_k']:3d} {r['avgn_km']:7.3f} {r['avgn_f05']:5.2f} {r['nr_km']:6.3f} | "
            f"{r['ceiling']:9.3f} | {r['auto']['nmi'] / _best(r):4.2f}x | {r['found']:5.2f} {r['env_found']:5.2f} "
            f"{r['start_f']:5.2f} {r['end_f']:5.2f} {r['units_per_event']:5.2f}")
    if untrained:
        line += f"  | {r['untrained']['nmi']:.3f} F@.5 {r['untrained']['f05']:.2f}"
    print(line, flush=True)


if __name__ == "__main__":
    main()
