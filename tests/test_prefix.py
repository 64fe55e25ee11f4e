"""scan(..., reuse_prefix=True): exact against one-prompt-at-a-time torch hooks, for every site kind and family.

Passes start at the first patched position with the base run's key/value cache for the prefix
(causalinterp/engine/prefix.py); the references run whole prompts through plain hooks (tests/reference.py).
"""
import numpy as np
import pytest
import torch

import causalinterp as ci
from causalinterp.engine import prefix
from causalinterp.spec.sites import ALL, Site

from conftest import build_hf, random_data
from shared_models import shared_model
from test_engine import TOL, components_of, reference


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_prefix_reuse_matches_hooks_for_every_component(family):
    hf = build_hf(family)
    model = ci.load_model(hf)
    data = random_data(n=4, T=6)
    for comp in components_of(family):
        if comp in ("head_out", "q", "k", "v"):
            sites = ci.sites.heads([(0, 1), (1, 3)], positions=[0, 2, -1, ALL], component=comp)
        else:
            sites = getattr(ci.sites, comp)(layers=None, positions=[0, 3, -1, ALL])
        eff = ci.scan(model, data, sites, progress=False, reuse_prefix=True, batch_size=7)
        assert eff.meta["reuse_prefix"]
        np.testing.assert_allclose(eff.values, reference(hf, data, eff.sites), atol=TOL, err_msg=f"{family} {comp}")
        assert np.abs(eff.values - eff.corrupt[:, None]).max() > 1e-3, comp


def test_prefix_reuse_with_prompts_of_different_lengths_and_named_positions():
    hf = build_hf("llama")                                   # GQA: 4 query heads share 2 key/value groups
    model = ci.load_model(hf)
    g = torch.Generator().manual_seed(5)
    lens = [4, 7, 5, 7]
    clean = [torch.randint(1, 64, (L,), generator=g).tolist() for L in lens]
    corrupt = [torch.randint(1, 64, (L,), generator=g).tolist() for L in lens]
    data = ci.ContrastSet.from_tokens(clean, corrupt, answer=[3, 4, 5, 9], wrong=[6, 7, 8, 10],
                                      positions={"S": [1, 4, 2, 3]})
    sites = ci.sites.explicit([Site("k", 1, 3, "S"), Site("v", 0, 2, "S"), Site("q", 1, 1, "end"),
                               Site("resid_pre", 1, None, 0), Site("head_out", 0, 0, "S"), Site("mlp_out", 1, None, "end")])
    eff = ci.scan(model, data, sites, progress=False, reuse_prefix=True, batch_size=5)
    np.testing.assert_allclose(eff.values, reference(hf, data, eff.sites), atol=TOL)


@pytest.mark.parametrize("kind", ["noise", "zero", "mean", "resample"])
def test_prefix_reuse_for_noising_and_ablations(kind):
    hf = build_hf("gpt2")
    model = ci.load_model(hf)
    data = random_data(n=2 if kind == "resample" else 4, T=6)
    sites = ci.sites.explicit([Site("resid_pre", 1, None, 2), Site("head_out", 0, 2, -1), Site("k", 1, 0, 1),
                               Site("mlp_out", 0, None, 4)])
    intervention = ci.patch("noise") if kind == "noise" else ci.ablate(kind, seed=3)
    eff = ci.scan(model, data, sites, intervention=intervention, progress=False, reuse_prefix=True)
    plain = ci.scan(model, data, sites, intervention=intervention, progress=False)
    np.testing.assert_allclose(eff.values, plain.values, atol=TOL)
    if kind != "resample":
        np.testing.assert_allclose(eff.values, reference(hf, data, eff.sites, kind=kind), atol=TOL)


def test_prefix_reuse_for_joint_columns_random_sets_and_sites_after_the_read_position():
    hf = build_hf("gpt_neox")
    model = ci.load_model(hf)
    data = random_data(n=4, T=6)
    sites = ci.sites.explicit([Site("head_out", 0, 1, 4), Site("head_out", 1, 2, 1), Site("resid_pre", 1, None, 3)])
    eff = ci.scan(model, data, sites, joint=True, n_random=3, progress=False, reuse_prefix=True)
    plain = ci.scan(model, data, sites, joint=True, n_random=3, progress=False)
    np.testing.assert_allclose(eff.values, reference(hf, data, eff.sites, joint=True), atol=TOL)
    np.testing.assert_allclose(eff.random_values, plain.random_values, atol=TOL)
    # the metric reads position 2: a patch at position 4 cannot change it, one at 1 can
    early = ci.scan(model, data, sites, metric=ci.metrics.logit_diff(position=2), progress=False, reuse_prefix=True)
    early_plain = ci.scan(model, data, sites, metric=ci.metrics.logit_diff(position=2), progress=False)
    np.testing.assert_allclose(early.values, early_plain.values, atol=TOL)
    np.testing.assert_allclose(early.values[:, 0], early.base, atol=1e-6)


def test_prefix_reuse_with_an_embedding_noise_base_run():
    hf = build_hf("gpt2")
    model = ci.load_model(hf)
    data = random_data(n=4, T=6).with_noise(ci.EmbeddingNoise(positions=[1, 2], scale=3.0))
    sites = ci.sites.resid_pre(positions=[0, 2, 4])
    eff = ci.scan(model, data, sites, progress=False, reuse_prefix=True)
    plain = ci.scan(model, data, sites, progress=False)
    np.testing.assert_allclose(eff.values, plain.values, atol=TOL)


def test_prefix_reuse_is_refused_only_where_it_would_be_wrong():
    assert prefix.supported(ci.load_model(build_hf("gpt2")))
    hf = build_hf("llama")
    hf.config.sliding_window = 3                    # a window makes a plain cached prefix wrong: full passes
    model = ci.load_model(hf)
    plan = ci.plan(model, random_data(n=2, T=5), ci.sites.resid_pre(positions=[1]), reuse_prefix=True)
    assert plan.reuse_prefix is False
    with pytest.raises(ci.ScanError, match="reuse_prefix"):
        ci.plan(model, random_data(n=2, T=5), ci.sites.resid_pre(positions=[1]), reuse_prefix="yes")


def test_prefix_reuse_on_stories260k():
    path = shared_model("stories260K")
    if path is None:
        pytest.skip("../shared/models/stories260K is absent in this checkout")
    model = ci.load_model(str(path), device="cpu")
    tok = model.tokenizer
    clean = [tok(t).input_ids for t in ("Once upon a time, there was a girl named Lily. Lily",
                                        "Tom had a red ball. He gave the ball to")]
    corrupt = [tok(t).input_ids for t in ("Once upon a time, there was a girl named Sara. Lily",
                                          "Tom had a red kite. He gave the ball to")]
    n = min(len(c) for c in clean + corrupt)
    data = ci.ContrastSet.from_tokens([c[:n] for c in clean], [c[:n] for c in corrupt],
                                      answer=[tok(" was").input_ids[-1]] * 2, wrong=[tok(" the").input_ids[-1]] * 2)
    sites = ci.sites.explicit([Site("head_out", 1, 5, -1), Site("k", 3, 6, -2), Site("q", 2, 1, 3),
                               Site("v", 4, 0, 5), Site("resid_pre", 2, None, 4), Site("mlp_out", 0, None, 6)])
    eff = ci.scan(model, data, sites, progress=False, reuse_prefix=True)
    np.testing.assert_allclose(eff.values, reference(model.hf, data, eff.sites), atol=TOL)


def test_prefix_reuse_for_feature_sites():
    """Subspace sites at one position: prefix reuse gives the values of the full pass (hook-tested elsewhere)."""
    model = ci.load_model(build_hf("llama"))
    data = random_data(n=4, T=6)
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(model.d_model, 3, generator=g))[0].T
    sites = ci.sites.subspace("resid_pre", 1, [2, -1], basis)
    eff = ci.scan(model, data, sites, progress=False, reuse_prefix=True)
    plain = ci.scan(model, data, sites, progress=False)
    np.testing.assert_allclose(eff.values, plain.values, atol=TOL)
    assert np.abs(plain.values - plain.corrupt[:, None]).max() > 1e-3
