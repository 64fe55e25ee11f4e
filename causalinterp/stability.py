"""How stable a discovered circuit is: the same discovery repeated on resamples of the prompts.

    from causalinterp.stability import by_claim
    discover = by_claim(model, ci.sites.head_out(positions="all"), ci.claims.has_effect(),
                        intervention=ci.ablate("mean"))
    st = ci.stability(discover, data, n_resamples=50)
    st.frequency          # each node/edge: the fraction of resamples that selected it
    st.jaccard            # pairwise Jaccard similarities of the circuits found on different resamples

A *discovery* is any function ``discover(data) -> circuit`` (a `ci.Circuit`, or a collection of Sites /
Paths): a scan plus a selection rule, a screen plus a threshold.  Discovered circuits are known to vary with
the prompts used (Meloux et al. 2025); this measures how much.  Resamples are drawn by cluster (template)
when the data has clusters, by prompt otherwise:

* ``method="subsample"`` (default): half of the units without replacement per resample (stability
  selection, Meinshausen & Buhlmann 2010) -- every resample is a valid contrast set;
* ``method="bootstrap"``: a bootstrap draw of the units, of which the distinct units are used (scans refuse
  duplicated prompts, so multiplicities are dropped; about 63% of the units per resample).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from .circuits import Circuit, rank
from .spec.paths import Path
from .spec.sites import Site

__all__ = ["Stability", "StabilityError", "stability", "by_claim", "top_k"]


class StabilityError(ValueError):
    """A stability analysis that cannot run as asked."""


def _members(found) -> frozenset:
    if isinstance(found, Circuit):
        return found.members
    out = []
    for x in found:
        if isinstance(x, (Site, Path)):
            out.append(x.label)
        else:
            raise StabilityError(f"discover() returned {x!r}; return a ci.Circuit or Sites / Paths")
    return frozenset(out)


def _jaccard(a: frozenset, b: frozenset) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


@dataclass(frozen=True)
class Stability:
    """Selection frequencies and Jaccard similarities of circuits discovered on resamples of the prompts.

    frequency   pandas Series: member label -> fraction of resamples that selected it (highest first);
                members of the full-data circuit that were never re-selected appear with 0
    jaccard     [R*(R-1)/2] pairwise Jaccard similarities between the resamples' circuits
    to_full     [R] Jaccard similarity of each resample's circuit to the one found on all prompts
    circuits    the member sets found per resample; full: on all prompts; samples: prompt indices used
    """

    frequency: pd.Series
    jaccard: np.ndarray
    to_full: np.ndarray
    circuits: tuple
    full: frozenset
    samples: tuple
    method: str
    by: str
    meta: dict = field(default_factory=dict)

    @property
    def n_resamples(self) -> int:
        return len(self.circuits)

    def summary(self) -> dict:
        q = lambda x: [float(v) for v in np.quantile(x, [0.05, 0.5, 0.95])] if len(x) else None  # noqa: E731
        return {"n_resamples": self.n_resamples, "method": self.method, "by": self.by,
                "jaccard_mean": float(np.mean(self.jaccard)) if len(self.jaccard) else None,
                "jaccard_q05_q50_q95": q(self.jaccard), "to_full_mean": float(np.mean(self.to_full)),
                "full_circuit": sorted(self.full), "frequency": {k: float(v) for k, v in self.frequency.items()}}

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"member": self.frequency.index, "frequency": self.frequency.to_numpy(),
                             "in_full": [m in self.full for m in self.frequency.index]})

    def __str__(self) -> str:
        s = self.summary()
        lines = [f"stability over {s['n_resamples']} {self.method} resamples (by {self.by}): mean Jaccard "
                 f"{s['jaccard_mean']:.3f}, to the full-data circuit {s['to_full_mean']:.3f}"]
        lines += [f"  {m}: {f:.2f}" for m, f in self.frequency.items()]
        return "\n".join(lines)


def _units(data, by: str) -> tuple[list, list]:
    if by not in ("cluster", "prompt"):
        raise StabilityError(f"by must be 'cluster' or 'prompt', got {by!r}")
    labels = list(data.clusters) if by == "cluster" and data.clusters is not None else list(range(data.n))
    units = list(dict.fromkeys(labels))
    return labels, units


def stability(discover: Callable, data, *, n_resamples: int = 50, method: str = "subsample", by: str = "cluster",
              fraction: float = 0.5, seed: int = 0) -> Stability:
    """Repeat `discover` on `n_resamples` resamples of `data` (by cluster) and on all of it.

    Examples:
        >>> import causalinterp as ci
        >>> data = ci.testbeds.induction_data(16)
        >>> st = ci.stability(lambda d: [ci.Site("head_out", 1, 2)] if d.n > 4 else [], data, n_resamples=5)
        >>> float(st.frequency["head_out L1.H2 @all"]), float(st.jaccard.mean())
        (1.0, 1.0)
    """
    if method not in ("subsample", "bootstrap"):
        raise StabilityError(f"method must be 'subsample' or 'bootstrap', got {method!r}")
    if not isinstance(n_resamples, int) or n_resamples < 2:
        raise StabilityError(f"n_resamples must be an int >= 2 (pairwise Jaccard needs two), got {n_resamples!r}")
    labels, units = _units(data, by)
    if len(units) < 4:
        raise StabilityError(f"only {len(units)} {by}s to resample; stability needs at least 4")
    rng = np.random.default_rng(seed)
    full = _members(discover(data))
    circuits, samples = [], []
    for _ in range(n_resamples):
        if method == "subsample":
            k = max(2, int(round(fraction * len(units))))
            picked = set(rng.choice(len(units), size=k, replace=False).tolist())
        else:
            picked = set(rng.integers(0, len(units), size=len(units)).tolist())
        chosen = {units[i] for i in picked}
        idx = [i for i, lab in enumerate(labels) if lab in chosen]
        samples.append(tuple(idx))
        circuits.append(_members(discover(data.subset(idx))))
    counts: dict = {m: 0 for m in sorted(full)}
    for c in circuits:
        for m in c:
            counts[m] = counts.get(m, 0) + 1
    freq = pd.Series({m: v / n_resamples for m, v in counts.items()}, dtype=float)
    freq = freq.sort_values(ascending=False, kind="stable")
    jac = np.array([_jaccard(circuits[i], circuits[j]) for i in range(n_resamples) for j in range(i + 1, n_resamples)])
    to_full = np.array([_jaccard(c, full) for c in circuits])
    return Stability(frequency=freq, jaccard=jac, to_full=to_full, circuits=tuple(circuits), full=full,
                     samples=tuple(samples), method=method,
                     by="cluster" if by == "cluster" and data.clusters is not None else "prompt",
                     meta={"seed": seed, "fraction": fraction if method == "subsample" else None})


# --- ready-made discoveries ------------------------------------------------------------------------
def by_claim(model, sites, claim, *, intervention=None, metric=None, n_resamples: int = 999, alpha: float = 0.05,
             correction: str = "holm", seed: int = 0) -> Callable:
    """A discovery: scan `sites` (Sites or Paths), keep those whose verdict for `claim` is supported."""
    from .engine.execute import scan
    from .evaluate import evaluate

    def discover(d):
        eff = scan(model, d, sites, intervention=intervention, metric=metric, progress=False)
        ev = evaluate(eff, claim, alpha=alpha, correction=correction, n_resamples=n_resamples, seed=seed)
        return tuple(ev.significant_sites())
    return discover


def top_k(model, sites, k: int, *, intervention=None, metric=None, absolute: bool = True) -> Callable:
    """A discovery: scan `sites`, keep the `k` with the largest mean effect (|mean effect| by default)."""
    from .engine.execute import scan

    def discover(d):
        return rank(scan(model, d, sites, intervention=intervention, metric=metric, progress=False),
                    absolute)[:int(k)]
    return discover
