"""Independent reference: activation patching with plain torch hooks, one prompt at a time.

Module names are written out here by hand (not taken from causalinterp.models.adapters), patches
return new tensors instead of writing in place, and nothing is batched — so agreement with the
engine checks the adapters, the batching and the nnsight writes all at once.
"""
from __future__ import annotations

import torch

MODULES = {
    "gpt2": {"resid_pre": ("transformer.h.{l}", "in"), "resid_mid": ("transformer.h.{l}.ln_2", "in"),
             "resid_post": ("transformer.h.{l}", "out"), "attn_out": ("transformer.h.{l}.attn", "out"),
             "mlp_out": ("transformer.h.{l}.mlp", "out"), "head_out": ("transformer.h.{l}.attn.c_proj", "in"),
             "qkv": ("transformer.h.{l}.attn.c_attn", "out")},
    "gpt_neox": {"resid_pre": ("gpt_neox.layers.{l}", "in"),
                 "resid_mid": ("gpt_neox.layers.{l}.post_attention_layernorm", "in"),
                 "resid_post": ("gpt_neox.layers.{l}", "out"), "attn_out": ("gpt_neox.layers.{l}.attention", "out"),
                 "mlp_out": ("gpt_neox.layers.{l}.mlp", "out"),
                 "head_out": ("gpt_neox.layers.{l}.attention.dense", "in"),
                 "qkv": ("gpt_neox.layers.{l}.attention.query_key_value", "out")},
    "llama": {"resid_pre": ("model.layers.{l}", "in"), "resid_mid": ("model.layers.{l}.post_attention_layernorm", "in"),
              "resid_post": ("model.layers.{l}", "out"), "attn_out": ("model.layers.{l}.self_attn", "out"),
              "mlp_out": ("model.layers.{l}.mlp", "out"), "head_out": ("model.layers.{l}.self_attn.o_proj", "in"),
              "q": ("model.layers.{l}.self_attn.q_proj", "out"), "k": ("model.layers.{l}.self_attn.k_proj", "out"),
              "v": ("model.layers.{l}.self_attn.v_proj", "out")},
}


def family_of(hf) -> str:
    return {"gpt2": "gpt2", "gpt_neox": "gpt_neox", "llama": "llama", "qwen2": "llama", "mistral": "llama",
            "gemma": "llama"}[hf.config.model_type]


def _dims(hf):
    c = hf.config
    H = c.num_attention_heads
    KV = getattr(c, "num_key_value_heads", None) or H
    return H, KV, c.hidden_size // H


def _where(family, component):
    table = MODULES[family]
    if component in ("q", "k", "v") and "qkv" in table:
        return table["qkv"]
    return table[component]


def to_heads(hf, component, t):
    """Canonical per-head tensor [1, T, heads, dh] (a copy) from the raw module tensor."""
    family = family_of(hf)
    H, KV, dh = _dims(hf)
    B, T = t.shape[:2]
    if component == "head_out":
        return t.reshape(B, T, H, dh).clone()
    i = "qkv".index(component)
    if family == "gpt2":
        d = H * dh
        return t[..., i * d:(i + 1) * d].reshape(B, T, H, dh).clone()
    if family == "gpt_neox":
        return t.reshape(B, T, H, 3 * dh)[..., i * dh:(i + 1) * dh].clone()
    return t.reshape(B, T, H if component == "q" else KV, dh).clone()


def from_heads(hf, component, raw, heads):
    """Raw module tensor with its per-head part replaced by `heads` (returns a new tensor)."""
    family = family_of(hf)
    H, KV, dh = _dims(hf)
    B, T = raw.shape[:2]
    if component == "head_out" or family == "llama":
        return heads.reshape(B, T, -1)
    i = "qkv".index(component)
    out = raw.clone()
    if family == "gpt2":
        d = H * dh
        out[..., i * d:(i + 1) * d] = heads.reshape(B, T, d)
        return out
    o = out.reshape(B, T, H, 3 * dh)
    o[..., i * dh:(i + 1) * dh] = heads
    return o.reshape(B, T, 3 * H * dh)


def kv_group(hf, component, head):
    H, KV, _ = _dims(hf)
    return head // (H // KV) if component in ("k", "v") else head


def read(hf, tokens, component, layer):
    """Canonical activation of one prompt through a plain forward hook: [T, d] or [T, heads, dh]."""
    path, io = _where(family_of(hf), component)
    mod = hf.get_submodule(path.format(l=layer))
    box = {}

    def keep(t):  # returns None, so the hook observes without changing anything
        box["x"] = t.detach().clone()

    if io == "in":
        h = mod.register_forward_pre_hook(lambda m, a: keep(a[0]))
    else:
        h = mod.register_forward_hook(lambda m, a, o: keep(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        hf(tokens[None])
    h.remove()
    x = box["x"]
    if component in ("head_out", "q", "k", "v"):
        x = to_heads(hf, component, x)
    return x[0]


def run_patched(hf, tokens, patches):
    """Last-position-agnostic logits [T, V] of one prompt with `patches` applied.

    patches: list of (component, layer, head or None, positions (list of ints) or None for all, values)
    where values has the canonical shape of the patched slice.
    """
    family = family_of(hf)
    hooks = []
    for component, layer, head, pos, values in patches:
        path, io = _where(family, component)
        mod = hf.get_submodule(path.format(l=layer))

        def replace(raw, component=component, head=head, pos=pos, values=values):
            T = raw.shape[1]
            idx = list(range(T)) if pos is None else pos
            if component in ("head_out", "q", "k", "v"):
                heads = to_heads(hf, component, raw)
                heads[0, idx, kv_group(hf, component, head)] = values
                return from_heads(hf, component, raw, heads)
            new = raw.clone()
            new[0, idx] = values
            return new

        if component == "resid_mid":
            # The norm's input is also the block's residual: write in place so both see the patch.
            hooks.append(mod.register_forward_pre_hook(
                lambda m, a, replace=replace: [a[0].copy_(replace(a[0]))] and None))
        elif io == "in":
            hooks.append(mod.register_forward_pre_hook(
                lambda m, a, replace=replace: (replace(a[0]),) + tuple(a[1:])))
        else:
            hooks.append(mod.register_forward_hook(
                lambda m, a, o, replace=replace: ((replace(o[0]),) + tuple(o[1:])) if isinstance(o, tuple) else replace(o)))
    try:
        with torch.no_grad():
            return hf(tokens[None]).logits[0]
    finally:
        for h in hooks:
            h.remove()


def logit_diff(logits_T, pos, answer, wrong):
    return float(logits_T[pos, answer] - logits_T[pos, wrong])


# Final norm and unembedding, written by hand (lens readouts): logits = unembed(norm(resid_post of the last block)).
FINAL = {"gpt2": ("transformer.ln_f", "lm_head"), "gpt_neox": ("gpt_neox.final_layer_norm", "lm_head"),
         "llama": ("model.norm", "lm_head")}


def lens_logits(hf, tokens, layer):
    """Logit-lens logits [T, V] of one prompt: block `layer`'s output through the final norm and unembedding."""
    norm, unembed = (hf.get_submodule(p) for p in FINAL[family_of(hf)])
    resid = read(hf, tokens, "resid_post", layer)
    with torch.no_grad():
        return unembed(norm(resid[None]))[0]


EMBED = {"gpt2": "transformer.wte", "gpt_neox": "gpt_neox.embed_in", "llama": "model.embed_tokens"}


def with_embedding_noise(hf, noise):
    """A hook handle adding `noise` [T, d] to the token embeddings of one prompt (remove() it after use)."""
    mod = hf.get_submodule(EMBED[family_of(hf)])
    return mod.register_forward_hook(lambda m, a, o: o + noise[None].to(o.dtype))
