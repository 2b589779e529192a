"""plankton.model.prototypes: building, matching, enrolling, saving class prototypes,
on embeddings clustered around known orthogonal directions."""
import numpy as np
import pytest

from plankton.model.prototypes import Prototypes, identify
from plankton.results import UNKNOWN

D = 32


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def axis(i, d=D):
    e = np.zeros(d, np.float32)
    e[i] = 1
    return e


def cluster(i, n, spread=0.05, seed=0):
    rng = np.random.default_rng(seed + 100 * i)
    return unit(axis(i) + spread * rng.normal(size=(n, D)))


@pytest.fixture(scope="module")
def protos():
    # classes a, b, c around axes 0, 1, 2; "empty" has no sample.
    emb = np.concatenate([cluster(0, 12), cluster(1, 3), cluster(2, 8)])
    labels = np.array([0] * 12 + [2] * 3 + [3] * 8)
    return Prototypes.build(emb, labels, ["a", "empty", "b", "c"], k=4, seed=0)


def test_build_keeps_only_classes_with_samples(protos):
    assert protos.names == ["a", "b", "c"]
    assert protos.means.shape == (3, D) and protos.subcenters.shape == (3, 4, D) and protos.dim == D
    np.testing.assert_allclose(np.linalg.norm(protos.means, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(protos.subcenters, axis=2), 1, atol=1e-5)
    # Each class's prototypes point at its own cluster.
    for i, name in enumerate(protos.names):
        assert protos.means[i].argmax() == i
        assert (protos.subcenters[i] @ axis(i) > 0.9).all()


def test_build_with_no_samples_at_all():
    p = Prototypes.build(np.zeros((0, D), np.float32), np.zeros(0, int), ["a", "b"], k=3)
    assert p.names == [] and p.means.shape == (0, D) and p.subcenters.shape == (0, 3, D)


def test_invalid_prototypes_are_refused():
    m, s = np.eye(2, D, dtype=np.float32), np.zeros((2, 1, D), np.float32)
    with pytest.raises(ValueError):
        Prototypes(["a", "a"], m, s)
    with pytest.raises(ValueError):
        Prototypes(["a", UNKNOWN], m, s)
    with pytest.raises(ValueError):
        Prototypes(["a"], m, s)


def test_similarity(protos):
    q = np.concatenate([cluster(0, 2, seed=7), cluster(2, 1, seed=7)])
    sim = protos.similarity(q)
    assert sim.shape == (3, 3) and sim.dtype == np.float32
    mean_sim = q @ protos.means.T
    assert (sim >= mean_sim - 1e-6).all()  # sub-centres can only raise the similarity
    expected = np.maximum(mean_sim, np.einsum("nd,ckd->nck", q, protos.subcenters).max(2))
    np.testing.assert_allclose(sim, expected, atol=1e-6)
    mean_mode = Prototypes(protos.names, protos.means, protos.subcenters, mode="mean")
    np.testing.assert_allclose(mean_mode.similarity(q), mean_sim, atol=1e-6)
    assert protos.similarity(np.zeros((0, D))).shape == (0, 3)


def test_mean_mode_is_not_swayed_by_one_atypical_crop_of_a_rare_species():
    # "rare" has 2 crops: one typical (axis 3) and one that looks like "a" (axis 0). With
    # sub-centres that crop is a prototype of its own and claims a's objects; the mean does not.
    emb = np.concatenate([cluster(0, 20), unit(np.stack([axis(3), axis(0) + 0.05 * axis(3)]))])
    labels = np.array([0] * 20 + [1, 1])
    query = cluster(0, 5, spread=0.08, seed=3)
    sub = Prototypes.build(emb, labels, ["a", "rare"], k=5)
    mean = Prototypes.build(emb, labels, ["a", "rare"], k=5, mode="mean")
    assert sub.mode == "subcenter" and mean.mode == "mean"
    np.testing.assert_array_equal(mean.subcenters, sub.subcenters)  # built either way (the gallery shows them)
    assert (np.array(sub.names)[sub.similarity(query).argmax(1)] == "rare").any()
    assert (np.array(mean.names)[mean.similarity(query).argmax(1)] == "a").all()
    np.testing.assert_allclose(mean.similarity(query), query @ mean.means.T, atol=1e-6)
    added = mean.add({"rare": unit(axis(3)[None])})
    assert added.mode == "mean"


def test_unknown_mode_is_refused(protos):
    with pytest.raises(ValueError, match="'nearest'"):
        Prototypes(protos.names, protos.means, protos.subcenters, mode="nearest")


def test_match_species_above_threshold_unknown_below(protos):
    q = cluster(1, 1, seed=9)
    best = protos.similarity(q)[0].max()
    hit = protos.match(q, threshold=best - 1e-3)[0]
    assert hit.species == "b" and hit.similarity == pytest.approx(best)
    at = protos.match(q, threshold=float(best))[0]
    assert at.species == "b", "similarity equal to the threshold is accepted"
    miss = protos.match(q, threshold=best + 1e-3)[0]
    assert miss.species == UNKNOWN
    assert miss.similarity == pytest.approx(best) and miss.topk[0].species == "b"  # still reported
    # A direction unlike every class is unknown at a moderate threshold.
    assert protos.match(axis(10), threshold=0.5)[0].species == UNKNOWN


def test_topk_ordering_and_length(protos):
    q = unit(0.9 * axis(2) + 0.4 * axis(0) + 0.1 * axis(1))
    ident = protos.match(q, threshold=0.0, topk=3)[0]
    assert [c.species for c in ident.topk] == ["c", "a", "b"]
    sims = [c.similarity for c in ident.topk]
    assert sims == sorted(sims, reverse=True)
    assert ident.similarity == pytest.approx(sims[0])
    assert len(protos.match(q, 0.0, topk=1)[0].topk) == 1
    assert len(protos.match(q, 0.0, topk=10)[0].topk) == 3  # no more than there are classes


def test_enrol_adds_a_class_that_then_matches(protos):
    new = protos.enrol("d", cluster(5, 3, seed=3))
    assert new.names == ["a", "b", "c", "d"] and new.subcenters.shape == (4, 4, D)
    assert protos.names == ["a", "b", "c"] and protos.means.shape == (3, D)  # self unchanged
    ident = new.match(cluster(5, 1, seed=4), threshold=0.8)[0]
    assert ident.species == "d" and ident.similarity > 0.9
    # The old classes still match as before.
    assert new.match(cluster(0, 1, seed=4), threshold=0.8)[0].species == "a"


def test_enrol_with_one_example():
    p = Prototypes.build(cluster(0, 6), np.zeros(6, int), ["a"], k=3)
    example = unit(axis(7) + axis(8))
    new = p.enrol("solo", example)
    ident = new.match(example, threshold=0.99)[0]
    assert ident.species == "solo" and ident.similarity == pytest.approx(1.0, abs=1e-5)


def test_enrol_existing_name_replaces_its_prototypes(protos):
    new = protos.enrol("a", cluster(6, 4, seed=1))
    assert new.names == protos.names
    assert new.match(cluster(6, 1, seed=2), 0.8)[0].species == "a"
    assert new.match(cluster(0, 1, seed=2), 0.8)[0].species == UNKNOWN


def test_enrol_without_examples_is_refused(protos):
    with pytest.raises(ValueError, match="'x'"):
        protos.enrol("x", np.zeros((0, D), np.float32))


@pytest.mark.parametrize("mode", ["subcenter", "mean"])
def test_save_load_round_trip(protos, tmp_path, mode):
    p = Prototypes(protos.names, protos.means, protos.subcenters, mode)
    p.save(tmp_path / "p.safetensors")
    q = Prototypes.load(tmp_path / "p.safetensors")
    assert q.names == p.names and q.mode == mode
    np.testing.assert_array_equal(q.means, p.means)
    np.testing.assert_array_equal(q.subcenters, p.subcenters)


def test_save_load_keeps_non_ascii_names(tmp_path):
    p = Prototypes.build(cluster(0, 3), np.zeros(3, int), ["Cératium μ-sp"], k=2)
    p.save(tmp_path / "p.safetensors")
    assert Prototypes.load(tmp_path / "p.safetensors").names == ["Cératium μ-sp"]


def test_load_of_other_safetensors_is_refused(tmp_path):
    from safetensors.numpy import save_file

    save_file({"weight": np.zeros((2, 2), np.float32)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="not a prototypes file"):
        Prototypes.load(tmp_path / "w.safetensors")
    save_file({"means": np.zeros((1, 2), np.float32)}, str(tmp_path / "m.safetensors"), metadata={"names": '["a"]'})
    with pytest.raises(ValueError, match="not a prototypes file"):
        Prototypes.load(tmp_path / "m.safetensors")


def test_identify_known_values():
    sim = np.array([[0.1, 0.9, 0.5], [0.2, 0.3, 0.25], [0.4, 0.4, 0.1]], np.float32)
    out = identify(sim, ["x", "y", "z"], threshold=0.35, topk=2)
    assert [o.species for o in out] == ["y", UNKNOWN, "x"]  # ties go to the first class
    assert [c.species for c in out[0].topk] == ["y", "z"]
    assert out[1].similarity == pytest.approx(0.3)
    assert identify(np.zeros((0, 3)), ["x", "y", "z"], 0.5) == []


def test_identify_with_zero_classes():
    out = identify(np.zeros((2, 0), np.float32), [], threshold=0.5)
    assert [o.species for o in out] == [UNKNOWN, UNKNOWN] and all(o.topk == () for o in out)
    empty = Prototypes.build(np.zeros((0, D), np.float32), np.zeros(0, int), ["a"], k=2)
    assert [o.species for o in empty.match(cluster(0, 2), 0.5)] == [UNKNOWN, UNKNOWN]
