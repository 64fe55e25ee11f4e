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
