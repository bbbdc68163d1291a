"""Export trees for other tools: flat segments (CSV rows) and JAMS ``multi_segment`` hierarchies."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable, Mapping

from .io_utils import atomic_open, atomic_write_text

SEGMENT_COLUMNS = ("path", "segment", "start_s", "end_s", "cluster", "confidence")


def segment_rows(doc: Mapping[str, Any], *, k: int | str) -> list[tuple]:
    """The tree cut into ``min(k, n_leaves)`` segments (``"auto"``: its ``auto_k``) as ``segments.csv`` rows."""
    from .tree import doc_cut

    segs = doc_cut(doc, k)
    return [(doc["source"], i, s["start_s"], doc["duration_s"] if i == len(segs) - 1 else s["end_s"],
             s.get("cluster", ""), s.get("confidence", "")) for i, s in enumerate(segs)]


def write_segments(rows: Iterable[tuple], out_path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SEGMENT_COLUMNS)
    w.writerows(rows)
    atomic_write_text(out_path, buf.getvalue())


def write_jams(doc: Mapping[str, Any], out_path: Path, *, max_levels: int = 8) -> None:
    """The tree's nested cuts (k = 2, 4, 8, ...) as one JAMS ``multi_segment`` annotation.

    Level ``i`` holds the cut into ``2 ** (i + 1)`` segments, labelled with their clusters, so
    MSAF or ``mir_eval.hierarchy`` can read the hierarchy.
    """
    import jams

    from .evaluate import tree_levels

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
