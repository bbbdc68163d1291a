"""Output names: a unique, writable relative name for each input file's outputs.

A run writes ``trees/<name>.json``, ``posteriors/<name>.npz``, ``plots/<name>.png`` and so on,
where ``<name>`` is the input's path relative to ``data.path``. Two things make the plain
relative path unusable as it is:

* a name that is not UTF-8 (``b'\\xe9.wav'``) is shown with backslash escapes, and then reads
  exactly like a file literally named ``\\xe9.wav``: the two would overwrite each other;
* a name near the file system's 255-byte limit overflows once ``.json`` or a temporary
  prefix is added.

Such path components are escaped and shortened, and a hash of the original bytes is added, so
the name stays readable and different inputs never share one. ``clusters.csv`` records the
mapping (column ``name``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

# Bytes left for a component's output name: 255 less room for ".json" and a temporary prefix.
MAX_COMPONENT_BYTES = 200
_HASH_CHARS = 10


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:_HASH_CHARS]


def _safe_component(part: str) -> str:
    raw = os.fsencode(part)
    try:
        text = raw.decode("utf-8")
        if len(raw) <= MAX_COMPONENT_BYTES:
            return text
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "backslashreplace")
    stem, dot, ext = text.rpartition(".")
    if not dot or not stem or len(ext.encode()) > 16:
        stem, ext = text, ""
    tag = f"~{_digest(raw)}" + (f".{ext}" if ext else "")
    budget = MAX_COMPONENT_BYTES - len(tag.encode())
    stem = stem.encode("utf-8")[:budget].decode("utf-8", "ignore")  # never split a character
    return stem + tag


def output_names(paths: Sequence[Path], *, root: Path) -> list[str]:
    """Unique relative output names (``/`` separators) for ``paths`` under ``root``.

    Parameters
    ----------
    paths : sequence of Path
        The input files (absolute).
    root : Path
        The folder that names are relative to (``data.path``, or its parent for a single file).

    Returns
    -------
    names : list of str
        ``names[i]`` for ``paths[i]``: the relative path itself when every component is UTF-8
        and short enough, else with those components escaped, shortened and tagged with a
        hash of their bytes. Distinct inputs always get distinct names.
    """
    out: list[str] = []
    seen: set[str] = set()
    for p in paths:
        try:
            rel = Path(p).relative_to(root)
        except ValueError:
            rel = Path(Path(p).name)
        name = "/".join(_safe_component(part) for part in rel.parts)
        if name in seen:  # a literal name that happens to equal another's escaped form
            name = f"{name}~{_digest(os.fsencode(str(p)))}"
        seen.add(name)
        out.append(name)
    return out
