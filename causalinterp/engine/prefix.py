"""Prefix reuse: a patched pass computes only the positions from the first patched one on.

Attention is causal, so when every site of a column is at a single position (the earliest being `p` for
a prompt), positions before `p` are identical to the unpatched base run, at every layer.  The patched
pass then runs only tokens ``p .. read position`` with the base run's key/value cache for the prefix
(`base_kv`, computed once in `compile.prepare`), combined with the layer skip (blocks below the unit's
lowest patched layer take the base run's outputs for those positions).  q/k/v sites at `p` change only
the keys/values from `p` on, so they are covered too.  Rows are grouped by start position; a site after
the read position cannot change the metric (its value is the base run's); a column with a site at
every position (``"all"``) falls back to the full pass.

`unit.run_unit` runs the passes (`unit._run_prefix`); this module holds what they read.
Valid only for plain causal attention with a `DynamicCache` (no sliding windows); `supported(model)`
says whether a model qualifies, and `scan(..., reuse_prefix=True)` falls back to full passes otherwise.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch

from ..models.load import Model
from . import plan as P

__all__ = ["base_kv", "prefix_cache", "row_starts", "supported"]


def supported(model: Model) -> bool:
    """Whether prefix reuse is exact for `model`: a local model whose every layer is full causal attention."""
    if model.remote:
        return False
    cfg = model.config
    if getattr(cfg, "sliding_window", None) or getattr(cfg, "attention_chunk_size", None):
        return False
    types = getattr(cfg, "layer_types", None)
    if types is not None and any(t != "full_attention" for t in types):
        return False
    params = inspect.signature(model.hf.forward).parameters
    return "cache" in params or "past_key_values" in params


def cache_kwarg(model: Model) -> str:
    return "cache" if "cache" in inspect.signature(model.hf.forward).parameters else "past_key_values"


def base_kv(model: Model, tokens: torch.Tensor, rows_per_pass: int, noise: torch.Tensor | None = None,
            emb_path: str | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keys and values ``[n, kv_heads, T, d_head]`` of every layer of the unpatched base run (on CPU)."""
    hf = model.hf
    keys: list[list] = [[] for _ in range(model.n_layers)]
    values: list[list] = [[] for _ in range(model.n_layers)]
    for start, stop in P.chunks(tokens.shape[0], rows_per_pass):
        toks = tokens[start:stop].to(model.device)
        hook = None
        if noise is not None:
            nz = noise[start:stop].to(model.device)
            hook = hf.get_submodule(emb_path).register_forward_hook(lambda m, a, o: o + nz.to(o.dtype))
        try:
            with torch.inference_mode():
                out = hf(toks, attention_mask=torch.ones_like(toks), use_cache=True, logits_to_keep=1)
        finally:
            if hook is not None:
                hook.remove()
        cache = out.past_key_values
        for layer, entry in enumerate(cache.layers):
            keys[layer].append(entry.keys.cpu())
            values[layer].append(entry.values.cpu())
    return [(torch.cat(k), torch.cat(v)) for k, v in zip(keys, values)]


def row_starts(ctx, cols: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """Per row, the earliest patched position of its column in its prompt; -1 where a site covers all positions."""
    out = np.empty(len(cols), dtype=int)
    for c in np.unique(cols):
        rows = np.flatnonzero(cols == c)
        sites = np.flatnonzero(ctx.member[c])
        pos = [ctx.positions[j] for j in sites]
        if any(p is None for p in pos):
            out[rows] = -1
        else:
            out[rows] = np.min(np.stack([p[prompts[rows]] for p in pos]), axis=0)
    return out


def prefix_cache(model: Model, ctx, prompts: np.ndarray, p: int, low: int):
    """A DynamicCache holding the base run's first `p` keys/values of `prompts` at layers >= `low`
    (skipped layers are never read: they hold one-wide placeholders of the right length; zero-wide ones
    would count as empty, and the cache's length is read from layer 0)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    idx = torch.as_tensor(prompts)
    for layer, (k, v) in enumerate(ctx.prefix_kv):
        if layer < low:
            k_l = k.new_zeros(len(prompts), k.shape[1], p, 1)
            v_l = v.new_zeros(len(prompts), v.shape[1], p, 1)
        else:
            k_l, v_l = k[idx, :, :p], v[idx, :, :p]
        cache.update(k_l.to(model.device), v_l.to(model.device), layer)
    return cache
