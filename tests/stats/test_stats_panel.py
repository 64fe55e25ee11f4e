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


def test_normal_looking_floor_is_alpha_on_normal_data_and_above_it_for_a_missed_tail():
    """The measured floor counts samples that pass as normal and that a t-test rejects the wrong way: on normal
    data that is the t-test's own alpha (so it cannot loosen symmetric cells); a small lognormal sample that
    missed its right tail makes such samples far more often."""
    import numpy as np
    rng = np.random.default_rng(0)
    g = rng.normal(2, 0.5, 10)
    normal = cal.normal_floor("has_effect(decrease) at 0", cal.noise("normal", 10, 4000, g, rng), g, 0.5).mean()
    skewed = cal.normal_floor("has_effect(decrease) at 0", cal.noise("lognormal", 10, 4000, g, rng), g, 0.5).mean()
    assert 0.03 < normal < 0.065
    assert skewed > 0.08
    # a sample of all-equal values has no shape to test: never counted
    assert not cal._passes_as_normal(np.ones((10, 1)))[0]
