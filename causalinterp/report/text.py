"""Results as plain text: the verdict table (CLI and pytest summary), a site table, a failure message.

    verdict_lines(results)      header, one line per result, a line of counts
    site_table_text(result)     the per-site statistics (reading order, at most `max_rows` rows)
    failure_message(result)     what a failed hypothesis test shows
"""
from __future__ import annotations

__all__ = ["verdict_lines", "site_table_text", "failure_message"]


def _short_quantity(result) -> str:
    return (result.evaluation.quantity or "").split(" (")[0].split(" vs ")[0]


def _p_of(result):
    t = result.table
    if len(t) == 1:
        return t["p_adj"].iloc[0]
    import pandas as pd
    p = pd.to_numeric(t["p_adj"], errors="coerce")
    return p.min() if p.notna().any() else None


def verdict_lines(results) -> tuple[str, list[str], str]:
    """A header, one line per result (verdict, name, estimate [CI], p, n) and a line of counts."""
    from .table import estimate_text, fmt_p, site_summary
    cells = []
    for r in results:
        e = r.evaluation
        if e.estimate is not None:
            est = f"{_short_quantity(r)} {estimate_text(r)}".strip() + f" ({100 * e.confidence_level:g}%)"
            p = fmt_p(_p_of(r))
        else:
            est, p = site_summary(r), f"min {fmt_p(_p_of(r))}"
        name = r.name if len(r.name) <= 48 else r.name[:47] + "\u2026"
        cells.append((r.verdict.upper(), name, est, p, str(e.n_prompts)))
    heads = ("verdict", "hypothesis", "estimate [CI]", "p", "n")
    w = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]

    def line(c):
        return f"{c[0]:<{w[0]}}  {c[1]:<{w[1]}}  {c[2]:<{w[2]}}  {c[3]:>{w[3]}}  {c[4]:>{w[4]}}"

    counts: dict = {}
    for r in results:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    order = ["supported", "refuted", "null", "inconclusive"]
    footer = f"{len(results)} hypothes{'is' if len(results) == 1 else 'es'}: " + ", ".join(
        f"{counts[v]} {v}" for v in order + sorted(set(counts) - set(order)) if counts.get(v))
    return line(heads), [line(c) for c in cells], footer


def site_table_text(result, max_rows: int = 20) -> str:
    """The per-site statistics table as text (reading order; at most `max_rows` rows)."""
    from .table import fmt, fmt_p, top_rows
    t, left = top_rows(result.table, max_rows)
    cols = ["site", "n", "estimate", "ci_low", "ci_high", "p", "p_adj", "verdict", "flag"]
    rows = [cols]
    for _, row in t.iterrows():
        flag = row.get("flag")
        rows.append([str(row["site"]), str(row["n"]), fmt(row["estimate"]), fmt(row["ci_low"]), fmt(row["ci_high"]),
                     fmt_p(row["p"]), fmt_p(row["p_adj"]), str(row["verdict"]).upper(),
                     flag if isinstance(flag, str) and flag else ""])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) if i in (0, 7, 8) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in rows]
    if left:
        lines.append(f"... {left} more site(s) (see the report or results.json)")
    return "\n".join(lines)


def failure_message(result, note: str = "") -> str:
    """What a failed hypothesis test shows: verdict, claim, reasons and the statistics table."""
    e = result.evaluation
    meta = result.meta or {}
    iv = (result.hypothesis or {}).get("intervention", {}) or {}
    metric = (result.hypothesis or {}).get("metric", {}) or {}
    lines = [f"hypothesis {result.name!r} is {result.verdict.upper()}{note}",
             f"claim: {e.claim}",
             f"model {meta.get('model', '?')}, {e.n_prompts} prompts, intervention {iv.get('kind', '?')}, "
             f"metric {metric.get('kind', '?')}, alpha {e.alpha:g}, correction {e.correction}"]
    lines += [f"  - {r}" for r in result.reasons]
    lines += ["", site_table_text(result)]
    return "\n".join(lines)
