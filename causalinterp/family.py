"""A family across hypotheses: the hypotheses of one run are corrected together.

Each hypothesis already corrects over its own sites.  Testing 12 true-null hypotheses at alpha each makes
"at least one supported" likely (about 1 - 0.95**12 = 0.46), so `run_all` and the pytest plugin treat the
hypotheses of a run as one family.  Holm (default): rank the hypotheses by their decisive p -- the largest
corrected site p of the claim's own test (a hypothesis is supported only if every site is) -- and re-evaluate
the hypothesis of rank r at ``alpha / (k - r + 1)``, stopping at the first that is not supported (every
later one is evaluated at that same level, so Holm's step-down never rejects past a failure).  Bonferroni:
every hypothesis at ``alpha / k``.  "none": each at its own alpha, and the reasons say so.  The verdict
rules, abstentions included, run unchanged at the family level, so every verdict (supported, refuted and
null alike) is a decision at the stated level.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .evaluate import evaluate

__all__ = ["FAMILY_CORRECTIONS", "correct_across", "decisive_p"]

FAMILY_CORRECTIONS = ("holm", "bonferroni", "none")


def check_family_correction(correction) -> str:
    c = "none" if correction is None else str(correction).lower()
    if c not in FAMILY_CORRECTIONS:
        raise ValueError(f"correction across hypotheses must be one of {FAMILY_CORRECTIONS}, got {correction!r} "
                         "('holm' controls the family-wise error over the hypotheses of the run; 'none' tests each "
                         "at its own alpha and says so)")
    return c


def decisive_p(evaluation) -> float:
    """The largest corrected p of the claim's own test over the sites (1 where undefined)."""
    p = np.asarray(evaluation.table["p_adj"], dtype=float)
    p = np.where(np.isfinite(p), p, 1.0)
    return float(p.max()) if p.size else 1.0


def _reevaluate(result, alpha: float, note: str, family: dict):
    ev = result.evaluation
    new = evaluate(result.effects, ev.claim, alpha=alpha, correction=ev.correction, n_resamples=ev.n_resamples,
                   confidence_level=ev.confidence_level, seed=ev.seed) if alpha != ev.alpha else ev
    new = replace(new, reasons=tuple(new.reasons) + (note,))
    return replace(result, evaluation=new, meta={**result.meta, "hypothesis_family": family})


def correct_across(results: list, correction: str = "holm") -> list:
    """The results, re-evaluated as one family of hypotheses (see the module docstring)."""
    correction = check_family_correction(correction)
    k = len(results)
    if k == 0:
        return []
    if correction == "none" or k == 1:
        out = []
        for r in results:
            what = ("one hypothesis in this run" if k == 1 else
                    f"{k} hypotheses in this run, NOT corrected across them (correction='none'): each tested at "
                    f"its own alpha {r.evaluation.alpha:g}")
            fam = {"correction": "none" if k > 1 else correction, "hypotheses": k, "level": r.evaluation.alpha}
            out.append(replace(r, evaluation=replace(r.evaluation, reasons=tuple(r.evaluation.reasons) + (
                f"family: {what}",)) if k > 1 else r.evaluation, meta={**r.meta, "hypothesis_family": fam}))
        return out
    ps = [decisive_p(r.evaluation) for r in results]
    order = sorted(range(k), key=lambda i: (ps[i], i))
    out = [None] * k
    stopped_at = None
    for rank, i in enumerate(order, start=1):
        r = results[i]
        base = r.evaluation.alpha
        if correction == "bonferroni":
            divisor = k
        else:
            divisor = k - (stopped_at or rank) + 1
        level = base / divisor
        fam = {"correction": correction, "hypotheses": k, "rank": rank, "level": level, "decisive_p": ps[i]}
        note = (f"family: hypothesis ranked {rank} of {k} in this run ({correction} across hypotheses): tested at "
                f"alpha {base:g}/{divisor} = {level:.3g}; its site p-values are corrected within it "
                f"({r.evaluation.correction})")
        new = _reevaluate(r, level, note, fam)
        if correction == "holm" and stopped_at is None and new.verdict != "supported":
            stopped_at = rank
        out[i] = new
    return out

