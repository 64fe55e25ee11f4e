"""`evaluate(effects, claim)`: the statistics of a scan and its verdict.

Computes, for every column of `Effects.values` (one site, or the joint site set), the test the claim
needs (vectorised over all columns at once), corrects the p-values over the family of columns, and
hands the numbers to the rules in `causalinterp.verdict`.  Named `evaluate`, not `test`, so that
pytest does not collect it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import verdict as V
from .spec.claims import BeatsRandom, Claim, ClaimError, HasEffect, NoEffect, Recovers
from .stats.bootstrap import _check_level, _mean_units, _ratio_ci
from .stats.effects import effect_size, gap_is_zero, recovery
from .stats.equivalence import tost
from .stats.multiple import adjust_pvalues, check_correction, effective_alpha
from .stats.permutation import (ZERO_VAR_RTOL, _check_n_resamples, _cluster_index, _cluster_sums, _signflip,
                                _zero_variance)
from .stats.power import _standardized_mde, smallest_pvalue

__all__ = ["Evaluation", "evaluate"]

_POWER = 0.8
TABLE_COLUMNS = ["site", "component", "layer", "head", "position", "n", "estimate", "ci_low", "ci_high", "p",
                 "p_adj", "effect_size", "verdict", "flag", "reason"]


@dataclass(frozen=True, eq=False)
class Evaluation:
    """The verdict of a claim on a scan.

    verdict      "supported" | "refuted" | "null" | "inconclusive" (for several sites: see `verdict.combine`)
    reasons      human-readable reasons, most important first
    table        pandas DataFrame, one row per column of the effects (site): site, component, layer, head,
                 position, n, estimate, ci_low, ci_high, p, p_adj, effect_size, verdict, flag, reason
    quantity     what `estimate` is ("recovery", "mean effect (metric units)", ...)
    estimate, ci_low, ci_high   for a single column (else None)
    claim, alpha, correction, n_resamples, confidence_level, seed, n_prompts, n_clusters
    """

    verdict: str
    reasons: tuple[str, ...]
    table: pd.DataFrame
    claim: Claim
    quantity: str
    alpha: float
    correction: str
    n_resamples: int
    confidence_level: float
    seed: Any
    n_prompts: int
    n_clusters: int | None = None
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    meta: dict = field(default_factory=dict)

    @property
    def ci(self) -> tuple[float, float] | None:
        return None if self.ci_low is None else (self.ci_low, self.ci_high)

    def to_dict(self) -> dict:
        """Plain-type dict (JSON-ready)."""
        table = self.table.astype(object).where(self.table.notna(), None)
        return {"verdict": self.verdict, "reasons": list(self.reasons), "claim": self.claim.to_dict(),
                "quantity": self.quantity, "alpha": self.alpha, "correction": self.correction,
                "n_resamples": self.n_resamples, "confidence_level": self.confidence_level, "seed": self.seed,
                "n_prompts": self.n_prompts, "n_clusters": self.n_clusters, "estimate": self.estimate,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "table": table.to_dict(orient="records")}

    def __str__(self) -> str:
        lines = [f"{self.claim}: {self.verdict.upper()}"]
        lines += [f"  - {r}" for r in self.reasons]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- input

def _arr(effects, name: str) -> np.ndarray:
    x = getattr(effects, name)
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=float)
    bad = ~np.isfinite(x)
    if bad.any():
        where = np.argwhere(bad)[0]
        col = ""
        if name in ("values", "random_values") and x.ndim == 2:
            prompts = np.unique(np.argwhere(bad)[:, 0])
            col = f" in {len(prompts)} prompt(s) (first: prompt {where[0]}, column {where[1]})"
        raise ValueError(f"effects.{name} contains {int(bad.sum())} NaN/inf value(s){col}; the metric is undefined "
                         "there (e.g. log of a zero probability). Drop those prompts from the contrast set or use a "
                         "finite metric (e.g. logit difference) before evaluating.")
    return x


def _as_claim(claim) -> Claim:
    if isinstance(claim, Claim):
        return claim
    if isinstance(claim, dict):
        return Claim.from_dict(claim)
    raise ClaimError(f"claim must be a Claim (e.g. claims.recovers(0.5)) or its dict form; got {type(claim).__name__}")


def _names(base, target, clean, corrupt) -> tuple[str, str]:
    if np.array_equal(base, corrupt) and np.array_equal(target, clean):
        return "corrupt", "clean"
    if np.array_equal(base, clean) and np.array_equal(target, corrupt):
        return "clean", "corrupt"
    return "base", "target"


def _site_columns(effects) -> dict:
    labels = effects.columns
    if effects.joint:
        return {"site": labels, "component": [None], "layer": [None], "head": [None], "position": [None]}
    s = effects.sites
    return {"site": labels, "component": [x.component for x in s], "layer": [x.layer for x in s],
            "head": [x.head for x in s], "position": [str(x.position) for x in s]}


# ----------------------------------------------------------------------------- evaluate

def evaluate(effects, claim, *, alpha: float = 0.05, correction: str = "holm", n_resamples: int = 9999,
             confidence_level: float = 0.95, seed=0, max_memory: int | None = None) -> Evaluation:
    """Test `claim` on `effects` and return an `Evaluation` (verdict, reasons, per-site table).

    Each column of ``effects.values`` is one test; a scan of many sites is one family, corrected with
    `correction` ("holm" default, "fdr_bh", "bonferroni", "none").  Prompts are resampled (and signs
    flipped) by cluster when ``effects.clusters`` is set.  Deterministic for a given `seed`.

    Raises ValueError for input no statistic can use (NaN/inf, fewer than 2 prompts, missing random
    site sets for beats_random); everything else ends in a verdict whose reasons say why.
    """
    claim = _as_claim(claim)
    alpha = float(alpha)
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), e.g. 0.05; got {alpha!r}")
    correction = check_correction(correction)
    n_resamples = _check_n_resamples(n_resamples)
    cl = _check_level(confidence_level)
    values = _arr(effects, "values")
    base, target = _arr(effects, "base"), _arr(effects, "target")
    clean, corrupt = _arr(effects, "clean"), _arr(effects, "corrupt")
    n, m = values.shape
    if n < 2:
        raise ValueError(f"effects has {n} prompt(s); at least 2 are needed for any test (and ~10+ for a useful "
                         "one). Use a larger contrast set.")
    inverse, g = _cluster_index(effects.clusters, n) if effects.clusters is not None else (None, n)
    rng_perm, rng_boot = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))

    e = values - base[:, None]                     # per-prompt effect of each intervention
    gap = target - base                            # per-prompt full effect
    # magnitude of the operands, against which rounding noise in e is judged (zero-variance detection)
    scale = np.abs(values).max(axis=0) + np.abs(base).max() + np.abs(target).max()
    mean_gap = float(gap.mean())
    no_gap = gap_is_zero(mean_gap, target, base)
    base_name, target_name = _names(base, target, clean, corrupt)
    no_gap_reason = (f"{target_name} and {base_name} do not differ (mean gap {mean_gap:.3g}): "
                     "recovery undefined")
    site_cols = _site_columns(effects)
    g_size = effect_size(e).hedges_g
    g_size = np.atleast_1d(np.asarray(g_size, dtype=float))
    n_label = f"{g} clusters" if inverse is not None else f"n={n}"
    common = dict(alpha=alpha, correction=correction, n_resamples=n_resamples, confidence_level=cl, seed=seed,
                  n_prompts=n, n_clusters=g if inverse is not None else None, claim=claim)

    def context(smallest, threshold, label, fix=""):
        return V.Context(alpha=alpha, threshold=threshold, threshold_label=label, smallest_p=smallest,
                         n_label=n_label, confidence_level=cl, base_name=base_name, target_name=target_name,
                         power_fix=fix)

    thr = effective_alpha(alpha, m, correction)
    thr_label = (f"alpha/m = {alpha:g}/{m}" if thr < alpha else f"alpha = {alpha:g}")

    if isinstance(claim, BeatsRandom):
        return _beats_random(effects, claim, e, base, target, gap, mean_gap, no_gap, no_gap_reason, inverse,
                             rng_boot, cl, n_resamples, max_memory, site_cols, g_size, context, common)

    if isinstance(claim, Recovers):
        alternative = "greater"
    elif isinstance(claim, HasEffect):
        alternative = {"any": "two-sided", "increase": "greater", "decrease": "less"}[claim.direction]
    else:
        alternative = "two-sided"
    smallest = smallest_pvalue(g, n_resamples, alternative)
    ctx = context(smallest, thr, thr_label, _power_fix(g, n_resamples, thr, alternative, inverse is not None,
                                                       correction))

    if isinstance(claim, Recovers):
        return _recovers(claim, values, e, target, base, gap, mean_gap, no_gap, no_gap_reason, inverse, g,
                         rng_perm, rng_boot, correction, cl, n_resamples, max_memory, ctx, site_cols, g_size, common,
                         scale)
    return _effect_claims(claim, e, gap, mean_gap, no_gap, values, base, target, inverse, g, rng_perm, rng_boot,
                          alpha, correction, cl, n_resamples, max_memory, thr, ctx, site_cols, g_size, common, scale)


def _power_fix(g: int, n_resamples: int, thr: float, alternative: str, clustered: bool, correction: str) -> str:
    """What would make the smallest attainable p fall below the threshold (for the underpowered reason)."""
    if smallest_pvalue(g, n_resamples, alternative) < thr:
        return ""
    if g < 63 and 2 ** g <= n_resamples:          # exact test: limited by the number of sign patterns
        need = g
        while (2.0 if alternative == "two-sided" else 1.0) / 2 ** need >= thr:
            need += 1
        unit = "clusters" if clustered else "prompts"
        fix = f"use at least {need} {unit}"
        if 2 ** need > n_resamples and 1 / (n_resamples + 1) >= thr:
            fix += f" and n_resamples >= {int(np.ceil(10 / thr))}"
        return fix
    fix = f"use n_resamples >= {int(np.ceil(10 / thr))}"
    if correction not in ("fdr_bh", "fdr_by", "none"):
        fix += " or correction='fdr_bh'"
    return fix


def _finish(decisions, site_cols, n, estimate, low, high, p, p_adj, g_size, quantity, common, correction,
            extra_reasons=()):
    table = pd.DataFrame({**site_cols, "n": n, "estimate": estimate, "ci_low": low, "ci_high": high, "p": p,
                          "p_adj": p_adj, "effect_size": g_size,
                          "verdict": [d.verdict for d in decisions], "flag": [d.flag for d in decisions],
                          "reason": [d.reason for d in decisions]}, columns=TABLE_COLUMNS)
    table["head"] = pd.array(table["head"], dtype="Int64")
    table["layer"] = pd.array(table["layer"], dtype="Int64")
    verdict, reasons = V.combine(decisions, list(site_cols["site"]), correction)
    single = len(decisions) == 1
    est = float(estimate[0]) if single and np.isfinite(estimate[0]) else None
    return Evaluation(verdict=verdict, reasons=tuple(list(reasons) + list(extra_reasons)), table=table,
                      quantity=quantity, estimate=est, ci_low=float(low[0]) if est is not None else None,
                      ci_high=float(high[0]) if est is not None else None, **common)


def _recovers(claim, values, e, target, base, gap, mean_gap, no_gap, no_gap_reason, inverse, g, rng_perm,
              rng_boot, correction, cl, n_resamples, max_memory, ctx, site_cols, g_size, common, scale):
    n, m = e.shape
    tau = claim.at_least
    nan = np.full(m, np.nan)
    if no_gap:
        ev = V.SiteEvidence(estimate=np.nan, ci_low=np.nan, ci_high=np.nan, undefined=no_gap_reason)
        decisions = [V.recovers_rule(ev, ctx, tau)] * m
        return _finish(decisions, site_cols, n, nan, nan, nan, nan, nan, g_size, "recovery", common, correction)
    sgn = 1.0 if mean_gap > 0 else -1.0
    d = sgn * (e - tau * gap[:, None])
    sf = _signflip(d, n_resamples=n_resamples, rng=rng_perm, inverse=inverse, n_units=g, max_memory=max_memory)
    p_sup, p_ref = sf.pvalue("greater"), sf.pvalue("less")
    p_sup_adj, p_ref_adj = adjust_pvalues(p_sup, correction), adjust_pvalues(p_ref, correction)
    rec = recovery(values, target, base, confidence_level=cl, n_resamples=n_resamples, seed=rng_boot,
                   clusters=None if inverse is None else inverse, max_memory=max_memory)
    est = np.atleast_1d(rec.estimate).astype(float)
    lo, hi = np.atleast_1d(rec.low).astype(float), np.atleast_1d(rec.high).astype(float)
    # zero variance at the prompt level: every prompt recovers the same fraction -> the ratio is exact
    resid = np.abs(e - est * gap[:, None]).max(axis=0)
    exact = resid <= ZERO_VAR_RTOL * (scale + np.abs(est) * np.abs(gap).max())
    all_base = np.all(e == 0, axis=0)
    all_target = np.all(values == target[:, None], axis=0)
    lo, hi = np.where(exact, est, lo), np.where(exact, est, hi)
    unstable = None
    if rec.gap_flip_fraction > (1 - cl) / 2:
        unstable = (f"the {ctx.target_name}-{ctx.base_name} gap is not reliably non-zero (mean {mean_gap:.3g}; "
                    f"{100 * rec.gap_flip_fraction:.0f}% of bootstrap resamples flip its sign)")
    decisions = [V.recovers_rule(V.SiteEvidence(
        estimate=est[j], ci_low=lo[j], ci_high=hi[j], p_adj=p_sup_adj[j], p_opposite_adj=p_ref_adj[j], exact=bool(exact[j]),
        all_base=bool(all_base[j]), all_target=bool(all_target[j]), unstable_gap=unstable), ctx, tau)
        for j in range(m)]
    return _finish(decisions, site_cols, n, est, lo, hi, p_sup, p_sup_adj, g_size,
                   f"recovery (mean {ctx.target_name} - {ctx.base_name} gap normalised)", common, correction)


def _effect_claims(claim, e, gap, mean_gap, no_gap, values, base, target, inverse, g, rng_perm, rng_boot, alpha,
                   correction, cl, n_resamples, max_memory, thr, ctx, site_cols, g_size, common, scale):
    """has_effect and no_effect: sign-flip test, bootstrap CI of the mean effect, TOST, MDE."""
    n, m = e.shape
    exact = _zero_variance(e, scale)
    all_base = np.all(e == 0, axis=0)
    all_target = np.all(values == target[:, None], axis=0)
    A, Bs = _mean_units(e, None if inverse is None else inverse)
    est, lo, hi, _, _ = _ratio_ci(A, Bs, method="bca", confidence_level=cl, n_resamples=n_resamples, rng=rng_boot,
                                  max_memory=max_memory)
    est = np.where(exact & (np.abs(est) <= ZERO_VAR_RTOL * scale), 0.0, est)
    relative = claim.relative
    undefined = None
    if relative and no_gap:
        undefined = (f"{ctx.target_name} and {ctx.base_name} do not differ (mean gap {mean_gap:.3g}), so a margin "
                     f"relative to the gap is undefined; pass margin=..., relative=False (metric units)")
        margin = np.nan
    else:
        margin = claim.margin * abs(mean_gap) if relative else claim.margin
    # TOST / MDE on prompts, or on cluster means when prompts are clustered (clusters are the independent units)
    if inverse is not None:
        counts = np.bincount(inverse, minlength=g).astype(float)
        e_units = _cluster_sums(e, inverse, g) / counts[:, None]
    else:
        e_units = e
    n_units = e_units.shape[0]
    if undefined is None:
        t = tost(e_units, margin, alpha=alpha)
        tost_p = np.atleast_1d(t.pvalue)
        tost_adj = np.atleast_1d(adjust_pvalues(tost_p, correction))
        exc_adj = np.atleast_1d(adjust_pvalues(np.atleast_1d(t.pvalue_exceeds), correction))
        t_lo, t_hi = np.atleast_1d(t.low), np.atleast_1d(t.high)
    else:
        tost_p = tost_adj = exc_adj = t_lo = t_hi = np.full(m, np.nan)
    sd = e_units.std(axis=0, ddof=1)
    mde_alt = "two-sided"

    if isinstance(claim, HasEffect):
        alternative = {"any": "two-sided", "increase": "greater", "decrease": "less"}[claim.direction]
        mde_alt = alternative
        sf = _signflip(e, n_resamples=n_resamples, rng=rng_perm, inverse=inverse, n_units=g, max_memory=max_memory)
        p = sf.pvalue(alternative)
        p_adj = np.atleast_1d(adjust_pvalues(p, correction))
        if alternative != "two-sided":
            opp = "less" if alternative == "greater" else "greater"
            p_opp_adj = np.atleast_1d(adjust_pvalues(sf.pvalue(opp), correction))
        else:
            p_opp_adj = [None] * m
    mde = _standardized_mde(n_units, thr, _POWER, mde_alt) * sd if not ctx.underpowered else np.full(m, np.inf)
    mde_rel = mde / abs(mean_gap) if not no_gap else np.full(m, np.nan)

    def evidence(j, **kw):
        return V.SiteEvidence(estimate=est[j], ci_low=lo[j] if not exact[j] else est[j],
                              ci_high=hi[j] if not exact[j] else est[j], exact=bool(exact[j]),
                              all_base=bool(all_base[j]), all_target=bool(all_target[j]), undefined=undefined,
                              margin=margin, tost_p_adj=tost_adj[j], tost_low=t_lo[j], tost_high=t_hi[j],
                              exceeds_p_adj=exc_adj[j], mde=float(mde[j]),
                              mde_relative=None if no_gap else float(mde_rel[j]), **kw)

    if isinstance(claim, HasEffect):
        decisions = [V.has_effect_rule(evidence(j, p_adj=p_adj[j], p_opposite_adj=p_opp_adj[j]), ctx, claim.direction)
                     for j in range(m)]
        p_col, p_adj_col = p, p_adj
    else:
        decisions = [V.no_effect_rule(evidence(j), ctx) for j in range(m)]
        p_col, p_adj_col = tost_p, tost_adj
    lo, hi = np.where(exact, est, lo), np.where(exact, est, hi)
    quantity = "mean effect (values - base, metric units)"
    extra = [] if undefined is not None else [f"margin +-{margin:.3g} in metric units"
                                              + (f" ({claim.margin:g} of the gap {abs(mean_gap):.3g})" if relative else "")]
    return _finish(decisions, site_cols, n, est, lo, hi, p_col, p_adj_col, g_size, quantity, common, correction,
                   extra)


def _beats_random(effects, claim, e, base, target, gap, mean_gap, no_gap, no_gap_reason, inverse, rng_boot, cl,
                  n_resamples, max_memory, site_cols, g_size, context, common):
    if not effects.joint:
        raise ValueError("beats_random compares the joint effect of a site set with random site sets: run "
                         f"scan(..., joint=True, n_random={claim.n_random})")
    if effects.random_values is None:
        raise ValueError("effects has no random site sets (random_values is None): run "
                         f"scan(..., joint=True, n_random={claim.n_random})")
    rv = _arr(effects, "random_values")
    n = e.shape[0]
    if rv.ndim != 2 or rv.shape[0] != n:
        raise ValueError(f"effects.random_values must be [n_prompts={n}, n_random], got shape {rv.shape}")
    n_rand = rv.shape[1]
    if n_rand < claim.n_random:
        raise ValueError(f"effects has {n_rand} random site sets but the claim asks for {claim.n_random}: run "
                         f"scan(..., joint=True, n_random={claim.n_random})")
    smallest = 1.0 / (n_rand + 1)
    ctx = context(smallest, common["alpha"], f"alpha = {common['alpha']:g}",
                  f"use n_random >= {int(np.ceil(1 / common['alpha']))}")
    nan = np.full(1, np.nan)
    if no_gap:
        d = V.beats_random_rule(V.SiteEvidence(estimate=np.nan, ci_low=np.nan, ci_high=np.nan,
                                               undefined=no_gap_reason), ctx, n_rand)
        return _finish([d], site_cols, n, nan, nan, nan, nan, nan, g_size, "normalised joint effect", common,
                       common["correction"])
    observed = float(e[:, 0].mean() / mean_gap)
    rand = (rv - base[:, None]).mean(axis=0) / mean_gap
    tol = 1e-12 * max(abs(observed), np.abs(rand).max())
    k = int(np.count_nonzero(rand >= observed - tol))
    p = (1 + k) / (n_rand + 1)
    rec = recovery(e[:, :1] + base[:, None], target, base, confidence_level=cl, n_resamples=n_resamples,
                   seed=rng_boot, clusters=None if inverse is None else inverse, max_memory=max_memory)
    lo, hi = float(np.atleast_1d(rec.low)[0]), float(np.atleast_1d(rec.high)[0])
    rank = (f"beats {n_rand - k} of {n_rand} random site sets (random median {np.median(rand):.3g}, "
            f"max {rand.max():.3g})")
    ev = V.SiteEvidence(estimate=observed, ci_low=lo, ci_high=hi, p_adj=p, random_rank=rank,
                        beats_median=bool(observed > np.median(rand)))
    d = V.beats_random_rule(ev, ctx, n_rand)
    return _finish([d], site_cols, n, np.array([observed]), np.array([lo]), np.array([hi]), np.array([p]),
                   np.array([p]), g_size, "normalised joint effect vs random site sets", common, common["correction"])
