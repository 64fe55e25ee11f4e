"""`confirm`: patch exactly the sites a screen ranks highest, audit a random sample of the rest, bound the misses.

A screen (`screen`) is cheap and approximate.  `confirm` turns it into exact claims:

1. rank the sites by screened magnitude (``|mean over prompts of (estimate - base)|``, or the AtP* GradDrop
   magnitude where it is larger);
2. patch exactly the `top_k` highest and a uniformly random `audit` of the others (one `scan`);
3. claims are evaluated on the exact values only (`Confirmation.evaluate`);
4. from the audit, upper confidence bounds on how many of the unconfirmed sites have an exact effect above
   `threshold` (`causalinterp.stats.audit`), and the screen's error on the exactly patched sites
   (Spearman rank correlation, largest underestimate of an effect's magnitude).

The bound is valid whatever the screen's errors are: the audit sample is random (seeded).  The top sites
are chosen by the screen; where the screen ran on the same prompts, a claim on them is tested on the data
that chose them.  For a claim free of that selection, screen on one half of the prompts
(``ContrastSet.split``) and pass the other half to `confirm` (`data` need not be the screen's).

Examples:
    >>> import causalinterp as ci
    >>> model, data = ci.load_model("testbed:ioi"), ci.testbeds.ioi_data(16, seed=0)
    >>> sites = ci.sites.head_out(positions="end")
    >>> est = ci.screen(model, data, sites, intervention=ci.patch("noise"), method="atp")
    >>> conf = ci.confirm(est, model, data, top_k=3, audit=4, threshold=0.5)
    >>> conf.exact.values.shape, conf.bound.n_audited
    ((16, 7), 4)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as st

from ..spec.sites import SiteSet
from ..stats.audit import AuditBound, audit_bound
from .compile import ScanError
from .effects import Effects

__all__ = ["Confirmation", "confirm"]


@dataclass(frozen=True, eq=False)
class Confirmation:
    """Screened and exact effects side by side, with the audit's bound on what the screen missed.

    screened   the screen's `Effects` (all sites, estimates)
    exact      exact `Effects` of the confirmed top sites followed by the audited ones (column order)
    roles      per column of `exact`: "top" or "audit"
    threshold  the effect size (metric units, |mean over prompts of patched - base|) a miss is counted at
    bound      `AuditBound`: found / fraction_upper / count_upper / missed_upper over the unconfirmed sites
    error      the screen's error on the exactly patched sites: spearman (screened vs exact mean effect),
               max_underestimate (largest |exact| - |screened| of an effect), over audit and over all
    cost       forward-pass equivalents: screen, exact confirmation, and the exact sweep of every site

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(16)
        >>> est = ci.screen(model, data, ci.sites.head_out(positions="end"), intervention=ci.patch("noise"))
        >>> conf = ci.confirm(est, model, data, top_k=2, audit=3, threshold=0.5)
        >>> conf.roles, conf.top.values.shape
        (('top', 'top', 'audit', 'audit', 'audit'), (16, 2))
    """

    screened: Effects
    exact: Effects
    roles: tuple[str, ...]
    threshold: float
    bound: AuditBound
    error: dict
    cost: dict
    meta: dict = field(default_factory=dict)

    @property
    def top(self) -> Effects:
        """Exact `Effects` of the confirmed top sites only (what claims are made on)."""
        return _columns(self.exact, [i for i, r in enumerate(self.roles) if r == "top"])

    def evaluate(self, claim, *, sites: str = "top", **kwargs):
        """`ci.evaluate` on the exact values of the top sites (``sites="top"``) or of every patched site
        (``"all"``: top and audited); never on screened values."""
        from ..evaluate import evaluate
        if sites not in ("top", "all"):
            raise ValueError(f"sites must be 'top' or 'all', got {sites!r}")
        return evaluate(self.top if sites == "top" else self.exact, claim, **kwargs)

    def to_frame(self) -> pd.DataFrame:
        """One row per screened site: screened and (where patched) exact mean effect, role, rank."""
        scr = _mean_effect(self.screened)
        exact = dict(zip(self.exact.sites, _mean_effect(self.exact)))
        role = dict(zip(self.exact.sites, self.roles))
        order = np.argsort(-_score(self.screened), kind="stable")
        rank = np.empty(len(order), dtype=int)
        rank[order] = np.arange(1, len(order) + 1)
        return pd.DataFrame({"site": [s.label for s in self.screened.sites], "screen_rank": rank,
                             "screened": scr, "exact": [exact.get(s, np.nan) for s in self.screened.sites],
                             "role": [role.get(s, "unconfirmed") for s in self.screened.sites]})

    def report(self) -> str:
        """Plain-text summary: what was confirmed, the audit's bound, the screen's error, the cost."""
        b, e, c = self.bound, self.error, self.cost
        method = self.screened.meta.get("method", "screen")
        lines = [f"screen ({method}, estimates) -> exact patching of the top {self.roles.count('top')} and a random "
                 f"audit of {b.n_audited} of the other {b.n_rest} sites; claims use exact values only",
                 f"threshold |effect| > {self.threshold:g}: {b.found} of {b.n_audited} audited sites exceed it; with "
                 f"{b.confidence:.0%} confidence at most {b.missed_upper} unpatched sites exceed it (fraction of "
                 f"the unconfirmed <= {b.fraction_upper:.3g})",
                 f"screen error on audited sites: Spearman {_fmt(e['spearman_audit'])}, largest underestimate "
                 f"{_fmt(e['max_underestimate_audit'])}; on all patched sites: Spearman {_fmt(e['spearman'])}, "
                 f"largest underestimate {_fmt(e['max_underestimate'])}",
                 f"cost: {c['total']:.1f} forward equivalents (screen {c['screen']:.1f} + exact {c['exact']:.1f}) "
                 f"vs {c['exact_sweep']:.1f} for the exact sweep (ratio {c['exact_sweep'] / c['total']:.2g})"]
        frame = self.to_frame().sort_values("screen_rank")
        frame = frame[frame["role"] != "unconfirmed"]
        lines.append(frame.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def _fmt(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3g}"


def _mean_effect(eff: Effects) -> np.ndarray:
    return (eff.values - eff.base[:, None]).mean(0)


def _score(eff: Effects) -> np.ndarray:
    """Screened magnitude per site: |mean effect|, or the mean GradDrop magnitude where that is larger."""
    score = np.abs(_mean_effect(eff))
    mag = eff.meta.get("magnitude")
    if mag is not None:
        score = np.maximum(score, np.asarray(mag).mean(0))
    return score


def _columns(eff: Effects, cols: list[int]) -> Effects:
    return Effects(values=eff.values[:, cols], clean=eff.clean, corrupt=eff.corrupt,
                   sites=tuple(eff.sites[i] for i in cols), base=eff.base, target=eff.target,
                   intervention=eff.intervention, metric=eff.metric, clusters=eff.clusters, meta=dict(eff.meta))


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(st.spearmanr(a, b).statistic)


def confirm(screened: Effects, model, data, *, top_k: int, audit: int, threshold: float,
            confidence: float = 0.95, seed: int = 0, batch_size: int | None = None, memory_budget="2GB",
            cache: dict | None = None) -> Confirmation:
    """Patch exactly the `top_k` screened sites and a random `audit` of the rest; bound what the screen missed.

    `screened` comes from `ci.screen` on the same `model` and `data` (its intervention and metric are
    reused).  `threshold` is the effect size, in metric units (|mean over prompts of patched - base|),
    above which a site the screen left out counts as missed.  See the module docstring.

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(16)
        >>> est = ci.screen(model, data, ci.sites.head_out(positions="end"), intervention=ci.patch("noise"))
        >>> conf = ci.confirm(est, model, data, top_k=2, audit=3, threshold=0.5)
        >>> conf.roles, conf.top.values.shape
        (('top', 'top', 'audit', 'audit', 'audit'), (16, 2))
    """
    from .execute import scan

    if not isinstance(screened, Effects) or screened.joint:
        raise ScanError("confirm needs the per-site Effects of ci.screen(...)")
    if not screened.meta.get("approximate"):
        raise ScanError("these effects are exact already (from scan); confirm takes the estimates of ci.screen")
    m = len(screened.sites)
    for name, v in (("top_k", top_k), ("audit", audit)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ScanError(f"{name} must be a non-negative int, got {v!r}")
    if not (isinstance(threshold, (int, float)) and np.isfinite(threshold) and threshold >= 0):
        raise ScanError(f"threshold must be a finite number >= 0 in metric units, got {threshold!r}")
    top_k = min(int(top_k), m)
    order = np.argsort(-_score(screened), kind="stable")
    top, rest = order[:top_k], order[top_k:]
    audit = min(int(audit), len(rest))
    rng = np.random.default_rng(seed)
    audited = np.sort(rng.choice(rest, size=audit, replace=False)) if audit else np.array([], dtype=int)
    cols = [int(i) for i in top] + [int(i) for i in audited]
    if not cols:
        raise ScanError("nothing to patch: top_k and audit are both 0")
    exact = scan(model, data, SiteSet(explicit=tuple(screened.sites[i] for i in cols)),
                 intervention=screened.intervention, metric=screened.metric, batch_size=batch_size,
                 memory_budget=memory_budget, progress=False, cache=cache)
    roles = ("top",) * top_k + ("audit",) * audit
    exact_effect = _mean_effect(exact)
    screen_effect = _mean_effect(screened)[cols]
    is_audit = np.array([r == "audit" for r in roles])
    found = int((np.abs(exact_effect[is_audit]) > threshold).sum())
    bound = audit_bound(len(rest), audit, found, confidence)
    under = np.abs(exact_effect) - np.abs(screen_effect)
    error = {"spearman": _spearman(screen_effect, exact_effect),
             "spearman_audit": _spearman(screen_effect[is_audit], exact_effect[is_audit]),
             "max_underestimate": float(under.max()),
             "max_underestimate_audit": float(under[is_audit].max()) if audit else None}
    n = screened.n_prompts
    exact_fe = len(cols) + 2   # one row per (site, prompt), plus the unpatched clean and corrupt runs
    cost = {"screen": float(screened.meta.get("forward_equivalents", np.nan)), "exact": float(exact_fe),
            "exact_sweep": float(m + 2)}
    cost["total"] = cost["screen"] + cost["exact"]
    meta = {"seed": seed, "n_prompts": n, "seconds_exact": exact.meta.get("seconds"),
            "seconds_screen": screened.meta.get("seconds")}
    return Confirmation(screened=screened, exact=exact, roles=roles, threshold=float(threshold), bound=bound,
                        error=error, cost=cost, meta=meta)
