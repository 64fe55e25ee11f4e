"""The robust test of a mean: bootstrap-t against a direct loop, the max-p combination keeps the level on
skewed data where the sign-flip test alone does not, and the skewness rule asks for more units."""
import numpy as np
import pytest

from causalinterp import stats
from causalinterp.stats.bootstrap import _count_chunk
from causalinterp.stats.robust import _boot_t, bootstrap_t_test, cochran_n, robust_mean_test


def _loop_boot_t(x, B, seed, alternative):
    """Bootstrap-t written as the textbook loop over the same resample counts as `_boot_t`."""
    n = len(x)
    base = np.random.default_rng(int(np.random.default_rng(seed).integers(0, 2 ** 63 - 1)))
    c = _count_chunk(base, B, n)
    m, se = x.mean(), x.std(ddof=1) / np.sqrt(n)
    t = m / se
    cnt = 0
    for row in c:
        xb = np.repeat(x, row.astype(int))
        tb = (xb.mean() - m) / (xb.std(ddof=1) / np.sqrt(n))
        cnt += {"greater": tb >= t, "less": tb <= t, "two-sided": abs(tb) >= abs(t)}[alternative]
    return (cnt + 1) / (B + 1)


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_bootstrap_t_equals_a_direct_loop(alternative):
    x = np.random.default_rng(0).lognormal(0, 1, 15) - 1.4
    B = 400
    p = _boot_t(x[:, None], n_resamples=B, rng=np.random.default_rng(7)).pvalue(alternative)[0]
    assert abs(p - _loop_boot_t(x, B, 7, alternative)) < 1e-12


def test_clustered_with_singleton_clusters_is_the_plain_bootstrap_t():
    x = np.random.default_rng(1).normal(0.3, 1, (12, 4))
    a = bootstrap_t_test(x, n_resamples=499, seed=4)
    b = bootstrap_t_test(x, n_resamples=499, seed=4, clusters=np.arange(12))
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_robust_p_is_the_larger_of_the_two():
    x = np.random.default_rng(2).normal(0.4, 1, (20, 30))
    r = robust_mean_test(x, alternative="greater", n_resamples=999, seed=3)
    np.testing.assert_array_equal(r.pvalue, np.maximum(r.pvalue_signflip, r.pvalue_bootstrap_t))


def test_level_on_skewed_nulls_where_sign_flip_fails():
    # per-prompt differences with a long left tail and mean exactly 0; "greater" is the dangerous side
    rng = np.random.default_rng(3)
    x = -(rng.lognormal(0, 1.0, (40, 3000)) - np.exp(0.5))
    sf = stats.permutation_test(x, alternative="greater", n_resamples=999, seed=1).pvalue
    r = robust_mean_test(x, alternative="greater", n_resamples=999, seed=1)
    decided = (r.pvalue < 0.05) & r.reliable
    assert np.mean(sf < 0.05) > 0.08                      # the sign-flip test alone is anti-conservative here
    assert np.mean(decided) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 3000)


def test_symmetric_data_lose_little_power():
    rng = np.random.default_rng(4)
    x = rng.normal(0.6, 1, (20, 3000))
    sf = stats.permutation_test(x, alternative="greater", n_resamples=999, seed=1).pvalue
    r = robust_mean_test(x, alternative="greater", n_resamples=999, seed=1)
    assert np.mean(sf < 0.05) - np.mean((r.pvalue < 0.05) & r.reliable) < 0.05


def test_cochran_rule_ignores_noise_level_skewness_and_only_the_dangerous_side():
    assert cochran_n(0.5 * np.sqrt(6 / 20), 20) == 0
    assert cochran_n(2.0, 20) > 20
    x = np.r_[np.full(19, 1.0), -10.0][:, None]          # long left tail
    r = robust_mean_test(x, alternative="greater", n_resamples=199, seed=0)
    assert not r.reliable and r.n_reliable > 20
    assert robust_mean_test(x, alternative="less", n_resamples=199, seed=0).reliable


def test_speed_smoke():
    x = np.random.default_rng(5).normal(0, 1, (50, 200))
    r = robust_mean_test(x, n_resamples=999, seed=0)
    assert r.pvalue.shape == (200,)
