"""Scores against references: clip labels (NMI, ARI, accuracy under the best cluster-to-label matching),
reference segments (boundary F, L-measure of the trees) and labelled events (event NMI); ``sound-cluster-eval``.

The references are read by :mod:`sound_cluster.outputs.references`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from sound_cluster.config import SEGMENT_FORMATS
from sound_cluster.embed.clusters import read_clusters
from sound_cluster.errors import SoundClusterError
from sound_cluster.outputs.lmeasure import lmeasure
from sound_cluster.outputs.references import match_references, read_labels, read_segments
from sound_cluster.run_folder import RunFolder
from sound_cluster.segment.tree import doc_cut, read_tree_json

log = logging.getLogger(__name__)


def clustering_scores(labels: Sequence, clusters: Sequence[int]) -> dict[str, float]:
    """NMI, ARI and accuracy of ``clusters`` against ``labels``.

    Accuracy matches clusters to labels one-to-one (Hungarian algorithm on the contingency
    table); with more clusters than labels the unmatched clusters count as errors.

    Returns
    -------
    dict
        ``nmi``, ``ari``, ``acc`` in [0, 1] (ARI may be slightly negative) and ``n``, the count.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    from sklearn.metrics.cluster import contingency_matrix

    labels = np.asarray([str(x) for x in labels])
    clusters = np.asarray(clusters)
    if labels.size == 0:
        return {"nmi": float("nan"), "ari": float("nan"), "acc": float("nan"), "n": 0}
    table = contingency_matrix(labels, clusters)  # (n_labels, n_clusters)
    rows, cols = linear_sum_assignment(-table)
    return {
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
        "acc": float(table[rows, cols].sum() / labels.size),
        "n": int(labels.size),
    }


def score_assignments(labels: Mapping[str, str], assignments: Mapping[str, int]) -> dict[str, float] | None:
    """Scores over the files that have both a label and a cluster; None when there are none."""
    common = sorted(set(labels) & set(assignments))
    if not common:
        return None
    return clustering_scores([labels[p] for p in common], [assignments[p] for p in common])


MIN_INTERVAL_S = 1e-3  # shorter reference pieces are left out: mir_eval needs every interval to last
MAX_LMEASURE_FRAMES = 3000  # the L-measure's frame is 0.1 s, or longer where a file has more frames than this


def reference_partition(segments: Sequence[tuple[float, float, str]], duration_s: float
                        ) -> tuple[np.ndarray, list[str]]:
    """Labelled segments -> a partition of ``[0, duration_s)``: gaps become segments labelled ``""``.

    Events are taken in order of their start and clipped to the file; one that starts at or past the
    file's end is left out, and where events overlap, the later one starts where the earlier one ends.
    So the intervals never overlap, each lasts at least ``MIN_INTERVAL_S``, and there are at most
    ``2 * len(segments) + 1`` of them, however the table was written.

    Returns
    -------
    intervals : np.ndarray [shape=(n, 2)]
    labels : list of str
    """
    duration_s = float(duration_s)
    edges, labels, t = [], [], 0.0
    for s, e, lab in sorted(segments, key=lambda x: (float(x[0]), float(x[1]))):
        s, e = max(float(s), t), min(float(e), duration_s)
        if s >= duration_s - MIN_INTERVAL_S or e - s < MIN_INTERVAL_S:
            continue
        if s - t >= MIN_INTERVAL_S:
            edges.append((t, s))
            labels.append("")
        elif edges:  # a sliver of gap: the piece before takes it
            edges[-1] = (edges[-1][0], s)
        else:
            s = t
        edges.append((s, e))
        labels.append(str(lab))
        t = e
    if duration_s - t >= MIN_INTERVAL_S or not edges:
        edges.append((t, duration_s))
        labels.append("")
    else:
        edges[-1] = (edges[-1][0], duration_s)
    return np.array(edges, dtype=float), labels


def tree_levels(doc: Mapping, *, max_levels: int = 8) -> tuple[list[np.ndarray], list[list[str]]]:
    """Nested cuts of a tree document at k = 2, 4, 8, ... leaves, as a hierarchy for mir_eval.

    Each segment is labelled with its cluster (or its order when there are no clusters).
    """

    intervals, labels = [], []
    k = 2
    while k <= doc["n_leaves"] and len(intervals) < max_levels:
        segs = doc_cut(doc, k)
        iv = np.array([(s["start_s"], s["end_s"]) for s in segs], dtype=float)
        iv[-1, 1] = doc["duration_s"]
        intervals.append(iv)
        labels.append([str(s.get("cluster", s["order"])) for s in segs])
        k *= 2
    if not intervals:
        intervals.append(np.array([[0.0, doc["duration_s"]]]))
        labels.append([str(doc.get("cluster", 0))])
    return intervals, labels


def score_tree(doc: Mapping, segments: Sequence[tuple[float, float, str]]) -> dict[str, float]:
    """Boundary F at 0.1 s and 0.5 s of the tree cut at the reference count, and the L-measure.

    The reference is the file's labelled segments with gaps filled (:func:`reference_partition`);
    the tree is cut into as many segments (capped at its leaves). Boundary hit rates use
    ``mir_eval.segment.detection`` with the first and last boundary trimmed; the L-measure
    (:func:`sound_cluster.outputs.lmeasure.lmeasure`, mir_eval's definition) compares the reference with the
    tree's nested cuts.
    """
    import mir_eval


    dur = float(doc["duration_s"])
    ref, ref_labels = reference_partition(segments, dur)
    k = min(len(ref), doc["n_leaves"])
    segs = doc_cut(doc, k)
    est = np.array([(s["start_s"], s["end_s"]) for s in segs], dtype=float)
    est[-1, 1] = dur
    out = {"n_segments": int(len(ref))}
    for w in (0.1, 0.5):
        out[f"f_{w}"] = float(mir_eval.segment.detection(ref, est, window=w, trim=True)[2])
    est_h, est_l = tree_levels(doc)
    # Its cost grows with the square of the frames: long files are compared at a coarser frame.
    frame_s = max(0.1, dur / MAX_LMEASURE_FRAMES)
    _, _, l_f = lmeasure([ref], [ref_labels], est_h, est_l, frame_size=frame_s)
    out["l_measure"] = float(l_f)
    return out


def score_trees(docs: Mapping[str, Mapping], references: Mapping[str, Sequence]) -> dict | None:
    """Per-file :func:`score_tree` for files with both a tree and references, and their means."""
    common = sorted(set(docs) & set(references))
    per_file = {}
    for p in common:
        past = sum(float(s) >= float(docs[p]["duration_s"]) for s, _, _ in references[p])
        if past:
            log.warning("segment scores: %s: %d of its %d reference events start at or after its end (%.2f s), "
                        "left out (are the times in seconds, and is the table for this file?)", p, past,
                        len(references[p]), float(docs[p]["duration_s"]))
        try:  # one file's references that mir_eval cannot score must not cost the run its other scores
            per_file[p] = score_tree(docs[p], references[p])
        except ValueError as err:
            log.warning("segment scores: %s left out: %s", p, err)
    if not per_file:
        return None
    common = sorted(per_file)
    keys = ("f_0.1", "f_0.5", "l_measure")
    return {"n": len(common), "mean": {k: float(np.mean([v[k] for v in per_file.values()])) for k in keys},
            "per_file": per_file}


def event_cluster(step_clusters: np.ndarray, *, start_s: float, end_s: float, step_rate_hz: float) -> int:
    """The cluster that most of an event's steps take (ties: the lowest cluster).

    Parameters
    ----------
    step_clusters : np.ndarray [shape=(n_steps,), dtype=int]
        Each step's cluster (the argmax of its posterior).
    start_s, end_s : float
        The event, in seconds.
    step_rate_hz : float
        Steps per second; step ``i`` covers ``[i, i + 1) / step_rate_hz``.

    Returns
    -------
    int
        The majority cluster of the steps whose centres lie in the event; an event shorter than a
        step takes the step under its midpoint.
    """
    n = len(step_clusters)
    a = int(np.ceil(start_s * step_rate_hz - 0.5))
    b = int(np.ceil(end_s * step_rate_hz - 0.5))
    a, b = max(0, min(a, n - 1)), max(0, min(b, n))
    if b <= a:
        a = min(int(0.5 * (start_s + end_s) * step_rate_hz), n - 1)
        b = a + 1
    return int(np.bincount(np.asarray(step_clusters[a:b], dtype=np.int64)).argmax())


def score_events(references: Mapping[str, Sequence[tuple[float, float, str]]],
                 step_clusters: Mapping[str, tuple[np.ndarray, float]]) -> dict | None:
    """Event NMI, ARI and accuracy: each labelled reference event takes the cluster most of its steps take.

    Parameters
    ----------
    references : mapping of str to list of (start_s, end_s, label)
        Reference events by file; events with an empty label are left out.
    step_clusters : mapping of str to (np.ndarray, float)
        By file: each step's cluster and the steps per second.

    Returns
    -------
    dict or None
        :func:`clustering_scores` over every labelled event of the files in both, and ``files``;
        None when there is no such event.
    """
    labels, clusters, files = [], [], 0
    for path in sorted(set(references) & set(step_clusters)):
        steps, rate = step_clusters[path]
        events = [(s, e, lab) for s, e, lab in references[path] if str(lab) != ""]
        files += bool(events)
        for s, e, lab in events:
            labels.append(lab)
            clusters.append(event_cluster(steps, start_s=s, end_s=e, step_rate_hz=rate))
    if not labels:
        return None
    return {**clustering_scores(labels, clusters), "files": files}


def evaluate_run(run_dir: Path, *, labels: Path | None = None, segments: Path | None = None,
                 segments_format: str = "auto") -> dict:
    """Score a finished run from its files (``clusters.csv``, ``trees/``), nothing recomputed.

    Returns
    -------
    dict
        ``metrics`` (clip labels: NMI, ARI, accuracy), ``segment_metrics`` (boundary F at
        0.1 s and 0.5 s, L-measure; per file and mean) and ``event_metrics`` (each labelled
        reference segment as an event: NMI, ARI, accuracy of :func:`score_events`), each present
        when its reference is given and matches at least one file.
    """

    folder = RunFolder(Path(run_dir))
    out: dict = {}
    if labels is not None:
        assignments = {a.path: a.cluster for a in read_clusters(folder.clusters)}
        scores = score_assignments(read_labels(labels), assignments)
        if scores is not None:
            out["metrics"] = {"labels": str(labels), **scores}
    if segments is not None:
        names = {a.path: a.name for a in read_clusters(folder.clusters)}
        refs = match_references(read_segments(segments, fmt=segments_format), names)
        docs = {p: read_tree_json(folder.tree(names[p])) for p in refs if folder.tree(names[p]).is_file()}
        scores = score_trees(docs, refs)
        if scores is not None:
            out["segment_metrics"] = {"segments": str(segments), **scores}
        steps = {}
        for p, doc in docs.items():
            steps[p] = (folder.read_posteriors(names[p])[1].argmax(axis=1), float(doc["frame_rate_hz"]))
        scores = score_events(refs, steps)
        if scores is not None:
            out["event_metrics"] = {"segments": str(segments), **scores}
    return out


def main(argv: list[str] | None = None) -> int:
    """``sound-cluster-eval RUN_DIR [--labels CSV] [--segments CSV]``: score an existing run, print JSON."""
    import argparse
    import json
    import sys

    from sound_cluster.logs import printable

    ap = argparse.ArgumentParser(prog="sound-cluster-eval", description=main.__doc__.split(":", 1)[1].strip())
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--labels", type=Path, help="CSV path,label (clip labels)")
    ap.add_argument("--segments", type=Path, help="reference segments: CSV path,start_s,end_s,label, or a folder of "
                    "Audacity label tracks or Raven selection tables")
    ap.add_argument("--segments-format", choices=SEGMENT_FORMATS, default="auto")
    args = ap.parse_args(argv)
    if not RunFolder(args.run_dir).clusters.is_file():
        print(f"sound-cluster-eval: {args.run_dir} is not a run folder (no clusters.csv)", file=sys.stderr)
        return 2
    if args.labels is None and args.segments is None:
        ap.error("give --labels, --segments or both")
    try:
        result = evaluate_run(args.run_dir, labels=args.labels, segments=args.segments,
                              segments_format=args.segments_format)
    except SoundClusterError as err:
        print(f"sound-cluster-eval: {printable(err)}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:  # a run folder whose files are damaged, or not what a run writes
        print(f"sound-cluster-eval: {printable(args.run_dir)}: {printable(err)}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    missing = [f"--{name} {ref} names none of the run's files" for name, ref, key in
               (("labels", args.labels, "metrics"), ("segments", args.segments, "segment_metrics"))
               if ref is not None and key not in result]
    for m in missing:
        print(f"sound-cluster-eval: {m} (paths must be relative to the run's data.path, as in clusters.csv)",
              file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
