"""compare.csv's count rows from the runs' concentration.csv: the
estimates and their intervals beside the raw counts, and rows that add up
to the estimated total (issue 41)."""
from __future__ import annotations

import pytest


def runs_in(tmp_path):
    """A maker of run folders: the objects' species and concentration.csv's rows (species, count, estimate, low, high)."""
    from plankton.run.runfiles import Run

    def run(name, species, est):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "concentration.csv").write_text("species,count,count_est,count_est_low,count_est_high\n"
                                                  + "".join(f"{s},{n},{e},{lo},{hi}\n" for s, n, e, lo, hi in est))
        return Run(folder, [{"species": s, "image": "f.jpg"} for s in species], [])

    return run


def test_estimated_counts_and_their_intervals(tmp_path):
    from plankton.review.compare import count_rows

    run = runs_in(tmp_path)
    a = run("a", ["x", "x", "x", "y"], [("x", 3, 3.5, 2.0, 5.0), ("y", 1, 1.2, 0.5, 2.0), ("total", 4, 4.7, 3, 6)])
    b = run("b", ["x", "y", "y", "y", "y"], [("x", 1, 1.1, 0.8, 1.5), ("y", 4, 4.4, 3.0, 6.0), ("total", 5, 5.5, 4, 7)])
    got = {r["species"]: r for r in count_rows(a, b)}
    assert (got["x"]["count_a"], got["x"]["count_b"], got["x"]["difference"]) == (3, 1, -2)
    assert (got["x"]["count_est_a"], got["x"]["count_est_b"], got["x"]["intervals_overlap"]) == ("3.5", "1.1", "no")
    assert got["y"]["intervals_overlap"] == "no" and got["total"]["intervals_overlap"] == "yes"
    assert got["unknown"]["count_a"] == 0 and "count_est_a" not in got["unknown"] and "intervals_overlap" not in got["unknown"]


def test_compare_rows_add_up_to_the_estimated_total(tmp_path):
    """A species estimated but not counted gets its row; what the tables
    leave out (estimates below their floor) is one ``others`` row."""
    from plankton.review.compare import OTHERS, count_rows

    run = runs_in(tmp_path)
    a = run("a", ["x", "x", "x", "y"], [("x", 3, 3.5, 2, 5), ("y", 1, 1.2, 0.5, 2), ("z", 0, 0.8, 0.1, 2), ("total", 4, 6.0, 4, 8)])
    b = run("b", ["x", "y", "y", "y", "y"], [("x", 1, 1.1, 0.8, 1.5), ("y", 4, 4.4, 3, 6), ("total", 5, 5.9, 4, 8)])
    table = count_rows(a, b)
    assert [r["species"] for r in table] == ["y", "x", "z", OTHERS, "unknown", "total"]
    got = {r["species"]: r for r in table}
    assert (got["z"]["count_a"], got["z"]["count_est_a"], "count_est_b" in got["z"]) == (0, "0.8", False)
    assert float(got[OTHERS]["count_est_a"]) == pytest.approx(0.5) and float(got[OTHERS]["count_est_b"]) == pytest.approx(0.4)
    for side, total in (("a", 6.0), ("b", 5.9)):
        assert sum(float(r.get(f"count_est_{side}") or 0) for r in table[:-1]) == pytest.approx(total)
    assert sum(r["count_a"] for r in table[:-1]) == table[-1]["count_a"] == 4  # the raw rows still add up
    # tables that list everything need no others row
    c = run("c", ["x"], [("x", 1, 1.0, 0.5, 2), ("total", 1, 1.0, 0.5, 2)])
    assert OTHERS not in [r["species"] for r in count_rows(c, c)]
