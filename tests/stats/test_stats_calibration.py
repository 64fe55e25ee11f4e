"""Calibration by simulation, each vectorised in one call (datasets are the columns)."""
import numpy as np
import pytest

from causalinterp import stats


@pytest.mark.parametrize("alternative", ["two-sided", "greater"])
def test_permutation_type_one_error_heavy_tails(alternative):
    # 8000 null datasets of n=20 from a t(2) distribution (heavy tails, symmetric about 0)
    rng = np.random.default_rng(2024)
    x = rng.standard_t(2, size=(20, 8000))
    r = stats.permutation_test(x, alternative=alternative, n_resamples=999, seed=1)
    rate = np.mean(r.pvalue <= 0.05)
    assert 0.04 <= rate <= 0.06
    assert np.all((r.pvalue > 0) & (r.pvalue <= 1))


def test_permutation_type_one_error_exact_small_n():
    # n=10 -> exact enumeration; continuous symmetric data: P(p <= k/1024) = k/1024 exactly
    rng = np.random.default_rng(7)
    x = rng.laplace(size=(10, 6000))
    r = stats.permutation_test(x, alternative="greater", n_resamples=9999)
    assert r.exact
    rate = np.mean(r.pvalue <= 51 / 1024)
    assert abs(rate - 51 / 1024) < 0.01


def test_bca_coverage_normal_n50():
    rng = np.random.default_rng(11)
    mu = 1.5
    x = rng.normal(mu, 2.0, size=(50, 4000))
    ci = stats.bootstrap_ci(x, n_resamples=1999, seed=3)
    coverage = np.mean((ci.low <= mu) & (mu <= ci.high))
    assert 0.925 <= coverage <= 0.965


def test_recovery_ci_coverage():
    # the ratio of population means is known: (mean patched - mean corrupt)/(mean clean - mean corrupt) = 0.4
    rng = np.random.default_rng(12)
    n, sims = 60, 3000
    gap = rng.normal(2.0, 1.0, (n, sims))
    eff = 0.4 * gap + rng.normal(0, 0.8, (n, sims))
    # one simulated dataset per column: clean/corrupt given per column (same shape as patched)
    r = stats.recovery(eff, gap, np.zeros((n, sims)), n_resamples=1999, seed=0)
    coverage = np.mean((r.low <= 0.4) & (0.4 <= r.high))
    assert 0.925 <= coverage <= 0.965


def test_tost_type_one_error_at_the_margin():
    # true mean exactly at the margin: equivalence must be claimed at most alpha of the time
    rng = np.random.default_rng(13)
    alpha, sims = 0.05, 20000
    for margin, sd in ((0.5, 1.0), (0.2, 1.0), (1.0, 0.5)):
        x = rng.normal(margin, sd, size=(20, sims))
        rate = np.mean(stats.tost(x, margin, alpha=alpha).pvalue < alpha)
        assert rate <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / sims)   # <= alpha up to simulation error


def test_cluster_bootstrap_restores_coverage_under_clustering():
    # 15 templates x 8 prompts with a strong template effect: prompts are not independent
    rng = np.random.default_rng(14)
    g, k, sims = 15, 8, 3000
    labels = np.repeat(np.arange(g), k)
    x = rng.normal(0, 1.0, (g, sims))[labels] + rng.normal(0, 0.5, (g * k, sims))
    naive = stats.bootstrap_ci(x, method="percentile", n_resamples=999, seed=0)
    clus = stats.bootstrap_ci(x, method="percentile", n_resamples=999, seed=0, clusters=labels)
    cov_naive = np.mean((naive.low <= 0) & (0 <= naive.high))
    cov_clus = np.mean((clus.low <= 0) & (0 <= clus.high))
    assert cov_naive < 0.75
    assert 0.88 <= cov_clus <= 0.97
