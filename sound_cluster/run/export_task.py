"""``task=export``: a finished run's exports written from its trees, without fitting or folding anything again.

``sound-cluster task=export run=<run folder> output.export=[audacity,raven]`` writes the Audacity label
tracks, Raven selection tables, JAMS files and (where the run has none) ``segments.csv`` that a fit with
that ``output.export`` would have written, into the run's own folder, from ``trees/`` and ``clusters.csv``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sound_cluster.config import Params
from sound_cluster.embed.clusters import read_clusters
from sound_cluster.errors import ConfigError
from sound_cluster.ingest.failures import Failure
from sound_cluster.outputs.export import write_file_exports, write_segments
from sound_cluster.run.run_dir import RunResult
from sound_cluster.run_folder import RunFolder
from sound_cluster.segment.tree import read_tree_json

log = logging.getLogger(__name__)


def export_run(params: Params) -> RunResult:
    """Write ``params.output.export`` of the run ``params.run`` into its folder.

    Raises
    ------
    ConfigError
        The run's clusters.csv or summary.json cannot be read, or no tree can.
    """
    run = RunFolder(Path(params.run))
    try:
        summary = run.read_summary()
        rows = read_clusters(run.clusters)
    except (OSError, ValueError) as err:
        raise ConfigError(f"run: {run.dir}: {err}") from None
    data_path = Path(str(summary.get("data_path") or run.dir))
    root = data_path if data_path.is_dir() else data_path.parent  # where clusters.csv's paths start
    rate = ((summary.get("config") or {}).get("features") or {}).get("sample_rate") or 16000
    exports = params.output.exports()
    segments = "segments" in exports and not run.segments.is_file()
    if "segments" in exports and not segments:
        log.info("export: %s already holds segments.csv (the run's own); it is kept", run.dir)
    failures, seg_rows = [], []
    for r in rows:
        try:
            doc = read_tree_json(run.tree(r.name))
            got = write_file_exports(doc, folder=run, name=r.name, audio_path=root / r.path,
                                     exports=exports - {"segments"} | ({"segments"} if segments else set()),
                                     k=params.output.export_k or params.output.segments,
                                     default_nyquist_hz=float(rate) / 2)
        except (OSError, ValueError, KeyError) as err:
            failures.append(Failure(root / r.path, "export", f"its tree cannot be exported: {err}"))
            continue
        if segments and got:
            seg_rows += got
    if len(failures) == len(rows):
        raise ConfigError(f"run: none of the {len(rows)} trees of {run.dir} could be read ({failures[0].reason})")
    for f in failures:
        log.warning("export: %s left out: %s", f.path, f.reason)
    if segments:
        write_segments(seg_rows, run.segments)
    log.info("export: %s of %d files written into %s", ", ".join(sorted(exports)), len(rows) - len(failures),
             run.dir)
    return RunResult(root, [], failures, summary)
