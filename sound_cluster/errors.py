"""Exceptions raised by sound_cluster.

Every error meant for a user derives from :class:`SoundClusterError`, so the command line
can print it as one clear line and exit non-zero instead of showing a traceback.
"""


class SoundClusterError(Exception):
    """Base class of the errors a user can cause and fix."""


class ConfigError(SoundClusterError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


class AudioError(SoundClusterError):
    """An audio file could not be used.

    Parameters
    ----------
    reason : str
        What is wrong, in words a person understands.
    stage : str
        The pipeline stage that found the problem (``"ingest"``, ``"features"``, ...).
    """

    def __init__(self, reason: str, *, stage: str = "ingest") -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage
