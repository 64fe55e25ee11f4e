"""Bootstrap CIs: BCa against scipy.stats.bootstrap, clusters, zero variance, chunking."""
import zlib

import numpy as np
import pytest
import scipy.stats as st

from causalinterp import stats

B = 20000


@pytest.mark.parametrize("method", ["bca", "percentile", "basic"])
@pytest.mark.parametrize("dist", ["exponential", "lognormal", "normal"])
def test_ci_within_monte_carlo_error_of_scipy(method, dist):
    rng = np.random.default_rng(zlib.crc32(f"{method}-{dist}".encode()))  # stable across processes (hash() is salted)
    n = 30
    x = {"exponential": rng.exponential(size=n), "lognormal": rng.lognormal(0, 0.8, n),
         "normal": rng.normal(1, 2, n)}[dist]
    ours = stats.bootstrap_ci(x, method=method, n_resamples=B, seed=1)
    ref = st.bootstrap((x,), np.mean, method={"bca": "BCa"}.get(method, method), n_resamples=B, rng=2)
    se = ref.standard_error
    # Monte Carlo noise of an endpoint at B=20000: scipy against itself (rng 2 vs 3) differs by up to 0.14 se at
    # the upper BCa end on lognormal samples of 30 (measured over 6 seeds), so allow 0.2 se
    assert abs(ours.low - ref.confidence_interval.low) < 0.2 * se
    assert abs(ours.high - ref.confidence_interval.high) < 0.2 * se
    assert abs(ours.standard_error - se) < 0.03 * se
    assert ours.estimate == pytest.approx(x.mean())


def test_bca_differs_from_percentile_on_skewed_data():
    # guard that the comparison above is sensitive: on skewed data BCa moves both ends upwards
    rng = np.random.default_rng(3)
    x = rng.lognormal(0, 1.2, 25)
    bca = stats.bootstrap_ci(x, method="bca", n_resamples=B, seed=0)
    pct = stats.bootstrap_ci(x, method="percentile", n_resamples=B, seed=0)
    ref = st.bootstrap((x,), np.mean, method="BCa", n_resamples=B, rng=0)
    se = ref.standard_error
    assert bca.high - pct.high > 0.3 * se
    assert abs(bca.high - ref.confidence_interval.high) < 0.15 * se


def test_median_statistic_against_scipy():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(41)
    ours = stats.bootstrap_ci(x, statistic="median", method="percentile", n_resamples=10000, seed=0)
    ref = st.bootstrap((x,), np.median, method="percentile", n_resamples=10000, rng=1)
    se = ref.standard_error
    assert abs(ours.low - ref.confidence_interval.low) < 0.25 * se
    assert abs(ours.high - ref.confidence_interval.high) < 0.25 * se


def test_vectorised_equals_per_column():
    rng = np.random.default_rng(5)
    x = rng.exponential(size=(20, 6))
    full = stats.bootstrap_ci(x, n_resamples=999, seed=11)
    for j in (0, 3, 5):
        one = stats.bootstrap_ci(x[:, j], n_resamples=999, seed=11)
        assert full.low[j] == pytest.approx(one.low, rel=1e-12)
        assert full.high[j] == pytest.approx(one.high, rel=1e-12)


def test_axis_and_shapes():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4, 15))
    ci = stats.bootstrap_ci(x, axis=2, n_resamples=500, seed=0)
    assert ci.low.shape == (3, 4) and ci.high.shape == (3, 4)
    assert np.all(ci.low < x.mean(axis=2)) and np.all(ci.high > x.mean(axis=2))
    ci1 = stats.bootstrap_ci(x[0, 0], n_resamples=500, seed=0)
    assert np.ndim(ci1.low) == 0
    low, high = ci1
    assert low < high


def test_zero_variance_is_a_point_interval():
    rng = np.random.default_rng(7)
    x = np.column_stack([np.full(12, 0.1), rng.standard_normal(12), np.zeros(12)])
    for method in ("bca", "percentile", "basic"):
        ci = stats.bootstrap_ci(x, method=method, n_resamples=999, seed=0)
        assert np.all(np.isfinite(ci.low)) and np.all(np.isfinite(ci.high))
        assert ci.low[0] == ci.high[0] == pytest.approx(0.1, rel=1e-12)
        assert ci.low[2] == ci.high[2] == 0.0
        assert ci.standard_error[0] == 0.0
        assert ci.low[1] < ci.high[1]


def test_deterministic_and_independent_of_memory_budget():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((25, 40))
    a = stats.bootstrap_ci(x, n_resamples=1500, seed=5)
    b = stats.bootstrap_ci(x, n_resamples=1500, seed=5, max_memory=60_000)  # many site blocks and chunks
    # same resamples; only the BLAS blocking differs (rounding)
    np.testing.assert_allclose(a.low, b.low, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(a.high, b.high, rtol=1e-12, atol=1e-15)
    c = stats.bootstrap_ci(x, n_resamples=1500, seed=5)
    np.testing.assert_array_equal(a.low, c.low)


def test_cluster_bootstrap_of_duplicated_clusters_equals_plain_bootstrap_of_cluster_values():
    # each cluster holds k copies of one value: resampling clusters == resampling the distinct values
    rng = np.random.default_rng(9)
    v = rng.exponential(size=(12, 3))
    k = 4
    x = np.repeat(v, k, axis=0)
    labels = np.repeat(np.arange(12), k)
    clus = stats.bootstrap_ci(x, clusters=labels, n_resamples=2000, seed=3)
    plain = stats.bootstrap_ci(v, n_resamples=2000, seed=3)
    np.testing.assert_allclose(clus.low, plain.low, rtol=1e-10)
    np.testing.assert_allclose(clus.high, plain.high, rtol=1e-10)
    # ... and is much wider than the naive bootstrap over the 48 prompts
    naive = stats.bootstrap_ci(x, n_resamples=2000, seed=3)
    assert np.all((clus.high - clus.low) > 1.5 * (naive.high - naive.low))


def test_bootstrap_distribution_matches_ci():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((18, 2))
    dist = stats.bootstrap_distribution(x, n_resamples=3000, seed=4)
    ci = stats.bootstrap_ci(x, method="percentile", n_resamples=3000, seed=4)
    assert dist.shape == (3000, 2)
    np.testing.assert_allclose(ci.low, np.quantile(dist, 0.025, axis=0), rtol=1e-12)
    np.testing.assert_allclose(ci.high, np.quantile(dist, 0.975, axis=0), rtol=1e-12)
