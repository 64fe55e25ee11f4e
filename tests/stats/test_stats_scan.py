"""A scan of 1,000 sites is one vectorised family: error control and speed."""
import time

import numpy as np
import pytest

from causalinterp.engine.effects import Effects
from causalinterp.evaluate import evaluate
from causalinterp.spec import claims
from causalinterp.spec.sites import Site


def scan_effects(n, m, n_true, seed=0):
    rng = np.random.default_rng(seed)
    corrupt = rng.normal(0, 1, n)
    clean = corrupt + 2.0 + rng.normal(0, 0.3, n)
    values = corrupt[:, None] + rng.normal(0, 1, (n, m))
    values[:, :n_true] += 0.8
    sites = tuple(Site("head_out", j // 25, j % 25) for j in range(m))
    return Effects(values=values, clean=clean, corrupt=corrupt, sites=sites, base=corrupt, target=clean)


def test_fdr_scan_finds_true_sites_and_few_false_ones():
    eff = scan_effects(n=60, m=1000, n_true=50)
    res = evaluate(eff, claims.has_effect(), correction="fdr_bh", n_resamples=1999)
    supported = res.table["verdict"].to_numpy() == "supported"
    true = np.arange(1000) < 50
    assert supported[true].mean() > 0.8                     # power against a 0.8 sd effect at n=60
    false = (supported & ~true).sum()
    assert false / max(1, supported.sum()) < 0.2            # BH at 0.05; loose bound for one simulation
    assert len(res.table) == 1000 and res.verdict == "inconclusive"


def test_holm_scan_with_default_resamples_explains_the_resolution_limit():
    eff = scan_effects(n=40, m=1000, n_true=50, seed=1)
    res = evaluate(eff, claims.has_effect(), n_resamples=9999)
    assert (res.table["flag"] == "underpowered").sum() == 1000 - (res.table["verdict"] == "null").sum()
    assert any("n_resamples >= 200000" in r for r in res.reasons)


@pytest.mark.slow
def test_full_size_scan_evaluates_in_seconds():
    eff = scan_effects(n=200, m=1000, n_true=50)
    t0 = time.perf_counter()
    res = evaluate(eff, claims.recovers(0.5), n_resamples=9999)
    assert time.perf_counter() - t0 < 20      # ~2 s on 2 cores; generous for shared machines
    assert len(res.table) == 1000
