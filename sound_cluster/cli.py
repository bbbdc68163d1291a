"""The command line: the only place that knows about Hydra.

``sound-cluster [key=value ...]`` composes ``conf/config.yaml`` with the overrides, checks the
values (:mod:`sound_cluster.config`) and runs :func:`sound_cluster.run.pipeline.run` in Hydra's
run folder.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sound_cluster.config.units import OLD_MODEL_KEYS
from sound_cluster.errors import SoundClusterError

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


def register_defaults() -> None:
    """Hand every group's defaults (the settings dataclasses of :mod:`sound_cluster.config`) to Hydra.

    ``conf/config.yaml`` names them in its defaults list (``sound_cluster_root``, ``data: default``, ...);
    stating each default once, in its dataclass, keeps the config a run composes and the settings
    documented in the code from disagreeing.
    """
    from hydra.core.config_store import ConfigStore

    from sound_cluster.config import default_nodes

    store = ConfigStore.instance()
    nodes = default_nodes()
    store.store(name="sound_cluster_root", node=nodes.pop(""))
    for group, node in nodes.items():
        store.store(group=group, name="default", node=node)


register_defaults()


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
    from sound_cluster.config import params_from_config
    from sound_cluster.logs import escape_handlers
    from sound_cluster.run.pipeline import run
    from sound_cluster.run.preflight import preflight

    escape_handlers()  # names from the folder reach the terminal and cli.log with their controls escaped
    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
        params = preflight(params_from_config(container))  # before any work: settings, then the machine
        result = run(params, output_dir=output_dir, config=container)
    except SoundClusterError as err:
        log.error("%s", err)
        _remove_stub(output_dir)
        if multirun:
            _record_sweep_job(output_dir, list(hc.overrides.task), {"status": "failed", "reason": str(err)})
            return  # the other jobs of the sweep still run
        sys.exit(2)
    if multirun:
        _record_sweep_job(output_dir, list(hc.overrides.task), result.summary)
    else:
        _remove_stub(output_dir)  # a task that wrote into another folder (task=export) leaves no empty one


def _remove_stub(output_dir: Path) -> None:
    """A call that failed before writing anything leaves no folder behind (only Hydra's own files were there)."""
    import shutil

    try:
        entries = {p.name for p in output_dir.iterdir()}
    except OSError:
        return
    if entries <= {".hydra", "cli.log"}:
        logging.shutdown()  # close cli.log before its folder goes
        shutil.rmtree(output_dir, ignore_errors=True)


def _record_sweep_job(output_dir: Path, overrides: list[str], summary: dict) -> None:
    """Add this job's row to ``multirun.csv`` in the sweep folder: its overrides, clusters used, NMI when known."""
    import csv
    import io

    from sound_cluster.io_utils import atomic_write_text

    table = output_dir.parent / "multirun.csv"
    columns = ["job", "overrides", "status", "unit", "clusters_used", "n_clusters", "nmi", "ari", "acc",
               "event_nmi", "boundary_f_0.5", "files_processed", "run_dir"]
    rows = []
    if table.is_file():
        with open(table, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    clusters, metrics = summary.get("clusters", {}), summary.get("metrics", {})
    seg = summary.get("segment_metrics", {}).get("mean", {})
    rows = [r for r in rows if r.get("run_dir") != str(output_dir)] + [{
        "job": output_dir.name, "overrides": " ".join(overrides), "status": summary.get("status", ""),
        "unit": summary.get("units", {}).get("unit", ""), "event_nmi": summary.get("event_metrics", {}).get("nmi", ""),
        "clusters_used": clusters.get("used", ""), "n_clusters": clusters.get("n_clusters", ""),
        "nmi": metrics.get("nmi", ""), "ari": metrics.get("ari", ""), "acc": metrics.get("acc", ""),
        "boundary_f_0.5": seg.get("f_0.5", ""), "files_processed": summary.get("files_processed", ""),
        "run_dir": str(output_dir)}]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(table, buf.getvalue())


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


HELP = """\
sound-cluster: find the kinds of sound in a folder of audio, without labels.

Every file gets a cluster (clusters.csv) and a segment tree (trees/), with plots, a report to
browse and listen to (report.html) and a summary (summary.json), in a new run folder under
outputs/<date>/<time>/ (set it with hydra.run.dir=...). In a folder of recordings the sounds
inside the files are clustered across files (units.kind=segment, chosen automatically) and
every segment gets its cluster (segments.csv).

usage: sound-cluster [FOLDER] [key=value ...]

  sound-cluster                                   the demo audio bundled with the package
  sound-cluster /data/field_recordings            a folder (same as data.path=/data/field_recordings)
  sound-cluster data.path="/data/my recordings"   a path with spaces: quote it for the shell
  sound-cluster /data/rec model.n_clusters=12     K fixed instead of chosen
  sound-cluster /data/rec units.kind=segment      cluster the sounds inside files (auto: by the folder)
  sound-cluster /data/rec model.init=scratch      train the encoder on this folder alone
  sound-cluster /data/rec data.labels=/data/rec/labels.csv      adds NMI, ARI, accuracy
  sound-cluster task=apply models=outputs/<run>/models data.path=/data/new   no training
  sound-cluster task=recluster run=outputs/<run> model.n_clusters=21   that run at another K, in seconds
  sound-cluster task=export run=outputs/<run> 'output.export=[raven]'   Raven tables of a finished run
  sound-cluster -m model.n_clusters=8,16,32       a sweep: one run folder each
  sound-cluster debug=tiny                        small settings for a quick smoke run

common settings: data.path, data.labels, data.segments, data.strict, model.n_clusters (auto | K),
  units.kind (auto | file | segment),
  model.init (pretrained | scratch | a .keras path), train.backbone (frozen | tuned), train.epochs,
  features.cache_dir, executor.kind (serial | process | dask), output.segments (auto | K),
  output.overwrite, seed
all settings and their values: sound-cluster --cfg job     (Hydra's own options: --hydra-help)
then: sound-cluster-show outputs/<run>/trees/<file>.json --segments auto
"""

# Overrides whose values are paths: '~' is expanded and the value quoted, so that a path with
# '~', spaces, commas or '=' reaches Hydra's override parser intact.
PATH_KEYS = ("data.path", "data.labels", "data.segments", "models", "run", "features.cache_dir", "hydra.run.dir",
             "hydra.sweep.dir")


def _quote(value: str) -> str:
    """A Hydra override value that stands for ``value`` literally (single-quoted when needed)."""
    if value and all(c.isalnum() or c in "/._-+@:" for c in value):
        return value
    # Hydra keeps backslashes as they are, except a run of them before a quote or at the end.
    value = re.sub(r"\\+(?=')|\\+$", lambda m: m.group(0) * 2, value)
    return "'" + value.replace("'", "\\'") + "'"


# Settings that earlier versions named otherwise; their command lines keep working. The merge autoencoder's group
# was ``rae``; the unit settings were in ``model``.
OLD_GROUP, NEW_GROUP = "rae", "segment"
OLD_KEYS = {f"model.{old}": f"units.{new}" for old, new in OLD_MODEL_KEYS.items()}


def _new_name(key: str) -> str | None:
    """The current name of a setting an earlier version named ``key``; None when ``key`` is not such a name."""
    if key in OLD_KEYS:
        return OLD_KEYS[key]
    group, dot, rest = key.partition(".")
    return f"{NEW_GROUP}.{rest}" if group == OLD_GROUP and dot else None


def _rewrite_args(argv: list[str]) -> list[str]:
    """Command-line arguments as Hydra should see them.

    A bare existing folder or file becomes ``data.path=``; path values get ``~`` expanded and are
    quoted. Values the user quoted already are left alone. ``rae.KEY=...`` becomes ``segment.KEY=...``, and
    ``model.unit=...`` ``units.kind=...`` (:data:`OLD_KEYS`).
    """
    out = []
    for arg in argv:
        if not arg.startswith("-") and "=" not in arg and os.path.exists(os.path.expanduser(arg)):
            arg = f"data.path={arg}"
        sign, dotted = re.match(r"([+~]*)(.*)", arg).groups()
        old_key, eq, value = dotted.partition("=")
        new_key = _new_name(old_key)
        if new_key is not None:  # a name of earlier versions
            arg = f"{sign}{new_key}{eq}{value}"
            log.warning("%s is the old name of %s", old_key, new_key)
        key, eq, value = arg.partition("=")
        if eq and key.lstrip("+") in PATH_KEYS and value and value[0] not in "'\"" and "${" not in value:
            arg = f"{key}={_quote(os.path.expanduser(value))}"
        out.append(arg)
    return out


def compose_checked(args: list[str] | tuple[str, ...]) -> dict:
    """The resolved config for command-line style arguments, as the command line composes it (for the Python API).

    Path values get ``~`` expanded and are quoted as the command line does them.

    Raises
    ------
    ConfigError
        An override names a setting the config does not have (with the closest one), or Hydra
        cannot parse it.
    """
    from hydra.errors import HydraException

    from sound_cluster.errors import ConfigError

    args = _rewrite_args(list(args))
    problems = _unknown_keys(args)
    if problems:
        raise ConfigError("; ".join(problems))
    try:
        return compose_config(args)
    except (HydraException, ValueError) as err:
        raise ConfigError(f"cannot read the settings {args}: {err}") from None


def _config_keys() -> set[str]:
    """Every dotted key of the composed config, and the config groups (for did-you-mean)."""
    cfg = compose_config([])
    keys: set[str] = set()

    def walk(node, prefix: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            keys.add(f"{prefix}{k}")
            if isinstance(v, (dict, list)):
                walk(v, f"{prefix}{k}.")

    walk(cfg, "")
    keys.update(p.name for p in config_dir().iterdir() if p.is_dir())
    return keys


def _unknown_keys(argv: list[str]) -> list[str]:
    """Messages for overrides of keys the config does not have, with the closest known key."""
    import difflib

    wanted = [a.partition("=")[0] for a in argv
              if "=" in a and not a.startswith(("-", "+", "~", "hydra.", "hydra/"))]
    if not wanted:
        return []
    keys = _config_keys()
    out = []
    for key in wanted:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
            out.append(f"unknown setting {key!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                     " (sound-cluster --cfg job lists every setting)"))
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from sound_cluster import __version__

    parts = [f"sound-cluster {__version__}"]
    for dist in ("tensorflow", "keras", "librosa", "numpy", "hydra-core"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return ", ".join(parts)


def main() -> None:
    """Entry point of the ``sound-cluster`` console script."""
    argv = sys.argv[1:]
    if "--help" in argv or "-h" in argv:
        print(HELP, end="")
        sys.exit(0)
    if "--version" in argv:
        print(_version())
        sys.exit(0)
    problem = _unwritable_run_root(argv)
    argv = _rewrite_args(argv)
    problems = _unknown_keys(argv)
    if problem:
        problems.append(problem)
    if problems:
        for p in problems:
            print(f"sound-cluster: {p}", file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = argv
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # A run started in the background of a script inherits SIGINT ignored; Ctrl-C and kill -INT must still stop it
    # cleanly (its workers ignore SIGINT themselves, executor._init_worker).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up lines (cuInit on a CPU) are noise
    try:
        _app()
    except KeyboardInterrupt:
        log.error("interrupted; finished files are cached and the next run picks up from there")
        sys.exit(130)


if __name__ == "__main__":
    main()
