"""Feature sites (subspaces, SAE latents): identities and exactness against hand-written torch hooks."""
import json

import numpy as np
import pytest
import torch

import causalinterp as ci
from causalinterp.features import FeatureError, FeatureSite, Subspace
from causalinterp.spec.sites import ALL, Site

from conftest import build_hf, random_data
from reference import logit_diff, read, run_patched

TOL = 1e-4


def tokens(data, which, i):
    return torch.tensor((data.clean if which == "clean" else data.corrupt)[i])


def random_basis(d, k, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q.T[:k].contiguous()


def hand_subspace(cur, src, B):
    """The subspace patch written out: keep cur's part orthogonal to span(B), take src's part in span(B)."""
    P = B.T @ B
    return cur - cur @ P + src @ P


def ref_feature(hf, data, site, new_value):
    """Per-prompt logit diff (corrupt base, clean source) with the site's activation set to
    new_value(cur, src) through a plain torch hook."""
    out = []
    for i in range(data.n):
        pos = None if site.position == ALL else [data.position_index(site.position, i)]
        cur = read(hf, tokens(data, "corrupt", i), site.component, site.layer)
        src = read(hf, tokens(data, "clean", i), site.component, site.layer)
        if site.head is not None:
            cur, src = cur[:, site.head], src[:, site.head]
        if pos is not None:
            cur, src = cur[pos], src[pos]
        vals = new_value(cur, src)
        logits = run_patched(hf, tokens(data, "corrupt", i), [(site.component, site.layer, site.head, pos, vals)])
        out.append(logit_diff(logits, data.positions["end"][i], data.answer[i], data.wrong[i]))
    return np.array(out)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_subspace_matches_hand_written_hook(family):
    hf = build_hf(family)
    model = ci.load_model(hf)
    data = random_data(n=4, T=5)
    d = model.d_model
    B = random_basis(d, 3)
    for site in [FeatureSite("resid_pre", 1, None, 2, Subspace(B)), FeatureSite("mlp_out", 0, None, ALL, Subspace(B)),
                 FeatureSite("head_out", 1, 1, -1, Subspace(random_basis(model.d_head, 2, seed=1)))]:
        eff = ci.scan(model, data, [site], progress=False)
        b = site.feature.basis
        ref = ref_feature(hf, data, site, lambda cur, src: hand_subspace(cur, src, b))
        np.testing.assert_allclose(eff.values[:, 0], ref, atol=TOL, err_msg=site.label)
        assert np.abs(eff.values[:, 0] - eff.corrupt).max() > 1e-3, site.label  # the patch does something


def test_full_basis_is_whole_patch_and_empty_basis_is_nothing():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=4, T=5)
    d = model.d_model
    for pos in (2, ALL):
        whole = ci.scan(model, data, Site("resid_pre", 1, None, pos), progress=False).values
        full = ci.scan(model, data, ci.sites.subspace("resid_pre", 1, pos, random_basis(d, d)), progress=False).values
        empty = ci.scan(model, data, ci.sites.subspace("resid_pre", 1, pos, torch.zeros(0, d)), progress=False)
        np.testing.assert_allclose(full, whole, atol=TOL)
        np.testing.assert_array_equal(empty.values[:, 0], empty.corrupt)  # exactly nothing
        # a basis and its orthogonal complement: patching both jointly is the whole patch; one alone is not
        B = random_basis(d, d, seed=2)
        both = ci.scan(model, data, [FeatureSite("resid_pre", 1, None, pos, Subspace(B[:5])),
                                     FeatureSite("resid_pre", 1, None, pos, Subspace(B[5:]))], joint=True,
                       progress=False).values
        np.testing.assert_allclose(both, whole, atol=TOL)


@pytest.mark.parametrize("kind", ["zero", "mean", "resample"])
def test_subspace_ablations_with_full_basis_equal_whole_ablations(kind):
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=4, T=5)
    for pos in (3, ALL):
        a = ci.scan(model, data, ci.sites.subspace("resid_post", 0, pos, torch.eye(model.d_model)),
                    intervention=ci.ablate(kind, seed=1), progress=False).values
        b = ci.scan(model, data, Site("resid_post", 0, None, pos), intervention=ci.ablate(kind, seed=1),
                    progress=False).values
        np.testing.assert_allclose(a, b, atol=TOL)


def test_zero_ablating_a_direction_removes_only_that_component():
    hf = build_hf("gpt2")
    model = ci.load_model(hf)
    data = random_data(n=3, T=5)
    B = random_basis(model.d_model, 1, seed=3)
    site = FeatureSite("resid_pre", 1, None, 2, Subspace(B))
    eff = ci.scan(model, data, [site], intervention=ci.ablate("zero"), progress=False)
    ref = []
    for i in range(data.n):
        cur = read(hf, tokens(data, "clean", i), "resid_pre", 1)[[2]]
        vals = cur - (cur @ B.T) @ B
        logits = run_patched(hf, tokens(data, "clean", i), [("resid_pre", 1, None, [2], vals)])
        ref.append(logit_diff(logits, data.positions["end"][i], data.answer[i], data.wrong[i]))
    np.testing.assert_allclose(eff.values[:, 0], ref, atol=TOL)


def test_random_sets_for_feature_sites_need_an_explicit_pool():
    model = ci.load_model(build_hf("gpt2"))
    with pytest.raises(ci.ScanError, match="random_pool"):
        ci.scan(model, random_data(), ci.sites.subspace("resid_pre", 0, 1, random_basis(32, 2)), joint=True,
                n_random=5, progress=False)


def test_basis_validation_errors():
    with pytest.raises(FeatureError, match="not orthonormal"):
        ci.sites.subspace("resid_pre", 0, "end", torch.tensor([[1.0, 1.0, 0.0]]))
    with pytest.raises(FeatureError, match=r"\[k, d\]"):
        ci.sites.subspace("resid_pre", 0, "end", torch.zeros(2, 2, 2))
    with pytest.raises(FeatureError, match="NaN"):
        ci.sites.subspace("resid_pre", 0, "end", torch.tensor([float("nan"), 0.0]))
    model = ci.load_model(build_hf("gpt2"))
    with pytest.raises(FeatureError, match="width"):
        ci.scan(model, random_data(), ci.sites.subspace("resid_pre", 0, 1, torch.eye(3)), progress=False)
    B = ci.features.orthonormalize(torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]))
    assert torch.allclose(B @ B.T, torch.eye(2), atol=1e-6)


def test_feature_sites_round_trip_and_are_distinct():
    B = random_basis(8, 2)
    site = FeatureSite("resid_pre", 1, None, "end", Subspace(B, "probe"))
    back = Site.from_dict(json.loads(json.dumps(site.to_dict())))
    assert back == site and back.label == "resid_pre L1 @end [subspace probe k=2]"
    other = FeatureSite("resid_pre", 1, None, "end", Subspace(random_basis(8, 2, seed=5)))
    assert other != site and len({site, other}) == 2
    data = random_data(n=2, T=5)
    ci.spec.sites.check_distinct([site, other], data)  # different subspaces at one place are distinct sites
    with pytest.raises(ci.spec.sites.SiteError, match="twice"):
        ci.spec.sites.check_distinct([site, back], data)


# --- SAE features ------------------------------------------------------------------------------------
def toy_sae(d, m=16, seed=0, hook=("resid_pre", 1)):
    sae = ci.features.SparseAutoencoder(d, m, hook=hook, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # random, non-trivial weights and biases (some latents active, some not)
        sae.W_enc.copy_(torch.randn(d, m, generator=g) / d ** 0.5)
        sae.b_enc.copy_(0.1 * torch.randn(m, generator=g))
        sae.W_dec.copy_(torch.randn(m, d, generator=g) / m ** 0.5)
        sae.b_dec.copy_(0.1 * torch.randn(d, generator=g))
    return sae


def hand_sae(sae, feats, error):
    """The SAE edit written out with the weight matrices (not sae.encode/decode)."""
    W_enc, b_enc, W_dec, b_dec = (sae.W_enc.detach(), sae.b_enc.detach(), sae.W_dec.detach(), sae.b_dec.detach())

    def enc(x):
        return torch.clamp((x - b_dec) @ W_enc + b_enc, min=0)

    def new_value(cur, src):
        zc, zs = enc(cur), enc(src)
        zn = zc.clone()
        zn[..., feats] = zs[..., feats]
        err_c, err_s = cur - (zc @ W_dec + b_dec), src - (zs @ W_dec + b_dec)
        return zn @ W_dec + b_dec + (err_s if error else err_c)
    return new_value


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_sae_features_match_hand_written_hook(family):
    hf = build_hf(family)
    model = ci.load_model(hf)
    data = random_data(n=4, T=5)
    sae = toy_sae(model.d_model)
    for feats, error, pos in [([1, 4, 7], False, 2), ([0, 2], True, ALL), (list(range(16)), False, -1)]:
        sites = ci.sites.sae_features(sae, feats, positions=pos, error=error)
        eff = ci.scan(model, data, sites, progress=False)
        ref = ref_feature(hf, data, sites.explicit[0], hand_sae(sae, feats, error))
        np.testing.assert_allclose(eff.values[:, 0], ref, atol=TOL, err_msg=f"{feats} {error} {pos}")
        assert np.abs(eff.values[:, 0] - eff.corrupt).max() > 1e-4


def test_sae_identities():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=4, T=5)
    sae = toy_sae(model.d_model)
    for pos in (2, ALL):
        whole = ci.scan(model, data, Site("resid_pre", 1, None, pos), progress=False).values
        every = ci.scan(model, data, ci.sites.sae_features(sae, None, pos, error=True), progress=False).values
        np.testing.assert_allclose(every, whole, atol=TOL)          # all latents + error term == the whole patch
        none = ci.scan(model, data, ci.sites.sae_features(sae, [], pos), progress=False)
        np.testing.assert_array_equal(none.values[:, 0], none.corrupt)  # no latent, no error: exactly nothing
        # every latent without the error term is not the whole patch (the error term matters for a toy SAE)
        no_err = ci.scan(model, data, ci.sites.sae_features(sae, None, pos), progress=False).values
        assert np.abs(no_err - whole).max() > 1e-3


def test_sae_ablations():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=4, T=5)
    sae = toy_sae(model.d_model)
    whole_zero = ci.scan(model, data, Site("resid_pre", 1, None, 2), intervention=ci.ablate("zero"), progress=False)
    every_zero = ci.scan(model, data, ci.sites.sae_features(sae, None, 2, error=True), intervention=ci.ablate("zero"),
                         progress=False)
    # zero latents and zero error: the decoder bias is what remains
    b_dec = sae.b_dec.detach()[None]
    hf = model.hf
    ref = []
    for i in range(data.n):
        logits = run_patched(hf, tokens(data, "clean", i), [("resid_pre", 1, None, [2], b_dec)])
        ref.append(logit_diff(logits, data.positions["end"][i], data.answer[i], data.wrong[i]))
    np.testing.assert_allclose(every_zero.values[:, 0], ref, atol=TOL)
    assert np.abs(every_zero.values - whole_zero.values).max() > 1e-4
    # mean ablation of every latent + error at one position == mean ablation of the whole activation
    a = ci.scan(model, data, ci.sites.sae_features(sae, None, 2, error=True), intervention=ci.ablate("mean"),
                progress=False).values
    b = ci.scan(model, data, Site("resid_pre", 1, None, 2), intervention=ci.ablate("mean"), progress=False).values
    np.testing.assert_allclose(a, b, atol=TOL)


def test_sae_site_errors_and_files(tmp_path):
    model = ci.load_model(build_hf("gpt2"))
    sae = toy_sae(model.d_model)
    with pytest.raises(FeatureError, match="does not exist"):
        ci.sites.sae_features(sae, [16])
    with pytest.raises(FeatureError, match="encode"):
        ci.sites.sae_features(object(), component="resid_pre", layer=0)
    with pytest.raises(FeatureError, match="component= and layer="):
        ci.sites.sae_features(ci.features.SparseAutoencoder(4, 8))
    with pytest.raises(FeatureError, match="width"):
        ci.scan(model, random_data(), ci.sites.sae_features(toy_sae(3)), progress=False)
    path = ci.features.save_sae(sae, tmp_path / "sae")
    cfg = json.loads((path / "cfg.json").read_text())
    assert cfg["hook_name"] == "blocks.1.hook_resid_pre" and cfg["d_sae"] == 16
    loaded = ci.features.load_sae(path)
    x = torch.randn(3, model.d_model)
    assert torch.equal(loaded.encode(x), sae.encode(x).detach())
    site = ci.sites.sae_features(loaded, [1, 2], positions="end").explicit[0]
    assert Site.from_dict(json.loads(json.dumps(site.to_dict()))) == site
    unsaved = ci.sites.sae_features(sae, [1], positions="end").explicit[0]
    with pytest.raises(FeatureError, match="in memory"):
        Site.from_dict(unsaved.to_dict())


class DuckSAE:
    """SAELens-like object: encode/decode and cfg.hook_name, no nn.Module."""

    def __init__(self, inner):
        self.inner = inner
        self.cfg = type("Cfg", (), {"hook_name": "blocks.0.hook_mlp_out", "d_in": inner.d_in, "d_sae": inner.d_sae})()

    def encode(self, x):
        return self.inner.encode(x)

    def decode(self, z):
        return self.inner.decode(z)


def test_any_encode_decode_object_works():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=3, T=5)
    sae = toy_sae(model.d_model, hook=("mlp_out", 0))
    duck = ci.scan(model, data, ci.sites.sae_features(DuckSAE(sae), [3, 5], positions=1), progress=False).values
    ours = ci.scan(model, data, ci.sites.sae_features(sae, [3, 5], positions=1), progress=False).values
    np.testing.assert_allclose(duck, ours, atol=1e-6)


# --- the SAE shipped with the induction testbed -------------------------------------------------------
def test_shipped_sae_is_what_its_card_says():
    model = ci.load_model("testbed:induction")
    sae = ci.features.load_sae(ci.features.testbed_sae_path("induction"))
    cfg = json.loads((ci.features.testbed_sae_path("induction") / "cfg.json").read_text())
    acts = ci.features.collect(model, ci.testbeds.induction_data(50, seed=100), Site("resid_post", 1))
    stats = ci.features.sae_stats(sae, acts)
    assert stats["explained_variance"] > 0.9 and stats["l0"] < 0.25 * sae.d_sae  # a sparse, faithful SAE
    assert cfg["stats"]["explained_variance"] > 0.9
    # identity on the real testbed: every latent and the error term is the whole patch
    data = ci.features.copy_choice_data(20, seed=5)
    every = ci.scan(model, data, ci.sites.sae_features(sae, None, positions="end", error=True), progress=False).values
    whole = ci.scan(model, data, Site("resid_post", 1, None, "end"), progress=False).values
    np.testing.assert_allclose(every, whole, atol=TOL)


@pytest.mark.slow
def test_shipped_sae_finds_task_features_confirmed_on_held_out_prompts():
    model = ci.load_model("testbed:induction")
    sae = ci.features.load_sae(ci.features.testbed_sae_path("induction"))
    data = ci.features.copy_choice_data(60, seed=5)
    disc, conf = data.split(0.5, seed=0)
    sweep = ci.scan(model, disc, ci.sites.sae_features(sae, each=True, positions="end"), progress=False)
    top = ci.evaluate(sweep, ci.claims.has_effect("increase"), n_resamples=199).top_sites(3)
    feats = [s.feature.features[0] for s in top]
    held = ci.scan(model, conf, ci.sites.sae_features(sae, feats, positions="end"), progress=False)
    rec = (held.values[:, 0].mean() - held.corrupt.mean()) / (held.clean.mean() - held.corrupt.mean())
    rand = [ci.scan(model, conf, ci.sites.sae_features(sae, list(r), positions="end"), progress=False).values[:, 0].mean()
            for r in np.random.default_rng(0).choice(sae.d_sae, size=(5, 3), replace=False)]
    rand_rec = (np.mean(rand) - held.corrupt.mean()) / (held.clean.mean() - held.corrupt.mean())
    assert rec > 0.2 and rec > 5 * abs(rand_rec), (rec, rand_rec)


@pytest.mark.slow
def test_shipped_sae_retrains_bit_for_bit():
    sae = ci.features.load_sae(ci.features.testbed_sae_path("induction"))
    again = ci.features.sae.train_testbed_sae()
    for k in ("W_enc", "b_enc", "W_dec", "b_dec"):
        torch.testing.assert_close(getattr(again, k), getattr(sae, k), rtol=0, atol=0)
