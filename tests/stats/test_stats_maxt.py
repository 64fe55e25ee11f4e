"""Westfall-Young maxT: equals the sign-flip test for one site, a brute-force reference for many, controls the
family-wise error on correlated heavy-tailed sites, and rescues large Holm scans at B = 999."""
import itertools

import numpy as np
import pytest

from causalinterp import stats
from causalinterp.engine.effects import Effects
from causalinterp.evaluate import evaluate
from causalinterp.spec import claims
from causalinterp.spec.sites import Site
from causalinterp.stats.multiple import check_correction

ALTS = ["two-sided", "greater", "less"]


def _reference_exact(x, alternative, step_down=True):
    """Brute-force maxT over all 2**n sign patterns (continuous data: no ties), written from the textbook
    definition (Westfall & Young 1993, algorithm 2.8): for each site, the maximum over the sites whose observed
    statistic is not larger (step-down; all sites for single-step), then a running maximum along the ranking."""
    n, k = x.shape
    signs = np.array(list(itertools.product([1.0, -1.0], repeat=n)))          # [2**n, n], identity first
    flipped = signs[:, :, None] * x[None]                                       # [2**n, n, k]
    t = flipped.mean(axis=1) / flipped.std(axis=1, ddof=1) * np.sqrt(n)         # [2**n, k]
    stat = {"greater": t, "less": -t, "two-sided": np.abs(t)}[alternative]
    obs = stat[0]
    raw = np.empty(k)
    for j in range(k):
        below = [i for i in range(k) if obs[i] <= obs[j]] if step_down else list(range(k))
        raw[j] = np.mean(stat[:, below].max(axis=1) >= obs[j] - 1e-9)
    if not step_down:
        return raw
    order = np.argsort(-obs)
    out = np.empty(k)
    out[order] = np.maximum.accumulate(raw[order])
    return out


# ----------------------------------------------------------------------------- (a) exactness

@pytest.mark.parametrize("alternative", ALTS)
def test_one_site_equals_the_sign_flip_test(alternative):
    rng = np.random.default_rng(0)
    for x in (rng.standard_normal(11) + 0.6, rng.integers(-2, 4, size=12).astype(float)):   # continuous, ties
        p = stats.maxt_pvalues(x, alternative=alternative)
        ref = stats.permutation_test(x, alternative=alternative)
        assert ref.exact and np.ndim(p) == 0
        assert abs(p - ref.pvalue) <= 1e-12
    # Monte Carlo: the same seed draws the same sign patterns
    x = rng.standard_normal(40) + 0.3
    p = stats.maxt_pvalues(x, alternative=alternative, n_resamples=999, seed=5)
    assert abs(p - stats.permutation_test(x, alternative=alternative, n_resamples=999, seed=5).pvalue) <= 1e-12


@pytest.mark.parametrize("alternative", ALTS)
def test_exact_equals_brute_force_reference(alternative):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 6)) * rng.uniform(0.3, 3, 6) + np.array([0, 0.2, 0.5, 1.0, -1.0, 2.0])
    x[:, 1] += 0.8 * x[:, 0]                                                     # correlated sites
    p = stats.maxt_pvalues(x, alternative=alternative, n_resamples=2 ** 9)
    np.testing.assert_allclose(p, _reference_exact(x, alternative), rtol=0, atol=1e-12)
    # step-down never exceeds single-step, and the most significant site gets the single-step p
    single = _reference_exact(x, alternative, step_down=False)
    assert np.all(p <= single + 1e-12)
    top = np.argmin(single)
    assert abs(p[top] - single[top]) <= 1e-12


# ----------------------------------------------------------------------------- (b) bounds

@pytest.mark.parametrize("alternative", ALTS)
def test_between_unadjusted_and_bonferroni(alternative):
    rng = np.random.default_rng(2)
    for rep in range(20):
        n, m = 10, 12
        x = rng.standard_normal((n, m)) * rng.uniform(0.2, 3, m) + rng.normal(0, 0.7, m)
        p_adj = stats.maxt_pvalues(x, alternative=alternative, n_resamples=1024)
        p = stats.permutation_test(x, alternative=alternative, n_resamples=1024).pvalue
        assert np.all(p_adj >= p - 1e-12)
        # Monte Carlo, same seed: the same sign patterns, so the bound holds resample by resample
        p_adj = stats.maxt_pvalues(x[:, :5], alternative=alternative, n_resamples=199, seed=rep)
        p = stats.permutation_test(x[:, :5], alternative=alternative, n_resamples=199, seed=rep).pvalue
        assert np.all(p_adj >= p - 1e-12)
        # sites sharing one sign-flip null (same |values|, own order, signs and scale): by the union bound,
        # exact maxT is never more conservative than Bonferroni
        a = np.abs(rng.standard_t(3, n))
        y = np.stack([rng.permutation(a) * rng.choice([-1.0, 1.0], n) * rng.uniform(0.1, 10) for _ in range(m)], 1)
        y[:, :3] = np.abs(y[:, :3])                                              # a few strong sites
        p_adj = stats.maxt_pvalues(y, alternative=alternative, n_resamples=1024)
        p = stats.permutation_test(y, alternative=alternative, n_resamples=1024).pvalue
        assert np.all(p_adj <= np.minimum(1.0, m * p) + 1e-12)


def test_not_always_below_bonferroni_when_null_distributions_differ():
    # documented limit of maxT: a site whose sum one prompt dominates has a light-tailed null t (|t| <~ 1.3),
    # so its extreme observed t is beaten by the other site's null maxima more often than m * p
    x = np.column_stack([[100.0] + [1.0] * 9, np.random.default_rng(3).standard_normal(10)])
    p_adj = stats.maxt_pvalues(x, alternative="greater", n_resamples=1024)
    p = stats.permutation_test(x, alternative="greater").pvalue
    assert p[0] == 1 / 1024 and p_adj[0] > 2 * p[0]


# ----------------------------------------------------------------------------- (c) family-wise error

def test_family_wise_error_correlated_heavy_tailed_sites():
    # 2000 null datasets: 20 prompts x 20 sites sharing a prompt factor, t(3) noise (symmetric rows)
    rng = np.random.default_rng(2024)
    D, n, m, B, alpha = 2000, 20, 20, 999, 0.05
    x = 0.8 * rng.standard_t(3, (D, n, 1)) + rng.standard_t(3, (D, n, m))
    p_min = np.array([stats.maxt_pvalues(x[i], n_resamples=B, seed=i).min() for i in range(D)])
    fwer = np.mean(p_min < alpha)
    expected = 49 / 1000                   # P((1 + c)/(B + 1) < 0.05) = P(c <= 48) = 49/1000, exactly
    se = np.sqrt(expected * (1 - expected) / D)
    assert abs(fwer - expected) <= 3 * se, fwer


# ----------------------------------------------------------------------------- (d) the point of it

def test_maxt_finds_sites_that_holm_cannot_at_999_resamples():
    rng = np.random.default_rng(0)
    n, m = 30, 500
    corrupt = rng.normal(0, 1, n)
    clean = corrupt + 2.0 + rng.normal(0, 0.3, n)
    values = corrupt[:, None] + rng.normal(0, 1, (n, m))
    values[:, :5] += 2.0
    eff = Effects(values=values, clean=clean, corrupt=corrupt, sites=tuple(Site("head_out", j // 25, j % 25)
                  for j in range(m)), base=corrupt, target=clean)
    truth = np.arange(m) < 5
    mx = evaluate(eff, claims.has_effect(), correction="maxT", n_resamples=999)
    assert mx.correction == "maxT"
    np.testing.assert_array_equal(mx.table["verdict"].to_numpy() == "supported", truth)
    assert (mx.table["p_adj"] >= mx.table["p"]).all()
    assert not any("underpowered" in r for r in mx.reasons)
    holm = evaluate(eff, claims.has_effect(), correction="holm", n_resamples=999)
    assert (holm.table["verdict"] != "supported").all()
    assert (holm.table["flag"] == "underpowered").all()
    assert any("correction='maxT'" in r and "n_resamples >= 100000" in r for r in holm.reasons)
    # recovers is a sign-flip test too
    rec = evaluate(eff, claims.recovers(0.5), correction="maxT", n_resamples=999)
    np.testing.assert_array_equal(rec.table["verdict"].to_numpy() == "supported", truth)


def test_no_effect_falls_back_to_holm_and_says_so():
    rng = np.random.default_rng(1)
    corrupt = rng.normal(0, 1, 20)
    clean = corrupt + 2.0
    eff = Effects(values=corrupt[:, None] + rng.normal(0, 0.01, (20, 3)), clean=clean, corrupt=corrupt,
                  sites=tuple(Site("head_out", 0, h) for h in range(3)), base=corrupt, target=clean)
    res = evaluate(eff, claims.no_effect(0.1), correction="maxT", n_resamples=99)
    ref = evaluate(eff, claims.no_effect(0.1), correction="holm", n_resamples=99)
    assert res.correction == "holm" and res.verdict == ref.verdict == "supported"
    assert any("holm used instead" in r for r in res.reasons)
    np.testing.assert_array_equal(res.table["p_adj"], ref.table["p_adj"])


def test_correction_names():
    assert check_correction("maxT") == check_correction("maxt") == "maxT"
    with pytest.raises(ValueError, match="maxt_pvalues"):
        stats.adjust_pvalues([0.01, 0.2], "maxT")
    with pytest.raises(ValueError, match="maxT"):
        check_correction("max-t")


# ----------------------------------------------------------------------------- (e) clusters

def test_clusters():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((24, 7)) + 0.4
    # singleton clusters (labelled in prompt order): the same units and random draws as no clusters
    a = stats.maxt_pvalues(x, n_resamples=999, seed=3, clusters=np.arange(24) * 10)
    np.testing.assert_array_equal(a, stats.maxt_pvalues(x, n_resamples=999, seed=3))
    # 8 templates of 3 prompts: exact over 2**8 cluster patterns; one site equals the clustered sign-flip test
    labels = np.repeat(np.arange(8), 3)
    p = stats.maxt_pvalues(x, clusters=labels, n_resamples=9999)
    assert p.shape == (7,) and np.all((p >= 1 / 256) & (p <= 1))
    one = stats.maxt_pvalues(x[:, 2], clusters=labels, alternative="greater")
    assert abs(one - stats.permutation_test(x[:, 2], clusters=labels, alternative="greater").pvalue) <= 1e-12


# ----------------------------------------------------------------------------- (f) determinism, edge cases

def test_deterministic_and_independent_of_chunking():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 30, 4))                                          # prompts on axis 1
    a = stats.maxt_pvalues(x, axis=1, n_resamples=499, seed=11)
    assert a.shape == (3, 4)
    np.testing.assert_array_equal(a, stats.maxt_pvalues(x, axis=1, n_resamples=499, seed=11))
    np.testing.assert_array_equal(a, stats.maxt_pvalues(x, axis=1, n_resamples=499, seed=11, max_memory=5000))
    assert not np.array_equal(a, stats.maxt_pvalues(x, axis=1, n_resamples=499, seed=12))


@pytest.mark.parametrize("alternative", ALTS)
def test_zero_variance_sites(alternative):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((12, 4))
    x[:, 0] = 0.0                      # t = 0
    x[:, 1] = 0.7 if alternative != "less" else -0.7    # constant: largest t, reached by the identity pattern only
    p = stats.maxt_pvalues(x, alternative=alternative, n_resamples=9999)
    assert np.all(np.isfinite(p))
    assert p[0] == 1.0
    assert p[1] == stats.smallest_pvalue(12, 9999, alternative)
    if alternative == "two-sided":      # |t| = 0 under every pattern: an all-zero site cannot raise a maximum
        with_zero = stats.maxt_pvalues(x[:, [0, 2, 3]], n_resamples=9999)
        np.testing.assert_array_equal(with_zero[1:], stats.maxt_pvalues(x[:, [2, 3]], n_resamples=9999))


def test_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        stats.maxt_pvalues(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="alternative"):
        stats.maxt_pvalues(np.ones((5, 2)), alternative="two_sided")
