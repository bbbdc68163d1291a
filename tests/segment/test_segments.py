"""Segments a person can trust: Ward's size factor leaves no slivers, boundaries move to onsets,
and each tree chooses its own number of segments."""

import numpy as np
import pytest

from sound_cluster.segment.boundaries import energy_rise, leaf_boundary_times
from sound_cluster.segment.fold import Merges, fold
from sound_cluster.segment.tree import SegmentTree, doc_cut
from tests.segment.test_fold import random_weights


def _three_parts_and_an_odd_edge(d=8, seed=0):
    """Three long parts of distinct directions, and a last leaf unlike any of them."""
    rng = np.random.default_rng(seed)
    dirs = np.linalg.qr(rng.standard_normal((d, d)))[0][:4]
    parts = [np.repeat(dirs[i][None], n, axis=0) for i, n in enumerate((20, 25, 15))]
    x = np.concatenate(parts + [dirs[3][None]]) + 0.05 * rng.standard_normal((61, d))
    return x


@pytest.mark.parametrize("seed", range(3))
def test_ward_leaves_no_sliver_where_plain_costs_do(seed):
    x = _three_parts_and_an_odd_edge(seed=seed)
    shortest = {}
    for linkage in ("plain", "ward"):
        w = random_weights(8, seed, size_weighted=False, linkage=linkage)
        tree = SegmentTree.from_merges(fold(x, weights=w), frame_rate_hz=25.0, duration_s=61 / 25)
        shortest[linkage] = min(e - s for k in range(2, 5) for s, e in tree.cut(k))
    assert shortest["ward"] > 1  # no one-leaf segment in the 2- to 4-segment cuts
    assert shortest["ward"] >= shortest["plain"]


def _tree(costs, n):
    """A left-to-right chain of merges over n leaves with the given costs (for the auto-k rule)."""
    left, right = [], []

    def chain(nodes):
        """Merge ``nodes`` left to right; returns the id of the last merge's node."""
        cur = nodes[0]
        for node in nodes[1:]:
            left.append(cur)
            right.append(node)
            cur = n + len(left) - 1
        return cur

    # Merge pairs inside four blocks first (cheap), then the blocks (dear), so the tree has a clear 4-cut.
    chain([chain(list(range(i, i + n // 4))) for i in range(0, n, n // 4)])
    return Merges(np.array(left), np.array(right), np.asarray(costs, float), np.zeros((2 * n - 1, 1), np.float32))


def test_auto_k_is_the_cut_before_the_largest_jump_and_respects_the_shortest_segment():
    n = 40
    costs = np.r_[np.linspace(0.1, 0.2, n - 4), [2.0, 2.5, 3.0]]  # 36 cheap merges, then 3 dear ones
    tree = SegmentTree.from_merges(_tree(costs, n), frame_rate_hz=25.0, duration_s=n / 25)
    assert tree.cut(4) == [(0, 10), (10, 20), (20, 30), (30, 40)]
    assert tree.auto_k(min_segment_s=0.2) == 4
    assert tree.auto_k(min_segment_s=0.5) == 1  # 0.4 s segments are too short: no cut qualifies
    doc = tree.to_json(source="x.wav", auto=tree.auto_choice(min_segment_s=0.2))
    assert doc["auto_k"] == 4 and doc["auto_k_rule"]["name"] == "largest_cost_jump"
    assert len(doc_cut(doc, "auto")) == 4
    # Where pauses separate sounds, each sound is a segment, whatever the costs say.
    by_sounds = tree.auto_choice(min_segment_s=0.2, sounds=6, min_sound_s=0.1)
    assert by_sounds == {"k": 6, "name": "sounds_between_pauses", "min_sound_s": 0.1}
    doc = tree.to_json(source="x.wav", auto=by_sounds)
    assert doc["auto_k"] == 6 and doc["auto_k_rule"] == {"name": "sounds_between_pauses", "min_sound_s": 0.1}
    assert len(doc_cut(doc, "auto")) == 6
    assert tree.auto_choice(min_segment_s=0.2, sounds=1)["name"] == "largest_cost_jump"  # one sound: the costs
    assert tree.auto_choice(min_segment_s=0.2, sounds=99)["k"] == 40  # never more segments than leaves
    # Degenerate inputs: one and two leaves choose one segment.
    one = SegmentTree.from_merges(Merges(np.empty(0, int), np.empty(0, int), np.empty(0), np.zeros((1, 1))),
                                  frame_rate_hz=25.0, duration_s=0.04)
    assert one.auto_k(min_segment_s=0.2) == 1


def test_boundaries_move_to_the_onset_within_the_radius_and_stay_ordered():
    n_frames, onset = 80, 37  # the step grid (4 frames a step) has a boundary at 36, the onset is at 37
    frames = np.full((n_frames, 16), -10.0, np.float32)
    frames[onset:] = 0.0
    rise = energy_rise(frames)
    assert int(np.argmax(rise)) == onset
    times = leaf_boundary_times(frames, n_leaves=20, time_pool=4, frame_rate_hz=100.0, radius_s=0.12,
                                duration_s=0.8)
    assert times[0] == 0.0 and times[-1] == 0.8 and np.all(np.diff(times) > 0)
    assert np.isclose(times, onset / 100).sum() == 1  # exactly one boundary took the onset
    assert np.diff(times).min() >= 0.02 - 1e-9  # at least half a step apart
    assert np.isclose(times[1], 0.04)  # no onset near: the grid
    grid = leaf_boundary_times(frames, n_leaves=20, time_pool=4, frame_rate_hz=100.0, radius_s=0.0,
                               duration_s=0.8)
    np.testing.assert_allclose(grid, np.arange(21) * 0.04)
    # A tree given those times reports them, and every cut uses the same ones.
    w = random_weights(8, 0, linkage="ward")
    x = np.random.default_rng(0).standard_normal((20, 8))
    tree = SegmentTree.from_merges(fold(x, weights=w), frame_rate_hz=25.0, duration_s=0.8, leaf_times=times)
    doc = tree.to_json(source="x.wav", boundary_refine_s=0.12)
    for k in (2, 5, 9):
        assert [s["start_s"] for s in doc_cut(doc, k)] == [round(times[s], 4) for s, _ in tree.cut(k)]


def test_references_as_spreadsheets_write_them(tmp_path):
    """A ``file`` column (as many tools name it) and a byte-order mark (a spreadsheet's "CSV UTF-8") are read."""
    from sound_cluster.outputs.references import read_labels, read_segments

    (tmp_path / "labels.csv").write_bytes("\ufefffile,label\na.wav,x\nsub\\b.wav,y\n".encode("utf-8"))
    assert read_labels(tmp_path / "labels.csv") == {"a.wav": "x", "sub/b.wav": "y"}
    (tmp_path / "segments.csv").write_bytes("\ufefffile,start_s,end_s,label\na.wav,0.5,1.0,dog\n".encode("utf-8"))
    assert read_segments(tmp_path / "segments.csv") == {"a.wav": [(0.5, 1.0, "dog")]}


@pytest.mark.parametrize("events", [
    [(0.2, 0.4, "a"), (1.5, 2.0, "b"), (3.0, 4.0, "c")],  # past the end of a 1 s file (a table for longer files)
    [(i / 13, (i + 1) / 13, str(i)) for i in range(13)],  # 13 events filling 1 s exactly
    [(0.0, 0.6, "a"), (0.3, 0.9, "b"), (0.5, 0.55, "c"), (0.9, 0.9004, "d")],  # overlapping, nested, a sliver
    [(200.0, 900.0, "ms")] * 3000,  # times in milliseconds, thousands of rows
])
def test_reference_partition_never_overlaps_and_never_grows(events):
    from sound_cluster.outputs.evaluate import reference_partition

    iv, labels = reference_partition(events, 1.0)
    assert iv[0, 0] == 0.0 and iv[-1, 1] == 1.0 and len(iv) == len(labels) <= 2 * len(events) + 1
    assert np.all(iv[:, 1] - iv[:, 0] >= 1e-3) and np.allclose(iv[1:, 0], iv[:-1, 1])


def test_lmeasure_equals_mir_evals():
    """The vectorised L-measure gives mir_eval's numbers on random nested hierarchies and reference partitions."""
    import warnings

    import mir_eval

    from sound_cluster.outputs.evaluate import reference_partition
    from sound_cluster.outputs.lmeasure import lmeasure

    rng = np.random.default_rng(0)
    for trial in range(12):
        dur = float(rng.uniform(1.0, 20.0))
        cuts = np.sort(rng.uniform(0, dur, 32))
        est_iv, est_lab = [], []
        for level in range(1, 5):  # nested: each level's boundaries hold the one above's
            b = np.concatenate([[0.0], cuts[:: 32 >> level], [dur]])
            est_iv.append(np.stack([b[:-1], b[1:]], axis=1))
            est_lab.append([f"c{rng.integers(4)}" for _ in range(len(b) - 1)])
        events = [(float(a), float(a) + float(rng.uniform(0.05, 1.0)), f"e{rng.integers(5)}")
                  for a in np.sort(rng.uniform(0, dur, 8))]
        ref_iv, ref_lab = reference_partition(events, dur)
        frame = (0.1, 0.25)[trial % 2]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mir_eval's notes on label consistency across levels
            want = mir_eval.hierarchy.lmeasure([ref_iv], [ref_lab], est_iv, est_lab, frame_size=frame)
            got = lmeasure([ref_iv], [ref_lab], est_iv, est_lab, frame_size=frame)
        np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("content, words", [
    (b"path,label\n\xe9t\xe9.wav,x\n", "not UTF-8"),
    (b"path,start_s,end_s,label\na.wav,0.5\n", "times must be numbers"),
    (b"path,label\na.wav,\"" + b"x" * 200_000 + b"\"\n", "cannot read it as a table"),
])
def test_unreadable_reference_tables_are_one_line_errors(tmp_path, content, words):
    from sound_cluster.errors import ConfigError
    from sound_cluster.outputs.references import read_labels, read_segments

    (tmp_path / "t.csv").write_bytes(content)
    reader = read_segments if b"start_s" in content else read_labels
    with pytest.raises(ConfigError, match=words):
        reader(tmp_path / "t.csv")


def test_a_sound_splits_at_every_dear_onset_even_under_a_cheap_merge():
    from sound_cluster.segment.pauses import FoldInput
    from sound_cluster.segment.segmenter import BACKGROUND, SOUND, own_cut

    # Leaves 1..6 are one sound with onsets at 3 and 5; the merge across 5 is dear, the one above it across 3
    # is cheap: a cut that stopped at the first cheap merge would keep the change of kind at 5 inside one unit.
    left = np.array([1, 3, 5, 9, 8, 0, 13])
    right = np.array([2, 4, 6, 10, 11, 12, 7])
    cost = np.array([0.1, 0.1, 0.1, 5.0, 0.2, 9.0, 9.0])
    merges = Merges(left, right, cost, np.zeros((15, 2), np.float32))
    tree = SegmentTree.from_merges(merges, frame_rate_hz=25.0, duration_s=8 / 25)
    pieces = np.array([[0, 1, 0], [1, 7, 1], [7, 8, 0]])
    fin = FoldInput(np.zeros((8, 2)), np.zeros(8, bool), np.array([1]), None, 0.0, pieces, np.array([3, 5]), {})
    assert own_cut(tree, fin, split_cost=1.0, ward=False) == [(0, 1, BACKGROUND), (1, 5, SOUND), (5, 7, SOUND),
                                                              (7, 8, BACKGROUND)]
    assert own_cut(tree, fin, split_cost=0.15, ward=False) == [(0, 1, BACKGROUND), (1, 3, SOUND), (3, 5, SOUND),
                                                               (5, 7, SOUND), (7, 8, BACKGROUND)]
    assert own_cut(tree, fin, split_cost=float("inf"), ward=False)[1] == (1, 7, SOUND)
    # sounds.min_part_s: an onset splits only where both sides of its merge are long enough (here 2 leaves each
    # across 3, 4 and 2 across 5)
    assert own_cut(tree, fin, split_cost=0.15, ward=False, min_part=2) == own_cut(tree, fin, split_cost=0.15,
                                                                                  ward=False)
    assert own_cut(tree, fin, split_cost=0.15, ward=False, min_part=3)[1] == (1, 7, SOUND)


@pytest.mark.parametrize("seconds, steps", [(0.0, 1), (0.2, 5), (0.21, 6), (0.04, 1)])
def test_min_part_s_counts_whole_steps(seconds, steps):
    from sound_cluster.segment.segmenter import Segmenter
    from tests.conftest import make_params

    seg = Segmenter.of(make_params(f"sounds.min_part_s={seconds}"))
    assert seg.step_rate_hz == 25.0 and seg.min_part_steps == steps
