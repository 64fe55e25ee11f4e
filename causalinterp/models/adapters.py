"""Architecture adapters: the only code that knows module names.

One small table per family maps each canonical component to the module whose
input or output holds it.  `component_view` turns that raw tensor into the
canonical shape: ``[batch, pos, d_model]`` for residual/attn/MLP components and
``[batch, pos, heads, d_head]`` for per-head ones.  The views share storage with
the model's own tensors, so an in-place write to a view is a real intervention.

Conventions every table follows (so a site means the same thing in every family):

* ``attn_out`` / ``mlp_out`` are what the sublayer *adds to the residual stream*.  In post-norm
  families (Gemma 2/3, OLMo 2) that is the output of the norm after the sublayer, not of the
  attention/MLP module, so ``resid_mid = resid_pre + attn_out`` and ``resid_post = resid_mid + mlp_out``
  hold there too.  ``head_out`` is always the input of the attention output projection, so in
  post-norm families the per-head outputs sum (through W_O) to the attention module's output,
  which the post-attention norm then turns into ``attn_out``.
* ``resid_mid`` is the stream between attention and MLP (absent in parallel-attention blocks).
* ``q``/``k`` are the query/key vectors the attention scores use, before the rotary embedding and
  after the q/k norm where the architecture has one (Qwen3, Gemma 3, OLMo 2, Cohere, StableLM).
* For mixture-of-experts blocks ``mlp_out`` is the routed sum (the MoE block's output).

To add a family, add one `Adapter` to `ADAPTERS` (see CONTRIBUTING.md, "Adding an architecture").
Models of other decoder-only families get an adapter derived and checked at load time
(`causalinterp.models.derive`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

HEAD_COMPONENTS = ("head_out", "q", "k", "v")


class UnsupportedModelError(ValueError):
    """The model's architecture has no adapter, or lacks the component asked for."""


@dataclass(frozen=True)
class Location:
    """Where a component lives: a module path (``{layer}`` is filled in), ``input`` or ``output``, and
    for per-head components the layout of heads in that tensor.

    Layouts: ``separate`` ``[B, T, n*dh]`` or ``[B, T, n, dh]`` (one module per q/k/v);
    ``bhtd`` ``[B, n, T, dh]`` (a per-head norm applied after the transpose);
    ``concat`` fused ``[q (H*dh) | k (KV*dh) | v (KV*dh)]``; ``neox`` fused per head ``[H, 3, dh]``;
    ``grouped`` fused per key/value group ``[KV, H/KV + 2, dh]`` (Falcon's new decoder architecture).
    """

    module: str
    io: str  # "input" (first positional argument) or "output" (first element if a tuple)
    layout: str = "separate"


@dataclass(frozen=True)
class Absent:
    """A component the architecture does not have (e.g. resid_mid with parallel attention); `reason` says why."""

    reason: str


@dataclass(frozen=True)
class Adapter:
    family: str
    model_types: tuple[str, ...]
    layers: str                     # path of the ModuleList of blocks
    components: dict                # canonical name -> Location | Absent
    notes: str = ""
    status: str = "verified"        # "verified": a table tested from configs; "derived": found and checked at load
    final_norm: str = ""            # the norm applied to the last residual stream before the unembedding (lens readouts)
    unembed: str = ""               # the unembedding module; "" = the model's get_output_embeddings()
    configure: Callable | None = field(default=None, compare=False, repr=False)  # (adapter, config) -> adapter
    kv_heads: Callable | None = field(default=None, compare=False, repr=False)   # config -> number of k/v heads

    def for_config(self, config) -> "Adapter":
        """The table for this exact config (e.g. resid_mid only where attention is sequential)."""
        return self.configure(self, config) if self.configure is not None else self

    def location(self, component: str, layer: int, model_config=None) -> Location:
        """The module/io of `component` at `layer`; clear error when the family has no such component."""
        comps = self.for_config(model_config).components if model_config is not None else self.components
        loc = comps.get(component)
        if loc is None:
            raise UnsupportedModelError(f"component {component!r} is not available for the {self.family} family; "
                                        f"available: {', '.join(c for c, v in comps.items() if isinstance(v, Location))}")
        if isinstance(loc, Absent):
            raise UnsupportedModelError(loc.reason)
        return Location(loc.module.format(layer=layer), loc.io, loc.layout)

    def with_components(self, **changes) -> "Adapter":
        return replace(self, components={**self.components, **changes}, configure=None)


# ----------------------------------------------------------------------------- tables

def _parallel(family: str, flag: str) -> Absent:
    return Absent(f"resid_mid does not exist in this {family} model: it uses parallel attention ({flag}), so "
                  "attention and MLP both read resid_pre and there is no stream between them. Use resid_pre, "
                  "attn_out or mlp_out instead.")


def _pre_norm(b: str, attn: str = "self_attn", q="q_proj", k="k_proj", v="v_proj", o="o_proj",
              mid: str | None = "post_attention_layernorm", qk_layout="separate") -> dict:
    """The Llama naming: pre-norm blocks with separate q/k/v projections."""
    a = f"{b}.{attn}"
    return {
        "resid_pre": Location(b, "input"),
        "resid_mid": Location(f"{b}.{mid}", "input") if mid else None,
        "resid_post": Location(b, "output"),
        "attn_out": Location(a, "output"),
        "mlp_out": Location(f"{b}.mlp", "output"),
        "head_out": Location(f"{a}.{o}", "input"),
        "q": Location(f"{a}.{q}", "output", qk_layout),
        "k": Location(f"{a}.{k}", "output", qk_layout),
        "v": Location(f"{a}.{v}", "output"),
    }


def _gpt2() -> Adapter:
    b = "transformer.h.{layer}"
    return Adapter(
        family="gpt2", model_types=("gpt2",), layers="transformer.h", final_norm="transformer.ln_f", unembed="lm_head",
        components={
            "resid_pre": Location(b, "input"),
            "resid_mid": Location(b + ".ln_2", "input"),
            "resid_post": Location(b, "output"),
            "attn_out": Location(b + ".attn", "output"),
            "mlp_out": Location(b + ".mlp", "output"),
            "head_out": Location(b + ".attn.c_proj", "input"),
            **{c: Location(b + ".attn.c_attn", "output", "concat") for c in "qkv"},
        })


def _neox_config(a: Adapter, config) -> Adapter:
    if getattr(config, "use_parallel_residual", True):
        return a.with_components(resid_mid=_parallel("GPT-NeoX", "use_parallel_residual=True"))
    return a


def _neox() -> Adapter:
    b = "gpt_neox.layers.{layer}"
    return Adapter(
        family="gpt_neox", model_types=("gpt_neox",), layers="gpt_neox.layers", configure=_neox_config,
        final_norm="gpt_neox.final_layer_norm",  # unembed: embed_out before transformers 5, lm_head since
        notes="resid_mid exists only when use_parallel_residual=False (Pythia uses parallel attention: none).",
        components={
            "resid_pre": Location(b, "input"),
            "resid_mid": Location(b + ".post_attention_layernorm", "input"),
            "resid_post": Location(b, "output"),
            "attn_out": Location(b + ".attention", "output"),
            "mlp_out": Location(b + ".mlp", "output"),
            "head_out": Location(b + ".attention.dense", "input"),
            **{c: Location(b + ".attention.query_key_value", "output", "neox") for c in "qkv"},
        })


_GQA = "k/v sites of query head h act on its key/value group h // (n_heads / n_kv_heads) (GQA)."


def _llama() -> Adapter:
    return Adapter(
        family="llama", model_types=("llama", "qwen2", "mistral", "gemma", "olmo", "granite"), layers="model.layers",
        final_norm="model.norm", unembed="lm_head",
        notes=_GQA + " Granite scales what the sublayers add by residual_multiplier: there "
                     "resid_mid = resid_pre + residual_multiplier * attn_out (likewise mlp_out).",
        components=_pre_norm("model.layers.{layer}"))


def _mixtral() -> Adapter:
    return Adapter(
        family="mixtral", model_types=("mixtral",), layers="model.layers",
        final_norm="model.norm", unembed="lm_head",
        notes="mlp_out is the routed sum: the sparse MoE block's output, sum over the top-k experts of "
              "router weight x expert(x). Individual experts are not sites. " + _GQA,
        components=_pre_norm("model.layers.{layer}"))


def _qwen3() -> Adapter:
    return Adapter(
        family="qwen3", model_types=("qwen3", "qwen3_moe"), layers="model.layers",
        final_norm="model.norm", unembed="lm_head",
        notes="q/k are the outputs of the per-head q_norm/k_norm (what the scores use, before RoPE). In qwen3_moe "
              "sparse layers mlp_out is the routed sum (the MoE block's output). " + _GQA,
        components=_pre_norm("model.layers.{layer}", q="q_norm", k="k_norm"))


def _post_norm_components(b: str, mid: str, qk: tuple[str, str] = ("q_proj", "k_proj"), qk_layout="separate"):
    comps = _pre_norm(b, q=qk[0], k=qk[1], qk_layout=qk_layout)
    comps.update({
        "resid_mid": Location(f"{b}.{mid}", "input"),
        "attn_out": Location(f"{b}.post_attention_layernorm", "output"),
        "mlp_out": Location(f"{b}.post_feedforward_layernorm", "output"),
    })
    return comps


_POST_NORM = ("attn_out/mlp_out are the outputs of post_attention_layernorm/post_feedforward_layernorm (what is "
              "added to the stream), so resid_mid = resid_pre + attn_out and resid_post = resid_mid + mlp_out hold; "
              "head_out through o_proj sums to the self_attn output, which the post-attention norm (not linear) "
              "turns into attn_out.")


def _gemma2() -> Adapter:
    return Adapter(
        family="gemma2", model_types=("gemma2",), layers="model.layers",
        final_norm="model.norm", unembed="lm_head",
        notes=_POST_NORM + " resid_mid is the input of pre_feedforward_layernorm. Logit soft-capping and sliding "
                           "windows act inside attention/lm_head and do not move any site. " + _GQA,
        components=_post_norm_components("model.layers.{layer}", "pre_feedforward_layernorm"))


def _gemma3() -> Adapter:
    return Adapter(
        family="gemma3", model_types=("gemma3_text",), layers="model.layers",
        final_norm="model.norm", unembed="lm_head",
        notes=_POST_NORM + " resid_mid is the input of pre_feedforward_layernorm; q/k are the outputs of the "
                           "per-head q_norm/k_norm (laid out [batch, heads, pos, d_head]). " + _GQA,
        components=_post_norm_components("model.layers.{layer}", "pre_feedforward_layernorm", ("q_norm", "k_norm"),
                                         "bhtd"))


def _olmo2() -> Adapter:
    return Adapter(
        family="olmo2", model_types=("olmo2",), layers="model.layers",
        final_norm="model.norm", unembed="lm_head",
        notes=_POST_NORM + " OLMo 2 has no pre-norms: resid_mid is the MLP's input. q/k are the outputs of "
                           "q_norm/k_norm (normalized across all heads together). " + _GQA,
        components=_post_norm_components("model.layers.{layer}", "mlp", ("q_norm", "k_norm")))


def _phi3() -> Adapter:
    comps = _pre_norm("model.layers.{layer}")
    comps.update({c: Location("model.layers.{layer}.self_attn.qkv_proj", "output", "concat") for c in "qkv"})
    return Adapter(family="phi3", model_types=("phi3",), layers="model.layers",
        final_norm="model.norm", unembed="lm_head",
                   notes="q/k/v are slices of the fused qkv_proj output [q | k | v]. " + _GQA, components=comps)


def _gptj() -> Adapter:
    comps = _pre_norm("transformer.h.{layer}", attn="attn", o="out_proj", mid=None)
    comps["resid_mid"] = _parallel("GPT-J", "always")
    return Adapter(family="gptj", model_types=("gptj",), layers="transformer.h", components=comps,
                   final_norm="transformer.ln_f", unembed="lm_head",
                   notes="Parallel attention: resid_post = resid_pre + attn_out + mlp_out; no resid_mid.")


def _falcon_config(a: Adapter, config) -> Adapter:
    new = getattr(config, "new_decoder_architecture", False)
    changes = {}
    if new or getattr(config, "parallel_attn", True):
        changes["resid_mid"] = _parallel("Falcon", "parallel_attn=True or new_decoder_architecture=True")
    layout = "grouped" if new else ("concat" if getattr(config, "multi_query", True) else "neox")
    loc = a.components["q"]
    changes.update({c: Location(loc.module, loc.io, layout) for c in "qkv"})
    return a.with_components(**changes)


def _falcon_kv(config) -> int:
    if getattr(config, "new_decoder_architecture", False):
        return int(config.num_kv_heads)
    return 1 if getattr(config, "multi_query", True) else int(config.num_attention_heads)


def _falcon() -> Adapter:
    b = "transformer.h.{layer}"
    return Adapter(
        family="falcon", model_types=("falcon",), layers="transformer.h", configure=_falcon_config,
        final_norm="transformer.ln_f", unembed="lm_head",
        kv_heads=_falcon_kv,
        notes="q/k/v are slices of the fused query_key_value output: [q | k | v] with one k/v head (multi_query), "
              "per head [H, 3, dh] otherwise, per k/v group [KV, H/KV+2, dh] (new_decoder_architecture). "
              "resid_mid exists only with parallel_attn=False and the old decoder architecture.",
        components={
            "resid_pre": Location(b, "input"),
            "resid_mid": Location(b + ".post_attention_layernorm", "input"),
            "resid_post": Location(b, "output"),
            "attn_out": Location(b + ".self_attention", "output"),
            "mlp_out": Location(b + ".mlp", "output"),
            "head_out": Location(b + ".self_attention.dense", "input"),
            **{c: Location(b + ".self_attention.query_key_value", "output", "concat") for c in "qkv"},
        })


def _cohere_config(a: Adapter, config) -> Adapter:
    if getattr(config, "use_qk_norm", False):
        b = "model.layers.{layer}.self_attn"
        return a.with_components(q=Location(f"{b}.q_norm", "output"), k=Location(f"{b}.k_norm", "output"))
    return a


def _cohere() -> Adapter:
    comps = _pre_norm("model.layers.{layer}", mid=None)
    comps["resid_mid"] = _parallel("Cohere", "always")
    return Adapter(family="cohere", model_types=("cohere",), layers="model.layers",
        final_norm="model.norm", unembed="lm_head", components=comps,
                   configure=_cohere_config,
                   notes="Parallel attention: resid_post = resid_pre + attn_out + mlp_out; no resid_mid. With "
                         "use_qk_norm, q/k are the q_norm/k_norm outputs. " + _GQA)


def _stablelm_config(a: Adapter, config) -> Adapter:
    changes = {}
    if getattr(config, "use_parallel_residual", False):
        changes["resid_mid"] = _parallel("StableLM", "use_parallel_residual=True")
    if getattr(config, "qk_layernorm", False):
        b = "model.layers.{layer}.self_attn"
        changes.update(q=Location(f"{b}.q_layernorm", "output", "bhtd"), k=Location(f"{b}.k_layernorm", "output", "bhtd"))
    return a.with_components(**changes) if changes else a


def _stablelm() -> Adapter:
    return Adapter(family="stablelm", model_types=("stablelm",), layers="model.layers",
        final_norm="model.norm", unembed="lm_head", configure=_stablelm_config,
                   components=_pre_norm("model.layers.{layer}"),
                   notes="resid_mid exists unless use_parallel_residual=True; with qk_layernorm, q/k are the per-head "
                         "layer-norm outputs. " + _GQA)


ADAPTERS: tuple[Adapter, ...] = (_gpt2(), _neox(), _llama(), _mixtral(), _qwen3(), _gemma2(), _gemma3(), _olmo2(),
                                 _phi3(), _gptj(), _falcon(), _cohere(), _stablelm())


def table_for(model_type) -> Adapter | None:
    """The table adapter whose family lists `model_type`, or None."""
    for a in ADAPTERS:
        if model_type in a.model_types:
            return a
    return None


def supported_text() -> str:
    return ", ".join(f"{a.family} ({'/'.join(a.model_types)})" for a in ADAPTERS)


def adapter_for(config) -> Adapter:
    """The table adapter for a Hugging Face config (specialized to it), or a clear error naming the families."""
    model_type = getattr(config, "model_type", None)
    a = table_for(model_type)
    if a is not None:
        return a.for_config(config)
    raise UnsupportedModelError(
        f"no adapter for model_type {model_type!r}. Supported families: {supported_text()}. "
        "To add one, see CONTRIBUTING.md, section 'Adding an architecture'.")


# ----------------------------------------------------------------------------- canonical views

def raw_tensor(value):
    """The tensor held by a module input/output (the first element of a tuple output)."""
    return value[0] if isinstance(value, (tuple, list)) else value


def head_view(layout: str, component: str, raw: torch.Tensor, n_heads: int, n_kv_heads: int,
              d_head: int) -> torch.Tensor:
    """``[B, T, heads, d_head]`` view of a per-head component in `raw` laid out as `layout` (shares storage)."""
    n = n_heads if component in ("q", "head_out") else n_kv_heads
    if layout == "bhtd":
        return raw.transpose(1, 2)
    B, T = raw.shape[:2]
    if component == "head_out" or layout == "separate":
        return raw.view(B, T, n, d_head)
    idx = "qkv".index(component)
    if layout == "concat":
        start = (0, n_heads, n_heads + n_kv_heads)[idx] * d_head
        return raw[..., start:start + n * d_head].view(B, T, n, d_head)
    if layout == "neox":
        return raw.view(B, T, n_heads, 3 * d_head)[..., idx * d_head:(idx + 1) * d_head]
    if layout == "grouped":
        g = n_heads // n_kv_heads
        grouped = raw.view(B, T, n_kv_heads, g + 2, d_head)
        if component != "q":
            return grouped[..., g + idx - 1, :]
        if g == 1:
            return grouped[..., 0, :]
        raise UnsupportedModelError(
            "q per head is not addressable in Falcon's grouped query_key_value layout with several query heads per "
            "key/value group; use head_out, k or v (or attn_out) instead.")
    raise UnsupportedModelError(f"unknown head layout {layout!r}")


def component_view(adapter: Adapter, component: str, raw: torch.Tensor, n_heads: int, n_kv_heads: int,
                   d_head: int, layout: str | None = None) -> torch.Tensor:
    """Canonical view of `raw`; shares storage, so in-place writes reach the model.

    Residual-stream-like components: ``[B, T, d_model]``.  head_out/q: ``[B, T, n_heads, d_head]``;
    k/v: ``[B, T, n_kv_heads, d_head]``.
    """
    if component not in HEAD_COMPONENTS:
        return raw
    if layout is None:
        loc = adapter.components.get(component)
        layout = loc.layout if isinstance(loc, Location) else "separate"
    return head_view(layout, component, raw, n_heads, n_kv_heads, d_head)


def head_index(component: str, head: int, n_heads: int, n_kv_heads: int) -> int:
    """Index into the component's head axis: a query head maps to its key/value group for k/v (GQA)."""
    if component in ("k", "v") and n_kv_heads != n_heads:
        return head // (n_heads // n_kv_heads)
    return head
