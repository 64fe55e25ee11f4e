"""Screening and prefix reuse: how close the attribution-patching screens come to the exact sweep, what they
cost, and what prefix reuse buys an exact sweep — in one process.

1. Agreement (per model): the exact `ci.scan` of head_out x positions against `ci.screen` with atp, atp* and
   ig (4 steps): Spearman correlation of the per-site mean effects, recall of the exact top-k, the largest
   exact effect the screen left outside its top-k ("largest miss"); cost in forward-pass equivalents
   (a backward counts 2; the exact sweep is one pass per site, plus the clean and corrupt runs) and
   wall-clock.  Models: the induction and IOI testbeds, stories260K (``../shared/models``; skipped where
   absent), and a GPT-2-small-shaped model with random weights.
2. Screen + confirm (`ci.confirm`, atp*): patch the screen's top-k and a random audit exactly; the sites a
   `has_effect` claim supports on them (over the k) against those it supports on the exact sweep
   (over every site), the audit's bound on missed sites above a threshold stated before looking
   (5% of the mean clean-corrupt gap), and the cost ratio.  On the induction testbed the known circuit
   (previous-token head 0.1, induction head 1.2) is the ground truth.  Both families are corrected with
   Westfall-Young maxT (999 sign flips suffice for it; Holm over 256 sites would need ~10^4).
3. Tools at GPT-2-small shape: the exact sweep of head_out at the last position by causalinterp (with and
   without prefix reuse), TransformerLens ``get_act_patch_attn_head_out_by_pos`` and a naive nnsight loop
   (`benchmarks.patching_speed`), their agreement, and the screens' wall-clock.
4. Prefix reuse x floor at GPT-2-small shape: head_out and resid_pre, at the last position and at every
   position, exact sweeps with the layer skip only and with prefix reuse, as multiples of the forward-only
   floor (`patching_speed.run_floor`: the same number of full forward passes with no intervention).

Sizes: ``--small`` a toy GPT-2 and few prompts (seconds, for the test); the default ("full") is sized for a
2-core shared CPU (10-20 minutes): GPT-2-small shape (12 layers, 12 heads, d=768, vocabulary 50,257) with
4 prompts of 16 tokens for the sweeps at one position and the tool comparison, and 2 prompts of 8 tokens for
the sweeps over every position (head_out x every position = 1,152 sites; the spec's 16 x 16 would take hours
here), testbeds with 32 prompts, stories260K with 16.  Torch runs on one thread.

    python -m benchmarks.screening [--small]
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time

import numpy as np
import torch

from benchmarks.common import machine, md_table, versions, write_json

import causalinterp as ci
from causalinterp import testbeds

ALPHA = 0.05
METHODS = ("atp", "atp*", "ig")
IG_STEPS = 4
SMALL = dict(n_layer=2, n_head=4, n_embd=32, vocab_size=60, n_prompts=4, seq_len=6)
FULL = dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_prompts=4, seq_len=16)
FULL_EVERY = dict(FULL, n_prompts=2, seq_len=8)   # every position: 1,152 head sites


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _mean_effect(eff) -> np.ndarray:
    return (eff.values - eff.base[:, None]).mean(0)


def agreement(exact, est, k: int) -> dict:
    """Spearman of mean effects, recall of the exact top-k in the screen's top-k, the largest miss."""
    from scipy import stats as st
    e, s = np.abs(_mean_effect(exact)), _mean_effect(est)
    score = np.abs(s)
    if est.meta.get("magnitude") is not None:
        score = np.maximum(score, est.meta["magnitude"].mean(0))
    top_e, top_s = set(np.argsort(-e)[:k]), set(np.argsort(-score)[:k])
    missed = [i for i in range(len(e)) if i not in top_s]
    miss = float(e[missed].max()) if missed else 0.0
    return {"spearman": float(st.spearmanr(np.abs(s), e).statistic), "recall_top_k": len(top_e & top_s) / k,
            "largest_miss": miss, "largest_miss_rel": miss / float(e.max()) if e.max() > 0 else 0.0}


def compare(name: str, model, data, sites, intervention, metric, k: int, log, confirm_args=None,
            known=None) -> dict:
    """Part 1 (and 2 where `confirm_args`) for one model."""
    exact, t_exact = _timed(lambda: ci.scan(model, data, sites, intervention=intervention, metric=metric,
                                            progress=False))
    m = exact.values.shape[1]
    row = {"model": name, "n_sites": m, "n_prompts": data.n, "k": k, "exact_fe": m + 2.0, "exact_seconds": t_exact}
    screens = {}
    for method in METHODS:
        est, t = _timed(lambda: ci.screen(model, data, sites, intervention=intervention, metric=metric,
                                          method=method, steps=IG_STEPS))
        screens[method] = est
        row[method] = {**agreement(exact, est, k), "fe": est.meta["forward_equivalents"], "seconds": t}
        log(f"  {name} {method}: spearman {row[method]['spearman']:.3f} recall@{k} {row[method]['recall_top_k']:.2f} "
            f"fe {row[method]['fe']:.1f} vs {m + 2} ({t:.2f}s vs {t_exact:.2f}s)")
    if confirm_args is not None:
        claim = ci.claims.has_effect()
        ev_exact = ci.evaluate(exact, claim, alpha=ALPHA, correction="maxT", n_resamples=999)
        supported_exact = sorted(exact.sites[i].label for i, v in enumerate(ev_exact.table["verdict"])
                                 if v == "supported")
        threshold = 0.05 * abs(float((exact.target - exact.base).mean()))
        conf, t_conf = _timed(lambda: ci.confirm(screens["atp*"], model, data, threshold=threshold, **confirm_args))
        ev = conf.evaluate(claim, alpha=ALPHA, correction="maxT", n_resamples=999)
        supported = sorted(conf.top.sites[i].label for i, v in enumerate(ev.table["verdict"]) if v == "supported")
        c = conf.cost
        row["confirm"] = {**confirm_args, "threshold": threshold, "supported_exact_sweep": supported_exact,
                          "supported_confirmed": supported, "same_supported": supported == supported_exact,
                          "fe_total": c["total"], "fe_exact_sweep": c["exact_sweep"],
                          "fe_ratio": c["exact_sweep"] / c["total"], "bound": conf.bound.to_dict(),
                          "screen_error": conf.error, "seconds": t_conf + row["atp*"]["seconds"]}
        if known is not None:
            row["confirm"]["known_circuit"] = known
        log(f"  {name} confirm: supported {supported} vs exact {supported_exact}; fe {c['total']:.1f} vs "
            f"{c['exact_sweep']:.0f} ({row['confirm']['fe_ratio']:.1f}x); missed above {threshold:.3g}: <= "
            f"{conf.bound.missed_upper}")
    return row


def testbed_rows(small: bool, log) -> list[dict]:
    rows = []
    n = 8 if small else 32
    model = testbeds.load("induction")
    data = testbeds.induction_data(n, seed=3)
    heads = [f"head_out L{l}.H{h}" for l, h in testbeds.card("induction")["circuit_heads"]]
    rows.append(compare("induction testbed", model, data, ci.sites.head_out(positions=None), ci.ablate("mean"),
                        ci.metrics.logit_diff(), k=8, log=log, confirm_args={"top_k": 6, "audit": 8, "seed": 0},
                        known=heads))
    model = testbeds.load("ioi")
    data = testbeds.ioi_data(n, seed=7)
    rows.append(compare("ioi testbed", model, data, ci.sites.head_out(positions=["IO", "S1", "S2", "end"]),
                        ci.patch("denoise"), ci.metrics.logit_diff(), k=5, log=log,
                        confirm_args={"top_k": 5, "audit": 8, "seed": 0}))
    return rows


def stories_row(small: bool, log) -> dict | None:
    from benchmarks.calibration import _stories_dir
    path = _stories_dir()
    if path is None:
        log("  stories260K absent: skipped")
        return None
    model = ci.load_model(str(path), device="cpu")
    data = ci.tasks.name_copy(model.tokenizer, 4 if small else 16)
    return compare("stories260K", model, data, ci.sites.head_out(positions=["name", "end"]), ci.patch("denoise"),
                   ci.metrics.logit_diff(), k=5, log=log, confirm_args={"top_k": 5, "audit": 10, "seed": 0})


def _gpt2_data(shape: dict):
    from benchmarks import patching_speed as ps
    clean, corrupt, answer, wrong = ps.build_data(shape)
    return ci.ContrastSet.from_tokens(clean, corrupt, answer=answer, wrong=wrong), (clean, corrupt, answer, wrong)


def gpt2_parts(shape: dict, every: dict, log) -> dict:
    """Parts 1-4 on the GPT-2-small-shaped model with random weights: sweeps at one position on `shape`'s
    prompts, sweeps over every position on `every`'s (fewer, shorter prompts: the sweep is T times larger)."""
    from transformer_lens.model_bridge import TransformerBridge

    from benchmarks import patching_speed as ps

    hf = ps.build_model(shape)
    data, (clean, corrupt, answer, wrong) = _gpt2_data(shape)
    data_all, tokens_all = _gpt2_data(every)
    model = ci.load_model(hf, device="cpu")
    metric, patch = ci.metrics.logit_diff(), ci.patch("denoise")
    out = {"shape": dict(shape), "shape_every_position": dict(every)}
    L, H = shape["n_layer"], shape["n_head"]
    with torch.no_grad():
        hf(clean)                                        # warm-up

    # 4. prefix reuse x floor
    prefix = []
    for comp, where in (("head_out", "end"), ("head_out", None), ("resid_pre", "end"), ("resid_pre", None)):
        sites = getattr(ci.sites, comp)(positions=where)
        d, (cl, co, _, _) = (data, (clean, corrupt, answer, wrong)) if where else (data_all, tokens_all)
        skip_only, t_skip = _timed(lambda: ci.scan(model, d, sites, intervention=patch, metric=metric,
                                                   progress=False))
        reuse, t_reuse = _timed(lambda: ci.scan(model, d, sites, intervention=patch, metric=metric,
                                                progress=False, reuse_prefix=True))
        n_sites, rows = skip_only.values.shape[1], int(skip_only.meta["rows_per_pass"])
        n_fwd, t_floor = _timed(lambda: ps.run_floor(hf, cl, co, n_sites, rows))
        diff = float(np.abs(reuse.values - skip_only.values).max())
        prefix.append({"sites": f"{comp} @ {'last position' if where else 'every position'}", "n_sites": n_sites,
                       "prompts": f"{d.n} x {max(d.lengths)} tokens",
                       "floor_seconds": t_floor, "skip_seconds": t_skip, "reuse_seconds": t_reuse,
                       "skip_x_floor": t_skip / t_floor, "reuse_x_floor": t_reuse / t_floor,
                       "max_abs_diff": diff})
        log(f"  prefix {comp} {where or 'all'}: {n_sites} sites, floor {t_floor:.2f}s, skip {t_skip / t_floor:.3f}x, "
            f"reuse {t_reuse / t_floor:.3f}x (max diff {diff:.1e})")
        if comp == "head_out" and where is None:
            exact_all = skip_only
    out["prefix"] = prefix
    T = every["seq_len"]
    data, (clean, corrupt, answer, wrong), sw = data_all, tokens_all, shape
    shape = every

    # 1-2. screens against the exact head_out x every position sweep (already computed above)
    sites = ci.sites.head_out(positions=None)
    m = exact_all.values.shape[1]
    k = max(5, m // 50)
    label = "GPT-2-small shape" if shape["n_layer"] == 12 else f"toy GPT-2 ({L} layers)"
    row = {"model": f"{label}, random weights ({shape['n_prompts']} prompts x {T} tokens)", "n_sites": m,
           "n_prompts": data.n, "k": k, "exact_fe": m + 2.0,
           "exact_seconds": next(p["skip_seconds"] for p in prefix if p["sites"] == "head_out @ every position")}
    for method in METHODS:
        est, t = _timed(lambda: ci.screen(model, data, sites, intervention=patch, metric=metric, method=method,
                                          steps=IG_STEPS))
        row[method] = {**agreement(exact_all, est, k), "fe": est.meta["forward_equivalents"], "seconds": t}
        log(f"  gpt2 {method}: spearman {row[method]['spearman']:.3f} recall@{k} {row[method]['recall_top_k']:.2f} "
            f"fe {row[method]['fe']:.1f} vs {m + 2} ({t:.2f}s)")
        if method == "atp*":
            conf = ci.confirm(est, model, data, top_k=k, audit=2 * k, threshold=0.05 * abs(
                float((exact_all.target - exact_all.base).mean())), seed=0)
            row["confirm"] = {"top_k": k, "audit": 2 * k, "threshold": conf.threshold, "fe_total": conf.cost["total"],
                              "fe_exact_sweep": conf.cost["exact_sweep"],
                              "fe_ratio": conf.cost["exact_sweep"] / conf.cost["total"],
                              "bound": conf.bound.to_dict(), "screen_error": conf.error}
    out["agreement"] = row

    # 3. tools: head_out at the last position (the one-position prompts)
    shape = sw
    data, (clean, corrupt, answer, wrong) = _gpt2_data(shape)
    with tempfile.TemporaryDirectory() as tmp:
        tok = ps.offline_tokenizer(shape["vocab_size"], tmp)
        bridge = TransformerBridge.boot_transformers("gpt2", hf_model=copy.deepcopy(hf), tokenizer=tok, device="cpu")
    bridge.eval()
    sites = ci.sites.head_out(positions="end")
    tools = {}
    eff, tools["causalinterp scan"] = _timed(lambda: ci.scan(model, data, sites, intervention=patch, metric=metric,
                                                             progress=False))
    reuse, tools["causalinterp scan, reuse_prefix"] = _timed(
        lambda: ci.scan(model, data, sites, intervention=patch, metric=metric, progress=False, reuse_prefix=True))
    tl, tools["TransformerLens get_act_patch"] = _timed(
        lambda: ps.run_transformerlens(bridge, clean, corrupt, answer, wrong, "head_out", shape))
    naive, tools["naive nnsight loop"] = _timed(
        lambda: ps.run_nnsight_naive(model.nn, clean, corrupt, answer, wrong, "head_out", shape))
    for method in METHODS:
        _, tools[f"screen {method}"] = _timed(lambda: ci.screen(model, data, sites, intervention=patch, metric=metric,
                                                                method=method, steps=IG_STEPS))
    _, tools["floor"] = _timed(lambda: ps.run_floor(hf, clean, corrupt, L * H, int(eff.meta["rows_per_pass"])))
    mean = eff.values.mean(0)
    out["tools"] = {"n_sites": L * H, "seconds": tools,
                    "max_abs_diff_vs_scan": {"reuse_prefix": float(np.abs(reuse.values.mean(0) - mean).max()),
                                             "transformerlens": float(np.abs(tl - mean).max()),
                                             "nnsight_naive": float(np.abs(naive - mean).max())}}
    log("  tools: " + ", ".join(f"{k_} {v:.2f}s" for k_, v in tools.items()))
    return out


def main(small: bool = False, verbose: bool = True) -> dict:
    torch.set_num_threads(1)
    log = print if verbose else (lambda *a, **k: None)
    t0 = time.perf_counter()
    out = {"benchmark": "screening", "small": small, "ig_steps": IG_STEPS, "alpha": ALPHA,
           "machine": machine(), "versions": versions()}
    rows = testbed_rows(small, log)
    story = stories_row(small, log)
    if story is not None:
        rows.append(story)
    out["testbeds"] = rows
    out["gpt2"] = gpt2_parts(SMALL, SMALL, log) if small else gpt2_parts(FULL, FULL_EVERY, log)
    out["seconds"] = time.perf_counter() - t0
    if not small:
        write_json("screening", out)
    return out


def to_markdown(r: dict) -> str:
    size = "small (smoke test)" if r["small"] else "full"
    g = r["gpt2"]
    lines = [f"## Screening, confirmation and prefix reuse ({size})\n",
             "Exact sweep (`ci.scan`) vs attribution-patching screens (`ci.screen`); cost in forward-pass "
             "equivalents (fe: a backward counts 2; the exact sweep is one pass per site plus the clean and "
             f"corrupt runs); ig with {r['ig_steps']} steps.  `python -m benchmarks.screening`, one thread.\n"]
    agree = []
    for row in r["testbeds"] + [g["agreement"]]:
        for method in METHODS:
            a = row[method]
            agree.append({"model": row["model"], "sites": row["n_sites"], "method": method,
                          "Spearman": a["spearman"], f"recall@k": f"{a['recall_top_k']:.2f} (k={row['k']})",
                          "largest miss (of max)": a["largest_miss_rel"], "fe": a["fe"], "exact fe": row["exact_fe"],
                          "s": a["seconds"], "exact s": row["exact_seconds"]})
    lines.append(md_table(agree))
    conf = []
    for row in r["testbeds"] + [g["agreement"]]:
        c = row.get("confirm")
        if not c:
            continue
        b = c["bound"]
        conf.append({"model": row["model"], "top_k + audit": f"{c['top_k']} + {c['audit']}",
                     "fe (screen+confirm)": c["fe_total"], "fe exact sweep": c["fe_exact_sweep"],
                     "ratio": c["fe_ratio"],
                     "same supported": c.get("same_supported", "n/a (no circuit)"),
                     "supported (confirmed)": ", ".join(c.get("supported_confirmed", [])) or "-",
                     "missed > threshold (95% bound)": f"<= {b['missed_upper']} of {b['n_rest'] - b['n_audited']}",
                     "audit Spearman": c["screen_error"]["spearman_audit"]})
    lines.append("\nScreen (atp*) + exact confirmation of the top-k and a random audit (`ci.confirm`); threshold = "
                 "5% of the mean clean-corrupt gap; claims on the confirmed top-k only (maxT over k), compared "
                 "with the exact sweep's (maxT over every site).\n")
    lines.append(md_table(conf))
    label = "GPT-2-small shape" if g["shape"]["n_layer"] == 12 else "toy GPT-2"
    lines.append(f"\nPrefix reuse ({label}, random weights): exact sweeps' wall-clock as a multiple of the "
                 "forward-only floor (the same number of full forward passes, no intervention).\n")
    lines.append(md_table([{"sites": p["sites"], "n": p["n_sites"], "prompts": p["prompts"], "floor s": p["floor_seconds"],
                            "layer skip (x floor)": p["skip_x_floor"], "prefix reuse (x floor)": p["reuse_x_floor"],
                            "max diff": p["max_abs_diff"]} for p in g["prefix"]]))
    t = g["tools"]
    lines.append(f"\nhead_out at the last position ({t['n_sites']} sites), wall-clock in one process:\n")
    lines.append(md_table([{"method": k, "seconds": v} for k, v in t["seconds"].items()]))
    lines.append(f"\nAgreement with ci.scan (max |mean diff|): {t['max_abs_diff_vs_scan']}\n")
    return "\n".join(lines)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true")
    args = p.parse_args()
    res = main(small=args.small)
    print(to_markdown(res))
