"""load_model and the architecture adapters, on tiny random-weight models of each family (no hub)."""
import pytest
import torch

import causalinterp as ci
from causalinterp.models import UnsupportedModelError
from causalinterp.spec.sites import COMPONENTS

from conftest import build_hf
from reference import read


def test_dimensions_and_family(family):
    m = ci.load_model(build_hf(family))
    assert m.family == family
    assert (m.n_layers, m.n_heads, m.d_model, m.d_head) == (2, 4, 32, 8)
    assert m.n_kv_heads == (2 if family == "llama" else 4)
    assert m.tokenizer is None


def test_site_map_is_complete(family):
    m = ci.load_model(build_hf(family))
    table = m.site_map()
    assert list(table["component"]) == list(COMPONENTS)
    for row in table.itertuples():
        if row.module == "(none)":
            assert family == "gpt_neox" and row.component == "resid_mid" and "parallel" in row.note
        else:
            m.hf.get_submodule(row.module.format(layer=1))  # the module really exists


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama"])
def test_adapter_reads_equal_plain_hooks(family):
    hf = build_hf(family, parallel=False)
    m = ci.load_model(hf)
    toks = torch.randint(1, 64, (3, 6), generator=torch.Generator().manual_seed(0))
    for comp in m.components():
        for layer in range(m.n_layers):
            got = m.read(toks, comp, layer)
            for i in range(3):
                torch.testing.assert_close(got[i], read(hf, toks[i], comp, layer), atol=1e-5, rtol=1e-5)
            heads = {"head_out": 4, "q": 4, "k": m.n_kv_heads, "v": m.n_kv_heads}.get(comp)
            assert got.shape == ((3, 6, heads, 8) if heads else (3, 6, 32))


def test_components_compose_like_the_architecture():
    """Checks of meaning, independent of module names: the residual stream adds up, and the
    per-head outputs projected by W_O sum to the attention output."""
    hf = build_hf("gpt2")
    m = ci.load_model(hf)
    toks = torch.randint(1, 64, (2, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden = hf(toks, output_hidden_states=True).hidden_states
    for layer in range(2):
        pre, mid, post = (m.read(toks, c, layer) for c in ("resid_pre", "resid_mid", "resid_post"))
        attn, mlp, heads = (m.read(toks, c, layer) for c in ("attn_out", "mlp_out", "head_out"))
        torch.testing.assert_close(pre, hidden[layer])
        torch.testing.assert_close(mid, pre + attn, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(post, mid + mlp, atol=1e-5, rtol=1e-5)
        W_O = hf.transformer.h[layer].attn.c_proj.weight.view(4, 8, 32)  # Conv1D: [in, out]
        per_head = torch.einsum("bphd,hdm->bphm", heads, W_O)
        torch.testing.assert_close(per_head.sum(2) + hf.transformer.h[layer].attn.c_proj.bias, attn,
                                   atol=1e-5, rtol=1e-5)
        # slicing the projection's *output* by head is not the per-head output
        assert not torch.allclose(per_head[..., 0, :], attn)


def test_gqa_key_value_heads_map_query_heads_to_groups():
    from causalinterp.models.adapters import head_index
    assert [head_index("k", h, 4, 2) for h in range(4)] == [0, 0, 1, 1]
    assert [head_index("q", h, 4, 2) for h in range(4)] == [0, 1, 2, 3]


def test_unknown_architecture_names_families_and_contributing():
    from transformers import BertConfig, BertForMaskedLM
    bert = BertForMaskedLM(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                      intermediate_size=32, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match=r"gpt2.*gpt_neox.*llama.*CONTRIBUTING.md"):
        ci.load_model(bert)


def test_bad_arguments():
    m = ci.load_model(build_hf("gpt2"))
    with pytest.raises(UnsupportedModelError, match="layer 7 does not exist"):
        m.read(torch.tensor([[1, 2]]), "resid_pre", 7)
    with pytest.raises(UnsupportedModelError, match="component 'foo'"):
        m.location("foo", 0)
    with pytest.raises(ci.models.ModelLoadError, match="PreTrainedModel"):
        ci.load_model(42)
    with pytest.raises(ci.models.ModelLoadError, match="could not load"):
        ci.load_model("/nonexistent/path/to/model")


def test_wraps_without_copying_weights():
    hf = build_hf("llama")
    m = ci.load_model(hf, device="cpu")
    assert m.hf is hf
    assert m.hf.lm_head.weight.data_ptr() == hf.lm_head.weight.data_ptr()


# ---- every model type with a table: exact against hand-written hooks, one prompt at a time ----------------------
import numpy as np  # noqa: E402

from causalinterp.models.adapters import ADAPTERS, Absent  # noqa: E402
from causalinterp.spec.sites import ALL, Site  # noqa: E402

from conftest import CONFIGS, NO_TABLE  # noqa: E402
from reference import MODULES  # noqa: E402

# config variants (keys of conftest.build_hf) covering every model type in the tables
TABLE_MODELS = ["gpt2", "gpt_neox", "gpt_neox_seq", "llama", "qwen2", "mistral", "gemma", *CONFIGS]
PARALLEL = {"gpt_neox", "gptj", "falcon", "falcon_new", "cohere"}


def build(key):
    return build_hf("gpt_neox", parallel=False) if key == "gpt_neox_seq" else build_hf(key)


def test_every_model_type_in_the_tables_is_verified_here():
    built = {build(k).config.model_type for k in TABLE_MODELS}
    listed = {t for a in ADAPTERS for t in a.model_types}
    assert listed <= built, f"table model types without a config test: {sorted(listed - built)}"
    assert len(listed) >= 12


@pytest.mark.parametrize("key", TABLE_MODELS)
def test_table_reads_equal_plain_hooks(key):
    hf = build(key)
    m = ci.load_model(hf)
    assert m.adapter.status == "verified"
    toks = torch.randint(1, 64, (2, 5), generator=torch.Generator().manual_seed(0))
    comps = m.components()
    assert ("resid_mid" in comps) == (key not in PARALLEL)
    for comp in comps:
        if comp == "q" and key == "falcon_new":
            continue  # grouped layout: q is absent per head (tested below)
        for layer in range(m.n_layers):
            got = m.read(toks, comp, layer)
            for i in range(2):
                torch.testing.assert_close(got[i], read(hf, toks[i], comp, layer), atol=1e-5, rtol=1e-5,
                                           msg=lambda s: f"{key} {comp} L{layer}: {s}")


# One config per distinct site layout runs by default (post-norms, per-head q/k norms, fused layouts, parallel
# blocks, MoE); the Llama-named rest, already covered by reads and test_engine, run with the slow tests (CI).
SCAN_DEFAULT = {"gemma2", "gemma3_text", "olmo2", "qwen3", "phi3", "falcon", "falcon_seq", "falcon_new", "stablelm",
                "gptj", "mixtral"}


@pytest.mark.parametrize("key", [k if k in SCAN_DEFAULT else pytest.param(k, marks=pytest.mark.slow)
                                 for k in TABLE_MODELS if k not in ("gpt2", "gpt_neox", "llama")])
def test_table_scans_equal_hook_patching(key):
    """Denoising every component (q/k/v on GQA groups included) equals hand-written hook patching."""
    from test_engine import reference
    from conftest import random_data
    hf = build(key)
    model = ci.load_model(hf)
    data = random_data(n=3, T=5)
    for comp in model.components():
        if comp in ("head_out", "q", "k", "v"):
            if comp == "q" and key == "falcon_new":
                continue
            sites = [Site(comp, 0, 1, -1), Site(comp, 1, 3, ALL)]
        else:
            sites = [Site(comp, 0, None, 2), Site(comp, 1, None, ALL)]
        eff = ci.scan(model, data, ci.sites.explicit(sites), progress=False)
        np.testing.assert_allclose(eff.values, reference(hf, data, eff.sites), atol=1e-4, err_msg=f"{key} {comp}")
        assert np.abs(eff.values - eff.corrupt[:, None]).max() > 1e-3, f"{key} {comp}: no effect, test is vacuous"


def _w_o(hf, key, layer):
    """W_O as [heads * d_head, d_model] and its bias, from the hand-written head_out module."""
    path = MODULES[hf.config.model_type]["head_out"][0].format(l=layer)
    mod = hf.get_submodule(path)
    W = mod.weight if type(mod).__name__ == "Conv1D" else mod.weight.T  # Conv1D stores [in, out]
    return mod, W, mod.bias


@pytest.mark.parametrize("key", TABLE_MODELS)
def test_components_compose(key):
    """resid_mid = resid_pre + attn_out, resid_post = resid_mid + mlp_out (parallel blocks: resid_post =
    resid_pre + attn_out + mlp_out); Granite scales each sublayer's write by residual_multiplier.  Per-head outputs
    through W_O sum to the projection's output: attn_out itself in pre-norm families; in post-norm families
    (Gemma 2/3, OLMo 2) the post-attention norm of it."""
    hf = build(key)
    m = ci.load_model(hf)
    toks = torch.randint(1, 64, (2, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden = hf(toks, output_hidden_states=True).hidden_states
    scale = getattr(hf.config, "residual_multiplier", 1.0) if hf.config.model_type == "granite" else 1.0
    tol = dict(atol=2e-5, rtol=2e-5)
    for layer in range(2):
        pre, post, attn, mlp, heads = (m.read(toks, c, layer) for c in
                                       ("resid_pre", "resid_post", "attn_out", "mlp_out", "head_out"))
        if layer == 0 and hf.config.model_type not in ("gemma", "gemma2", "gemma3_text", "granite"):
            torch.testing.assert_close(pre, hidden[0])  # (Gemma/Granite scale the embedding inside the model)
        if layer == 1:
            torch.testing.assert_close(pre, previous_post)  # noqa: F821 - set in the previous iteration
        previous_post = post  # noqa: F841
        if key in PARALLEL:
            torch.testing.assert_close(post, pre + attn + mlp, **tol)
        else:
            mid = m.read(toks, "resid_mid", layer)
            torch.testing.assert_close(mid, pre + scale * attn, **tol)
            torch.testing.assert_close(post, mid + scale * mlp, **tol)
        mod, W, b = _w_o(hf, key, layer)
        per_head = torch.einsum("bphd,hdm->bphm", heads, W.reshape(m.n_heads, m.d_head, m.d_model))
        summed = per_head.sum(2) + (b if b is not None else 0)
        if hf.config.model_type in ("gemma2", "gemma3_text", "olmo2"):
            norm = hf.get_submodule(f"model.layers.{layer}.post_attention_layernorm")
            with torch.no_grad():
                torch.testing.assert_close(norm(summed), attn, **tol)
            assert not torch.allclose(summed, attn, atol=1e-3)  # the post-norm really breaks linearity in heads
        else:
            torch.testing.assert_close(summed, attn, **tol)


@pytest.mark.parametrize("key", TABLE_MODELS)
def test_denoising_resid_pre_everywhere_at_layer0_restores_clean(key):
    from conftest import random_data
    model = ci.load_model(build(key))
    data = random_data(n=3, T=5)
    eff = ci.scan(model, data, ci.sites.resid_pre(layers=[0], positions="all"), progress=False)
    np.testing.assert_allclose(eff.values[:, 0], eff.clean, atol=1e-5)


def test_site_map_says_where_post_norm_sites_are_and_that_they_are_verified():
    m = ci.load_model(build_hf("gemma2"))
    t = m.site_map().set_index("component")
    assert t.loc["attn_out", "module"] == "model.layers.{layer}.post_attention_layernorm"
    assert t.loc["resid_mid", "module"] == "model.layers.{layer}.pre_feedforward_layernorm"
    assert t.loc["mlp_out", "module"] == "model.layers.{layer}.post_feedforward_layernorm"
    assert set(t["status"]) == {"verified"}
    assert "post_attention_layernorm" in m.adapter.notes


def test_falcon_grouped_q_is_a_clear_error_not_a_wrong_head():
    model = ci.load_model(build_hf("falcon_new"))
    assert model.n_kv_heads == 2
    from conftest import random_data
    with pytest.raises(UnsupportedModelError, match="q per head is not addressable"):
        ci.scan(model, random_data(n=2, T=4), ci.sites.explicit([Site("q", 0, 1, -1)]), progress=False)


def test_parallel_blocks_have_no_resid_mid_with_the_reason():
    for key in ("gptj", "falcon", "cohere"):
        m = ci.load_model(build_hf(key))
        with pytest.raises(UnsupportedModelError, match="parallel attention"):
            m.location("resid_mid", 0)


# ---- derived adapters ----------------------------------------------------------------------------------------------
def _same_sites(a, b):
    return {c: (a.components.get(c), b.components.get(c)) for c in COMPONENTS
            if a.components.get(c) != b.components.get(c)
            and not (isinstance(a.components.get(c), Absent) and isinstance(b.components.get(c), Absent))}


@pytest.mark.parametrize("key", ["gpt2", "llama", "gemma2", "falcon", "qwen3"])
def test_derivation_finds_what_the_tables_say(key):
    """Derivation ignores the table (adapter='derive') and must land on the same modules and layouts."""
    hf = build(key)
    table, derived = ci.load_model(hf).adapter, ci.load_model(hf, adapter="derive").adapter
    assert derived.status == "derived"
    assert _same_sites(table, derived) == {}


@pytest.mark.slow
@pytest.mark.parametrize("key", [k for k in TABLE_MODELS if k not in ("gpt2", "llama", "gemma2", "falcon", "qwen3")])
def test_derivation_finds_what_the_tables_say_everywhere(key):
    hf = build(key)
    table, derived = ci.load_model(hf).adapter, ci.load_model(hf, adapter="derive").adapter
    diff = _same_sites(table, derived)
    if key == "granite":  # residual_multiplier: sublayer outputs do not add up unscaled, so none is claimed
        assert set(diff) == {"resid_mid", "attn_out", "mlp_out"}
        assert all(isinstance(d, Absent) for _, d in diff.values())
    elif key == "falcon_new":  # grouped layout: no per-head q view exists
        assert set(diff) == {"q"} and isinstance(diff["q"][1], Absent)
    else:
        assert diff == {}


DERIVED_OK = ["starcoder2", "phi", "gpt_neo", "bloom"]


@pytest.mark.parametrize("key", DERIVED_OK)
def test_derived_adapter_is_exact_on_families_without_a_table(key):
    hf = build_hf(key)
    model = ci.load_model(hf)
    assert model.adapter.status == "derived"
    table = model.site_map()
    assert set(table["status"]) <= {"derived", "absent"}
    expected_absent = {"resid_mid"} if key == "phi" else set()
    assert set(table.loc[table.status == "absent", "component"]) == expected_absent
    from test_engine import reference
    from conftest import random_data
    data = random_data(n=2, T=5)
    for comp in model.components():
        sites = ([Site(comp, 1, 3, ALL), Site(comp, 0, 2, -1)] if comp in ("head_out", "q", "k", "v")
                 else [Site(comp, 1, None, 2)])
        eff = ci.scan(model, data, ci.sites.explicit(sites), progress=False)
        np.testing.assert_allclose(eff.values, reference(hf, data, eff.sites), atol=1e-4, err_msg=f"{key} {comp}")


def test_derivation_refuses_what_it_cannot_prove():
    """CodeGen fuses q/v/k in an order no known layout has: q passes its checks, k and v do not, and asking for
    them is an error naming the component and CONTRIBUTING.md.  OPT computes its MLP on a flattened [batch*pos, d]
    stream, so no [batch, pos, d] module output adds up to the residual stream."""
    codegen = ci.load_model(build_hf("codegen"))
    assert codegen.location("q", 0).module == "transformer.h.0.attn.qkv_proj"
    for comp in ("k", "v"):
        with pytest.raises(UnsupportedModelError, match=rf"component '{comp}' could not be derived.*CONTRIBUTING.md"):
            codegen.location(comp, 0)
    opt = ci.load_model(build_hf("opt"))
    for comp in ("attn_out", "mlp_out", "resid_mid"):
        with pytest.raises(UnsupportedModelError, match=rf"'{comp}' could not be derived for model_type 'opt'"):
            opt.location(comp, 1)
    assert opt.location("head_out", 0).module == "model.decoder.layers.0.self_attn.out_proj"


def test_derivation_checks_cannot_be_fooled_by_a_wrong_guess():
    """Hand the checker wrong candidates; each must be rejected."""
    from causalinterp.models.derive import _Deriver
    m = ci.load_model(build_hf("llama"))
    d = _Deriver(m)
    d.search()
    assert d.check_qkv("q", "self_attn.q_proj", "separate", None, 0)
    assert d.check_qkv("v", "self_attn.v_proj", "separate", 2, 0)
    assert not d.check_qkv("q", "self_attn.k_proj", "separate", None, 0)  # a key is not a query
    assert not d.check_qkv("k", "self_attn.v_proj", "separate", 2, 0)  # values act linearly, keys do not
    assert not d.check_qkv("v", "self_attn.k_proj", "separate", 2, 0)
    assert not d.check_qkv("k", "self_attn.k_proj", "separate", 1, 0)  # wrong number of key/value groups
    gpt2 = _Deriver(ci.load_model(build_hf("gpt2")))
    gpt2.search()
    assert gpt2.check_qkv("k", "attn.c_attn", "concat", 4, 0)
    assert not gpt2.check_qkv("k", "attn.c_attn", "neox", 4, 0)  # wrong fused layout


def test_not_a_decoder_cannot_be_derived():
    from transformers import BertConfig, BertForMaskedLM
    bert = BertForMaskedLM(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                      intermediate_size=32, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match=r"not a decoder-only causal LM.*CONTRIBUTING.md"):
        ci.load_model(bert, adapter="derive")


def test_models_package_does_not_import_testbeds():
    """The testbeds build on models; models reaches them only through a registered "testbed:" loader."""
    import pathlib
    import causalinterp.models as pkg
    for f in pathlib.Path(pkg.__file__).parent.glob("*.py"):
        assert "testbeds" not in f.read_text().replace("the testbeds", ""), f.name
    from causalinterp.models.load import _SCHEMES
    assert "testbed" in _SCHEMES


# ---- the real model and its GGUF twin ----------------------------------------------------------------------------
def _shared_models():
    """`<clone>/../shared/models` (CI), else $CAUSALINTERP_SHARED/models, else /work/shared/models; None if absent."""
    import os
    from pathlib import Path
    bases = [Path(__file__).resolve().parents[2] / "shared"]
    if os.environ.get("CAUSALINTERP_SHARED"):
        bases.append(Path(os.environ["CAUSALINTERP_SHARED"]))
    bases.append(Path("/work/shared"))
    return next((b / "models" for b in bases if (b / "models" / "gguf" / "stories260K.gguf").is_file()
                 and (b / "models" / "stories260K" / "config.json").is_file()), None)


def test_real_model_and_its_gguf_twin_give_identical_scans():
    shared = _shared_models()
    if shared is None:
        pytest.skip("../shared/models/stories260K and ../shared/models/gguf are absent in this checkout")
    pytest.importorskip("gguf", reason="the gguf package (in the dev extra) reads GGUF files")
    hf_model = ci.load_model(str(shared / "stories260K"), device="cpu")
    gguf_model = ci.load_model(str(shared / "gguf" / "stories260K.gguf"), device="cpu")
    assert (hf_model.family, gguf_model.family) == ("llama", "llama")
    assert gguf_model.n_kv_heads == 4 and gguf_model.config.pad_token_id is None  # the padding-id workaround
    tok = hf_model.tokenizer
    clean = [tok(t).input_ids for t in ("Once upon a time, there was a girl named Lily. Lily",
                                        "Tom had a red ball. He gave the ball to")]
    corrupt = [tok(t).input_ids for t in ("Once upon a time, there was a girl named Sara. Lily",
                                          "Tom had a red kite. He gave the ball to")]
    n = min(len(c) for c in clean + corrupt)
    clean, corrupt = [c[:n] for c in clean], [c[:n] for c in corrupt]
    data = ci.ContrastSet.from_tokens(clean, corrupt, answer=[tok(" was").input_ids[-1]] * 2,
                                      wrong=[tok(" the").input_ids[-1]] * 2)
    sites = ci.sites.explicit([Site("resid_pre", 2, None, ALL), Site("head_out", 1, 5, -1), Site("k", 3, 6, -2),
                               Site("mlp_out", 4, None, -1)])
    a = ci.scan(hf_model, data, sites, progress=False)
    b = ci.scan(gguf_model, data, sites, progress=False)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.clean, b.clean)
    assert np.abs(a.values - a.corrupt[:, None]).max() > 1e-4


def test_sitemap_command_prints_components_modules_and_status(tmp_path, capsys):
    from causalinterp.cli import main
    build_hf("starcoder2").save_pretrained(tmp_path / "sc2")
    assert main(["sitemap", str(tmp_path / "sc2")]) == 0
    out = capsys.readouterr().out
    assert "adapter=derived" in out
    for comp in COMPONENTS:
        assert comp in out
    assert "model.layers.{layer}.self_attn.o_proj" in out and "derived" in out
    build_hf("gemma2").save_pretrained(tmp_path / "g2")
    assert main(["sitemap", "--model", str(tmp_path / "g2")]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "post_feedforward_layernorm" in out and "notes:" in out
