"""Markdown report: the HTML report's content as text, for notes and pull requests.

    render(results, path=None, title=...)   -> str; written atomically when `path` is given

A summary table (verdict and reasons per hypothesis), then per hypothesis the reasons, the per-site
verdict counts and flags, the top rows of the per-site table (saying how many are left out; the
full table is in the JSON) and the reproduction details.  No images: the HTML report has the plots.
"""
from __future__ import annotations

import os
from typing import Iterable

from ..verdict import VERDICTS
from . import table as _table

__all__ = ["render"]


def _cell(x) -> str:
    """Text safe inside a Markdown table cell (no pipes or line breaks)."""
    return ("" if x is None else str(x)).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _inline(x) -> str:
    return ("" if x is None else str(x)).replace("\r", " ").replace("\n", " ")


def _verdict(v: str) -> str:
    s = _table.style(v)
    label = s["label"] if s["label"] != "UNKNOWN" else str(v).upper()
    return f"{s['symbol']} **{label}**"


def _results(results) -> list:
    """A list of results (duck-typed, so reports need not import `Result`)."""
    return [results] if hasattr(results, "evaluation") else list(results)


def _site_table(r, max_rows) -> list[str]:
    shown, left = _table.top_rows(r.table, max_rows)
    cl = f"{100 * r.evaluation.confidence_level:g}% CI"
    lines = [f"| site | estimate | {cl} | p | p_adj | g | verdict | flag | reason |",
             "|---|---:|---:|---:|---:|---:|---|---|---|"]
    for _, row in shown.iterrows():
        lines.append("| " + " | ".join([
            _cell(row["site"]), _table.fmt(row["estimate"]),
            f"[{_table.fmt(row['ci_low'])}, {_table.fmt(row['ci_high'])}]", _table.fmt_p(row["p"]),
            _table.fmt_p(row["p_adj"]), _table.fmt(row["effect_size"]), _verdict(str(row["verdict"])),
            _cell(row["flag"] if isinstance(row["flag"], str) else ""), _cell(row["reason"])]) + " |")
    n = len(r.table)
    if left:
        lines.append("")
        lines.append(f"*Showing the first {len(shown)} of {n} sites; {left} more rows are in the full table "
                     "(`result.table`) and in the JSON (`result.to_json()`).*")
    lines.append("")
    lines.append("*Order: supported, refuted, inconclusive, null; within each, smallest corrected p, then largest "
                 "|estimate|. p and p_adj belong to the claim's own test (TOST for no_effect); a refuted site's reason "
                 "cites the opposite test's p.*")
    return lines


def render(results: Iterable, path: str | os.PathLike | None = None, title: str = "causalinterp report", *,
           max_rows: int | None = 20) -> str:
    """Markdown report for `results`; also written atomically to `path` when given."""
    from .. import __version__
    results = _results(results)
    out = [f"# {_inline(title)}", "", f"*causalinterp {__version__}*", ""]
    if not results:
        out += ["No results.", ""]
        return _finish(out, path)
    counts = {v: 0 for v in VERDICTS}
    for r in results:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    out.append(f"{len(results)} hypothes{'is' if len(results) == 1 else 'es'}: "
               + ", ".join(f"{k} {_verdict(v)}" for v, k in counts.items()))
    out.append("")
    out.append("| # | hypothesis | claim | verdict | estimate [CI] / sites | reasons |")
    out.append("|---:|---|---|---|---|---|")
    for i, r in enumerate(results):
        est = _table.estimate_text(r)
        sites = _table.site_summary(r)
        reasons = "<br>".join(_cell(x) for x in r.reasons)
        out.append(f"| {i + 1} | {_cell(r.name)} | {_cell(r.evaluation.claim)} | {_verdict(r.verdict)} | "
                   f"{_cell((est + '; ') if est else '')}{_cell(sites)} | {reasons} |")
    out.append("")
    out.append("Verdicts: " + "; ".join(f"{_verdict(v)}: {_table.VERDICT_HELP[v]}" for v in VERDICTS) + ".")
    out.append("")

    for i, r in enumerate(results):
        e = r.evaluation
        out.append(f"## {i + 1}. {_inline(r.name)} — {_verdict(r.verdict)}")
        out.append("")
        desc = (r.hypothesis or {}).get("description")
        if desc:
            out += [_inline(desc), ""]
        est = _table.estimate_text(r)
        out.append(f"**Claim:** {_inline(e.claim)}. **Quantity:** {_inline(e.quantity)}"
                   + (f". **Estimate:** {est} ({100 * e.confidence_level:g}% CI)" if est else "")
                   + f". **n** = {e.n_prompts} prompts" + (f" in {e.n_clusters} clusters" if e.n_clusters else "")
                   + ".")
        out.append("")
        out.append("**Reasons:**")
        out.append("")
        out += [f"- {_inline(x)}" for x in r.reasons]
        out.append("")
        counts = _table.verdict_counts(r.table)
        out.append("**Per-site verdicts:** " + ", ".join(f"{k} {v}" for v, k in counts.items() if k))
        flags = _table.flag_counts(r.table)
        if flags:
            out.append("")
            out.append("**Flags:** " + "; ".join(f"`{f}` × {k} ({_table.FLAG_HELP.get(f, '')})"
                                                 for f, k in flags.items()))
        out.append("")
        out += _site_table(r, max_rows)
        out.append("")
        out.append("**Reproduction:**")
        out.append("")
        out += [f"- {k}: {_inline(v)}" for k, v in _table.reproduction(r)]
        out.append("")
    return _finish(out, path)


def _finish(lines: list[str], path) -> str:
    text = "\n".join(lines).rstrip() + "\n"
    if path is not None:
        from ..output import write_atomic
        write_atomic(path, text)
    return text
