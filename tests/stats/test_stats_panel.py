"""A fast subset of the calibration panel (benchmarks/calibration.py): the audit's failing cells of issue 10
now stay within max(alpha, attainable floor) + 2 simulation SE."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import calibration as cal  # noqa: E402


@pytest.mark.parametrize("shape,n", [("aon 0.8", 20), ("lognormal", 20), ("sparse 10%", 20)])
def test_panel_cells_within_bound(shape, n):
    rows = cal.panel_cell(shape, n, blocks=2, per_block=100, B=499, seed=11)
    bad = [(r["claim"], r["wrong verdict"], r["rate"], r["floor"]) for r in rows if not r["ok"]]
    assert not bad, bad


def test_floors_are_those_of_the_issue():
    assert cal.floors("sparse 10%", 10)[("has_effect(decrease) at 0", "supported")] == pytest.approx(0.9 ** 10)
    assert cal.floors("normal", 10) == {}
