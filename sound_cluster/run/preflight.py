"""Checks of the machine a run is about to use, after the settings are checked and before any work.

:func:`sound_cluster.config.params_from_config` checks the settings alone; what depends on the
machine is checked here: how many cores it has (``executor.kind=auto``, ``executor.n_workers``),
whether output goes to a terminal (``output.progress=auto``), whether optional packages are
installed (``executor.kind=dask``, the ``jams`` export), and whether the encoder ``model.init``
names exists and fits the feature settings (its card).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys

from sound_cluster.config import Params
from sound_cluster.embed.shipped import resolve_init
from sound_cluster.errors import ConfigError

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """Cores this process may run on (respects CPU affinity, unlike ``os.cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def preflight(params: Params) -> Params:
    """``params`` with the machine-dependent settings resolved, or an error before any work.

    Idempotent: resolved settings pass through unchanged.

    Raises
    ------
    ConfigError
        An optional package a setting needs is not installed, or the encoder ``model.init``
        names is missing or does not fit the feature settings; the message names the key.
    """
    ex, out = params.executor, params.output
    cores = usable_cores()
    if ex.kind == "auto":
        ex = dataclasses.replace(ex, kind="process" if cores > 1 else "serial")
    if ex.n_workers is not None and ex.n_workers > cores:
        # More processes than cores only adds start-up and switching (measured: 64 workers on 2
        # cores made the fold stage 35x slower).
        log.warning("executor.n_workers=%d is more than the %d usable cores; using %d", ex.n_workers, cores, cores)
        ex = dataclasses.replace(ex, n_workers=cores)
    if ex.kind == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ConfigError("executor.kind must be serial or process unless dask.distributed is installed "
                              "(pip install 'sound-cluster[distributed]'), got 'dask'") from None
    if out.progress == "auto":
        out = dataclasses.replace(out, progress=sys.stdout.isatty())
    if "jams" in out.exports():
        try:
            import jams  # noqa: F401
        except ImportError:
            raise ConfigError("output.export must be without jams unless the jams package is installed "
                              "(pip install 'sound-cluster[jams]'), got 'jams'") from None
    if params.starts_from_init and params.model.init != "scratch":
        resolve_init(params.model, params.features)
    return dataclasses.replace(params, executor=ex, output=out)
