"""Derived adapters: locate the canonical components of a decoder-only model that has no table, and prove
the derivation on the spot.

`derive(model)` runs two random prompts through the model once with plain forward hooks on every module of
the first block, then *searches by identity* rather than by name:

* ``resid_pre``/``resid_post``: the input/output of each module of the block list (a ModuleList of
  n_layers modules);
* ``attn_out``/``mlp_out``/``resid_mid``: module outputs A, M and a module input R with
  ``R = resid_pre + A`` and ``resid_post = R + M`` (sequential blocks) or ``resid_post = resid_pre + A + M``
  (parallel attention; no resid_mid);
* ``head_out``: the input of a linear map inside the attention module whose output is the attention
  output, with per-head outputs through its weight summing to it;
* ``q``/``k``/``v``: the last module output (per-projection, or a fused q/k/v in any known layout) for which
  a small change to head h at position t changes the attention's per-head output only where a query / key /
  value of that head can reach (q: only head h at t; k/v: only the heads of that key/value group at
  positions >= t; v linearly, k not).

Each located component is then checked through the same nnsight reads and in-place writes the engine uses,
at the first and the last layer: denoising every position of resid_pre/resid_mid/resid_post from the clean
prompt reproduces the clean logits; writing a component's own value changes nothing; adding a vector to
attn_out/mlp_out moves the stream after it by exactly that vector; zeroing one head of head_out changes the
attention output by exactly that head's share.  A component that fails is marked absent with a reason
naming it (asking for it raises); if the block list itself fails, loading fails.  Nothing is guessed
silently.
"""
from __future__ import annotations

import re

import torch

from .adapters import Absent, Adapter, Location, UnsupportedModelError, head_view, raw_tensor

CONTRIBUTING = "see CONTRIBUTING.md, 'Adding an architecture', to add a table for this family"
_ATTN = re.compile(r"attn|attention", re.I)
_NORM = re.compile(r"norm|^ln", re.I)


def _attention_named(path: str) -> bool:
    name = path.split(".")[-1]
    return bool(_ATTN.search(name)) and not _NORM.search(name)
_MLP = re.compile(r"mlp|ffn|feed_?forward|moe|experts?$", re.I)


class DerivationError(UnsupportedModelError):
    """No adapter could be derived (or verified) for the model."""


def envoy(nn_model, path: str):
    """The nnsight envoy for a dotted module path ("" is the model itself)."""
    env = nn_model
    for part in filter(None, path.split(".")):
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    if a.shape != b.shape:
        return False
    a, b = a.double(), b.double()
    return bool((a - b).abs().max() <= tol * (1.0 + b.abs().max()))


def _tol(dtype) -> float:
    return 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2


def _block_list(hf, n_layers: int) -> str:
    for name, mod in hf.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n_layers and name:
            return name
    raise DerivationError(f"could not derive an adapter: no list of {n_layers} transformer blocks (a ModuleList "
                          f"with num_hidden_layers entries) in {type(hf).__name__}; {CONTRIBUTING}")


def _record(hf, block, tokens):
    """Input (first argument) and output (first element) of every module under `block`, by relative path."""
    rec, hooks = {}, []

    def pre(name):
        def f(mod, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()), None)
            rec.setdefault(name, {})["in"] = x.detach().clone() if isinstance(x, torch.Tensor) else None
        return f

    def post(name):
        def f(mod, args, out):
            o = raw_tensor(out)
            rec.setdefault(name, {})["out"] = o.detach().clone() if isinstance(o, torch.Tensor) else None
        return f

    for name, mod in block.named_modules():
        hooks.append(mod.register_forward_pre_hook(pre(name), with_kwargs=True))
        hooks.append(mod.register_forward_hook(post(name)))
    try:
        with torch.no_grad():
            logits = hf(tokens).logits
    finally:
        for h in hooks:
            h.remove()
    return rec, logits


def _depth(path: str) -> int:
    return path.count(".") + 1 if path else 0


class _Deriver:
    def __init__(self, model):
        self.m = model
        self.hf = model.hf
        self.H, self.KV, self.dh, self.d = model.n_heads, model.n_kv_heads, model.d_head, model.d_model
        self.L = model.n_layers
        dtype = next(self.hf.parameters()).dtype
        self.tol = _tol(dtype)
        self.T = next(t for t in (7, 9, 11, 13, 17, 19, 23) if self.H % t)  # never a head count: layouts stay unambiguous
        self.t0 = 3
        g = torch.Generator().manual_seed(0)
        vocab = int(self.hf.get_output_embeddings().weight.shape[0])
        self.tokens = torch.randint(min(3, vocab - 1), vocab, (2, self.T), generator=g).to(model.device)
        self.layers = _block_list(self.hf, self.L)
        self.failures: dict[str, str] = {}
        self.kv_found = None
        self.base_head_out = {}

    # -- helpers -------------------------------------------------------------------------------------
    def path(self, rel: str, layer: int) -> str:
        return f"{self.layers}.{layer}" + (f".{rel}" if rel else "")

    def steps(self, tokens, steps, backend="nnsight"):
        """One forward pass over `steps` [("edit"|"read", path, io, fn)]: an edit calls ``fn(raw)`` on the module's
        input/output (in place), a read saves a copy.  Returns (logits, reads).  ``backend="nnsight"`` goes
        through the engine's own mechanism (steps in execution order); ``"hooks"`` uses plain torch hooks
        (faster; used while searching)."""
        if backend == "hooks":
            return self._hook_steps(tokens, steps)
        import nnsight
        out = []
        with torch.inference_mode():
            with self.m.nn.trace(tokens):
                for kind, path, io, fn in steps:
                    env = envoy(self.m.nn, path)
                    raw = raw_tensor(env.input if io == "input" else env.output)
                    if kind == "edit":
                        fn(raw)
                    else:
                        out.append(nnsight.save(raw.clone()))
                logits = nnsight.save(self.m.nn.output.logits)
        return logits, out

    def _hook_steps(self, tokens, steps):
        out, hooks = [None] * len(steps), []
        for i, (kind, path, io, fn) in enumerate(steps):
            def act(raw, i=i, kind=kind, fn=fn):
                if kind == "edit":
                    fn(raw)
                else:
                    out[i] = raw.detach().clone()
            mod = self.hf.get_submodule(path)
            if io == "input":
                hooks.append(mod.register_forward_pre_hook(
                    lambda m, a, k, act=act: act(a[0] if a else next(iter(k.values()))), with_kwargs=True))
            else:
                hooks.append(mod.register_forward_hook(lambda m, a, o, act=act: act(raw_tensor(o))))
        try:
            with torch.no_grad():
                logits = self.hf(tokens).logits
        finally:
            for h in hooks:
                h.remove()
        return logits, [o for o, s in zip(out, steps) if s[0] == "read"]

    # -- search ------------------------------------------------------------------------------------
    def search(self):
        block = self.hf.get_submodule(f"{self.layers}.0")
        rec, self.logits = _record(self.hf, block, self.tokens)
        self.rec = rec
        B, T, d = 2, self.T, self.d
        pre, post = rec[""].get("in"), rec[""].get("out")
        if pre is None or post is None or pre.shape != (B, T, d) or post.shape != (B, T, d):
            raise DerivationError(f"could not derive an adapter: the blocks of {self.layers!r} do not take and return "
                                  f"the residual stream [batch, pos, {d}]; {CONTRIBUTING}")
        order = list(rec)
        shaped = lambda io: [p for p in order if p and isinstance(rec[p].get(io), torch.Tensor)  # noqa: E731
                             and rec[p][io].shape == (B, T, d)]
        outs, ins = shaped("out"), shaped("in")
        attn_named = [p for p in outs if _attention_named(p)]
        attn_cands = sorted(attn_named, key=_depth) + sorted([p for p in outs if p not in attn_named], key=_depth)
        mlp_cands = sorted(outs, key=lambda p: (not _MLP.search(p.split(".")[-1]), _depth(p)))
        mid_cands = sorted(ins, key=_depth)
        tol = self.tol
        found = None
        for a in attn_cands:  # sequential: R = pre + A, post = R + M
            r = pre + rec[a]["out"]
            for mid in (p for p in mid_cands if _close(rec[p]["in"], r, tol)):
                for mm in mlp_cands:
                    if mm != a and not mm.startswith(a + ".") and _close(post, rec[mid]["in"] + rec[mm]["out"], tol):
                        found = (a, mid, mm)
                        break
                if found:
                    break
            if found:
                break
        if found is None:  # parallel: post = pre + A + M
            for a in attn_cands:
                for mm in mlp_cands:
                    if (mm != a and not mm.startswith(a + ".") and not a.startswith(mm + ".")
                            and _close(post, pre + rec[a]["out"] + rec[mm]["out"], tol)):
                        found = (a, None, mm)
                        break
                if found:
                    break
        self.attn_out, self.resid_mid, self.mlp_out = found if found else (None, None, None)
        if found is None:
            self.failures["attn_out"] = self.failures["mlp_out"] = self.failures["resid_mid"] = (
                "no module outputs add up to the residual stream (resid_pre + attn_out (+ mlp_out) = resid_post)")
        # the attention module: the shallowest attention-named module (an ancestor of attn_out when possible)
        named = sorted({p for p in order if p and _attention_named(p)}, key=_depth)
        self.attn = next((p for p in named if self.attn_out and (self.attn_out == p or self.attn_out.startswith(p + "."))),
                         named[0] if named else None)
        if self.attn is None:
            for c in ("head_out", "q", "k", "v"):
                self.failures[c] = "no attention module (a submodule named like 'attn'/'attention') in the block"
            self.head_out = None
            return
        self.head_out = self.find_head_out()

    def find_head_out(self):
        rec, H, dh, d = self.rec, self.H, self.dh, self.d
        # the projection's output is the attention module's output, or (where the module adds the residual
        # itself, as in BLOOM) what attention adds to the stream
        targets = [t for t in (rec[self.attn].get("out"), rec.get(self.attn_out or "", {}).get("out"))
                   if isinstance(t, torch.Tensor)]
        for p, mod in self.hf.get_submodule(f"{self.layers}.0.{self.attn}").named_modules():
            full = f"{self.attn}.{p}" if p else self.attn
            x, y = rec.get(full, {}).get("in"), rec.get(full, {}).get("out")
            w = getattr(mod, "weight", None)
            if not p or x is None or y is None or w is None:
                continue
            if x.shape[-1] != H * dh or not any(_close(y, t, self.tol) for t in targets):
                continue
            bias = getattr(mod, "bias", None)
            for W in ([w.T] if w.shape == (d, H * dh) else []) + ([w] if w.shape == (H * dh, d) else []):
                per_head = torch.einsum("bthe,hed->bthd", x.view(*x.shape[:2], H, dh).double(),
                                        W.detach().reshape(H, dh, d).double())
                total = per_head.sum(2) + (bias.detach().double() if bias is not None else 0.0)
                if _close(total, y, self.tol):
                    self.W_O = (full, W is not w)  # (module, weight stored [out, in] and transposed here)
                    return full
        self.failures["head_out"] = (f"no linear map inside {self.attn!r} takes [.., {H}x{dh}] per-head outputs to the "
                                     "attention output (per-head outputs through W_O must sum to it)")
        return None

    # -- q/k/v -------------------------------------------------------------------------------------
    def qkv_candidates(self):
        """(component, module rel path, layout, n_kv_heads) candidates in execution order (later ones preferred).

        The number of key/value heads is read off the tensor sizes (configs name it differently, and
        multi-query models have one)."""
        B, T, H, dh = 2, self.T, self.H, self.dh
        out = []
        for p, r in self.rec.items():
            if not p.startswith(self.attn + ".") or p == self.head_out or self.head_out.startswith(p + "."):
                continue  # inside attention, and not the output projection or a module around it
            y = r.get("out")
            if not isinstance(y, torch.Tensor) or y.ndim < 3:
                continue
            if y.shape[:2] == (B, T) and y.shape[-1] in (H * dh, dh) and y.numel() == B * T * H * dh:
                out.append(("q", p, "separate", None))
            elif y.ndim == 4 and y.shape[:3] == (B, H, T):
                out.append(("q", p, "bhtd", None))
            n = y.numel() // (B * T * dh)
            if y.numel() == B * T * n * dh and 0 < n <= H and H % n == 0:
                if y.shape[:2] == (B, T) and y.shape[-1] in (n * dh, dh):
                    out += [(c, p, "separate", n) for c in "kv"]
                elif y.ndim == 4 and y.shape[:3] == (B, n, T):
                    out += [(c, p, "bhtd", n) for c in "kv"]
            F = y.shape[-1] // dh if y.shape[:2] == (B, T) and y.ndim == 3 and y.shape[-1] % dh == 0 else 0
            kv = (F - H) // 2
            if F > H and (F - H) % 2 == 0 and 0 < kv <= H and H % kv == 0:
                layouts = ["concat"] + (["neox"] if kv == H else []) + (["grouped"] if kv < H else [])
                out += [(c, p, lay, kv) for lay in reversed(layouts) for c in "qkv"]  # tried last to first
        paths = {(c, p) for c, p, _, _ in out}  # keep the outermost module of nested candidates
        return [o for o in out if not any((o[0], o[1].rsplit(".", k)[0]) in paths
                                          for k in range(1, o[1].count(".") + 1))]

    def head_effect(self, layer, comp, rel, layout, kv, scale=1.0, backend="hooks"):
        """Change of head_out [rows, T, H, dh] when row r adds a fixed random vector to head/group r at t0."""
        n = self.H if comp == "q" else kv
        toks = self.tokens[:1].expand(n, -1)
        g = torch.Generator().manual_seed(1)
        ref = self.rec[rel]["out"]
        delta = torch.randn(n, self.dh, generator=g).to(ref.device, ref.dtype) * 0.1 * (ref.abs().max() + 1)

        def edit(raw):  # add scale * (-2 x + delta): flips the head's vector, so even saturated softmaxes move
            view = head_view(layout, comp, raw, self.H, kv, self.dh)
            for r in range(n):
                view[r, self.t0, r] += scale * (delta[r] - 2 * view[r, self.t0, r])
        ho = self.path(self.head_out, layer)
        steps = [("edit", self.path(rel, layer), "output", edit), ("read", ho, "input", None)]
        _, (patched,) = self.steps(toks, steps, backend)
        key = (layer, backend)
        if key not in self.base_head_out:
            self.base_head_out[key] = self.steps(self.tokens[:1], [("read", ho, "input", None)], backend)[1][0]
        base = self.base_head_out[key]
        return (patched.view(n, self.T, self.H, self.dh) - base.view(1, self.T, self.H, self.dh)).double()

    def check_qkv(self, comp, rel, layout, kv, layer, backend="hooks"):
        """Whether a change to one head (q) / key-value group (k, v) at t0 reaches exactly the outputs it can:
        nothing outside (q: head h at t0; k/v: the group's heads at positions >= t0), something inside."""
        kv = kv or self.H
        n, g = (self.H, 1) if comp == "q" else (kv, self.H // kv)
        try:
            eff = self.head_effect(layer, comp, rel, layout, kv, backend=backend)
        except Exception:  # noqa: BLE001 - a layout that does not fit the tensor is simply not this one
            return False
        mag = eff.abs().amax(-1)  # [n, T, H]
        scale = mag.max()
        if not scale > 0:
            return False
        for r in range(n):
            expect = torch.zeros(self.T, self.H, dtype=torch.bool)
            if comp == "q":
                expect[self.t0, r] = True
            else:
                expect[self.t0:, r * g:(r + 1) * g] = True
            reached = mag[r][expect.any(1)] if comp != "q" else mag[r, self.t0:self.t0 + 1]
            if mag[r][~expect].max() > self.tol * scale or (reached[:, r * g:(r + 1) * g].amax(0) <= self.tol * scale).any():
                return False  # leaked outside, or a head of the group was not reached at all
        if comp in ("k", "v"):  # v acts linearly on the output, k through the softmax
            eff2 = self.head_effect(layer, comp, rel, layout, kv, scale=2.0, backend=backend)
            if _close(eff2, 2 * eff, 1e-3) != (comp == "v"):
                return False
        return True

    def find_qkv(self):
        if self.head_out is None:
            for c in "qkv":
                self.failures.setdefault(c, "needs head_out (the per-head attention output), which was not found")
            return {}
        cands = self.qkv_candidates()
        found = {}
        for comp in "qkv":
            for _, rel, layout, kv in reversed([c for c in cands if c[0] == comp]):
                if comp == "v" and "k" in found and kv != self.kv_found:
                    continue
                # searched with plain hooks at both ends of the stack, confirmed through nnsight at layer 0
                if (all(self.check_qkv(comp, rel, layout, kv, layer) for layer in sorted({0, self.L - 1}))
                        and self.check_qkv(comp, rel, layout, kv, 0, backend="nnsight")):
                    found[comp] = Location(self.path(rel, "{layer}"), "output", layout)
                    if comp == "k":
                        self.kv_found = kv
                    break
            else:
                self.failures[comp] = (f"no module output inside {self.attn!r} behaves like per-head {comp} (a change to "
                                       f"one head must reach only that head's output{'' if comp == 'q' else ' at later positions'})")
        return found

    # -- verification through nnsight, as the engine reads and writes -------------------------------
    def verify(self, comps: dict):
        clean, corrupt = self.tokens[:1], self.tokens[1:]
        with torch.no_grad():
            clean_lo, corrupt_lo = self.hf(clean).logits, self.hf(corrupt).logits
        # causal decoder-only: changing the last token leaves earlier logits alone
        other = corrupt.clone()
        other[0, -1] = clean[0, -1] if clean[0, -1] != corrupt[0, -1] else (corrupt[0, -1] + 1) % clean_lo.shape[-1]
        with torch.no_grad():
            if not _close(self.hf(other).logits[:, :-1], corrupt_lo[:, :-1], self.tol):
                raise DerivationError("could not derive an adapter: the model is not a causal decoder (changing the "
                                      f"last token changed earlier logits); {CONTRIBUTING}")
        tol = self.tol
        # every check at the first layer with plain hooks and at the last layer through nnsight (the engine's
        # own reads and writes; one model has one mechanism, so the layer that runs it does not matter)
        plan = [(0, "nnsight")] if self.L == 1 else [(0, "hooks"), (self.L - 1, "nnsight")]
        for layer, backend in plan:
            def loc(c, layer=layer):
                return comps[c].module.format(layer=layer), comps[c].io

            def read(tokens, c):
                _, (x,) = self.steps(tokens, [("read", *loc(c), None)], backend)
                return x

            # denoise every position of the stream -> the clean run
            for c in ("resid_pre", "resid_mid", "resid_post"):
                if c not in comps or (c == "resid_pre" and layer != 0):
                    continue
                val = read(clean, c)
                lo, _ = self.steps(corrupt, [("edit", *loc(c), lambda raw, v=val: raw.copy_(v))],
                                   "nnsight" if c == "resid_pre" else backend)
                if not _close(lo, clean_lo, tol):
                    self._fail(comps, c, "denoising every position of it at layer "
                                         f"{layer} does not reproduce the clean run")
            # zero-effect writes
            for c in list(comps):
                lo, _ = self.steps(corrupt, [("edit", *loc(c), lambda raw: raw.copy_(raw.clone()))], backend)
                if not _close(lo, corrupt_lo, tol):
                    self._fail(comps, c, f"writing its own value back at layer {layer} changed the output")
            # additive writes move the stream by exactly the added vector
            after = {"attn_out": "resid_mid" if "resid_mid" in comps else "resid_post", "mlp_out": "resid_post"}
            for c, downstream in after.items():
                if c not in comps or downstream not in comps:
                    continue
                delta = torch.zeros(1, self.T, self.d, device=clean.device, dtype=clean_lo.dtype)
                delta[0, self.t0] = torch.randn(self.d, generator=torch.Generator().manual_seed(2)).to(delta)
                base = read(corrupt, downstream)
                _, (moved,) = self.steps(corrupt, [("edit", *loc(c), lambda raw, dl=delta: raw.add_(dl.to(raw.dtype))),
                                                   ("read", *loc(downstream), None)], backend)
                if not _close(moved - base, delta, tol):
                    self._fail(comps, c, f"adding a vector to it at layer {layer} does not move {downstream} by exactly "
                                         "that vector")
            # head_out: zeroing head h changes the attention output by exactly that head's share
            if "head_out" in comps:
                rel, transposed = self.W_O
                H, dh = self.H, self.dh
                toks = corrupt.expand(H, -1)
                x = read(corrupt, "head_out")
                W = self.hf.get_submodule(self.path(rel, layer)).weight.detach()
                W = W.T if transposed else W
                share = torch.einsum("bthe,hed->bthd", x.view(1, self.T, H, dh).double(),
                                     W.reshape(H, dh, self.d).double())[0]  # [T, H, d]

                def zero(raw):
                    view = head_view("separate", "head_out", raw, H, self.KV, dh)
                    for h in range(H):
                        view[h, :, h] = 0
                o = self.path(rel, layer)
                _, (y0,) = self.steps(corrupt, [("read", o, "output", None)], backend)
                _, (y,) = self.steps(toks, [("edit", o, "input", zero), ("read", o, "output", None)], backend)
                if not _close((y0 - y).double(), share.permute(1, 0, 2), tol):
                    self._fail(comps, "head_out", f"zeroing one head at layer {layer} does not remove exactly its "
                                                  "share of the attention output")

    def _fail(self, comps, c, why):
        comps.pop(c, None)
        self.failures.setdefault(c, why)


def derive(model) -> Adapter:
    """A checked adapter for `model` (a `Model` whose adapter is not yet known); see the module docstring.

    The model's buffers are restored afterwards, so a probe that wrote into a cached tensor leaves no trace."""
    buffers = {name: b.detach().clone() for name, b in model.hf.named_buffers()}
    try:
        return _derive(model)
    finally:
        with torch.no_grad():
            for name, b in model.hf.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])


def _derive(model) -> Adapter:
    d = _Deriver(model)
    d.search()
    b = "{layer}"
    comps = {"resid_pre": Location(d.path("", b), "input"), "resid_post": Location(d.path("", b), "output")}
    if d.attn_out:
        comps["attn_out"] = Location(d.path(d.attn_out, b), "output")
        comps["mlp_out"] = Location(d.path(d.mlp_out, b), "output")
        if d.resid_mid:
            comps["resid_mid"] = Location(d.path(d.resid_mid, b), "input")
    if d.head_out:
        comps["head_out"] = Location(d.path(d.head_out, b), "input")
    comps.update(d.find_qkv())
    d.verify(comps)
    for c in ("resid_pre", "resid_post"):
        if c not in comps:
            raise DerivationError(f"could not derive an adapter for model_type {model.config.model_type!r}: {c} "
                                  f"failed its check ({d.failures[c]}); {CONTRIBUTING}")
    if "resid_mid" not in comps and d.attn_out and not d.resid_mid:
        d.failures["resid_mid"] = ("the block is parallel (resid_post = resid_pre + attn_out + mlp_out): there is no "
                                   "stream between attention and MLP. Use resid_pre, attn_out or mlp_out instead.")
    model_type = getattr(model.config, "model_type", "?")
    for c in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_out", "q", "k", "v"):
        if c not in comps:
            reason = d.failures.get(c, "not located")
            comps[c] = Absent(f"component {c!r} could not be derived for model_type {model_type!r}: {reason.rstrip('.')}. "
                              + ("" if "parallel" in reason else CONTRIBUTING[0].upper() + CONTRIBUTING[1:] + "."))
    kv = d.kv_found
    return Adapter(family=f"{model_type} (derived)", model_types=(model_type,), layers=d.layers, components=comps,
                   status="derived", kv_heads=(lambda config: kv) if kv else None,
                   notes="Derived from the module tree and checked at load by identities (see causalinterp.models.derive).")
