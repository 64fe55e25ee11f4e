"""Plots of a result: layer x position and layer x head heatmaps, forest plots, random-set histograms.

matplotlib through the Agg canvas directly (``matplotlib.figure.Figure`` + ``FigureCanvasAgg``): works
headless, never touches pyplot's global figure list or the user's interactive backend, and every
figure is cleared after it is saved.  Each function returns PNG bytes (``fmt="png"``) or SVG text
(``fmt="svg"``, ready to inline in HTML).

`figures(result)` picks the plots from the sites: a layer x head heatmap per position for head
sweeps, a layer x position heatmap per component for residual / attention / MLP sweeps, a forest
plot of the largest estimates (saying how many are omitted), and for `beats_random` the histogram of
the random site sets.
"""
from __future__ import annotations

import io
import math
import re
import textwrap
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..spec.sites import HEAD_COMPONENTS
from ..verdict import INCONCLUSIVE, NULL, REFUTED, SUPPORTED, VERDICTS
from .table import VERDICT_STYLE, margin_units, mean_gap
from .table import fmt as _fmtnum

__all__ = ["Figure", "figures", "heatmap", "forest", "random_histogram", "MARKERS"]

MARKERS = {SUPPORTED: "o", REFUTED: "X", NULL: "s", INCONCLUSIVE: "D"}
_FADE = (1.0, 1.0, 1.0, 0.6)        # white veil over cells that are not significant
_MISSING = "#e6e6e6"
_MARKS = ("Supported cells are in full colour and outlined; refuted cells are in full colour and carry \u00d7; "
          "null cells are faded; inconclusive (not significant) cells are faded and hatched.")


@dataclass(frozen=True)
class Figure:
    """One rendered plot: `data` is PNG bytes or SVG text; `caption` says what is shown and what is left out."""

    kind: str          # "layer_position" | "layer_head" | "forest" | "random"
    title: str
    caption: str
    data: bytes | str
    mime: str          # "image/png" | "image/svg+xml"


# ----------------------------------------------------------------------------- canvas

def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure
    fig = MplFigure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, fmt: str, dpi: int = 100):
    buf = io.BytesIO()
    try:
        if fmt == "png":
            fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
            return buf.getvalue()
        if fmt == "svg":
            fig.savefig(buf, format="svg", facecolor="white", metadata={"Date": None})  # deterministic
            text = buf.getvalue().decode("utf-8")
            # inline-ready: drop the XML prolog and the DOCTYPE (which names an external DTD)
            text = re.sub(r"<\?xml[^>]*\?>\s*", "", text)
            text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)
            return text
        raise ValueError(f"fmt must be 'png' or 'svg', got {fmt!r}")
    finally:
        fig.clear()


def _rgba(hex_color: str, alpha: float = 1.0):
    from matplotlib.colors import to_rgba
    return to_rgba(hex_color, alpha)


# ----------------------------------------------------------------------------- helpers

def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _as_int(x):
    if x is None or x is pd.NA:
        return None
    try:
        if isinstance(x, float) and math.isnan(x):
            return None
        return int(x)
    except (TypeError, ValueError):
        return None


def _axis_values(series: pd.Series, kind: str) -> list:
    """Distinct values of an axis: layers/heads sorted as ints, positions in order of first appearance."""
    if kind in ("layer", "head"):
        vals = sorted({_as_int(v) for v in series if _as_int(v) is not None})
        return vals
    seen: list = []
    for v in series:
        s = str(v)
        if s not in seen:
            seen.append(s)
    return seen


def _key(v, kind):
    return _as_int(v) if kind in ("layer", "head") else str(v)


def _short(label: str, n: int = 42) -> str:
    return label if len(label) <= n else label[: n - 1] + "\u2026"


def _cell_text(z: float, decimals: int) -> str:
    if not np.isfinite(z):
        return "n/a"
    text = f"{z:.{decimals}f}"
    return "0" if float(text) == 0 else text


def _ticks(ax, axis: str, labels: list, max_ticks: int = 40):
    n = len(labels)
    step = max(1, math.ceil(n / max_ticks))
    idx = list(range(0, n, step))
    if axis == "x":
        ax.set_xticks(idx)
        ax.set_xticklabels([str(labels[i]) for i in idx], rotation=0 if n <= 16 else 90)
    else:
        ax.set_yticks(idx)
        ax.set_yticklabels([str(labels[i]) for i in idx])


# ----------------------------------------------------------------------------- heatmap

def heatmap(table: pd.DataFrame, row: str = "layer", col: str = "position", *, title: str = "",
            value_label: str = "estimate", fmt_: str = "png", annotate: bool | None = None,
            scale: float | None = None):
    """Heatmap of `estimate` over `row` x `col` (e.g. layer x position, layer x head).

    Colour = estimate on a diverging scale centred at 0.  Cells whose verdict is not significant are
    veiled: inconclusive cells hatched, null cells marked with a square; refuted cells carry an x.
    Untested cells are light grey.  A legend under the plot explains the marks.  The colour scale runs
    to +-max(|estimate|, 0.1 * `scale`); pass the size of a full effect (the clean-corrupt gap, or 1 for
    a recovery) so that estimates that are all ~0 stay pale instead of being stretched to full colour.
    """
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.lines import Line2D
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Patch, Rectangle

    rows = _axis_values(table[row], row)
    cols = _axis_values(table[col], col)
    R, C = len(rows), len(cols)
    ri = {v: i for i, v in enumerate(rows)}
    cj = {v: j for j, v in enumerate(cols)}
    Z = np.full((R, C), np.nan)
    tested = np.zeros((R, C), dtype=bool)
    verdict = np.full((R, C), "", dtype=object)
    for _, r in table.iterrows():
        i, j = ri.get(_key(r[row], row)), cj.get(_key(r[col], col))
        if i is None or j is None:
            continue
        Z[i, j] = _num(r["estimate"])
        tested[i, j] = True
        verdict[i, j] = str(r["verdict"])
    finite = Z[np.isfinite(Z)]
    vmax = float(np.abs(finite).max()) if finite.size else 0.0
    if scale is not None and np.isfinite(scale):
        vmax = max(vmax, 0.1 * abs(float(scale)))
    else:  # no natural scale: let the CIs set it, so that noise around 0 is not painted as an effect
        bounds = pd.to_numeric(pd.concat([table["ci_low"], table["ci_high"]]), errors="coerce").to_numpy(float)
        bounds = bounds[np.isfinite(bounds)]
        if bounds.size:
            vmax = max(vmax, float(np.abs(bounds).max()))
    vmax = vmax if vmax > 0 else 1.0

    width = min(max(2.8 + 0.66 * C, 6.2), 14.0)
    height = min(max(1.9 + 0.46 * R, 3.2), 13.0)
    fig = _new_figure(width, height)
    ax = fig.add_subplot(1, 1, 1)
    import matplotlib
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad=_MISSING)
    im = ax.imshow(np.ma.masked_invalid(Z), cmap=cmap, norm=TwoSlopeNorm(0.0, -vmax, vmax), aspect="auto",
                   interpolation="nearest")
    cb = fig.colorbar(im, ax=ax, shrink=0.9, pad=0.02)
    cb.set_label(textwrap.fill(_short(value_label.split(" (")[0], 60), 30), fontsize=9)

    if annotate is None:
        annotate = R * C <= 160
    font = 8 if C <= 12 else 6.5
    decimals = int(min(max(0, 1 - math.floor(math.log10(vmax))), 6))
    present = {v for v in verdict[tested]}
    faded = tested & np.isin(verdict, [INCONCLUSIVE, NULL])
    if faded.any():                      # one white veil image over the non-significant cells
        veil = np.zeros((R, C, 4))
        veil[faded] = _FADE
        ax.imshow(veil, aspect="auto", interpolation="nearest")
    inc = np.argwhere(tested & (verdict == INCONCLUSIVE))
    if len(inc):
        ax.add_collection(PatchCollection([Rectangle((j - 0.5, i - 0.5), 1, 1) for i, j in inc], facecolor="none",
                                          edgecolor=_rgba(VERDICT_STYLE[INCONCLUSIVE]["color"], 0.55), hatch="///",
                                          linewidth=0))
    sig = np.argwhere(tested & (verdict == SUPPORTED))
    if len(sig):                         # supported cells: outlined
        ax.add_collection(PatchCollection([Rectangle((j - 0.45, i - 0.45), 0.9, 0.9) for i, j in sig],
                                          facecolor="none", edgecolor="#1f2328", linewidth=1.6))
    ref = np.argwhere(tested & (verdict == REFUTED))
    if len(ref):
        ax.scatter(ref[:, 1] + 0.3, ref[:, 0] - 0.25, marker="x", s=16 if R * C > 100 else 24,
                   c=VERDICT_STYLE[REFUTED]["color"], linewidths=1.3, zorder=3)
    for i, j in np.argwhere(tested):
        z = Z[i, j]
        if annotate:
            strong = np.isfinite(z) and abs(z) / vmax > 0.6 and not faded[i, j]
            ax.text(j, i + 0.05, _cell_text(z, decimals), ha="center", va="center",
                    fontsize=font, color="white" if strong else "#1f2328")
        elif not np.isfinite(z):
            ax.text(j, i, "n/a", ha="center", va="center", fontsize=6, color="#57606a")
    # thin grid between cells
    ax.set_xticks(np.arange(-0.5, C, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, R, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)
    _ticks(ax, "x", cols)
    _ticks(ax, "y", rows)
    ax.set_xlabel(col)
    ax.set_ylabel(row)
    if title:
        ax.set_title(title, fontsize=10)

    handles = []
    if SUPPORTED in present:
        handles.append(Patch(facecolor="#f4a582", edgecolor="#1f2328", linewidth=1.5,
                             label="supported (full colour, outlined)"))
    if REFUTED in present:
        handles.append(Line2D([], [], marker="x", color=VERDICT_STYLE[REFUTED]["color"], linestyle="none",
                              markersize=6, markeredgewidth=1.3, label="refuted (\u00d7)"))
    if NULL in present:
        handles.append(Patch(facecolor="#fbe3d9", edgecolor="#bbbbbb", linewidth=0.5, label="null (faded)"))
    if INCONCLUSIVE in present:
        handles.append(Patch(facecolor="#fbe3d9", edgecolor=VERDICT_STYLE[INCONCLUSIVE]["color"], hatch="///",
                             linewidth=0.5, label="inconclusive (faded, hatched)"))
    if (~tested).any():
        handles.append(Patch(facecolor=_MISSING, edgecolor="#999999", label="not tested"))
    if handles:
        ncol = min(len(handles), 2 if width < 6.5 else (3 if width < 9 else 5))
        fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)
    return _save(fig, fmt_)


# ----------------------------------------------------------------------------- forest

def forest(table: pd.DataFrame, *, k: int = 30, title: str = "", value_label: str = "estimate",
           threshold: float | None = None, threshold_label: str = "", band: float | None = None,
           band_label: str = "", fmt_: str = "png", confidence_level: float = 0.95):
    """Forest plot: one row per site with its estimate and CI, coloured and shaped by verdict.

    Shows the `k` sites with the largest |estimate| (largest at the top); the caller says how many
    were omitted.  `threshold` draws the claim's line (e.g. recovery tau), `band` a +-margin region.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    t = table.copy()
    t["_est"] = pd.to_numeric(t["estimate"], errors="coerce")
    t = t[np.isfinite(t["_est"])]
    t = t.reindex(t["_est"].abs().sort_values(ascending=False, kind="stable").index).iloc[:k]
    n = len(t)
    fig = _new_figure(8.6, min(1.9 + 0.27 * max(n, 1), 14.0))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(n)[::-1]
    verdicts = t["verdict"].astype(str).to_numpy()
    est = t["_est"].to_numpy(dtype=float)
    lo = pd.to_numeric(t["ci_low"], errors="coerce").to_numpy(dtype=float)
    hi = pd.to_numeric(t["ci_high"], errors="coerce").to_numpy(dtype=float)
    present = [v for v in VERDICTS if v in set(verdicts)]
    for v in present + sorted(set(verdicts) - set(VERDICTS)):
        m = verdicts == v
        color = VERDICT_STYLE.get(v, {"color": "#57606a"})["color"]
        ok = m & np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            ax.hlines(y[ok], lo[ok], hi[ok], color=color, linewidth=1.8)
            ax.vlines(np.r_[lo[ok], hi[ok]], np.r_[y[ok], y[ok]] - 0.18, np.r_[y[ok], y[ok]] + 0.18, color=color,
                      linewidth=1.2)
        ax.scatter(est[m], y[m], marker=MARKERS.get(v, "o"), c=color, s=48, edgecolors="white", linewidths=0.7,
                   zorder=3)
    handles = []
    if band is not None and np.isfinite(band) and band > 0:
        ax.axvspan(-band, band, color="#0969da", alpha=0.10, linewidth=0, zorder=0)
        handles.append(Patch(facecolor=_rgba("#0969da", 0.18), label=band_label or f"\u00b1{band:.3g}"))
    ax.axvline(0, color="#57606a", linewidth=0.9, zorder=1)
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="#24292f", linewidth=1.1, linestyle="--", zorder=1)
        handles.append(Line2D([], [], color="#24292f", linestyle="--", label=threshold_label or f"{threshold:g}"))
    ax.set_yticks(y)
    ax.set_yticklabels([_short(str(s)) for s in t["site"]], fontsize=8 if n <= 40 else 6.5)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(f"{_short(value_label, 60)} ({100 * confidence_level:g}% CI)", fontsize=9)
    ax.grid(axis="x", color="#d0d7de", linewidth=0.6)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title, fontsize=10)
    for v in VERDICTS:
        if v in present:
            handles.append(Line2D([], [], marker=MARKERS[v], color=VERDICT_STYLE[v]["color"], linestyle="-",
                                  markersize=7, label=v))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8,
                   frameon=False)
    return _save(fig, fmt_)


# ----------------------------------------------------------------------------- random site sets

def _histogram_bins(random: np.ndarray, observed: float) -> np.ndarray:
    """Bin edges: 10-40 bins over the random values, but never narrower than 1/60 of the plotted range, so a
    narrow random distribution far from the observed value still shows as a visible bar."""
    lo, hi = float(random.min()), float(random.max())
    span = max(hi, observed) - min(lo, observed) if np.isfinite(observed) else hi - lo
    n = min(40, max(10, len(random) // 5))
    width = max((hi - lo) / n, span / 60)
    if width <= 0:
        width = max(abs(lo), 1.0) * 0.02
    k = max(1, int(np.ceil((hi - lo) / width)))
    start = (lo + hi) / 2 - k * width / 2
    return start + width * np.arange(k + 1)


def random_histogram(observed: float, random: np.ndarray, *, verdict: str = "", title: str = "",
                     value_label: str = "normalised joint effect", fmt_: str = "png"):
    """Histogram of the random site sets' effects with the observed site set's effect as a line."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    random = np.asarray(random, dtype=float)
    random = random[np.isfinite(random)]
    fig = _new_figure(7.0, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(random, bins=_histogram_bins(random, observed) if len(random) else 10, color="#8c959f",
            edgecolor="white")
    color = VERDICT_STYLE.get(verdict, {"color": "#24292f"})["color"]
    if np.isfinite(observed):
        ax.axvline(observed, color=color, linewidth=2.2)
    ax.set_xlabel(value_label, fontsize=9)
    ax.set_ylabel("random site sets", fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    k = int(np.count_nonzero(random >= observed)) if np.isfinite(observed) else 0
    fig.legend(handles=[Patch(facecolor="#8c959f", label=f"{len(random)} random site sets ({k} \u2265 observed)"),
                        Line2D([], [], color=color, linewidth=2.2,
                               label=f"observed {_fmtnum(observed)}" + (f" ({verdict})" if verdict else ""))],
               loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return _save(fig, fmt_)


# ----------------------------------------------------------------------------- choice of plots

def _mime(fmt_: str) -> str:
    return "image/png" if fmt_ == "png" else "image/svg+xml"


def _heatmap_panels(t: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame, str, str]]:
    """(kind, title, rows, row axis, column axis) for every grid the sites span: one layer x head grid per
    position of each head component, one layer x position grid per other component; grids of one site
    are skipped (the forest plot shows them)."""
    panels = []
    for comp in [c for c in dict.fromkeys(t["component"]) if isinstance(c, str)]:
        g = t[t["component"] == comp]
        if comp in HEAD_COMPONENTS:
            for pos in _axis_values(g["position"], "position"):
                gp = g[g["position"].astype(str) == pos]
                if len(gp) >= 2:
                    panels.append(("layer_head", f"{comp} @ position {pos}: layer \u00d7 head", gp, "layer", "head"))
        elif len(g) >= 2:
            panels.append(("layer_position", f"{comp}: layer \u00d7 position", g, "layer", "position"))
    return panels


def _heatmaps(result, t, kind, quantity, fmt, max_heatmaps, skipped) -> list[Figure]:
    if kind == "recovers":
        scale = 1.0                                  # a full recovery
    else:
        gap = mean_gap(result)                       # a full effect in metric units
        scale = abs(gap) if gap is not None and np.isfinite(gap) and gap != 0 else None
    iv = result.effects.intervention
    runs = f"{iv.target_run} and {iv.base_run} runs" if iv is not None else "target and base runs"
    if scale is None:
        scale_note = ""
    elif kind == "recovers":
        scale_note = " (scale: the largest |estimate|, at least \u00b10.1)"
    else:
        scale_note = (f" (scale: the largest |estimate|, at least \u00b1{0.1 * scale:.3g} = 0.1 \u00d7 the mean "
                      f"gap between the {runs})")
    out = []
    for i, (fig_kind, title, g, row, col) in enumerate(_heatmap_panels(t)):
        if i >= max_heatmaps:
            skipped.append(title.split(":")[0])
            continue
        n_rows, n_cols = len(_axis_values(g[row], row)), len(_axis_values(g[col], col))
        caption = (f"{len(g)} sites ({n_rows} {row}s \u00d7 {n_cols} {col}s). Colour = {quantity}{scale_note}. "
                   + _MARKS)
        data = heatmap(g, row, col, title=title, value_label=quantity, fmt_=fmt, scale=scale)
        out.append(Figure(fig_kind, title, caption, data, _mime(fmt)))
    return out


def figures(result, *, fmt: str = "png", max_forest: int = 30, max_heatmaps: int = 8) -> list[Figure]:
    """The plots for one result, chosen from its sites (see the module docstring)."""
    e = result.evaluation
    t = result.table
    if t is None or len(t) == 0:
        return []
    out: list[Figure] = []
    quantity = e.quantity
    claim = e.claim
    kind = getattr(claim, "kind", "")

    skipped: list[str] = []
    if not result.effects.joint:
        for fig in _heatmaps(result, t, kind, quantity, fmt, max_heatmaps, skipped):
            out.append(fig)

    # forest plot of the largest estimates
    est = pd.to_numeric(t["estimate"], errors="coerce")
    n_finite = int(np.isfinite(est).sum())
    n_undef = len(t) - n_finite
    if n_finite and max_forest > 0:
        shown = min(max_forest, n_finite)
        threshold = band = None
        tlabel = blabel = ""
        if kind == "recovers":
            threshold, tlabel = float(claim.at_least), f"claimed recovery \u03c4 = {claim.at_least:g}"
        elif kind in ("has_effect", "no_effect"):
            band = margin_units(result)
            if band is not None:
                blabel = f"equivalence margin \u00b1{band:.3g}"
        caption = f"Estimates with {100 * e.confidence_level:g}% confidence intervals"
        if n_finite > shown:
            caption += (f": the {shown} sites with the largest |estimate| of {len(t)}; {n_finite - shown} more are "
                        "omitted here and listed in the table / JSON")
        else:
            caption += f" for all {shown} plotted site(s)"
        if n_undef:
            caption += f"; {n_undef} site(s) with an undefined estimate cannot be plotted (see the table)"
        caption += "."
        if skipped:
            caption += (f" {len(skipped)} heatmap(s) not drawn (max_heatmaps={max_heatmaps}: "
                        f"{', '.join(skipped[:6])}{', ...' if len(skipped) > 6 else ''}); their sites are in the "
                        "table and the JSON.")
        title = "Forest plot" + (f" (top {shown} of {len(t)} by |estimate|)" if n_finite > shown else "")
        out.append(Figure("forest", title, caption,
                          forest(t, k=max_forest, title=title, value_label=quantity, threshold=threshold,
                                 threshold_label=tlabel, band=band, band_label=blabel, fmt_=fmt,
                                 confidence_level=e.confidence_level), _mime(fmt)))

    # beats_random: where the site set falls among random site sets
    fx = result.effects
    if fx.joint and fx.random_values is not None:
        gap = mean_gap(result)
        rv = np.asarray(fx.random_values, dtype=float)
        if gap is not None and np.isfinite(gap) and gap != 0 and rv.ndim == 2 and rv.shape[1]:
            rand = (rv - np.asarray(fx.base, dtype=float)[:, None]).mean(axis=0) / gap
            observed = _num(t["estimate"].iloc[0])
            title = "Joint effect vs random site sets of the same size"
            out.append(Figure("random", title,
                              f"Normalised joint effect of the site set (line) against {rv.shape[1]} random site sets "
                              "of the same size (histogram).",
                              random_histogram(observed, rand, verdict=str(t["verdict"].iloc[0]), title=title,
                                               fmt_=fmt), _mime(fmt)))
    return out
