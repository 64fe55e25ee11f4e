"""Distributed alignment search (Geiger et al. 2023): learn a k-dimensional subspace whose interchange
intervention makes the model produce the counterfactual answer, on a training split; test it on held-out prompts.

Training: the base run is the corrupt prompt, the source is the clean prompt (the same direction as
``ci.patch("denoise")``); at the site, the activation's projection on the learned subspace is replaced by the
source's (``new = cur + (src - cur) R^T R``); the loss is the cross-entropy of the clean answer at the metric's
position.  ``R`` ([k, d], orthonormal rows) is kept orthonormal by ``torch.nn.utils.parametrizations.orthogonal``.
The model's weights are frozen.

Evaluation (`DASResult.evaluate`) refuses the prompts it was fitted on, and reports interchange-intervention
accuracy (the intervened run's top token is the clean answer) with a bootstrap CI, the claim's verdict on the
learned subspace through the engine (default: recovers at least half the gap), and a `beats_random` verdict
against random subspaces of the same dimension at the same place.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..models.adapters import component_view
from ..models.load import Model, load_model
from ..spec.data import ContrastSet
from ..spec.features import FeatureSite, Subspace, orthonormalize
from ..spec.sites import ALL, HEAD_COMPONENTS, Site
from ..stats.bootstrap import bootstrap_ci
from .activations import collect, site_of
from .heldout import check_held_out, prompt_set


@dataclass
class DASEvaluation:
    """Held-out test of a DAS subspace: IIA with CI, the claim's `Evaluation`, and the random-subspace comparison."""

    iia: float
    iia_ci: tuple
    random_iia: float
    claim: object          # Evaluation of the claim on the learned subspace
    beats_random: object   # Evaluation of beats_random against random subspaces of the same dimension
    n_prompts: int

    @property
    def verdict(self) -> str:
        return self.claim.verdict

    def to_dict(self) -> dict:
        return {"iia": self.iia, "iia_ci": list(self.iia_ci), "random_iia": self.random_iia, "n_prompts": self.n_prompts,
                "claim": self.claim.to_dict(), "beats_random": self.beats_random.to_dict()}

    def to_markdown(self) -> str:
        """A report table: site (with the subspace dimension), IIA with CI, random IIA, the two verdicts."""
        site = self.claim.table["site"].iloc[0]
        head = "| site | n | IIA (CI) | random subspaces IIA | claim | verdict | beats random |"
        row = (f"| {site} | {self.n_prompts} | {self.iia:.3f} [{self.iia_ci[0]:.3f}, {self.iia_ci[1]:.3f}] | "
               f"{self.random_iia:.3f} | {self.claim.claim} | {self.claim.verdict} | {self.beats_random.verdict} |")
        return "\n".join([head, "|" + "---|" * 7, row, "", *[f"- {r}" for r in self.claim.reasons],
                          *[f"- {r}" for r in self.beats_random.reasons]]) + "\n"

    def __str__(self) -> str:
        return (f"DAS subspace on {self.n_prompts} held-out prompts: IIA {self.iia:.3f} "
                f"[{self.iia_ci[0]:.3f}, {self.iia_ci[1]:.3f}] (random subspaces {self.random_iia:.3f})\n"
                f"{self.claim}\n{self.beats_random}")


@dataclass
class DASResult:
    """A learned subspace (`basis`, [k, d] orthonormal) at `site`, with its training history."""

    site: Site
    basis: torch.Tensor
    train_loss: list
    train_iia: float
    n_train: int
    fitted_on: frozenset = field(default=frozenset(), repr=False)

    @property
    def dim(self) -> int:
        return int(self.basis.shape[0])

    def subspace_site(self, name: str = "das") -> FeatureSite:
        s = self.site
        return FeatureSite(s.component, s.layer, s.head, s.position, Subspace(self.basis, name))

    def evaluate(self, model, data: ContrastSet, *, claim=None, n_random: int = 49, seed: int = 0,
                 n_resamples: int = 9999, **evaluate_kw) -> DASEvaluation:
        """Test the subspace on held-out `data` (prompts used in fitting are refused).

        Examples:
            >>> import causalinterp as ci
            >>> model = ci.load_model("testbed:induction")
            >>> train, test = ci.features.copy_choice_data(80, seed=1).split(0.5)
            >>> res = ci.das(model, train, ci.Site("resid_post", 1, position="end"), dim=1, steps=100)
            >>> ev = res.evaluate(model, test, n_random=20, n_resamples=999)
            >>> ev.verdict, ev.beats_random.verdict
            ('supported', 'supported')
        """
        from ..engine import scan
        from ..evaluate import evaluate
        from ..spec.claims import beats_random, recovers
        from ..spec.metrics import accuracy
        check_held_out(self.fitted_on, data, "DAS subspace")
        model = model if isinstance(model, Model) else load_model(model)
        site = self.subspace_site()
        pool = random_subspace_sites(self.site, self.dim, self.basis.shape[1], n_random, seed)
        eff = scan(model, data, [site], joint=True, n_random=n_random, random_pool=pool, seed=seed, progress=False)
        ev_claim = evaluate(eff, claim or recovers(0.5), n_resamples=n_resamples, **evaluate_kw)
        ev_random = evaluate(eff, beats_random(n_random), n_resamples=n_resamples, **evaluate_kw)
        acc = scan(model, data, [site] + list(pool), metric=accuracy(), progress=False).values
        iia = bootstrap_ci(acc[:, 0], n_resamples=n_resamples, seed=seed,
                           clusters=None if data.clusters is None else np.asarray(data.clusters))
        return DASEvaluation(iia=float(iia.estimate), iia_ci=(float(iia.low), float(iia.high)),
                             random_iia=float(acc[:, 1:].mean()), claim=ev_claim, beats_random=ev_random,
                             n_prompts=data.n)


def random_subspace_sites(site: Site, k: int, d: int, n: int, seed: int) -> list[FeatureSite]:
    """`n` uniformly random k-dimensional subspaces (QR of Gaussian matrices) at `site`'s place."""
    g = torch.Generator().manual_seed(seed)
    return [FeatureSite(site.component, site.layer, site.head, site.position,
                        Subspace(orthonormalize(torch.randn(k, d, generator=g)), f"random{i}")) for i in range(n)]


def _hook(model: Model, site: Site, edit):
    """Register a torch hook that replaces the site's activation by ``edit(view)`` (a new tensor); returns the handle."""
    loc = model.location(site.component, site.layer)
    mod = model.hf.get_submodule(loc.module)

    def replace(raw):
        new = raw.clone()
        view = component_view(model.adapter, site.component, new, model.n_heads, model.n_kv_heads, model.d_head)
        edit(view)
        return new

    if loc.io == "input":
        def pre(m, args, kwargs):
            if args:
                return (replace(args[0]),) + tuple(args[1:]), kwargs
            key = next(iter(kwargs))
            return args, {**kwargs, key: replace(kwargs[key])}
        return mod.register_forward_pre_hook(pre, with_kwargs=True)

    def post(m, args, out):
        if isinstance(out, tuple):
            return (replace(out[0]),) + tuple(out[1:])
        return replace(out)
    return mod.register_forward_hook(post)


def das(model, train_data: ContrastSet, site, dim: int = 1, *, steps: int = 300, lr: float = 1e-2,
        batch_size: int = 64, seed: int = 0, metric_position="end") -> DASResult:
    """Learn a `dim`-dimensional subspace at `site` by distributed alignment search on `train_data`.

    `site` is one component at one position (``resid_pre``/``resid_post``/``attn_out``/``mlp_out``, or a head's
    ``head_out``/``q``/``k``/``v``).  Evaluate with `DASResult.evaluate` on prompts not in `train_data`.

    Examples:
        >>> import causalinterp as ci
        >>> model = ci.load_model("testbed:induction")
        >>> train = ci.features.copy_choice_data(40, seed=1)
        >>> res = ci.das(model, train, ci.Site("resid_post", 1, position="end"), dim=1, steps=50)
        >>> res.basis.shape, res.train_iia > 0.9
        (torch.Size([1, 64]), True)
    """
    model = model if isinstance(model, Model) else load_model(model)
    s = site_of(site)
    if s.position == ALL:
        raise ValueError("das: give one position (e.g. 'end'); a subspace at every position is not supported")
    if s.component == "resid_mid":
        raise ValueError("das: resid_mid is not supported (its tensor is also the block's residual); use resid_pre "
                         "of the next layer's input or resid_post")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"das: dim must be a positive int, got {dim!r}")
    d = model.d_head if s.component in HEAD_COMPONENTS else model.d_model
    if dim > d:
        raise ValueError(f"das: dim {dim} exceeds the activation's width {d}")
    src = collect(model, train_data, s, run="clean")                # [n, d] source values, fixed
    base = train_data.tokens("corrupt")
    pos = torch.tensor([train_data.position_index(s.position, i) for i in range(train_data.n)])
    read = torch.tensor([train_data.position_index(metric_position, i) for i in range(train_data.n)])
    target = torch.tensor(train_data.answer)
    head = s.head

    torch.manual_seed(seed)
    rot = torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(d, dim, bias=False))
    opt = torch.optim.Adam(rot.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    params = [p for p in model.hf.parameters()]
    was = [p.requires_grad for p in params]
    dev = model.device
    losses = []
    state = {}

    def edit(view):
        R = rot.weight.to(view.dtype)
        rows = torch.arange(view.shape[0], device=view.device)
        cur = view[rows, state["pos"]] if head is None else view[rows, state["pos"], head]
        new = cur + ((state["src"].to(cur.dtype) - cur) @ R.T) @ R
        if head is None:
            view[rows, state["pos"]] = new
        else:
            view[rows, state["pos"], head] = new

    handle = _hook(model, s, edit)
    try:
        for p in params:
            p.requires_grad_(False)
        for _ in range(steps):
            idx = torch.randperm(train_data.n, generator=g)[:batch_size]
            state.update(pos=pos[idx].to(dev), src=src[idx].to(dev))
            toks = base[idx].to(dev)
            logits = model.hf(toks, attention_mask=torch.ones_like(toks)).logits
            picked = logits[torch.arange(len(idx), device=dev), read[idx].to(dev)]
            loss = torch.nn.functional.cross_entropy(picked.float(), target[idx].to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        with torch.no_grad():  # training IIA on all training prompts
            state.update(pos=pos.to(dev), src=src.to(dev))
            toks = base.to(dev)
            logits = model.hf(toks, attention_mask=torch.ones_like(toks)).logits
            picked = logits[torch.arange(train_data.n, device=dev), read.to(dev)]
            train_iia = float((picked.argmax(-1).cpu() == target).float().mean())
    finally:
        handle.remove()
        for p, w in zip(params, was):
            p.requires_grad_(w)
    basis = orthonormalize(rot.weight.detach().cpu())
    return DASResult(site=s, basis=basis, train_loss=losses, train_iia=train_iia, n_train=train_data.n,
                     fitted_on=prompt_set(train_data))
