"""Species colours: CIEDE2000 against published reference pairs, the
greedy assignment, and the bundled model's look-alikes drawn in colours a
person can tell apart."""
from __future__ import annotations

import numpy as np
import pytest

from plankton import palette
from plankton.artifact.gallery import closest_pairs
from plankton.artifact.manifest import DEFAULT_MODEL_DIR, PROTOTYPES
from plankton.model.prototypes import Prototypes
from plankton.results import UNKNOWN
from plankton.run.writers import species_colour

MIN_DELTA_E = 20.0  # CIEDE2000; two colours closer than this read as "the same red" on a busy frame


@pytest.mark.parametrize("lab1, lab2, expected", [  # Sharma, Wu & Dalal (2005), pairs 1, 3, 7 and 17
    ((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425),
    ((50, 2.8361, -74.0200), (50, 0, -82.7485), 3.4412),
    ((50, 0, 0), (50, -1, 2), 2.3669),
    ((50, 2.5, 0), (73, 25, -18), 27.1492),
])
def test_ciede2000_matches_the_reference_pairs(monkeypatch, lab1, lab2, expected):
    monkeypatch.setattr(palette, "lab", lambda x: np.asarray(x, np.float64))  # feed CIELAB straight in
    assert palette.delta_e(lab1, lab2) == pytest.approx(expected, abs=1e-4)


def test_lab_of_white_and_red():
    assert palette.lab((255, 255, 255)) == pytest.approx([100, 0, 0], abs=0.05)
    assert palette.lab((255, 0, 0)) == pytest.approx([53.24, 80.09, 67.20], abs=0.05)


def test_assign_keeps_look_alikes_apart():
    names = [f"sp{i}" for i in range(6)]
    pal = [(240, 30, 30), (235, 40, 45), (30, 30, 240), (30, 200, 40), (240, 200, 0), (120, 40, 160)]  # two near-identical reds first
    colours = palette.assign(names, [("sp0", "sp1"), ("sp2", "sp3")], pal)
    assert set(colours) == set(names) and len(set(colours.values())) == 6  # enough colours: none repeats
    assert palette.delta_e(colours["sp0"], colours["sp1"]) > 40
    # more species than colours: repeats, but never between look-alikes
    many = palette.assign([f"s{i}" for i in range(8)], [(f"s{i}", f"s{i + 1}") for i in range(7)], pal[:3])
    assert all(many[f"s{i}"] != many[f"s{i + 1}"] for i in range(7))


def test_unknown_is_grey_and_unmapped_names_are_stable():
    assert species_colour(UNKNOWN) == palette.GREY == (150, 150, 150)
    assert species_colour("Never seen sp") == species_colour("Never seen sp") in palette.KELLY
    assert min(palette.delta_e(np.array(palette.KELLY), np.array(palette.GREY))) > 10  # no palette colour passes for unknown


def test_bundled_model_look_alikes_get_distinct_colours():
    """The check of issue 28: no two species among the bundled model's ten
    closest pairs (``plankton info``'s table) are closer than ΔE00 20."""
    protos = Prototypes.load(DEFAULT_MODEL_DIR / PROTOTYPES)
    colours = palette.for_prototypes(protos)
    pairs = closest_pairs(protos, 10)
    gaps = {(p["a"], p["b"]): float(palette.delta_e(colours[p["a"]], colours[p["b"]])) for p in pairs}
    print("ΔE00 of the ten closest pairs:", {f"{a} / {b}": round(d, 1) for (a, b), d in gaps.items()})
    assert min(gaps.values()) >= MIN_DELTA_E, gaps
    # the three near-identical reds: those of them this model takes for look-alikes are far apart
    # (34 species share about 20 colours, so two that the model tells apart may share one)
    trio = ["Prymnesium sp", "Pyramimonas sp", "Hemiselmis sp"]
    alike = {frozenset(p) for p in palette.look_alikes(protos)}
    close = [(a, b) for i, a in enumerate(trio) for b in trio[i + 1:] if frozenset((a, b)) in alike]
    assert close and min(palette.delta_e(colours[a], colours[b]) for a, b in close) >= MIN_DELTA_E
    # once in use, the boxes and the legend draw from this mapping
    palette.use(colours)
    try:
        assert all(species_colour(n) == c for n, c in colours.items())
    finally:
        palette.use({})
