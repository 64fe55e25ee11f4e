"""Calibration of the tests as used in scans, on data where no site can have an effect.

Null 1 ("exchangeable answers"): clean and corrupt prompts are independent random token sequences
and each prompt's answer and wrong tokens are two random tokens drawn the same way.  Swapping them
negates every per-prompt effect, so each site's effect distribution is symmetric about exactly 0,
even though patching does move the logits.  A calibrated scan rejects at rate alpha per site (before
correction), at most alpha per scan after Holm/maxT, and its 95% CIs cover 0 about 95% of the time.

Null 2 ("identical"): clean == corrupt, so denoising changes nothing; every site must come out
`null` (zero variance), never `supported`.

    python -m benchmarks.calibration [--small]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import machine, md_table, versions, write_json

import causalinterp as ci
from causalinterp import testbeds

ALPHA = 0.05


def null_data(model, n: int, T: int, seed: int, identical: bool = False) -> ci.ContrastSet:
    pool = torch.tensor(testbeds.train.induction_pool(model.tokenizer))
    g = torch.Generator().manual_seed(seed)
    pick = lambda *shape: pool[torch.randint(len(pool), shape, generator=g)]  # noqa: E731
    clean = pick(n, T)
    corrupt = clean.clone() if identical else pick(n, T)
    answer, wrong = pick(n), pick(n)
    same = answer == wrong
    wrong[same] = pool[(torch.searchsorted(pool, answer[same]) + 1) % len(pool)]
    return ci.ContrastSet.from_tokens(clean, corrupt, answer=answer, wrong=wrong)


def main(small: bool = False) -> dict:
    t0 = time.perf_counter()
    n_seeds = 10 if small else 300
    T = 12
    B = 999 if small else 1999
    model = testbeds.load("induction")
    scans = {"head_out (all positions)": ci.sites.head_out(positions="all"),
             "resid_pre (last 3 positions)": ci.sites.resid_pre(positions=[-3, -2, -1])}
    rows = []
    n = 24
    for (label, sites), n in [(item, n) for n in ((24,) if small else (24, 64)) for item in scans.items()]:
        per_site, fw_holm, fw_maxt, covered, n_sites = [], [], [], [], 0
        for s in range(n_seeds):
            data = null_data(model, n, T, seed=10_000 + s)
            eff = ci.scan(model, data, sites, progress=False)
            holm = ci.evaluate(eff, ci.claims.has_effect(), alpha=ALPHA, correction="holm", n_resamples=B, seed=s)
            maxt = ci.evaluate(eff, ci.claims.has_effect(), alpha=ALPHA, correction="maxT", n_resamples=B, seed=s)
            t = holm.table
            n_sites = len(t)
            per_site.append(float((t["p"] < ALPHA).mean()))
            fw_holm.append(bool((t["verdict"] == "supported").any()))
            fw_maxt.append(bool((maxt.table["verdict"] == "supported").any()))
            covered.append(float(((t["ci_low"] <= 0) & (t["ci_high"] >= 0)).mean()))
        k = len(per_site)
        rows.append({"scan": label, "sites": n_sites, "scans (seeds)": k, "prompts": n,
                     "per-site rejection (unadjusted)": float(np.mean(per_site)),
                     "± 2 SE (binomial, if independent)": float(2 * np.sqrt(ALPHA * (1 - ALPHA) / (k * n_sites))),
                     "family-wise rejection, Holm": float(np.mean(fw_holm)),
                     "family-wise rejection, maxT": float(np.mean(fw_maxt)),
                     "95% CI coverage of 0": float(np.mean(covered))})
    # identical clean and corrupt: patching cannot change anything
    ident = []
    for s in range(min(n_seeds, 20)):
        data = null_data(model, n, T, seed=20_000 + s, identical=True)
        eff = ci.scan(model, data, ci.sites.head_out(positions="all"), progress=False)
        ev = ci.evaluate(eff, ci.claims.has_effect(), alpha=ALPHA, n_resamples=B, seed=s)
        ident.append(ev.table["verdict"].value_counts().to_dict())
    verdicts: dict = {}
    for d in ident:
        for k, v in d.items():
            verdicts[k] = verdicts.get(k, 0) + v
    out = {"benchmark": "calibration", "small": small, "alpha": ALPHA, "n_resamples": B,
           "null": "exchangeable answer/wrong tokens on random prompts (symmetric null), induction testbed",
           "rows": rows, "identical_clean_corrupt_verdicts": verdicts, "machine": machine(),
           "versions": versions(), "seconds": time.perf_counter() - t0}
    write_json("calibration_small" if small else "calibration", out)
    return out


def to_markdown(r: dict) -> str:
    return ("## Calibration of scans on null data\n\n"
            f"{r['null']}; denoise; claim `has_effect`; alpha {r['alpha']}; {r['n_resamples']} resamples. "
            "Targets: per-site rejection ≈ alpha, family-wise ≤ alpha, coverage ≈ 0.95 (per-site rejections "
            "within a scan are correlated, so the binomial band is only a guide).\n\n"
            + md_table(r["rows"])
            + f"\nIdentical clean and corrupt prompts (denoising cannot change anything): verdicts over all sites "
              f"and seeds: {r['identical_clean_corrupt_verdicts']}.\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny sizes (seconds), for smoke tests")
    print(to_markdown(main(ap.parse_args().small)))
