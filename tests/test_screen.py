"""ci.screen: attribution-patching estimates agree with exact patching and finite differences on tiny models.

References are independent: exact values from `ci.scan` (itself checked against torch hooks in
test_engine.py) where the model is linear after the site, and finite differences / frozen-layer finite
differences computed with the hand-written hooks of tests/reference.py.
"""
import numpy as np
import pytest
import torch

import causalinterp as ci
from causalinterp.spec.sites import ALL, Site

from conftest import build_hf, random_data
from reference import kv_group, logit_diff, read, run_patched
from shared_models import shared_model

FAMILIES = ["gpt2", "gpt_neox", "llama"]
LINEAR_TAIL = {"gpt2": ("transformer.ln_f", "transformer.h.1.mlp.c_proj"),
               "gpt_neox": ("gpt_neox.final_layer_norm", "gpt_neox.layers.1.mlp.dense_4h_to_h"),
               "llama": ("model.norm", "model.layers.1.mlp.down_proj")}


def linear_after_attention(family):
    """A 2-layer model that is linear after layer 1's attention: no final norm, layer 1's MLP outputs 0."""
    hf = build_hf(family)
    norm, down = LINEAR_TAIL[family]
    parent, name = norm.rsplit(".", 1)
    setattr(hf.get_submodule(parent), name, torch.nn.Identity())
    with torch.no_grad():
        for p in hf.get_submodule(down).parameters():
            p.zero_()
    return hf


def last_layer_sites(family, component):
    if component in ("head_out", "q", "k", "v"):
        return ci.sites.heads([(1, 0), (1, 3)], positions=[2, -1, ALL], component=component)
    return getattr(ci.sites, component)(layers=[1], positions=[1, -1, ALL])


@pytest.mark.parametrize("family", FAMILIES)
def test_atp_is_exact_where_the_model_is_linear_after_the_site(family):
    model = ci.load_model(linear_after_attention(family))
    data = random_data(n=4, T=5)
    comps = ["head_out", "v", "attn_out", "resid_post"] + (["resid_mid"] if family != "gpt_neox" else [])
    for comp in comps:
        sites = last_layer_sites(family, comp)
        exact = ci.scan(model, data, sites, progress=False)
        est = ci.screen(model, data, sites, method="atp")
        assert np.abs(exact.values - exact.base[:, None]).max() > 1e-3, comp      # a real effect to estimate
        np.testing.assert_allclose(est.values, exact.values, atol=1e-4, err_msg=f"{family} {comp}")
    # q/k: the softmax is not linear, so plain AtP is off; AtP* recomputes attention and is exact again
    for comp in ("q", "k"):
        sites = last_layer_sites(family, comp)
        exact = ci.scan(model, data, sites, progress=False)
        atp = ci.screen(model, data, sites, method="atp")
        star = ci.screen(model, data, sites, method="atp*")
        np.testing.assert_allclose(star.values, exact.values, atol=1e-4, err_msg=f"{family} {comp}")
        err_atp, err_star = np.abs(atp.values - exact.values).max(), np.abs(star.values - exact.values).max()
        assert err_atp > 1e-5 and err_atp > 20 * err_star, (comp, err_atp, err_star)


def _double_model(family):
    hf = build_hf(family).double()
    return hf, ci.load_model(hf)


def _patch_values(hf, data, site, i, eps, frozen=()):
    """Metric of prompt i (denoising: corrupt base) with the site moved eps of the way to the clean activation."""
    corrupt, clean = torch.tensor(data.corrupt[i]), torch.tensor(data.clean[i])
    pos = None if site.position == ALL else [data.position_index(site.position, i)]
    a_base, a_src = read(hf, corrupt, site.component, site.layer), read(hf, clean, site.component, site.layer)
    if site.head is not None:
        g = kv_group(hf, site.component, site.head)
        a_base, a_src = a_base[:, g], a_src[:, g]
    if pos is not None:
        a_base, a_src = a_base[pos], a_src[pos]
    patches = [(c, layer, None, None, read(hf, corrupt, c, layer)) for c, layer in frozen]
    patches.append((site.component, site.layer, site.head, pos, a_base + eps * (a_src - a_base)))
    end = data.positions["end"][i]
    return logit_diff(run_patched(hf, corrupt, patches), end, data.answer[i], data.wrong[i])


def _central_difference(hf, data, site, i, frozen=(), eps=1e-2):
    """d metric / d eps at 0 (central difference: Llama's norms compute in float32 even in a float64 model)."""
    return (_patch_values(hf, data, site, i, eps, frozen) - _patch_values(hf, data, site, i, -eps, frozen)) / (2 * eps)


SITES = [Site("resid_pre", 0, None, 2), Site("head_out", 0, 1, -1), Site("k", 0, 3, ALL), Site("q", 1, 2, -1),
         Site("mlp_out", 0, None, ALL), Site("v", 1, 0, 1)]


@pytest.mark.parametrize("family", FAMILIES)
def test_atp_is_the_directional_derivative(family):
    """(estimate - base) equals the finite difference of the metric along (source - base): small patches."""
    hf, model = _double_model(family)
    data = random_data(n=3, T=5)
    est = ci.screen(model, data, ci.sites.explicit(SITES), method="atp")
    for i in range(data.n):
        for j, s in enumerate(SITES):
            fd = _central_difference(hf, data, s, i)
            assert est.values[i, j] - est.base[i] == pytest.approx(fd, rel=2e-3, abs=1e-4), (family, s.label)


def test_graddrop_magnitude_matches_frozen_layer_finite_difference():
    """GradDrop for a layer-0 site in a 2-layer model: |derivative with layer 1's attention and MLP frozen|."""
    hf, model = _double_model("gpt2")
    data = random_data(n=3, T=5)
    sites = [Site("resid_pre", 0, None, 2), Site("head_out", 0, 1, -1), Site("head_out", 1, 2, -1)]
    est = ci.screen(model, data, ci.sites.explicit(sites), method="atp*")
    mag = est.meta["magnitude"]
    frozen = [("attn_out", 1), ("mlp_out", 1)]
    for i in range(data.n):
        for j in (0, 1):
            fd = _central_difference(hf, data, sites[j], i, frozen)
            assert mag[i, j] == pytest.approx(abs(fd), rel=2e-3, abs=1e-4)
        # no layer after layer 1: the magnitude is that of the estimate itself
        assert mag[i, 2] == pytest.approx(abs(est.values[i, 2] - est.base[i]), abs=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_ig_converges_to_the_exact_patch(family):
    """A site alone at its (component, layer): integrated gradients -> the exact effect as steps grow."""
    model = ci.load_model(build_hf(family))
    data = random_data(n=4, T=5)
    sites = ci.sites.explicit([Site("resid_pre", 1, None, -1), Site("head_out", 0, 2, 2), Site("k", 1, 1, ALL)])
    exact = ci.scan(model, data, sites, progress=False)
    coarse = ci.screen(model, data, sites, method="ig", steps=1)
    fine = ci.screen(model, data, sites, method="ig", steps=12)
    effect = np.abs(exact.values - exact.base[:, None])
    err_fine, err_coarse = np.abs(fine.values - exact.values), np.abs(coarse.values - exact.values)
    assert (err_fine <= 0.01 * effect + 2e-4).all(), (err_fine.max(), effect.max())
    assert err_coarse.max() > 5 * err_fine.max()        # the test could fail: one step is visibly worse


def test_screen_has_the_shape_and_labels_of_scan_and_says_it_estimates():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=6, T=5)
    sites = ci.sites.head_out(positions=[-1, ALL])
    exact = ci.scan(model, data, sites, intervention=ci.patch("noise"), progress=False)
    for method in ("atp", "atp*", "ig"):
        est = ci.screen(model, data, sites, intervention=ci.patch("noise"), method=method, steps=2)
        assert est.values.shape == exact.values.shape and est.columns == exact.columns
        assert est.sites == exact.sites
        for name in ("clean", "corrupt", "base", "target"):
            np.testing.assert_allclose(getattr(est, name), getattr(exact, name), atol=1e-5)
        assert est.meta["approximate"] is True and est.meta["method"] == method
        if method == "atp":
            assert est.meta["forward_equivalents"] == 5.0 < exact.values.shape[1]   # 2 forwards + forward/backward
        ev = ci.evaluate(est, ci.claims.has_effect(), n_resamples=199)
        assert any(r.startswith("ESTIMATE") and method in r for r in ev.reasons)
        assert ev.meta["approximate"] == method
        assert len(ev.table) == exact.values.shape[1]
    assert not any(r.startswith("ESTIMATE") for r in ci.evaluate(exact, ci.claims.has_effect(),
                                                                 n_resamples=199).reasons)


@pytest.mark.parametrize("kind", ["zero", "mean", "resample"])
def test_ablations_are_screened_too(kind):
    """Ablations write constants/means/other prompts: AtP is exact where the model is linear after the site."""
    model = ci.load_model(linear_after_attention("llama"))
    data = random_data(n=4, T=5)
    sites = ci.sites.explicit([Site("head_out", 1, 1, -1), Site("resid_post", 1, None, ALL), Site("v", 1, 3, 2)])
    intervention = ci.ablate(kind, seed=2)
    exact = ci.scan(model, data, sites, intervention=intervention, progress=False)
    est = ci.screen(model, data, sites, intervention=intervention, method="atp")
    np.testing.assert_allclose(est.values, exact.values, atol=1e-4)


def test_screen_refuses_what_it_cannot_estimate():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=4, T=5)
    with pytest.raises(ci.ScanError, match="method must be one of"):
        ci.screen(model, data, ci.sites.head_out(), method="exact")
    with pytest.raises(ci.ScanError, match="accuracy has no gradient"):
        ci.screen(model, data, ci.sites.head_out(), metric=ci.metrics.accuracy())
    with pytest.raises(ci.ScanError, match="steps must be"):
        ci.screen(model, data, ci.sites.head_out(), method="ig", steps=0)


def test_screen_on_stories260k_is_the_directional_derivative():
    path = shared_model("stories260K")
    if path is None:
        pytest.skip("../shared/models/stories260K is absent in this checkout")
    model = ci.load_model(str(path), device="cpu")
    hf = model.hf.double()
    tok = model.tokenizer
    clean = [tok(t).input_ids for t in ("Once upon a time, there was a girl named Lily. Lily",
                                        "Tom had a red ball. He gave the ball to")]
    corrupt = [tok(t).input_ids for t in ("Once upon a time, there was a girl named Sara. Lily",
                                          "Tom had a red kite. He gave the ball to")]
    n = min(len(c) for c in clean + corrupt)
    data = ci.ContrastSet.from_tokens([c[:n] for c in clean], [c[:n] for c in corrupt],
                                      answer=[tok(" was").input_ids[-1]] * 2, wrong=[tok(" the").input_ids[-1]] * 2)
    sites = [Site("head_out", 1, 5, -1), Site("k", 3, 6, -2), Site("resid_pre", 2, None, ALL)]
    est = ci.screen(model, data, ci.sites.explicit(sites), method="atp")
    for i in range(data.n):
        for j, s in enumerate(sites):
            fd = _central_difference(hf, data, s, i)
            assert est.values[i, j] - est.base[i] == pytest.approx(fd, rel=2e-3, abs=1e-4), s.label


def test_screen_runs_an_embedding_noise_base_run():
    """Causal tracing data (corrupt = clean + embedding noise): the screened base run carries the same noise."""
    model = ci.load_model(linear_after_attention("gpt2"))
    data = random_data(n=4, T=5).with_noise(ci.EmbeddingNoise(positions=[1, 2], scale=3.0))
    sites = ci.sites.explicit([Site("head_out", 1, 1, -1), Site("resid_post", 1, None, ALL)])
    exact = ci.scan(model, data, sites, progress=False)
    est = ci.screen(model, data, sites, method="atp")
    assert np.abs(exact.values - exact.base[:, None]).max() > 1e-3
    np.testing.assert_allclose(est.values, exact.values, atol=1e-4)


def test_screen_refuses_path_sites():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=4, T=5)
    with pytest.raises(ci.ScanError, match="path sites"):
        ci.screen(model, data, ci.sites.path(ci.sites.head_out(layers=[0], positions=-1), "logits"))


def test_screen_refuses_feature_sites():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=4, T=5)
    with pytest.raises(ci.ScanError, match="feature sites"):
        ci.screen(model, data, ci.sites.subspace("resid_pre", 1, -1, torch.eye(model.d_model)[:2]))
