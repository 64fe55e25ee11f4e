"""Activations of one site over a contrast set (what probes, SAEs and DAS are fitted on).

One unpatched pass per chunk through the engine's own reader (`engine.compile._run_plain`), so the
vectors are exactly the ones the engine patches.
"""
from __future__ import annotations

import numpy as np
import torch

from ..engine.compile import _run_plain
from ..models.load import Model, load_model
from ..spec.data import ContrastSet
from ..spec.sites import ALL, Site


def site_of(site) -> Site:
    """A single `Site` from a Site or a one-site SiteSet (feature sites give their place)."""
    from ..spec.sites import SiteSet
    if isinstance(site, SiteSet):
        if len(site.explicit) != 1:
            raise ValueError("give one site (e.g. ci.Site('resid_pre', 1, position='end')), not a site set")
        site = site.explicit[0]
    if not isinstance(site, Site):
        raise ValueError(f"expected a ci.Site, got {type(site).__name__}")
    return Site(site.component, site.layer, site.head, site.position)


def collect(model, data: ContrastSet, site, *, run: str = "clean", batch_size: int = 64) -> torch.Tensor:
    """Activation of `site` in the `run` ("clean" or "corrupt") of every prompt: [n, d] at one position,
    [n_tokens, d] over every real (non-padding) token for ``position="all"``.

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(8)
        >>> ci.features.collect(model, data, ci.Site("resid_pre", 1, position="end")).shape
        torch.Size([8, 64])
    """
    if run not in ("clean", "corrupt"):
        raise ValueError(f"run must be 'clean' or 'corrupt', got {run!r}")
    if not isinstance(model, Model):
        model = load_model(model)
    s = site_of(site)
    toks = data.tokens(run)
    read = torch.zeros(data.n, dtype=torch.long)
    acts, _ = _run_plain(model, toks, read, [(s.component, s.layer)], batch_size)
    a = acts[(s.component, s.layer)]
    if s.head is not None:
        from ..models.adapters import head_index
        a = a[..., head_index(s.component, s.head, model.n_heads, model.n_kv_heads), :]
    if s.position == ALL:
        lengths = torch.tensor(data.lengths)
        mask = torch.arange(a.shape[1])[None, :] < lengths[:, None]
        return a[mask].float()
    pos = torch.tensor([data.position_index(s.position, i) for i in range(data.n)])
    return a[torch.arange(data.n), pos].float()


def tokens_at(data: ContrastSet, position, run: str = "clean") -> np.ndarray:
    """The token id at `position` of every prompt (the "type" of a Hewitt & Liang control task)."""
    rows = data.clean if run == "clean" else data.corrupt
    return np.array([rows[i][data.position_index(position, i)] for i in range(data.n)])
