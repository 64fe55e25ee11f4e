"""Replication in one command: rerun a stored hypothesis on fresh prompts and compare, side by side.

    rep = ci.replicate(result)                        # same hypothesis, new data seed
    rep = ci.replicate(result, seed=7, templates=held_out, corruption="swap")   # other templates/corruption
    rep = ci.replicate(result, data=fresh_contrast_set)                         # prompts you bring
    rep.verdict, rep.reasons, rep.table; rep.to_markdown(path); rep.to_html(path); rep.to_json(path)

    causalinterp replicate result.json [--seed S] [--n N] [--option templates=BABA] --out DIR

Everything but the prompts stays as stored (sites, intervention, metric, claim, alpha, correction,
resamples, statistics seed), so a difference is the data's.  Per site (and for the hypothesis) the
replication is

    replicated      the same verdict again (for 'supported', with an estimate of the same sign)
    contradicted    a different decisive verdict (e.g. supported, then refuted or null), or the sign flipped
    not replicated  the original was decisive, the replication is inconclusive
    untestable      the original was inconclusive: there was no claim to replicate

and for a hypothesis over several sites: replicated when every testable site replicated, contradicted
when every one was contradicted, not replicated when none replicated, else partly replicated.
Each row also tests whether the two estimates differ more than their CIs allow (a z-test on the
difference, each standard error read from its CI; the two prompt sets are independent).  An original
estimate far outside the replication's CI is the mark of a result selected on its own data (winner's curse).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _st

from .spec.data import ContrastSet
from .spec.hypothesis import DataRef, Hypothesis, HypothesisError
from .verdict import INCONCLUSIVE, SUPPORTED

__all__ = ["Replication", "ReplicationError", "replicate", "STATUSES", "compare"]

REPLICATED, PARTLY, NOT_REPLICATED, CONTRADICTED, UNTESTABLE = (
    "replicated", "partly replicated", "not replicated", "contradicted", "untestable")
STATUSES = (REPLICATED, PARTLY, NOT_REPLICATED, CONTRADICTED, UNTESTABLE)
SCHEMA = "causalinterp.replication/1"


class ReplicationError(ValueError):
    """A replication that cannot be set up as asked; the message says what to pass."""


def _status(original: str, again: str, e1=None, e2=None) -> str:
    """Replication status of one site; a 'supported' effect of the opposite sign is contradicted."""
    if original == INCONCLUSIVE:
        return UNTESTABLE
    if again == original:
        try:
            flipped = original == SUPPORTED and float(e1) * float(e2) < 0
        except (TypeError, ValueError):
            flipped = False
        return CONTRADICTED if flipped else REPLICATED
    return NOT_REPLICATED if again == INCONCLUSIVE else CONTRADICTED


def _overall(statuses: list[str]) -> str:
    """One site: its status.  Several: replicated when every testable site replicated, contradicted when
    every one was contradicted, not replicated when none replicated, else partly replicated."""
    if len(statuses) == 1:
        return statuses[0]
    testable = [s for s in statuses if s != UNTESTABLE]
    if not testable:
        return UNTESTABLE
    for s in (REPLICATED, CONTRADICTED):
        if all(t == s for t in testable):
            return s
    return NOT_REPLICATED if REPLICATED not in testable else PARTLY


def _se(lo, hi, level: float) -> float:
    z = _st.norm.ppf(0.5 + level / 2)
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        return math.nan
    return (hi - lo) / (2 * z) if math.isfinite(lo) and math.isfinite(hi) else math.nan


def _diff_p(e1, lo1, hi1, e2, lo2, hi2, level1: float, level2: float) -> float:
    """Two-sided p of 'the two estimates are equal', from the CIs of two independent samples."""
    try:
        d = float(e2) - float(e1)
    except (TypeError, ValueError):
        return math.nan
    s = math.hypot(_se(lo1, hi1, level1), _se(lo2, hi2, level2))
    if not math.isfinite(d) or not math.isfinite(s):
        return math.nan
    if s == 0:
        return 1.0 if d == 0 else 0.0
    return float(2 * _st.norm.sf(abs(d) / s))


def compare(original, again) -> tuple[str, tuple[str, ...], pd.DataFrame]:
    """(replication status, reasons, per-site table) of two `Result`s of the same hypothesis."""
    t1, t2 = original.table.set_index("site"), again.table.set_index("site")
    if list(t1.index) != list(t2.index):
        raise ReplicationError("the two results do not have the same sites; a replication reruns the same sites")
    l1, l2 = original.evaluation.confidence_level, again.evaluation.confidence_level
    rows = []
    for site in t1.index:
        a, b = t1.loc[site], t2.loc[site]
        rows.append({"site": site, "status": _status(a["verdict"], b["verdict"], a["estimate"], b["estimate"]),
                     "original_verdict": a["verdict"], "original_estimate": a["estimate"],
                     "original_ci_low": a["ci_low"], "original_ci_high": a["ci_high"], "original_p_adj": a["p_adj"],
                     "replication_verdict": b["verdict"], "replication_estimate": b["estimate"],
                     "replication_ci_low": b["ci_low"], "replication_ci_high": b["ci_high"],
                     "replication_p_adj": b["p_adj"],
                     "difference_p": _diff_p(a["estimate"], a["ci_low"], a["ci_high"], b["estimate"], b["ci_low"],
                                             b["ci_high"], l1, l2)})
    table = pd.DataFrame(rows)
    status = _overall(table["status"].tolist())
    q = original.evaluation.quantity or "estimate"
    reasons = [f"original {original.verdict.upper()} on {original.evaluation.n_prompts} prompts; replication "
               f"{again.verdict.upper()} on {again.evaluation.n_prompts} fresh prompts"]
    if len(table) == 1:
        r = table.iloc[0]
        reasons.append(f"{q}: {_num(r['original_estimate'])} {_ci(r['original_ci_low'], r['original_ci_high'])} "
                       f"then {_num(r['replication_estimate'])} {_ci(r['replication_ci_low'], r['replication_ci_high'])}")
    else:
        n_ok = int((table["status"] == REPLICATED).sum())
        reasons.append(f"{n_ok} of {len(table)} sites got the same verdict again")
        sup = table[table["original_verdict"] == "supported"]
        if len(sup):
            lost = sup[sup["replication_verdict"] != "supported"]
            reasons.append(f"{len(sup) - len(lost)} of {len(sup)} originally supported sites supported again"
                           + (f"; not: {', '.join(map(str, lost['site'][:8]))}" if len(lost) else ""))
    alpha = original.evaluation.alpha
    differ = table[pd.to_numeric(table["difference_p"], errors="coerce") < alpha]
    if len(differ):
        shrank = [s for s, a, b in zip(differ["site"], differ["original_estimate"], differ["replication_estimate"])
                  if abs(float(b)) < abs(float(a))]
        reasons.append(f"the estimates differ beyond their CIs (p < {alpha:g}) at {len(differ)} site(s)"
                       + (f"; smaller on fresh prompts at {len(shrank)} (a result selected on its own data "
                          "shrinks like this)" if shrank else ""))
    return status, tuple(reasons), table


def _num(x) -> str:
    from .report.table import fmt
    return fmt(x)


def _ci(lo, hi) -> str:
    return f"[{_num(lo)}, {_num(hi)}]"


@dataclass(frozen=True, eq=False)
class Replication:
    """A stored result, its rerun on fresh prompts, and the verdict on replication (see the module docstring).

    Examples:
        >>> import causalinterp as ci
        >>> h = ci.Hypothesis(name="induction head", data=ci.DataRef("induction", n=32), model="testbed:induction",
        ...                   sites=ci.sites.heads([(1, 2)], positions="end"), intervention=ci.patch("noise"),
        ...                   claim=ci.claims.has_effect(direction="decrease"))
        >>> rep = ci.replicate(ci.run(h, progress=False), seed=1, progress=False)
        >>> type(rep).__name__
        'Replication'
    """

    original: Any            # Result
    replication: Any         # Result
    verdict: str
    reasons: tuple[str, ...]
    table: pd.DataFrame      # one row per site: status, both verdicts, estimates, CIs, corrected p, difference p
    changes: dict = field(default_factory=dict)   # what differs in the rerun (data seed, n, options, prompts)

    @property
    def name(self) -> str:
        return self.original.name

    @property
    def replicated(self) -> bool:
        return self.verdict == REPLICATED

    def __str__(self) -> str:
        lines = [f"{self.name}: {self.verdict.upper()} (original {self.original.verdict.upper()}, replication "
                 f"{self.replication.verdict.upper()})"]
        lines += [f"  - {r}" for r in self.reasons]
        return "\n".join(lines)

    def text_table(self, max_rows: int = 20) -> str:
        """Side by side as plain text: site, status, verdict and estimate [CI] before and after, difference p."""
        from .report.table import fmt_p
        head = ["site", "replication", "original", "estimate [CI]", "replication", "estimate [CI]", "diff p"]
        rows = [head]
        for _, r in self.table.head(max_rows).iterrows():
            rows.append([str(r["site"]), r["status"].upper(), str(r["original_verdict"]).upper(),
                         f"{_num(r['original_estimate'])} {_ci(r['original_ci_low'], r['original_ci_high'])}",
                         str(r["replication_verdict"]).upper(),
                         f"{_num(r['replication_estimate'])} {_ci(r['replication_ci_low'], r['replication_ci_high'])}",
                         fmt_p(r["difference_p"])])
        w = [max(len(r[i]) for r in rows) for i in range(len(head))]
        out = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
        if len(self.table) > max_rows:
            out.append(f"... {len(self.table) - max_rows} more site(s) (see the report or the JSON)")
        return "\n".join(out)

    def to_dict(self) -> dict:
        from .result import _plain
        table = self.table.astype(object).where(self.table.notna(), None)
        return _plain({"schema": SCHEMA, "name": self.name, "verdict": self.verdict, "reasons": list(self.reasons),
                       "changes": self.changes, "table": table.to_dict(orient="records"),
                       "original": self.original.to_dict(), "replication": self.replication.to_dict()})

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            from .result import write_atomic
            write_atomic(path, text)
        return text

    @classmethod
    def from_dict(cls, d: dict) -> "Replication":
        from .result import Result
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a causalinterp replication (schema {d.get('schema')!r}, expected {SCHEMA!r})")
        return cls(original=Result.from_dict(d["original"]), replication=Result.from_dict(d["replication"]),
                   verdict=d["verdict"], reasons=tuple(d["reasons"]), table=pd.DataFrame(d["table"]),
                   changes=d.get("changes", {}))

    def to_markdown(self, path: str | os.PathLike | None = None) -> str:
        from .report.replication import markdown
        return markdown([self], path)

    def to_html(self, path: str | os.PathLike | None = None) -> str:
        from .report.replication import html
        return html([self], path)


def _fresh_data(h: Hypothesis, data, seed, n, options) -> tuple[Any, dict]:
    """The replication's data and a record of what changed."""
    if data is not None:
        if not isinstance(data, (ContrastSet, DataRef)):
            raise ReplicationError("data must be a ContrastSet (fresh prompts) or a DataRef (a task with a new seed)")
        if isinstance(data, ContrastSet) and isinstance(h.data, ContrastSet) and data == h.data:
            raise ReplicationError("data= is the original contrast set itself; a replication needs fresh prompts")
        return data, {"data": "given" if isinstance(data, ContrastSet) else data.to_dict()}
    if not isinstance(h.data, DataRef):
        raise ReplicationError(f"hypothesis {h.name!r} was run on inline prompts, so there is no generator to draw "
                               "fresh ones from: pass data=ContrastSet(...) with new prompts (CLI: --data FILE.json)")
    old = h.data
    new_seed = old.seed + 1 if seed is None else int(seed)
    opts = {**dict(old.options), **dict(options or {})}
    if new_seed == old.seed and opts == dict(old.options):
        raise ReplicationError(f"seed={new_seed} and the options are those of the original: the replication would "
                               "rerun the very same prompts; choose another seed or other options")
    ref = DataRef(old.task, old.n if n is None else int(n), new_seed, opts)
    changes = {"data seed": f"{old.seed} -> {new_seed}"}
    if ref.n != old.n:
        changes["n"] = f"{old.n} -> {ref.n}"
    for k in sorted(set(opts) | set(old.options)):
        if opts.get(k) != old.options.get(k):
            changes[k] = f"{old.options.get(k, '(default)')} -> {opts.get(k)}"
    return ref, changes


def replicate(result, model=None, *, data=None, seed: int | None = None, n: int | None = None,
              progress: bool = True, track=None, **options) -> Replication:
    """Rerun `result`'s hypothesis on fresh prompts and compare verdicts and estimates site by site.

    result   a `Result` (or a path to its JSON / a session JSON holding one result)
    model    the model to run on (default: the one the result names, e.g. ``testbed:ioi``)
    data     fresh prompts (a ContrastSet) or a task reference; required when the original data was inline
    seed     the new data seed (default: the original + 1); n: the number of prompts (default: the same)
    options  task options for the new data, e.g. ``templates=[...]`` (held-out templates) or
             ``corruption="swap"`` for IOI
    track    log the rerun like `run(..., track=...)`

    Examples:
        >>> import causalinterp as ci
        >>> rep = ci.replicate("reports/results.json", seed=1)      # a stored result, fresh prompts  # doctest: +SKIP
    """
    from .result import Result
    from .runner import run
    if not isinstance(result, Result):
        loaded = Result.from_json(result)
        if isinstance(loaded, list):
            if len(loaded) != 1:
                raise ReplicationError(f"{result} holds {len(loaded)} results; replicate them one at a time "
                                       "(the CLI does all of them)")
            loaded = loaded[0]
        result = loaded
    try:
        h = Hypothesis.from_dict(result.hypothesis, f"result {result.name!r}")
    except HypothesisError as e:
        raise ReplicationError(f"the stored hypothesis cannot be rebuilt: {e}") from None
    new_data, changes = _fresh_data(h, data, seed, n, options)
    if model is None:
        from .models.load import load_model
        name = h.model or (result.meta or {}).get("model")
        try:
            model = load_model(name)
        except Exception as e:  # noqa: BLE001 - say what to pass instead
            raise ReplicationError(f"result {result.name!r} names the model {name!r}, which cannot be loaded here "
                                   f"({type(e).__name__}: {e}); pass model=") from None
    again = run(replace(h, data=new_data), model, progress=progress, track=track)
    status, reasons, table = compare(result, again)
    return Replication(original=result, replication=again, verdict=status, reasons=reasons, table=table,
                       changes=changes)
