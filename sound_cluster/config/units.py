"""Settings of what a run clusters (``units``): whole files, or the sounds inside every file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from sound_cluster.config.checks import int_at_least, one_of, positive_float

# What a run clusters: whole files, the sounds inside files (segments of their trees), or either by
# the rule of :func:`sound_cluster.segment.units.choose_unit`.
UNITS = ("auto", "file", "segment")

# Earlier versions kept these settings in the ``model`` group: ``model.unit`` is ``units.kind``, and so on. Their
# command lines, saved models and run folders still work (see :func:`moved_from_model`).
OLD_MODEL_KEYS = {"unit": "kind", "max_segment_clusters": "max_clusters", "unit_min_file_s": "min_file_s",
                  "unit_sound_s": "sound_s"}


@dataclass(frozen=True)
class UnitParams:
    """What is clustered, and how many kinds of sound the sounds of a folder of recordings may hold.

    Attributes
    ----------
    kind
        file (each file is one unit: a folder of clips) | segment (the sounds inside every file, from its
        tree: a folder of recordings) | auto (segment where most files hold two or more sounds between pauses
        or last min_file_s or longer, or where such long files of several sounds hold most of the audio,
        else file)
    max_clusters
        the largest K that model.n_clusters=auto considers for segment units (a folder of recordings holds
        more units, and more kinds, than a folder of clips: measured in BENCHMARKS.md); file units use
        model.max_clusters
    min_file_s
        kind=auto: files this long (the median file) are recordings, clustered by their sounds
    sound_s
        segment units with sounds.background=false only (the older pauses): each sound between pauses holds
        floor(its loud time / L) units, at least one, where L is the folder's typical length of one sound (the
        median sound between pauses, or where most of those hold several onsets, the median interval between
        onsets); this is L only when neither can be measured. Sounds over a background are never cut by a length
    """

    kind: str = "auto"
    max_clusters: int = 64
    min_file_s: float = 8.0
    sound_s: float = 0.5

    def check(self, prefix: str = "units") -> None:
        one_of(f"{prefix}.kind", self.kind, UNITS)
        int_at_least(f"{prefix}.max_clusters", self.max_clusters, 2)
        positive_float(f"{prefix}.min_file_s", self.min_file_s)
        positive_float(f"{prefix}.sound_s", self.sound_s)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def moved_from_model(model: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a ``model`` mapping of an earlier version into its model settings and its unit settings.

    Returns
    -------
    model : dict
        ``model`` without the keys that moved.
    units : dict
        Their values under the ``units`` names (``unit`` -> ``kind``, ...).
    """
    kept = {k: v for k, v in model.items() if k not in OLD_MODEL_KEYS}
    return kept, {OLD_MODEL_KEYS[k]: v for k, v in model.items() if k in OLD_MODEL_KEYS}
