"""Report tables: the per-site table sorted for reading, verdict counts, and reproduction details.

Pure pandas/numpy; no plotting and no markup.  `html.py` and `markdown.py` format what these return,
so both reports show the same rows, counts and provenance.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from ..verdict import INCONCLUSIVE, NULL, REFUTED, SUPPORTED, VERDICTS

__all__ = ["VERDICT_STYLE", "FLAG_HELP", "VERDICT_HELP", "sorted_table", "top_rows", "verdict_counts",
           "flag_counts", "reproduction", "site_summary", "estimate_text", "fmt", "fmt_p", "margin_units",
           "mean_gap"]

# One colour, symbol and label per verdict, shared by the HTML badges and the plots.  Null and
# inconclusive get strong colours of their own (never grey): they are results, not absences.
VERDICT_STYLE = {
    SUPPORTED: {"color": "#1a7f37", "light": "#dafbe1", "symbol": "\u2714", "label": "SUPPORTED"},
    REFUTED: {"color": "#cf222e", "light": "#ffebe9", "symbol": "\u2716", "label": "REFUTED"},
    NULL: {"color": "#0550ae", "light": "#ddf4ff", "symbol": "\u2205", "label": "NULL"},
    INCONCLUSIVE: {"color": "#9a6700", "light": "#fff8c5", "symbol": "?", "label": "INCONCLUSIVE"},
}
_UNKNOWN_STYLE = {"color": "#57606a", "light": "#f6f8fa", "symbol": "\u2022", "label": "UNKNOWN"}

VERDICT_HELP = {
    SUPPORTED: "the data show the claim (corrected p < alpha, or an exact answer)",
    REFUTED: "the data show the opposite of the claim",
    NULL: "the data show there is no effect (equivalent to zero within the margin)",
    INCONCLUSIVE: "the data cannot tell; the reason says why",
}

FLAG_HELP = {
    "zero-variance": "every prompt gives the same value, so the estimate is exact (no test needed)",
    "underpowered": "too few prompts/resamples: even the smallest attainable p-value cannot reach the threshold",
    "undefined": "the quantity is undefined (e.g. clean and corrupt do not differ)",
    "unstable-gap": "the clean-corrupt gap is not reliably non-zero, so a recovery ratio is unreliable",
    "skewed": "the per-prompt values are too skewed for this many prompts to trust a test of their mean; the "
              "reason says how many prompts would do",
    "selected-on-same-data": "the sites were chosen on these same prompts; confirm on held-out prompts",
}

_RANK = {SUPPORTED: 0, REFUTED: 1, INCONCLUSIVE: 2, NULL: 3}


def style(verdict: str) -> dict:
    return VERDICT_STYLE.get(str(verdict), _UNKNOWN_STYLE)


# ----------------------------------------------------------------------------- numbers

def _finite(x) -> bool:
    try:
        return x is not None and x is not pd.NA and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def fmt(x, digits: int = 3) -> str:
    """A number with `digits` significant digits; "∞" for an unbounded CI end; "–" for missing/NaN."""
    if isinstance(x, (int, float)) and math.isinf(x):
        return "\u221e" if x > 0 else "\u2212\u221e"
    if not _finite(x):
        return "\u2013"
    if float(x) == 0:
        return "0"  # never "-0"
    return f"{float(x):.{digits}g}"


def fmt_p(x) -> str:
    """A p-value for people: 2 significant digits; below 1e-4 (no resampling test resolves less) "< 1e-4"."""
    if not _finite(x):
        return "\u2013"
    x = float(x)
    if x < 1e-4:
        return "< 1e-4"
    return f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}"


def estimate_text(result) -> str:
    """"0.42 [0.31, 0.55]" for a single-column result, else ""."""
    e = result.evaluation
    if e.estimate is None:
        return ""
    return f"{fmt(e.estimate)} [{fmt(e.ci_low)}, {fmt(e.ci_high)}]"


def mean_gap(result) -> float | None:
    """Mean (target - base) of the effects: the full effect the intervention could have."""
    fx = result.effects
    try:
        return float(np.mean(np.asarray(fx.target, dtype=float) - np.asarray(fx.base, dtype=float)))
    except Exception:  # noqa: BLE001
        return None


def margin_units(result) -> float | None:
    """The equivalence margin of a has_effect/no_effect claim in metric units (None if it has none)."""
    claim = result.evaluation.claim
    margin = getattr(claim, "margin", None)
    if margin is None:
        return None
    if getattr(claim, "relative", False):
        gap = mean_gap(result)
        if gap is None or not math.isfinite(gap) or gap == 0:
            return None
        return float(margin) * abs(gap)
    return float(margin)


# ----------------------------------------------------------------------------- the site table

def sorted_table(table: pd.DataFrame) -> pd.DataFrame:
    """The per-site table in reading order: supported, refuted, inconclusive, null; within each,
    smallest corrected p first, then largest |estimate|.  Nothing is dropped."""
    t = table.copy()
    if t.empty:
        return t
    rank = t["verdict"].map(lambda v: _RANK.get(v, 4))
    p = pd.to_numeric(t["p_adj"], errors="coerce").fillna(np.inf)
    est = -pd.to_numeric(t["estimate"], errors="coerce").abs().fillna(-np.inf)
    order = np.lexsort((np.arange(len(t)), est.to_numpy(), p.to_numpy(), rank.to_numpy()))
    return t.iloc[order].reset_index(drop=True)


def top_rows(table: pd.DataFrame, k: int | None) -> tuple[pd.DataFrame, int]:
    """The first `k` rows of the sorted table and how many rows were left out."""
    t = sorted_table(table)
    if k is None or len(t) <= k:
        return t, 0
    return t.iloc[:k], len(t) - k


def verdict_counts(table: pd.DataFrame) -> dict[str, int]:
    """Per-site verdict counts in the fixed order supported, refuted, null, inconclusive (zeros kept)."""
    counts = {v: 0 for v in VERDICTS}
    for v in table.get("verdict", []):
        counts[str(v)] = counts.get(str(v), 0) + 1
    return counts


def flag_counts(table: pd.DataFrame) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in table.get("flag", []):
        if not isinstance(f, str):
            continue
        for part in f.split(","):
            if part:
                out[part] = out.get(part, 0) + 1
    return out


def site_summary(result) -> str:
    """"12 sites: 3 supported, 9 inconclusive" (or the single site's label)."""
    t = result.table
    counts = verdict_counts(t)
    parts = [f"{k} {v}" for v, k in counts.items() if k]
    n = len(t)
    return f"{n} site{'s' if n != 1 else ''}: " + ", ".join(parts)


# ----------------------------------------------------------------------------- reproduction

def _data_summary(data: Any) -> Any:
    """The hypothesis' data, with token lists replaced by their size (the result JSON has them)."""
    if not isinstance(data, dict):
        return data
    if "clean" not in data:
        return data  # a task reference: {"task": ..., "n": ..., "seed": ...}
    clean = data.get("clean") or []
    lens = sorted({len(r) for r in clean})
    span = "" if not lens else (f", {lens[0]} tokens" if len(lens) == 1 else f", {lens[0]}..{lens[-1]} tokens")
    out = {"contrast set": (data.get("name") or "(unnamed)") + f": {len(clean)} prompt pairs{span}"}
    if data.get("positions"):
        out["named positions"] = sorted(data["positions"])
    if data.get("clusters") is not None:
        out["clusters"] = len(set(map(str, data["clusters"])))
    out["tokens"] = "in the result JSON (result.to_json())"
    return out


def _compact(x) -> str:
    if isinstance(x, (dict, list)):
        return json.dumps(x, default=str)
    return str(x)


def reproduction(result) -> list[tuple[str, str]]:
    """(label, value) pairs: everything needed to rerun the hypothesis and get the same numbers."""
    e, h, meta = result.evaluation, result.hypothesis or {}, result.meta or {}
    fx = result.effects
    rows: list[tuple[str, str]] = []
    model = meta.get("model") or h.get("model") or "not recorded"
    extra = [f"{k} {meta[k]}" for k in ("family", "n_layers", "n_heads") if meta.get(k) is not None]
    rows.append(("model", str(model) + (f" ({', '.join(extra)})" if extra else "")))
    if h.get("data") is not None:
        rows.append(("data", _compact(_data_summary(h["data"]))))
    n = f"{e.n_prompts} prompts"
    if e.n_clusters:
        n += f" in {e.n_clusters} clusters (cluster bootstrap / cluster sign-flips)"
    rows.append(("sample size", n))
    rows.append(("sites", _compact(h["sites"]) if h.get("sites") is not None else f"{len(fx.sites)} sites"))
    joint = " (one joint intervention on all sites)" if fx.joint else ""
    rows.append(("site columns", f"{len(result.table)}{joint}"))
    if h.get("intervention") is not None:
        rows.append(("intervention", _compact(h["intervention"])))
    elif fx.intervention is not None:
        rows.append(("intervention", _compact(fx.intervention.to_dict())))
    if h.get("metric") is not None:
        rows.append(("metric", _compact(h["metric"])))
    elif fx.metric is not None:
        rows.append(("metric", _compact(fx.metric.to_dict())))
    rows.append(("claim", f"{e.claim} {_compact(e.claim.to_dict())}"))
    rows.append(("quantity", e.quantity))
    rows.append(("test", _test_text(e)))
    rows.append(("alpha", f"{e.alpha:g}"))
    rows.append(("multiple-comparison correction", f"{e.correction} over {len(result.table)} site column(s)"))
    fam = meta.get("hypothesis_family")
    if isinstance(fam, dict) and fam.get("hypotheses", 1) > 1:
        rows.append(("family across hypotheses", f"{fam.get('correction')} over {fam.get('hypotheses')} hypotheses of "
                                                 f"the run; tested at alpha {float(fam.get('level', e.alpha)):.3g}"))
    rows.append(("resamples", f"{e.n_resamples} (sign-flips, studentised bootstrap and bootstrap CI)"))
    rows.append(("confidence level", f"{100 * e.confidence_level:g}%"))
    seeds = [f"evaluation seed {e.seed}"]
    if "seed" in h:
        seeds.append(f"hypothesis seed {h['seed']}")
    iv = h.get("intervention") or {}
    if isinstance(iv, dict) and "seed" in iv:
        seeds.append(f"intervention seed {iv.get('seed')}")
    if isinstance(h.get("data"), dict) and "seed" in h["data"]:
        seeds.append(f"data seed {h['data']['seed']}")
    rows.append(("seeds", ", ".join(seeds)))
    if fx.random_values is not None:
        rows.append(("random site sets", str(np.asarray(fx.random_values).shape[1])))
    if meta.get("seconds") is not None:
        rows.append(("run time", f"{float(meta['seconds']):.2f} s"))
    versions = meta.get("versions")
    if isinstance(versions, dict) and versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    else:
        rows.append(("versions", "not recorded"))
    return rows


def _test_text(e) -> str:
    kind = getattr(e.claim, "kind", "")
    if kind == "beats_random":
        return "rank of the joint normalised effect among random site sets, p = (1 + #random >= observed) / (n + 1)"
    robust = "p = max(sign-flip, studentised bootstrap) (docs/verdicts.md)"
    if kind == "no_effect":
        return (f"equivalence: two one-sided tests of linear contrasts, each {robust}; CI of the mean effect by "
                "inverting the sign-flip test")
    if kind == "recovers":
        return f"one-sided tests of recovery vs tau, {robust}; BCa bootstrap CI of the recovery (ratio of means)"
    return (f"test of the mean effect, {robust}; CI of the mean effect by inverting the sign-flip test; "
            "equivalence (two one-sided tests) to tell null from inconclusive")
