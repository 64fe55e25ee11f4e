"""Property tests (hypothesis) for invariances of the tests and intervals."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from hypothesis.extra import numpy as hnp

from causalinterp import stats

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
finite = hs.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def samples(min_n=2, max_n=25):
    return hnp.arrays(np.float64, hs.tuples(hs.integers(min_n, max_n), hs.integers(1, 4)), elements=finite)


@SETTINGS
@given(x=samples(), alternative=hs.sampled_from(["two-sided", "greater", "less"]),
       n_resamples=hs.sampled_from([99, 999, 5000]), seed=hs.integers(0, 10))
def test_pvalues_in_unit_interval(x, alternative, n_resamples, seed):
    r = stats.permutation_test(x, alternative=alternative, n_resamples=n_resamples, seed=seed)
    p = np.asarray(r.pvalue)
    assert np.all(p > 0) and np.all(p <= 1)
    assert np.all(p >= stats.smallest_pvalue(x.shape[0], n_resamples, alternative) - 1e-15)


@SETTINGS
@given(x=samples(min_n=3), shift=hs.floats(min_value=0.0, max_value=100.0, allow_subnormal=False),
       seed=hs.integers(0, 10))
def test_shifting_away_from_zero_never_raises_one_sided_p(x, shift, seed):
    for alternative, sign in (("greater", 1.0), ("less", -1.0)):
        p0 = stats.permutation_test(x, alternative=alternative, n_resamples=500, seed=seed).pvalue
        p1 = stats.permutation_test(x + sign * shift, alternative=alternative, n_resamples=500, seed=seed).pvalue
        assert np.all(np.asarray(p1) <= np.asarray(p0) + 1e-12)


@SETTINGS
@given(x=samples(min_n=4, max_n=30), seed=hs.integers(0, 100))
def test_singleton_clusters_in_prompt_order_are_the_plain_bootstrap(x, seed):
    plain = stats.bootstrap_ci(x, n_resamples=300, seed=seed)
    clus = stats.bootstrap_ci(x, n_resamples=300, seed=seed, clusters=np.arange(x.shape[0]))
    np.testing.assert_allclose(clus.low, plain.low, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(clus.high, plain.high, rtol=1e-9, atol=1e-9)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(n=hs.integers(8, 30), seed=hs.integers(0, 1000))
def test_singleton_clusters_with_shuffled_labels_equal_plain_bootstrap_in_distribution(n, seed):
    # labels in a random order resample the prompts in another order: the same distribution, other draws
    rng = np.random.default_rng(seed)
    x = rng.exponential(size=n)
    labels = rng.permutation(n) * 7 + 3
    B = 6000
    a = stats.bootstrap_distribution(x, n_resamples=B, seed=seed)
    b = stats.bootstrap_distribution(x, n_resamples=B, seed=seed + 1, clusters=labels)
    sd = a.std()
    assert abs(a.mean() - b.mean()) < 5 * sd * np.sqrt(2 / B)
    assert abs(b.std() / sd - 1) < 0.07
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(a, q) - np.quantile(b, q)) < 0.12 * sd


@SETTINGS
@given(x=samples(min_n=2, max_n=12))
def test_exact_two_sided_is_twice_the_smaller_one_sided(x):
    two = stats.permutation_test(x).pvalue
    g = stats.permutation_test(x, alternative="greater").pvalue
    le = stats.permutation_test(x, alternative="less").pvalue
    np.testing.assert_allclose(two, np.minimum(1, 2 * np.minimum(g, le)), atol=1e-12)


@SETTINGS
@given(x=samples(min_n=3, max_n=20), seed=hs.integers(0, 5))
def test_ci_contains_estimate_and_is_ordered(x, seed):
    ci = stats.bootstrap_ci(x, method="percentile", n_resamples=400, seed=seed)
    tol = 1e-9 * (1 + np.abs(x).max())
    assert np.all(ci.low <= ci.high + tol)
    assert np.all(np.isfinite(ci.low)) and np.all(np.isfinite(ci.high))
    assert np.all((ci.low >= x.min(axis=0) - tol) & (ci.high <= x.max(axis=0) + tol))
