"""Step embeddings held in memory up to a budget, and read back from the step cache beyond it, row for row."""

from __future__ import annotations

import numpy as np
import pytest

from sound_cluster.embed.crops import CropSampler
from sound_cluster.embed.step_store import StepStore, StoredRows, row_span, take_rows
from sound_cluster.segment.units import Units
from tests.conftest import make_params


def _entry(tmp_path, name: str, n: int, seed: int = 0) -> tuple[np.ndarray, object]:
    x = np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)
    path = tmp_path / f"{name}.npy"
    np.save(path, x)
    return x, path


def test_stored_rows_read_the_rows_an_array_would_give(tmp_path):
    x, path = _entry(tmp_path, "a", 50)
    rows = StoredRows.of(path)
    assert rows.shape == x.shape and len(rows) == 50
    assert np.array_equal(np.asarray(rows), x) and np.array_equal(rows[7:19], x[7:19])
    assert rows[30:30].shape == (0, 8)
    with pytest.raises(IndexError):
        rows[::2]
    carry = np.array([0, 1, 1, 1, 4, 5, 5, 7] + list(range(8, 50)))  # pauses carry the step before them
    for lazy, array in ((take_rows(rows, carry), x[carry]), (row_span(rows, 5, 40), x[5:40]),
                        (row_span(take_rows(rows, carry), 2, 9), x[carry][2:9]),
                        (take_rows(row_span(rows, 5, 40), np.array([3, 3, 0])), x[5:40][[3, 3, 0]])):
        assert isinstance(lazy, StoredRows) and lazy.shape == array.shape
        assert np.array_equal(np.asarray(lazy), array)
        assert np.array_equal(lazy[1:4], array[1:4])
    assert isinstance(row_span(x, 2, 5), np.ndarray) and np.shares_memory(row_span(x, 2, 5), x)


def test_the_store_holds_files_in_memory_up_to_its_budget_then_their_entries(tmp_path):
    a, pa = _entry(tmp_path, "a", 40, seed=1)
    b, pb = _entry(tmp_path, "b", 40, seed=2)
    c, _ = _entry(tmp_path, "c", 40, seed=3)
    store = StepStore(budget_bytes=a.nbytes)
    store.add(a, stored=pa)  # fits
    store.add(b, stored=pb)  # over the budget, on disk
    store.add(c)  # over the budget, but no entry: held anyway, and counted
    assert isinstance(store[0], np.ndarray) and isinstance(store[1], StoredRows) and isinstance(store[2], np.ndarray)
    assert store.n_on_disk == 1 and store.over_budget == 1 and store.held == a.nbytes + c.nbytes
    for i, x in enumerate((a, b, c)):
        assert np.array_equal(np.asarray(store[i]), x)


def test_units_crops_drawn_from_disk_equal_those_drawn_from_memory(tmp_path):
    """The cluster head's crops: the same draws, the same values, whether the units' files are held or stored."""
    from sound_cluster.config import AugmentParams

    arrays, paths = zip(*(_entry(tmp_path, f"f{i}", n, seed=i) for i, n in enumerate((60, 35, 80))))
    units = Units(np.array([0, 0, 1, 2, 2]), np.array([0, 30, 5, 0, 70]), np.array([30, 60, 20, 70, 80]),
                  np.zeros((5, 8)))
    batches = []
    for steps in (list(arrays), [StoredRows.of(p) for p in paths]):
        unit_steps = units.steps(steps)
        assert [len(unit_steps[i]) for i in range(len(units))] == [30, 30, 15, 70, 10]
        sampler = CropSampler(unit_steps, crop_frames=12, batch_size=16, seed=3, groups=[0, 0, 1, 1, 2], group_prob=0.0,
                              augment=AugmentParams(view_max_shift_frames=12, mel_shift_bins=0, time_mask_frames=0,
                                                    freq_mask_bins=0, eq_nats=0.0))
        batches.append([sampler.batch_with_files() for _ in range(3)])
    for (x1, i1), (x2, i2) in zip(*batches):
        assert np.array_equal(x1, x2) and np.array_equal(i1, i2)


def test_a_budget_that_is_not_a_size_is_refused():
    from sound_cluster.errors import ConfigError

    for bad in (-1, float("nan"), "lots"):
        with pytest.raises(ConfigError, match="executor.steps_in_memory_mb"):
            make_params(f"executor.steps_in_memory_mb={bad}")
