"""Cross-check `scan` against TransformerLens' activation-patching helpers.

TransformerLens (4.3) wraps the Hugging Face model through `TransformerBridge.boot_transformers`,
runs one forward pass per site with a hook, and returns the batch-mean metric on a grid:
``[layer, pos]`` for resid_pre / attn_out / mlp_out and ``[layer, pos, head]`` for head outputs
(its ``hook_z``, the input of ``c_proj``: the same tensor as our ``head_out``).  Our per-prompt
``eff.values`` averaged over prompts must give the same numbers.

Site order of our sweeps (see `SiteSet.resolve`): layer-major then position for the residual-like
components; layer, head, position for ``head_out`` — so the head grid needs a transpose.

The bridge rewrites the Hugging Face module tree in place (and forces eager attention), so it gets
its own deep copy; the test first checks that its unpatched logits equal the original model's, so
both tools run on the same weights.  Both models use eager attention, so logits agree to float
rounding (with sdpa on one side only they drift by ~1e-6 on this model, still well inside 1e-4).
"""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest.importorskip("transformer_lens")
from transformer_lens import patching  # noqa: E402

import causalinterp as ci  # noqa: E402

N_LAYERS, N_HEADS, D_MODEL, VOCAB = 2, 4, 32, 60
N_PROMPTS, SEQ = 6, 5
EOT = VOCAB - 1  # also the BOS/EOS/pad token of the tiny tokenizer TransformerLens insists on
ATOL = 1e-4


def _tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=N_LAYERS, n_head=N_HEADS, n_embd=D_MODEL, vocab_size=VOCAB, n_positions=32,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=EOT, eos_token_id=EOT,
                     attn_implementation="eager")
    model = GPT2LMHeadModel(cfg)
    # Larger-than-default weights make patching effects clearly non-zero in a 2-layer model.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(8.0)
    return model.eval()


def _tiny_tokenizer(tmp_dir):
    """A word-level tokenizer over the tiny vocabulary, built offline.

    `boot_transformers(..., hf_model=...)` still wants a tokenizer, and without one it downloads
    gpt2's; ours is saved and reloaded so it has the `name_or_path` TransformerLens reads.  It is
    never used to tokenise anything: both tools get token ids.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(VOCAB - 1)}
    vocab["<|endoftext|>"] = EOT
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  add_bos_token=True)
    tok.save_pretrained(tmp_dir)
    return PreTrainedTokenizerFast.from_pretrained(tmp_dir)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformer_lens.model_bridge import TransformerBridge

    hf = _tiny_gpt2()
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(0, EOT, (N_PROMPTS, SEQ), generator=g)
    corrupt = torch.randint(0, EOT, (N_PROMPTS, SEQ), generator=g)
    answer = torch.randint(0, EOT, (N_PROMPTS,), generator=g)
    wrong = (answer + 1 + torch.randint(0, EOT - 1, (N_PROMPTS,), generator=g)) % EOT  # never == answer
    data = ci.ContrastSet.from_tokens(clean, corrupt, answer=answer, wrong=wrong)

    bridge = TransformerBridge.boot_transformers(
        "gpt2", hf_model=copy.deepcopy(hf), tokenizer=_tiny_tokenizer(tmp_path_factory.mktemp("tok")), device="cpu")
    bridge.eval()
    _, clean_cache = bridge.run_with_cache(clean)

    rows = torch.arange(N_PROMPTS)

    def per_prompt(logits):  # [batch, pos, vocab] -> [batch]: logit diff at the last position
        last = logits[:, -1, :].double()
        return last[rows, answer] - last[rows, wrong]

    def mean_logit_diff(logits):  # TransformerLens' default reduce="scalar" wants the batch mean
        return per_prompt(logits).mean()

    return {"hf": hf, "model": ci.load_model(hf, device="cpu"), "bridge": bridge, "data": data, "clean": clean,
            "corrupt": corrupt, "clean_cache": clean_cache, "metric": mean_logit_diff, "per_prompt": per_prompt}


def test_bridge_runs_the_same_weights(setup):
    """TransformerLens' unpatched logits equal the Hugging Face model's (the bridge got a deep copy)."""
    hf, bridge = setup["hf"], setup["bridge"]
    for toks in (setup["clean"], setup["corrupt"]):
        with torch.no_grad():
            ours = hf(toks).logits
            theirs = bridge(toks)
        assert theirs.shape == ours.shape
        torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    # the original model was not rewritten by the bridge
    assert type(hf.transformer.h[0].attn).__module__.startswith("transformers.")


def test_baselines_match(setup):
    """Our clean/corrupt baselines equal the metric on TransformerLens' unpatched runs."""
    eff = ci.scan(setup["model"], setup["data"], ci.sites.resid_pre(layers=0, positions=0), progress=False)
    with torch.no_grad():
        tl_clean = setup["per_prompt"](setup["bridge"](setup["clean"])).numpy()
        tl_corrupt = setup["per_prompt"](setup["bridge"](setup["corrupt"])).numpy()
    np.testing.assert_allclose(eff.clean, tl_clean, atol=ATOL, rtol=0)
    np.testing.assert_allclose(eff.corrupt, tl_corrupt, atol=ATOL, rtol=0)
    assert np.abs(eff.clean - eff.corrupt).max() > 0.1, "degenerate data: clean and corrupt agree"


# (our site set, TransformerLens helper, TL grid layout -> our site order)
CASES = {
    "resid_pre": (lambda: ci.sites.resid_pre(), patching.get_act_patch_resid_pre, "layer_pos"),
    "attn_out": (lambda: ci.sites.attn_out(), patching.get_act_patch_attn_out, "layer_pos"),
    "mlp_out": (lambda: ci.sites.mlp_out(), patching.get_act_patch_mlp_out, "layer_pos"),
    "head_out": (lambda: ci.sites.head_out(), patching.get_act_patch_attn_head_out_by_pos, "layer_pos_head"),
}


def _to_site_order(grid: np.ndarray, layout: str) -> np.ndarray:
    """TransformerLens grid -> flat vector in our site order."""
    if layout == "layer_pos":  # [L, P] -> layer-major, then position
        assert grid.shape[:2] == (N_LAYERS, SEQ)
        return grid.reshape(N_LAYERS * SEQ, *grid.shape[2:])
    assert grid.shape[:3] == (N_LAYERS, SEQ, N_HEADS)  # [L, P, H] -> [L, H, P] -> flat
    return np.swapaxes(grid, 1, 2).reshape(N_LAYERS * N_HEADS * SEQ, *grid.shape[3:])


def _check_site_labels(eff, component):
    if component == "head_out":
        expect = [(l, h, p) for l in range(N_LAYERS) for h in range(N_HEADS) for p in range(SEQ)]
        got = [(s.layer, s.head, s.position) for s in eff.sites]
    else:
        expect = [(l, p) for l in range(N_LAYERS) for p in range(SEQ)]
        got = [(s.layer, s.position) for s in eff.sites]
    assert got == expect
    assert all(s.component == component for s in eff.sites)


@pytest.mark.parametrize("component", list(CASES))
def test_scan_matches_transformerlens(setup, component):
    """Per-site means of scan(denoise, logit_diff) equal TransformerLens' batch-mean grid."""
    sites, tl_fn, layout = CASES[component]
    eff = ci.scan(setup["model"], setup["data"], sites(), intervention=ci.patch("denoise"),
                  metric=ci.metrics.logit_diff(), progress=False)
    _check_site_labels(eff, component)
    tl_grid = tl_fn(setup["bridge"], setup["corrupt"], setup["clean_cache"], setup["metric"])
    tl_grid = tl_grid.detach().double().numpy()
    ours = eff.values.mean(0)
    theirs = _to_site_order(tl_grid, layout)
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0, err_msg=f"{component}: means differ from TL")
    # not a vacuous match: patching moves the metric (by ~1, four orders above ATOL), differently per site
    assert np.abs(eff.values - eff.corrupt[:, None]).max() > 0.5
    assert np.ptp(ours) > 0.1


@pytest.mark.parametrize("component", ["resid_pre", "head_out"])
def test_per_prompt_values_match_transformerlens(setup, component):
    """Stronger than means: TL 4.3's reduce='none' keeps per-example values; they equal eff.values."""
    sites, tl_fn, layout = CASES[component]
    eff = ci.scan(setup["model"], setup["data"], sites(), progress=False)
    res = tl_fn(setup["bridge"], setup["corrupt"], setup["clean_cache"], setup["per_prompt"], reduce="none")
    theirs = _to_site_order(res.values.detach().double().numpy(), layout)  # [n_sites, batch]
    np.testing.assert_allclose(eff.values, theirs.T, atol=ATOL, rtol=0)
