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

SCHEMA_VERSION = 1


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
    """

    left: np.ndarray
    right: np.ndarray
    cost: np.ndarray
    frame_rate_hz: float
    duration_s: float

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
    def from_merges(cls, merges, *, frame_rate_hz: float, duration_s: float) -> "SegmentTree":
        return cls(np.asarray(merges.left), np.asarray(merges.right), np.asarray(merges.cost, dtype=np.float64),
                   float(frame_rate_hz), float(duration_s))

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
        return min(leaf / self.frame_rate_hz, self.duration_s)

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
                min_segment_s: float = 0.0) -> dict[str, Any]:
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
        """
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
               "frame_rate_hz": self.frame_rate_hz, "n_leaves": self.n_leaves}
        if "cluster" in root:
            doc["cluster"] = root["cluster"]
            doc["confidence"] = root["confidence"]
        doc["root"] = root
        return doc


def write_tree_json(doc: dict[str, Any], path: Path) -> None:
    """Write a tree document atomically (compact: trees of long files are large)."""
    from .io_utils import atomic_write_text

    atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n", fsync=False)


def read_tree_json(path: Path) -> dict[str, Any]:
    """Read a tree document and check its schema version."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: unsupported tree schema_version {doc.get('schema_version')!r} "
                         f"(this version reads {SCHEMA_VERSION})")
    return doc


def doc_cut(doc: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """The ``k`` segments of a tree document after its first ``n - k`` merges, in time order.

    Works on the written document: a node written without children counts as one segment.
    """
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


def render(doc: dict[str, Any], *, depth: int | None = None, segments: int | None = None) -> str:
    """The tree as indented text: times, merge cost and order, cluster and confidence."""

    def line(node: dict[str, Any], indent: int) -> str:
        parts = [f"{'  ' * indent}[{node['start_s']:8.3f} - {node['end_s']:8.3f} s]"]
        if node.get("order") is not None:
            parts.append(f"merge #{node['order']} cost {node['cost']:.4g}")
        else:
            parts.append("leaf")
        if "cluster" in node:
            parts.append(f"cluster {node['cluster']} ({node['confidence']:.2f})")
        return "  ".join(parts)

    head = (f"{doc['source']}: {doc['duration_s']:.3f} s, {doc['n_leaves']} leaves at {doc['frame_rate_hz']:g} Hz"
            + (f", cluster {doc['cluster']} ({doc['confidence']:.2f})" if "cluster" in doc else ""))
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
