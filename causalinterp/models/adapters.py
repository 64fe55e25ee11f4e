"""Architecture adapters: the only code that knows module names.

One small table per family maps each canonical component to the module whose
input or output holds it.  `component_view` turns that raw tensor into the
canonical shape: ``[batch, pos, d_model]`` for residual/attn/MLP components and
``[batch, pos, heads, d_head]`` for per-head ones.  The views share storage with
the model's own tensors, so an in-place write to a view is a real intervention.

To add a family, add one `Adapter` to `ADAPTERS` (see CONTRIBUTING.md,
"Adding an architecture").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


class UnsupportedModelError(ValueError):
    """The model's architecture has no adapter."""


@dataclass(frozen=True)
class Location:
    """Where a component lives: a module path (``{layer}`` is filled in) and ``input`` or ``output``."""

    module: str
    io: str  # "input" (first positional argument) or "output" (first element if a tuple)


@dataclass(frozen=True)
class Adapter:
    family: str
    model_types: tuple[str, ...]
    layers: str                     # path of the ModuleList of blocks
    components: dict                # canonical name -> Location
    qkv_layout: str                 # "gpt2" fused [q|k|v]; "neox" fused per head [h, 3, dh]; "separate" q_proj/k_proj/v_proj
    notes: str = ""
    final_norm: str = ""            # the norm applied to the last residual stream before the unembedding (lens readouts)
    unembed: str = ""               # the unembedding module; "" = the model's get_output_embeddings()

    def location(self, component: str, layer: int, model_config=None) -> Location:
        """The module/io of `component` at `layer`; clear error when the family has no such component."""
        comps = self.components
        if component == "resid_mid" and self.family == "gpt_neox" and getattr(model_config, "use_parallel_residual", True):
            raise UnsupportedModelError(
                "resid_mid does not exist in this GPT-NeoX model: it uses parallel attention "
                "(use_parallel_residual=True), so attention and MLP both read resid_pre and there is no stream "
                "between them. Use resid_pre, attn_out or mlp_out instead.")
        if component not in comps:
            raise UnsupportedModelError(f"component {component!r} is not available for the {self.family} family; "
                                        f"available: {', '.join(comps)}")
        loc = comps[component]
        return Location(loc.module.format(layer=layer), loc.io)


def _gpt2() -> Adapter:
    b = "transformer.h.{layer}"
    return Adapter(
        family="gpt2", model_types=("gpt2",), layers="transformer.h", qkv_layout="gpt2",
        final_norm="transformer.ln_f", unembed="lm_head",
        components={
            "resid_pre": Location(b, "input"),
            "resid_mid": Location(b + ".ln_2", "input"),
            "resid_post": Location(b, "output"),
            "attn_out": Location(b + ".attn", "output"),
            "mlp_out": Location(b + ".mlp", "output"),
            "head_out": Location(b + ".attn.c_proj", "input"),
            "q": Location(b + ".attn.c_attn", "output"),
            "k": Location(b + ".attn.c_attn", "output"),
            "v": Location(b + ".attn.c_attn", "output"),
        })


def _neox() -> Adapter:
    b = "gpt_neox.layers.{layer}"
    return Adapter(
        family="gpt_neox", model_types=("gpt_neox",), layers="gpt_neox.layers", qkv_layout="neox",
        final_norm="gpt_neox.final_layer_norm",  # unembed: embed_out before transformers 5, lm_head since
        notes="resid_mid exists only when use_parallel_residual=False (Pythia uses parallel attention: none).",
        components={
            "resid_pre": Location(b, "input"),
            "resid_mid": Location(b + ".post_attention_layernorm", "input"),
            "resid_post": Location(b, "output"),
            "attn_out": Location(b + ".attention", "output"),
            "mlp_out": Location(b + ".mlp", "output"),
            "head_out": Location(b + ".attention.dense", "input"),
            "q": Location(b + ".attention.query_key_value", "output"),
            "k": Location(b + ".attention.query_key_value", "output"),
            "v": Location(b + ".attention.query_key_value", "output"),
        })


def _llama() -> Adapter:
    b = "model.layers.{layer}"
    return Adapter(
        family="llama", model_types=("llama", "qwen2", "mistral", "gemma"), layers="model.layers",
        qkv_layout="separate", final_norm="model.norm", unembed="lm_head",
        notes="k/v sites of query head h act on its key/value group h // (n_heads / n_kv_heads) (GQA).",
        components={
            "resid_pre": Location(b, "input"),
            "resid_mid": Location(b + ".post_attention_layernorm", "input"),
            "resid_post": Location(b, "output"),
            "attn_out": Location(b + ".self_attn", "output"),
            "mlp_out": Location(b + ".mlp", "output"),
            "head_out": Location(b + ".self_attn.o_proj", "input"),
            "q": Location(b + ".self_attn.q_proj", "output"),
            "k": Location(b + ".self_attn.k_proj", "output"),
            "v": Location(b + ".self_attn.v_proj", "output"),
        })


ADAPTERS: tuple[Adapter, ...] = (_gpt2(), _neox(), _llama())


def adapter_for(config) -> Adapter:
    """The adapter for a Hugging Face config, or a clear error naming the supported families."""
    model_type = getattr(config, "model_type", None)
    for a in ADAPTERS:
        if model_type in a.model_types:
            return a
    supported = ", ".join(f"{a.family} ({'/'.join(a.model_types)})" for a in ADAPTERS)
    raise UnsupportedModelError(
        f"no adapter for model_type {model_type!r}. Supported families: {supported}. "
        "To add one, see CONTRIBUTING.md, section 'Adding an architecture'.")


def raw_tensor(value):
    """The tensor held by a module input/output (the first element of a tuple output)."""
    return value[0] if isinstance(value, (tuple, list)) else value


def component_view(adapter: Adapter, component: str, raw: torch.Tensor, n_heads: int, n_kv_heads: int,
                   d_head: int) -> torch.Tensor:
    """Canonical view of `raw`; shares storage, so in-place writes reach the model.

    Residual-stream-like components: ``[B, T, d_model]``.  head_out/q: ``[B, T, n_heads, d_head]``;
    k/v: ``[B, T, n_kv_heads, d_head]``.
    """
    if component not in ("head_out", "q", "k", "v"):
        return raw
    B, T = raw.shape[:2]
    if component == "head_out":
        return raw.view(B, T, n_heads, d_head)
    layout = adapter.qkv_layout
    if layout == "separate":
        return raw.view(B, T, n_heads if component == "q" else n_kv_heads, d_head)
    idx = "qkv".index(component)
    if layout == "gpt2":
        d = n_heads * d_head
        return raw[..., idx * d:(idx + 1) * d].view(B, T, n_heads, d_head)
    if layout == "neox":
        return raw.view(B, T, n_heads, 3 * d_head)[..., idx * d_head:(idx + 1) * d_head]
    raise UnsupportedModelError(f"unknown qkv layout {layout!r}")


def head_index(component: str, head: int, n_heads: int, n_kv_heads: int) -> int:
    """Index into the component's head axis: a query head maps to its key/value group for k/v (GQA)."""
    if component in ("k", "v") and n_kv_heads != n_heads:
        return head // (n_heads // n_kv_heads)
    return head
