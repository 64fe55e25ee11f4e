"""Path sites equal hand-written torch-hook path patching (tests/reference.py), for every receiver kind and family."""
import numpy as np
import pytest
import torch

import causalinterp as ci
from causalinterp.spec.paths import Path
from causalinterp.spec.sites import ALL, Site, SiteError

from conftest import build_hf, random_data
from reference import logit_diff, path_patched, read
from shared_models import shared_model

TOL = 1e-5


def _new_values(hf, data, s, i, kind):
    """What the intervention writes at sender s for prompt i (canonical slice)."""
    pos = None if s.position == ALL else [data.position_index(s.position, i)]
    if kind == "mean":
        acts = [read(hf, torch.tensor(data.corrupt[j]), s.component, s.layer) for j in range(data.n)]
        if pos is None:
            vals = torch.stack(acts).mean(0)
        else:
            vals = torch.stack([a[data.position_index(s.position, j)] for j, a in enumerate(acts)]).mean(0)[None]
    else:
        src = data.clean if kind == "denoise" else data.corrupt
        act = read(hf, torch.tensor(src[i]), s.component, s.layer)
        vals = act if pos is None else act[pos]
    if s.head is not None:
        vals = vals[:, s.head]
    return pos, vals


def reference(hf, data, paths, kind="denoise"):
    base = data.corrupt if kind == "denoise" else data.clean
    n_layers = hf.config.num_hidden_layers
    out = np.zeros((data.n, len(paths)))
    for i in range(data.n):
        end = data.positions["end"][i]
        for c, p in enumerate(paths):
            senders = []
            for s in p.senders:
                pos, vals = _new_values(hf, data, s, i, kind)
                senders.append((s.component, s.layer, s.head, pos, vals))
            if p.receivers == ("logits",):
                receivers = "logits"
            else:
                receivers = [(r.component, r.layer, r.head,
                              None if r.position == ALL else [data.position_index(r.position, i)]) for r in p.receivers]
            logits = path_patched(hf, torch.tensor(base[i]), senders, receivers, n_layers)
            out[i, c] = logit_diff(logits, end, data.answer[i], data.wrong[i])
    return out


def every_kind(family: str) -> list:
    """Paths of every sender and receiver kind in a 2-layer model."""
    H = lambda l, h, p=ALL: Site("head_out", l, h, p)  # noqa: E731
    paths = [Path((H(0, 1),), (Site(c, 1, 2),)) for c in "qkv"]
    paths += [
        Path((H(0, 3, -1),), (Site("k", 1, 0, -1),)),                     # receiver written at one position
        Path((Site("mlp_out", 0, None, -1),), (Site("mlp_out", 1),)),      # MLP -> MLP
        Path((Site("resid_pre", 0, None, 3),), (Site("k", 0, 1),)),        # resid -> a head of the same layer
        Path((Site("resid_post", 0, None, 1),), (Site("v", 1, 3),)),
        Path((H(1, 0),), ("logits",)),                                      # direct paths to the logits
        Path((Site("attn_out", 0),), ("logits",)),
        Path((H(0, 1), Site("mlp_out", 0)), (Site("q", 1, 0), Site("mlp_out", 1))),   # set -> set
    ]
    if family != "gpt_neox":  # sequential blocks: attention reaches the same layer's MLP
        paths += [Path((Site("attn_out", 1),), (Site("mlp_out", 1),)),
                  Path((Site("resid_mid", 1, None, -1),), (Site("mlp_out", 1),))]
    return paths


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_every_path_kind_matches_hooks(family):
    hf = build_hf(family)
    model = ci.load_model(hf)
    data = random_data(n=3, T=5)
    paths = every_kind(family)
    eff = ci.scan(model, data, ci.sites.paths(paths), batch_size=7, progress=False)  # passes mix paths
    ref = reference(hf, data, paths)
    np.testing.assert_allclose(eff.values, ref, atol=TOL, err_msg=family)
    # every path moves the metric (so the comparison could fail)
    assert (np.abs(eff.values - eff.corrupt[:, None]).max(0) > 5 * TOL).all(), np.abs(eff.values - eff.corrupt[:, None])


@pytest.mark.parametrize("family,kind", [("gpt2", "noise"), ("llama", "mean"), ("gpt_neox", "noise")])
def test_noise_and_mean_paths_match_hooks(family, kind):
    hf = build_hf(family)
    model = ci.load_model(hf)
    data = random_data(n=3, T=5)
    paths = every_kind(family)[:6] + [every_kind(family)[7]]
    intervention = ci.patch("noise") if kind == "noise" else ci.ablate("mean")
    eff = ci.scan(model, data, ci.sites.paths(paths), intervention=intervention, progress=False)
    np.testing.assert_allclose(eff.values, reference(hf, data, paths, kind), atol=TOL)


def test_path_to_logits_from_the_last_mlp_is_the_node_patch():
    """Nothing is downstream of the last MLP, so its direct path to the logits is its whole effect."""
    model = ci.load_model(build_hf("llama"))
    data = random_data(n=4, T=5)
    last = Site("mlp_out", 1, None, ALL)
    node = ci.scan(model, data, [last], progress=False)
    path = ci.scan(model, data, ci.sites.path([last], "logits"), progress=False)
    np.testing.assert_allclose(path.values, node.values, atol=TOL)


def test_grid_path_set_is_one_column_per_edge_and_joint_merges():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=3, T=5)
    ps = ci.sites.path(ci.sites.heads([(0, 0), (0, 1)]), [(1, 2), (1, 3)], via="k")
    eff = ci.scan(model, data, ps, progress=False)
    assert eff.values.shape == (3, 4)
    assert [s.label for s in eff.sites][0] == "path(head_out L0.H0 @all -> k L1.H2 @all)"
    joint = ci.scan(model, data, ps, joint=True, progress=False)
    assert joint.values.shape == (3, 1) and len(joint.sites[0].senders) == 2 and len(joint.sites[0].receivers) == 2
    # usable in claims like any site
    ev = ci.evaluate(eff, ci.claims.has_effect(), n_resamples=200)
    assert len(ev.table) == 4 and set(ev.table["component"]) == {"path"}


def test_bad_paths_are_refused_with_reasons():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=3, T=5)
    with pytest.raises(SiteError, match="via="):
        ci.scan(model, data, ci.sites.path([Site("head_out", 0, 1)], [(1, 2)]), progress=False)
    with pytest.raises(SiteError, match="no sender is upstream"):
        ci.scan(model, data, ci.sites.path([Site("head_out", 1, 1)], [(1, 2)], via="q"), progress=False)
    with pytest.raises(SiteError, match="logits"):
        Path((Site("head_out", 0, 1),), ("logits", Site("q", 1, 0)))
    with pytest.raises(SiteError, match="senders are"):
        Path((Site("q", 0, 1),), ("logits",))
    with pytest.raises(ci.ScanError, match="reuse_prefix"):
        ci.scan(model, data, ci.sites.path([Site("head_out", 0, 1)], "logits"), reuse_prefix=True, progress=False)
    with pytest.raises(ci.ScanError, match="joint=True"):
        ci.scan(model, data, ci.sites.path(ci.sites.heads([(0, 1), (0, 2)]), "logits"), n_random=3, progress=False)
    with pytest.raises(SiteError, match="via must be"):
        ci.sites.path([Site("head_out", 0, 1)], [(1, 2)], via="o")


def test_parallel_blocks_attention_does_not_reach_its_own_mlp():
    model = ci.load_model(build_hf("gpt_neox", parallel=True))
    with pytest.raises(SiteError, match="no sender is upstream"):
        ci.scan(model, random_data(n=3, T=5), ci.sites.path([Site("attn_out", 1)], [Site("mlp_out", 1)]),
                progress=False)


STORIES = shared_model("stories260K")


@pytest.mark.skipif(STORIES is None, reason="the real model stories260K is not here (shared/models)")
def test_stories260k_paths_match_hooks():
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(STORIES, local_files_only=True).eval()
    model = ci.load_model(hf)
    data = random_data(n=2, T=6, vocab=hf.config.vocab_size)
    paths = [Path((Site("head_out", 0, 1),), (Site(c, 2, 5),)) for c in "qkv"]   # GQA: k/v of a group
    paths += [Path((Site("mlp_out", 1, None, 3),), (Site("mlp_out", 3),)),
              Path((Site("head_out", 3, 2),), ("logits",))]
    eff = ci.scan(model, data, ci.sites.paths(paths), progress=False)
    np.testing.assert_allclose(eff.values, reference(hf, data, paths), atol=TOL)


def test_embedding_noise_corrupt_run_reaches_paths():
    """With an embedding-noise corrupt run (causal tracing) the base run of denoising carries the noise:
    the last MLP's direct path to the logits still equals its node patch, and differs from the noiseless scan."""
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=3, T=5).with_noise(ci.EmbeddingNoise(positions=[0, 1], scale=3.0))
    last = Site("mlp_out", 1, None, ALL)
    node = ci.scan(model, data, [last], progress=False)
    path = ci.scan(model, data, ci.sites.path([last], "logits"), progress=False)
    np.testing.assert_allclose(path.values, node.values, atol=TOL)
    both = ci.scan(model, data, ci.sites.paths([Path((Site("head_out", 0, 1),), (Site("q", 1, 2),))]), progress=False)
    assert np.abs(both.values[:, 0] - both.corrupt).max() > 5 * TOL


def test_path_results_round_trip_through_json(tmp_path):
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=4, T=5)
    eff = ci.scan(model, data, ci.sites.path([Site("head_out", 0, 1)], [(1, 2)], via="k"), progress=False)
    r = ci.Result(name="path", hypothesis={}, evaluation=ci.evaluate(eff, ci.claims.has_effect(), n_resamples=99),
                  effects=eff)
    back = ci.Result.from_json(r.to_json(tmp_path / "r.json"))
    assert back.effects.sites == eff.sites and isinstance(back.effects.sites[0], Path)
    np.testing.assert_array_equal(back.effects.values, eff.values)
