"""Pictures of a run: per-file plots of the log-mel with segment boundaries and clusters."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from sound_cluster.ingest.audio import load
from sound_cluster.io_utils import atomic_open
from sound_cluster.logs import printable
from sound_cluster.outputs.references import match_references, read_labels, read_segments
from sound_cluster.outputs.report_hierarchy import candidates, dendrogram_plot, k_choice_plot
from sound_cluster.outputs.report_segments import (
    label_table,
    pca_plot,
    read_segment_rows,
    reference_labels,
    reference_track,
    segment_clusters,
    sound_map_plot,
    timeline,
)
from sound_cluster.run_folder import RunFolder
from sound_cluster.segment.tree import doc_cut, read_tree_json

log = logging.getLogger(__name__)


def plot_file(
    frames: np.ndarray,
    posteriors: np.ndarray,
    tree,
    *,
    out_path: Path,
    title: str,
    sample_rate: int,
    hop_length: int,
    cuts: Sequence[int],
    own_cut: Sequence[tuple[float, float, str]] | None = None,
    max_columns: int = 2000,
) -> None:
    """Log-mel spectrogram with the file's own cut (or a few tree cuts) and a cluster colour strip.

    Parameters
    ----------
    frames : np.ndarray [shape=(n_frames, n_mels)]
        Log-mel frames of the file.
    posteriors : np.ndarray [shape=(n_steps, K)]
        Per-step cluster posteriors (the tree's leaves).
    tree : SegmentTree
    cuts : sequence of int
        Numbers of segments to draw (those above the number of leaves are skipped), where the file has
        no cut of its own.
    own_cut : sequence of (start_s, end_s, kind), optional
        The file's own cut (its sounds and the background between them): drawn instead of ``cuts``,
        each sound's start and end marked and the background shaded.
    max_columns : int
        Longer inputs are drawn from means over groups of frames (and of steps), at most this many.
    """
    import matplotlib

    matplotlib.use("Agg")
    import librosa.display
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    k = posteriors.shape[1]
    fig, (ax, strip) = plt.subplots(2, 1, figsize=(10, 4.2), sharex=True,
                                    gridspec_kw={"height_ratios": [8, 1], "hspace": 0.05})
    # A decimated view (means over groups of frames, at most max_columns): the picture is 900
    # pixels wide, and drawing an hour's 360,000 frames took 20 s and 2.3 GB.
    view, factor = _decimate(frames, max_columns=max_columns)
    librosa.display.specshow(view.T, sr=sample_rate, hop_length=hop_length * factor, x_axis="time", y_axis="mel",
                             ax=ax, cmap="magma")
    styles = ["-", "--", ":", "-."]
    colors = ["#00e5ff", "#76ff03", "#ffffff", "#ff4081"]
    if own_cut:
        sounds = [(a, b) for a, b, kind in own_cut if kind == "sound"]
        for a, b, kind in own_cut:
            if kind != "sound":
                ax.axvspan(a, b, color="#000000", alpha=0.35, lw=0)
        for j, (a, b) in enumerate(sounds):
            ax.axvline(a, color=colors[0], lw=1.2, label=f"its own cut: {len(sounds)} sounds" if j == 0 else None)
            ax.axvline(b, color=colors[0], lw=0.8, ls=":")
    for i, c in enumerate(x for x in ([] if own_cut else cuts) if x <= tree.n_leaves):
        for j, b in enumerate(tree.boundaries_s(c)):
            ax.axvline(b, color=colors[i % 4], ls=styles[i % 4], lw=1.4 - 0.3 * i,
                       label=f"{c} segments" if j == 0 else None)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
    # A file name is not mathtext: '$\\undefined$.wav' must not fail the plot.
    ax.set_title(printable(title), fontsize=9, parse_math=False)
    ax.set_xlabel("")
    step = 1.0 / tree.frame_rate_hz
    cmap = ListedColormap(_colors(k))  # the report's colours, so its legend reads the strip too
    post_view, post_factor = _decimate(posteriors, max_columns=max_columns)
    strip.imshow(post_view.argmax(axis=1)[None, :], aspect="auto", cmap=cmap, vmin=0, vmax=k - 1,
                 interpolation="nearest", extent=(0, len(post_view) * post_factor * step, 0, 1))
    strip.set_yticks([])
    strip.set_ylabel("cluster", rotation=0, ha="right", va="center", fontsize=8)
    strip.set_xlim(0, tree.duration_s)
    strip.set_xlabel("time (s)")
    with atomic_open(out_path, "wb", fsync=False) as fh:
        fig.savefig(fh, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)


def _decimate(x: np.ndarray, *, max_columns: int) -> tuple[np.ndarray, int]:
    """Means over groups of ``factor`` rows of ``x`` ``(n, d)`` so that at most ``max_columns`` are left
    (the last group may be partial); returns the view and ``factor``. Reads a memory-mapped ``x`` in groups."""
    n = len(x)
    factor = max(1, -(-n // max_columns))
    if factor == 1:
        return np.asarray(x), 1
    out = np.empty((-(-n // factor), x.shape[1]), dtype=np.float32)
    for i, a in enumerate(range(0, n, factor)):
        out[i] = np.asarray(x[a:a + factor], dtype=np.float32).mean(axis=0)
    return out, factor


def _colors(k: int) -> list[str]:
    """``k`` cluster colours: tab10 up to 10, tab20 up to 20, then tab20, tab20b and tab20c (60 distinct)."""
    import matplotlib

    names = ["tab10"] if k <= 10 else ["tab20"] if k <= 20 else ["tab20", "tab20b", "tab20c"]
    pool = [matplotlib.colors.to_hex(matplotlib.colormaps[n](i)) for n in names
            for i in range(matplotlib.colormaps[n].N)]
    return [pool[i % len(pool)] for i in range(k)]


def _url(rel: str) -> str:
    from urllib.parse import quote

    return quote(rel, safe="/")


def write_report(
    output_dir: Path,
    *,
    summary: dict,
    rows: Sequence,
    audio_paths: Sequence[Path],
    sample_rate: int,
    excerpt_s: float,
    n_files: int,
    segments_k: int | str,
    n_segments: Mapping[str, int],
) -> Path:
    """Write ``report.html``: clusters to browse and listen to, an embedding map, files and segments.

    Audio players point at short excerpts written under ``report/audio/`` (WAV, the first
    ``excerpt_s`` seconds at ``sample_rate``), so the page works from disk with no server and
    keeps working if the run folder is moved.

    Parameters
    ----------
    rows : sequence of Assignment
        One per processed file, in the order of ``audio_paths``.
    n_files : int
        Files given a section with their plot and segment table.
    segments_k : int or "auto"
        Segments per file in those tables (``auto``: each tree's own ``auto_k``).
    n_segments : mapping of str to int
        Each written tree's number of segments at ``segments_k``, by output name; files are shown
        most segmented first, and files without a tree are not shown.
    """
    import html

    import jinja2
    import soundfile as sf

    folder = RunFolder(output_dir)


    k = summary["clusters"]["n_clusters"]
    colors = _colors(k)
    written: dict[str, str] = {}

    def excerpt(i: int) -> tuple[str, float]:
        rel = rows[i].name
        if rel not in written:
            y = load(audio_paths[i], sample_rate=sample_rate)[: int(excerpt_s * sample_rate)]
            with atomic_open(folder.report_audio(rel), "wb", fsync=False) as fh:
                sf.write(fh, y, sample_rate, format="WAV", subtype="PCM_16")
            written[rel] = _url(folder.rel(folder.report_audio(rel)))
        return written[rel], min(excerpt_s, rows[i].duration_s)

    labels = _labels_by_path(summary)
    cluster_rows, bars = [], []
    sizes = summary["clusters"]["sizes"]
    top = max(max(sizes), 1)
    for c in range(k):
        members = sorted((i for i, r in enumerate(rows) if r.cluster == c), key=lambda i: -rows[i].confidence)
        bars.append({"k": c, "n": sizes[c], "h": int(round(120 * sizes[c] / top)), "color": colors[c]})
        if not members:
            continue
        typical = members[:3]
        atypical = [i for i in members[::-1][:3] if i not in typical]
        top_labels = Counter(labels[rows[i].path] for i in members if rows[i].path in labels).most_common(5)
        cluster_rows.append({
            "k": c, "n": len(members), "color": colors[c],
            # Every member, played on demand from the original file (no excerpt written for each).
            "members": [{"path": rows[i].path, "confidence": rows[i].confidence,
                         "src": Path(audio_paths[i]).absolute().as_uri(), "label": labels.get(rows[i].path, "")}
                        for i in members],
            "labels": [{"label": lab, "n": n} for lab, n in top_labels],
            "mean_conf": float(np.mean([rows[i].confidence for i in members])),
            "typical": [{"path": rows[i].path, "confidence": rows[i].confidence, "audio": excerpt(i)[0]}
                        for i in typical],
            "atypical": [{"path": rows[i].path, "confidence": rows[i].confidence, "audio": excerpt(i)[0]}
                         for i in atypical],
        })

    # Files with the most segments, then the longest, first: the interesting ones, not the alphabet's.
    # Only the trees shown are read (a folder may hold tens of thousands).
    order = sorted((i for i, r in enumerate(rows) if r.name in n_segments),
                   key=lambda i: (-n_segments[rows[i].name], -rows[i].duration_s, rows[i].path))
    files, step_rate_hz = [], None
    for i in order[:n_files]:
        r, doc = rows[i], read_tree_json(folder.tree(rows[i].name))
        step_rate_hz = float(doc["frame_rate_hz"])
        audio, length = excerpt(i)
        segs = []
        for s in doc_cut(doc, segments_k):
            end = min(s["end_s"], doc["duration_s"])
            sound = s.get("kind", "sound") == "sound"  # background: no cluster, drawn in a neutral colour
            segs.append({"start_s": s["start_s"], "end_s": end, "cluster": s.get("cluster", "") if sound else "",
                         "confidence": s.get("confidence", 0.0),
                         "audio": f"{audio}#t={s['start_s']:.3f},{min(end, length):.3f}" if s["start_s"] < length
                         else None, "src": None})
        plot = folder.plot(r.name)
        files.append({"path": r.path, "cluster": r.cluster, "confidence": r.confidence, "duration_s": r.duration_s,
                      "color": colors[r.cluster],
                      "tree": _url(folder.rel(folder.tree(r.name))), "plot": _url(folder.rel(plot)) if plot.is_file()
                      else None, "segments": segs, "timeline": None, "reference": None})

    seg_clusters, unit, n_units = [], (summary.get("units") or {}).get("unit", "file"), 0
    sound_map = labels_by_cluster = None
    if unit == "segment" and folder.segments.is_file():
        seg_rows = read_segment_rows(folder.segments)
        n_units = len(seg_rows)
        name_by_path = {r.path: r.name for r in rows}
        refs = match_references(_references(summary), name_by_path)
        seg_labels = reference_labels(seg_rows, refs) if refs else None
        seg_clusters = segment_clusters(
            output_dir, segments=seg_rows, audio_by_path={r.path: audio_paths[i] for i, r in enumerate(rows)},
            name_by_path=name_by_path, colors=colors, excerpt_s=excerpt_s, labels=seg_labels)
        labels_by_cluster = label_table(seg_rows, seg_labels or {}, colors=colors)
        if step_rate_hz is not None:
            sound_map = sound_map_plot(output_dir, seg_rows, name_by_path=name_by_path, step_rate_hz=step_rate_hz,
                                       colors=colors)
        sizes = np.bincount([s["cluster"] for s in seg_rows], minlength=k).tolist()
        top = max(max(sizes), 1)
        bars = [{"k": c, "n": sizes[c], "h": int(round(120 * sizes[c] / top)), "color": colors[c]} for c in range(k)]
        by_path = {r.path: i for i, r in enumerate(rows)}
        for f in files:
            src = Path(audio_paths[by_path[f["path"]]]).absolute().as_uri()
            f["timeline"] = timeline(f["segments"], duration_s=f["duration_s"], colors=colors, src=src)
            f["reference"] = reference_track(refs.get(f["path"], ()), duration_s=f["duration_s"], src=src) \
                if refs else None
            for seg in f["segments"]:
                seg["src"] = f"{src}#t={seg['start_s']:.3f},{seg['end_s']:.3f}"
    pca = None if sound_map else _pca_plot(output_dir, rows, colors)
    k_plot = k_choice_plot(output_dir, summary["clusters"])
    k_candidates = candidates(summary["clusters"], run_dir=output_dir)
    hierarchy_plot = dendrogram_plot(output_dir, k_candidates,
                                     near=(summary["clusters"].get("choice") or {}).get("near"))
    legend = [{"k": c, "color": colors[c], "n": sizes[c]} for c in range(k) if sizes[c]]
    env = jinja2.Environment(loader=jinja2.PackageLoader("sound_cluster.outputs", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)
    page = env.get_template("report.html.j2").render(
        title=html.unescape(Path(summary["data_path"]).name or summary["data_path"]), summary=summary,
        clusters=summary["clusters"], metrics=summary.get("metrics"), segment_metrics=summary.get("segment_metrics"),
        bars=bars, cluster_rows=cluster_rows, files=files, pca=pca, k_plot=k_plot, k_candidates=k_candidates, hierarchy_plot=hierarchy_plot, excerpt_s=excerpt_s, legend=legend,
        has_labels=bool(labels), segments_k=segments_k, seg_clusters=seg_clusters, unit=unit, n_units=n_units,
        event_metrics=summary.get("event_metrics"), sound_map=sound_map, labels_by_cluster=labels_by_cluster)
    out = folder.report
    with atomic_open(out, "w", fsync=False, encoding="utf-8") as fh:
        fh.write(page)
    return out


def _references(summary: dict) -> dict:
    """The reference segments the run was scored against (empty when none)."""

    path = (summary.get("segment_metrics") or {}).get("segments")
    try:
        return read_segments(Path(path), fmt=(summary.get("config") or {}).get("data", {}).get(
            "segments_format", "auto")) if path else {}
    except Exception:  # noqa: BLE001 - the report shows what it can; the references were checked at the start
        log.warning("report: could not read the reference segments %s again", path)
        return {}


def _labels_by_path(summary: dict) -> dict[str, str]:
    """The clip labels the run was scored against (empty when none)."""

    path = (summary.get("metrics") or {}).get("labels")
    try:
        return read_labels(Path(path)) if path else {}
    except Exception:  # noqa: BLE001 - the report shows what it can; the labels were checked at the start
        log.warning("report: could not read the labels %s again", path)
        return {}


def _pca_plot(output_dir: Path, rows: Sequence, colors: list[str]) -> str | None:
    """Mean embedding per file -> 2-D PCA scatter coloured by cluster; returns its relative URL."""
    folder = RunFolder(output_dir)
    x = np.array([folder.read_step_embeddings(r.name).mean(axis=0) for r in rows])
    return pca_plot(folder, x, [colors[r.cluster] for r in rows], name="embedding_pca.png")
