"""The report's view of segment units: clusters of sounds with playable snippets, and files as timelines.

Snippets are the segments themselves, cut from the original file wherever they lie in it (at most
``output.report_excerpt_s`` seconds of each, from its start) and written under
``report/audio/segments/``, so they keep playing when the run folder is copied elsewhere.
Timelines are proportional strips (one block per segment, coloured by cluster), readable on an
hour-long file because each block's width is its share of the file, and a click on a block plays
that segment from the original file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sound_cluster.io_utils import atomic_open
from sound_cluster.outputs.export import read_segments_table
from sound_cluster.run_folder import RunFolder

log = logging.getLogger(__name__)

TYPICAL = 3  # most and least typical segments shown per cluster


def read_segment_rows(path: Path) -> list[dict[str, Any]]:
    """``segments.csv`` rows that carry a cluster (:func:`sound_cluster.outputs.export.read_segments_table`)."""

    return [r for r in read_segments_table(path) if r["cluster"] is not None]


def write_snippet(audio_path: Path, out_path: Path, *, start_s: float, end_s: float) -> None:
    """Write ``[start_s, end_s)`` of ``audio_path`` (mono, its own sample rate) as a 16-bit WAV.

    Only that part of the file is read (soundfile seeks), so a snippet from the end of an hour-long
    recording costs what a snippet from its start does.
    """
    import soundfile as sf

    from sound_cluster.io_utils import open_regular

    # Opened here, not by name in libsndfile: a name that is not UTF-8 has no str libsndfile can take.
    with open_regular(audio_path) as fh, sf.SoundFile(fh) as f:
        sr = f.samplerate
        f.seek(min(int(start_s * sr), max(f.frames - 1, 0)))
        y = f.read(max(1, int(round((end_s - start_s) * sr))), dtype="float32", always_2d=True).mean(axis=1)
    with atomic_open(out_path, "wb", fsync=False) as fh:
        sf.write(fh, y, sr, format="WAV", subtype="PCM_16")


def segment_clusters(output_dir: Path, *, segments: Sequence[Mapping[str, Any]], audio_by_path: Mapping[str, Path],
                     name_by_path: Mapping[str, str], colors: Sequence[str], excerpt_s: float,
                     labels: Mapping[tuple[str, int], str] | None = None) -> list[dict[str, Any]]:
    """Per cluster: its segment count, mean confidence, and its most and least typical segments as snippets.

    Parameters
    ----------
    segments : sequence of dict
        :func:`read_segment_rows`.
    audio_by_path, name_by_path : mapping
        Each file's audio and output name, by its path in the tables.
    colors : sequence of str
        One colour per cluster.
    excerpt_s : float
        Snippets hold at most this many seconds of their segment.
    labels : mapping of (path, segment) to str, optional
        The reference label of a segment, shown beside it.
    """
    from urllib.parse import quote

    folder = RunFolder(output_dir)
    by_cluster: dict[int, list[Mapping[str, Any]]] = {}
    for s in segments:
        by_cluster.setdefault(s["cluster"], []).append(s)
    out = []
    for c in sorted(by_cluster):
        members = sorted(by_cluster[c], key=lambda s: (-s["confidence"], s["path"], s["start_s"]))
        typical = members[:TYPICAL]
        atypical = [s for s in members[::-1][:TYPICAL] if s not in typical]

        def shown(s: Mapping[str, Any]) -> dict[str, Any]:
            snippet = folder.report_snippet(name_by_path[s["path"]], s["segment"])
            try:
                write_snippet(audio_by_path[s["path"]], snippet, start_s=s["start_s"],
                              end_s=min(s["end_s"], s["start_s"] + excerpt_s))
                src = quote(folder.rel(snippet), safe="/")
            except Exception as err:  # noqa: BLE001 - a file that cannot be read again loses its player only
                log.warning("report: no snippet of %s at %.2f s: %s", s["path"], s["start_s"], err)
                src = None
            return {"path": s["path"], "start_s": s["start_s"], "end_s": s["end_s"], "confidence": s["confidence"],
                    "audio": src, "label": (labels or {}).get((s["path"], s["segment"]), "")}

        out.append({"k": c, "n": len(members), "color": colors[c],
                    "files": len({s["path"] for s in members}),
                    "seconds": float(sum(s["end_s"] - s["start_s"] for s in members)),
                    "median_s": float(np.median([s["end_s"] - s["start_s"] for s in members])),
                    "mean_conf": float(np.mean([s["confidence"] for s in members])),
                    "typical": [shown(s) for s in typical], "atypical": [shown(s) for s in atypical]})
    return out


def timeline(segs: Sequence[Mapping[str, Any]], *, duration_s: float, colors: Sequence[str], src: str
             ) -> list[dict[str, Any]]:
    """One file's strip: per segment its left edge and width in percent of the file, colour, and what a click plays.

    Parameters
    ----------
    segs : sequence of dict
        The file's cut (``start_s``, ``end_s``, ``cluster``, ``confidence``), in time order.
    duration_s : float
    colors : sequence of str
    src : str
        The original file's URL; a click plays ``src#t=start,end``.
    """
    dur = max(float(duration_s), 1e-9)
    out = []
    for s in segs:
        c = s.get("cluster")
        out.append({"left": 100.0 * s["start_s"] / dur, "width": max(100.0 * (s["end_s"] - s["start_s"]) / dur, 0.0),
                    "color": colors[c] if isinstance(c, int) and 0 <= c < len(colors) else "#ccc",
                    "title": f"{s['start_s']:.2f}-{s['end_s']:.2f} s: " + (
                        f"cluster {c} ({s.get('confidence', 0.0):.2f})" if isinstance(c, int) else "background"),
                    "src": f"{src}#t={s['start_s']:.3f},{s['end_s']:.3f}"})
    return out


def reference_labels(segments: Sequence[Mapping[str, Any]], references: Mapping[str, Sequence[tuple]]
                     ) -> dict[tuple[str, int], str]:
    """For each segment, the label of the reference event it overlaps most (when references are known)."""
    out: dict[tuple[str, int], str] = {}
    for s in segments:
        best, lab = 0.0, ""
        for a, b, label in references.get(s["path"], ()):
            ov = min(b, s["end_s"]) - max(a, s["start_s"])
            if ov > best:
                best, lab = ov, str(label)
        if lab:
            out[(s["path"], s["segment"])] = lab
    return out


def label_table(segments: Sequence[Mapping[str, Any]], labels: Mapping[tuple[str, int], str], *,
                colors: Sequence[str]) -> dict[str, Any] | None:
    """Reference label against cluster over the sounds: counts, and each cluster's majority label and purity.

    Parameters
    ----------
    segments : sequence of dict
        :func:`read_segment_rows` (sounds with a cluster).
    labels : mapping of (path, segment) to str
        :func:`reference_labels`; sounds that overlap no reference event count as ``(none)``.

    Returns
    -------
    dict or None
        ``clusters`` (used clusters in order: ``k``, ``color``, ``n``, ``majority``, ``purity``), ``rows``
        (one per label, most sounds first: ``label``, ``counts`` aligned with ``clusters``, ``n``), ``purity``
        (the share of sounds whose cluster's majority label is theirs); None without labelled sounds.
    """
    from collections import Counter

    if not labels:
        return None
    by_cluster: dict[int, Counter] = {}
    for s in segments:
        by_cluster.setdefault(int(s["cluster"]), Counter())[labels.get((s["path"], s["segment"]), "(none)")] += 1
    ks = sorted(by_cluster)
    totals = Counter()
    for c in ks:
        totals.update(by_cluster[c])
    clusters = []
    for c in ks:
        (lab, n), size = by_cluster[c].most_common(1)[0], sum(by_cluster[c].values())
        clusters.append({"k": c, "color": colors[c] if c < len(colors) else "#ccc", "n": size, "majority": lab,
                         "purity": n / size})
    rows = [{"label": lab, "n": n, "counts": [by_cluster[c].get(lab, 0) for c in ks]}
            for lab, n in sorted(totals.items(), key=lambda x: (-x[1], x[0]))]
    right = sum(c["purity"] * c["n"] for c in clusters)
    return {"clusters": clusters, "rows": rows, "purity": right / max(sum(c["n"] for c in clusters), 1)}


def reference_track(events: Sequence[tuple[float, float, str]], *, duration_s: float, src: str
                    ) -> list[dict[str, Any]]:
    """A file's reference events as a strip under its timeline: one block per event, a grey per label."""
    palette = ["#555555", "#8c8c8c", "#b0b0b0", "#6f6f6f", "#9e9e9e", "#7a7a7a"]
    shade = {lab: palette[i % len(palette)] for i, lab in enumerate(sorted({str(e[2]) for e in events}))}
    dur = max(float(duration_s), 1e-9)
    out = []
    for a, b, lab in sorted(events):
        a, b = max(0.0, float(a)), min(float(b), dur)
        if b <= a:
            continue
        out.append({"left": 100.0 * a / dur, "width": 100.0 * (b - a) / dur, "color": shade[str(lab)],
                    "title": f"{a:.2f}-{b:.2f} s: {lab}", "label": str(lab), "src": f"{src}#t={a:.3f},{b:.3f}"})
    return out


def sound_map_plot(output_dir: Path, segments: Sequence[Mapping[str, Any]], *, name_by_path: Mapping[str, str],
                   step_rate_hz: float, colors: Sequence[str], max_points: int = 5000) -> str | None:
    """Every sound as a point: the mean of its steps' embeddings, first two principal components, by cluster.

    At most ``max_points`` sounds (an even sample) are drawn. Returns the image's relative URL, or None
    with fewer than three sounds.
    """
    folder = RunFolder(output_dir)
    pick = segments if len(segments) <= max_points else [segments[i] for i in
                                                          np.linspace(0, len(segments) - 1, max_points).astype(int)]
    by_file: dict[str, list] = {}
    for s in pick:
        by_file.setdefault(s["path"], []).append(s)
    x, c = [], []
    for path, segs in by_file.items():
        try:
            emb = folder.read_step_embeddings(name_by_path[path])
        except (OSError, ValueError, KeyError):
            continue
        for s in segs:
            a = min(int(s["start_s"] * step_rate_hz), len(emb) - 1)
            b = max(a + 1, min(int(np.ceil(s["end_s"] * step_rate_hz)), len(emb)))
            x.append(emb[a:b].mean(axis=0))
            c.append(colors[int(s["cluster"])])
    return pca_plot(folder, np.asarray(x), c, name="sounds_pca.png", size=10 if len(x) > 500 else 18, alpha=0.8)


def pca_plot(folder: RunFolder, x: np.ndarray, colors: Sequence[str], *, name: str, size: float = 18,
             alpha: float | None = None) -> str | None:
    """Points ``x`` ``(n, D)`` on their first two principal components, each in its colour, as ``report/<name>``.

    Returns the image's relative URL, or None with fewer than three points or dimensions under two.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    if len(x) < 3 or x.shape[1] < 2:
        return None
    xy = PCA(n_components=2, random_state=0).fit_transform(x)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(xy[:, 0], xy[:, 1], c=list(colors), s=size, edgecolors="none", alpha=alpha)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    out = folder.report_image(name)
    with atomic_open(out, "wb", fsync=False) as fh:
        fig.savefig(fh, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return folder.rel(out)
