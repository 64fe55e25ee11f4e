"""Calibration panel: how often `ci.evaluate` returns a wrong verdict, on data shaped like real patching effects.

Part 1, synthetic (the truth is known exactly).  Per-prompt gaps g_i ~ N(2, 0.5^2) (target - base); per-prompt
effects e_i = values_i - base_i of these shapes:

    normal, t3            symmetric noise (sd 1, t with 3 df)
    lognormal             right-skewed noise, lognormal(0, 1.2) centred (population skewness about 14)
    aon p                 all-or-nothing: each prompt moves by its full gap with probability p (p in .1 .5 .8 .95)
    sparse 5% / 10%       the same with p = .05 / .1 (few prompts move)
    clustered 6 / 12      a strong template effect: e_i = u_template + eps_i, u ~ N(0, 1), eps ~ N(0, 0.5^2)

Every claim is evaluated at its boundary, where a decided verdict is wrong:

    has_effect(increase / decrease)   true mean effect exactly 0           wrong: supported (either direction)
    no_effect(0.1)  under the null    true mean effect exactly 0           wrong: refuted
    recovers(tau)                     true recovery exactly tau            wrong: supported, and refuted
    no_effect(0.1) at the margin      true effect exactly 0.1 x mean gap   wrong: supported
    has_effect at the margin          true effect exactly 0.1 x mean gap   wrong: null

(the margin is relative, so the gap is estimated from the same prompts, as in use).  Each cell runs many
datasets (columns of one `Effects`, in blocks that share one draw of the gaps, `correction="none"` so
every column is judged on its own).  The attainable floor of a cell is the probability of a sample that no
test can tell from the alternative (Bahadur & Savage), the larger of two parts:

    moved       for all-or-nothing/sparse data, a sample in which every prompt moved (p^n) or none did
                ((1 - p)^n) where that sample is exactly what some alternative produces (exact formula);
    normal      measured on the cell's own datasets: the fraction whose contrast (e, e - tau g, e -/+ margin g)
                passes as normal (Shapiro-Wilk p > 0.1) AND is rejected in the wrong direction by the
                one-sample t-test at alpha.  Such a sample is what a normal alternative produces; a test with
                the t-test's power on normal data must reject it.  A skewed population (lognormal) makes
                these samples when it missed its tail; for symmetric shapes this part is about alpha or below.

A cell passes when its rate <= max(alpha, moved + alpha (1 - moved), normal) + 2 SE: a test that errs on
every "moved" sample and at level alpha on the others; the normal part already contains the t-test's own
alpha-level rejections, so nothing is added to it.

Power cells: symmetric and all-or-nothing real effects; the fraction `supported`.

Part 2, the real model stories260K (../shared/models; skipped when absent): a scan of 400 random-token prompts
(clean vs the same prompt with its last 3 tokens replaced; answer/wrong = the model's top token on clean /
corrupt), then repeated samples of n prompts: recovers(tau) at each site's recovery on all 400 (the
population), and has_effect on effects shifted to population mean exactly 0 -- naturally skewed effects.

    python -m benchmarks.calibration [--small]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, machine, md_table, versions, write_json

import causalinterp as ci
from causalinterp.engine.effects import Effects
from causalinterp.spec.sites import Site

ALPHA = 0.05
SHAPES = ["normal", "t3", "lognormal", "aon 0.1", "aon 0.5", "aon 0.8", "aon 0.95", "sparse 5%", "sparse 10%",
          "clustered 6", "clustered 12"]
NS = [6, 10, 20, 40, 100]
MARGIN = 0.1
LN_SIGMA = 1.2
LN_MEAN = float(np.exp(LN_SIGMA ** 2 / 2))


def _p_of(shape: str) -> float | None:
    if shape.startswith("aon"):
        return float(shape.split()[1])
    if shape.startswith("sparse"):
        return float(shape.split()[1].rstrip("%")) / 100
    return None


def _clusters(shape: str, n: int):
    if not shape.startswith("clustered"):
        return None
    return np.arange(n) % int(shape.split()[1])


def noise(shape: str, n: int, k: int, g: np.ndarray, rng) -> np.ndarray:
    """[n, k] per-prompt effects with population mean exactly 0 (gaps g [n])."""
    p = _p_of(shape)
    if p is not None:
        return g[:, None] * ((rng.random((n, k)) < p) - p)
    if shape == "normal":
        return rng.normal(0, 1, (n, k))
    if shape == "t3":
        return rng.standard_t(3, (n, k))
    if shape == "lognormal":
        return rng.lognormal(0, LN_SIGMA, (n, k)) - LN_MEAN
    if shape.startswith("clustered"):
        lab = _clusters(shape, n)
        u = rng.normal(0, 1, (lab.max() + 1, k))
        return u[lab] + rng.normal(0, 0.5, (n, k))
    raise ValueError(shape)


def recovery_effects(shape: str, n: int, k: int, g: np.ndarray, rng, tau: float) -> np.ndarray:
    """[n, k] effects whose population recovery E[e]/E[g] is exactly tau."""
    p = _p_of(shape)
    if p is not None:                               # each prompt recovers all (prob p = tau) or nothing
        return g[:, None] * (rng.random((n, k)) < p)
    if shape == "lognormal":                        # per-prompt recovery tau * LN / E[LN]: right-skewed
        return g[:, None] * tau * rng.lognormal(0, LN_SIGMA, (n, k)) / LN_MEAN
    return tau * g[:, None] + noise(shape, n, k, g, rng)


def _tau(shape: str) -> float:
    return _p_of(shape) or 0.5


def _effects(e: np.ndarray, g: np.ndarray, clusters) -> Effects:
    n, k = e.shape
    base = np.zeros(n)
    sites = tuple(Site("head_out", j // 64, j % 64, "end") for j in range(k))
    return Effects(values=e + base[:, None], clean=g.copy(), corrupt=base, sites=sites, base=base, target=g.copy(),
                   clusters=clusters)


def floors(shape: str, n: int) -> dict:
    """Attainable floor per (claim, wrong verdict): samples no test can tell from an alternative."""
    p = _p_of(shape)
    if p is None:
        return {}
    all1, all0 = p ** n, (1 - p) ** n
    # has_effect at 0, e = g (B - p): all moved -> uniform increase; none moved -> uniform decrease
    # recovers(p): all recovered -> recovery 1 > p; none -> 0 < p
    # at the margin (e = g (B - p + 0.1)): none moved and |0.1 - p| < 0.1 -> looks equivalent
    # no_effect under the null: none moved and p > 0.1 -> beyond the margin; all moved and 1 - p > 0.1
    return {("has_effect(increase) at 0", "supported"): all1, ("has_effect(decrease) at 0", "supported"): all0,
            ("recovers(tau) at tau", "supported"): all1, ("recovers(tau) at tau", "refuted"): all0,
            ("no_effect at margin", "supported"): all0 if abs(MARGIN - p) < MARGIN else 0.0,
            ("has_effect at margin", "null"): all0 if abs(MARGIN - p) < MARGIN else 0.0,
            ("no_effect at 0", "refuted"): (all0 if p > MARGIN else 0.0) + (all1 if 1 - p > MARGIN else 0.0)}


NORMAL_LOOKING_P = 0.1   # Shapiro-Wilk p above which a sample "passes as normal" (the `normal` floor)


def _passes_as_normal(x: np.ndarray) -> np.ndarray:
    """[k] whether each column of x [n, k] passes a Shapiro-Wilk test (p > NORMAL_LOOKING_P)."""
    from scipy import stats
    if x.shape[0] < 3:
        return np.zeros(x.shape[1], bool)
    ok = np.array([np.ptp(c) > 0 and stats.shapiro(c).pvalue > NORMAL_LOOKING_P for c in x.T])
    return ok


def _t_rejects(x: np.ndarray, alternative: str) -> np.ndarray:
    from scipy import stats
    with np.errstate(all="ignore"):
        p = stats.ttest_1samp(x, 0.0, alternative=alternative).pvalue
    return np.nan_to_num(p, nan=1.0) < ALPHA


def normal_floor(name: str, e: np.ndarray, g: np.ndarray, tau: float) -> np.ndarray:
    """[k] per dataset: passes as normal and the t-test rejects in the wrong direction of cell `name`."""
    G = g[:, None]
    def side(x, alt):
        return _passes_as_normal(x) & _t_rejects(x, alt)
    if name == "has_effect(increase) at 0":
        return side(e, "greater")
    if name == "has_effect(decrease) at 0":
        return side(e, "less")
    if name == "no_effect at 0":                         # refuted: beyond the margin in either direction
        return side(e - MARGIN * G, "greater") | side(e + MARGIN * G, "less")
    if name in ("no_effect at margin", "has_effect at margin"):   # supported / null: both equivalence tests
        return side(e + MARGIN * G, "greater") & side(e - MARGIN * G, "less")
    raise ValueError(name)


def _rates(ev, verdicts) -> dict:
    t = ev.table["verdict"].to_numpy()
    return {v: float(np.mean(t == v)) for v in verdicts} | {"inconclusive": float(np.mean(t == "inconclusive"))}


def panel_cell(shape: str, n: int, blocks: int, per_block: int, B: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    clusters = _clusters(shape, n)
    acc: dict = {}
    for _ in range(blocks):
        g = rng.normal(2.0, 0.5, n)
        kw = dict(alpha=ALPHA, correction="none", n_resamples=B, seed=int(rng.integers(1 << 30)))
        z = _effects(noise(shape, n, per_block, g, rng), g, clusters)
        mg = _effects(MARGIN * g[:, None] + noise(shape, n, per_block, g, rng), g, clusters)
        tau = _tau(shape)
        rc = _effects(recovery_effects(shape, n, per_block, g, rng, tau), g, clusters)
        floor_of = {"recovers(tau) at tau": lambda v: {
            "supported": _passes_as_normal(rc_d) & _t_rejects(rc_d, "greater"),
            "refuted": _passes_as_normal(rc_d) & _t_rejects(rc_d, "less")}[v]}
        rc_d = rc.values - rc.base[:, None] - tau * g[:, None]
        jobs = [("has_effect(increase) at 0", z, ci.claims.has_effect("increase"), ["supported"]),
                ("has_effect(decrease) at 0", z, ci.claims.has_effect("decrease"), ["supported"]),
                ("no_effect at 0", z, ci.claims.no_effect(MARGIN), ["refuted"]),
                ("recovers(tau) at tau", rc, ci.claims.recovers(tau), ["supported", "refuted"]),
                ("no_effect at margin", mg, ci.claims.no_effect(MARGIN), ["supported"]),
                ("has_effect at margin", mg, ci.claims.has_effect(), ["null"])]
        for name, eff, claim, wrong in jobs:
            r = _rates(ci.evaluate(eff, claim, **kw), wrong)
            for v in wrong + ["inconclusive"]:
                acc.setdefault((name, v), []).append(r[v])
            if clusters is None:                    # the normal-looking floor (clusters: not defined, 0)
                e = eff.values - eff.base[:, None]
                for v in wrong:
                    f = floor_of[name](v) if name in floor_of else normal_floor(name, e, g, tau)
                    acc.setdefault((name, v, "normal floor"), []).append(float(np.mean(f)))
    fl = floors(shape, n)
    rows = []
    for key, vals in acc.items():
        if len(key) == 3 or key[1] == "inconclusive":
            continue
        name, v = key
        S = blocks * per_block
        rate = float(np.mean(vals))
        se = float(np.sqrt(max(rate, ALPHA) * (1 - max(rate, ALPHA)) / S))
        moved = float(fl.get((name, v), 0.0))
        looks_normal = float(np.mean(acc.get((name, v, "normal floor"), [0.0])))
        # a test that errs on every "moved" sample and at alpha on the others; the normal part already
        # contains the t-test's alpha-level rejections
        floor = max(moved + ALPHA * (1 - moved), looks_normal)
        rows.append({"shape": shape, "n": n, "claim": name + (f" (tau {_tau(shape):g})" if "recovers" in name else ""),
                     "wrong verdict": v, "rate": rate, "SE": se, "floor (moved)": moved,
                     "floor (normal)": looks_normal, "floor": floor,
                     "abstained": float(np.mean(acc[(name, "inconclusive")])),
                     "ok": rate <= max(ALPHA, floor) + 2 * se})
    return rows


POWER = [  # (label, shape, n, claim, effects maker)
    ("has_effect(increase), normal, shift 0.5 sd", "normal", 20, "inc", 0.5),
    ("has_effect(increase), normal, shift 0.5 sd", "normal", 40, "inc", 0.5),
    ("has_effect(increase), t3, shift 0.5", "t3", 40, "inc", 0.5),
    ("recovers(0.5), normal noise, true recovery 0.75", "normal", 20, "rec", 0.75),
    ("recovers(0.5), normal noise, true recovery 0.75", "normal", 40, "rec", 0.75),
    ("recovers(0.5), all-or-nothing, 80% recover", "aon 0.8", 20, "rec", 0.8),
    ("recovers(0.5), all-or-nothing, 80% recover", "aon 0.8", 40, "rec", 0.8),
    ("recovers(0.5), all-or-nothing, 95% recover", "aon 0.95", 20, "rec", 0.95),
    ("recovers(0.5), all-or-nothing, 95% recover", "aon 0.95", 100, "rec", 0.95),
    ("has_effect(increase), all-or-nothing, 50% move", "aon 0.5", 10, "aon", 0.5),
    ("has_effect(increase), all-or-nothing, 50% move", "aon 0.5", 20, "aon", 0.5),
]


def power_cells(blocks: int, per_block: int, B: int, seed: int) -> list[dict]:
    rows = []
    for i, (label, shape, n, kind, x) in enumerate(POWER):
        rng = np.random.default_rng(seed + i)
        sup = []
        for _ in range(blocks):
            g = rng.normal(2.0, 0.5, n)
            if kind == "inc":
                e, claim = x + noise(shape, n, per_block, g, rng), ci.claims.has_effect("increase")
            elif kind == "aon":
                e, claim = g[:, None] * (rng.random((n, per_block)) < x), ci.claims.has_effect("increase")
            elif shape.startswith("aon"):
                e, claim = g[:, None] * (rng.random((n, per_block)) < x), ci.claims.recovers(0.5)
            else:
                e, claim = x * g[:, None] + noise(shape, n, per_block, g, rng), ci.claims.recovers(0.5)
            ev = ci.evaluate(_effects(e, g, None), claim, alpha=ALPHA, correction="none", n_resamples=B,
                             seed=int(rng.integers(1 << 30)))
            sup.append(float(np.mean(ev.table["verdict"] == "supported")))
        S = blocks * per_block
        p = float(np.mean(sup))
        rows.append({"cell": label, "n": n, "power (supported)": p, "SE": float(np.sqrt(p * (1 - p) / S))})
    return rows


# ----------------------------------------------------------------------------- real model

def _stories_dir() -> Path | None:
    import os
    for base in (ROOT.parent / "shared", Path(os.environ.get("CAUSALINTERP_SHARED", "/work/shared"))):
        d = base / "models" / "stories260K"
        if (d / "model.safetensors").exists():
            return d
    return None


def real_model(small: bool, B: int, seed: int = 0) -> dict:
    import torch
    d = _stories_dir()
    if d is None:
        return {"skipped": "stories260K not found (../shared/models/stories260K); real-model cells skipped"}
    model = ci.load_model(str(d))
    N, T = (120, 10) if small else (400, 12)
    g = torch.Generator().manual_seed(seed)
    V = model.vocab_size
    clean = torch.randint(3, V, (N, T), generator=g)
    corrupt = clean.clone()
    corrupt[:, -3:] = torch.randint(3, V, (N, 3), generator=g)
    with torch.no_grad():
        lc = model.hf(clean).logits[:, -1]
        lr = model.hf(corrupt).logits[:, -1]
    answer = lc.argmax(-1)
    wrong = lr.argmax(-1)
    same = answer == wrong
    wrong[same] = lr[same].topk(2, -1).indices[:, 1]
    data = ci.ContrastSet.from_tokens(clean, corrupt, answer=answer, wrong=wrong)
    sites = ci.sites.resid_pre(positions=[-3, -2, -1])
    eff = ci.scan(model, data, sites, progress=False)
    gap = eff.target - eff.base
    e = eff.values - eff.base[:, None]
    tau = e.mean(0) / gap.mean()
    keep = (tau > 0.02) & (tau < 1.45)
    e_shift = e - e.mean(0)                                     # population mean effect exactly 0 per site
    # every kept site rescaled to population recovery exactly 0.5 (same shape): one evaluate for all sites
    TAU = 0.5
    e_rec = e[:, keep] * (TAU / tau[keep])
    rng = np.random.default_rng(seed)
    draws = 20 if small else 60
    rows = []
    for n in ((10, 20) if small else (10, 20, 40)):
        wrong_rec, wrong_eff = [], []
        for _ in range(draws):
            idx = rng.integers(0, N, n)                          # sampling from the population of N prompts
            sub = lambda vals, sites=eff.sites: Effects(  # noqa: E731
                values=eff.base[idx][:, None] + vals, clean=eff.clean[idx], corrupt=eff.corrupt[idx], sites=sites,
                base=eff.base[idx], target=eff.target[idx])
            kw = dict(alpha=ALPHA, correction="none", n_resamples=B, seed=int(rng.integers(1 << 30)))
            kept = tuple(s for s, k in zip(eff.sites, keep) if k)
            vr = ci.evaluate(sub(e_rec[idx], kept), ci.claims.recovers(TAU), **kw).table["verdict"]
            wrong_rec.append(float(np.mean(vr.isin(["supported", "refuted"]))))
            ve = ci.evaluate(sub(e_shift[idx]), ci.claims.has_effect(), **kw).table["verdict"]
            wrong_eff.append(float(np.mean(ve == "supported")))
        for name, vals, bound in (
                ("recovers(0.5) at population recovery 0.5 (effects rescaled): supported or refuted", wrong_rec,
                 2 * ALPHA),
                ("has_effect at population mean 0 (effects shifted): supported", wrong_eff, ALPHA)):
            se = float(np.std(vals, ddof=1) / np.sqrt(draws))
            rows.append({"cell": name, "n": n, "sites": int(keep.sum()) if "recovers" in name else len(eff.sites),
                         "draws": draws, "rate": float(np.mean(vals)), "SE (over draws)": se,
                         "bound": bound, "ok": float(np.mean(vals)) <= bound + 2 * se})
    skew = [float(((x - x.mean()) ** 3).mean() / x.std() ** 3) for x in e.T if x.std() > 0]
    return {"model": "stories260K", "prompts": N, "sites": len(eff.sites), "rows": rows,
            "median |skewness| of per-prompt effects": float(np.median(np.abs(skew)))}


# ----------------------------------------------------------------------------- main

def main(small: bool = False, real: bool = True) -> dict:
    t0 = time.perf_counter()
    B = 499 if small else 999
    shapes = ["normal", "lognormal", "aon 0.8", "sparse 10%", "clustered 6"] if small else SHAPES
    ns = [40] if small else NS
    blocks, per_block = (2, 50) if small else (4, 100)
    rows = []
    for i, shape in enumerate(shapes):
        for n in ns:
            if shape.startswith("clustered") and n < 2 * int(shape.split()[1]):
                continue
            rows += panel_cell(shape, n, blocks, per_block, B, seed=1000 * i + n)
        print(f"  {shape}: {time.perf_counter() - t0:.0f} s", flush=True)
    power = power_cells(*((2, 50) if small else (4, 100)), B, seed=77)
    real_rows = real_model(small, B) if real else {"skipped": "not run (real=False)"}
    out = {"benchmark": "calibration", "small": small, "alpha": ALPHA, "n_resamples": B,
           "datasets per cell": blocks * per_block, "rows": rows, "power": power, "real_model": real_rows,
           "cells": len(rows), "cells ok": int(sum(r["ok"] for r in rows)), "machine": machine(),
           "versions": versions(), "seconds": time.perf_counter() - t0}
    write_json("calibration_small" if small else "calibration", out)
    return out


def to_markdown(r: dict) -> str:
    bad = [x for x in r["rows"] if not x["ok"]]
    cols = ["shape", "n", "claim", "wrong verdict", "rate", "SE", "floor (moved)", "floor (normal)", "floor",
            "abstained", "ok"]
    text = ("## Calibration panel: wrong verdicts at the boundary\n\n"
            f"`python -m benchmarks.calibration{' --small' if r['small'] else ''}`: synthetic per-prompt effects "
            f"through `ci.evaluate`, alpha {r['alpha']}, {r['n_resamples']} resamples, {r['datasets per cell']} "
            "datasets per cell (see the module docstring for the shapes). A cell is ok when its wrong-verdict rate "
            "<= floor + 2 SE, `floor` = max(alpha, `floor (moved)` + alpha (1 - `floor (moved)`), `floor (normal)`): "
            "`floor (moved)` is the probability of a sample in which every prompt or none moved, `floor (normal)` "
            "the measured fraction that passes as normal (Shapiro-Wilk p > 0.1) and that a t-test rejects in the "
            "wrong direction (see the module docstring); `abstained` is the fraction `inconclusive` (not an error). "
            f"{r['cells ok']} of {r['cells']} cells ok.\n\n")
    if bad:
        text += "Cells over the bound:\n\n" + md_table(bad, cols) + "\n"
    text += "<details><summary>All cells</summary>\n\n" + md_table(r["rows"], cols) + "\n</details>\n\n"
    text += "Power (fraction `supported` on real effects):\n\n" + md_table(r["power"]) + "\n"
    rm = r["real_model"]
    if "skipped" in rm:
        text += f"Real model: {rm['skipped']}.\n"
    else:
        text += (f"Real model {rm['model']}: {rm['prompts']} random-token prompts, {rm['sites']} resid_pre sites "
                 f"(median |skewness| of per-prompt effects {rm['median |skewness| of per-prompt effects']:.2g}); "
                 "samples of n prompts from that population. Rates pool all sites; ok when rate <= bound + 2 SE "
                 "(recovers counts both wrong directions, each at alpha).\n\n" + md_table(rm["rows"]))
    return text


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="a few cells, small sizes (about a minute), for CI")
    ap.add_argument("--no-real", action="store_true", help="skip the stories260K cells")
    a = ap.parse_args()
    print(to_markdown(main(a.small, real=not a.no_real)))
