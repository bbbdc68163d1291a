"""The hierarchy L-measure (McFee et al., ISMIR 2017) as ``mir_eval.hierarchy.lmeasure`` defines it, vectorised.

mir_eval builds each meet matrix one segment pair at a time in a sparse LIL matrix and ranks every query
frame's row in a Python loop; on a minute of audio at 0.1 s frames that took about a second per file, most
of a run's scoring. Here the meet matrices are dense (``n_frames`` squared bytes; the caller bounds
``n_frames``) and every row's ranking is counted at once from a histogram of (reference level, estimated
level) pairs, which the levels' small number makes cheap. The numbers equal mir_eval's
(``tests/segment/test_segments.py`` compares them on random hierarchies).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _round(t, frame_size: float):
    return t - np.mod(t, float(frame_size))  # as mir_eval.hierarchy._round


def meet(intervals_hier: Sequence[np.ndarray], labels_hier: Sequence[Sequence[str]], frame_size: float
         ) -> np.ndarray:
    """The meet (deepest common level) matrix ``(n_frames, n_frames)`` uint8, as ``mir_eval.hierarchy._meet``.

    Frames ``s, t`` meet at level ``l`` (1-based, the last level where it happens) when the segments holding
    them at that level carry the same label (case-insensitive).
    """
    frame_size = float(frame_size)
    bounds = [float(x) for iv in intervals_hier for row in np.asarray(iv) for x in row]
    n = int((_round(max(bounds), frame_size) - _round(min(bounds), frame_size)) / frame_size)
    out = np.zeros((n, n), dtype=np.uint8)
    for level, (intervals, labels) in enumerate(zip(intervals_hier, labels_hier), 1):
        names = [str(s).lower() for s in labels]
        code = {s: i for i, s in enumerate(sorted(set(names)))}
        frames = (_round(np.asarray(intervals, dtype=float), frame_size) / frame_size).astype(int)
        lab = np.full(n, -1, dtype=np.int64)
        for (a, b), s in zip(frames, names):
            lab[max(a, 0):max(b, 0)] = code[s]
        covered = lab >= 0
        agree = (lab[:, None] == lab[None, :]) & covered[:, None] & covered[None, :]
        out[agree] = level
    return out


def gauc(ref: np.ndarray, est: np.ndarray) -> float:
    """The share of triples ``(q, i, j)`` with ``ref[q, i] < ref[q, j]`` that ``est`` does not invert.

    As ``mir_eval.hierarchy._gauc(ref, est, transitive=True, window=None)``: a triple is inverted when
    ``est[q, i] >= est[q, j]``; each query frame (itself left out of its row) counts once, averaged over
    the frames that have any such pair.
    """
    n = ref.shape[0]
    if n == 0:
        return 0.0
    lr, le = int(ref.max()) + 1, int(est.max()) + 1
    # h[q, r, e]: how many frames j != q have ref[q, j] = r and est[q, j] = e.
    codes = (np.arange(n, dtype=np.int64)[:, None] * (lr * le) + ref.astype(np.int64) * le + est.astype(np.int64))
    h = np.bincount(codes.ravel(), minlength=n * lr * le).reshape(n, lr, le).astype(np.float64)
    q = np.arange(n)
    h[q, ref[q, q].astype(np.int64), est[q, q].astype(np.int64)] -= 1
    per_ref = h.sum(axis=2)  # (n, lr)
    total = per_ref.sum(axis=1)
    normalizer = (total ** 2 - (per_ref ** 2).sum(axis=1)) / 2  # pairs at different reference levels
    below = np.cumsum(h, axis=1) - h  # frames at lower reference levels, by estimated level
    at_or_above = np.cumsum(below[:, :, ::-1], axis=2)[:, :, ::-1]  # ... with an estimated level >= e
    inversions = (h * at_or_above).sum(axis=(1, 2))
    counted = normalizer > 0
    if not counted.any():
        return 0.0
    return float(np.mean(1.0 - inversions[counted] / normalizer[counted]))


def lmeasure(ref_intervals: Sequence[np.ndarray], ref_labels: Sequence[Sequence[str]],
             est_intervals: Sequence[np.ndarray], est_labels: Sequence[Sequence[str]], *, frame_size: float = 0.1,
             beta: float = 1.0) -> tuple[float, float, float]:
    """L-precision, L-recall and L-measure of an estimated hierarchy against a reference one.

    Parameters are ``mir_eval.hierarchy.lmeasure``'s (intervals in seconds, levels from the top); its
    checks of the hierarchies are applied.

    Raises
    ------
    ValueError
        An inconsistent hierarchy, hierarchies of different lengths, or ``frame_size <= 0``.
    """
    from mir_eval.hierarchy import validate_hier_intervals

    if frame_size <= 0:
        raise ValueError(f"frame_size ({frame_size:.2f}) must be a positive number.")
    validate_hier_intervals(ref_intervals)
    validate_hier_intervals(est_intervals)
    ref, est = meet(ref_intervals, ref_labels, frame_size), meet(est_intervals, est_labels, frame_size)
    if ref.shape != est.shape:
        raise ValueError("Estimated and reference hierarchies must have the same shape.")
    recall, precision = gauc(ref, est), gauc(est, ref)
    if precision == 0 and recall == 0:
        return precision, recall, 0.0
    return precision, recall, (1 + beta ** 2) * precision * recall / (beta ** 2 * precision + recall)
