"""The verdict rules: statistics of one site -> supported / refuted / null / inconclusive, with a reason.

Every rule is written once, here, and documented in ``docs/verdicts.md`` (keep the two in step).
`causalinterp.evaluate` computes the numbers (p-values already corrected over the family of sites)
and calls these rules; nothing here computes statistics.

    supported     the data show the claim (corrected p < alpha, or an exact answer)
    refuted       the data show the opposite of the claim
    null          the data show there is no effect (equivalence within the margin)
    inconclusive  the data cannot tell; the reason says why (CI straddles the threshold, too few
                  prompts for the corrected alpha, undefined recovery, ...)
"""
from __future__ import annotations

import math

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

__all__ = ["SUPPORTED", "REFUTED", "NULL", "INCONCLUSIVE", "VERDICTS", "Context", "SiteEvidence", "Decision",
           "recovers_rule", "has_effect_rule", "no_effect_rule", "beats_random_rule", "combine"]

SUPPORTED, REFUTED, NULL, INCONCLUSIVE = "supported", "refuted", "null", "inconclusive"
VERDICTS = (SUPPORTED, REFUTED, NULL, INCONCLUSIVE)

# flags (table column `flag`; several are joined with ",")
ZERO_VARIANCE = "zero-variance"
UNDERPOWERED = "underpowered"
UNDEFINED = "undefined"
UNSTABLE_GAP = "unstable-gap"
SKEWED = "skewed"
SELECTED = "selected-on-same-data"


@dataclass(frozen=True)
class Context:
    """What every rule of one evaluation shares."""

    alpha: float
    threshold: float          # the level the smallest p of the family must reach (alpha/m for Holm, alpha for maxT)
    threshold_label: str      # e.g. "alpha/m = 0.05/144"
    smallest_p: float         # smallest attainable p for this n / n_resamples
    n_label: str              # e.g. "n=8" or "8 clusters"
    confidence_level: float
    base_name: str = "corrupt"    # the unintervened run that was patched
    target_name: str = "clean"    # where a full effect goes
    power_fix: str = ""           # what would make the smallest attainable p small enough
    mde_label: str = ""           # the level the minimum detectable effect is computed at (default threshold_label)
    n_units: int = 0              # prompts, or clusters (what Cochran's rule counts)
    selected_on: str = ""         # non-empty: the sites were chosen on these very prompts (the reason says how)

    @property
    def underpowered(self) -> bool:
        return self.smallest_p >= self.threshold

    def power_reason(self) -> str:
        op = ">" if self.smallest_p > self.threshold else "="
        fix = f" ({self.power_fix})" if self.power_fix else ""
        return f"{self.n_label}: smallest attainable p {_p(self.smallest_p)} {op} {self.threshold_label}{fix}"


@dataclass(frozen=True)
class SiteEvidence:
    """The numbers of one site (one column of `Effects.values`). Fields a rule does not use stay None."""

    estimate: float                   # recovery, or mean effect (values - base), or normalised joint effect
    ci_low: float
    ci_high: float
    p_adj: float | None = None        # corrected p of the claim's own test
    p_opposite_adj: float | None = None   # corrected p of the opposite one-sided test
    exact: bool = False               # zero variance: the estimate is known exactly
    all_base: bool = False            # values == base on every prompt
    all_target: bool = False          # values == target on every prompt
    undefined: str | None = None      # why the quantity is undefined (e.g. no clean-corrupt gap)
    unstable_gap: str | None = None   # why the recovery's denominator is unreliable
    margin: float | None = None       # equivalence margin (metric units)
    tost_p_adj: float | None = None
    tost_low: float | None = None     # (1 - 2 alpha) CI used by TOST
    tost_high: float | None = None
    exceeds_p_adj: float | None = None    # corrected p of "|effect| > margin"
    mde: float | None = None          # minimum detectable effect (metric units)
    mde_relative: float | None = None  # as a fraction of the gap
    random_rank: str | None = None    # beats_random: where the observed effect falls among random sets
    beats_median: bool = False        # beats_random: observed above the random sets' median
    skewness: float = 0.0             # sample skewness of the units of the claim's test statistic
    n_reliable: int = 0               # units Cochran's rule asks for before the claim's own rejection is trusted
    n_reliable_opposite: int = 0      # ... before the opposite rejection (refuted) is trusted
    n_reliable_tost: int = 0          # ... before the equivalence rejection (null) is trusted
    n_reliable_exceeds: int = 0       # ... before "beyond the margin" is trusted


@dataclass(frozen=True)
class Decision:
    verdict: str
    flag: str
    reason: str


def _g(x) -> str:
    return f"{x:.3g}"


def _p(x) -> str:
    return f"{x:.2g}"


def _ci(lo, hi) -> str:
    return f"[{lo:.3g}, {hi:.3g}]"


def _flags(*flags) -> str:
    return ",".join(f for f in flags if f)


def _same_as(ctx: Context, ev: SiteEvidence) -> str | None:
    if ev.all_base:
        return f"patched equals {ctx.base_name} on every prompt"
    if ev.all_target:
        return f"patched equals {ctx.target_name} on every prompt"
    return None


def _cl(ctx: Context) -> str:
    return f"{100 * ctx.confidence_level:g}% CI"


def _doubt(ev: SiteEvidence, ctx: Context, need: int, what: str) -> Decision | None:
    """Abstain from a rejection the data cannot back: skewed against it with fewer units than Cochran asks."""
    if not need or ctx.n_units >= need:
        return None
    unit = "clusters" if "cluster" in ctx.n_label else "prompts"
    return Decision(INCONCLUSIVE, SKEWED,
                    f"{what}, but the per-prompt values are skewed against it (skewness {ev.skewness:.2g}): a sample "
                    f"of {ctx.n_units} {unit} this skewed can miss rare large values in the other direction, so no "
                    f"test of a mean is reliable here; about {need} {unit} would do (Cochran-type rule n > 50 (|g1| - 0.5 sqrt(6/n))^2). "
                    "Confirm on more prompts")


def _exact_underpowered(ctx: Context, what: str) -> Decision:
    """Zero variance is not proof at tiny n: a constant sample is as likely under a sparse effect."""
    return Decision(INCONCLUSIVE, _flags(ZERO_VARIANCE, UNDERPOWERED),
                    f"{what}, but {ctx.power_reason()}: a constant sample this small does not rule out an effect that "
                    "spares (or hits) the prompts not drawn")


def _selected(ev: SiteEvidence, ctx: Context, d: Decision) -> Decision:
    """A claim about sites chosen on these prompts is never `supported` on them (winner's curse)."""
    if not ctx.selected_on or d.verdict != SUPPORTED:
        return d
    return Decision(INCONCLUSIVE, _flags(d.flag, SELECTED),
                    f"{ctx.selected_on}; on the same prompts the test would say: {d.reason}. Confirm on held-out "
                    "prompts (ContrastSet.split)")


# ----------------------------------------------------------------------------- rules

def recovers_rule(ev: SiteEvidence, ctx: Context, tau: float) -> Decision:
    """recovers(tau): sign-flip test of d = (values - base) - tau * (target - base)."""
    return _selected(ev, ctx, _recovers(ev, ctx, tau))


def _recovers(ev: SiteEvidence, ctx: Context, tau: float) -> Decision:
    if ev.undefined:
        return Decision(INCONCLUSIVE, UNDEFINED, ev.undefined)
    ci = f"{_cl(ctx)} {_ci(ev.ci_low, ev.ci_high)}"
    if ev.unstable_gap:
        return Decision(INCONCLUSIVE, UNSTABLE_GAP, f"{ev.unstable_gap}; recovery {_g(ev.estimate)}, {ci}")
    if ev.exact:
        what = _same_as(ctx, ev) or f"every prompt recovers exactly {_g(ev.estimate)} of the gap"
        if ctx.underpowered:
            return _exact_underpowered(ctx, what)
        if ev.estimate >= tau - 1e-9:     # rounding: a recovery of exactly tau meets "at least tau"
            return Decision(SUPPORTED, ZERO_VARIANCE, f"{what}: recovery {_g(ev.estimate)} >= {tau:g} exactly")
        return Decision(REFUTED, ZERO_VARIANCE, f"{what}: recovery {_g(ev.estimate)} < {tau:g} exactly")
    if ev.p_adj < ctx.alpha:
        reason = f"recovery {_g(ev.estimate)} > {tau:g}: {ci}, p_adj {_p(ev.p_adj)}"
        return _doubt(ev, ctx, ev.n_reliable, reason) or Decision(SUPPORTED, "", reason)
    if ev.p_opposite_adj < ctx.alpha:
        reason = f"recovery {_g(ev.estimate)} < {tau:g}: {ci}, p_adj {_p(ev.p_opposite_adj)}"
        return _doubt(ev, ctx, ev.n_reliable_opposite, reason) or Decision(REFUTED, "", reason)
    side = "straddles" if ev.ci_low <= tau <= ev.ci_high else ("lies above" if ev.ci_low > tau else "lies below")
    reason = f"{ci} {side} {tau:g}, not significant (p_adj {_p(ev.p_adj)} vs alpha {ctx.alpha:g})"
    if ctx.underpowered:
        return Decision(INCONCLUSIVE, UNDERPOWERED, f"{ctx.power_reason()}; {reason}")
    return Decision(INCONCLUSIVE, "", reason)


def _not_detected(ev: SiteEvidence, ctx: Context, lead: str) -> Decision:
    """Shared tail of has_effect / no_effect: neither significant nor equivalent."""
    parts = [lead]
    if ev.mde is not None and not math.isfinite(ev.mde):
        parts.append("no effect size is detectable with this many prompts at "
                     f"{ctx.mde_label or ctx.threshold_label}")
    elif ev.mde is not None:
        rel = f" ({_g(ev.mde_relative)} of the gap)" if ev.mde_relative is not None else ""
        parts.append(f"minimum detectable effect {_g(ev.mde)}{rel} at {ctx.mde_label or ctx.threshold_label} "
                     "with 80% power (approximate: t-test power; skewed or sparse effects need more)")
    if ctx.underpowered:
        parts.insert(0, ctx.power_reason())
        return Decision(INCONCLUSIVE, UNDERPOWERED, "; ".join(parts))
    return Decision(INCONCLUSIVE, "", "; ".join(parts))


def has_effect_rule(ev: SiteEvidence, ctx: Context, direction: str) -> Decision:
    """has_effect(direction): robust test of values - base, then equivalence to tell null from inconclusive."""
    return _selected(ev, ctx, _has_effect(ev, ctx, direction))


def _has_effect(ev: SiteEvidence, ctx: Context, direction: str) -> Decision:
    if ev.exact:
        what = _same_as(ctx, ev) or f"the effect is exactly {_g(ev.estimate)} on every prompt"
        if ctx.underpowered:
            return _exact_underpowered(ctx, what)
        if ev.estimate == 0:
            return Decision(NULL, ZERO_VARIANCE, f"{what}: effect exactly 0")
        if direction == "any" or (ev.estimate > 0) == (direction == "increase"):
            return Decision(SUPPORTED, ZERO_VARIANCE, what)
        return Decision(REFUTED, ZERO_VARIANCE, f"{what}: the opposite direction of the claimed {direction}")
    ci = f"{_cl(ctx)} {_ci(ev.ci_low, ev.ci_high)}"
    if ev.p_adj < ctx.alpha:
        reason = f"mean effect {_g(ev.estimate)}, {ci}, p_adj {_p(ev.p_adj)}"
        return _doubt(ev, ctx, ev.n_reliable, reason) or Decision(SUPPORTED, "", reason)
    if ev.p_opposite_adj is not None and ev.p_opposite_adj < ctx.alpha:
        reason = (f"mean effect {_g(ev.estimate)} goes against the claimed {direction}: {ci}, "
                  f"p_adj {_p(ev.p_opposite_adj)}")
        return _doubt(ev, ctx, ev.n_reliable_opposite, reason) or Decision(REFUTED, "", reason)
    lead = f"not significant (p_adj {_p(ev.p_adj)}), mean effect {_g(ev.estimate)}, {ci}"
    if ev.undefined:
        return Decision(INCONCLUSIVE, UNDEFINED, f"{lead}; no equivalence margin: {ev.undefined}")
    if ev.tost_p_adj < ctx.alpha and not ctx.underpowered:
        reason = (f"no effect: mean effect {_g(ev.estimate)}, {ci}, shown within +-{_g(ev.margin)} "
                  f"(equivalence p_adj {_p(ev.tost_p_adj)})")
        return _doubt(ev, ctx, ev.n_reliable_tost, reason) or Decision(NULL, "", reason)
    return _not_detected(ev, ctx, f"{lead}; not shown within +-{_g(ev.margin)} "
                                  f"(equivalence p_adj {_p(ev.tost_p_adj)})")


def no_effect_rule(ev: SiteEvidence, ctx: Context) -> Decision:
    """no_effect(margin): equivalence (two one-sided robust tests); an effect beyond the margin refutes."""
    return _selected(ev, ctx, _no_effect(ev, ctx))


def _no_effect(ev: SiteEvidence, ctx: Context) -> Decision:
    if ev.undefined:
        return Decision(INCONCLUSIVE, UNDEFINED, f"no equivalence margin: {ev.undefined}")
    if ev.exact:
        what = _same_as(ctx, ev) or f"the effect is exactly {_g(ev.estimate)} on every prompt"
        if ctx.underpowered:
            return _exact_underpowered(ctx, what)
        if abs(ev.estimate) < ev.margin:
            return Decision(SUPPORTED, ZERO_VARIANCE, f"{what}: within +-{_g(ev.margin)}")
        return Decision(REFUTED, ZERO_VARIANCE, f"{what}: not within +-{_g(ev.margin)}")
    tci = f"mean effect {_g(ev.estimate)}, {_cl(ctx)} {_ci(ev.tost_low, ev.tost_high)}"
    if ev.tost_p_adj < ctx.alpha and not ctx.underpowered:
        reason = f"{tci}, shown within +-{_g(ev.margin)} (equivalence p_adj {_p(ev.tost_p_adj)})"
        return _doubt(ev, ctx, ev.n_reliable_tost, reason) or Decision(SUPPORTED, "", reason)
    if ev.exceeds_p_adj < ctx.alpha:
        reason = f"effect {_g(ev.estimate)} beyond +-{_g(ev.margin)} (p_adj {_p(ev.exceeds_p_adj)})"
        return _doubt(ev, ctx, ev.n_reliable_exceeds, reason) or Decision(REFUTED, "", reason)
    inside = -ev.margin < ev.tost_low and ev.tost_high < ev.margin
    where = "lies inside" if inside else "crosses"   # inside but not significant after the correction
    return _not_detected(ev, ctx, f"{tci} {where} +-{_g(ev.margin)}, not shown within it "
                                  f"(equivalence p_adj {_p(ev.tost_p_adj)})")


def beats_random_rule(ev: SiteEvidence, ctx: Context, n_random: int) -> Decision:
    """beats_random: rank of the joint normalised effect among random site sets of the same size."""
    return _selected(ev, ctx, _beats_random(ev, ctx, n_random))


def _beats_random(ev: SiteEvidence, ctx: Context, n_random: int) -> Decision:
    if ev.undefined:
        return Decision(INCONCLUSIVE, UNDEFINED, ev.undefined)
    if ctx.underpowered:
        return Decision(INCONCLUSIVE, UNDERPOWERED,
                        f"{n_random} random site sets: smallest attainable p {_p(ctx.smallest_p)} is not below alpha "
                        f"{ctx.alpha:g}; {ctx.power_fix}")
    if ev.p_adj < ctx.alpha:
        return Decision(SUPPORTED, "", f"normalised effect {_g(ev.estimate)} {ev.random_rank} (p {_p(ev.p_adj)})")
    if not ev.beats_median:
        return Decision(NULL, "", f"no better than random: normalised effect {_g(ev.estimate)} {ev.random_rank} "
                                  f"(p {_p(ev.p_adj)})")
    return Decision(INCONCLUSIVE, "", f"normalised effect {_g(ev.estimate)} {ev.random_rank}, but not significantly "
                                      f"(p {_p(ev.p_adj)} vs alpha {ctx.alpha:g})")


# ----------------------------------------------------------------------------- overall

def combine(decisions: Sequence[Decision], labels: Sequence[str], correction: str) -> tuple[str, list[str]]:
    """Overall verdict of a family of sites.

    One site: its verdict and reason.  Several: "supported" if every site is supported, "refuted" if
    any is refuted, "null" if every site is null, otherwise "inconclusive"; the reasons count the
    verdicts and list the first few sites of each.
    """
    if len(decisions) == 1:
        return decisions[0].verdict, [decisions[0].reason]
    counts = Counter(d.verdict for d in decisions)
    m = len(decisions)
    if counts[SUPPORTED] == m:
        verdict = SUPPORTED
    elif counts[REFUTED]:
        verdict = REFUTED
    elif counts[NULL] == m:
        verdict = NULL
    else:
        verdict = INCONCLUSIVE
    parts = [f"{counts[v]} {v}" for v in VERDICTS if counts[v]]
    reasons = [f"{counts[verdict]} of {m} sites {verdict}" if verdict != INCONCLUSIVE or counts[INCONCLUSIVE] == m
               else f"{counts[SUPPORTED]} of {m} sites supported",
               f"{m} sites, one family ({correction} correction): " + ", ".join(parts)]
    for v in (REFUTED, SUPPORTED, INCONCLUSIVE):
        names = [lab for lab, d in zip(labels, decisions) if d.verdict == v]
        if names and len(names) < m:
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            reasons.append(f"{v}: " + ", ".join(names[:5]) + more)
    flagged = Counter(f for d in decisions for f in d.flag.split(",") if f)
    for flag, k in flagged.items():
        reasons.append(f"{k} of {m} sites flagged {flag}")
    under = [d.reason for d in decisions if UNDERPOWERED in d.flag.split(",")]
    if under:
        reasons.append(under[0].split(";")[0])
    return verdict, reasons
