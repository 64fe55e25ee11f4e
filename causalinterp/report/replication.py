"""Replication reports (Markdown and HTML): the verdict on replication first, then both runs side by side.

"Did not replicate" and "contradicted" get badges as large and as strongly coloured as "supported", at the
top of each section and on every site row; nothing about a failed replication is folded away.
"""
from __future__ import annotations

import html as _html
import os
from typing import Iterable

from . import table as _table

__all__ = ["STATUS_STYLE", "markdown", "html"]

STATUS_STYLE = {
    "replicated": {"color": "#1a7f37", "light": "#dafbe1", "symbol": "\u2714"},
    "partly replicated": {"color": "#9a6700", "light": "#fff8c5", "symbol": "\u25d1"},
    "not replicated": {"color": "#cf222e", "light": "#ffebe9", "symbol": "\u2716"},
    "contradicted": {"color": "#82071e", "light": "#ffebe9", "symbol": "\u2716\u2716"},
    "untestable": {"color": "#57606a", "light": "#f6f8fa", "symbol": "?"},
}


def _est(row, which: str) -> str:
    return (f"{_table.fmt(row[f'{which}_estimate'])} [{_table.fmt(row[f'{which}_ci_low'])}, "
            f"{_table.fmt(row[f'{which}_ci_high'])}]")


def _changes(rep) -> str:
    return "; ".join(f"{k}: {v}" for k, v in rep.changes.items()) or "(none recorded)"


# ----------------------------------------------------------------------------- Markdown

def _md_status(s: str) -> str:
    return f"{STATUS_STYLE.get(s, STATUS_STYLE['untestable'])['symbol']} **{s.upper()}**"


def markdown(reps: Iterable, path: str | os.PathLike | None = None, title: str = "causalinterp replication") -> str:
    from .markdown import _cell, _verdict
    reps = list(reps)
    lines = [f"# {title}", "", "| hypothesis | replication | original | replication run | changed |",
             "|---|---|---|---|---|"]
    for r in reps:
        lines.append(f"| {_cell(r.name)} | {_md_status(r.verdict)} | {_verdict(r.original.verdict)} | "
                     f"{_verdict(r.replication.verdict)} | {_cell(_changes(r))} |")
    for i, r in enumerate(reps, 1):
        cl = f"{100 * r.original.evaluation.confidence_level:g}% CI"
        lines += ["", f"## {i}. {r.name}: {_md_status(r.verdict)}", ""]
        lines += [f"- {_cell(x)}" for x in r.reasons]
        lines += [f"- quantity: {r.original.evaluation.quantity}; changed: {_changes(r)}", "",
                  f"| site | replication | original | estimate [{cl}] | p_adj | replication run | estimate [{cl}] "
                  "| p_adj | difference p |", "|---|---|---|---:|---:|---|---:|---:|---:|"]
        for _, row in r.table.iterrows():
            lines.append("| " + " | ".join([
                _cell(row["site"]), _md_status(row["status"]), _verdict(str(row["original_verdict"])),
                _est(row, "original"), _table.fmt_p(row["original_p_adj"]), _verdict(str(row["replication_verdict"])),
                _est(row, "replication"), _table.fmt_p(row["replication_p_adj"]),
                _table.fmt_p(row["difference_p"])]) + " |")
    text = "\n".join(lines) + "\n"
    if path is not None:
        from ..output import write_atomic
        write_atomic(path, text)
    return text


# ----------------------------------------------------------------------------- HTML

def _e(x) -> str:
    return _html.escape("" if x is None else str(x), quote=True)


def _badge(s: str, big: bool = False) -> str:
    st = STATUS_STYLE.get(s, STATUS_STYLE["untestable"])
    size = "14px;padding:3px 12px" if big else "12px;padding:2px 9px"
    return (f'<span class="badge" style="background:{st["color"]};border-color:{st["color"]};color:#fff;'
            f'font-size:{size}">{_e(st["symbol"])} {_e(s.upper())}</span>')


def html(reps: Iterable, path: str | os.PathLike | None = None, title: str = "causalinterp replication") -> str:
    from .html import CSS, _badge as _vbadge
    reps = list(reps)
    out = [f"<h1>{_e(title)}</h1>", '<table class="summary"><tr><th>hypothesis</th><th>replication</th>'
           "<th>original</th><th>replication run</th><th>changed</th></tr>"]
    for r in reps:
        out.append(f"<tr><td>{_e(r.name)}</td><td>{_badge(r.verdict)}</td><td>{_vbadge(r.original.verdict)}</td>"
                   f"<td>{_vbadge(r.replication.verdict)}</td><td>{_e(_changes(r))}</td></tr>")
    out.append("</table>")
    for i, r in enumerate(reps, 1):
        st = STATUS_STYLE.get(r.verdict, STATUS_STYLE["untestable"])
        cl = f"{100 * r.original.evaluation.confidence_level:g}% CI"
        out.append(f'<section class="hypothesis" style="border-left:6px solid {st["color"]};padding-left:12px">'
                   f"<h2>{i}. {_e(r.name)} {_badge(r.verdict, big=True)}</h2><ul>"
                   + "".join(f"<li>{_e(x)}</li>" for x in r.reasons)
                   + f"<li>quantity: {_e(r.original.evaluation.quantity)}; changed: {_e(_changes(r))}</li></ul>")
        out.append(f"<table><tr><th>site</th><th>replication</th><th>original</th><th>estimate [{cl}]</th>"
                   f"<th>p_adj</th><th>replication run</th><th>estimate [{cl}]</th><th>p_adj</th>"
                   "<th>difference p</th></tr>")
        for _, row in r.table.iterrows():
            light = STATUS_STYLE.get(row["status"], STATUS_STYLE["untestable"])["light"]
            out.append(f'<tr style="background:{light}"><td>{_e(row["site"])}</td><td>{_badge(row["status"])}</td>'
                       f'<td>{_vbadge(str(row["original_verdict"]))}</td><td class="num">{_e(_est(row, "original"))}'
                       f'</td><td class="num">{_e(_table.fmt_p(row["original_p_adj"]))}</td>'
                       f'<td>{_vbadge(str(row["replication_verdict"]))}</td>'
                       f'<td class="num">{_e(_est(row, "replication"))}</td>'
                       f'<td class="num">{_e(_table.fmt_p(row["replication_p_adj"]))}</td>'
                       f'<td class="num">{_e(_table.fmt_p(row["difference_p"]))}</td></tr>')
        out.append("</table></section>")
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           f"<title>{_e(title)}</title><style>body{{margin:0;background:#fff}}{CSS}</style></head>\n"
           '<body><div class="ci-report">\n' + "\n".join(out) + "\n</div></body></html>\n")
    if path is not None:
        from ..output import write_atomic
        write_atomic(path, doc)
    return doc
