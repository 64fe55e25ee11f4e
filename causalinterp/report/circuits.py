"""Report pieces for circuits: the faithfulness curve with its CI band, and a stability bar per site.

    from causalinterp.report import circuits
    circuits.faithfulness_figure(curve)            # a plots.Figure (PNG or SVG)
    circuits.stability_figure(st)
    ci.report.render_html(results, "report.html", extras=[curve, st])    # sections after the results

`figure_for` picks the figure of a `FaithfulnessCurve` or a `Stability` (the HTML report's section shows it);
`section_markdown` gives their numbers as a Markdown section.
"""
from __future__ import annotations

import numpy as np

from .plots import Figure, _mime, _new_figure, _save

__all__ = ["faithfulness_figure", "stability_figure", "figure_for", "section_markdown"]


def faithfulness_figure(curve, *, fmt: str = "png", title: str = "Faithfulness curve") -> Figure:
    """Faithfulness f(C_k) against circuit size (log axis, % of the universe), with the per-point CI band."""
    fig = _new_figure(7.0, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    x = 100 * np.asarray(curve.fractions, float)
    ax.fill_between(x, curve.ci_low, curve.ci_high, color="#54aeff", alpha=0.3, linewidth=0,
                    label=f"{100 * curve.confidence_level:g}% CI (cluster bootstrap, joint across sizes)")
    ax.plot(x, curve.estimate, marker="o", color="#0969da", linewidth=1.8, label="faithfulness")
    ax.axhline(1.0, color="#6e7781", linewidth=1, linestyle="--")
    ax.axhline(0.0, color="#6e7781", linewidth=0.8)
    ax.set_xscale("log")
    level = curve.meta.get("level", "nodes")
    ax.set_xlabel(f"circuit size (% of {level}, top of the ranking)", fontsize=9)
    ax.set_ylabel("faithfulness", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    cpr, cmd = curve.cpr, curve.cmd
    caption = (f"CPR (area under the curve, higher is better) {cpr[0]:.3f} [{cpr[1]:.3f}, {cpr[2]:.3f}]; "
               f"CMD (area between the curve and 1, lower is better) {cmd[0]:.3f} [{cmd[1]:.3f}, {cmd[2]:.3f}]; "
               f"{curve.n_resamples} bootstrap resamples, {curve.values.shape[0]} prompts; "
               f"ablation {curve.meta.get('ablation', '?')} of {curve.meta.get('universe_size', '?')} {level}.")
    return Figure("faithfulness_curve", title, caption, _save(fig, fmt), _mime(fmt))


def stability_figure(st, *, fmt: str = "png", title: str = "Stability of discovery", max_members: int = 30) -> Figure:
    """One bar per node/edge: how often the discovery selected it across resamples (full-data circuit coloured)."""
    freq = st.frequency.iloc[:max_members]
    fig = _new_figure(7.0, 0.9 + 0.28 * max(1, len(freq)))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(freq))[::-1]
    colors = ["#1a7f37" if m in st.full else "#8c959f" for m in freq.index]
    ax.barh(y, freq.to_numpy(), color=colors)
    ax.set_yticks(y, [m if len(m) <= 48 else m[:47] + "\u2026" for m in freq.index], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"selection frequency over {st.n_resamples} resamples", fontsize=9)
    ax.set_title(title, fontsize=10)
    s = st.summary()
    left = len(st.frequency) - len(freq)
    caption = (f"Green: in the circuit found on all prompts; grey: selected only on some resamples. "
               f"{st.method} resamples by {st.by}; mean pairwise Jaccard {s['jaccard_mean']:.3f} "
               f"(5/50/95%: {', '.join(f'{v:.2f}' for v in s['jaccard_q05_q50_q95'])}); mean Jaccard to the "
               f"full-data circuit {s['to_full_mean']:.3f}." + (f" {left} members with lower frequency not shown."
                                                                 if left > 0 else ""))
    return Figure("stability", title, caption, _save(fig, fmt), _mime(fmt))


def figure_for(obj, fmt: str = "png") -> Figure:
    """The figure of a `FaithfulnessCurve` or a `Stability` (what the HTML report shows for it)."""
    from ..circuits import FaithfulnessCurve
    from ..stability import Stability
    if isinstance(obj, FaithfulnessCurve):
        return faithfulness_figure(obj, fmt=fmt)
    if isinstance(obj, Stability):
        return stability_figure(obj, fmt=fmt)
    raise TypeError(f"extras must be FaithfulnessCurve or Stability objects, got {type(obj).__name__}")


def section_markdown(obj) -> str:
    """A Markdown section: the numbers as a table (figures are in the HTML report)."""
    from ..circuits import FaithfulnessCurve
    if isinstance(obj, FaithfulnessCurve):
        rows = [f"| {100 * f:g}% | {k} | {e:.3f} | [{lo:.3f}, {hi:.3f}] |"
                for f, k, e, lo, hi in zip(obj.fractions, obj.k, obj.estimate, obj.ci_low, obj.ci_high)]
        return (f"## Faithfulness curve ({obj.meta.get('level', 'nodes')})\n\n| size | k | faithfulness | CI |\n|---|---|---|---|\n" + "\n".join(rows)
                + f"\n\nCPR {obj.cpr[0]:.3f} [{obj.cpr[1]:.3f}, {obj.cpr[2]:.3f}], "
                  f"CMD {obj.cmd[0]:.3f} [{obj.cmd[1]:.3f}, {obj.cmd[2]:.3f}]\n")
    fig = figure_for(obj, "svg")
    rows = [f"| {m} | {f:.2f} | {'yes' if m in obj.full else ''} |" for m, f in obj.frequency.items()]
    return (f"## {fig.title}\n\n{fig.caption}\n\n| member | frequency | in full-data circuit |\n|---|---|---|\n"
            + "\n".join(rows) + "\n")
