"""Export trees for other tools: flat segments (CSV rows), Audacity label tracks, Raven selection tables
and JAMS ``multi_segment`` hierarchies."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterable, Mapping

from sound_cluster.io_utils import (
    atomic_open,
    atomic_write_text,
    csv_lines,
    csv_text,
    open_regular,
    read_table,
    spreadsheet_cell,
)
from sound_cluster.outputs.evaluate import tree_levels
from sound_cluster.segment.tree import doc_cut

# kind: sound, or background (the stretches between sounds, where sounds are found over a background; no cluster)
SEGMENT_COLUMNS = ("path", "segment", "start_s", "end_s", "cluster", "confidence", "kind")
# Raven's selection table: these columns first, tab-separated (Raven Pro 1.6 User's Manual, chapter 6,
# "Selection tables"; crowsetta.formats.bbox.Raven reads them), then ours.
RAVEN_COLUMNS = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)",
                 "Cluster", "Confidence")


def cluster_name(cluster: Any) -> str:
    """A cluster as a label other tools show: its number, as clusters.csv, segments.csv, the report and
    ``sound-cluster-show`` write it (one spelling everywhere); empty when the segment has none."""
    return "" if cluster in ("", None) else str(int(cluster))


def segment_rows(doc: Mapping[str, Any], *, k: int | str) -> list[tuple]:
    """The tree cut into ``min(k, n_leaves)`` segments (``"auto"``: the file's own cut) as ``segments.csv`` rows.

    A background segment (the stretch between two sounds) has no cluster: it is not a kind of sound.
    """

    segs = doc_cut(doc, k)
    rows = []
    for i, s in enumerate(segs):
        kind = s.get("kind", "sound")
        end = doc["duration_s"] if i == len(segs) - 1 else s["end_s"]
        rows.append((doc["source"], i, s["start_s"], end, s.get("cluster", "") if kind == "sound" else "",
                     s.get("confidence", "") if kind == "sound" else "", kind))
    return rows


def sound_rows(rows: Iterable[tuple]) -> list[tuple]:
    """The rows of :func:`segment_rows` that are sounds (selections of the exports)."""
    return [r for r in rows if (r[6] if len(r) > 6 else "sound") == "sound"]


def read_segments_table(path: Path) -> list[dict[str, Any]]:
    """``segments.csv`` as dicts with typed values (``cluster`` and ``confidence`` None where a row has none)."""
    def num(cast, v: str):
        return cast(v) if v != "" else None

    try:
        return [{"path": r["path"], "segment": int(r["segment"]), "start_s": float(r["start_s"]),
                 "end_s": float(r["end_s"]), "cluster": num(int, r["cluster"]),
                 "confidence": num(float, r["confidence"]), "kind": r.get("kind") or "sound"}
                for r in read_table(path)]
    except KeyError as err:
        raise ValueError(f"{Path(path).name} lacks the column {err}") from None


def segment_lines(rows: Iterable[tuple]) -> str:
    """Rows of ``segments.csv`` (:func:`segment_rows`) as its lines, without the header."""
    return csv_lines((spreadsheet_cell(r[0]), *r[1:]) for r in rows)


def write_segments(rows: Iterable[tuple], out_path: Path) -> None:
    write_segment_lines([segment_lines(rows)], out_path)


def write_segment_lines(chunks: Iterable[str], out_path: Path) -> None:
    """``segments.csv`` from :func:`segment_lines` of each file in turn, written as they come: the whole table is
    never held (64,000 rows at 16 hours of recordings)."""
    with atomic_open(out_path, "w", encoding="utf-8", newline="") as fh:
        fh.write(csv_text(SEGMENT_COLUMNS, ()))
        for chunk in chunks:
            fh.write(chunk)


def write_audacity(rows: Iterable[tuple], out_path: Path) -> None:
    """One file's segments as an Audacity label track (File > Import > Labels).

    Audacity's label text: one label a line, ``start<TAB>end<TAB>label``, times in seconds (the
    Audacity manual, "Importing and Exporting Labels"); crowsetta reads it as ``aud-seq``. The label
    is the cluster's name (``c03``); the format has no field for the confidence.

    Parameters
    ----------
    rows : iterable of tuple
        :func:`segment_rows` of the file.
    """
    lines = [f"{float(r[2]):.6f}\t{float(r[3]):.6f}\t{cluster_name(r[4])}\n" for r in rows]
    atomic_write_text(out_path, "".join(lines), fsync=False)


def write_raven(rows: Iterable[tuple], out_path: Path, *, high_freq_hz: float, low_freq_hz: float = 0.0) -> None:
    """One file's segments as a Raven selection table (File > Open Selection Table).

    Parameters
    ----------
    rows : iterable of tuple
        :func:`segment_rows` of the file.
    high_freq_hz, low_freq_hz : float
        Each selection's band: the file's whole range (a segment is a span of time, not of frequency).
    """
    buf = io.StringIO()
    buf.write("\t".join(RAVEN_COLUMNS) + "\n")
    for i, r in enumerate(rows, start=1):
        buf.write("\t".join([str(i), "Spectrogram 1", "1", f"{float(r[2]):.6f}", f"{float(r[3]):.6f}",
                             f"{low_freq_hz:.1f}", f"{high_freq_hz:.1f}", cluster_name(r[4]),
                             "" if r[5] in ("", None) else f"{float(r[5]):.4f}"]) + "\n")
    atomic_write_text(out_path, buf.getvalue(), fsync=False)


def write_jams(doc: Mapping[str, Any], out_path: Path, *, max_levels: int = 8) -> None:
    """The tree's nested cuts (k = 2, 4, 8, ...) as one JAMS ``multi_segment`` annotation.

    Level ``i`` holds the cut into ``2 ** (i + 1)`` segments, labelled with their clusters, so
    MSAF or ``mir_eval.hierarchy`` can read the hierarchy.
    """
    import jams


    dur = float(doc["duration_s"])
    jam = jams.JAMS()
    jam.file_metadata.duration = dur
    jam.file_metadata.title = doc["source"]
    ann = jams.Annotation(namespace="multi_segment", time=0, duration=dur)
    ann.annotation_metadata.annotation_tools = "sound_cluster"
    for level, (intervals, labels) in enumerate(zip(*tree_levels(doc, max_levels=max_levels))):
        for (s, e), lab in zip(intervals, labels):
            ann.append(time=float(s), duration=float(e - s), value={"label": lab, "level": level}, confidence=None)
    jam.annotations.append(ann)
    with atomic_open(out_path, "w", fsync=False, encoding="utf-8") as fh:
        jam.save(fh)


def nyquist_hz(path: Path, *, default_hz: float) -> float:
    """Half the file's own sample rate (the top of a Raven selection), or ``default_hz`` if it cannot be read."""
    import soundfile as sf

    try:
        with open_regular(path) as fh:
            return sf.info(fh).samplerate / 2.0
    except Exception:  # noqa: BLE001 - the file was decoded before; a selection's band is not worth a failure
        return float(default_hz)


def write_file_exports(doc: Mapping[str, Any], *, folder: Any, name: str, audio_path: Path, exports: set[str],
                       k: int | str, default_nyquist_hz: float) -> list[tuple] | None:
    """One file's exports (``output.export``) from its tree document; returns its segments.csv rows.

    Parameters
    ----------
    doc : dict
        The file's tree document.
    folder : RunFolder
        Where the exports go.
    name : str
        The file's output name.
    audio_path : Path
        The audio file (its sample rate sets a Raven selection's top frequency).
    exports : set of str
        ``audacity``, ``raven``, ``jams``, ``segments``.
    k : int or "auto"
        Segments per file (``auto``: the file's own cut).

    Returns
    -------
    list of tuple or None
        The file's :func:`segment_rows` when any export needed them.
    """
    rows = segment_rows(doc, k=k) if exports & {"audacity", "raven", "segments"} else None
    sounds = None if rows is None else sound_rows(rows)  # one selection per sound: background is no selection
    if "audacity" in exports:
        write_audacity(sounds, folder.audacity(name))
    if "raven" in exports:
        write_raven(sounds, folder.raven(name), high_freq_hz=nyquist_hz(audio_path, default_hz=default_nyquist_hz))
    if "jams" in exports:
        write_jams(doc, folder.jams(name))
    return rows
