"""Reference annotations a run is scored against: file labels and labelled segments (CSV, Audacity, Raven)."""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path
from typing import IO, Iterable, Mapping, Sequence

from sound_cluster.errors import ConfigError
from sound_cluster.io_utils import open_regular

log = logging.getLogger(__name__)

MAX_TABLE_BYTES = 256 << 20  # a reference table larger than this is refused, not read into memory
MAX_EVENTS_PER_FILE = 20000  # more reference events for one audio file are refused (scoring grows with them)


def _open_text(path: Path, *, encoding: str = "utf-8") -> IO[str]:
    """A reference table opened as text: a regular file only, never blocking, at most MAX_TABLE_BYTES."""
    return io.TextIOWrapper(open_regular(path, max_bytes=MAX_TABLE_BYTES), encoding=encoding, newline="")


PATH_COLUMNS = ("path", "file", "filename")  # what tables call the column that names each audio file


def _path_column(fieldnames, path: Path, key: str, rest: tuple[str, ...]) -> str:
    """The column naming each file: ``path``, ``file`` or ``filename`` (the first of them the table has)."""
    names = set(fieldnames or ())
    col = next((c for c in PATH_COLUMNS if c in names), None)
    if col is None or not set(rest) <= names:
        # A one-column header is no table's: its line is not shown (it may be any file's first line).
        got = f"columns {fieldnames}" if len(fieldnames or ()) > 1 else "no comma-separated header"
        raise ConfigError(f"{key} file {path} must have columns path (or file, or filename),{','.join(rest)}; "
                          f"got {got}")
    if col != "path":
        log.info("%s: files named by the column %r", key, col)
    return col


def _readable(key: str):
    """Turn a reference table's decoding and parsing errors into one line naming the setting and the file."""
    import functools

    def wrap(reader):
        @functools.wraps(reader)
        def read(path, *args, **kwargs):
            try:
                return reader(path, *args, **kwargs)
            except UnicodeDecodeError as err:
                raise ConfigError(f"{key} {path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
            except OSError as err:  # not a regular file, too large, unreadable
                raise ConfigError(f"{key} {getattr(err, 'filename', None) or path}: cannot read it: "
                                  f"{err.strerror or err}") from None
            except (csv.Error, AttributeError, TypeError) as err:  # csv's own limits; a row short of its columns
                raise ConfigError(f"{key} {path}: cannot read it as a table: {err}") from None
        return read
    return wrap


@_readable("data.labels")
def read_labels(path: Path) -> dict[str, str]:
    """``path,label`` (or ``filename,label``) CSV -> {relative path: label}. The first row is the header.

    Raises
    ------
    ConfigError
        The file is missing or has no path (or file, or filename) and label columns.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data.labels must be an existing CSV file, got {str(path)!r}")
    with _open_text(path, encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's "CSV UTF-8" starts with a BOM
        reader = csv.DictReader(fh)
        col = _path_column(reader.fieldnames, path, "data.labels", ("label",))
        return {row[col].replace("\\", "/"): row["label"] for row in reader}


@_readable("data.segments")
def read_segments(path: Path, *, fmt: str = "auto") -> dict[str, list[tuple[float, float, str]]]:
    """Reference segments -> {relative path: [(start_s, end_s, label), ...] sorted}.

    Parameters
    ----------
    path : Path
        A CSV file ``path,start_s,end_s,label`` (or ``filename,...``), or a folder of Audacity label
        tracks (``<audio path>.txt`` or ``<audio stem>.txt``) or Raven selection tables
        (``<audio path or stem>[.Table.1].selections.txt``), searched recursively; a folder's keys
        are the label files' paths relative to it without those suffixes (:func:`match_references`
        pairs them with audio files).
    fmt : {"auto", "csv", "audacity", "raven"}
        ``auto``: a file is CSV; a folder holding ``*.selections.txt`` files (or tables whose first
        line starts with ``Selection``) is Raven, else Audacity.

    Raises
    ------
    ConfigError
        Missing file, missing columns, or a row whose times are not numbers with end > start >= 0.
    """
    path = Path(path)
    if fmt == "csv" or fmt == "auto" and path.is_file():
        return _read_segments_csv(path)
    if not path.is_dir():
        fmt = "audacity" if fmt == "auto" else fmt  # what auto reads a folder as when it finds no Raven table
        raise ConfigError(f"data.segments must be a folder of {fmt} files with data.segments_format={fmt}, "
                          f"got {str(path)!r}")
    tables = _tables(path)  # listed once: the format is told from the same files that are read
    if fmt == "auto":
        fmt = _folder_format(tables)
    out: dict[str, list[tuple[float, float, str]]] = {}
    for f in tables:
        rel = f.relative_to(path).as_posix()
        key = re.sub(r"(\.Table\.\d+)?\.selections\.txt$", "", rel) if fmt == "raven" else rel[:-len(".txt")]
        rows = _read_raven(f) if fmt == "raven" else _read_audacity(f)
        if rows:
            out[key] = _capped(sorted(rows), f)
    return out


def _tables(folder: Path) -> list[Path]:
    """The ``*.txt`` files under ``folder`` that are regular files (a pipe or device there is skipped, said once)."""
    import stat

    out = []
    for f in sorted(folder.rglob("*.txt")):
        try:
            regular = stat.S_ISREG(f.stat().st_mode)
        except OSError:
            regular = False
        if regular:
            out.append(f)
        else:
            log.warning("data.segments: %s is not a regular file (a pipe, device, folder or broken link): "
                        "not read", f)
    return out


def _capped(rows: list, where: Path) -> list:
    if len(rows) > MAX_EVENTS_PER_FILE:
        raise ConfigError(f"data.segments {where}: {len(rows)} events for one audio file, more than "
                          f"{MAX_EVENTS_PER_FILE}; is this table for these recordings?")
    return rows


def _folder_format(files: list[Path]) -> str:
    """``raven`` where the tables are Raven selection tables (by name, or by their first line), else ``audacity``."""
    if any(f.name.endswith(".selections.txt") for f in files):
        return "raven"
    for f in files[:5]:
        with open_regular(f, max_bytes=MAX_TABLE_BYTES) as fh:
            if fh.readline(4096).startswith(b"Selection\t"):
                return "raven"
    return "audacity"


def _times(key: str, where: str, start: str, end: str) -> tuple[float, float]:
    try:
        s, e = float(start), float(end)
    except (ValueError, TypeError):  # TypeError: a short row leaves the field out
        raise ConfigError(f"{key} {where}: times must be numbers, got {start!r}, {end!r}") from None
    if not 0 <= s < e:
        raise ConfigError(f"{key} {where}: need 0 <= start_s < end_s, got {s}, {e}")
    return s, e


def _read_audacity(path: Path) -> list[tuple[float, float, str]]:
    """An Audacity label track: ``start<TAB>end<TAB>label`` lines; ``\\`` lines (a label's frequency range) skipped."""
    out = []
    with _open_text(path) as fh:
        for i, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("\\"):
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise ConfigError(f"data.segments {path} line {i}: an Audacity label line is start<TAB>end<TAB>label, "
                                  f"got {line!r}")
            s, e = _times("data.segments", f"{path} line {i}", parts[0], parts[1])
            out.append((s, e, parts[2] if len(parts) > 2 else ""))
    return out


def _read_raven(path: Path) -> list[tuple[float, float, str]]:
    """A Raven selection table: one row per selection (a selection listed in several views counts once); the label
    from its ``Annotation`` column, else ``Cluster`` (what sound-cluster writes), else none."""
    with _open_text(path) as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        need = {"Selection", "Begin Time (s)", "End Time (s)"}
        if not need <= set(reader.fieldnames or ()):
            raise ConfigError(f"data.segments {path}: a Raven selection table needs the columns "
                              f"{', '.join(sorted(need))}; got {reader.fieldnames}")
        label = next((c for c in ("Annotation", "Cluster") if c in reader.fieldnames), None)
        seen, out = set(), []
        for i, row in enumerate(reader, start=2):
            if row["Selection"] in seen:
                continue
            seen.add(row["Selection"])
            s, e = _times("data.segments", f"{path} line {i}", row["Begin Time (s)"], row["End Time (s)"])
            out.append((s, e, (row.get(label) or "") if label else ""))
    return out


def match_references(references: Mapping[str, Sequence], paths: Iterable[str]) -> dict[str, Sequence]:
    """Each audio path's references: under the path itself, or under the path without its extension."""
    out = {}
    for p in paths:
        if p in references:
            out[p] = references[p]
        elif "." in p.rsplit("/", 1)[-1] and p.rsplit(".", 1)[0] in references:
            out[p] = references[p.rsplit(".", 1)[0]]
    return out


def _read_segments_csv(path: Path) -> dict[str, list[tuple[float, float, str]]]:
    if not path.is_file():
        raise ConfigError(f"data.segments must be an existing CSV file, got {str(path)!r}")
    out: dict[str, list[tuple[float, float, str]]] = {}
    with _open_text(path, encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's "CSV UTF-8" starts with a BOM
        reader = csv.DictReader(fh)
        col = _path_column(reader.fieldnames, path, "data.segments", ("start_s", "end_s", "label"))
        for i, row in enumerate(reader, start=2):
            s, e = _times(f"data.segments {path}", f"line {i}", row["start_s"], row["end_s"])
            out.setdefault(row[col].replace("\\", "/"), []).append((s, e, row["label"]))
    return {k: _capped(sorted(v), Path(f"{path} ({k})")) for k, v in out.items()}

