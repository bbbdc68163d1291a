"""sound_cluster: find the kinds of sound in a folder of audio without labels."""

__version__ = "0.1.0"
