"""HTML report: one self-contained file (inline CSS, plots embedded as data: URIs, no scripts, no network).

    render(results, path=None, title=...)   full document; written atomically when `path` is given
    render_fragment(results)                the same body inside a <div> (notebooks, `Result._repr_html_`)

Every verdict is shown the same way: a coloured badge with its name in capitals, the reasons next to
it; null and inconclusive results have colours of their own and are never collapsed.  Per hypothesis:
reasons, per-site verdict counts and flags, plots chosen from the sites (see `plots.figures`), the
per-site table (top rows, with the number left out; the full table is in the JSON) and everything
needed to reproduce the numbers.
"""
from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import html as _html
import json
import os
from typing import Iterable

from ..verdict import VERDICTS
from . import plots as _plots
from . import table as _table

__all__ = ["render", "render_fragment", "CSS"]

_S = _table.VERDICT_STYLE


def _e(x) -> str:
    """Escape any user-derived text for HTML (element content and attribute values)."""
    return _html.escape("" if x is None else str(x), quote=True)


def _results(results) -> list:
    """A list of results (duck-typed: anything with an `evaluation`, so reports need not import `Result`)."""
    if hasattr(results, "evaluation"):
        return [results]
    out = list(results)
    for r in out:
        if not hasattr(r, "evaluation"):
            raise TypeError(f"render() takes causalinterp Result objects, got {type(r).__name__}")
    return out


# ----------------------------------------------------------------------------- style

def _verdict_css() -> str:
    rules = []
    for v, s in _S.items():
        rules.append(f".ci-report .badge-{v}{{background:{s['color']};color:#fff;border-color:{s['color']}}}")
        rules.append(f".ci-report .chip-{v}{{background:{s['light']};color:{s['color']};border-color:{s['color']}}}")
        rules.append(f".ci-report tr.verdict-{v}>td.vcell{{background:{s['light']}}}")
        rules.append(f".ci-report tr.summary-row.verdict-{v}>td:first-child{{border-left:6px solid {s['color']}}}")
        rules.append(f".ci-report section.verdict-{v}{{border-left:6px solid {s['color']}}}")
    return "\n".join(rules)


CSS = """
.ci-report{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,Arial,"DejaVu Sans",sans-serif;
  color:#1f2328;background:#fff;line-height:1.45;font-size:14px;max-width:1240px;margin:0 auto;padding:8px 18px}
.ci-report h1{font-size:24px;margin:10px 0 4px}
.ci-report h2{font-size:19px;margin:0 0 8px;display:flex;align-items:center;gap:10px;flex-wrap:wrap}
.ci-report h3{font-size:15px;margin:18px 0 6px}
.ci-report .muted{color:#57606a}
.ci-report .small{font-size:12px}
.ci-report table{border-collapse:collapse;margin:6px 0 10px}
.ci-report th,.ci-report td{border:1px solid #d0d7de;padding:4px 8px;vertical-align:top;text-align:left}
.ci-report th{background:#f6f8fa;font-weight:600}
.ci-report td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci-report .badge{display:inline-block;padding:2px 9px;border-radius:12px;font-weight:700;font-size:12px;
  letter-spacing:.04em;border:1px solid;white-space:nowrap}
.ci-report .badge.big{font-size:14px;padding:3px 12px}
.ci-report .chip{display:inline-block;padding:0 7px;border-radius:10px;font-size:12px;border:1px solid;
  margin:1px 3px 1px 0;white-space:nowrap}
.ci-report .flag{display:inline-block;padding:0 6px;border-radius:4px;font-size:12px;background:#fbefff;
  color:#8250df;border:1px solid #c297ff;margin:1px 2px 1px 0;white-space:nowrap}
.ci-report table.summary{width:100%}
.ci-report table.summary td.reasons ul{margin:0;padding-left:18px}
.ci-report table.summary a{color:#0969da;text-decoration:none;font-weight:600}
.ci-report section{margin:22px 0;padding:10px 16px 14px;background:#fff;border:1px solid #d0d7de;border-radius:6px}
.ci-report ul.reasons{margin:4px 0 8px;padding-left:20px}
.ci-report .legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:6px 0 10px;font-size:13px}
.ci-report figure{margin:10px 0 14px}
.ci-report figure img,.ci-report figure svg{max-width:100%;height:auto;border:1px solid #eaeef2}
.ci-report figcaption{font-size:12px;color:#57606a;margin-top:3px;max-width:900px}
.ci-report table.sites{font-size:12.5px;width:100%}
.ci-report table.sites td.reason{min-width:260px}
.ci-report table.sites td.site{white-space:nowrap}
.ci-report dl.repro{display:grid;grid-template-columns:max-content minmax(0,1fr) max-content minmax(0,1fr);
  gap:0;margin:6px 0 10px;font-size:12.5px;border-top:1px solid #d0d7de;border-left:1px solid #d0d7de}
.ci-report dl.repro dt,.ci-report dl.repro dd{margin:0;padding:3px 8px;border-right:1px solid #d0d7de;
  border-bottom:1px solid #d0d7de;overflow-wrap:anywhere}
.ci-report dl.repro dt{font-weight:600;background:#f6f8fa;white-space:nowrap}
.ci-report pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px;max-height:420px}
.ci-report .note{background:#fff8c5;border:1px solid #d4a72c;border-radius:4px;padding:4px 8px;display:inline-block;
  font-size:13px}
""" + _verdict_css()


# ----------------------------------------------------------------------------- pieces

def _badge(verdict: str, big: bool = False) -> str:
    s = _table.style(verdict)
    label = s["label"] if s["label"] != "UNKNOWN" else str(verdict).upper()
    size = " big" if big else ""
    return (f'<span class="badge badge-{_e(verdict)}{size}" title="{_e(_table.VERDICT_HELP.get(verdict, ""))}">'
            f'{_e(s["symbol"])} {_e(label)}</span>')


def _chips(counts: dict) -> str:
    return " ".join(f'<span class="chip chip-{_e(v)}">{k} {_e(v)}</span>' for v, k in counts.items() if k)


def _flags(flag) -> str:
    if not isinstance(flag, str) or not flag:
        return ""
    return " ".join(f'<span class="flag" title="{_e(_table.FLAG_HELP.get(f, ""))}">{_e(f)}</span>'
                    for f in flag.split(",") if f)


def _anchor(prefix: str, i: int) -> str:
    return f"{prefix}-h{i + 1}"


def _summary(results, prefix: str) -> str:
    rows = []
    for i, r in enumerate(results):
        v = r.verdict
        est = _table.estimate_text(r)
        what = (f'<div class="num">{_e(est)}</div><div class="muted small">{_e(r.evaluation.quantity)}</div>' if est
                else "")
        sites = f'<div class="small">{_e(_table.site_summary(r))}</div>'
        flags = _table.flag_counts(r.table)
        flag_html = (" ".join(f'{_flags(f)}<span class="small">\u00d7{k}</span>' for f, k in flags.items())
                     if flags else "")
        reasons = "".join(f"<li>{_e(x)}</li>" for x in r.reasons) or "<li>(no reasons recorded)</li>"
        rows.append(
            f'<tr class="summary-row verdict-{_e(v)}">'
            f'<td class="num">{i + 1}</td>'
            f'<td><a href="#{_anchor(prefix, i)}">{_e(r.name)}</a>'
            f'<div class="muted small">{_e(r.evaluation.claim)}</div></td>'
            f'<td class="vcell">{_badge(v)}</td>'
            f"<td>{what}{sites}{flag_html}</td>"
            f'<td class="reasons"><ul>{reasons}</ul></td></tr>')
    return ('<table class="summary"><thead><tr><th>#</th><th>hypothesis / claim</th><th>verdict</th>'
            "<th>estimate [CI] / sites</th><th>reasons</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _overview(results) -> str:
    counts = {v: 0 for v in VERDICTS}
    for r in results:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    parts = " ".join(f"{_badge(v)} <b>{k}</b>" for v, k in counts.items())
    legend = "".join(f'<span>{_badge(v)} {_e(_table.VERDICT_HELP[v])}</span>' for v in VERDICTS)
    n = len(results)
    return (f'<p>{n} hypothes{"is" if n == 1 else "es"}: {parts}</p>'
            f'<div class="legend">{legend}</div>')


def _figure(fig: _plots.Figure) -> str:
    if fig.mime == "image/png":
        b64 = base64.b64encode(fig.data).decode("ascii")
        img = f'<img alt="{_e(fig.title)}" src="data:image/png;base64,{b64}">'
    else:
        img = fig.data  # SVG text produced by matplotlib (no prolog/DOCTYPE), inlined
    return f'<figure class="plot plot-{_e(fig.kind)}">{img}<figcaption>{_e(fig.caption)}</figcaption></figure>'


def _site_table(r, max_rows: int | None) -> str:
    t = r.table
    shown, left = _table.top_rows(t, max_rows)
    cl = f"{100 * r.evaluation.confidence_level:g}% CI"
    head = ("<tr><th>site</th><th>estimate</th><th>" + _e(cl) + "</th><th>p</th><th>p_adj</th><th>effect size (g)</th>"
            "<th>verdict</th><th>flag</th><th>reason</th></tr>")
    body = []
    for _, row in shown.iterrows():
        v = str(row["verdict"])
        body.append(
            f'<tr class="site-row verdict-{_e(v)}"><td class="{"site" if len(str(row["site"])) <= 40 else ""}">'
            f'{_e(row["site"])}</td>'
            f'<td class="num">{_e(_table.fmt(row["estimate"]))}</td>'
            f'<td class="num">[{_e(_table.fmt(row["ci_low"]))}, {_e(_table.fmt(row["ci_high"]))}]</td>'
            f'<td class="num">{_e(_table.fmt_p(row["p"]))}</td><td class="num">{_e(_table.fmt_p(row["p_adj"]))}</td>'
            f'<td class="num">{_e(_table.fmt(row["effect_size"]))}</td>'
            f'<td class="vcell">{_badge(v)}</td><td>{_flags(row["flag"])}</td>'
            f'<td class="reason">{_e(row["reason"])}</td></tr>')
    n = len(t)
    note = (f"All {n} site(s). " if not left else
            f'<span class="note">Showing the first {len(shown)} of {n} sites; {left} more rows are in the full table '
            f"(<code>result.table</code>) and in the JSON (<code>result.to_json()</code>).</span> ")
    order = ("Order: supported, refuted, inconclusive, null; within each, smallest corrected p, then largest "
             "|estimate|. p and p_adj belong to the claim's own test (TOST for no_effect); a refuted site's reason "
             "cites the opposite test's p.")
    return (f'<p class="small">{note}<span class="muted">{order}</span></p>'
            f'<table class="sites"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>')


def _flag_legend(t) -> str:
    flags = _table.flag_counts(t)
    if not flags:
        return ""
    items = "".join(f"<span>{_flags(f)} <b>{k}</b> site(s): {_e(_table.FLAG_HELP.get(f, ''))}</span>"
                    for f, k in flags.items())
    return f'<div class="legend">{items}</div>'


def _spec_json(r) -> str:
    h = dict(r.hypothesis or {})
    if isinstance(h.get("data"), dict) and "clean" in h["data"]:
        h["data"] = _table._data_summary(h["data"])
    return json.dumps(h, indent=1, default=str)


def _section(r, i: int, prefix: str, max_rows, max_forest, image_format) -> str:
    e = r.evaluation
    v = r.verdict
    out = [f'<section class="hypothesis verdict-{_e(v)}" id="{_anchor(prefix, i)}">',
           f"<h2>{i + 1}. {_e(r.name)} {_badge(v, big=True)}</h2>"]
    desc = (r.hypothesis or {}).get("description")
    if desc:
        out.append(f"<p>{_e(desc)}</p>")
    est = _table.estimate_text(r)
    out.append(f"<p><b>Claim:</b> {_e(e.claim)}. <b>Quantity:</b> {_e(e.quantity)}"
               + (f". <b>Estimate:</b> {_e(est)} ({100 * e.confidence_level:g}% CI)" if est else "")
               + f". <b>n</b> = {e.n_prompts} prompts"
               + (f" in {e.n_clusters} clusters" if e.n_clusters else "") + ".</p>")
    out.append("<h3>Reasons</h3><ul class=\"reasons\">" + "".join(f"<li>{_e(x)}</li>" for x in r.reasons) + "</ul>")
    out.append(f"<p><b>Per-site verdicts:</b> {_chips(_table.verdict_counts(r.table))}</p>")
    out.append(_flag_legend(r.table))
    try:
        figs = _plots.figures(r, fmt=image_format, max_forest=max_forest)
    except Exception as exc:  # noqa: BLE001 - a plot must never cost the user the numbers
        figs = []
        out.append(f'<p class="note">Plots could not be drawn: {_e(type(exc).__name__)}: {_e(exc)}</p>')
    if figs:
        out.append("<h3>Plots</h3>" + "".join(_figure(f) for f in figs))
    out.append("<h3>Per-site statistics</h3>" + _site_table(r, max_rows))
    rep = "".join(f"<dt>{_e(k)}</dt><dd>{_e(val)}</dd>" for k, val in _table.reproduction(r))
    out.append(f'<h3>Reproduction</h3><dl class="repro">{rep}</dl>')
    out.append("<details><summary>Hypothesis specification (JSON; token lists are in the result JSON)</summary>"
               f"<pre>{_e(_spec_json(r))}</pre></details>")
    out.append("</section>")
    return "\n".join(out)


def _extras(extras, image_format) -> list:
    """Sections for circuit analyses (faithfulness curves, stability) shown after the results."""
    from .circuits import figure_for
    figs = [figure_for(x, image_format) for x in extras]
    return [f'<section class="hyp"><h2>{_e(f.title)}</h2>{_figure(f)}</section>' for f in figs]


def _body(results, title, max_rows, max_forest, image_format, prefix, extras=()) -> str:
    from .. import __version__
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<h1>{_e(title)}</h1>" if title else "",
             f'<p class="muted small">causalinterp {_e(__version__)} \u00b7 generated {stamp}</p>']
    if not results and not extras:
        parts.append("<p>No results.</p>")
        return "\n".join(parts)
    if results:
        parts += ["<h2>Summary</h2>", _overview(results), _summary(results, prefix)]
    parts += [_section(r, i, prefix, max_rows, max_forest, image_format) for i, r in enumerate(results)]
    return "\n".join(parts + _extras(extras, image_format))


def _prefix(results) -> str:
    h = hashlib.sha1("\x00".join(r.name for r in results).encode("utf-8")).hexdigest()[:8]
    return f"ci-{h}"


# ----------------------------------------------------------------------------- public

def render_fragment(results: Iterable, *, title: str | None = None, max_rows: int | None = 50,
                    max_forest: int = 30, image_format: str = "png") -> str:
    """The report body (no <html>/<head>) in a styled <div class="ci-report">, for notebooks."""
    results = _results(results)
    return (f'<div class="ci-report"><style>{CSS}</style>\n'
            f"{_body(results, title, max_rows, max_forest, image_format, _prefix(results))}\n</div>")


def render(results: Iterable, path: str | os.PathLike | None = None, title: str = "causalinterp report", *,
           max_rows: int | None = 50, max_forest: int = 30, image_format: str = "png", extras: Iterable = ()) -> str:
    """A complete, self-contained HTML report for `results`; also written atomically to `path` when given.

    max_rows: per-site table rows shown per hypothesis (None = all; the rest are counted, and are in the JSON).
    max_forest: sites in each forest plot (largest |estimate| first; the number omitted is stated).
    image_format: "png" (base64 data: URIs) or "svg" (inline SVG).
    extras: faithfulness curves and stability analyses (`ci.faithfulness_curve`, `ci.stability`), each a
    section with its plot after the results.
    """
    results = _results(results)
    body = _body(results, title, max_rows, max_forest, image_format, _prefix(results), tuple(extras))
    doc = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
           f"<title>{_e(title)}</title><style>body{{margin:0;background:#fff}}{CSS}</style></head>\n"
           f'<body><div class="ci-report">\n{body}\n</div></body></html>\n')
    if path is not None:
        from ..output import write_atomic
        write_atomic(path, doc)
    return doc
