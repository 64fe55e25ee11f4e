"""`screen`: estimate every site's patching effect from gradients (attribution patching), not one pass per site.

A scan runs one patched pass per (site, prompt).  A screen estimates the same per-prompt table from a
few passes: ``values[p, j] ≈ metric(base run of p with site j patched)``, to first order

    metric(base) + (a_source - a_base) · ∂metric/∂a        (AtP, Nanda 2023; Kramár et al. 2024)

Methods:

``"atp"``   one forward on each of clean and corrupt, plus one forward+backward on the base run.
``"atp*"``  AtP with the published fixes (Kramár et al. 2024, "AtP*"): for q/k sites the attention of that
            layer is recomputed exactly with the patched query/key, and the change of the heads' outputs is
            dotted with their gradient (exact through the softmax: the output is linear in the pattern);
            GradDrop: for each later layer l, the estimate with the gradient through layer l's attention and
            MLP dropped; ``meta["magnitude"]`` is the mean of their absolute values (a cancellation-robust
            score for ranking; `values` stay the signed estimates).
``"ig"``    integrated gradients along the straight path from the base to the patched activation, with
            `steps` midpoint-rule points; all requested sites of one (component, layer) move together, one
            path per (component, layer) (so a site alone at its component and layer gets exactly its patch
            effect as steps grow).

Gradients come from plain torch hooks on the modules the adapters name (an additive zero ``delta`` on the
raw tensor, whose gradient is the activation's): the same canonical views as the engine's writes, so the
columns, sites and ``base``/``target`` are those `scan` returns.  `Effects.meta` says ``approximate=True``
and the method; `evaluate` labels statistics computed on them as estimates.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..models.adapters import component_view, raw_tensor
from ..models.load import Model, load_model
from ..spec.data import ContrastSet
from ..spec.interventions import Intervention
from ..spec.metrics import Metric
from . import plan as P
from .compile import ScanError, check_finite, make_plan, prepare
from .effects import Effects
from .unit import _build_groups, keep_index, logits_at, trace_kwargs

__all__ = ["METHODS", "screen"]

METHODS = ("atp", "atp*", "ig")


def screen(model, data: ContrastSet, sites, *, intervention: Intervention | None = None,
           metric: Metric | None = None, method: str = "atp*", steps: int = 8, batch_size: int | None = None,
           memory_budget="2GB", cache: dict | None = None) -> Effects:
    """Estimated per-prompt effects of intervening on every site, from gradients (see the module docstring).

    Same arguments and the same `Effects` shape as `scan` (per-site columns; no ``joint``/``n_random``);
    ``meta["approximate"]`` is True and ``meta["method"]`` names the method, ``meta["forward_equivalents"]``
    what it cost (backward = 2 forwards, an attention recompute = one block).  Confirm the sites that
    matter exactly with `causalinterp.confirm`.

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:ioi"), ci.testbeds.ioi_data(16, seed=0)
        >>> est = ci.screen(model, data, ci.sites.head_out(positions="end"), intervention=ci.patch("noise"),
        ...                 metric=ci.metrics.logit_diff(), method="atp")
        >>> est.values.shape, est.meta["approximate"]
        ((16, 12), True)
    """
    t_start = time.perf_counter()
    if method not in METHODS:
        raise ScanError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    from ..spec.paths import is_path_spec
    if is_path_spec(sites):
        raise ScanError("screen estimates node sites (ci.sites.head_out(...), ...); path sites (ci.sites.path) are "
                        "patched exactly with ci.scan")
    if not isinstance(model, Model):
        model = load_model(model)
    if model.remote:
        raise ScanError("screen needs gradients through a local model; remote (NDIF) models are not supported")
    if metric is not None and isinstance(metric, Metric) and metric.kind == "accuracy":
        raise ScanError("accuracy has no gradient; screen with logit_diff, logprob, prob or kl_to_clean")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ScanError(f"steps must be a positive int, got {steps!r}")
    plan = make_plan(model, data, sites, intervention=intervention, metric=metric, memory_budget=memory_budget,
                     batch_size=batch_size)
    if any(getattr(s, "feature", None) is not None for s in plan.sites):
        raise ScanError("screen estimates whole-activation sites; feature sites (subspaces, SAE latents) are patched "
                        "exactly with ci.scan")
    ctx = prepare(model, data, plan, cache)
    work = _Screen(model, ctx, plan.sites, method, steps)
    n = data.n
    values = np.zeros((n, len(plan.sites)))
    magnitude = np.zeros_like(values) if method == "atp*" else None
    rows = max(1, min(plan.base_rows, batch_size or plan.base_rows))
    for p0, p1 in P.chunks(n, rows):
        v, mag = work.run(np.arange(p0, p1))
        values[p0:p1] = v
        if magnitude is not None:
            magnitude[p0:p1] = mag
    check_finite(values, "the screen")
    clean_metric, corrupt_metric = ctx.clean_metric, ctx.corrupt_metric
    base = corrupt_metric if ctx.intervention.base_run == "corrupt" else clean_metric
    target = clean_metric if ctx.intervention.target_run == "clean" else corrupt_metric
    fe = 2.0 + work.cost / n   # the unpatched clean and corrupt runs, then the screen's own passes
    meta = {"approximate": True, "method": method, "steps": steps if method == "ig" else None,
            "forward_equivalents": fe, "seconds": time.perf_counter() - t_start, "device": str(model.device),
            "model": model.name or type(model.hf).__name__, "plan_key": plan.key}
    if magnitude is not None:
        meta["magnitude"] = magnitude
    return Effects(values=values, clean=clean_metric, corrupt=corrupt_metric, sites=plan.sites, base=base.copy(),
                   target=target.copy(), intervention=ctx.intervention, metric=ctx.metric,
                   clusters=None if data.clusters is None else np.asarray(data.clusters), meta=meta)


class _Screen:
    """The passes of one screen over chunks of prompts; `cost` counts forward-equivalent prompt rows."""

    def __init__(self, model: Model, ctx, sites, method: str, steps: int):
        self.model, self.ctx, self.sites, self.method, self.steps = model, ctx, sites, method, steps
        self.cost = 0.0
        self.keys = sorted({(s.component, s.layer) for s in sites}, key=lambda k: (k[1], P.COMPONENT_ORDER[k[0]]))
        self.qk = [j for j, s in enumerate(sites) if s.component in ("q", "k")] if method == "atp*" else []
        self.qk_layers = sorted({sites[j].layer for j in self.qk})
        extra = [("head_out", layer) for layer in self.qk_layers]
        self.grad_keys = sorted(set(self.keys) | set(extra), key=lambda k: (k[1], P.COMPONENT_ORDER[k[0]]))
        self.modules = {}   # (module, io) -> [keys]
        for k in self.grad_keys:
            loc = model.location(*k)
            self.modules.setdefault((loc.module, loc.io), []).append(k)

    # --- one chunk of prompts --------------------------------------------------------------------
    def run(self, prompts: np.ndarray):
        m, B = len(self.sites), len(prompts)
        base = self._pass(prompts, attn_layers=self.qk_layers)
        writes = [self._write(j, prompts) for j in range(m)]
        if self.method == "ig":
            delta = self._integrated(prompts, base, writes)
        else:
            delta = np.stack([self._dot(writes[j], base["raw"], base["grad"]) for j in range(m)], 1)
        magnitude = None
        if self.method == "atp*":
            dz = self._recompute_qk(prompts, base) if self.qk else {}
            for j, z in dz.items():
                delta[:, j] = _dot_heads(z, base["grad"][self._hout(j)])
            magnitude = np.abs(delta)
            drops = [(l, self._pass(prompts, drop=l)) for l in range(1, self.model.n_layers)
                     if any(s.layer < l for s in self.sites)]
            if drops:
                total, count = np.zeros((B, m)), np.zeros(m)
                for l, g in drops:
                    for j, s in enumerate(self.sites):
                        if s.layer >= l:
                            continue
                        est = (_dot_heads(dz[j], g["grad"][self._hout(j)]) if j in dz
                               else self._dot(writes[j], base["raw"], g["grad"]))
                        total[:, j] += np.abs(est)
                        count[j] += 1
                has = count > 0
                magnitude[:, has] = total[:, has] / count[has]
        return base["metric"][:, None] + delta, magnitude

    def _hout(self, j: int):
        return ("head_out", self.sites[j].layer)

    def _write(self, j: int, prompts: np.ndarray):
        """The engine's write for site j on these prompts: (component, rows, positions, head, values)."""
        (group,) = _build_groups(self.model, self.ctx, np.full(len(prompts), j), prompts)
        (w,) = group.writes
        return (self.sites[j].component, self.sites[j].layer) + tuple(w[1:5])

    def _view(self, raws: dict, key):
        m = self.model
        return component_view(m.adapter, key[0], raws[key], m.n_heads, m.n_kv_heads, m.d_head)

    def _select(self, view: torch.Tensor, rows, pos, head):
        if pos is None:
            return view[rows] if head is None else view[rows, :, head]
        return view[rows, pos] if head is None else view[rows, pos, head]

    def _dot(self, write, raws: dict, grads: dict) -> np.ndarray:
        """Per row: (value written - base activation) · gradient, summed over the site's elements."""
        comp, layer, rows, pos, head, vals = write
        key = (comp, layer)
        a = self._select(self._view(raws, key), rows, pos, head).double()
        g = self._select(self._view(grads, key), rows, pos, head).double()
        d = (torch.as_tensor(vals, dtype=torch.float64) - a) * g
        return d.reshape(d.shape[0], -1).sum(1).numpy()

    # --- forward+backward passes with torch hooks --------------------------------------------------
    def _pass(self, prompts, *, offsets: dict | None = None, drop: int | None = None, attn_layers=()) -> dict:
        """One forward+backward of the base run on `prompts`: raw activations and their gradients per key,
        the metric per prompt; `offsets` (module key -> tensor) are added to those raw tensors first;
        `drop` stops the gradient through that layer's attention and MLP outputs; the inputs of the
        attention modules of `attn_layers` are kept (for `_recompute_qk`)."""
        model, ctx = self.model, self.ctx
        hf = model.hf
        tokens = ctx.base_tok[prompts].to(model.device)
        deltas, raws, hooks, attn_in = {}, {}, [], {}

        def add(mkey, raw, in_place):
            d = torch.zeros_like(raw, requires_grad=True)
            deltas[mkey] = d
            extra = d if offsets is None or mkey not in offsets else d + offsets[mkey].to(raw)
            raws[mkey] = raw.detach().clone()
            return raw.add_(extra) if in_place else raw + extra

        for (module, io), keys in self.modules.items():
            mod = hf.get_submodule(module)
            mkey = (module, io)
            in_place = any(k[0] == "resid_mid" for k in keys)   # the norm's input is also the block's residual
            if io == "input":
                def pre(m, args, kwargs, mkey=mkey, in_place=in_place):
                    if args:
                        return (add(mkey, args[0], in_place),) + tuple(args[1:]), kwargs
                    name = next(iter(kwargs))
                    return args, {**kwargs, name: add(mkey, kwargs[name], in_place)}
                hooks.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
            else:
                def post(m, args, out, mkey=mkey):
                    new = add(mkey, raw_tensor(out), False)
                    return (new,) + tuple(out[1:]) if isinstance(out, (tuple, list)) else new
                hooks.append(mod.register_forward_hook(post))
        if drop is not None:
            for comp in ("attn_out", "mlp_out"):
                mod = hf.get_submodule(model.location(comp, drop).module)
                hooks.append(mod.register_forward_hook(
                    lambda m, a, o: (o[0].detach(),) + tuple(o[1:]) if isinstance(o, (tuple, list)) else o.detach()))
        if getattr(ctx, "base_noise", None) is not None:   # an embedding-noise corrupt base run (causal tracing)
            noise = ctx.base_noise[prompts].to(device=model.device)
            hooks.append(hf.get_submodule(ctx.emb_path).register_forward_hook(lambda m, a, o: o + noise.to(o.dtype)))
        for layer in attn_layers:
            mod = hf.get_submodule(self._attn_module(layer))
            hooks.append(mod.register_forward_pre_hook(
                lambda m, a, k, layer=layer: attn_in.__setitem__(layer, _detach((a, k))), with_kwargs=True))
        try:
            with torch.enable_grad():
                rp = ctx.read_pos[prompts]
                keep, inverse = keep_index(rp)   # logits only where the metric reads them
                out = hf(tokens, use_cache=False, **trace_kwargs(model, keep.to(model.device), tokens))
                logits = logits_at(out.logits, keep.to(out.logits.device), inverse.to(out.logits.device),
                                   rp.to(out.logits.device))
                wrong = ctx.wrong[prompts] if ctx.wrong is not None else None
                metric = ctx.metric.compute(logits.cpu(), ctx.answer[prompts], wrong, ctx.clean_logits[prompts])
                mkeys = list(deltas)
                grads = torch.autograd.grad(metric.sum(), [deltas[k] for k in mkeys], allow_unused=True)
        finally:
            for h in hooks:
                h.remove()
        self.cost += 3 * len(prompts)
        by_key_raw, by_key_grad = {}, {}
        for mk, g in zip(mkeys, grads):
            for key in self.modules[mk]:
                by_key_raw[key] = raws[mk].cpu()
                by_key_grad[key] = (torch.zeros_like(raws[mk]) if g is None else g.detach()).cpu()
        return {"raw": by_key_raw, "grad": by_key_grad, "metric": metric.detach().numpy().astype(np.float64),
                "attn_in": attn_in, "mraw": raws}

    # --- integrated gradients --------------------------------------------------------------------
    def _integrated(self, prompts, base, writes) -> np.ndarray:
        m, B = len(self.sites), len(prompts)
        delta = np.zeros((B, m))
        for key in self.keys:
            cols = [j for j, s in enumerate(self.sites) if (s.component, s.layer) == key]
            loc = self.model.location(*key)
            mkey = (loc.module, loc.io)
            step = torch.zeros_like(base["mraw"][mkey])       # (patched - base) at the key's sites
            sview = component_view(self.model.adapter, key[0], step, self.model.n_heads, self.model.n_kv_heads,
                                   self.model.d_head)
            for j in cols:
                comp, layer, rows, pos, head, vals = writes[j]
                a = self._select(self._view(base["raw"], key), rows, pos, head)
                diff = torch.as_tensor(vals, dtype=a.dtype) - a
                if pos is None:
                    if head is None:
                        sview[rows] = diff
                    else:
                        sview[rows, :, head] = diff
                elif head is None:
                    sview[rows, pos] = diff
                else:
                    sview[rows, pos, head] = diff
            for k in range(self.steps):
                alpha = (k + 0.5) / self.steps
                g = self._pass(prompts, offsets={mkey: alpha * step})
                for j in cols:
                    delta[:, j] += self._dot(writes[j], base["raw"], g["grad"]) / self.steps
        return delta

    # --- AtP*: exact attention for q/k sites -----------------------------------------------------
    def _attn_module(self, layer: int) -> str:
        """The attention module: the deepest module containing both the q/k projection and head_out's."""
        a = self.model.location("q", layer).module.split(".")
        b = self.model.location("head_out", layer).module.split(".")
        common = []
        for x, y in zip(a, b):
            if x != y:
                break
            common.append(x)
        return ".".join(common)

    def _recompute_qk(self, prompts, base) -> dict:
        """For each q/k site: the change of head_out (all heads, all positions) [B, T, H, dh] when the
        attention module of its layer is rerun with the patched query/key (the rest of the layer as in
        the base run)."""
        model, hf = self.model, self.model.hf
        out = {}
        for layer in self.qk_layers:
            cols = [j for j in self.qk if self.sites[j].layer == layer]
            args, kwargs = base["attn_in"][layer]
            B = len(prompts)
            local = np.tile(np.arange(B), len(cols))
            col_of = np.repeat(cols, B)
            groups = _build_groups(model, self.ctx, col_of, prompts[local])
            attn = hf.get_submodule(self._attn_module(layer))
            hout = hf.get_submodule(model.location("head_out", layer).module)
            box = {}

            def write(m, a, o, mname):
                raw = raw_tensor(o).clone()
                for g in (g for g in groups if g.module == mname):
                    for comp, rows, pos, head, vals, *_ in g.writes:
                        view = component_view(model.adapter, comp, raw, model.n_heads, model.n_kv_heads, model.d_head)
                        if isinstance(vals, torch.Tensor):
                            vals = vals.to(view)
                        if pos is None:
                            view[rows, :, head] = vals
                        else:
                            view[rows, pos, head] = vals
                return (raw,) + tuple(o[1:]) if isinstance(o, (tuple, list)) else raw

            mods = {(g.module, g.io) for g in groups}
            if any(io != "output" for _, io in mods):
                raise ScanError("atp* recomputes attention only where q/k are module outputs")
            hooks = [hf.get_submodule(mname).register_forward_hook(lambda m, a, o, mname=mname: write(m, a, o, mname))
                     for mname, _ in mods]
            hooks.append(hout.register_forward_pre_hook(lambda m, a: box.__setitem__("z", a[0].detach())))
            try:
                with torch.no_grad():
                    attn(*_index(args, local, B), **_index(kwargs, local, B))
            finally:
                for h in hooks:
                    h.remove()
            self.cost += len(local) / model.n_layers
            z_new = box["z"].cpu()
            z_base = base["raw"][("head_out", layer)][local]
            dz = (z_new - z_base).double()
            for c, j in enumerate(cols):
                out[j] = dz[c * B:(c + 1) * B]
        return out


def _dot_heads(dz: torch.Tensor, grad: torch.Tensor) -> np.ndarray:
    d = dz * grad.double()
    return d.reshape(d.shape[0], -1).sum(1).numpy()


def _detach(x):
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, (tuple, list)):
        return type(x)(_detach(v) for v in x)
    if isinstance(x, dict):
        return {k: _detach(v) for k, v in x.items()}
    return x


def _index(x, rows: np.ndarray, batch: int):
    """Rows `rows` of every batch-shaped tensor in `x` (tensors of >= 2 dims whose first dim is the batch)."""
    if isinstance(x, torch.Tensor):
        if x.ndim >= 2 and x.shape[0] == batch:
            return x[torch.as_tensor(rows, device=x.device)]
        return x
    if isinstance(x, (tuple, list)):
        return type(x)(_index(v, rows, batch) for v in x)
    if isinstance(x, dict):
        return {k: _index(v, rows, batch) for k, v in x.items()}
    return x
