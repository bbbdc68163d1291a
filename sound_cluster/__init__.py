"""sound_cluster: find the kinds of sound in a folder of audio without labels.

``sound_cluster.cluster(path, "key=value", ...)`` runs the pipeline and returns a :class:`Run`;
``sound_cluster.load_run(folder)`` reads a finished run; ``sound_cluster.features(paths, ...)`` gives files'
log-mel features as a run makes them (:mod:`sound_cluster.api`).
"""

__version__ = "0.1.0"
__all__ = ["Run", "cluster", "features", "load_run", "__version__"]


def __getattr__(name: str):
    # The API is imported on first use, so `import sound_cluster` stays light (no Hydra, no TensorFlow).
    if name in ("Run", "cluster", "features", "load_run"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'sound_cluster' has no attribute {name!r}")
