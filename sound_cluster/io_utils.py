"""Atomic file writes: a reader (or a run interrupted midway) never sees a half-written file.

Files are created with the permissions the process umask allows (as ``open`` would), not the
0600 of a bare temporary file, so a report or a shared cache stays readable by others.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

TMP_PREFIX = ".tmp-"
_NAME_MAX = 255  # bytes in one path component on the file systems we write to
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (read without changing it where Linux allows)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _umask_lock:  # elsewhere: set and restore, under a lock so threads never see 0
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _writer() -> str:
    """Who writes a temporary file: ``<pid>@<host>``, so a later run can tell a dead writer's leftovers."""
    host = re.sub(r"[^A-Za-z0-9.]", "", socket.gethostname())[:40] or "host"
    return f"{os.getpid()}@{host}"


_WRITER = re.compile(r"^" + re.escape(TMP_PREFIX) + r"(\d+)@([A-Za-z0-9.]+)-")


def _temp_prefix(name: str) -> str:
    """A temporary-name prefix for ``name`` (with its writer) that leaves mkstemp's suffix within the name limit."""
    prefix = f"{TMP_PREFIX}{_writer()}-{name}."
    if len(os.fsencode(prefix)) + 8 > _NAME_MAX:  # mkstemp adds 8 characters
        prefix = f"{TMP_PREFIX}{_writer()}-{hashlib.sha256(os.fsencode(name)).hexdigest()[:32]}."
    return prefix


def _writer_gone(name: str) -> bool:
    """True when the temporary file ``name`` was written by a process of this host that no longer runs."""
    m = _WRITER.match(name)
    if m is None or m.group(2) != _writer().split("@", 1)[1]:
        return False  # another host's, or an older name: only its age tells
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", *, fsync: bool = True, **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds.

    The temporary name starts with :data:`TMP_PREFIX` so leftovers of a killed process
    (SIGKILL gives no chance to clean up) can be recognised and removed later.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            if fsync:  # durable across a power cut, not only across a crash of this process
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str, *, fsync: bool = True) -> None:
    with atomic_open(path, "w", fsync=fsync, encoding="utf-8", newline="") as fh:
        fh.write(text)


def atomic_write_json(path: Path, obj: Any, *, fsync: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n", fsync=fsync)


def remove_stale_temps(folder: Path, *, older_than_s: float = 600.0) -> int:
    """Delete temporary files left in ``folder`` by a killed process; returns how many.

    A file whose writer (recorded in its name) was a process of this host that has ended goes at
    once; any other goes once untouched for ``older_than_s`` seconds, so a run on another host
    writing into the same folder at the same time keeps its temporary files.
    """
    n = 0
    if folder.is_dir():
        now = time.time()
        for p in folder.glob(TMP_PREFIX + "*"):
            with contextlib.suppress(OSError):
                if _writer_gone(p.name) or now - p.stat().st_mtime > older_than_s:
                    p.unlink()
                    n += 1
    return n


def save_keras_model(model: Any, path: Path) -> None:
    """Save a Keras model to ``path`` (a ``.keras`` file) atomically: a temporary file beside it, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{_writer()}-{path.name}")  # keras wants the .keras suffix
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class NotRegularFile(OSError):
    """A path that is a pipe, a device, a socket or a folder where a file was expected."""


def open_regular(path: Path | str | bytes, *, max_bytes: int | None = None) -> IO[bytes]:
    """Open ``path`` for reading in binary mode, only if it is a regular file (of at most ``max_bytes``).

    The open never blocks (``O_NONBLOCK``: a FIFO put in place of a file between a listing and the
    read would otherwise wait forever for a writer) and never makes a terminal the controlling one;
    the check is made on the opened descriptor, so a path swapped after it was listed is still caught.

    Raises
    ------
    NotRegularFile
        ``path`` is not a regular file.
    OSError
        The file cannot be opened, or is larger than ``max_bytes`` (``EFBIG``).
    """
    import errno
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a pipe, device or socket"
            raise NotRegularFile(errno.EINVAL, f"not a regular file ({kind})", os.fsdecode(path))
        if max_bytes is not None and st.st_size > max_bytes:
            raise OSError(errno.EFBIG, f"larger than {max_bytes} bytes ({st.st_size})", os.fsdecode(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_json_object(path: Path | str, *, max_bytes: int) -> dict[str, Any]:
    """The JSON object in a regular file of at most ``max_bytes`` (see :func:`open_regular`), UTF-8.

    Raises
    ------
    OSError, ValueError
        Not a regular file, too large, not UTF-8, not JSON, or JSON that is not an object.
    """
    with open_regular(path, max_bytes=max_bytes) as fh:
        obj = json.loads(fh.read().decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError(f"{Path(os.fsdecode(path)).name} does not hold a JSON object (it holds a "
                         f"{type(obj).__name__})")
    return obj


def read_arrays(path: Path, keys: tuple[str, ...], *, max_bytes: int = 4 << 30) -> dict[str, Any]:
    """The arrays ``keys`` of an ``.npz`` file, read without pickles from a regular file only.

    The arrays' sizes are read from their headers first: together they may not exceed twice the file's
    own size (a run writes its npz files uncompressed), so a small archive cannot inflate into memory.

    Raises
    ------
    OSError, ValueError
        Missing or not a regular file, larger than ``max_bytes``; not an npz archive; a key missing;
        an object array; arrays larger than the file can hold.
    """
    import math
    import zipfile

    import numpy as np

    with open_regular(path, max_bytes=max_bytes) as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            with zipfile.ZipFile(fh) as zf:
                names = set(zf.namelist())
                missing = [k for k in keys if f"{k}.npy" not in names]
                if missing:
                    raise ValueError(f"{Path(path).name} lacks {', '.join(missing)}")
                total = 0
                for k in keys:
                    with zf.open(f"{k}.npy") as member:
                        version = np.lib.format.read_magic(member)
                        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0)
                        shape, _, dtype = read_header(member)
                    if dtype.hasobject:
                        raise ValueError(f"{Path(path).name}: {k} holds Python objects (a pickle), not numbers")
                    total += math.prod(shape) * dtype.itemsize
                if total > 2 * size + (1 << 20):
                    raise ValueError(f"{Path(path).name}: its arrays would take {total} bytes from a {size}-byte "
                                     "file (more than a run writes): refused")
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as z:
                return {k: z[k] for k in keys}
        except (zipfile.BadZipFile, EOFError, KeyError) as err:
            raise ValueError(f"{Path(path).name} is not a readable npz archive ({err})") from None


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(text: str) -> str:
    """A text cell of the CSVs a run writes, made safe to open in a spreadsheet: a leading ``'`` added
    where the cell would start a formula (``=HYPERLINK(...)``). :func:`from_spreadsheet_cell` undoes it."""
    return "'" + text if text.lstrip("'").startswith(_FORMULA_START) else text


def from_spreadsheet_cell(text: str) -> str:
    """The text :func:`spreadsheet_cell` was given."""
    return text[1:] if text.startswith("'") and text.lstrip("'").startswith(_FORMULA_START) else text


def read_table(path: Path, *, max_bytes: int = 1 << 30) -> list[dict[str, str]]:
    """The rows of a CSV table a run wrote (header first), as dicts; formula guards removed from every cell.

    Raises
    ------
    OSError, ValueError
        Not a regular file, too large, not UTF-8, not a CSV table, or a row shorter than the header.
    """
    import csv
    import io

    with open_regular(path, max_bytes=max_bytes) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh:
        try:
            reader = csv.DictReader(fh)
            rows = []
            for i, row in enumerate(reader, start=2):
                if None in row.values() or None in row:
                    cells = sum(v is not None for k, v in row.items() if k is not None)
                    raise ValueError(f"{Path(path).name} line {i}: {cells} cells where the header has "
                                     f"{len(reader.fieldnames or ())}")
                rows.append({k: from_spreadsheet_cell(v) for k, v in row.items()})
            return rows
        except csv.Error as err:
            raise ValueError(f"{Path(path).name}: not a CSV table ({err})") from None


def csv_text(header: Iterable[Any], rows: Iterable[Iterable[Any]]) -> str:
    """A CSV table (RFC 4180 quoting, ``\\n`` line ends) of ``header`` and ``rows``.

    Written by hand because Python 3.11's writer, given ``\\n`` line ends, leaves a field holding a
    bare ``\\r`` (a file name may) unquoted, and every reader then splits the row there.
    """
    return csv_lines((header, *rows))


def csv_lines(rows: Iterable[Iterable[Any]]) -> str:
    """:func:`csv_text`'s lines of ``rows`` alone, no header: rows to append to a table."""
    def cell(value: Any) -> str:
        text = str(value)
        if any(c in text for c in ',"\r\n') or text != text.strip(" "):
            return '"' + text.replace('"', '""') + '"'
        return text

    return "".join(",".join(cell(v) for v in row) + "\n" for row in rows)
