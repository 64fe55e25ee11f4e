"""Independent reference: activation patching with plain torch hooks, one prompt at a time.

Module names are written out here by hand (not taken from causalinterp.models.adapters), patches
return new tensors instead of writing in place, and nothing is batched — so agreement with the
engine checks the adapters, the batching and the nnsight writes all at once.
"""
from __future__ import annotations

import weakref

import torch

def _llama_like(attn="self_attn", o="o_proj", q="q_proj", k="k_proj", v="v_proj", mid="post_attention_layernorm",
                prefix="model.layers"):
    L = prefix + ".{l}"
    t = {"resid_pre": (L, "in"), "resid_post": (L, "out"), "attn_out": (f"{L}.{attn}", "out"),
         "mlp_out": (f"{L}.mlp", "out"), "head_out": (f"{L}.{attn}.{o}", "in"),
         "q": (f"{L}.{attn}.{q}", "out"), "k": (f"{L}.{attn}.{k}", "out"), "v": (f"{L}.{attn}.{v}", "out")}
    if mid:
        t["resid_mid"] = (f"{L}.{mid}", "in")
    return t


def _post_norm(mid, q="q_proj", k="k_proj"):
    t = _llama_like(q=q, k=k, mid=mid)
    t["attn_out"] = ("model.layers.{l}.post_attention_layernorm", "out")
    t["mlp_out"] = ("model.layers.{l}.post_feedforward_layernorm", "out")
    return t


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
    "llama": _llama_like(),
    # the residual stream between attention and MLP is the input of the pre-MLP norm (Gemma 2/3) or of the MLP
    # itself (OLMo 2); what the sublayers add to the stream is the output of the norm after them
    "gemma2": _post_norm("pre_feedforward_layernorm"),
    "gemma3_text": _post_norm("pre_feedforward_layernorm", q="q_norm", k="k_norm"),
    "olmo2": _post_norm("mlp", q="q_norm", k="k_norm"),
    "qwen3": _llama_like(q="q_norm", k="k_norm"),
    "cohere": _llama_like(q="q_norm", k="k_norm", mid=None),
    "stablelm": _llama_like(q="q_layernorm", k="k_layernorm"),
    "phi3": {**_llama_like(), "qkv": ("model.layers.{l}.self_attn.qkv_proj", "out")},
    "gptj": _llama_like(attn="attn", o="out_proj", mid=None, prefix="transformer.h"),
    "falcon": {"resid_pre": ("transformer.h.{l}", "in"), "resid_mid": ("transformer.h.{l}.post_attention_layernorm", "in"),
               "resid_post": ("transformer.h.{l}", "out"), "attn_out": ("transformer.h.{l}.self_attention", "out"),
               "mlp_out": ("transformer.h.{l}.mlp", "out"), "head_out": ("transformer.h.{l}.self_attention.dense", "in"),
               "qkv": ("transformer.h.{l}.self_attention.query_key_value", "out")},
    # families without a table (their adapters are derived); written from each model's source
    "starcoder2": _llama_like(),
    "phi": _llama_like(o="dense", mid=None),
    "gpt_neo": {**_llama_like(attn="attn", o="attention.out_proj", q="attention.q_proj", k="attention.k_proj",
                              v="attention.v_proj", mid="ln_2", prefix="transformer.h")},
    # BLOOM's attention and MLP modules add the residual themselves: what they add is their last projection
    "bloom": {"resid_pre": ("transformer.h.{l}", "in"), "resid_mid": ("transformer.h.{l}.post_attention_layernorm", "in"),
              "resid_post": ("transformer.h.{l}", "out"), "attn_out": ("transformer.h.{l}.self_attention.dense", "out"),
              "mlp_out": ("transformer.h.{l}.mlp.dense_4h_to_h", "out"),
              "head_out": ("transformer.h.{l}.self_attention.dense", "in"),
              "qkv": ("transformer.h.{l}.self_attention.query_key_value", "out")},
}
for _t in ("qwen2", "mistral", "gemma", "olmo", "granite", "mixtral"):
    MODULES[_t] = MODULES["llama"]
MODULES["qwen3_moe"] = MODULES["qwen3"]


def family_of(hf) -> str:
    return hf.config.model_type


def _dims(hf):
    c = hf.config
    H = c.num_attention_heads
    if c.model_type == "falcon":
        KV = c.num_kv_heads if c.new_decoder_architecture else (1 if c.multi_query else H)
    else:
        KV = getattr(c, "num_key_value_heads", None) or H
    dh = getattr(c, "head_dim", None) or c.hidden_size // H
    return H, KV, dh


BHTD = ("gemma3_text", "stablelm")  # q/k norms applied to [batch, heads, pos, d_head]


def _fused_layout(hf):
    """How a fused q/k/v projection orders its output (written from each model's source, not the adapters)."""
    c = hf.config
    if c.model_type in ("gpt2", "phi3"):
        return "q|k|v"
    if c.model_type in ("gpt_neox", "bloom"):
        return "per-head"
    if c.model_type == "falcon":
        if c.new_decoder_architecture:
            return "per-group"
        return "q|k|v" if c.multi_query else "per-head"
    return None


def _where(family, component):
    table = MODULES[family]
    if component in ("q", "k", "v") and "qkv" in table:
        return table["qkv"]
    return table[component]


def to_heads(hf, component, t):
    """Canonical per-head tensor [1, T, heads, dh] (a copy) from the raw module tensor."""
    H, KV, dh = _dims(hf)
    n = H if component in ("q", "head_out") else KV
    if hf.config.model_type in BHTD and component in ("q", "k"):  # per-head norm after the transpose
        return t.transpose(1, 2).clone()
    B, T = t.shape[:2]
    if component == "head_out":
        return t.reshape(B, T, H, dh).clone()
    fused, i = _fused_layout(hf), "qkv".index(component)
    if fused == "q|k|v":
        start = [0, H * dh, (H + KV) * dh][i]
        return t[..., start:start + n * dh].reshape(B, T, n, dh).clone()
    if fused == "per-head":
        return t.reshape(B, T, H, 3, dh)[..., i, :].clone()
    if fused == "per-group":
        g = H // KV
        grouped = t.reshape(B, T, KV, g + 2, dh)
        return (grouped[..., :g, :].reshape(B, T, H, dh) if i == 0 else grouped[..., g + i - 1, :]).clone()
    return t.reshape(B, T, n, dh).clone()


def from_heads(hf, component, raw, heads):
    """Raw module tensor with its per-head part replaced by `heads` (returns a new tensor)."""
    H, KV, dh = _dims(hf)
    n = H if component in ("q", "head_out") else KV
    if hf.config.model_type in BHTD and component in ("q", "k"):
        return heads.transpose(1, 2).contiguous()
    B, T = raw.shape[:2]
    fused = None if component == "head_out" else _fused_layout(hf)
    if fused is None:
        return heads.reshape(raw.shape)
    i = "qkv".index(component)
    out = raw.clone()
    if fused == "q|k|v":
        start = [0, H * dh, (H + KV) * dh][i]
        out[..., start:start + n * dh] = heads.reshape(B, T, n * dh)
        return out
    if fused == "per-head":
        o = out.reshape(B, T, H, 3, dh)
        o[..., i, :] = heads
        return o.reshape(raw.shape)
    g = H // KV
    o = out.reshape(B, T, KV, g + 2, dh)
    if i == 0:
        o[..., :g, :] = heads.reshape(B, T, KV, g, dh)
    else:
        o[..., g + i - 1, :] = heads
    return o.reshape(raw.shape)


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
            if component in ("head_out", "q", "k", "v"):
                heads = to_heads(hf, component, raw)  # [1, T, heads, dh] whatever the raw layout
                idx = list(range(heads.shape[1])) if pos is None else pos
                heads[0, idx, kv_group(hf, component, head)] = values
                return from_heads(hf, component, raw, heads)
            idx = list(range(raw.shape[1])) if pos is None else pos
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


# --- path patching (Wang et al. 2022), written independently of causalinterp/engine/paths.py ------------------
# Step 2 runs the base prompt with every attention and MLP output frozen to its base value except the senders
# (so the senders' change travels only along the residual stream) and records each receiver's input projection
# (q/k/v) or MLP output; step 3 runs the base prompt with those receiver values written in.  A "logits" receiver
# reads step 2's logits.  Hooks return new tensors (resid_mid is written in place, as in run_patched).

def _hook_out(mod, fn):
    return mod.register_forward_hook(
        lambda m, a, o: ((fn(o[0]),) + tuple(o[1:])) if isinstance(o, tuple) else fn(o))


# base-run activations per model and prompt: read once, used by every path of the prompt.  Keyed by the model
# object itself (weakly), not id(model): a freed model's id can be reused by a new one, which then read another
# model's activations (a flaky failure of test_every_path_kind_matches_hooks in a full run)
_BASE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def path_patched(hf, base_tokens, senders, receivers, n_layers):
    """Logits [T, V] of one prompt after path patching.

    senders: list of (component, layer, head or None, positions (list) or None, new values of that slice);
    receivers: "logits", or a list of (component in q/k/v/mlp_out, layer, head or None, positions or None).
    """
    family = family_of(hf)
    table = MODULES[family]
    get = lambda comp, l: hf.get_submodule(table[comp][0].format(l=l))  # noqa: E731
    per_model = _BASE.setdefault(hf, {})
    key = tuple(base_tokens.tolist())
    if key not in per_model:
        per_model[key] = {(c, l): read(hf, base_tokens, c, l) for l in range(n_layers)
                      for c in ("attn_out", "mlp_out", "head_out")}
    base = per_model[key]
    by_layer = {}
    for s in senders:
        by_layer.setdefault((s[0], s[1]), []).append(s)

    def put(t, pos, vals, head=None):
        t = t.clone()
        idx = list(range(t.shape[0])) if pos is None else pos
        if head is None:
            t[idx] = vals
        else:
            t[idx, head] = vals
        return t

    recorded, hooks = {}, []
    for l in range(n_layers):
        if ("head_out", l) in by_layer:   # freeze every head at the output projection's input, senders patched
            heads = base[("head_out", l)]
            for _, _, h, pos, vals in by_layer[("head_out", l)]:
                heads = put(heads, pos, vals, h)
            raw = lambda heads=heads: heads.reshape(1, heads.shape[0], -1)  # noqa: E731
            hooks.append(get("head_out", l).register_forward_pre_hook(lambda m, a, raw=raw: (raw(),) + tuple(a[1:])))
        else:                              # freeze the attention output (senders patched)
            attn = base[("attn_out", l)]
            for _, _, _, pos, vals in by_layer.get(("attn_out", l), []):
                attn = put(attn, pos, vals)
            hooks.append(_hook_out(get("attn_out", l), lambda o, attn=attn: attn[None].to(o.dtype)))
        mlp = base[("mlp_out", l)]
        for _, _, _, pos, vals in by_layer.get(("mlp_out", l), []):
            mlp = put(mlp, pos, vals)

        def freeze_mlp(o, mlp=mlp, l=l):
            recorded[("mlp_out", l)] = o[0].detach().clone()
            return mlp[None].to(o.dtype)
        hooks.append(_hook_out(get("mlp_out", l), freeze_mlp))
        for _, _, _, pos, vals in by_layer.get(("resid_pre", l), []):
            hooks.append(get("resid_pre", l).register_forward_pre_hook(
                lambda m, a, pos=pos, vals=vals: (put(a[0][0], pos, vals)[None],) + tuple(a[1:])))
        for _, _, _, pos, vals in by_layer.get(("resid_post", l), []):
            hooks.append(_hook_out(get("resid_post", l), lambda o, pos=pos, vals=vals: put(o[0], pos, vals)[None]))
        for _, _, _, pos, vals in by_layer.get(("resid_mid", l), []):
            hooks.append(get("resid_mid", l).register_forward_pre_hook(
                lambda m, a, pos=pos, vals=vals: [a[0].copy_(put(a[0][0], pos, vals)[None])] and None))
        if receivers != "logits" and any(r[0] in "qkv" and r[1] == l for r in receivers):
            mod = hf.get_submodule(_where(family, "q")[0].format(l=l))
            mods = {c: hf.get_submodule(_where(family, c)[0].format(l=l)) for c in "qkv"}
            for c, m in mods.items():
                hooks.append(m.register_forward_hook(
                    lambda m_, a, o, c=c, l=l: recorded.__setitem__((c, l), to_heads(
                        hf, c, (o[0] if isinstance(o, tuple) else o).detach())[0])))
            del mod
    try:
        with torch.no_grad():
            step2 = hf(base_tokens[None]).logits[0]
    finally:
        for h in hooks:
            h.remove()
    if receivers == "logits":
        return step2
    patches = []
    for comp, l, h, pos in receivers:
        vals = recorded[(comp, l)]
        if pos is not None:
            vals = vals[pos]
        if h is not None:
            vals = vals[:, kv_group(hf, comp, h)]
        patches.append((comp, l, h, pos, vals))
    return run_patched(hf, base_tokens, patches)


# --- edge ablation, written independently of causalinterp/engine/edges.py ---------------------------------------
# Senders: ("embed",) (the residual stream entering layer 0), ("head", l, h) (W_O restricted to head h applied to its
# per-head output, bias excluded) and ("mlp", l) (the MLP's output).  Receivers: ("q", l, h), ("k", l, g), ("v", l, g)
# (g is the key/value group under GQA), ("mlp", l) (the MLP's input) and ("logits",) (the final norm's input).
# The reference uses auto-circuit's single-pass formulation: ONE forward pass of the clean prompt in which every
# receiver reads   actual stream of this pass - sum over its removed edges u -> v of (o_u - a_u),   o_u being what u
# wrote in this same pass (so a sender's output already carries the ablations of the edges into it) and a_u its
# ablated contribution.  A per-head q/k/v input is pushed through the block's input norm and the projection again
# for that head alone (module.forward(), which skips the hooks), and only that head's slice of the projection's
# output is replaced.  Hooks return new tensors; nothing is batched.

EDGE = {  # the modules an edge-ablated run touches, written from each model's source
    "gpt2": {"block": "transformer.h.{l}", "norm_attn": "transformer.h.{l}.ln_1",
             "proj": {"transformer.h.{l}.attn.c_attn": "qkv"}, "o": "transformer.h.{l}.attn.c_proj",
             "norm_mlp": "transformer.h.{l}.ln_2", "mlp": "transformer.h.{l}.mlp",
             "final": "transformer.ln_f", "unembed": "lm_head"},
    "gpt_neox": {"block": "gpt_neox.layers.{l}", "norm_attn": "gpt_neox.layers.{l}.input_layernorm",
                 "proj": {"gpt_neox.layers.{l}.attention.query_key_value": "qkv"},
                 "o": "gpt_neox.layers.{l}.attention.dense",
                 "norm_mlp": "gpt_neox.layers.{l}.post_attention_layernorm", "mlp": "gpt_neox.layers.{l}.mlp",
                 "final": "gpt_neox.final_layer_norm", "unembed": "lm_head"},
    "llama": {"block": "model.layers.{l}", "norm_attn": "model.layers.{l}.input_layernorm",
              "proj": {f"model.layers.{{l}}.self_attn.{c}_proj": c for c in "qkv"},
              "o": "model.layers.{l}.self_attn.o_proj",
              "norm_mlp": "model.layers.{l}.post_attention_layernorm", "mlp": "model.layers.{l}.mlp",
              "final": "model.norm", "unembed": "lm_head"},
}
CONV1D = ("gpt2",)  # GPT-2's projections are Conv1D: y = x @ W + b with W [in, out]


def parallel_blocks(hf) -> bool:
    """GPT-NeoX with use_parallel_residual: the MLP of a layer reads the layer's input, not the attention output."""
    return family_of(hf) == "gpt_neox" and bool(hf.config.use_parallel_residual)


def edge_senders(hf, n_layers):
    H, _, _ = _dims(hf)
    return [("embed",)] + [s for l in range(n_layers) for s in [("head", l, h) for h in range(H)] + [("mlp", l)]]


def edge_receivers(hf, n_layers):
    H, KV, _ = _dims(hf)
    return [r for l in range(n_layers) for r in [("q", l, h) for h in range(H)] + [(c, l, g) for c in "kv"
                                                                                   for g in range(KV)] + [("mlp", l)]
            ] + [("logits",)]


def upstream(hf, sender, receiver) -> bool:
    """Whether `sender` writes to the residual stream before `receiver` reads it."""
    if receiver == ("logits",) or sender == ("embed",):
        return True
    l = receiver[1]
    if receiver[0] == "mlp" and sender[0] == "head" and not parallel_blocks(hf):
        return sender[1] <= l
    return sender[1] < l


def edge_list(hf, n_layers):
    """Every edge (sender, receiver) of the model, senders in forward order, receivers in forward order."""
    return [(s, r) for r in edge_receivers(hf, n_layers) for s in edge_senders(hf, n_layers) if upstream(hf, s, r)]


def head_contribution(hf, layer, head, z):
    """What head `head` of `layer` adds to the residual stream [T, d]: W_O's columns of the head applied to its
    per-head output z [T, d_head], the output projection's bias excluded."""
    _, _, dh = _dims(hf)
    W = hf.get_submodule(EDGE[family_of(hf)]["o"].format(l=layer)).weight
    rows = slice(head * dh, (head + 1) * dh)
    return z @ W[rows] if family_of(hf) in CONV1D else z @ W[:, rows].T


def _contribution(hf, sender, native):
    """A sender's contribution to the residual stream [T, d] from its native activation (head_out [T, d_head] for a
    head, the stream itself for the embedding, the output for an MLP)."""
    return head_contribution(hf, sender[1], sender[2], native) if sender[0] == "head" else native


def edge_ablated(hf, tokens, ablated, removed, n_layers):
    """Logits [T, V] of one prompt with the edges in `removed` ablated.

    ablated: sender key -> the sender's ablated *native* activation (("embed",): resid_pre of layer 0 [T, d];
    ("head", l, h): head_out [T, d_head]; ("mlp", l): mlp_out [T, d]).  removed: set of (sender, receiver) keys.
    """
    family = family_of(hf)
    E = EDGE[family]
    H, KV, dh = _dims(hf)
    get = lambda name, l=None: hf.get_submodule(name.format(l=l))  # noqa: E731
    into = {}
    for u, v in removed:
        if not upstream(hf, u, v):
            raise ValueError(f"no edge {u} -> {v}: the sender does not write before the receiver reads")
        if u not in ablated:
            raise KeyError(f"removed edge {u} -> {v} but no ablated value for {u}")
        into.setdefault(v, []).append(u)
    with torch.no_grad():
        a = {u: _contribution(hf, u, ablated[u]) for u in {u for u, _ in removed}}
    out, stream = {}, {}   # o_u recorded in this pass; the residual stream where receivers read it

    def o(u):
        if u[0] == "head":
            return head_contribution(hf, u[1], u[2], out[("z", u[1])].reshape(-1, H, dh)[:, u[2]])
        return out[u]

    def x(v, base):
        """The input receiver v reads: the actual stream minus (o_u - a_u) for each removed edge into it."""
        for u in into.get(v, []):
            base = base - (o(u) - a[u])
        return base

    hooks = []
    for l in range(n_layers):
        def pre_block(m, args, l=l):
            stream[("pre", l)] = args[0][0]
            if l == 0:
                out[("embed",)] = args[0][0]
        hooks.append(get(E["block"], l).register_forward_pre_hook(pre_block))
        norm_attn = get(E["norm_attn"], l)
        for name, comps in E["proj"].items():
            def proj(m, args, raw, l=l, comps=comps, norm_attn=norm_attn):
                for c in comps:
                    heads = to_heads(hf, c, raw)
                    for i in range(H if c == "q" else KV):
                        mine = m.forward(norm_attn.forward(x((c, l, i), stream[("pre", l)])[None]))
                        heads[0, :, i] = to_heads(hf, c, mine)[0, :, i]
                    raw = from_heads(hf, c, raw, heads)
                return raw
            hooks.append(get(name, l).register_forward_hook(proj))
        hooks.append(get(E["o"], l).register_forward_pre_hook(
            lambda m, args, l=l: out.__setitem__(("z", l), args[0][0])))
        norm_mlp = get(E["norm_mlp"], l)
        # the stream the MLP reads (sequential blocks): the pre-MLP norm's input, first call only (the hook below
        # calls the norm again)
        def mid(m, args, l=l):
            stream.setdefault(("mid", l), args[0][0])
        hooks.append(norm_mlp.register_forward_pre_hook(mid))
        base = "pre" if parallel_blocks(hf) else "mid"
        hooks.append(get(E["mlp"], l).register_forward_pre_hook(
            lambda m, args, l=l, base=base, norm=norm_mlp: (norm.forward(x(("mlp", l), stream[(base, l)])[None]),)
            + tuple(args[1:])))
        hooks.append(get(E["mlp"], l).register_forward_hook(
            lambda m, args, output, l=l: out.__setitem__(("mlp", l), output[0])))
    hooks.append(get(E["final"]).register_forward_pre_hook(
        lambda m, args: (x(("logits",), args[0][0])[None],) + tuple(args[1:])))
    try:
        with torch.no_grad():
            return hf(tokens[None]).logits[0]
    finally:
        for h in hooks:
            h.remove()


def every_node_ablated(hf, ablated, n_layers):
    """Logits [T, V] when every edge is removed: the final norm reads the sum of every sender's ablated contribution
    and the attention output biases (nothing the prompt computes reaches it), then the unembedding."""
    E = EDGE[family_of(hf)]
    H, _, _ = _dims(hf)
    with torch.no_grad():
        x = ablated[("embed",)].clone()
        for l in range(n_layers):
            bias = hf.get_submodule(E["o"].format(l=l)).bias
            x = x + ablated[("mlp", l)] + (0 if bias is None else bias)
            for h in range(H):
                x = x + head_contribution(hf, l, h, ablated[("head", l, h)])
        return hf.get_submodule(E["unembed"])(hf.get_submodule(E["final"])(x[None]))[0]
