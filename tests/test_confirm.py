"""ci.confirm: exact values for the top and audited sites, and audit bounds whose coverage holds (simulation)."""
import numpy as np
import pytest
from scipy import stats as st

import causalinterp as ci
from causalinterp.spec.sites import ALL
from causalinterp.stats.audit import audit_bound

from conftest import build_hf, random_data


@pytest.mark.parametrize("n_rest,n_audited", [(60, 15), (40, 40), (25, 4)])
def test_audit_bounds_cover_at_least_nominal_by_simulation(n_rest, n_audited):
    """Random audits of a population with K sites above threshold: the bounds hold in >= 95% of draws."""
    rng = np.random.default_rng(0)
    n_sim, conf = 2000, 0.95
    bounds = [audit_bound(n_rest, n_audited, x, conf) for x in range(n_audited + 1)]   # a bound depends on x only
    for K in sorted({0, 1, 3, n_rest // 4, n_rest // 2, n_rest - 1}):
        population = np.zeros(n_rest, dtype=bool)
        population[:K] = True
        cover_count = cover_frac = 0
        for _ in range(n_sim):
            found = int(population[rng.choice(n_rest, size=n_audited, replace=False)].sum())
            b = bounds[found]
            cover_count += K <= b.count_upper
            cover_frac += K / n_rest <= b.fraction_upper + 1e-12
        slack = 3 * np.sqrt(conf * (1 - conf) / n_sim)     # Monte Carlo error
        assert cover_count / n_sim >= conf - slack, (K, cover_count / n_sim)
        assert cover_frac / n_sim >= conf - slack, (K, cover_frac / n_sim)
        # and exactly, from the hypergeometric distribution of what the audit finds
        x = np.arange(n_audited + 1)
        pmf = st.hypergeom.pmf(x, n_rest, K, n_audited)
        covered = np.array([K <= bounds[v].count_upper for v in x])
        assert pmf[covered].sum() >= conf - 1e-12


def test_audit_bound_is_the_one_sided_clopper_pearson_bound():
    for m, x in [(20, 0), (20, 3), (7, 7), (50, 12)]:
        b = audit_bound(100, m, x, 0.9)
        expected = 1.0 if x == m else st.beta.ppf(0.9, x + 1, m - x)
        assert b.fraction_upper == pytest.approx(expected, rel=1e-9)
    assert audit_bound(30, 30, 4).count_upper == 4        # everything audited: the count is known
    assert audit_bound(30, 0, 0).count_upper == 30        # nothing audited: nothing is known
    with pytest.raises(ValueError, match="found"):
        audit_bound(10, 3, 4)


def test_confirm_patches_the_top_and_a_random_audit_exactly():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=6, T=5)
    sites = ci.sites.head_out(positions=[-1, ALL])
    exact_all = ci.scan(model, data, sites, progress=False)
    est = ci.screen(model, data, sites, method="atp*")
    threshold = 0.02
    conf = ci.confirm(est, model, data, top_k=4, audit=5, threshold=threshold, seed=3)
    score = np.abs((est.values - est.base[:, None]).mean(0))
    score = np.maximum(score, est.meta["magnitude"].mean(0))
    top = [est.sites[i] for i in np.argsort(-score, kind="stable")[:4]]
    assert list(conf.top.sites) == top and conf.roles == ("top",) * 4 + ("audit",) * 5
    audited = conf.exact.sites[4:]
    assert not set(audited) & set(top) and len(set(audited)) == 5
    col = {s: j for j, s in enumerate(exact_all.sites)}
    np.testing.assert_allclose(conf.exact.values, exact_all.values[:, [col[s] for s in conf.exact.sites]], atol=1e-6)
    effect = np.abs((exact_all.values - exact_all.base[:, None]).mean(0))
    assert conf.bound.found == sum(effect[col[s]] > threshold for s in audited)
    assert conf.bound.n_rest == len(est.sites) - 4
    # claims are made on exact values only
    ev = conf.evaluate(ci.claims.has_effect(), n_resamples=199)
    assert len(ev.table) == 4 and not any(r.startswith("ESTIMATE") for r in ev.reasons)
    frame = conf.to_frame()
    assert (frame["role"] == "unconfirmed").sum() == len(est.sites) - 9
    assert frame.loc[frame["role"] == "unconfirmed", "exact"].isna().all()
    text = conf.report()
    assert "estimates" in text and "Spearman" in text and "at most" in text
    assert conf.cost["exact"] == 9 + 2 and conf.cost["exact_sweep"] == len(est.sites) + 2


def test_confirm_refuses_exact_effects_and_bad_arguments():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=4, T=5)
    sites = ci.sites.head_out(positions=-1)
    exact = ci.scan(model, data, sites, progress=False)
    with pytest.raises(ci.ScanError, match="exact already"):
        ci.confirm(exact, model, data, top_k=2, audit=2, threshold=0.1)
    est = ci.screen(model, data, sites, method="atp")
    with pytest.raises(ci.ScanError, match="threshold"):
        ci.confirm(est, model, data, top_k=2, audit=2, threshold=-1)
    with pytest.raises(ci.ScanError, match="top_k"):
        ci.confirm(est, model, data, top_k=-1, audit=2, threshold=0.1)


def test_confirm_on_held_out_prompts():
    """Screen on one half, confirm on the other: the exact values are the held-out prompts' own."""
    model = ci.load_model(build_hf("llama"))
    data = random_data(n=8, T=5)
    discovery, held_out = data.split(0.5, seed=1)
    sites = ci.sites.head_out(positions=[-1, 2])
    est = ci.screen(model, discovery, sites, method="atp")
    conf = ci.confirm(est, model, held_out, top_k=3, audit=2, threshold=0.01)
    exact = ci.scan(model, held_out, ci.sites.explicit(list(conf.exact.sites)), progress=False)
    assert conf.exact.n_prompts == held_out.n
    np.testing.assert_allclose(conf.exact.values, exact.values, atol=1e-6)
