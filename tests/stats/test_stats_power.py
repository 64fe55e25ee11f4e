"""Minimum detectable effect against statsmodels' power solver; smallest attainable p."""
import numpy as np
import pytest
from statsmodels.stats.power import TTestPower

from causalinterp import stats


@pytest.mark.parametrize("n, alpha, power, alt", [(20, 0.05, 0.8, "two-sided"), (50, 0.01, 0.9, "two-sided"),
                                                 (15, 0.05, 0.8, "greater"), (200, 0.0005, 0.8, "two-sided")])
def test_standardized_mde_equals_statsmodels(n, alpha, power, alt):
    rng = np.random.default_rng(n)
    x = rng.normal(0, 2.0, (n, 3))
    r = stats.min_detectable_effect(x, alpha, power, alternative=alt, n_resamples=None)
    sm_alt = "larger" if alt == "greater" else alt
    ref = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative=sm_alt)
    assert r.standardized == pytest.approx(ref, rel=1e-5)
    np.testing.assert_allclose(r.effect, ref * x.std(axis=0, ddof=1), rtol=1e-5)


def test_mde_by_simulation():
    # a true effect equal to the MDE is detected (t-test at alpha) with probability ~ power
    rng = np.random.default_rng(1)
    n, sigma = 20, 1.0
    pilot = rng.normal(0, sigma, 100000)[:n]
    d = stats.min_detectable_effect(np.r_[pilot], 0.05, 0.8, n_resamples=None).standardized
    from scipy import stats as st
    sims = rng.normal(d * sigma, sigma, (n, 20000))
    p = st.ttest_1samp(sims, 0, axis=0).pvalue
    assert abs((p < 0.05).mean() - 0.8) < 0.015


def test_unattainable_alpha_gives_infinite_mde():
    x = np.random.default_rng(2).normal(size=8)
    r = stats.min_detectable_effect(x, alpha=0.005)
    assert r.smallest_pvalue == pytest.approx(2 / 2 ** 8)
    assert not r.attainable and r.effect == np.inf
    assert np.isfinite(stats.min_detectable_effect(x, alpha=0.05).effect)


def test_smallest_pvalue_rules():
    assert stats.smallest_pvalue(8) == pytest.approx(0.0078125)
    assert stats.smallest_pvalue(8, alternative="less") == pytest.approx(1 / 256)
    assert stats.smallest_pvalue(14, n_resamples=9999) == pytest.approx(1 / 10000)
    assert stats.smallest_pvalue(13, n_resamples=9999) == pytest.approx(2 / 2 ** 13)
