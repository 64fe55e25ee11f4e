"""Stability of discovery: selection frequencies and Jaccard similarities, on known answers."""
import numpy as np
import pytest

import causalinterp as ci
from causalinterp.spec.sites import Site
from causalinterp.stability import StabilityError, by_claim, top_k

from conftest import random_data

A, B = Site("head_out", 0, 1), Site("mlp_out", 1)


def test_frequencies_and_jaccard_follow_the_resamples():
    data = random_data(n=12, T=4)
    first = tuple(data.clean[0])
    discover = lambda d: [A] + ([B] if first in set(map(tuple, d.clean)) else [])  # noqa: E731
    st = ci.stability(discover, data, n_resamples=20, seed=3)
    with_b = np.array([0 in s for s in st.samples])
    assert 0 < with_b.mean() < 1                                     # the test can tell
    assert st.frequency[A.label] == 1.0 and st.frequency[B.label] == pytest.approx(with_b.mean())
    pairs = [(i, j) for i in range(20) for j in range(i + 1, 20)]
    expect = [1.0 if with_b[i] == with_b[j] else 0.5 for i, j in pairs]
    np.testing.assert_allclose(st.jaccard, expect)
    np.testing.assert_allclose(st.to_full, np.where(with_b, 1.0, 0.5))   # the full data contains prompt 0
    assert all(len(s) == 6 for s in st.samples)                     # half of the prompts, without replacement
    boot = ci.stability(discover, data, n_resamples=10, method="bootstrap", seed=1)
    assert all(len(set(s)) == len(s) <= 12 for s in boot.samples)


def test_clusters_are_resampled_whole():
    data = random_data(n=12, T=4)
    from dataclasses import replace
    data = replace(data, clusters=tuple(i // 3 for i in range(12)))
    st = ci.stability(lambda d: [A], data, n_resamples=5)
    assert st.by == "cluster"
    for s in st.samples:
        assert {i // 3 for i in s} and all(set(range(3 * (i // 3), 3 * (i // 3) + 3)) <= set(s) for i in s)


def test_induction_discovery_is_stable_and_finds_the_known_heads():
    model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(32, seed=1)
    heads = ci.sites.head_out(positions="all")
    discover = by_claim(model, heads, ci.claims.has_effect(direction="decrease"), intervention=ci.ablate("mean"),
                        n_resamples=499)
    st = ci.stability(discover, data, n_resamples=4)
    assert st.full == {"head_out L0.H1 @all", "head_out L1.H2 @all"}
    assert st.frequency["head_out L0.H1 @all"] == 1.0 and st.frequency["head_out L1.H2 @all"] == 1.0
    assert np.all(st.jaccard == 1.0)
    top = ci.stability(top_k(model, heads, 2, intervention=ci.ablate("mean")), data, n_resamples=3)
    assert top.full == st.full


def test_bad_requests_are_refused():
    data = random_data(n=3, T=4)
    with pytest.raises(StabilityError, match="at least 4"):
        ci.stability(lambda d: [A], data)
    with pytest.raises(StabilityError, match="method"):
        ci.stability(lambda d: [A], random_data(n=8, T=4), method="jackknife")
    with pytest.raises(StabilityError, match="Circuit or Sites"):
        ci.stability(lambda d: ["head 1"], random_data(n=8, T=4), n_resamples=2)


def test_edge_discovery_stability_on_the_induction_testbed():
    """Discovering edges (the top 11 single-edge ablations, 10% of the 110 edges) on half-samples: the previous-token
    head's edge into the induction head's keys is found every time, its edge into the queries never."""
    from causalinterp.circuits import edge_universe
    model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(32, seed=1)
    edges = ci.sites.paths(edge_universe(model))
    st = ci.stability(top_k(model, edges, 11, intervention=ci.ablate("mean")), data, n_resamples=4)
    key = "path(head_out L0.H1 @all -> k L1.H2 @all)"
    assert key in st.full and st.frequency[key] == 1.0
    assert "path(head_out L0.H1 @all -> q L1.H2 @all)" not in st.frequency.index
    assert len(st.full) == 11 and 0 < st.jaccard.min() <= st.jaccard.max() <= 1
