"""Every file's step embeddings for one fit, held in memory up to a budget and read from the step cache beyond it.

A fit needs each file's step embeddings several times (the fold inputs, the merge autoencoder's windows, the units,
the cluster head's crops, the posteriors), at 6.4 kB per second of audio: 23 MB per hour, 23 GB for 1,000 hours.
:class:`StepStore` keeps them in memory while they fit in ``executor.steps_in_memory_mb`` and, beyond that, keeps
only where each file's entry lies in the step cache (:class:`sound_cluster.embed.step_cache.StepCache`): a file's
rows are read when asked for (:class:`StoredRows`), a crop's rows alone for a crop. The values read back are the
bytes written, so a fit gives the same results whichever way its files are held.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Union

import numpy as np

from sound_cluster.embed.crops import FrameFile

log = logging.getLogger(__name__)


class StoredRows:
    """Rows of a step-cache entry, read from disk when asked for (no file stays open between reads).

    ``len``, ``shape``, contiguous slicing (giving an array) and ``np.asarray`` work as on the array of the rows.

    Parameters
    ----------
    source : FrameFile
        The entry.
    rows : range or np.ndarray [shape=(n,), dtype=int64], optional
        Which of the entry's rows, in order: a range (a unit's span) or indices (a file's leaves with pauses
        carried over); all of them by default.
    """

    def __init__(self, source: FrameFile, rows: range | np.ndarray | None = None) -> None:
        self.source = source
        self.rows = rows if rows is None or isinstance(rows, range) else np.asarray(rows, dtype=np.int64)
        n = source.shape[0] if rows is None else len(self.rows)
        self.shape = (int(n), int(source.shape[1]))
        self.dtype = source.dtype

    @classmethod
    def of(cls, path: Path) -> "StoredRows":
        return cls(FrameFile(path))

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self) -> range | np.ndarray:
        return range(self.shape[0]) if self.rows is None else self.rows

    def __getitem__(self, index: slice) -> np.ndarray:
        start, stop, step = index.indices(self.shape[0])
        if step != 1:
            raise IndexError("StoredRows reads contiguous rows only")
        if stop <= start:
            return np.empty((0, self.shape[1]), dtype=self.dtype)
        want = self._rows()[start:stop]
        if isinstance(want, range):
            return self.source[want.start:want.stop]
        lo, hi = int(want.min()), int(want.max()) + 1
        return self.source[lo:hi][want - lo]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def span(self, start: int, stop: int) -> "StoredRows":
        """Rows ``start:stop`` of these, still on disk."""
        return StoredRows(self.source, self._rows()[start:stop])

    def take(self, rows: np.ndarray) -> "StoredRows":
        """These rows, by index into this object's rows, still on disk."""
        rows = np.asarray(rows, dtype=np.int64)
        return StoredRows(self.source, rows if self.rows is None else np.asarray(self._rows())[rows])


Steps = Union[np.ndarray, StoredRows]


def as_steps(x) -> Steps:
    """``x`` as an array, but rows on disk stay on disk (:class:`StoredRows` as it is)."""
    return x if isinstance(x, StoredRows) else np.asarray(x)


def take_rows(x: Steps, rows: np.ndarray) -> Steps:
    """``x[rows]``: an array for an array, rows still on disk for :class:`StoredRows` (nothing is read)."""
    return x.take(rows) if isinstance(x, StoredRows) else np.asarray(x)[rows]


def row_span(x: Steps, start: int, stop: int) -> Steps:
    """``x[start:stop]``: a view of an array, rows still on disk for :class:`StoredRows` (nothing is read)."""
    return x.span(start, stop) if isinstance(x, StoredRows) else x[start:stop]


class StepStore(Sequence):
    """Each file's step embeddings, in the run's file order: arrays while they fit the budget, then entries on disk.

    ``store[i]`` is the i-th file's array or its :class:`StoredRows` (``np.asarray`` reads it whole).

    Parameters
    ----------
    budget_bytes : float
        The most bytes of step embeddings held in memory; later files that the step cache holds stay on disk
        (a file whose entry could not be written is held in memory whatever the budget).
    """

    def __init__(self, *, budget_bytes: float) -> None:
        self.budget = float(budget_bytes)
        self.held = 0
        self.items: list[Steps] = []
        self.over_budget = 0  # files held in memory past the budget (their entry could not be written)

    def fits(self, steps: np.ndarray | int) -> bool:
        """Whether ``steps`` (an array, or its size in bytes) would be held in memory within the budget."""
        return self.held + (steps if isinstance(steps, int) else steps.nbytes) <= self.budget

    def add(self, steps: np.ndarray, *, stored: Path | None = None) -> None:
        """The next file's step embeddings; ``stored``: its step-cache entry, where it holds exactly ``steps``."""
        fits = self.fits(steps)
        if stored is not None and not fits:
            self.items.append(StoredRows.of(stored))
            return
        if not fits:
            self.over_budget += 1
        self.items.append(steps)
        self.held += steps.nbytes

    def add_stored(self, path: Path, *, nbytes: int) -> None:
        """The next file's step embeddings, already in the step cache at ``path`` (``nbytes`` of them): read into
        memory while they fit the budget, else left there."""
        if self.fits(nbytes):
            steps = np.load(path, allow_pickle=False)
            self.items.append(steps)
            self.held += steps.nbytes
        else:
            self.items.append(StoredRows.of(path))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def __iter__(self) -> Iterator[Steps]:
        return iter(self.items)

    @property
    def n_on_disk(self) -> int:
        return sum(isinstance(x, StoredRows) for x in self.items)

    def summary(self) -> dict[str, float]:
        """``summary.json``'s ``step_embeddings``: files held in memory, their MB, files read from the step cache."""
        return {"files_in_memory": len(self) - self.n_on_disk, "mb_in_memory": round(self.held / 1e6, 1),
                "files_read_from_step_cache": self.n_on_disk}

    def warn_over_budget(self) -> None:
        """Logs a warning where files are held past the budget because the step cache could not store them."""
        if self.over_budget:
            log.warning("step embeddings: %d files are held in memory past executor.steps_in_memory_mb (the step "
                        "cache could not store them)", self.over_budget)

    def describe(self) -> str:
        on_disk = self.n_on_disk
        return (f"{len(self) - on_disk} files' step embeddings in memory ({self.held / 1e6:.1f} MB), "
                f"{on_disk} read from the step cache when needed")

