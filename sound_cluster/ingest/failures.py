"""The record of a file that could not be used, and its CSV form (``failures.csv``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from sound_cluster.io_utils import atomic_write_text, csv_text, spreadsheet_cell

FAILURE_COLUMNS = ("path", "stage", "reason")


@dataclass(frozen=True)
class Failure:
    """One file that a stage skipped.

    Attributes
    ----------
    path : Path
        The file (absolute).
    stage : str
        ``discover``, ``ingest``, ``features``, ...
    reason : str
        What went wrong, for a person to read.
    """

    path: Path
    stage: str
    reason: str


def display_path(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` with '/' separators, printable even when not UTF-8.

    File names that are not valid UTF-8 reach Python with surrogate escapes; they are shown
    with backslash escapes (``\\xe9``) so that the CSV stays valid UTF-8.
    """
    try:
        rel = Path(path).relative_to(root) if root is not None else Path(path)
    except ValueError:
        rel = Path(path)
    raw = "/".join(rel.parts) if not rel.is_absolute() else rel.as_posix()
    return raw.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def write_failures(failures: Iterable[Failure], out_path: Path, *, root: Path | None) -> None:
    """Write ``path,stage,reason`` rows (header only when nothing failed), atomically."""
    atomic_write_text(out_path, csv_text(FAILURE_COLUMNS, (
        [spreadsheet_cell(display_path(f.path, root)), f.stage, spreadsheet_cell(" ".join(f.reason.split()))]
        for f in failures)))
