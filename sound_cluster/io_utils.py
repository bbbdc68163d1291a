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
from typing import IO, Any, Iterator

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
