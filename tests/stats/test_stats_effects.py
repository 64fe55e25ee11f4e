"""Effect sizes and the normalised recovery (a ratio of means with a joint bootstrap CI)."""
import numpy as np
import pytest
import scipy.stats as st
from scipy.special import gamma

from causalinterp import stats


def test_cohens_dz_from_t_statistic():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.4, 1, (2, 25, 3))
    e = stats.effect_size(x, y)
    t = st.ttest_rel(x, y, axis=0).statistic
    np.testing.assert_allclose(e.cohens_d, t / np.sqrt(25), rtol=1e-12)


@pytest.mark.parametrize("n", [5, 12, 50])
def test_hedges_correction(n):
    rng = np.random.default_rng(n)
    x = rng.normal(0.5, 1, n)
    e = stats.effect_size(x)
    df = n - 1
    j_exact = gamma(df / 2) / (np.sqrt(df / 2) * gamma((df - 1) / 2))
    assert e.hedges_g == pytest.approx(j_exact * e.cohens_d, rel=1e-10)
    assert e.hedges_g / e.cohens_d == pytest.approx(1 - 3 / (4 * df - 1), rel=3e-3)  # the classic approximation


def test_effect_size_zero_variance():
    e = stats.effect_size(np.column_stack([np.full(8, 0.3), np.zeros(8)]))
    assert e.cohens_d[0] == np.inf and e.hedges_g[0] == np.inf
    assert e.cohens_d[1] == 0.0 and e.hedges_g[1] == 0.0


def _data(rng, n=60, ratio=0.6):
    corrupt = rng.normal(0, 1, n)
    clean = corrupt + rng.normal(2, 0.7, n)
    patched = corrupt + ratio * (clean - corrupt) + rng.normal(0, 0.5, n)
    return patched, clean, corrupt


def test_recovery_is_a_ratio_of_means():
    rng = np.random.default_rng(1)
    patched, clean, corrupt = _data(rng)
    r = stats.recovery(patched, clean, corrupt, n_resamples=999, seed=0)
    assert r.estimate == pytest.approx((patched.mean() - corrupt.mean()) / (clean.mean() - corrupt.mean()))
    assert r.gap == pytest.approx((clean - corrupt).mean())
    assert r.low < r.estimate < r.high


def test_recovery_ci_matches_scipy_paired_bootstrap():
    rng = np.random.default_rng(2)
    patched, clean, corrupt = _data(rng, n=30)
    num, den = patched - corrupt, clean - corrupt
    ref = st.bootstrap((num, den), lambda a, b, axis: a.mean(axis=axis) / b.mean(axis=axis), paired=True,
                       vectorized=True, method="BCa", n_resamples=20000, rng=1)
    ours = stats.recovery(patched, clean, corrupt, n_resamples=20000, seed=3)
    se = ref.standard_error
    assert abs(ours.low - ref.confidence_interval.low) < 0.12 * se
    assert abs(ours.high - ref.confidence_interval.high) < 0.12 * se


def test_recovery_not_a_mean_of_per_prompt_ratios():
    # one prompt with clean ~= corrupt: the mean of per-prompt ratios explodes, the ratio of means does not
    rng = np.random.default_rng(3)
    patched, clean, corrupt = _data(rng, n=40, ratio=0.5)
    clean[0] = corrupt[0] + 1e-9
    patched[0] = corrupt[0] + 0.3
    per_prompt = np.mean((patched - corrupt) / (clean - corrupt))
    r = stats.recovery(patched, clean, corrupt, n_resamples=999, seed=0)
    assert abs(per_prompt) > 1e6
    assert 0.3 < r.estimate < 0.7 and np.isfinite(r.low) and np.isfinite(r.high)


def test_recovery_vectorised_over_sites_and_exact_when_zero_variance():
    rng = np.random.default_rng(4)
    _, clean, corrupt = _data(rng, n=20)
    patched = np.column_stack([corrupt, clean, corrupt + 0.25 * (clean - corrupt), corrupt + rng.normal(0, 1, 20)])
    r = stats.recovery(patched, clean, corrupt, n_resamples=999, seed=0)
    assert r.estimate.shape == (4,)
    for j, val in enumerate([0.0, 1.0, 0.25]):
        assert r.exact[j]
        assert r.low[j] == r.high[j] == pytest.approx(val, abs=1e-12)
    assert not r.exact[3] and r.low[3] < r.high[3]


def test_recovery_undefined_without_gap():
    x = np.random.default_rng(5).normal(size=10)
    with pytest.raises(stats.RecoveryUndefined, match="do not differ"):
        stats.recovery(x + 1, x, x.copy())


def test_recovery_clusters():
    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(8), 5)
    template = rng.normal(0, 1, 8)[labels]          # shared within a template
    corrupt = rng.normal(0, 0.1, 40)
    clean = corrupt + 2 + template
    patched = corrupt + 0.5 * (clean - corrupt) + template + rng.normal(0, 0.1, 40)
    plain = stats.recovery(patched, clean, corrupt, n_resamples=2000, seed=0)
    clus = stats.recovery(patched, clean, corrupt, n_resamples=2000, seed=0, clusters=labels)
    assert clus.n_units == 8
    assert clus.estimate == pytest.approx(plain.estimate)
    assert (clus.high - clus.low) > 1.3 * (plain.high - plain.low)
