"""Sign-flip permutation test: exact p-values against scipy, Monte Carlo against the exact test."""
import numpy as np
import pytest
import scipy.stats as st

from causalinterp import stats


def _scipy_exact(x, alternative, axis=0):
    return st.permutation_test((x,), lambda a, axis: np.mean(a, axis=axis), permutation_type="samples",
                               vectorized=True, n_resamples=np.inf, alternative=alternative, axis=axis)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_exact_pvalues_equal_scipy_continuous(alternative):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((11, 7)) + np.linspace(-1, 1, 7)
    ours = stats.permutation_test(x, alternative=alternative)
    ref = _scipy_exact(x, alternative)
    assert ours.exact and ours.n_resamples == 2 ** 11
    np.testing.assert_allclose(ours.pvalue, ref.pvalue, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.statistic, ref.statistic, rtol=1e-12)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_exact_pvalues_equal_scipy_with_ties(alternative):
    # integer-valued data: many sign patterns tie with the observed mean exactly
    rng = np.random.default_rng(2)
    x = rng.integers(-3, 5, size=(10, 6)).astype(float)
    x[:, 0] = 1.0  # all equal: every pattern but one is smaller
    ours = stats.permutation_test(x, alternative=alternative)
    ref = _scipy_exact(x, alternative)
    np.testing.assert_allclose(ours.pvalue, ref.pvalue, rtol=0, atol=1e-9)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_exact_paired_axis1_scalar(alternative):
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((2, 4, 9))
    ours = stats.permutation_test(x, y, alternative=alternative, axis=1)
    ref = _scipy_exact(x - y, alternative, axis=1)
    assert ours.pvalue.shape == (4,)
    np.testing.assert_allclose(ours.pvalue, ref.pvalue, atol=1e-9)
    one = stats.permutation_test(x[0], y[0], alternative=alternative)
    assert np.ndim(one.pvalue) == 0 and np.ndim(one.statistic) == 0
    assert abs(float(one.pvalue) - ref.pvalue[0]) <= 1e-9


def test_monte_carlo_within_error_of_exact():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((15, 5)) * 0.8 + 0.35
    exact = stats.permutation_test(x, n_resamples=2 ** 15)
    assert exact.exact
    np.testing.assert_allclose(exact.pvalue, _scipy_exact(x, "two-sided").pvalue, atol=1e-9)
    B = 9999
    mc = stats.permutation_test(x, n_resamples=B, seed=0)
    assert not mc.exact and mc.n_resamples == B
    p = exact.pvalue
    tol = 4 * np.sqrt(p * (1 - p) / B) + 2 / B
    assert np.all(np.abs(mc.pvalue - p) <= tol)


def test_monte_carlo_plus_one_rule():
    # all 40 values positive and large: no random sign pattern reaches the observed mean
    x = np.linspace(5, 6, 40)
    for alt in ("two-sided", "greater"):
        r = stats.permutation_test(x, alternative=alt, n_resamples=999, seed=1)
        assert r.pvalue == pytest.approx(1 / 1000, abs=1e-15)
    r = stats.permutation_test(x, alternative="less", n_resamples=999, seed=1)
    assert r.pvalue == 1.0


def test_deterministic_and_independent_of_chunking():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30, 50))
    a = stats.permutation_test(x, seed=7, n_resamples=2000)
    b = stats.permutation_test(x, seed=7, n_resamples=2000, max_memory=20_000)
    np.testing.assert_array_equal(a.pvalue, b.pvalue)
    c = stats.permutation_test(x, seed=8, n_resamples=2000)
    assert not np.array_equal(a.pvalue, c.pvalue)


def test_columns_are_independent_of_each_other():
    # vectorising over sites must not change any site's p-value (same seed -> same sign patterns)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((25, 8)) + 0.3
    full = stats.permutation_test(x, seed=3, n_resamples=3000)
    for j in (0, 5):
        assert full.pvalue[j] == stats.permutation_test(x[:, j], seed=3, n_resamples=3000).pvalue


def test_torch_tensor_input():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 3))
    r_np = stats.permutation_test(x)
    r_t = stats.permutation_test(torch.tensor(x, requires_grad=True))
    np.testing.assert_array_equal(r_np.pvalue, r_t.pvalue)


def test_cluster_signflip_equals_scipy_on_cluster_sums():
    # flipping whole clusters of the overall mean == sign-flip test of the cluster sums
    rng = np.random.default_rng(8)
    n_clusters, sizes = 9, rng.integers(1, 5, size=9)
    labels = np.repeat(np.arange(n_clusters), sizes)
    x = rng.standard_normal((labels.size, 3)) + 0.4
    ours = stats.permutation_test(x, clusters=labels, alternative="greater")
    sums = np.stack([x[labels == g].sum(axis=0) for g in range(n_clusters)])
    ref = _scipy_exact(sums, "greater")
    assert ours.exact and ours.n_resamples == 2 ** n_clusters
    np.testing.assert_allclose(ours.pvalue, ref.pvalue, atol=1e-9)
    np.testing.assert_allclose(ours.statistic, x.mean(axis=0))


def test_singleton_clusters_are_the_plain_test():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((30, 4))
    plain = stats.permutation_test(x, seed=1, n_resamples=999)
    clus = stats.permutation_test(x, seed=1, n_resamples=999, clusters=np.arange(30))
    np.testing.assert_array_equal(plain.pvalue, clus.pvalue)


def test_smallest_attainable_p_is_attained():
    for n in (5, 8, 12):
        x = np.arange(1.0, n + 1)
        assert stats.permutation_test(x).pvalue == pytest.approx(stats.smallest_pvalue(n), abs=1e-15)
        assert stats.permutation_test(x, alternative="greater").pvalue == pytest.approx(
            stats.smallest_pvalue(n, alternative="greater"), abs=1e-15)
    assert stats.smallest_pvalue(8) == pytest.approx(2 / 256)
    assert stats.smallest_pvalue(40, n_resamples=9999) == pytest.approx(1e-4)
