"""Pictures of a run: per-file plots of the log-mel with segment boundaries and clusters."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from .io_utils import atomic_open

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
) -> None:
    """Log-mel spectrogram with the boundaries of a few tree cuts and a cluster colour strip.

    Parameters
    ----------
    frames : np.ndarray [shape=(n_frames, n_mels)]
        Log-mel frames of the file.
    posteriors : np.ndarray [shape=(n_steps, K)]
        Per-step cluster posteriors (the tree's leaves).
    tree : SegmentTree
    cuts : sequence of int
        Numbers of segments to draw (those above the number of leaves are skipped).
    """
    import matplotlib

    matplotlib.use("Agg")
    import librosa.display
    import matplotlib.pyplot as plt

    k = posteriors.shape[1]
    fig, (ax, strip) = plt.subplots(2, 1, figsize=(10, 4.2), sharex=True,
                                    gridspec_kw={"height_ratios": [8, 1], "hspace": 0.05})
    librosa.display.specshow(frames.T, sr=sample_rate, hop_length=hop_length, x_axis="time", y_axis="mel",
                             ax=ax, cmap="magma")
    styles = ["-", "--", ":", "-."]
    colors = ["#00e5ff", "#76ff03", "#ffffff", "#ff4081"]
    for i, c in enumerate(x for x in cuts if x <= tree.n_leaves):
        for j, b in enumerate(tree.boundaries_s(c)):
            ax.axvline(b, color=colors[i % 4], ls=styles[i % 4], lw=1.4 - 0.3 * i,
                       label=f"{c} segments" if j == 0 else None)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("")
    step = 1.0 / tree.frame_rate_hz
    cmap = plt.get_cmap("tab20" if k > 10 else "tab10")
    strip.imshow(posteriors.argmax(axis=1)[None, :], aspect="auto", cmap=cmap, vmin=0, vmax=cmap.N - 1,
                 interpolation="nearest", extent=(0, len(posteriors) * step, 0, 1))
    strip.set_yticks([])
    strip.set_ylabel("cluster", rotation=0, ha="right", va="center", fontsize=8)
    strip.set_xlim(0, tree.duration_s)
    strip.set_xlabel("time (s)")
    with atomic_open(out_path, "wb", fsync=False) as fh:
        fig.savefig(fh, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
