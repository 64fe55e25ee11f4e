"""TOST equivalence test against statsmodels, plus zero variance and margins per site."""
import numpy as np
import pytest
from statsmodels.stats.weightstats import ttost_paired

from causalinterp import stats


@pytest.mark.parametrize("shift", [0.0, 0.15, -0.3, 0.6])
def test_equals_statsmodels_ttost_paired(shift):
    rng = np.random.default_rng(int(100 * abs(shift)) + 1)
    x = rng.normal(shift, 0.5, 30)
    y = rng.normal(0, 0.5, 30)
    margin = 0.4
    r = stats.tost(x, margin, y=y)
    p, lower, upper = ttost_paired(x, y, -margin, margin)
    assert r.pvalue == pytest.approx(p, rel=1e-10)
    assert r.pvalue_lower == pytest.approx(lower[1], rel=1e-10)
    assert r.pvalue_upper == pytest.approx(upper[1], rel=1e-10)
    # equivalence <=> the (1 - 2 alpha) CI is inside the margin
    assert bool(r.equivalent) == bool(-margin < r.low and r.high < margin)


def test_vectorised_with_per_site_margins():
    rng = np.random.default_rng(2)
    x = rng.normal(0.05, 0.3, (25, 4))
    margins = np.array([0.05, 0.1, 0.3, 1.0])
    r = stats.tost(x, margins)
    for j in range(4):
        p, _, _ = ttost_paired(x[:, j], np.zeros(25), -margins[j], margins[j])
        assert r.pvalue[j] == pytest.approx(p, rel=1e-10)


def test_exceeds_margin_pvalue():
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 0.3, 40)
    r = stats.tost(x, 0.2, alpha=0.05)
    # the two-sided 95% t interval is entirely above the margin
    assert r.pvalue_exceeds < 0.05 and r.pvalue > 0.5
    y = rng.normal(0.0, 0.3, 40)
    assert stats.tost(y, 0.2).pvalue_exceeds > 0.05


def test_zero_variance_is_exact():
    r = stats.tost(np.full(10, 0.05), 0.1)
    assert r.pvalue == 0.0 and bool(r.equivalent)
    r = stats.tost(np.full(10, 0.3), 0.1)
    assert r.pvalue == 1.0 and not bool(r.equivalent) and r.pvalue_exceeds == 0.0
    # moved by the same amount up to rounding
    base = np.random.default_rng(4).normal(size=10)
    r = stats.tost(base + 0.05, 0.1, y=base)
    assert r.pvalue == 0.0


@pytest.mark.parametrize("margin", [0, -1, np.nan, np.inf])
def test_bad_margin(margin):
    with pytest.raises(ValueError, match="margin"):
        stats.tost(np.arange(5.0), margin)
