"""The species gallery: exemplars are the crops nearest to the sub-centre
they are stored under, they round-trip through the artifact, and the
closest-pairs ranking is the prototypes' own similarity order."""
from __future__ import annotations

import numpy as np

from plankton.artifact.gallery import Exemplars, choose_exemplars, closest_pairs, nearest_subcenter, subcenter_spread, summary, summary_lines
from plankton.model.prototypes import Prototypes


def _clusters(seed=0, n=40, D=16):
    """Two species, each with two well-separated forms; a third close to the first."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 2, D))
    centres[2] = centres[0] + 0.15 * rng.normal(size=(2, D))  # a look-alike of species 0
    labels = np.repeat(np.arange(3), n)
    form = np.tile(np.repeat([0, 1], n // 2), 3)
    emb = centres[labels, form] + 0.05 * rng.normal(size=(3 * n, D))
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), labels


def test_each_exemplar_is_nearest_to_its_subcenter():
    emb, labels = _clusters()
    protos = Prototypes.build(emb, labels, ["a", "b", "c"], k=2)
    chosen, counts = choose_exemplars(protos, emb, labels, per_subcenter=3)
    assert counts.sum() == len(emb) and (counts > 0).all()  # every crop falls to exactly one sub-centre of its species
    nearest = nearest_subcenter(protos, emb, labels)
    for c in range(3):
        for k in range(2):
            idx = chosen[c, k]
            assert (idx >= 0).all() and (labels[idx] == c).all() and (nearest[idx] == k).all()
            # and no crop of that sub-centre is nearer to it than the chosen ones
            rest = np.setdiff1d(np.flatnonzero((labels == c) & (nearest == k)), idx)
            sims = emb @ protos.subcenters[c, k]
            assert sims[idx].min() >= sims[rest].max() - 1e-6


def test_closest_pairs_follow_the_prototype_similarities():
    emb, labels = _clusters()
    protos = Prototypes.build(emb, labels, ["a", "b", "c"], k=2)
    pairs = closest_pairs(protos, top=3)
    P = np.concatenate([protos.means[:, None], protos.subcenters], axis=1)
    by_hand = {(i, j): max(float(x @ y) for x in P[i] for y in P[j]) for i in range(3) for j in range(i + 1, 3)}
    ranked = sorted(by_hand, key=lambda p: -by_hand[p])
    assert [(p["a"], p["b"]) for p in pairs] == [(protos.names[i], protos.names[j]) for i, j in ranked]
    assert [p["cosine"] for p in pairs] == [round(by_hand[p], 4) for p in ranked]
    assert (pairs[0]["a"], pairs[0]["b"]) == ("a", "c")  # the look-alike comes first
    spread = subcenter_spread(protos)
    assert all(v < 0.9 for v in spread.values())  # two distinct forms each


def test_exemplars_round_trip_and_summary(tmp_path):
    emb, labels = _clusters()
    protos = Prototypes.build(emb, labels, ["a", "b", "c"], k=2)
    chosen, counts = choose_exemplars(protos, emb, labels, 2)
    crops = (np.arange(chosen.size * 4 * 4 * 3) % 251).astype(np.uint8).reshape(*chosen.shape, 4, 4, 3)
    Exemplars(list(protos.names), crops, counts, (chosen >= 0).sum(-1)).save(tmp_path / "exemplars.safetensors")
    back = Exemplars.load(tmp_path / "exemplars.safetensors")
    np.testing.assert_array_equal(back.crops, crops)
    np.testing.assert_array_equal(back.counts, counts)
    assert [n for n, _ in back.of("b")] == counts[1].tolist() and len(back.of("b")[0][1]) == 2
    protos.save(tmp_path / "prototypes.safetensors")
    s = summary(tmp_path)
    assert s["closest_pairs"][0]["a"] == "a" and [r["subcenter_crops"] for r in s["species"]] == counts.tolist()
    text = "\n".join(summary_lines(s))
    assert "closest species pairs" in text and f"{s['closest_pairs'][0]['cosine']:.3f}" in text
