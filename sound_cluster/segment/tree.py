"""SegmentTree: the binary tree of one file's greedy merges; cuts, JSON (schema 1) and text.

Leaves are the encoder's output steps, ``frame_rate_hz`` per second. Node ids: leaves
``0..n-1``, then merge ``i`` makes node ``n + i`` (its ``order``). Spans are half-open leaf
ranges ``[start, end)``; times are in seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sound_cluster.io_utils import atomic_write_text

SCHEMA_VERSION = 1
# The rules of SegmentTree.auto_choice, recorded in each tree document.
SOUNDS_RULE = "sounds_between_pauses"
COST_RULE = "largest_cost_jump"
LENGTH_RULE = "typical_sound_length"


@dataclass
class SegmentTree:
    """A folded sequence.

    Attributes
    ----------
    left, right : np.ndarray [shape=(n-1,)]
        Children of internal node ``n + i``.
    cost : np.ndarray [shape=(n-1,)]
        Merge costs in merge order.
    frame_rate_hz : float
        Leaves per second.
    duration_s : float
        The file's duration (the last leaf may end past it; times are clipped to it).
    leaf_times : np.ndarray [shape=(n + 1,)], optional
        Time in seconds of each leaf boundary (see :mod:`sound_cluster.segment.boundaries`); by default
        the step grid ``leaf / frame_rate_hz``.
    """

    left: np.ndarray
    right: np.ndarray
    cost: np.ndarray
    frame_rate_hz: float
    duration_s: float
    leaf_times: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.n_leaves
        self.start = np.empty(2 * n - 1, dtype=np.int64)
        self.end = np.empty(2 * n - 1, dtype=np.int64)
        self.start[:n] = np.arange(n)
        self.end[:n] = np.arange(1, n + 1)
        for i, (a, b) in enumerate(zip(self.left, self.right)):
            self.start[n + i] = min(self.start[a], self.start[b])
            self.end[n + i] = max(self.end[a], self.end[b])
        # The merge that consumed each node (n - 1 for the root: never consumed).
        self.consumed_at = np.full(2 * n - 1, n - 1, dtype=np.int64)
        self.consumed_at[self.left] = np.arange(n - 1)
        self.consumed_at[self.right] = np.arange(n - 1)

    @classmethod
    def from_merges(cls, merges, *, frame_rate_hz: float, duration_s: float,
                    leaf_times: np.ndarray | None = None) -> "SegmentTree":
        return cls(np.asarray(merges.left), np.asarray(merges.right), np.asarray(merges.cost, dtype=np.float64),
                   float(frame_rate_hz), float(duration_s), None if leaf_times is None else np.asarray(leaf_times))

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "SegmentTree":
        """The tree of a tree document (:meth:`to_json`, ``trees/<path>.json``).

        Raises
        ------
        ValueError
            The document was written without the children of some nodes (``output.max_tree_depth``,
            ``output.min_segment_s``): its merges cannot all be recovered.
        """
        n = int(doc["n_leaves"])
        left, right = np.zeros(max(n - 1, 0), dtype=np.int64), np.zeros(max(n - 1, 0), dtype=np.int64)
        cost = np.zeros(max(n - 1, 0))
        leaf_times = np.zeros(n + 1)

        def node_id(node: dict[str, Any]) -> int:
            return int(node["start"]) if node.get("order") is None else n + int(node["order"])

        stack = [doc["root"]]
        while stack:
            node = stack.pop()
            if node.get("order") is None:  # a leaf
                leaf_times[node["start"]], leaf_times[node["end"]] = node["start_s"], node["end_s"]
                continue
            children = node.get("children")
            if not children:
                raise ValueError(f"{doc.get('source', 'the tree')}: the node at {node['start_s']:.3f} s was written "
                                 "without its children (output.max_tree_depth, output.min_segment_s)")
            i = int(node["order"])
            left[i], right[i], cost[i] = node_id(children[0]), node_id(children[1]), float(node["cost"])
            stack += children
        return cls(left, right, cost, float(doc["frame_rate_hz"]), float(doc["duration_s"]), leaf_times)

    @property
    def n_leaves(self) -> int:
        return int(len(self.left)) + 1

    @property
    def root(self) -> int:
        return 2 * self.n_leaves - 2

    def children(self, node: int) -> tuple[int, int] | None:
        n = self.n_leaves
        return None if node < n else (int(self.left[node - n]), int(self.right[node - n]))

    def order(self, node: int) -> int | None:
        return None if node < self.n_leaves else node - self.n_leaves

    def node_cost(self, node: int) -> float:
        return 0.0 if node < self.n_leaves else float(self.cost[node - self.n_leaves])

    def cut_nodes(self, k: int) -> list[int]:
        """The nodes left after the first ``n - k`` merges, in time order."""
        n = self.n_leaves
        if not 1 <= k <= n:
            raise ValueError(f"k must be between 1 and the number of leaves {n}, got {k}")
        done = n - k
        ids = np.arange(n + done)
        alive = ids[self.consumed_at[: n + done] >= done]
        return sorted(alive.tolist(), key=lambda i: self.start[i])

    def cut(self, k: int) -> list[tuple[int, int]]:
        """The ``k`` segments ``[(start, end), ...]`` (leaf indices, half-open) after ``n - k`` merges."""
        return [(int(self.start[i]), int(self.end[i])) for i in self.cut_nodes(k)]

    def boundaries_s(self, k: int) -> np.ndarray:
        """The ``k - 1`` inner boundaries of :meth:`cut` in seconds."""
        return np.array([self.time(s) for s, _ in self.cut(k)[1:]])

    def time(self, leaf: int) -> float:
        if self.leaf_times is not None:
            return float(self.leaf_times[leaf])
        return min(leaf / self.frame_rate_hz, self.duration_s)

    def auto_choice(self, *, min_segment_s: float, sounds: int = 0, min_sound_s: float = 0.1,
                    units: int | None = None, sound_length_s: float | None = None) -> dict[str, Any]:
        """The file's own number of segments, and the rule that chose it (as the tree document records it).

        Segment units (``units`` given, :func:`sound_cluster.segment.units.count_units` with the folder's
        typical ``sound_length_s``): that many segments (rule :data:`SOUNDS_RULE` when it is the
        number of sounds between pauses, else :data:`LENGTH_RULE`). Otherwise, where pauses
        separate two or more sounds (``sounds``, from :func:`sound_cluster.segment.pauses.sound_onsets`),
        each sound is a segment (rule :data:`SOUNDS_RULE`, at most one segment per leaf), and
        elsewhere the tree's merge costs decide (rule :data:`COST_RULE`, :meth:`auto_k`).

        Returns
        -------
        choice : dict
            ``{"k": int, "name": str, ...}`` with the rule's settings.
        """
        if units is not None:
            k = int(np.clip(units, 1, self.n_leaves))
            if sounds >= 2 and k == sounds:
                return {"k": k, "name": SOUNDS_RULE, "min_sound_s": min_sound_s}
            return {"k": k, "name": LENGTH_RULE, "sound_length_s": round(float(sound_length_s or 0.0), 4)}
        if sounds >= 2:
            return {"k": min(int(sounds), self.n_leaves), "name": SOUNDS_RULE, "min_sound_s": min_sound_s}
        return {"k": self.auto_k(min_segment_s=min_segment_s), "name": COST_RULE, "min_segment_s": min_segment_s}

    def auto_k(self, *, min_segment_s: float) -> int:
        """The number of segments this tree's own merge costs suggest (rule :data:`COST_RULE`).

        Costs are made monotone (the running maximum, a merge's height), then the cut chosen is
        the one before the largest relative jump in height, ``log h[n-k] - log h[n-k-1]``,
        among the cuts whose segments all last at least ``min_segment_s``. 1 when no cut of two
        or more segments qualifies. O(k) after the fold: cuts are walked from the root down,
        one split at a time.
        """
        n = self.n_leaves
        if n < 3:
            return 1
        h = np.log(np.maximum.accumulate(np.maximum(self.cost, 0.0)) + 1e-12)
        best_k, best_jump, shortest = 1, -np.inf, np.inf
        for k in range(2, n):
            node = n + (n - k)  # the merge undone to go from k - 1 to k segments
            for c in self.children(node):
                shortest = min(shortest, self.time(int(self.end[c])) - self.time(int(self.start[c])))
            if shortest < min_segment_s:
                break
            jump = h[n - k] - h[n - k - 1]
            if jump > best_jump:
                best_k, best_jump = k, jump
        return best_k

    def depth(self) -> int:
        """Edges on the longest path from the root to a leaf."""
        n = self.n_leaves
        d = np.zeros(2 * n - 1, dtype=np.int64)
        for i in range(n - 2, -1, -1):  # parents come after their children: walk down from the root
            node = n + i
            d[self.left[i]] = d[self.right[i]] = d[node] + 1
        return int(d.max())

    # ------------------------------------------------------------------------------------------
    # JSON

    def to_json(self, *, source: str, posteriors: np.ndarray | None = None, max_depth: int | None = None,
                min_segment_s: float = 0.0, auto: dict[str, Any] | None = None,
                boundary_refine_s: float = 0.0, cut: list[tuple[int, int, str]] | None = None) -> dict[str, Any]:
        """The tree as a schema-1 document (see DESIGN.md section 4).

        Parameters
        ----------
        source : str
            The input's path relative to ``data.path``.
        posteriors : np.ndarray [shape=(n_leaves, K)], optional
            Per-leaf cluster posteriors; each node gets the argmax of their mean over its span.
        max_depth : int, optional
            Nodes at this depth are written without children (they keep ``order`` and ``cost``),
            so very deep trees stay within what JSON readers can nest.
        min_segment_s : float
            Nodes shorter than this are written without children.
        auto : dict, optional
            The automatic count, from :meth:`auto_choice` (default: the merge-cost rule with
            segments of at least 0.2 s).
        boundary_refine_s : float
            How far leaf boundaries were moved to onsets (recorded; the times come from
            ``leaf_times``).
        cut : list of (int, int, str), optional
            The file's own cut when it is not a cut of the first merges (sounds over a background:
            :func:`sound_cluster.segment.segmenter.own_cut`): written as ``auto_cut``, one entry per
            segment with its ``kind`` (``sound`` or ``background``), and what ``auto`` cuts mean.
        """
        if auto is None:
            auto = self.auto_choice(min_segment_s=0.2)
        csum = None
        if posteriors is not None:
            csum = np.concatenate([np.zeros((1, posteriors.shape[1])), np.cumsum(posteriors, axis=0)])

        def node_dict(node: int) -> dict[str, Any]:
            s, e = int(self.start[node]), int(self.end[node])
            out: dict[str, Any] = {"start": s, "end": e, "start_s": round(self.time(s), 4),
                                   "end_s": round(self.time(e), 4), "order": self.order(node),
                                   "cost": round(self.node_cost(node), 6)}
            if csum is not None:
                mean = (csum[e] - csum[s]) / max(e - s, 1)
                k = int(mean.argmax())
                out["cluster"] = k
                out["confidence"] = round(float(mean[k]), 4)
            return out

        root = node_dict(self.root)
        stack = [(self.root, root, 0)]
        while stack:  # iterative: trees of long files are far deeper than Python's recursion limit
            node, d, depth = stack.pop()
            kids = self.children(node)
            if kids is None or (max_depth is not None and depth >= max_depth) or \
                    (d["end_s"] - d["start_s"]) < min_segment_s:
                continue
            d["children"] = [node_dict(kids[0]), node_dict(kids[1])]
            if self.start[kids[1]] < self.start[kids[0]]:
                d["children"].reverse()
            stack.extend((c_id, c, depth + 1) for c_id, c in zip(sorted(kids, key=lambda i: self.start[i]),
                                                                  d["children"]))
        doc = {"schema_version": SCHEMA_VERSION, "source": source, "duration_s": round(self.duration_s, 4),
               "frame_rate_hz": self.frame_rate_hz, "n_leaves": self.n_leaves,
               "auto_k": auto["k"], "auto_k_rule": {key: v for key, v in auto.items() if key != "k"},
               "boundary_refine_s": boundary_refine_s}
        if cut is not None:
            by_span = {(int(self.start[i]), int(self.end[i])): i for i in range(2 * self.n_leaves - 1)}
            doc["auto_cut"] = [{**node_dict(by_span[(a, b)]), "kind": kind} if (a, b) in by_span else
                               {"start": a, "end": b, "start_s": round(self.time(a), 4), "end_s": round(self.time(b), 4),
                                "order": None, "cost": 0.0, "kind": kind} for a, b, kind in cut]
        if "cluster" in root:
            doc["cluster"] = root["cluster"]
            doc["confidence"] = root["confidence"]
        doc["root"] = root
        return doc


def write_tree_json(doc: dict[str, Any], path: Path) -> None:
    """Write a tree document atomically (compact: trees of long files are large)."""

    atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n", fsync=False)


def read_tree_json(path: Path) -> dict[str, Any]:
    """Read a tree document (a regular file of at most 1 GB) and check its schema version.

    Raises
    ------
    OSError, ValueError
    """
    from sound_cluster.io_utils import read_json_object

    doc = read_json_object(path, max_bytes=1 << 30)
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: unsupported tree schema_version {doc.get('schema_version')!r} "
                         f"(this version reads {SCHEMA_VERSION})")
    return doc


def resolve_k(doc: dict[str, Any], k: int | str) -> int:
    """``k`` as a number of segments: ``"auto"`` is the document's ``auto_k``; at most ``n_leaves``."""
    if k == "auto":
        if "auto_k" not in doc:
            raise ValueError(f"{doc.get('source', 'this tree')} records no auto_k (written by an older version)")
        k = doc["auto_k"]
    return max(1, min(int(k), doc["n_leaves"]))


def doc_cut(doc: dict[str, Any], k: int | str) -> list[dict[str, Any]]:
    """The ``k`` segments of a tree document after its first ``n - k`` merges, in time order.

    ``k="auto"`` is the file's own cut: ``auto_cut`` where the document records one (sounds and the
    background between them, each segment with its ``kind``), else the cut into ``auto_k`` segments.
    Works on the written document: a node written without children counts as one segment.
    """
    if k == "auto" and "auto_cut" in doc:
        return list(doc["auto_cut"])
    k = resolve_k(doc, k)
    segs = [doc["root"]]
    done = doc["n_leaves"] - k
    while True:
        # Undo merges from the last: split the segment whose node has the highest order >= done.
        splittable = [s for s in segs if s.get("children") and s["order"] is not None and s["order"] >= done]
        if not splittable:
            break
        top = max(splittable, key=lambda s: s["order"])
        i = segs.index(top)
        segs[i:i + 1] = top["children"]
    return sorted(segs, key=lambda s: s["start"])


def render(doc: dict[str, Any], *, depth: int | None = None, segments: int | str | None = None) -> str:
    """The tree as indented text: times, merge cost and order, cluster and confidence."""

    def line(node: dict[str, Any], indent: int) -> str:
        parts = [f"{'  ' * indent}[{node['start_s']:8.3f} - {node['end_s']:8.3f} s]"]
        if node.get("order") is not None:
            parts.append(f"merge #{node['order']} cost {node['cost']:.4g}")
        else:
            parts.append("leaf")
        if node.get("kind") == "background":
            parts.append("background")
        elif "cluster" in node:
            parts.append(f"cluster {node['cluster']} ({node['confidence']:.2f})")
        return "  ".join(parts)

    head = (f"{doc['source']}: {doc['duration_s']:.3f} s, {doc['n_leaves']} leaves at {doc['frame_rate_hz']:g} Hz"
            + (f", cluster {doc['cluster']} ({doc['confidence']:.2f})" if "cluster" in doc else "")
            + (f", {doc['auto_k']} segments by {doc['auto_k_rule']['name']}" if "auto_k" in doc else ""))
    lines = [head]
    if segments is not None:
        for i, seg in enumerate(doc_cut(doc, segments)):
            lines.append(f"{i + 1:3d} " + line(seg, 0).strip())
        return "\n".join(lines)
    stack = [(doc["root"], 0)]
    while stack:
        node, d = stack.pop()
        lines.append(line(node, d))
        if node.get("children") and (depth is None or d < depth):
            stack.extend((c, d + 1) for c in reversed(node["children"]))
    return "\n".join(lines)
