"""End to end: the whole IOI head scan with statistics, causalinterp vs TransformerLens + scipy.stats.

The issue: "the whole IOI head scan with stats end to end versus the same work done with TransformerLens'
helpers + `scipy.stats` in a loop (per-prompt values obtained the only way TransformerLens allows: one call
per prompt).  Ratios in one process, peak memory."

Work, on the ``ioi`` testbed (3 layers x 4 heads; a random-weight stand-in of the same shape and vocabulary
while the testbed's weights are not there yet, which the result says) and N IOI prompts
(``testbeds.ioi_data(N, seed=0)``, templates of several lengths, so the end position differs per prompt):

  causalinterp      ``eff = ci.scan(model, data, ci.sites.head_out(positions="end"))`` (denoise, logit
                    difference; includes the clean and corrupt runs), then
                    ``ci.evaluate(eff, ci.claims.has_effect(), correction="holm", n_resamples=9999)``
                    (sign-flip permutation test, BCa bootstrap CI, Holm, plus TOST and power that the
                    baseline does not do).  ``correction="maxT"`` is timed too (extra row).
  TL per prompt     the baseline.  For each prompt alone: ``bridge.run_with_cache(clean_i)``, the corrupt
                    metric from ``bridge(corrupt_i)``, and ``get_act_patch_attn_head_out_by_pos`` with an
                    ``index_df`` of (layer, end_i, head) rows (``index_axis_names=None``) -> that prompt's
                    value for every head.  With TransformerLens' default ``reduce="scalar"`` the metric
                    must return a batch scalar, so per-prompt values need one call per prompt.  Then per
                    head ``scipy.stats.permutation_test`` (paired sign flips of patched - corrupt,
                    ``permutation_type="samples"``, statistic mean, two-sided, 9,999 resamples) and
                    ``scipy.stats.bootstrap`` (BCa, 9,999 resamples), then statsmodels ``multipletests``
                    (Holm).
  TL batched        TransformerLens 4.3's ``reduce="none"`` (and ``baseline=True``) keeps per-example
                    values, so batches work too, but one call still patches one position for the whole
                    batch: prompts are grouped by length (same end position) and each group is one call.
                    Same scipy statistics.  A second, faster baseline, reported beside the main one.

Checks (recorded, and the run fails after writing the JSON if the values disagree): per-prompt patched
values and corrupt baselines of both TL baselines equal causalinterp's ``eff.values`` / ``eff.corrupt``
(max abs diff <= 1e-3), and the Holm-significant heads (p_adj < 0.05) are listed for both (p-values differ
only by Monte Carlo noise; the prompts are tested as independent units on both sides, i.e. the scan's
template clusters are dropped before `evaluate`, since scipy has no cluster sign-flip/bootstrap).

Timings: one run each in one process after a warm-up of every code path, wall-clock and CPU seconds,
``torch.set_num_threads(1)``; memory: peak RSS growth over each pipeline (VmHWM reset, as in
patching_speed.py).

    python -m benchmarks.e2e_ioi [--small]      # writes benchmarks/results/e2e_ioi[_small].json
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported (TransformerLens' per-cell bar)

import argparse  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import machine, md_table, versions, write_json  # noqa: E402
from benchmarks.patching_speed import _measure, offline_tokenizer  # noqa: E402

N_FULL, N_SMALL = 64, 8
N_RESAMPLES = 9999
ALPHA = 0.05
AGREE_ATOL = 1e-3
SEED = 0


# --- model and data --------------------------------------------------------------------------------
def load_ioi(log=print):
    """(hf model, tokenizer, source): the ioi testbed, or a random stand-in of its shape and vocabulary."""
    from causalinterp import testbeds
    from causalinterp.testbeds import train

    if "ioi" in testbeds.available():
        try:
            return testbeds.load_hf("ioi"), testbeds.tokenizer("ioi"), "testbed:ioi (trained weights)"
        except testbeds.TestbedError as e:  # card written but weights not (yet)
            log(f"e2e_ioi: testbed not usable ({e}); using the stand-in")
    try:
        tok = testbeds.tokenizer("ioi")
    except testbeds.TestbedError:
        tok = train.wrap_tokenizer(train.build_tokenizer(train.ioi_words()))
    import torch
    torch.manual_seed(SEED)
    hf = train.new_model(train.RECIPES["ioi"], len(tok))
    with torch.no_grad():  # random init (std 0.02) gives near-zero effects; scale up so heads matter
        for p in hf.parameters():
            if p.ndim == 2:
                p.mul_(6.0)
    hf.eval()
    return hf, tok, "stand-in: random GPT-2 of the ioi testbed's shape (3 layers, 4 heads, d=64), its vocabulary"


def _groups_by_length(lengths) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, L in enumerate(lengths):
        out.setdefault(L, []).append(i)
    return out


# --- causalinterp ------------------------------------------------------------------------------------
def run_causalinterp(model, data, n_resamples: int):
    import causalinterp as ci

    t0 = time.perf_counter()
    eff = ci.scan(model, data, ci.sites.head_out(positions="end"), progress=False)
    t1 = time.perf_counter()
    flat = dataclasses.replace(eff, clusters=None)  # prompts as units, like the scipy baseline
    ev = ci.evaluate(flat, ci.claims.has_effect(), correction="holm", n_resamples=n_resamples, alpha=ALPHA)
    t2 = time.perf_counter()
    return {"eff": eff, "ev": ev, "scan_s": t1 - t0, "evaluate_s": t2 - t1}


def run_causalinterp_maxt(eff, n_resamples: int):
    import causalinterp as ci

    return ci.evaluate(dataclasses.replace(eff, clusters=None), ci.claims.has_effect(), correction="maxT",
                       n_resamples=n_resamples, alpha=ALPHA)


# --- TransformerLens + scipy -----------------------------------------------------------------------
def _metric(answer: int, wrong: int):
    def metric(logits):  # [1, pos, vocab] -> scalar logit difference at the last position
        last = logits[0, -1, :].double()
        return last[answer] - last[wrong]
    return metric


def _batch_metric(answer, wrong):
    import torch
    rows = torch.arange(len(answer))
    a, w = torch.tensor(answer), torch.tensor(wrong)

    def metric(logits):  # [batch, pos, vocab] -> [batch] (all prompts of a group share their length)
        last = logits[:, -1, :].double()
        return last[rows, a] - last[rows, w]
    return metric


def tl_per_prompt(bridge, data, n_layers: int, n_heads: int):
    """Per-prompt head values the way TransformerLens' default API allows: one call per prompt."""
    import pandas as pd
    import torch
    from transformer_lens import patching

    n = len(data)
    values = np.zeros((n, n_layers * n_heads))
    corrupt = np.zeros(n)
    with torch.no_grad():
        for i in range(n):
            clean_i = torch.tensor([data.clean[i]])
            corrupt_i = torch.tensor([data.corrupt[i]])
            metric = _metric(data.answer[i], data.wrong[i])
            _, cache = bridge.run_with_cache(clean_i)
            corrupt[i] = float(metric(bridge(corrupt_i)))
            end = data.positions["end"][i]
            index_df = pd.DataFrame([{"layer": l, "pos": end, "head": h}
                                     for l in range(n_layers) for h in range(n_heads)])
            out = patching.get_act_patch_attn_head_out_by_pos(bridge, corrupt_i, cache, metric,
                                                              index_axis_names=None, index_df=index_df)
            values[i] = out.double().numpy()
    return values, corrupt


def tl_batched(bridge, data, n_layers: int, n_heads: int):
    """TL 4.3 ``reduce="none"`` + ``baseline=True``: one call per group of prompts of the same length."""
    import pandas as pd
    import torch
    from transformer_lens import patching

    n = len(data)
    values = np.zeros((n, n_layers * n_heads))
    corrupt = np.zeros(n)
    with torch.no_grad():
        for L, idx in _groups_by_length(data.lengths).items():
            clean_g = torch.tensor([data.clean[i] for i in idx])
            corrupt_g = torch.tensor([data.corrupt[i] for i in idx])
            metric = _batch_metric([data.answer[i] for i in idx], [data.wrong[i] for i in idx])
            _, cache = bridge.run_with_cache(clean_g)
            index_df = pd.DataFrame([{"layer": l, "pos": L - 1, "head": h}
                                     for l in range(n_layers) for h in range(n_heads)])
            res = patching.get_act_patch_attn_head_out_by_pos(bridge, corrupt_g, cache, metric,
                                                              index_axis_names=None, index_df=index_df,
                                                              reduce="none", baseline=True)
            values[idx] = res.values.double().numpy().T  # [n_rows, batch] -> [batch, n_rows]
            corrupt[idx] = res.baseline.double().numpy()
    return values, corrupt


def _mean(a, axis):
    return np.mean(a, axis=axis)


def scipy_stats(values, corrupt, n_resamples: int):
    """Per head: scipy permutation test (sign flips) and BCa bootstrap of the mean effect; Holm."""
    import scipy.stats as st
    from statsmodels.stats.multitest import multipletests

    d = values - corrupt[:, None]
    m = d.shape[1]
    p, lo, hi, est = (np.zeros(m) for _ in range(4))
    for j in range(m):
        pt = st.permutation_test((d[:, j],), _mean, permutation_type="samples", vectorized=True,
                                 n_resamples=n_resamples, alternative="two-sided", rng=j)
        bs = st.bootstrap((d[:, j],), _mean, method="BCa", vectorized=True, n_resamples=n_resamples,
                          confidence_level=0.95, rng=j)
        p[j], est[j] = pt.pvalue, pt.statistic
        lo[j], hi[j] = bs.confidence_interval.low, bs.confidence_interval.high
    reject, p_adj, _, _ = multipletests(p, alpha=ALPHA, method="holm")
    return {"estimate": est, "ci_low": lo, "ci_high": hi, "p": p, "p_adj": p_adj, "reject": reject}


def baseline_pipeline(fetch, bridge, data, L, H, n_resamples):
    t0 = time.perf_counter()
    values, corrupt = fetch(bridge, data, L, H)
    t1 = time.perf_counter()
    stats = scipy_stats(values, corrupt, n_resamples)
    t2 = time.perf_counter()
    return {"values": values, "corrupt": corrupt, "stats": stats, "patch_s": t1 - t0, "stats_s": t2 - t1}


# --- driver --------------------------------------------------------------------------------------
def _heads(mask, L, H) -> list[str]:
    return [f"L{j // H}H{j % H}" for j in range(L * H) if mask[j]]


def main(small: bool = False, n_prompts: int | None = None, n_resamples: int = N_RESAMPLES,
         verbose: bool = True) -> dict:
    import torch

    import causalinterp as ci
    from causalinterp import testbeds
    from transformer_lens.model_bridge import TransformerBridge

    torch.set_num_threads(1)
    log = print if verbose else (lambda *a, **k: None)
    n = n_prompts or (N_SMALL if small else N_FULL)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")

    hf, tok, source = load_ioi(log)
    L, H = hf.config.n_layer, hf.config.n_head
    data = testbeds.ioi_data(n, seed=SEED, tokenizer=tok)
    model = ci.load_model(hf, tok, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:  # the bridge insists on a tokenizer; it never tokenises here
        tl_tok = offline_tokenizer(hf.config.vocab_size, tmp)
        bridge = TransformerBridge.boot_transformers("gpt2", hf_model=copy.deepcopy(hf), tokenizer=tl_tok,
                                                     device="cpu")
    bridge.eval()
    lengths = sorted(set(data.lengths))
    log(f"e2e_ioi: {source}; {n} prompts (lengths {lengths}), {L * H} heads, {n_resamples} resamples, "
        f"torch threads {torch.get_num_threads()}")

    # same weights, and a warm-up of every code path (lazy imports, first-call set-up)
    with torch.no_grad():
        toks = data.tokens("clean")[:2]
        same = float((bridge(toks) - hf(toks).logits).abs().max())
    if same > 1e-3:
        raise RuntimeError(f"TransformerLens' logits differ from the HF model's by {same}: not the same weights")
    warm = data.subset([0, 1])
    w = run_causalinterp(model, warm, 99)
    run_causalinterp_maxt(w["eff"], 99)
    baseline_pipeline(tl_per_prompt, bridge, warm, L, H, 99)
    baseline_pipeline(tl_batched, bridge, warm, L, H, 99)

    ours, m_ours = _measure(lambda: run_causalinterp(model, data, n_resamples))
    log(f"  causalinterp       {m_ours['seconds']:.2f}s (scan {ours['scan_s']:.2f}s, evaluate {ours['evaluate_s']:.2f}s)")
    ev_maxt, m_maxt = _measure(lambda: run_causalinterp_maxt(ours["eff"], n_resamples))
    log(f"  evaluate maxT      {m_maxt['seconds']:.2f}s")
    base, m_base = _measure(lambda: baseline_pipeline(tl_per_prompt, bridge, data, L, H, n_resamples))
    log(f"  TL per prompt      {m_base['seconds']:.2f}s (patching {base['patch_s']:.2f}s, scipy {base['stats_s']:.2f}s)")
    bat, m_bat = _measure(lambda: baseline_pipeline(tl_batched, bridge, data, L, H, n_resamples))
    log(f"  TL batched         {m_bat['seconds']:.2f}s (patching {bat['patch_s']:.2f}s, scipy {bat['stats_s']:.2f}s)")

    eff, ev = ours["eff"], ours["ev"]
    tab = ev.table
    p_adj_ours = tab["p_adj"].to_numpy(dtype=float)
    sig_ours = p_adj_ours < ALPHA
    sig_maxt = ev_maxt.table["p_adj"].to_numpy(dtype=float) < ALPHA
    checks, problems = {}, []
    for name, r in (("tl_per_prompt", base), ("tl_batched", bat)):
        dv = float(np.abs(r["values"] - eff.values).max())
        dc = float(np.abs(r["corrupt"] - eff.corrupt).max())
        sig = r["stats"]["reject"]
        checks[name] = {
            "max_abs_diff_values": dv, "max_abs_diff_corrupt": dc,
            "significant_heads": _heads(sig, L, H),
            "same_significant_heads": bool(np.array_equal(sig, sig_ours)),
            "differing_heads": {f"L{j // H}H{j % H}": {"p_adj_causalinterp": float(p_adj_ours[j]),
                                                       "p_adj_scipy": float(r["stats"]["p_adj"][j])}
                                for j in np.flatnonzero(sig != sig_ours)},
            "max_abs_diff_p": float(np.abs(r["stats"]["p"] - tab["p"].to_numpy(float)).max()),
            "max_abs_diff_p_adj": float(np.abs(r["stats"]["p_adj"] - p_adj_ours).max()),
            "max_abs_diff_ci": float(max(np.abs(r["stats"]["ci_low"] - tab["ci_low"].to_numpy(float)).max(),
                                         np.abs(r["stats"]["ci_high"] - tab["ci_high"].to_numpy(float)).max())),
            "max_abs_diff_estimate": float(np.abs(r["stats"]["estimate"] - tab["estimate"].to_numpy(float)).max()),
        }
        if not (dv <= AGREE_ATOL and dc <= AGREE_ATOL):
            problems.append(f"{name}: per-prompt values differ from causalinterp's by {max(dv, dc):.2e}")

    total_base = m_base["seconds"]

    def row(method, m, parts, note=""):
        return {"method": method, "seconds": round(m["seconds"], 4), "cpu_seconds": round(m["cpu_seconds"], 4),
                "x_baseline": round(m["seconds"] / total_base, 4), "parts": parts,
                "peak_growth_mb": m["peak_growth_mb"], "peak_rss_mb": m["peak_rss_mb"], "note": note}

    rows = [
        row("causalinterp: scan + evaluate(holm)", m_ours,
            f"scan {ours['scan_s']:.2f} s + evaluate {ours['evaluate_s']:.2f} s"),
        row("causalinterp: evaluate(maxT) alone", m_maxt, "", "extra: maxT on the same scan"),
        row("TL per prompt + scipy loop + Holm (baseline)", m_base,
            f"patching {base['patch_s']:.2f} s + scipy {base['stats_s']:.2f} s"),
        row("TL batched reduce='none' by length + scipy", m_bat,
            f"patching {bat['patch_s']:.2f} s + scipy {bat['stats_s']:.2f} s",
            f"{len(lengths)} calls (one per prompt length)"),
    ]
    result = {
        "benchmark": "e2e_ioi", "small": small, "started_utc": started,
        "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": source, "n_prompts": n, "prompt_lengths": lengths, "n_heads": L * H,
        "n_resamples": n_resamples, "alpha": ALPHA, "seed": SEED, "torch_threads": torch.get_num_threads(),
        "tl_vs_hf_max_abs_logit_diff": same,
        "speedup_vs_tl_per_prompt": total_base / m_ours["seconds"],
        "speedup_vs_tl_batched": m_bat["seconds"] / m_ours["seconds"],
        "speedup_patching_vs_tl_per_prompt": base["patch_s"] / ours["scan_s"],
        "speedup_stats_vs_scipy": base["stats_s"] / ours["evaluate_s"],
        "rows": rows,
        "significant_heads": {"causalinterp_holm": _heads(sig_ours, L, H),
                              "causalinterp_maxT": _heads(sig_maxt, L, H),
                              "causalinterp_supported": [f"L{s}H{h}" for s, h, v in
                                                         zip(tab["layer"], tab["head"], tab["verdict"])
                                                         if v == "supported"]},
        "checks": checks, "values_agree": not problems, "problems": problems,
        "mean_effect_range": float(np.ptp((eff.values - eff.corrupt[:, None]).mean(0))),
        "notes": ("one run per method after a warm-up; wall-clock and CPU seconds; peak RSS growth per pipeline "
                  "(VmHWM reset); both sides test prompts as independent units (template clusters dropped); "
                  "causalinterp's evaluate also computes TOST and power, which the baseline does not"),
        "machine": machine(), "versions": versions(),
    }
    write_json("e2e_ioi_small" if small else "e2e_ioi", result)
    log(to_markdown(result))
    if problems:
        raise RuntimeError("; ".join(problems))
    return result


def to_markdown(r: dict) -> str:
    cols = ["method", "seconds", "cpu_seconds", "x_baseline", "peak_growth_mb", "parts", "note"]
    c = r["checks"]
    sig = r["significant_heads"]
    lines = [
        "### End to end: IOI head scan with statistics\n",
        f"{r['model']}; {r['n_prompts']} prompts (lengths {r['prompt_lengths']}), {r['n_heads']} heads at the "
        f"end position, {r['n_resamples']} resamples, alpha {r['alpha']}, {r['torch_threads']} torch thread. "
        "`x_baseline` = seconds / TL-per-prompt seconds; `peak_growth_mb` = peak RSS growth over the pipeline.\n",
        md_table(r["rows"], cols),
        f"causalinterp is **{r['speedup_vs_tl_per_prompt']:.1f}x** faster end to end than TransformerLens per "
        f"prompt + scipy (patching {r['speedup_patching_vs_tl_per_prompt']:.1f}x, statistics "
        f"{r['speedup_stats_vs_scipy']:.1f}x), and {r['speedup_vs_tl_batched']:.1f}x faster than TL 4.3's "
        "batched `reduce=\"none\"` (grouped by prompt length) + scipy.\n",
        "Agreement: per-prompt values max |diff| "
        f"{c['tl_per_prompt']['max_abs_diff_values']:.1e} (per prompt), "
        f"{c['tl_batched']['max_abs_diff_values']:.1e} (batched); Holm-significant heads: causalinterp "
        f"{sig['causalinterp_holm'] or 'none'}, scipy {c['tl_per_prompt']['significant_heads'] or 'none'} "
        f"(same: {c['tl_per_prompt']['same_significant_heads']}; max |p diff| "
        f"{c['tl_per_prompt'].get('max_abs_diff_p', float('nan')):.3f}, max |p_adj diff| "
        f"{c['tl_per_prompt']['max_abs_diff_p_adj']:.3f}, max |CI bound diff| {c['tl_per_prompt']['max_abs_diff_ci']:.3g}, "
        "Monte Carlo noise of 9,999 resamples"
        + "".join(f"; differs: {h}, p_adj {d['p_adj_causalinterp']:.4f} (causalinterp) vs {d['p_adj_scipy']:.4f} "
                  "(scipy)" for h, d in c["tl_per_prompt"].get("differing_heads", {}).items())
        + f", alpha {r['alpha']}); maxT: "
        f"{sig['causalinterp_maxT'] or 'none'}; has_effect supported: {sig['causalinterp_supported'] or 'none'}.\n",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help=f"{N_SMALL} prompts (seconds)")
    ap.add_argument("--n", type=int, default=None, help="number of prompts")
    args = ap.parse_args()
    main(small=args.small, n_prompts=args.n)
