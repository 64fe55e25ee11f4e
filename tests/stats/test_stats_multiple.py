"""Multiple-comparison correction equals statsmodels' multipletests."""
import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from causalinterp import stats


@pytest.mark.parametrize("method", ["holm", "fdr_bh", "bonferroni", "fdr_by", "hommel"])
def test_equals_statsmodels(method):
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 0.01, size=10), [0.02, 0.02, 1.0, 0.0]])
    np.testing.assert_allclose(stats.adjust_pvalues(p, method), multipletests(p, method=method)[1], rtol=1e-12)


@pytest.mark.parametrize("method", ["holm", "fdr_bh", "bonferroni"])
def test_equals_statsmodels_large_family_with_ties(method):
    # Monte Carlo permutation p-values are multiples of 1/(B+1): many exact ties
    rng = np.random.default_rng(2)
    p = rng.integers(1, 60, size=1000) / 10000
    p[:100] = rng.uniform(size=100)
    np.testing.assert_allclose(stats.adjust_pvalues(p, method), multipletests(p, method=method)[1], rtol=1e-12)


def test_shape_is_kept_and_whole_array_is_one_family():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=(6, 5))
    adj = stats.adjust_pvalues(p, "holm")
    assert adj.shape == (6, 5)
    np.testing.assert_allclose(adj.ravel(), multipletests(p.ravel(), method="holm")[1])


def test_none_and_single():
    p = np.array([0.01, 0.2])
    np.testing.assert_array_equal(stats.adjust_pvalues(p, "none"), p)
    assert stats.adjust_pvalues([0.03], "holm")[0] == 0.03
    assert stats.adjust_pvalues(0.03, "bonferroni") == 0.03


@pytest.mark.parametrize("bad, match", [([0.1, np.nan], "NaN"), ([0.1, 1.5], r"\[0, 1\]"), ([-0.1], r"\[0, 1\]")])
def test_bad_pvalues(bad, match):
    with pytest.raises(ValueError, match=match):
        stats.adjust_pvalues(bad)


def test_unknown_method_names_choices():
    with pytest.raises(ValueError, match="holm"):
        stats.adjust_pvalues([0.1, 0.2], "BH")
