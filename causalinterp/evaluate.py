"""`evaluate(effects, claim)`: the statistics of a scan and its verdict.

Computes, for every column of `Effects.values` (one site, or the joint site set), the test the claim
needs (vectorised over all columns at once), corrects the p-values over the family of columns, and
hands the numbers to the rules in `causalinterp.verdict`.  Named `evaluate`, not `test`, so that
pytest does not collect it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _st

from . import verdict as V
from .spec.claims import BeatsRandom, Claim, ClaimError, HasEffect, Recovers
from .stats.bootstrap import _check_level
from .stats.effects import effect_size, gap_is_zero, recovery
from .stats.multiple import adjust_pvalues, check_correction, effective_alpha
from .stats.permutation import (ZERO_VAR_RTOL, _check_n_resamples, _cluster_index, _cluster_sums, _signflip,
                                _zero_variance)
from .stats.power import _standardized_mde, smallest_pvalue
from .selection import prompt_keys, selection_overlap
from .stats.robust import _robust

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

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(32)
        >>> eff = ci.scan(model, data, ci.sites.heads([(1, 2)], positions="end"), intervention=ci.patch("noise"),
        ...               progress=False)
        >>> ev = ci.evaluate(eff, ci.claims.has_effect(direction="decrease"))
        >>> ev.verdict, ev.table["verdict"].tolist()
        ('supported', ['supported'])
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

    def _selected(self, rows, rule: str):
        from .selection import SelectedSites
        sites = self.meta.get("sites")
        if not sites or self.table["component"].isna().all():
            raise ValueError("this evaluation has no per-site columns to choose from (a joint site set, or an "
                             "evaluation read back from JSON)")
        return SelectedSites([sites[i] for i in rows], {"prompts": list(self.meta.get("prompt_keys", ())),
                                                        "rule": rule})

    def significant_sites(self):
        """The sites whose verdict is `supported`, as a `SelectedSites` that remembers the prompts it was chosen on.

        Test a claim about them on held-out prompts (`ContrastSet.split`): on these prompts the claim is
        flagged `selected-on-same-data` and cannot be supported.
        """
        rows = [i for i, v in enumerate(self.table["verdict"]) if v == "supported"]
        return self._selected(rows, f"supported for {self.claim.kind}")

    def top_sites(self, k: int):
        """The `k` sites with the largest estimate (a `SelectedSites`, see `significant_sites`)."""
        order = np.argsort(-np.nan_to_num(self.table["estimate"].to_numpy(dtype=float), nan=-np.inf), kind="stable")
        return self._selected([int(i) for i in order[:int(k)]], f"top {int(k)} by {self.quantity.split(' (')[0]}")

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

@dataclass(frozen=True, eq=False)
class _Scan:
    """The prepared inputs and settings of one evaluation (internal)."""

    values: np.ndarray        # [n, m]
    base: np.ndarray          # [n]
    target: np.ndarray        # [n]
    e: np.ndarray             # [n, m] per-prompt effect, values - base
    gap: np.ndarray           # [n] per-prompt full effect, target - base
    mean_gap: float
    no_gap: bool
    scale: np.ndarray         # [m] magnitude of the operands (rounding noise is judged against it)
    inverse: np.ndarray | None   # cluster index per prompt
    n_units: int              # clusters, or prompts
    base_name: str
    target_name: str
    alpha: float
    correction: str
    confidence_level: float
    n_resamples: int
    max_memory: int | None
    rng_perm: np.random.Generator
    rng_boot: np.random.Generator
    rng_t: np.random.Generator    # the studentised bootstrap's resamples
    site_cols: dict           # table columns describing the sites
    notes: tuple = ()         # reasons appended to every evaluation of this scan (e.g. a correction fallback)
    selected_on: str = ""     # non-empty: the sites were chosen on (some of) these prompts

    @property
    def n(self) -> int:
        return self.e.shape[0]

    @property
    def m(self) -> int:
        return self.e.shape[1]

    def no_gap_reason(self) -> str:
        return (f"{self.target_name} and {self.base_name} do not differ (mean gap {self.mean_gap:.3g}): "
                "recovery undefined")

    @property
    def maxt(self) -> bool:
        return self.correction == "maxT"

    def signflip(self, d: np.ndarray, ci: bool = False, rng=None):
        """Sign-flip test of `d` (with `ci`, also the interval of its mean from inverting the test)."""
        return _signflip(d, n_resamples=self.n_resamples, rng=self.rng_perm if rng is None else rng,
                         inverse=self.inverse, n_units=self.n_units, max_memory=self.max_memory, maxt=self.maxt,
                         ci_level=self.confidence_level if ci else None)

    def test(self, d: np.ndarray, ci: bool = False, rng=None, maxt: bool | None = None):
        """Robust test of mean(d) (sign-flip AND bootstrap-t, `causalinterp.stats.robust`); `ci`: sign-flip CI."""
        return _robust(d, n_resamples=self.n_resamples, rng_signflip=self.rng_perm if rng is None else rng,
                       rng_boot=self.rng_t, inverse=self.inverse, n_units=self.n_units, max_memory=self.max_memory,
                       maxt=self.maxt if maxt is None else maxt, ci_level=self.confidence_level if ci else None)

    def adjust(self, p) -> np.ndarray:
        """Correct p-values over the family; p-values of non-sign-flip tests (TOST) use holm under maxT."""
        return np.atleast_1d(adjust_pvalues(np.atleast_1d(p), "holm" if self.maxt else self.correction))

    def adjust_signflip(self, sf, alternative: str) -> np.ndarray:
        """Corrected p-values of a sign-flip test: maxT from the joint resamples, else `adjust`."""
        if self.maxt:
            return np.atleast_1d(sf.maxt_pvalue(alternative))
        return self.adjust(sf.pvalue(alternative))

    def recovery(self, values: np.ndarray):
        return recovery(values, self.target, self.base, confidence_level=self.confidence_level,
                        n_resamples=self.n_resamples, seed=self.rng_boot, clusters=self.inverse,
                        max_memory=self.max_memory)


def evaluate(effects, claim, *, alpha: float = 0.05, correction: str = "holm", n_resamples: int = 9999,
             confidence_level: float = 0.95, seed=0, max_memory: int | None = None) -> Evaluation:
    """Test `claim` on `effects` and return an `Evaluation` (verdict, reasons, per-site table).

    Each column of ``effects.values`` is one test; a scan of many sites is one family, corrected with
    `correction` ("holm" default, "maxT", "fdr_bh", "bonferroni", "none").  "maxT" (Westfall-Young, from
    the joint sign-flip distribution of all columns; `causalinterp.stats.maxt_pvalues`) controls the
    family-wise error like holm but needs only ~20/alpha resamples however many sites there are; it
    applies to the sign-flip tests of `has_effect` and `recovers` (TOST p-values, `no_effect` and
    `beats_random` use holm, and the reasons say so).  Prompts are resampled (and signs flipped) by
    cluster when ``effects.clusters`` is set.  Deterministic for a given `seed`.
    The rules that turn the numbers into verdicts are in `causalinterp.verdict` (docs/verdicts.md).

    Raises ValueError for input no statistic can use (NaN/inf, fewer than 2 prompts, missing random
    site sets for beats_random); everything else ends in a verdict whose reasons say why.

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(32)
        >>> eff = ci.scan(model, data, ci.sites.head_out(layers=[1], positions="end"), intervention=ci.patch("noise"),
        ...               progress=False)
        >>> ci.evaluate(eff, ci.claims.has_effect(), correction="maxT").table["verdict"].tolist()  # doctest: +SKIP
        ['null', 'null', 'supported', 'null']
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
    everything = np.concatenate([values.ravel(), base, target, clean, corrupt])
    if everything.size and np.ptp(everything) == 0:
        raise ValueError(f"the metric is {everything[0]:.6g} on every prompt, in the clean, corrupt and every patched "
                         "run: it is constant by construction (e.g. answer == wrong, or a metric that does not read "
                         "the model's output), so no claim can be tested. Check the metric and the answer tokens")
    if n < 2:
        raise ValueError(f"effects has {n} prompt(s); at least 2 are needed for any test (and ~10+ for a useful "
                         "one). Use a larger contrast set.")
    inverse, g = _cluster_index(effects.clusters, n) if effects.clusters is not None else (None, n)
    notes = ()
    if correction == "maxT" and not isinstance(claim, (Recovers, HasEffect)):
        why = ("TOST is a pair of t-tests, not a sign-flip test" if not isinstance(claim, BeatsRandom)
               else "it is one randomisation test over site sets")
        notes = (f"correction='maxT' applies to the sign-flip tests of has_effect and recovers, not to "
                 f"{claim.kind} ({why}): holm used instead",)
        correction = "holm"
    approximate = (getattr(effects, "meta", None) or {}).get("approximate")
    if approximate:   # values from ci.screen: gradient estimates, not patched runs
        method = effects.meta.get("method", "screen")
        notes += (f"ESTIMATE: the values are {method} estimates (ci.screen), not exact patching; claim only "
                  "on values confirmed exactly (ci.confirm)",)
    rng_perm, rng_boot, rng_t = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    gap = target - base
    mean_gap = float(gap.mean())
    base_name, target_name = _names(base, target, clean, corrupt)
    selected = selection_overlap((getattr(effects, "meta", None) or {}).get("selected_on"), clean, corrupt)
    scan = _Scan(values=values, base=base, target=target, e=values - base[:, None], gap=gap, mean_gap=mean_gap,
                 no_gap=gap_is_zero(mean_gap, target, base),
                 scale=np.abs(values).max(axis=0) + np.abs(base).max() + np.abs(target).max(),
                 inverse=inverse, n_units=g, base_name=base_name, target_name=target_name, alpha=alpha,
                 correction=correction, confidence_level=cl, n_resamples=n_resamples, max_memory=max_memory,
                 rng_perm=rng_perm, rng_boot=rng_boot, rng_t=rng_t, site_cols=_site_columns(effects), notes=notes,
                 selected_on=selected)
    common = dict(claim=claim, alpha=alpha, correction=correction, n_resamples=n_resamples, confidence_level=cl,
                  seed=seed, n_prompts=n, n_clusters=g if inverse is not None else None,
                  meta={"sites": tuple(effects.sites) if not effects.joint else (),
                        "prompt_keys": tuple(prompt_keys(clean, corrupt)),
                        **({"approximate": effects.meta.get("method", True)} if approximate else {})})


    if isinstance(claim, BeatsRandom):
        return _beats_random(scan, effects, claim, common)
    if isinstance(claim, Recovers):
        alternative = "greater"
    elif isinstance(claim, HasEffect):
        alternative = _DIRECTION[claim.direction]
    else:
        alternative = "two-sided"
    thr = effective_alpha(alpha, m, correction)
    label = f"alpha/m = {alpha:g}/{m}" if thr < alpha else f"alpha = {alpha:g}"
    if correction == "maxT" and m > 1:
        label += " (maxT)"
    maxt_ok = isinstance(claim, (Recovers, HasEffect))
    # no_effect's equivalence is two one-sided tests: its smallest attainable p is a one-sided one
    power_alt = alternative if isinstance(claim, (Recovers, HasEffect)) else "greater"
    ctx = _context(scan, smallest_pvalue(g, n_resamples, power_alt), thr, label,
                   _power_fix(g, n_resamples, thr, power_alt, inverse is not None, correction, alpha, maxt_ok))
    if isinstance(claim, Recovers):
        return _recovers(scan, claim, ctx, common)
    return _effect_claims(scan, claim, ctx, thr, alternative, common)


_DIRECTION = {"any": "two-sided", "increase": "greater", "decrease": "less"}


def _context(scan: _Scan, smallest: float, threshold: float, label: str, fix: str) -> V.Context:
    n_label = f"{scan.n_units} clusters" if scan.inverse is not None else f"n={scan.n}"
    return V.Context(alpha=scan.alpha, threshold=threshold, threshold_label=label, smallest_p=smallest,
                     n_label=n_label, confidence_level=scan.confidence_level, base_name=scan.base_name,
                     target_name=scan.target_name, power_fix=fix, n_units=scan.n_units,
                     selected_on=scan.selected_on)


def _power_fix(g: int, n_resamples: int, thr: float, alternative: str, clustered: bool, correction: str,
               alpha: float | None = None, maxt_ok: bool = False) -> str:
    """What would make the smallest attainable p fall below the threshold (for the underpowered reason).

    Under a per-test-level FWER correction (holm, bonferroni, ...) the threshold is alpha/m; maxT's is
    alpha, so when the smallest attainable p is below alpha (and the claim's test is a sign-flip test)
    `correction='maxT'` is suggested too.
    """
    smallest = smallest_pvalue(g, n_resamples, alternative)
    if smallest < thr:
        return ""
    try_maxt = (maxt_ok and alpha is not None and correction not in ("fdr_bh", "fdr_by", "none", "maxT")
                and smallest < alpha)
    maxt = "correction='maxT' (family-wise, from the joint sign-flip distribution)"
    if g < 63 and 2 ** g <= n_resamples:          # exact test: limited by the number of sign patterns
        need = g
        while (2.0 if alternative == "two-sided" else 1.0) / 2 ** need >= thr:
            need += 1
        fix = f"use at least {need} {'clusters' if clustered else 'prompts'}"
        if 2 ** need > n_resamples and 1 / (n_resamples + 1) >= thr:
            fix += f" and n_resamples >= {int(np.ceil(10 / thr))}"
        if try_maxt:
            fix += f", or {maxt}"
        return fix
    fix = f"use n_resamples >= {int(np.ceil(10 / thr))}"      # Monte Carlo resolution 1/(B+1) is the limit
    if try_maxt:
        fix += f", {maxt}"
    if correction not in ("fdr_bh", "fdr_by", "none", "maxT"):      # their threshold is alpha already
        fix += " or correction='fdr_bh'"
    return fix


def _finish(scan: _Scan, decisions, site_cols, estimate, low, high, p, p_adj, quantity, common,
            extra_reasons=()) -> Evaluation:
    g_size = np.atleast_1d(np.asarray(effect_size(scan.e).hedges_g, dtype=float))
    table = pd.DataFrame({**site_cols, "n": scan.n, "estimate": estimate, "ci_low": low, "ci_high": high, "p": p,
                          "p_adj": p_adj, "effect_size": g_size,
                          "verdict": [d.verdict for d in decisions], "flag": [d.flag for d in decisions],
                          "reason": [d.reason for d in decisions]}, columns=TABLE_COLUMNS)
    table["head"] = pd.array(table["head"], dtype="Int64")
    table["layer"] = pd.array(table["layer"], dtype="Int64")
    verdict, reasons = V.combine(decisions, list(site_cols["site"]), scan.correction)
    est = float(estimate[0]) if len(decisions) == 1 and np.isfinite(estimate[0]) else None
    return Evaluation(verdict=verdict, reasons=tuple(list(reasons) + list(extra_reasons) + list(scan.notes)),
                      table=table,
                      quantity=quantity, estimate=est, ci_low=float(low[0]) if est is not None else None,
                      ci_high=float(high[0]) if est is not None else None, **common)


def _undefined(scan: _Scan, rule, site_cols, quantity, common) -> Evaluation:
    """Every column inconclusive because the clean-corrupt gap is zero (no NaN without a reason)."""
    nan = np.full(scan.m, np.nan)
    d = rule(V.SiteEvidence(estimate=np.nan, ci_low=np.nan, ci_high=np.nan, undefined=scan.no_gap_reason()))
    return _finish(scan, [d] * scan.m, site_cols, nan, nan, nan, nan, nan, quantity, common)


def _recovers(scan: _Scan, claim: Recovers, ctx: V.Context, common) -> Evaluation:
    """recovers(tau): sign-flip tests of d = s (e - tau gap) both ways; joint bootstrap CI of the ratio."""
    tau = claim.at_least
    quantity = f"recovery ((values - {scan.base_name}) / ({scan.target_name} - {scan.base_name}), ratio of means)"
    site_cols = scan.site_cols
    if scan.no_gap:
        return _undefined(scan, lambda ev: V.recovers_rule(ev, ctx, tau), site_cols, quantity, common)
    sgn = 1.0 if scan.mean_gap > 0 else -1.0
    sf = scan.test(sgn * (scan.e - tau * scan.gap[:, None]))
    p_sup = sf.pvalue("greater")
    p_sup_adj, p_ref_adj = scan.adjust_signflip(sf, "greater"), scan.adjust_signflip(sf, "less")
    need_sup, need_ref = sf.n_reliable("greater", scan.alpha), sf.n_reliable("less", scan.alpha)
    rec = scan.recovery(scan.values)
    est = np.atleast_1d(rec.estimate).astype(float)
    lo, hi = np.atleast_1d(rec.low).astype(float), np.atleast_1d(rec.high).astype(float)
    # zero variance at the prompt level: every prompt recovers the same fraction -> the ratio is exact
    resid = np.abs(scan.e - est * scan.gap[:, None]).max(axis=0)
    exact = resid <= ZERO_VAR_RTOL * (scan.scale + np.abs(est) * np.abs(scan.gap).max())
    all_base = np.all(scan.e == 0, axis=0)
    all_target = np.all(scan.values == scan.target[:, None], axis=0)
    lo, hi = np.where(exact, est, lo), np.where(exact, est, hi)
    unstable = None
    if rec.gap_flip_fraction > (1 - scan.confidence_level) / 2:
        unstable = (f"the {scan.target_name}-{scan.base_name} gap is not reliably non-zero (mean "
                    f"{scan.mean_gap:.3g}; {100 * rec.gap_flip_fraction:.0f}% of bootstrap resamples flip its sign)")
    decisions = [V.recovers_rule(V.SiteEvidence(
        estimate=est[j], ci_low=lo[j], ci_high=hi[j], p_adj=p_sup_adj[j], p_opposite_adj=p_ref_adj[j],
        exact=bool(exact[j]), all_base=bool(all_base[j]), all_target=bool(all_target[j]), unstable_gap=unstable,
        skewness=float(sf.skewness[j]), n_reliable=int(need_sup[j]), n_reliable_opposite=int(need_ref[j])),
        ctx, tau) for j in range(scan.m)]
    extra = []
    if scan.inverse is not None and scan.n_units < 20:
        extra.append(f"recovery CI from a bootstrap over {scan.n_units} clusters: with fewer than about 20 clusters "
                     "it may under-cover")
    return _finish(scan, decisions, site_cols, est, lo, hi, p_sup, p_sup_adj, quantity, common, extra)


def _equivalence(scan: _Scan, claim):
    """Equivalence |mean e| < delta by two one-sided robust tests of linear contrasts.

    Relative margin (delta = margin x |mean gap|, the gap estimated from the same prompts): the contrasts
    ``e + margin*s*g`` (mean > 0 <=> effect > -delta) and ``margin*s*g - e`` (mean > 0 <=> effect < +delta),
    s = sign(mean gap), so the gap's own uncertainty is in the test rather than treated as a constant.
    Absolute margin: ``e + delta`` and ``delta - e``.  Each contrast gets the robust test (sign-flip AND
    bootstrap-t, clustered like the claim's test, prompt-weighted like the estimate).

    Returns (p, p_adj, p_exceeds, p_exceeds_adj, n_reliable_tost, n_reliable_exceeds, margin).
    """
    m = scan.m
    if claim.relative:
        s = 1.0 if scan.mean_gap > 0 else -1.0
        half = (claim.margin * s * scan.gap)[:, None]
        margin = claim.margin * abs(scan.mean_gap)
    else:
        half = np.full((scan.n, 1), claim.margin)
        margin = claim.margin
    c = np.concatenate([scan.e + half, half - scan.e], axis=1)      # [n, 2m]: lower side, upper side
    r = scan.test(c, rng=scan.rng_boot, maxt=False)
    pg, pl = r.pvalue("greater"), r.pvalue("less")
    ng, nl = r.n_reliable("greater", scan.alpha), r.n_reliable("less", scan.alpha)
    p = np.maximum(pg[:m], pg[m:])
    need_tost = np.maximum(ng[:m], ng[m:])
    lower_beyond = pl[:m] <= pl[m:]
    p_exc = np.minimum(1.0, 2 * np.minimum(pl[:m], pl[m:]))
    need_exc = np.where(lower_beyond, nl[:m], nl[m:])
    return p, scan.adjust(p), p_exc, scan.adjust(p_exc), need_tost, need_exc, margin


def _effect_claims(scan: _Scan, claim, ctx: V.Context, thr: float, alternative: str, common) -> Evaluation:
    """has_effect and no_effect: robust test, CI of the mean effect, equivalence, minimum detectable effect.

    The CI inverts the two-sided sign-flip test (`causalinterp.stats.signflip_ci`): for has_effect from the
    very sign patterns of its test (one pass), for no_effect from its own patterns (the bootstrap stream).
    """
    e, m = scan.e, scan.m
    site_cols = scan.site_cols
    exact = _zero_variance(e, scan.scale)
    all_base = np.all(e == 0, axis=0)
    all_target = np.all(scan.values == scan.target[:, None], axis=0)
    is_has = isinstance(claim, HasEffect)
    sf = scan.test(e, ci=True, rng=None if is_has else scan.rng_perm, maxt=scan.maxt and is_has)
    est, lo, hi = sf.statistic, sf.sf.ci_low, sf.sf.ci_high
    est = np.where(exact & (np.abs(est) <= ZERO_VAR_RTOL * scan.scale), 0.0, est)
    lo, hi = np.where(exact, est, lo), np.where(exact, est, hi)

    undefined = None
    if claim.relative and scan.no_gap:
        undefined = (f"{scan.target_name} and {scan.base_name} do not differ (mean gap {scan.mean_gap:.3g}), so a "
                     "margin relative to the gap is undefined; pass margin=..., relative=False (metric units)")
        margin = np.nan
    # the MDE uses prompts, or cluster means when prompts are clustered (the independent units)
    if scan.inverse is not None:
        sizes = np.bincount(scan.inverse, minlength=scan.n_units).astype(float)
        e_units = _cluster_sums(e, scan.inverse, scan.n_units) / sizes[:, None]
    else:
        e_units = e
    nan = np.full(m, np.nan)
    zeros = np.zeros(m, dtype=int)
    tost_p = tost_adj = exc_adj = nan
    need_tost = need_exc = zeros
    if undefined is None:
        tost_p, tost_adj, _, exc_adj, need_tost, need_exc, margin = _equivalence(scan, claim)
    p = p_adj = None
    p_opp_adj = [None] * m
    need, need_opp = zeros, zeros
    level = thr
    if is_has:
        p = sf.pvalue(alternative)
        p_adj = scan.adjust_signflip(sf, alternative)
        need = sf.n_reliable(alternative, scan.alpha)
        if alternative != "two-sided":
            opposite = "less" if alternative == "greater" else "greater"
            p_opp_adj = scan.adjust_signflip(sf, opposite)
            need_opp = sf.n_reliable(opposite, scan.alpha)
        if sf.sf.maxt is not None and m > 1 and not ctx.underpowered:
            # maxT has no fixed per-site level: the MDE uses the level of a t-test at the maxT critical value
            crit = sf.sf.maxt_critical(alternative, scan.alpha)
            if crit is not None:
                tail = float(_st.t.sf(crit, sf.n_units - 1)) * (2.0 if alternative == "two-sided" else 1.0)
                level = min(tail, thr)
                ctx = replace(ctx, mde_label=f"the maxT critical t {crit:.3g} (per-site level {level:.2g})")

    sd = e_units.std(axis=0, ddof=1)
    if ctx.underpowered or not level > 0:
        mde = np.full(m, np.inf)
    else:
        mde = _standardized_mde(e_units.shape[0], level, _POWER, alternative) * sd
    mde_rel = mde / abs(scan.mean_gap) if not scan.no_gap else nan

    decisions = []
    for j in range(m):
        ev = V.SiteEvidence(estimate=est[j], ci_low=lo[j], ci_high=hi[j], exact=bool(exact[j]),
                            all_base=bool(all_base[j]), all_target=bool(all_target[j]), undefined=undefined,
                            margin=margin, tost_p_adj=tost_adj[j], tost_low=lo[j], tost_high=hi[j],
                            exceeds_p_adj=exc_adj[j], mde=float(mde[j]),
                            mde_relative=None if scan.no_gap else float(mde_rel[j]),
                            p_adj=None if p_adj is None else p_adj[j], p_opposite_adj=p_opp_adj[j],
                            skewness=float(sf.skewness[j]), n_reliable=int(need[j]),
                            n_reliable_opposite=int(need_opp[j]), n_reliable_tost=int(need_tost[j]),
                            n_reliable_exceeds=int(need_exc[j]))
        decisions.append(V.has_effect_rule(ev, ctx, claim.direction) if is_has else V.no_effect_rule(ev, ctx))
    if not is_has:
        p, p_adj = tost_p, tost_adj
    extra = []
    if undefined is None:
        rel = (f" ({claim.margin:g} of the gap {abs(scan.mean_gap):.3g}; the gap's uncertainty is in the test)"
               if claim.relative else "")
        extra.append(f"margin +-{margin:.3g} in metric units{rel}")
    if scan.maxt and any("equivalence" in d.reason for d in decisions):
        extra.append("equivalence p_adj corrected with holm (maxT applies to the tests of the effect only)")
    return _finish(scan, decisions, site_cols, est, lo, hi, p, p_adj,
                   f"mean effect (values - {scan.base_name}, metric units)", common, extra)


def _beats_random(scan: _Scan, effects, claim: BeatsRandom, common) -> Evaluation:
    """beats_random: rank of the joint normalised effect among random site sets (randomisation p-value)."""
    hint = f"run scan(..., joint=True, n_random={claim.n_random})"
    if not effects.joint:
        raise ValueError(f"beats_random compares the joint effect of a site set with random site sets: {hint}")
    if effects.random_values is None:
        raise ValueError(f"effects has no random site sets (random_values is None): {hint}")
    rv = _arr(effects, "random_values")
    if rv.ndim != 2 or rv.shape[0] != scan.n:
        raise ValueError(f"effects.random_values must be [n_prompts={scan.n}, n_random], got shape {rv.shape}")
    n_rand = rv.shape[1]
    info = (getattr(effects, "meta", None) or {}).get("random_sets")
    exhaustive = bool(info and info.get("exhaustive"))
    if n_rand < claim.n_random and not exhaustive:
        raise ValueError(f"effects has {n_rand} random site sets but the claim asks for {claim.n_random}: {hint}")
    if info:
        sets = (f"all {n_rand} distinct random site sets of this size (exact randomisation p)" if exhaustive else
                f"{n_rand} distinct random site sets drawn without replacement"
                + (f" from {info['distinct']}" if info.get("distinct") else ""))
    else:
        sets = f"{n_rand} random site sets (how many are distinct is unknown: effects not made by scan)"
    sets += f"; smallest attainable p {1.0 / (n_rand + 1):.2g}"
    fix = (f"only {n_rand} distinct site sets of this size exist in the random pool: pass a larger random_pool "
           "(more layers, heads or positions)" if exhaustive else f"use n_random >= {int(np.ceil(1 / scan.alpha))}")
    ctx = _context(scan, 1.0 / (n_rand + 1), scan.alpha, f"alpha = {scan.alpha:g}", fix)
    site_cols = scan.site_cols
    quantity = "normalised joint effect vs random site sets"
    if scan.no_gap:
        return _undefined(scan, lambda ev: V.beats_random_rule(ev, ctx, n_rand), site_cols, quantity, common)
    observed = float(scan.e[:, 0].mean() / scan.mean_gap)
    rand = (rv - scan.base[:, None]).mean(axis=0) / scan.mean_gap
    tol = 1e-12 * max(abs(observed), float(np.abs(rand).max()))
    k = int(np.count_nonzero(rand >= observed - tol))
    p = (1 + k) / (n_rand + 1)
    rec = scan.recovery(scan.values[:, :1])
    lo, hi = float(np.atleast_1d(rec.low)[0]), float(np.atleast_1d(rec.high)[0])
    median = float(np.median(rand))
    rank = f"beats {n_rand - k} of {n_rand} random site sets (random median {median:.3g}, max {rand.max():.3g})"
    ev = V.SiteEvidence(estimate=observed, ci_low=lo, ci_high=hi, p_adj=p, random_rank=rank,
                        beats_median=observed > median)
    d = V.beats_random_rule(ev, ctx, n_rand)
    one = lambda v: np.array([v])  # noqa: E731
    return _finish(scan, [d], site_cols, one(observed), one(lo), one(hi), one(p), one(p), quantity, common, [sets])
