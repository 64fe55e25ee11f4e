"""The per-unit work: one patched forward pass, the same function whatever executor calls it.

`run_unit(model, context, unit)` builds the in-place writes of the unit's rows (each row is the
base prompt with its column's sites overwritten), runs one nnsight trace (blocks below the unit's
lowest patched layer skipped, their outputs taken from the unpatched base run), and returns the
metric per row as float64.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..models.adapters import component_view, head_index, raw_tensor
from ..models.load import Model
from . import plan as P
from . import prefix


@dataclass
class _Group:
    """All writes to one module's input/output in one pass."""

    module: str
    io: str
    writes: list  # (component, rows, positions or None for all, head or None, values[, feature or None, how])


def trace_kwargs(model: Model, keep: torch.Tensor, tokens: torch.Tensor) -> dict:
    """Compute logits only at the positions the metric reads, where the model supports it.

    The attention mask is all ones: prompts are right-padded and attention is causal, so no real token
    sees padding (and transformers computes exactly what it computes without a mask); passing it says so,
    instead of transformers warning that the input may be padded."""
    kwargs = {}
    if "logits_to_keep" in inspect.signature(model.hf.forward).parameters:
        kwargs["logits_to_keep"] = keep
    if model.remote:
        kwargs["remote"] = True
    else:
        kwargs["attention_mask"] = torch.ones_like(tokens)
    return kwargs


def keep_index(read_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique read positions, and for each row the index of its position among them."""
    keep, inverse = torch.unique(read_pos, return_inverse=True)
    return keep, inverse


def logits_at(logits: torch.Tensor, keep: torch.Tensor, inverse: torch.Tensor, read_pos: torch.Tensor):
    """Pick each row's logits at its read position, whether or not the model honoured logits_to_keep."""
    rows = torch.arange(logits.shape[0])
    if logits.shape[1] == keep.shape[0]:
        return logits[rows, inverse]
    return logits[rows, read_pos]


def embedding_module(model: Model) -> str:
    """Dotted path of the model's input-embedding module (where embedding-noise corruption is added)."""
    emb = model.hf.get_input_embeddings()
    for name, mod in model.hf.named_modules():
        if mod is emb:
            return name
    raise ValueError("the model's input embedding is not one of its modules")


def add_noise(model: Model, emb_path: str | None, noise: torch.Tensor | None) -> None:
    """Inside a trace: add `noise` ([B, T, d]) to the input embeddings (an embedding-noise corrupt run)."""
    if noise is None:
        return
    env = model.envoy(emb_path)
    env.output = env.output + noise.to(device=model.device, dtype=next(model.hf.parameters()).dtype)


def run_unit(model: Model, ctx, unit: P.Unit) -> np.ndarray:
    """Metric values (float64, one per row) of `unit`: the one function every executor calls."""
    own = getattr(ctx, "run_unit", None)   # path scans: engine/paths.PathContext runs its own two passes
    if own is not None:
        return own(model, unit)
    if getattr(ctx, "prefix_kv", None) is not None:   # scan(..., reuse_prefix=True): see engine/prefix.py
        return _run_prefix(model, ctx, unit)
    n = ctx.n_prompts
    rows = np.arange(unit.start, unit.stop)
    cols, prompts = rows // n, rows % n  # column-major (column, prompt) order, as in plan.make_rows
    return _run_rows(model, ctx, unit.low_layer, cols, prompts)


def _run_rows(model: Model, ctx, low_layer: int, cols, prompts) -> np.ndarray:
    """Metric values of the rows (column, prompt) in one full patched pass, blocks below `low_layer` skipped."""
    groups = _build_groups(model, ctx, cols, prompts)
    rp = ctx.read_pos[prompts]
    keep, inverse = keep_index(rp)
    skip = [ctx.base_cache[("resid_post", layer)][prompts] for layer in range(low_layer)]
    noise = None if ctx.base_noise is None else ctx.base_noise[prompts]
    logits = _run_patched(model, ctx.base_tok[prompts], keep, groups, skip, noise, ctx.emb_path)
    picked = logits_at(logits, keep, inverse, rp)
    wrong = ctx.wrong[prompts] if ctx.wrong is not None else None
    return ctx.metric.compute(picked, ctx.answer[prompts], wrong, ctx.clean_logits[prompts]).numpy()


def _run_prefix(model: Model, ctx, unit: P.Unit) -> np.ndarray:
    """`run_unit` with prefix reuse (`causalinterp.engine.prefix`): rows grouped by start position, full passes where it cannot apply."""
    n = ctx.n_prompts
    rows = np.arange(unit.start, unit.stop)
    cols, prompts = rows // n, rows % n
    starts = prefix.row_starts(ctx, cols, prompts)
    read = ctx.read_pos.numpy()[prompts]
    out = np.empty(len(rows))
    full = starts < 0
    if full.any():
        out[full] = _run_rows(model, ctx, unit.low_layer, cols[full], prompts[full])
    after = ~full & (starts > read)          # patched after the metric's position: nothing it reads changes
    base = ctx.corrupt_metric if ctx.intervention.base_run == "corrupt" else ctx.clean_metric
    out[after] = base[prompts[after]]
    kw = prefix.cache_kwarg(model)
    for p in np.unique(starts[~full & ~after]):
        g = np.flatnonzero((starts == p) & ~after)
        pr, cl = prompts[g], cols[g]
        rp = ctx.read_pos[pr] - int(p)
        last = int(rp.max())
        tokens = ctx.base_tok[pr][:, p:p + last + 1]
        groups = [_Group(gr.module, gr.io, [(c, r, pos - int(p), h, v, *rest) for c, r, pos, h, v, *rest in gr.writes])
                  for gr in _build_groups(model, ctx, cl, pr)]
        skip = [ctx.base_cache[("resid_post", layer)][pr][:, p:p + last + 1] for layer in range(unit.low_layer)]
        noise = None if ctx.base_noise is None else ctx.base_noise[pr][:, p:p + last + 1]
        keep, inverse = keep_index(rp)
        extra = {kw: prefix.prefix_cache(model, ctx, pr, int(p), unit.low_layer), "use_cache": True,
                 "attention_mask": torch.ones(len(g), int(p) + tokens.shape[1], dtype=torch.long,
                                              device=model.device)}
        logits = _run_patched(model, tokens, keep, groups, skip, noise, ctx.emb_path, extra=extra)
        picked = logits_at(logits, keep, inverse, rp)
        wrong = ctx.wrong[pr] if ctx.wrong is not None else None
        out[g] = ctx.metric.compute(picked, ctx.answer[pr], wrong, ctx.clean_logits[pr]).numpy()
    return out


def _build_groups(model: Model, ctx, cols, prompts) -> list[_Group]:
    """The in-place writes of one pass, grouped by module in execution order."""
    groups: dict[tuple, _Group] = {}
    member, kind = ctx.member, ctx.intervention.kind
    present = np.flatnonzero(member[np.unique(cols)].any(0))
    for j in present:
        s = ctx.sites[j]
        local = np.flatnonzero(member[cols, j])
        if local.size == 0:
            continue
        pr = prompts[local]
        head = None if s.head is None else head_index(s.component, s.head, model.n_heads, model.n_kv_heads)
        site_pos = ctx.positions[j]
        pos = None if site_pos is None else site_pos[pr]
        if kind == "zero":
            vals = 0.0
        elif kind == "mean":
            vals = ctx.means[j] if head is None else ctx.means[j][..., head, :]
        else:
            acts = ctx.source[(s.component, s.layer)]
            src_prompt = pr if kind in ("denoise", "noise") else ctx.resample_from[cols[local], pr]
            if pos is None:
                vals = acts[src_prompt]
            elif kind == "resample":
                vals = acts[src_prompt, site_pos[src_prompt]]
            else:
                vals = acts[src_prompt, pos]
            if head is not None:
                vals = vals[..., head, :]
        loc = model.location(s.component, s.layer)
        key = (s.layer, P.COMPONENT_ORDER[s.component], loc.module, loc.io)
        how = "zero" if kind == "zero" else "mean" if kind == "mean" else "replace"  # what vals is, for features
        groups.setdefault(key, _Group(loc.module, loc.io, [])).writes.append(
            (s.component, torch.as_tensor(local), None if pos is None else torch.as_tensor(pos), head, vals,
             getattr(s, "feature", None), how))
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], k[1]))]


def _run_patched(model: Model, tokens: torch.Tensor, keep: torch.Tensor, groups: list,
                 skip: Sequence[torch.Tensor] = (), noise: torch.Tensor | None = None,
                 emb_path: str | None = None, extra: dict | None = None) -> torch.Tensor:
    """One forward pass with all writes of `groups` applied in place; logits at the kept positions.

    ``skip[l]`` replaces the output of block ``l`` (its forward does not run); `noise` is added to the
    input embeddings (an embedding-noise corrupt base run); `extra` adds or replaces keyword arguments of
    the model call (a key/value cache for prefix reuse, with its attention mask).
    """
    import nnsight

    dev = model.device
    skip = [t.to(dev) for t in skip]
    with torch.inference_mode():
        toks = tokens.to(dev)
        with model.nn.trace(toks, **{**trace_kwargs(model, keep.to(dev), toks), **(extra or {})}):
            add_noise(model, emb_path, noise)
            for layer, out in enumerate(skip):
                model.envoy(f"{model.adapter.layers}.{layer}").skip(out)
            for g in groups:
                env = model.envoy(g.module)
                raw = raw_tensor(env.input if g.io == "input" else env.output)
                for component, rows, pos, head, vals, *edit in g.writes:
                    feature, how = edit if edit else (None, "replace")  # path writes carry no feature
                    view = component_view(model.adapter, component, raw, model.n_heads, model.n_kv_heads,
                                          model.d_head)
                    if isinstance(vals, torch.Tensor):
                        vals = vals.to(device=view.device, dtype=view.dtype)
                    rows_d = rows.to(dev)
                    if feature is not None:  # a feature site: edit only the feature's part of the current value
                        idx = (rows_d, slice(None)) if pos is None else (rows_d, pos.to(dev))
                        idx = idx if head is None else idx + (head,)
                        vals = feature.edit(view[idx], vals, how)
                    if pos is None:
                        if head is None:
                            view[rows_d] = vals
                        else:
                            view[rows_d, :, head] = vals
                    elif head is None:
                        view[rows_d, pos.to(dev)] = vals
                    else:
                        view[rows_d, pos.to(dev), head] = vals
            logits = nnsight.save(model.nn.output.logits)
    return logits.cpu()
