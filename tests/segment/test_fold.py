"""The fold: fast greedy merges equal the direct rule; trees cut, serialise and render correctly."""

import json
import subprocess
import sys

import numpy as np
import pytest

from sound_cluster.segment.fold import FoldWeights, Merges, fold, fold_reference, score_pairs
from sound_cluster.segment.tree import SegmentTree, doc_cut, read_tree_json, render, write_tree_json


def random_weights(d, seed=0, scale=0.3, size_weighted=True, node_vector="mean", linkage="plain"):
    rng = np.random.default_rng(seed)
    return FoldWeights((rng.standard_normal((2 * d, d)) * scale).astype(np.float32),
                       (rng.standard_normal(d) * 0.1).astype(np.float32),
                       (rng.standard_normal((d, 2 * d)) * scale).astype(np.float32),
                       (rng.standard_normal(2 * d) * 0.1).astype(np.float32), size_weighted, node_vector, linkage)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("size_weighted", [True, False])
@pytest.mark.parametrize("node_vector", ["mean", "code"])
@pytest.mark.parametrize("linkage", ["plain", "ward"])
def test_fast_fold_equals_direct_slow_rule(seed, size_weighted, node_vector, linkage):
    rng = np.random.default_rng(100 + seed)
    n, d = int(rng.integers(2, 120)), int(rng.choice([4, 16, 33]))
    w = random_weights(d, seed, size_weighted=size_weighted, node_vector=node_vector, linkage=linkage)
    x = rng.standard_normal((n, d))
    sizes = rng.uniform(0.1, 3.0, n) if seed % 2 else None
    barriers = rng.random(n) < 0.1 if seed >= 3 else None  # sounds fold first
    min_size = (0.0, 2.5, 4.0)[seed % 3]  # small nodes merge first
    fast = fold(x, weights=w, sizes=sizes, barriers=barriers, min_size=min_size)
    slow = fold_reference(x, weights=w, sizes=sizes, barriers=barriers, min_size=min_size)
    np.testing.assert_array_equal(fast.left, slow.left)
    np.testing.assert_array_equal(fast.right, slow.right)
    np.testing.assert_allclose(fast.cost, slow.cost, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fast.codes, slow.codes, atol=1e-4)


@pytest.mark.parametrize("node_vector", ["mean", "code"])
def test_compiled_score_matches_numpy_and_codes_are_unit_length(node_vector):
    w = random_weights(8, node_vector=node_vector)
    x = np.random.default_rng(1).standard_normal((30, 8))
    m = fold(x, weights=w)
    np.testing.assert_allclose(np.linalg.norm(m.codes, axis=1), 1.0, atol=1e-5)
    # Recompute each merge's cost from its children's vectors and sizes with the numpy scorer.
    n = len(x)
    size = np.ones(2 * n - 1)
    sums = np.zeros((2 * n - 1, 8))
    sums[:n] = m.codes[:n]
    for i, (a, b) in enumerate(zip(m.left, m.right)):
        c, p = score_pairs(m.codes[[a]], m.codes[[b]], size[[a]], size[[b]], weights=w)
        assert c[0] == pytest.approx(m.cost[i], rel=1e-4, abs=1e-5)
        sums[n + i] = sums[a] + sums[b]
        expected = p[0] if node_vector == "code" else sums[n + i] / np.linalg.norm(sums[n + i])
        np.testing.assert_allclose(m.codes[n + i], expected, atol=1e-5)
        size[n + i] = size[a] + size[b]


def test_any_pairing_and_tiny_inputs():
    w = random_weights(6)
    x = np.random.default_rng(2).standard_normal((12, 6))
    m = fold(x, weights=w, pairing="any")
    assert len(m.left) == 11 and sorted(set(m.left) | set(m.right)) == list(range(22))
    one = fold(x[:1], weights=w)
    assert one.n_leaves == 1 and len(one.left) == 0
    with pytest.raises(ValueError, match="segment.pairing must be one of adjacent, any"):
        fold(x, weights=w, pairing="nearest")
    with pytest.raises(ValueError, match=r"leaves must have shape \(n >= 1, 6\)"):
        fold(x[:, :5], weights=w)


def two_part_signal(n1=30, n2=50, d=8, seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(d), rng.standard_normal(d)
    return np.concatenate([a + 0.05 * rng.standard_normal((n1, d)), b + 0.05 * rng.standard_normal((n2, d))])


def test_top_split_of_a_two_part_signal_falls_at_the_join():
    # With an identity-like autoencoder, merging alike neighbours is cheap and merging the two
    # parts is dear, so the last merge joins the parts and cut(2) splits at the join.
    d = 8
    eye = np.eye(d, dtype=np.float32)
    w = FoldWeights(np.concatenate([eye, eye]) * 2.0, np.zeros(d, np.float32),
                    np.concatenate([eye, eye], axis=1), np.zeros(2 * d, np.float32), size_weighted=True,
                    node_vector="mean", linkage="plain")
    tree = SegmentTree.from_merges(fold(two_part_signal(d=d), weights=w), frame_rate_hz=10.0, duration_s=8.0)
    assert tree.cut(2) == [(0, 30), (30, 80)]
    assert tree.boundaries_s(2).tolist() == [3.0]


def test_cut_gives_k_contiguous_segments():
    w = random_weights(8)
    x = np.random.default_rng(3).standard_normal((57, 8))
    tree = SegmentTree.from_merges(fold(x, weights=w), frame_rate_hz=25.0, duration_s=57 / 25)
    for k in (1, 2, 3, 10, 57):
        segs = tree.cut(k)
        assert len(segs) == k and segs[0][0] == 0 and segs[-1][1] == 57
        assert all(a[1] == b[0] for a, b in zip(segs, segs[1:]))
    # Nested: every boundary of cut(k) is a boundary of cut(k + 1).
    for k in range(1, 20):
        assert set(tree.boundaries_s(k)) <= set(tree.boundaries_s(k + 1))
    with pytest.raises(ValueError, match="k must be between 1 and the number of leaves 57, got 0"):
        tree.cut(0)


def test_merges_without_codes_make_the_same_tree(tmp_path):
    """What a run keeps of every file's fold until its tree is written, in memory or on disk: no node vectors, the
    same tree."""
    merges = fold(np.random.default_rng(4).standard_normal((40, 8)), weights=random_weights(8))
    light = merges.without_codes()
    assert light.codes.shape == (0, 8) and merges.codes.shape == (79, 8)
    merges.save(tmp_path / "0.npz")
    stored = Merges.load(tmp_path / "0.npz")
    assert stored.codes.shape == (0, 8)
    assert all(np.array_equal(getattr(stored, k), getattr(merges, k)) and getattr(stored, k).dtype == getattr(merges, k).dtype
               for k in ("left", "right", "cost"))
    trees = [SegmentTree.from_merges(m, frame_rate_hz=25.0, duration_s=1.6) for m in (merges, light, stored)]
    assert all(trees[0].cut(k) == t.cut(k) for t in trees[1:] for k in range(1, 41))


def test_tree_json_schema_and_round_trip(tmp_path):
    w = random_weights(8)
    x = np.random.default_rng(4).standard_normal((40, 8))
    post = np.random.default_rng(5).dirichlet(np.ones(3), size=40)
    tree = SegmentTree.from_merges(fold(x, weights=w), frame_rate_hz=12.5, duration_s=3.2)
    doc = tree.to_json(source="a/b.wav", posteriors=post)
    assert doc["schema_version"] == 1 and doc["source"] == "a/b.wav" and doc["n_leaves"] == 40
    assert doc["frame_rate_hz"] == 12.5 and doc["duration_s"] == 3.2
    root = doc["root"]
    assert (root["start"], root["end"], root["start_s"], root["end_s"]) == (0, 40, 0.0, 3.2)
    assert root["order"] == 38 and doc["cluster"] == root["cluster"] == int(post.mean(0).argmax())

    def walk(node):
        if "children" not in node:
            assert node["order"] is None and node["cost"] == 0 and node["end"] - node["start"] == 1
            return 1
        left, r = node["children"]
        assert left["start"] == node["start"] and left["end"] == r["start"] and r["end"] == node["end"]
        assert node["order"] > max(c["order"] if c["order"] is not None else -1 for c in (left, r))
        return walk(left) + walk(r)

    assert walk(root) == 40
    write_tree_json(doc, tmp_path / "t.json")
    again = read_tree_json(tmp_path / "t.json")
    assert again == json.loads(json.dumps(doc))
    for k in (1, 2, 5, 40):
        assert [(s["start"], s["end"]) for s in doc_cut(again, k)] == tree.cut(k)
    # A shallow write keeps cuts right down to where it stopped.
    shallow = tree.to_json(source="a/b.wav", max_depth=2)
    assert all("children" not in c for c in shallow["root"]["children"][0].get("children", []))


def test_show_command_prints_depth_and_segments(tmp_path):
    w = random_weights(8)
    tree = SegmentTree.from_merges(fold(two_part_signal(), weights=w), frame_rate_hz=10.0, duration_s=8.0)
    write_tree_json(tree.to_json(source="x.wav"), tmp_path / "x.wav.json")
    out = subprocess.run([sys.executable, "-m", "sound_cluster.outputs.show", str(tmp_path / "x.wav.json"), "--segments",
                          "3"], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("x.wav: 8.000 s, 80 leaves at 10 Hz") and len(lines) == 4
    assert render(read_tree_json(tmp_path / "x.wav.json"), depth=0).count("\n") == 1
    bad = subprocess.run([sys.executable, "-m", "sound_cluster.outputs.show", str(tmp_path / "x.wav.json"), "--segments",
                          "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--segments must be auto or between 1 and 80" in bad.stderr


@pytest.mark.parametrize("size_weighted, node_vector, linkage", [(False, "mean", "ward"), (True, "code", "plain")])
def test_lockstep_batched_fold_equals_the_heap_fold(size_weighted, node_vector, linkage):
    """The accelerator's fold, run here on the CPU: a batch of unequal files, the heap fold's trees."""
    from sound_cluster.segment.lockstep import fold_lockstep

    rng = np.random.default_rng(7)
    d = 8
    w = random_weights(d, 3, size_weighted=size_weighted, node_vector=node_vector, linkage=linkage)
    batch = [rng.standard_normal((n, d)) for n in (1, 2, 17, 40, 40)]
    sizes = [np.r_[np.ones(len(x) - 1), rng.uniform(0.2, 1.0)] for x in batch]
    barriers = [None, None, np.arange(17) % 5 == 3, None, np.isin(np.arange(40), [1, 9, 10, 30])]
    got_all = fold_lockstep(batch, weights=w, sizes=sizes, barriers=barriers, min_size=2.5)
    for got, x, s, b in zip(got_all, batch, sizes, barriers):
        want = fold(x, weights=w, sizes=s, barriers=b, min_size=2.5)
        np.testing.assert_array_equal(got.left, want.left)
        np.testing.assert_array_equal(got.right, want.right)
        np.testing.assert_allclose(got.cost, want.cost, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.codes, want.codes, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_with_barriers_each_sound_folds_first_so_a_cut_gives_the_sounds(seed):
    rng = np.random.default_rng(seed)
    n, d = 60, 8
    onsets = np.sort(rng.choice(np.arange(1, n), size=4, replace=False))
    barriers = np.isin(np.arange(n), onsets)
    x = rng.standard_normal((n, d))  # no structure: without barriers the cut would fall anywhere
    tree = SegmentTree.from_merges(fold(x, weights=random_weights(d, seed, linkage="ward"), barriers=barriers),
                                   frame_rate_hz=25.0, duration_s=n / 25)
    edges = [0, *onsets.tolist(), n]
    assert tree.cut(5) == list(zip(edges[:-1], edges[1:]))
    for k in (2, 3, 4):  # coarser cuts join whole sounds
        assert {s for s, _ in tree.cut(k)} <= set(edges)
    with pytest.raises(ValueError, match="pairing=adjacent"):
        fold(x, weights=random_weights(d, seed), pairing="any", barriers=barriers)
    with pytest.raises(ValueError, match="barriers must have shape"):
        fold(x, weights=random_weights(d, seed), barriers=barriers[:-1])


@pytest.mark.parametrize("seed", range(3))
def test_small_nodes_merge_first_so_coarse_cuts_hold_no_sliver(seed):
    rng = np.random.default_rng(seed)
    n, d = 80, 8
    x = rng.standard_normal((n, d))
    w = random_weights(d, seed, linkage="ward")
    sizes = np.r_[np.ones(n - 1), 0.2]  # a partial last step, as at the end of a file

    def phase_end(m):
        """Merges before the first one of two nodes of 3 steps or more, and whether none with a small child follows."""
        size = np.r_[sizes, np.zeros(n - 1)]
        small = []
        for i, (a, b) in enumerate(zip(m.left, m.right)):
            small.append(min(size[a], size[b]) < 3.0)
            size[n + i] = size[a] + size[b]
        end = small.index(False)
        return end, not any(small[end:])

    assert not phase_end(fold(x, weights=w, sizes=sizes))[1]  # without the setting, big and small merges mix
    merges = fold(x, weights=w, sizes=sizes, min_size=3.0)
    end, clean = phase_end(merges)
    assert clean
    tree = SegmentTree.from_merges(merges, frame_rate_hz=25.0, duration_s=(n - 0.8) / 25)
    for k in range(2, n - end + 1):  # every cut after the small merges: no segment under 3 steps
        assert min(b - a for a, b in tree.cut(k)) >= 3
    assert n - end >= 8


@pytest.mark.parametrize("background", [True, False])
def test_a_run_with_the_batched_fold_writes_the_heap_folds_trees(tmp_path, background):
    """segment.fold_device=gpu (forced, here on the CPU) in a whole run: the same tree files as the heap fold."""
    import soundfile as sf

    from sound_cluster.run.pipeline import run
    from tests.conftest import SR, make_params, tone

    audio = tmp_path / "audio"
    audio.mkdir()
    for i, (f, sec) in enumerate([(300, 0.6), (900, 1.3), (2000, 0.9), (500, 2.1), (1200, 0.4)]):
        pause = np.zeros(int(0.3 * SR) if i == 0 else 0, np.float32)  # t0's pause is carried by both folds
        sf.write(audio / f"t{i}.wav", np.concatenate([tone(f, sec / 2, seed=i), pause, tone(f * 1.5, sec / 2, seed=i)]),
                 SR)
    common = ("debug=tiny", f"data.path={audio}", f"features.cache_dir={tmp_path / 'cache'}", "output.report=false",
              "output.max_plots=0", f"sounds.background={str(background).lower()}")
    fit = tmp_path / "fit"
    run(make_params(*common, "segment.fold_device=cpu"), output_dir=fit)
    applied = tmp_path / "applied"
    run(make_params(*common, "task=apply", f"models={fit / 'models'}", "segment.fold_device=gpu", "segment.fold_batch=2"),
        output_dir=applied)
    assert json.loads((applied / "summary.json").read_text())["trees"]["fold_device"] == "gpu"
    names = sorted(p.name for p in (fit / "trees").iterdir())
    assert names == [f"t{i}.wav.json" for i in range(5)]
    for name in names:  # the same merges; costs as float32 arithmetic on another engine gives them
        a, b = (json.loads((d / "trees" / name).read_text()) for d in (fit, applied))
        key = "sounds" if background else "pauses"
        assert a["auto_k"] == b["auto_k"] and a["cluster"] == b["cluster"] and a[key] == b[key]
        assert [(c["start"], c["end"], c["kind"]) for c in a.get("auto_cut", [])] == \
            [(c["start"], c["end"], c["kind"]) for c in b.get("auto_cut", [])]
        if not background:
            assert (a["pauses"]["quiet_leaves"] > 0) == (name == "t0.wav.json")
        stack = [(a["root"], b["root"])]
        while stack:
            x, y = stack.pop()
            assert (x["start"], x["end"], x["order"], x.get("cluster")) == (y["start"], y["end"], y["order"],
                                                                          y.get("cluster"))
            assert x["cost"] == pytest.approx(y["cost"], rel=1e-4, abs=1e-5)
            assert len(x.get("children", [])) == len(y.get("children", []))
            stack += list(zip(x.get("children", []), y.get("children", [])))
    t0 = json.loads((fit / "trees" / "t0.wav.json").read_text())  # tone 0.3 s, pause 0.3 s, tone 0.3 s
    if background:  # tone, background, tone: each sound from its start to its end
        assert t0["sounds"]["sounds"] == 2 and t0["auto_k_rule"]["name"] == "sounds_over_background"
        assert [s["kind"] for s in doc_cut(t0, "auto")] == ["sound", "background", "sound"]
        assert [(s["start_s"], s["end_s"]) for s in doc_cut(t0, "auto")] == [
            pytest.approx((0.0, 0.3), abs=0.03), pytest.approx((0.3, 0.6), abs=0.03), pytest.approx((0.6, 0.9), abs=0.03)]
        return
    assert t0["pauses"]["sounds"] == 2 and t0["pauses"]["sounds_first"]
    assert t0["auto_k"] == 2 and t0["auto_k_rule"]["name"] == "sounds_between_pauses"
    assert doc_cut(t0, "auto")[1]["start_s"] == pytest.approx(0.6, abs=0.041)  # where the second tone starts
