"""signflip_ci: the confidence interval of the mean from inverting the paired sign-flip test."""
import numpy as np
import pytest

from causalinterp.stats import bootstrap_ci, permutation_test, signflip_ci

ALPHA = 0.05


def _p(x, mu, **kw):
    return permutation_test(x - mu, **kw).pvalue


@pytest.mark.parametrize("n, B", [(24, 999), (40, 1999), (9, 9999), (12, 9999)])   # Monte Carlo and exact
def test_bounds_are_where_the_test_starts_rejecting(n, B):
    rng = np.random.default_rng(n)
    x = rng.standard_t(1.5, size=n) + 2.0
    ci = signflip_ci(x, n_resamples=B, seed=7)
    assert ci.method == "signflip" and ci.low < x.mean() < ci.high
    eps = 1e-8 * np.abs(x).max()
    kw = dict(n_resamples=B, seed=7)
    assert _p(x, ci.low + eps, **kw) > ALPHA and _p(x, ci.low - eps, **kw) <= ALPHA
    assert _p(x, ci.high - eps, **kw) > ALPHA and _p(x, ci.high + eps, **kw) <= ALPHA
    # the estimate is inside and the p-value there is large
    assert _p(x, x.mean(), **kw) == pytest.approx(1.0)


def test_bounds_vectorised_over_sites_match_single_site():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)) * [1, 2, 0.1, 10]
    ci = signflip_ci(x, n_resamples=999, seed=1)
    for j in range(4):
        cj = signflip_ci(x[:, j], n_resamples=999, seed=1)
        assert ci.low[j] == pytest.approx(cj.low) and ci.high[j] == pytest.approx(cj.high)
    tight = signflip_ci(x, n_resamples=999, seed=1, max_memory=20_000)   # many small chunks, same patterns
    np.testing.assert_allclose(tight.low, ci.low)
    np.testing.assert_allclose(tight.high, ci.high)


def _coverage(x, ci, mu=0.0):
    return float(np.mean((ci.low <= mu) & (mu <= ci.high)))


def test_coverage_heavy_tailed_symmetric_and_bca_undercovers():
    """Symmetric, very heavy tails (90% N(0, 0.1^2), 10% N(0, 5^2)), n = 24: the inverted test keeps 95%.

    BCa on the same datasets covers far less (the reason evaluate's has_effect/no_effect CIs use signflip_ci).
    """
    rng = np.random.default_rng(2024)
    k, n = 2000, 24
    x = np.where(rng.random((n, k)) < 0.9, rng.normal(0, 0.1, (n, k)), rng.normal(0, 5.0, (n, k)))
    se = np.sqrt(0.95 * 0.05 / k)
    cov = _coverage(x, signflip_ci(x, n_resamples=999, seed=1))
    bca = _coverage(x, bootstrap_ci(x, method="bca", n_resamples=999, seed=1))
    assert abs(cov - 0.95) <= 3 * se, cov
    assert bca < 0.95 - 3 * se, bca      # documents the BCa under-coverage (about 0.88 here)


def test_coverage_student_t_15df():
    rng = np.random.default_rng(7)
    k, n = 2000, 24
    x = rng.standard_t(1.5, size=(n, k)) - 1.0
    cov = _coverage(x, signflip_ci(x, n_resamples=999, seed=2), mu=-1.0)
    assert abs(cov - 0.95) <= 3 * np.sqrt(0.95 * 0.05 / k), cov


def test_coverage_normal():
    rng = np.random.default_rng(11)
    k, n = 2000, 50
    x = rng.normal(3.0, 2.0, size=(n, k))
    cov = _coverage(x, signflip_ci(x, n_resamples=999, seed=3), mu=3.0)
    assert abs(cov - 0.95) <= 3 * np.sqrt(0.95 * 0.05 / k), cov


def test_exact_enumeration_does_not_depend_on_seed():
    x = np.random.default_rng(3).normal(size=(10, 3))
    a = signflip_ci(x, n_resamples=9999, seed=1)
    b = signflip_ci(x, n_resamples=9999, seed=12345)
    assert a.n_resamples == 2 ** 10
    np.testing.assert_array_equal(a.low, b.low)
    np.testing.assert_array_equal(a.high, b.high)


def test_shift_equivariance():
    x = np.random.default_rng(4).standard_t(2, size=(40, 3))
    c = 17.25
    a = signflip_ci(x, n_resamples=999, seed=5)
    b = signflip_ci(x + c, n_resamples=999, seed=5)
    np.testing.assert_allclose(b.low, a.low + c, rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.high, a.high + c, rtol=0, atol=1e-9)
    np.testing.assert_allclose(b.estimate, a.estimate + c, rtol=0, atol=1e-9)


def test_singleton_clusters_equal_unclustered():
    x = np.random.default_rng(5).normal(size=(30, 4))
    a = signflip_ci(x, n_resamples=999, seed=6)
    b = signflip_ci(x, n_resamples=999, seed=6, clusters=np.arange(30))   # unit order = sorted labels
    np.testing.assert_allclose(b.low, a.low)
    np.testing.assert_allclose(b.high, a.high)


def test_clusters_bounds_match_clustered_test():
    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(15), 3)[rng.permutation(45)]
    x = rng.normal(size=45) + rng.normal(size=15)[labels] + 1.0
    ci = signflip_ci(x, n_resamples=999, seed=8, clusters=labels)
    kw = dict(n_resamples=999, seed=8, clusters=labels)
    eps = 1e-8
    assert _p(x, ci.low + eps, **kw) > ALPHA and _p(x, ci.low - eps, **kw) <= ALPHA
    assert _p(x, ci.high - eps, **kw) > ALPHA and _p(x, ci.high + eps, **kw) <= ALPHA


def test_zero_variance_and_underpowered():
    x = np.column_stack([np.full(12, 0.3), np.random.default_rng(0).normal(size=12)])
    ci = signflip_ci(x, n_resamples=999, seed=0)
    assert ci.low[0] == ci.high[0] == pytest.approx(0.3)
    # n = 5: exact, smallest two-sided p 2/32 > 0.05 -> the test never rejects -> infinite interval
    tiny = signflip_ci(np.arange(5.0), n_resamples=9999)
    assert tiny.low == -np.inf and tiny.high == np.inf
    with pytest.raises(ValueError):
        signflip_ci(x, confidence_level=1.5)
