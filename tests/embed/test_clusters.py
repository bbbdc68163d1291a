"""Choosing K and clustering the files: the rule on known structure, then whole runs on synthesized folders."""

import json

import numpy as np
import pytest
import soundfile as sf

from sound_cluster.embed.clusters import ClusterRecord, cluster_clips, knee
from sound_cluster.run.pipeline import run
from tests.conftest import SR, make_params


def _clips(n_kinds: int, *, per_kind: int = 6, seed: int = 0, sizes=None):
    """Clip embeddings in ``n_kinds`` tight groups, all equally far apart."""
    rng = np.random.default_rng(seed)
    kinds = np.repeat(np.arange(n_kinds), sizes if sizes is not None else per_kind)
    centres = np.eye(12)[:n_kinds] * 3
    return centres[kinds] + 0.05 * rng.normal(size=(len(kinds), 12)), kinds


@pytest.mark.parametrize("n_kinds", [3, 6])
def test_auto_finds_the_number_of_kinds_and_numbers_clusters_by_size(n_kinds):
    emb, kinds = _clips(n_kinds, sizes=[6] * (n_kinds - 1) + [4])  # the last kind is the smallest
    c = cluster_clips(emb, n_clusters="auto", max_clusters=16)
    assert c.k == n_kinds and c.requested == "auto" and c.rule.startswith("knee")
    # One cluster per kind, and the smallest kind has the last number.
    assert len({(a, b) for a, b in zip(kinds, c.labels)}) == n_kinds
    assert np.all(np.diff(np.bincount(c.labels)) <= 0) and c.labels[-1] == n_kinds - 1
    assert max(c.curve, key=c.curve.get) == n_kinds and set(c.curve) == set(range(1, 17))


def _families(noise, *, families=4, kinds=3, per=20, dim=16, seed=0):
    """Unit embeddings of a two-level hierarchy: ``families`` far apart, ``kinds`` nearer each other inside each."""
    rng = np.random.default_rng(seed)
    x, y = [], []
    for f, centre in enumerate(rng.standard_normal((families, dim)) * 6.0):
        for k, kind in enumerate(centre + rng.standard_normal((kinds, dim))):
            x.append(kind + noise * rng.standard_normal((per, dim)))
            y += [f * kinds + k] * per
    return np.concatenate(x), np.array(y)


@pytest.mark.parametrize("noise", [0.05, 0.2])
def test_two_levels_the_rule_counts_the_kinds_not_the_families(noise):
    """4 families of 3 tight kinds: the knee of the log scatter is at the kinds (12); the knee of the scatter
    itself stops at the families (4), the undercount the log scale was adopted against."""
    from sound_cluster.embed.clusters import RULE_LOG, choose_k, ward_hierarchy, within_scatter

    x, kinds = _families(noise)
    c = cluster_clips(x, n_clusters="auto", max_clusters=32)
    assert c.k == 12 and (np.bincount(c.labels) == 20).all()
    assert len(set(zip(c.labels, kinds))) == 12  # each cluster one kind
    h = ward_hierarchy(x)
    ks = np.arange(1, 33)
    assert knee(ks, np.array([within_scatter(h.x, h.cut(int(k))) for k in ks]))[0] == 4
    k, _, _, rule = choose_k(h, max_clusters=32)
    assert k == 12 and rule == RULE_LOG


def test_a_small_folder_takes_the_knee_of_the_scatter_itself():
    """3 units of each of 10 kinds: under 4 units per candidate K the log scatter plunges at the last candidates
    (its knee would be K = 1), so the knee of the scatter itself decides."""
    from sound_cluster.embed.clusters import RULE_LINEAR, choose_k, ward_hierarchy

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((10, 16)) * 3.0
    x = np.concatenate([c + 0.3 * rng.standard_normal((3, 16)) for c in centres])
    k, _, _, rule = choose_k(ward_hierarchy(x), max_clusters=32)
    assert rule == RULE_LINEAR and k == 10


def test_the_hierarchy_round_trips_and_any_k_is_its_cut(tmp_path):
    from sound_cluster.embed.clusters import Hierarchy, clusters_at, ward_hierarchy

    x, _ = _families(0.2)
    h = ward_hierarchy(x)
    h.save(tmp_path / "hierarchy.npz")
    again = Hierarchy.load(tmp_path / "hierarchy.npz")
    for k in (2, 4, 12, "auto"):
        np.testing.assert_array_equal(clusters_at(again, n_clusters=k, max_clusters=32).labels,
                                      cluster_clips(x, n_clusters=k, max_clusters=32).labels)


def test_unequal_kinds_keep_their_sizes():
    # The clustering loss asks for equal clusters; the hierarchy does not.
    emb, kinds = _clips(3, sizes=[40, 8, 3])
    c = cluster_clips(emb, n_clusters=3, max_clusters=32)
    assert np.bincount(c.labels).tolist() == [40, 8, 3] and (c.labels == kinds).all()


def test_given_k_and_its_record_round_trips():
    emb, _ = _clips(3)
    c = cluster_clips(emb, n_clusters=2, max_clusters=32)
    assert c.k == 2 and c.rule == "given" and c.curve == {} and set(c.labels) == {0, 1}
    m = c.record(unit="file")
    assert m.k == 2 and m.requested == 2 and m.unit == "file"
    assert ClusterRecord.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    # Records of sound-cluster 0.1 carry an identity mapping: read; one that merges clusters is refused.
    assert ClusterRecord.from_dict({**m.to_dict(), "mapping": [0, 1]}) == m
    with pytest.raises(ValueError, match="fit them again"):
        ClusterRecord.from_dict({**m.to_dict(), "mapping": [0, 0]})
    assert cluster_clips(emb, n_clusters=40, max_clusters=32).k == len(emb)  # more than the files: one each


def test_many_files_are_clustered_through_centroids():
    emb, kinds = _clips(4, per_kind=300, seed=1)
    exact = cluster_clips(emb, n_clusters="auto", max_clusters=16)
    coarse = cluster_clips(emb, n_clusters="auto", max_clusters=16, max_exact=50)
    assert exact.k == coarse.k == 4
    for c in (exact, coarse):
        assert len({(a, b) for a, b in zip(kinds, c.labels)}) == 4


def test_knee_of_flat_and_short_curves():
    assert knee([1, 2, 3], [5.0, 5.0, 5.0])[0] == 1
    assert knee([1, 2, 3, 4, 5], [10.0, 2.0, 1.5, 1.2, 1.0])[0] == 2


def test_identical_one_and_two_files_choose_without_crashing():
    same = np.tile(np.arange(1.0, 5.0), (5, 1))
    c = cluster_clips(same, n_clusters="auto", max_clusters=8)
    assert c.k == 1 and (c.labels == 0).all()
    assert cluster_clips(same, n_clusters=3, max_clusters=8).k == 1  # nothing tells them apart
    assert cluster_clips(np.eye(4)[:2], n_clusters="auto", max_clusters=8).k == 2
    assert cluster_clips(np.eye(4)[:1], n_clusters="auto", max_clusters=8).k == 1


def _kinds_folder(root, n_kinds: int, per_kind: int = 5):
    """Clearly different sounds: a low tone, white noise, a high square wave, a rising chirp."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n_kinds):
        for j in range(per_kind):
            t = np.arange(int((0.8 + 0.4 * rng.random()) * SR)) / SR
            y = [np.sin(2 * np.pi * 300 * t), rng.standard_normal(t.size) * 0.5,
                 np.sign(np.sin(2 * np.pi * 2000 * t)) * 0.5, np.sin(2 * np.pi * (200 + 3000 * t) * t)][i]
            y = y * (0.3 + 0.2 * rng.random()) + 0.01 * rng.standard_normal(t.size)
            sf.write(root / f"kind{i}_{j}.wav", y.astype(np.float32), SR)
    return root


def _run(tmp_path, audio, *overrides):
    params = make_params("debug=tiny", f"data.path={audio}", f"features.cache_dir={tmp_path / 'cache'}",
                         "output.report=false", *overrides)
    out = tmp_path / "run"
    run(params, output_dir=out)
    return out, json.loads((out / "summary.json").read_text())


def test_a_run_with_auto_k_finds_three_kinds_and_apply_keeps_them(tmp_path):
    audio = _kinds_folder(tmp_path / "audio", 3)
    out, summary = _run(tmp_path, audio, "model.n_clusters=auto", "train.epochs=6", "train.steps_per_epoch=10")
    c = summary["clusters"]
    assert c["requested"] == "auto" and c["n_clusters"] == 3 and c["head_clusters"] == 3
    assert c["sizes"] == [5, 5, 5] and c["warnings"] == [] and c["head_agrees"] == 1.0
    assert max(c["choice"]["criterion"], key=c["choice"]["criterion"].get) == "3"
    rows = (out / "clusters.csv").read_text().splitlines()[1:]
    by_kind = {}
    for line in rows:
        path, cluster = line.split(",")[:2]
        by_kind.setdefault(path.split("_")[0], set()).add(int(cluster))
    assert sorted(len(v) for v in by_kind.values()) == [1, 1, 1]
    with np.load(out / "posteriors" / "kind0_0.wav.npz") as z:  # posteriors over the run's 3 clusters
        assert z["posteriors"].shape[1] == 3
    tree = json.loads((out / "trees" / "kind0_0.wav.json").read_text())
    assert tree["cluster"] == int(next(r.split(",")[1] for r in rows if r.startswith("kind0_0.wav")))

    params = make_params("debug=tiny", f"data.path={audio}", f"features.cache_dir={tmp_path / 'cache'}",
                         "output.report=false", "task=apply", f"models={out / 'models'}")
    run(params, output_dir=tmp_path / "applied")
    assert (tmp_path / "applied" / "clusters.csv").read_text() == (out / "clusters.csv").read_text()
    assert json.loads((tmp_path / "applied" / "summary.json").read_text())["clusters"]["n_clusters"] == 3

    # Models without their record of K (models/clusters.json) are refused before any work, naming it.
    import shutil

    from sound_cluster.errors import ConfigError

    old = tmp_path / "old_models"
    shutil.copytree(out / "models", old)
    (old / "clusters.json").unlink()
    with pytest.raises(ConfigError, match=r"models must be a folder holding clusters\.json"):
        make_params("debug=tiny", f"data.path={audio}", "task=apply", f"models={old}")


def test_a_folder_of_two_files_and_k_above_the_files_are_reported(tmp_path):
    audio = _kinds_folder(tmp_path / "audio", 2, per_kind=1)
    _, summary = _run(tmp_path, audio, "model.n_clusters=auto")
    # Two files of different kinds: too few for a knee, and they differ, so they stay apart.
    assert summary["clusters"]["n_clusters"] == 2 and summary["status"] == "complete"
    _, summary = _run(tmp_path / "b", audio, "model.n_clusters=5")
    warnings = summary["clusters"]["warnings"]
    assert any("model.n_clusters=5 is more than the 2 files" in w for w in warnings)


def test_identical_files_make_one_cluster(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    y = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)
    for i in range(4):
        sf.write(audio / f"same{i}.wav", y, SR)
    _, summary = _run(tmp_path, audio, "model.n_clusters=auto")
    assert summary["clusters"]["n_clusters"] == 1 and summary["clusters"]["sizes"] == [4]


def test_the_head_gives_small_clusters_beside_a_large_one():
    """The self-labelling head gives every file its cluster: the 2-file cluster beside the 300-file one too."""
    from sound_cluster.embed.head import train_label_head

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [300, 6, 2])
    centres = np.eye(8)[:3]
    steps = []
    for lab in labels:  # files of 5-40 steps scattered around their cluster's direction
        x = centres[lab] + 0.3 * rng.normal(size=(int(rng.integers(5, 41)), 8))
        steps.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    (kernel, bias), history = train_label_head(steps, labels, k=3, train=make_params().train, time_pool=4, seed=0)
    assert kernel.shape == (8, 3) and bias.shape == (3,)
    post = []
    for s in steps:
        z = s @ kernel + bias
        e = np.exp(z - z.max(axis=1, keepdims=True))
        post.append((e / e.sum(axis=1, keepdims=True)).mean(axis=0))
    assert np.argmax(post, axis=1).tolist() == labels.tolist()
    assert history["loss"][-1] < history["loss"][0]


def test_the_scatter_from_leaf_sums_equals_the_direct_sum():
    """Above SCATTER_BY_SUMS_ABOVE units the K candidates are scored from per-leaf sums: the same numbers."""
    from sound_cluster.embed.clusters import scatter_by_sums, ward_hierarchy, within_scatter

    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 16))[rng.integers(5, size=3000)] + 0.5 * rng.standard_normal((3000, 16))
    h = ward_hierarchy(x, max_exact=500, seed=0)  # centroids as leaves, as for a large folder
    ks = h.candidates(20)
    direct = np.array([within_scatter(h.x, h.cut(int(k))) for k in ks])
    np.testing.assert_allclose(scatter_by_sums(h, ks), direct, rtol=1e-10)
