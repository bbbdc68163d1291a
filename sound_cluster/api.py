"""The Python API: run the pipeline from a notebook or a script, and read a finished run.

>>> import sound_cluster
>>> run = sound_cluster.cluster("recordings/", "model.n_clusters=8")   # doctest: +SKIP
>>> run.clusters.to_pandas().head()                                    # doctest: +SKIP
>>> run.cut("park/morning.wav")            # its sounds: start_s, end_s, cluster  # doctest: +SKIP

:func:`cluster` composes the same configuration as the command line (Hydra's compose API, the
same checks and messages), runs the same pipeline in the calling process without changing the
working directory, and returns a :class:`Run`; :func:`load_run` reads a finished run folder into the
same :class:`Run`. Importing this module does not import TensorFlow; :func:`cluster` starts it as quietly
as the command line does, and where the caller has configured no logging, shows the run's progress as
the command line logs it (``log=False``: nothing).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sound_cluster.run_folder import RunFolder


class Table(list):
    """Rows of a run's table (dicts with typed values); :meth:`to_pandas` when pandas is installed."""

    def to_pandas(self):
        """The rows as a ``pandas.DataFrame`` (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(list(self))


@dataclass(frozen=True)
class Run:
    """A run folder and what it holds.

    Attributes
    ----------
    dir : Path
        The run folder.
    """

    dir: Path

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json``: status, counts, clusters and K, units, metrics, stage seconds, config."""
        return RunFolder(self.dir).read_summary()

    @property
    def clusters(self) -> Table:
        """``clusters.csv``: one row per file (``path``, ``cluster``, ``confidence``, ``duration_s``, ``name``)."""
        from sound_cluster.embed.clusters import read_clusters

        path = RunFolder(self.dir).clusters
        return Table({"path": a.path, "cluster": a.cluster, "confidence": a.confidence, "duration_s": a.duration_s,
                      "name": a.name} for a in read_clusters(path)) if path.is_file() else Table()

    @property
    def segments(self) -> Table:
        """``segments.csv``: one row per segment (``path``, ``segment``, ``start_s``, ``end_s``, ``cluster``,
        ``confidence``); empty when the run wrote none (file units without ``output.export=[segments]``)."""
        from sound_cluster.outputs.export import read_segments_table

        path = RunFolder(self.dir).segments
        return Table(read_segments_table(path)) if path.is_file() else Table()

    @property
    def report_path(self) -> Path | None:
        """``report.html``, or None when the run wrote no report."""
        p = RunFolder(self.dir).report
        return p if p.is_file() else None

    def tree_doc(self, path: str) -> dict[str, Any]:
        """The tree document of the file at ``path`` (as in clusters.csv), as written under ``trees/``."""
        from sound_cluster.segment.tree import read_tree_json

        names = {r["path"]: r["name"] for r in self.clusters}
        if path not in names:
            raise KeyError(f"{path!r} is not a file of the run in {self.dir} (see its clusters.csv)")
        return read_tree_json(RunFolder(self.dir).tree(names[path]))

    def cut(self, path: str, k: int | str = "auto") -> Table:
        """The file at ``path`` cut into ``k`` segments, in seconds (``auto``: the file's own cut, its sounds).

        Returns
        -------
        Table
            One dict per segment: ``start_s``, ``end_s``, ``cluster`` (None for background), ``confidence``,
            ``kind`` (``sound`` or ``background``), as segments.csv holds them.
        """
        from sound_cluster.segment.tree import doc_cut

        doc = self.tree_doc(path)
        segs = doc_cut(doc, k)
        out = Table()
        for i, seg in enumerate(segs):
            kind = seg.get("kind", "sound")
            out.append({"start_s": float(seg["start_s"]),
                        "end_s": float(doc["duration_s"] if i == len(segs) - 1 else seg["end_s"]),
                        "cluster": seg.get("cluster") if kind == "sound" else None,
                        "confidence": seg.get("confidence") if kind == "sound" else None, "kind": kind})
        return out

    def tree(self, path: str):
        """The :class:`~sound_cluster.segment.tree.SegmentTree` of the file at ``path``.

        Its ``cut(k)`` gives leaf indices; :meth:`cut` gives the segments in seconds.
        """
        from sound_cluster.segment.tree import SegmentTree

        return SegmentTree.from_json(self.tree_doc(path))


def load_run(run_dir: str | Path) -> Run:
    """A finished (or interrupted) run folder as a :class:`Run`.

    Raises
    ------
    FileNotFoundError
        ``run_dir`` holds no ``summary.json``.
    """
    run_dir = Path(run_dir).expanduser().absolute()
    if not RunFolder(run_dir).summary.is_file():
        raise FileNotFoundError(f"{run_dir} is not a sound-cluster run folder (no summary.json)")
    return Run(run_dir)


def features(paths: Sequence[str | Path], *overrides: str) -> tuple[list, list]:
    """Log-mel features of audio files as a run with ``overrides`` makes them: its settings, cache and executor.

    Parameters
    ----------
    paths : sequence of str or Path
        Audio files.
    *overrides : str
        Settings as on the command line, e.g. ``"features.n_mels=40"``, ``"executor.kind=serial"``.

    Returns
    -------
    feats : list of sound_cluster.ingest.extract.FileFeatures
        The files whose features could be made, in the order of ``paths``; each names its cache file
        (``cache_path``: a float32 array of shape (n_frames, n_mels), log-mel).
    failures : list of sound_cluster.ingest.failures.Failure
        The others, each with its reason.

    Raises
    ------
    ConfigError
        An unknown setting or a value out of range.
    """
    from sound_cluster.cli import compose_checked
    from sound_cluster.config import params_from_config
    from sound_cluster.ingest.features import FeatureCache
    from sound_cluster.run.pipeline import extract_files
    from sound_cluster.run.preflight import preflight

    params = params_from_config(compose_checked(list(overrides)))
    # Features do not depend on the encoder: its settings need not match the shipped one's.
    params = preflight(dataclasses.replace(params, model=dataclasses.replace(params.model, init="scratch")))
    cache = FeatureCache(params.features.resolved_cache_dir(), params=params.features)
    cache.prepare()
    return extract_files([Path(p) for p in paths], params=params, cache=cache)


def cluster(path: str | Path | None = None, *overrides: str, output_dir: str | Path | None = None,
            log: bool = True) -> Run:
    """Run the pipeline on ``path`` with command-line style overrides; the run's folder as a :class:`Run`.

    Parameters
    ----------
    path : str or Path, optional
        The folder of audio (``data.path``); None runs on the demo bundled with the package.
    *overrides : str
        Settings as on the command line, e.g. ``"model.n_clusters=8"``, ``"units.kind=segment"``.
    output_dir : str or Path, optional
        The run folder; by default ``outputs/<date>/<time>`` under the current folder, as the
        command line does.
    log : bool
        Show the run's progress on stderr (INFO lines, as the command line logs them) when the caller
        has configured no logging; with handlers of the caller's own, their settings apply.

    Raises
    ------
    ConfigError
        An unknown setting (naming the closest one), a value out of range or two that do not fit
        together; nothing is written.
    AudioError
        The folder holds no usable audio.
    """
    import logging
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as the command line: no C++ start-up lines
    from sound_cluster.cli import compose_checked
    from sound_cluster.config import params_from_config
    from sound_cluster.logs import EscapeControl
    from sound_cluster.run.pipeline import run
    from sound_cluster.run.preflight import preflight

    args = ([f"data.path={path}"] if path is not None else []) + list(overrides)
    cfg = compose_checked(args)
    params = preflight(params_from_config(cfg))
    if output_dir is None:
        output_dir = Path("outputs") / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S")
        base, i = output_dir, 1
        while output_dir.exists():
            output_dir, i = base.with_name(f"{base.name}-{i}"), i + 1
    output_dir = Path(output_dir).expanduser().absolute()
    logger = logging.getLogger("sound_cluster")
    handler = None
    if log and not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        handler.addFilter(EscapeControl())
        logger.addHandler(handler)
        level = logger.level
        logger.setLevel(logging.INFO)
    try:
        run(params, output_dir=output_dir, config=cfg)
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(level)
    return Run(output_dir)
