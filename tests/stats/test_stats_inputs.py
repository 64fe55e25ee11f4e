"""Bad input gets a clear error naming the problem and the fix."""
import numpy as np
import pytest

from causalinterp import stats


@pytest.mark.parametrize("fn", [
    lambda x: stats.permutation_test(x), lambda x: stats.bootstrap_ci(x, n_resamples=10),
    lambda x: stats.tost(x, 0.1), lambda x: stats.effect_size(x), lambda x: stats.min_detectable_effect(x)])
@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "inf")])
def test_non_finite(fn, bad, word):
    x = np.arange(10.0).reshape(5, 2)
    x[3, 1] = bad
    with pytest.raises(ValueError, match=word) as exc:
        fn(x)
    assert "(3, 1)" in str(exc.value) and "Drop" in str(exc.value)


@pytest.mark.parametrize("fn", [lambda x: stats.permutation_test(x), lambda x: stats.bootstrap_ci(x),
                                lambda x: stats.tost(x, 0.1), lambda x: stats.effect_size(x)])
def test_too_few_observations(fn):
    with pytest.raises(ValueError, match="at least 2"):
        fn(np.array([1.0]))


def test_mismatched_shapes_name_both():
    with pytest.raises(ValueError, match=r"\(10, 3\).*\(10, 2\)"):
        stats.permutation_test(np.zeros((10, 3)), np.zeros((10, 2)))
    with pytest.raises(ValueError, match="prompts"):
        stats.recovery(np.zeros((10, 3)), np.ones(9), np.zeros(9))


def test_bad_options():
    x = np.random.default_rng(0).normal(size=10)
    with pytest.raises(ValueError, match="alternative"):
        stats.permutation_test(x, alternative="two_sided")
    with pytest.raises(ValueError, match="method"):
        stats.bootstrap_ci(x, method="bc")
    with pytest.raises(ValueError, match="confidence_level"):
        stats.bootstrap_ci(x, confidence_level=95)
    with pytest.raises(ValueError, match="n_resamples"):
        stats.permutation_test(x, n_resamples=0)
    with pytest.raises(ValueError, match="axis"):
        stats.permutation_test(x, axis=1)
    with pytest.raises(ValueError, match="scalar"):
        stats.permutation_test(3.0)


def test_bad_clusters():
    x = np.random.default_rng(0).normal(size=10)
    with pytest.raises(ValueError, match="one label per prompt"):
        stats.bootstrap_ci(x, clusters=np.arange(9))
    with pytest.raises(ValueError, match="at least 2 clusters"):
        stats.permutation_test(x, clusters=np.zeros(10))
    with pytest.raises(ValueError, match="mean"):
        stats.bootstrap_ci(x, statistic="median", clusters=np.arange(10))
