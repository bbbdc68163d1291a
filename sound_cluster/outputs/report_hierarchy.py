"""The report's view of K: the criterion at every candidate, and the clusters' upper hierarchy with the cuts
a user may choose instead, each with the command that re-clusters the run at it (``task=recluster``)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sound_cluster.io_utils import atomic_open
from sound_cluster.run_folder import RunFolder

N_CANDIDATES = 4  # the chosen K and the next best three by the criterion
MAX_LEAVES = 40  # the dendrogram shows the hierarchy down to this many clusters


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def k_choice_plot(output_dir: Path, clusters: Mapping) -> str | None:
    """With ``model.n_clusters=auto``: the within-cluster scatter (log scale) and the knee criterion at every
    candidate K, the chosen K marked; returns its relative URL (``None`` when K was given)."""
    choice = clusters.get("choice") or {}
    crit, scatter = choice.get("criterion") or {}, choice.get("within_scatter") or {}
    if len(crit) < 2:
        return None
    plt = _pyplot()
    ks = sorted(int(k) for k in crit)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(ks, [max(scatter[str(k)], 1e-12) for k in ks], "o-", color="#1f77b4", ms=3,
            label="within-cluster scatter")
    ax.set_yscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("within-cluster scatter (log)")
    ax2 = ax.twinx()
    ax2.plot(ks, [crit[str(k)] for k in ks], "s--", color="#ff7f0e", ms=3, label="criterion (distance below chord)")
    ax2.set_ylabel("criterion")
    ax.axvline(clusters["n_clusters"], color="k", lw=1)
    near = choice.get("near")
    if near and near[1] > near[0]:  # the K that score within 1 % of the chosen one
        ax.axvspan(near[0] - 0.5, near[1] + 0.5, color="#999999", alpha=0.2, lw=0, label="within 1 % of it")
    # Title and legend above and below the axes: nothing is drawn over the curves or over each other.
    ax.set_title(f"chosen K = {clusters['n_clusters']}", fontsize=9)
    handles = [h for a in (ax, ax2) for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=7, frameon=False)
    folder = RunFolder(output_dir)
    out = folder.report_image("k_choice.png")
    with atomic_open(out, "wb", fsync=False) as fh:
        fig.savefig(fh, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return folder.rel(out)


def candidates(clusters: Mapping, *, run_dir: Path) -> list[dict[str, Any]]:
    """The chosen K and the next best by the criterion (or the given K and ``auto``), each with its command.

    Returns
    -------
    list of dict
        ``k`` (int or "auto"), ``criterion`` (float or None), ``chosen`` (bool), ``command`` (a shell
        command that writes a new run cut at that K).
    """
    crit = {int(k): float(v) for k, v in ((clusters.get("choice") or {}).get("criterion") or {}).items()}
    chosen = int(clusters["n_clusters"])
    if crit:
        ks = [chosen] + [k for k in sorted(crit, key=lambda k: -crit[k]) if k != chosen][: N_CANDIDATES - 1]
    else:
        ks = [chosen, "auto"]
    run = shlex.quote(str(Path(run_dir).resolve()))
    return [{"k": k, "criterion": crit.get(k) if isinstance(k, int) else None, "chosen": k == chosen,
             "command": f"sound-cluster task=recluster run={run} model.n_clusters={k}"} for k in ks]


def _spread(ys: list[float], *, gap: float) -> list[float]:
    """Label heights for lines at ``ys``: in the same order, at least ``gap`` apart, each as near its line as that allows."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    out = [0.0] * len(ys)
    last = -np.inf
    for i in order:
        out[i] = max(ys[i], last + gap)
        last = out[i]
    return out


def dendrogram_plot(output_dir: Path, cands: list[dict[str, Any]], *, near: Sequence[int] | None = None
                    ) -> str | None:
    """The upper levels of the units' Ward hierarchy (``models/hierarchy.npz``) with each candidate's cut drawn,
    and the band of cuts into ``near`` = (lo, hi) clusters shaded (those within 1 % of the chosen K's criterion).

    Returns the image's relative URL, or ``None`` when the run kept no hierarchy or it has under three leaves.
    """
    folder = RunFolder(output_dir)
    path = folder.models.hierarchy
    if not path.is_file():
        return None
    from scipy.cluster.hierarchy import dendrogram

    with np.load(path, allow_pickle=False) as z:
        tree = z["tree"]
    if len(tree) < 2:
        return None
    plt = _pyplot()
    heights = tree[:, 2]  # ascending: the last row is the root
    fig, ax = plt.subplots(figsize=(7, 3.4))
    dendrogram(tree, p=min(MAX_LEAVES, len(tree) + 1), truncate_mode="lastp", ax=ax, no_labels=True,
               color_threshold=0, above_threshold_color="#555555")
    ax.set_ylabel("Ward merge height")
    styles = ["-", "--", ":", "-."]
    def cut_y(k: int) -> float:  # the cut between the merge to k clusters and the one to k - 1
        return (heights[-k] + heights[-(k - 1)]) / 2

    shown = [c for c in cands if isinstance(c["k"], int) and 1 < c["k"] <= len(tree)]
    ys = [cut_y(c["k"]) for c in shown]
    for i, (c, y) in enumerate(zip(shown, ys)):
        ax.axhline(y, color="#d62728" if c["chosen"] else "#1f77b4", lw=1.2 if c["chosen"] else 0.8,
                   ls=styles[i % len(styles)])
    if near and near[1] > near[0] and 1 < near[0] and near[1] <= len(tree):
        ax.axhspan(cut_y(near[1]), cut_y(near[0]), color="#999999", alpha=0.2, lw=0)
        ax.annotate(f"K {near[0]}-{near[1]}: within 1 %", (0.01, cut_y(near[0])), xycoords=("axes fraction", "data"),
                    fontsize=7, va="bottom", color="#555555")
    lo, hi = ax.get_ylim()
    for (c, y), label_y in zip(zip(shown, ys), _spread(ys, gap=0.07 * (hi - lo))):  # labels never overlap
        ax.annotate(f"K = {c['k']}" + (" (chosen)" if c["chosen"] else ""), (1.0, y),
                    xycoords=("axes fraction", "data"), xytext=(1.03, label_y), textcoords=("axes fraction", "data"),
                    fontsize=8, va="center", arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#888888"})
    out = folder.report_image("hierarchy.png")
    with atomic_open(out, "wb", fsync=False) as fh:
        fig.savefig(fh, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return folder.rel(out)
