"""The engine's per-prompt values equal independent torch-hook patching, for every site kind and family."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import causalinterp as ci
from causalinterp.spec.sites import ALL, Site

from conftest import build_hf, random_data
from reference import kv_group, logit_diff, read, run_patched

TOL = 1e-4


def tokens(data, which, i):
    return torch.tensor((data.clean if which == "clean" else data.corrupt)[i])


def reference(hf, data, sites, kind="denoise", joint=False, mean_ref=None, resample_from=None):
    """[n, n_columns] logit diffs from hook patching one prompt at a time."""
    base, src_run = ("corrupt", "clean") if kind == "denoise" else ("clean", "corrupt")
    columns = [list(sites)] if joint else [[s] for s in sites]
    out = np.zeros((data.n, len(columns)))
    for i in range(data.n):
        end = data.positions["end"][i]
        for c, col in enumerate(columns):
            patches = []
            for s in col:
                pos = None if s.position == ALL else [data.position_index(s.position, i)]
                src_i = resample_from[i] if kind == "resample" else i
                if kind in ("denoise", "noise", "resample"):
                    run = src_run
                    act = read(hf, tokens(data, run, src_i), s.component, s.layer)
                    if kind == "resample" and pos is not None:
                        spos = [data.position_index(s.position, src_i)]
                        vals = act[spos]
                    else:
                        vals = act if pos is None else act[pos]
                elif kind == "zero":
                    act = read(hf, tokens(data, base, i), s.component, s.layer)
                    vals = torch.zeros_like(act if pos is None else act[pos])
                else:  # mean over corrupt prompts at each one's own position
                    acts = [read(hf, tokens(data, "corrupt", j), s.component, s.layer) for j in range(data.n)]
                    if pos is None:
                        vals = torch.stack(acts).mean(0)
                    else:
                        vals = torch.stack([a[data.position_index(s.position, j)] for j, a in enumerate(acts)]).mean(0)[None]
                if s.head is not None:
                    vals = vals[:, kv_group(hf, s.component, s.head)]
                patches.append((s.component, s.layer, s.head, pos, vals))
            logits = run_patched(hf, tokens(data, base, i), patches)
            out[i, c] = logit_diff(logits, end, data.answer[i], data.wrong[i])
    return out


def components_of(family):
    comps = ["resid_pre", "resid_post", "attn_out", "mlp_out", "head_out", "q", "k", "v"]
    return comps + (["resid_mid"] if family != "gpt_neox" else [])


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_denoise_every_component_matches_hooks(family):
    hf = build_hf(family)
    model = ci.load_model(hf)
    data = random_data(n=4, T=5)
    for comp in components_of(family):
        if comp in ("head_out", "q", "k", "v"):
            sites = ci.sites.heads([(0, 1), (1, 3), (1, 0)], positions=[2, -1, "all"], component=comp)
        else:
            sites = getattr(ci.sites, comp)(layers=None, positions=[0, 3, -1, "all"])
        eff = ci.scan(model, data, sites, progress=False)
        ref = reference(hf, data, eff.sites)
        np.testing.assert_allclose(eff.values, ref, atol=TOL, err_msg=f"{family} {comp}")
        # the effect is not trivially zero everywhere (the test could fail)
        assert np.abs(eff.values - eff.corrupt[:, None]).max() > 1e-3, comp


def test_neox_sequential_has_resid_mid_and_matches():
    hf = build_hf("gpt_neox", parallel=False)
    model = ci.load_model(hf)
    data = random_data(n=3, T=5)
    eff = ci.scan(model, data, ci.sites.resid_mid(positions=[1, -1]), progress=False)
    np.testing.assert_allclose(eff.values, reference(hf, data, eff.sites), atol=TOL)


def test_parallel_neox_has_no_resid_mid():
    model = ci.load_model(build_hf("gpt_neox", parallel=True))
    with pytest.raises(ValueError, match="parallel attention"):
        ci.scan(model, random_data(), ci.sites.resid_mid(), progress=False)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("kind", ["noise", "zero", "mean"])
def test_noise_and_ablations_match_hooks(family, kind):
    hf = build_hf(family)
    model = ci.load_model(hf)
    data = random_data(n=4, T=5)
    sites = ci.sites.explicit([Site("resid_pre", 1, None, 2), Site("head_out", 0, 2, -1), Site("mlp_out", 0, None, ALL),
                               Site("head_out", 1, 1, ALL)])
    intervention = ci.patch("noise") if kind == "noise" else ci.ablate(kind)
    eff = ci.scan(model, data, sites, intervention=intervention, progress=False)
    np.testing.assert_allclose(eff.values, reference(hf, data, eff.sites, kind=kind), atol=TOL)
    np.testing.assert_allclose(eff.base, eff.clean)  # these interventions act on the clean run


def test_resample_takes_another_prompt():
    hf = build_hf("gpt2")
    model = ci.load_model(hf)
    data = random_data(n=2, T=5)  # with two prompts, "another prompt" is determined
    sites = ci.sites.explicit([Site("resid_pre", 1, None, 2), Site("head_out", 0, 2, ALL)])
    eff = ci.scan(model, data, sites, intervention=ci.ablate("resample", seed=3), progress=False)
    ref = reference(hf, data, eff.sites, kind="resample", resample_from=[1, 0])
    np.testing.assert_allclose(eff.values, ref, atol=TOL)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_joint_matches_hooks(family):
    hf = build_hf(family)
    model = ci.load_model(hf)
    data = random_data(n=4, T=5)
    sites = ci.sites.explicit([Site("head_out", 0, 1, -1), Site("head_out", 1, 2, -1), Site("resid_pre", 1, None, 1),
                               Site("mlp_out", 0, None, 3)])
    eff = ci.scan(model, data, sites, joint=True, progress=False)
    assert eff.values.shape == (4, 1)
    np.testing.assert_allclose(eff.values, reference(hf, data, eff.sites, joint=True), atol=TOL)


def test_named_positions_resolve_per_prompt():
    hf = build_hf("gpt2")
    model = ci.load_model(hf)
    base = random_data(n=3, T=6)
    data = ci.ContrastSet.from_tokens(base.clean, base.corrupt, base.answer, base.wrong,
                                      positions={"S2": [1, 3, 4]})
    eff = ci.scan(model, data, ci.sites.head_out(layers=[1], positions=["S2"]), progress=False)
    np.testing.assert_allclose(eff.values, reference(hf, data, eff.sites), atol=TOL)


def test_variable_length_prompts_are_padded_without_effect():
    hf = build_hf("llama")
    model = ci.load_model(hf)
    g = torch.Generator().manual_seed(5)
    lens = [4, 7, 5]
    clean = [torch.randint(1, 64, (L,), generator=g).tolist() for L in lens]
    corrupt = [torch.randint(1, 64, (L,), generator=g).tolist() for L in lens]
    data = ci.ContrastSet.from_tokens(clean, corrupt, answer=[3, 4, 5], wrong=[6, 7, 8])
    eff = ci.scan(model, data, ci.sites.resid_pre(positions=[0, "end"]), progress=False)
    np.testing.assert_allclose(eff.values, reference(hf, data, eff.sites), atol=TOL)
    with torch.no_grad():
        for i, c in enumerate(clean):
            lo = hf(torch.tensor([c])).logits[0, -1]
            assert abs(float(lo[3 + i] - lo[6 + i]) - eff.clean[i]) < TOL


@pytest.mark.parametrize("metric", ["logprob", "prob", "kl_to_clean", "accuracy"])
def test_other_metrics_agree_with_direct_computation(metric):
    hf = build_hf("gpt2")
    model = ci.load_model(hf)
    data = random_data(n=4, T=5)
    eff = ci.scan(model, data, ci.sites.resid_post(layers=[1], positions=[-1]), metric=getattr(ci.metrics, metric)(),
                  progress=False)
    with torch.no_grad():
        for i in range(4):
            clean_lo = hf(torch.tensor([data.clean[i]])).logits[0, -1].double()
            corrupt_lo = hf(torch.tensor([data.corrupt[i]])).logits[0, -1].double()
            a = data.answer[i]
            expect = {
                "logprob": lambda lo: torch.log_softmax(lo, -1)[a],
                "prob": lambda lo: torch.softmax(lo, -1)[a],
                "accuracy": lambda lo: float(lo.argmax() == a),
                "kl_to_clean": lambda lo: torch.nn.functional.kl_div(torch.log_softmax(lo, -1),
                                                                     torch.log_softmax(clean_lo, -1),
                                                                     log_target=True, reduction="sum"),
            }[metric]
            assert abs(float(expect(clean_lo)) - eff.clean[i]) < TOL
            assert abs(float(expect(corrupt_lo)) - eff.corrupt[i]) < TOL
            # patching the whole last-layer residual at the end position restores the clean metric
            assert abs(float(expect(clean_lo)) - eff.values[i, 0]) < TOL


# ---- invariances ---------------------------------------------------------------------------------
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 4), T=st.integers(2, 6), data_seed=st.integers(0, 1000))
def test_patch_where_clean_equals_corrupt_changes_nothing(seed, n, T, data_seed):
    hf = build_hf("gpt2", seed=seed % 3)
    model = ci.load_model(hf)
    d = random_data(n=n, T=T, seed=data_seed)
    corrupt = [list(r) for r in d.corrupt]
    for r, c in zip(corrupt, d.clean):
        r[0] = c[0]  # position 0 identical in clean and corrupt
    data = ci.ContrastSet.from_tokens(d.clean, corrupt, d.answer, d.wrong)
    eff = ci.scan(model, data, ci.sites.resid_pre(layers=[0], positions=[0]), progress=False)
    np.testing.assert_allclose(eff.values[:, 0], eff.corrupt, atol=1e-5)


@settings(max_examples=6, deadline=None)
@given(family=st.sampled_from(["gpt2", "gpt_neox", "llama"]), n=st.integers(1, 4), T=st.integers(2, 6),
       data_seed=st.integers(0, 1000))
def test_denoising_every_position_at_layer0_restores_clean(family, n, T, data_seed):
    model = ci.load_model(build_hf(family))
    data = random_data(n=n, T=T, seed=data_seed)
    eff = ci.scan(model, data, ci.sites.resid_pre(layers=[0], positions="all"), progress=False)
    np.testing.assert_allclose(eff.values[:, 0], eff.clean, atol=1e-5)
    joint = ci.scan(model, data, ci.sites.resid_pre(layers=[0]), joint=True, progress=False)
    np.testing.assert_allclose(joint.values[:, 0], eff.clean, atol=1e-5)


@settings(max_examples=6, deadline=None)
@given(batch_size=st.integers(1, 40), budget_mb=st.sampled_from([1, 2, 64, 2048]))
def test_results_do_not_depend_on_batch_size_or_budget(batch_size, budget_mb):
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=5, T=5)
    sites = ci.sites.head_out(positions=[-1, 2])
    ref = ci.scan(model, data, sites, batch_size=1, progress=False)
    a = ci.scan(model, data, sites, batch_size=batch_size, progress=False)
    b = ci.scan(model, data, sites, memory_budget=f"{budget_mb}MB", progress=False)
    np.testing.assert_allclose(a.values, ref.values, atol=1e-5)
    np.testing.assert_allclose(b.values, ref.values, atol=1e-5)


def test_budget_sets_pass_size_and_too_small_budget_names_the_minimum():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=5, T=5)
    small = ci.scan(model, data, ci.sites.resid_pre(), memory_budget="300KB", progress=False)
    big = ci.scan(model, data, ci.sites.resid_pre(), memory_budget="2GB", progress=False)
    assert small.meta["rows_per_pass"] < big.meta["rows_per_pass"]
    with pytest.raises(ci.BudgetError, match=r"Use memory_budget='[\d.]+[KMG]?B'"):
        ci.scan(model, data, ci.sites.resid_pre(), memory_budget="10KB", progress=False)


def test_random_site_sets_for_beats_random():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=3, T=5)
    sites = ci.sites.heads([(0, 1), (1, 2)], positions="end")
    eff = ci.scan(model, data, sites, joint=True, n_random=5, seed=1, progress=False)
    assert eff.random_values.shape == (3, 5)
    again = ci.scan(model, data, sites, joint=True, n_random=5, seed=1, progress=False)
    np.testing.assert_array_equal(eff.random_values, again.random_values)
    assert not np.allclose(eff.random_values, eff.values)


def test_checkpoint_resumes_after_a_kill(tmp_path, monkeypatch):
    from causalinterp.engine import unit
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=4, T=5)
    sites = ci.sites.resid_pre()
    full = ci.scan(model, data, sites, batch_size=4, progress=False)
    real = unit._run_patched
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(unit, "_run_patched", dying)
    ck = tmp_path / "scan"
    with pytest.raises(KeyboardInterrupt):
        ci.scan(model, data, sites, batch_size=4, checkpoint=ck, progress=False)
    assert len(list((ck / "units").glob("*.npz"))) == 3  # every finished unit is stored as it finishes
    calls["n"] = -100
    resumed = ci.scan(model, data, sites, batch_size=4, checkpoint=ck, progress=False)
    assert calls["n"] == -100 + (full.meta["n_passes"] - 3)  # only the unfinished passes ran
    assert resumed.meta["units_reused"] == 3
    np.testing.assert_array_equal(resumed.values, full.values)


def test_effects_frame_is_long_form():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=3, T=4)
    eff = ci.scan(model, data, ci.sites.head_out(layers=[1], positions=[-1]), progress=False)
    df = eff.to_frame()
    assert len(df) == 3 * 4
    assert set(df["head"]) == {0, 1, 2, 3}
    np.testing.assert_allclose(df.pivot(index="prompt", columns="head", values="value").to_numpy(), eff.values)


# ---- errors that name the problem and the fix ------------------------------------------------------
def test_bad_input_errors():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=3, T=4)
    with pytest.raises(ci.DataError, match="same length"):
        ci.ContrastSet.from_tokens([[1, 2, 3]], [[1, 2]], answer=[1])
    with pytest.raises(ci.DataError, match="one corrupt prompt per clean"):
        ci.ContrastSet.from_tokens([[1, 2], [3, 4]], [[1, 2]], answer=[1, 2])
    with pytest.raises(ci.DataError, match="empty"):
        ci.ContrastSet.from_tokens([], [], answer=[])
    with pytest.raises(ci.DataError, match="2 tokens"):
        ci.ContrastSet.from_tokens([[1, 2]], [[3, 4]], answer=[[5, 6]])
    with pytest.raises(ci.DataError, match="out of range"):
        ci.ContrastSet.from_tokens([[1, 2]], [[3, 4]], answer=[1], positions={"S2": [7]})
    with pytest.raises(ValueError, match="layer 5 does not exist.*0..1"):
        ci.scan(model, data, ci.sites.resid_pre(layers=[5]), progress=False)
    with pytest.raises(ValueError, match="head 9 does not exist"):
        ci.scan(model, data, ci.sites.heads([(0, 9)]), progress=False)
    with pytest.raises(ValueError, match="unknown named position 'S2'"):
        ci.scan(model, data, ci.sites.resid_pre(positions=["S2"]), progress=False)
    with pytest.raises(ValueError, match="needs wrong answers"):
        nowrong = ci.ContrastSet.from_tokens(data.clean, data.corrupt, data.answer)
        ci.scan(model, nowrong, ci.sites.resid_pre(), progress=False)
    with pytest.raises(ci.DataError, match="outside the model's vocabulary"):
        ci.scan(model, ci.ContrastSet.from_tokens([[1, 999]], [[1, 2]], answer=[1], wrong=[2]),
                ci.sites.resid_pre(), progress=False)
    with pytest.raises(ValueError, match="different lengths"):
        varlen = ci.ContrastSet.from_tokens([[1, 2], [1, 2, 3]], [[2, 2], [3, 2, 1]], answer=[1, 2], wrong=[3, 4])
        ci.scan(model, varlen, ci.sites.resid_pre(), progress=False)


def test_nan_metric_is_an_error_not_a_number():
    hf = build_hf("gpt2")
    with torch.no_grad():
        hf.lm_head.weight[5] = float("nan")
    model = ci.load_model(hf)
    data = ci.ContrastSet.from_tokens([[1, 2, 3]], [[3, 2, 1]], answer=[5], wrong=[6])
    with pytest.raises(ValueError, match="NaN or infinite"):
        ci.scan(model, data, ci.sites.resid_pre(), progress=False)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_blocks_below_the_lowest_patched_layer_are_skipped_without_changing_results(family, monkeypatch):
    from causalinterp.engine import compile
    hf = build_hf(family)
    model = ci.load_model(hf)
    data = random_data(n=3, T=5)
    sites = ci.sites.head_out(layers=[1], positions=[-1, 1])
    calls = {"n": 0}
    attn0 = hf.get_submodule({"gpt2": "transformer.h.0.attn", "gpt_neox": "gpt_neox.layers.0.attention",
                              "llama": "model.layers.0.self_attn"}[family])
    assert compile._can_skip(model)
    hook = attn0.register_forward_hook(lambda m, a, o: calls.update(n=calls["n"] + 1))
    fast = ci.scan(model, data, sites, batch_size=4, progress=False)
    hook.remove()
    assert calls["n"] == 2  # only the unpatched clean and corrupt runs computed layer 0
    monkeypatch.setattr(compile, "_can_skip", lambda model: False)
    slow = ci.scan(model, data, sites, batch_size=4, progress=False)
    np.testing.assert_allclose(fast.values, slow.values, atol=1e-5)


@pytest.mark.parametrize("family", ["qwen2", "mistral", "gemma"])
def test_llama_style_families_use_the_llama_table(family):
    hf = build_hf(family)
    model = ci.load_model(hf)
    assert model.family == "llama" and model.n_kv_heads == 2
    data = random_data(n=3, T=5)
    sites = ci.sites.explicit([Site("head_out", 1, 2, -1), Site("k", 0, 3, 2), Site("resid_mid", 1, None, 1),
                               Site("mlp_out", 0, None, ALL)])
    eff = ci.scan(model, data, sites, progress=False)
    np.testing.assert_allclose(eff.values, reference(hf, data, eff.sites), atol=TOL)
