"""The command line: the only place that knows about Hydra.

``sound-cluster [key=value ...]`` composes ``conf/config.yaml`` with the overrides, checks the
values (:mod:`sound_cluster.config`) and runs :func:`sound_cluster.pipeline.run` in Hydra's
run folder.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from .errors import SoundClusterError

log = logging.getLogger("sound_cluster")


def config_dir() -> Path:
    """The folder holding ``config.yaml``.

    An installed wheel carries the configs inside the package (``sound_cluster/conf``); a
    source checkout (editable install) uses the top-level ``conf/``, the source of truth.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"sound_cluster configs not found next to {here}")


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """The resolved config as a plain dict, composed with Hydra's compose API (for scripts and tests)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir())):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def _raise_interrupt(signum, frame):  # SIGTERM -> same clean-up path as Ctrl-C
    raise KeyboardInterrupt(f"signal {signum}")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _app(cfg: DictConfig) -> None:
    from .config import params_from_config
    from .pipeline import run

    try:
        container = OmegaConf.to_container(cfg, resolve=True)
        params = params_from_config(container)
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        run(params, output_dir=output_dir, config=container)
    except SoundClusterError as err:
        log.error("%s", err)
        sys.exit(2)


def _unwritable_run_root(argv: list[str]) -> str | None:
    """Why the run folder cannot be made, or None; checked before Hydra tries (and fails with a traceback).

    Looks at ``hydra.run.dir`` (``hydra.sweep.dir`` with ``-m``) as given on the command line, up
    to its first interpolation, else at the default ``outputs/`` under the current folder.
    """
    multirun = "-m" in argv or "--multirun" in argv
    key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
    given = next((a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith(key)), None)
    target = Path(os.path.expanduser((given or "outputs").split("${", 1)[0] or "."))
    p = target.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    setting = key.rstrip("=") if given else "the current folder's outputs/"
    if not p.is_dir():
        return f"cannot create the run folder {target}: {p} is not a folder ({setting})"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"cannot create the run folder {target}: {p} is not writable ({setting})"
    return None


def main() -> None:
    """Entry point of the ``sound-cluster`` console script."""
    problem = _unwritable_run_root(sys.argv[1:])
    if problem:
        print(f"sound-cluster: {problem}", file=sys.stderr)
        sys.exit(2)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        _app()
    except KeyboardInterrupt:
        log.error("interrupted; finished files are cached and the next run picks up from there")
        sys.exit(130)


if __name__ == "__main__":
    main()
