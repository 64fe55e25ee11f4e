"""Recovery on the IOI testbed: discover the circuit on one half of the prompts, confirm it on the other.

The prompts are split by template (`data.split(0.5, by="cluster")`): the confirmation half has templates the
discovery half never saw.
1. discovery: `head_out` scan at the end position (denoise, ABC corruption, logit difference), maxT-corrected,
   clustered by template; a `resid_pre` layer x position scan at the named positions;
2. the circuit = heads supported in (1) with a positive effect (`significant_sites`, which remembers the
   discovery prompts); the same joint claim on the discovery prompts is flagged selected-on-same-data;
3. confirmation: each discovered head (has_effect, Holm), and the circuit jointly: `recovers(0.5)` and
   `beats_random`;
4. faithfulness on the confirmation prompts: mean-ablate every head outside the circuit (every position),
   as a fraction of the clean - all-heads-ablated gap, with a bootstrap CI.

    python -m benchmarks.recovery_ioi [--small]
"""
from __future__ import annotations

import argparse
import time

from benchmarks.common import machine, md_table, versions, write_json

import causalinterp as ci
from causalinterp import testbeds
from causalinterp.spec.sites import Site

ALPHA = 0.05


def main(small: bool = False) -> dict:
    t0 = time.perf_counter()
    n = 120 if small else 240
    B = 999 if small else 9999
    n_random = 39 if small else 200
    model = testbeds.load("ioi")
    everything_data = testbeds.ioi_data(n, seed=7)
    data, confirm = everything_data.split(0.5, seed=0, by="cluster")
    out: dict = {"benchmark": "recovery_ioi", "small": small, "n_prompts": n, "n_resamples": B, "alpha": ALPHA,
                 "data": "testbeds.ioi_data(n, seed=7): mixed templates, ABC corruption; clusters = template ids; "
                         "split(0.5, seed=0, by='cluster') into discovery and confirmation",
                 "split": {"discovery": {"prompts": data.n, "templates": sorted(set(map(str, data.clusters)))},
                           "confirmation": {"prompts": confirm.n,
                                            "templates": sorted(set(map(str, confirm.clusters)))}},
                 "machine": machine(), "versions": versions()}
    cache: dict = {}
    # 1. heads at the end position
    heads = ci.scan(model, data, ci.sites.head_out(positions="end"), progress=False, cache=cache)
    ev_heads = ci.evaluate(heads, ci.claims.has_effect(), alpha=ALPHA, correction="maxT", n_resamples=B)
    cols = ["site", "layer", "head", "estimate", "ci_low", "ci_high", "p_adj", "verdict", "flag"]
    out["head_scan"] = ev_heads.table[cols].to_dict(orient="records")
    out["head_scan_reasons"] = list(ev_heads.reasons)
    # 2. residual stream, layer x named position
    resid = ci.scan(model, data, ci.sites.resid_pre(positions=["IO", "S1", "S2", "end"]), progress=False,
                    cache=cache)
    ev_resid = ci.evaluate(resid, ci.claims.has_effect(), alpha=ALPHA, correction="maxT", n_resamples=B)
    out["resid_scan"] = ev_resid.table[["site", "layer", "position", "estimate", "ci_low", "ci_high", "p_adj",
                                        "verdict"]].to_dict(orient="records")
    # 2. the circuit found on the discovery prompts (SelectedSites remember them)
    positive = ev_heads.table["estimate"].to_numpy() > 0
    chosen = ev_heads.significant_sites()
    chosen = type(chosen)([s for s in chosen if positive[list(heads.sites).index(s)]], chosen.selected_on)
    circuit = [(s.layer, s.head) for s in chosen]
    out["circuit"] = circuit
    if circuit:
        same = ci.scan(model, data, ci.sites.explicit(chosen), joint=True, progress=False, cache=cache)
        on_same = ci.evaluate(same, ci.claims.recovers(at_least=0.5), alpha=ALPHA, n_resamples=B)
        out["same_data"] = {"verdict": on_same.verdict, "flag": str(on_same.table["flag"][0]),
                            "estimate": on_same.estimate, "reasons": list(on_same.reasons)}
        # 3. confirmation on held-out templates: each head, then the circuit as a whole
        each = ci.scan(model, confirm, ci.sites.explicit(chosen), progress=False)
        ev_each = ci.evaluate(each, ci.claims.has_effect("increase"), alpha=ALPHA, correction="holm", n_resamples=B)
        out["confirm_heads"] = ev_each.table[cols].to_dict(orient="records")
        data = confirm                               # everything below runs on the confirmation prompts
        joint = ci.scan(model, data, ci.sites.explicit(chosen), joint=True, n_random=n_random, seed=3,
                        progress=False)
        rec = ci.evaluate(joint, ci.claims.recovers(at_least=0.5), alpha=ALPHA, n_resamples=B)
        br = ci.evaluate(joint, ci.claims.beats_random(n_random=n_random), alpha=ALPHA, n_resamples=B)
        out["recovers_0.5"] = {"verdict": rec.verdict, "estimate": rec.estimate, "ci": [rec.ci_low, rec.ci_high],
                               "reasons": list(rec.reasons)}
        out["beats_random"] = {"verdict": br.verdict, "estimate": br.estimate, "ci": [br.ci_low, br.ci_high],
                               "reasons": list(br.reasons)}
        # 4. faithfulness: everything outside the circuit mean-ablated
        everything = [Site("head_out", l, h, "all") for l in range(model.n_layers) for h in range(model.n_heads)]
        outside = [s for s in everything if (s.layer, s.head) not in circuit]
        abl = ci.ablate("mean")
        kept = ci.scan(model, data, ci.sites.explicit(outside), intervention=abl, joint=True, progress=False)
        none = ci.scan(model, data, ci.sites.explicit(everything), intervention=abl, joint=True, progress=False)
        f = ci.stats.recovery(kept.values[:, 0], kept.clean, none.values[:, 0], n_resamples=B, seed=0,
                              clusters=kept.clusters)
        out["faithfulness"] = {"estimate": float(f.estimate), "ci": [float(f.ci.low), float(f.ci.high)],
                               "definition": "(mean metric with only the circuit's heads intact - mean with every "
                                             "head mean-ablated) / (mean clean - mean with every head mean-ablated)"}
    out["clean_logit_diff_mean"] = float(heads.clean.mean())
    out["corrupt_logit_diff_mean"] = float(heads.corrupt.mean())
    out["seconds"] = time.perf_counter() - t0
    write_json("recovery_ioi_small" if small else "recovery_ioi", out)
    return out


def to_markdown(r: dict) -> str:
    sp = r["split"]
    lines = ["## Recovery: IOI testbed (discover, then confirm on held-out templates)\n",
             f"{r['data']}; n = {r['n_prompts']}: discovery {sp['discovery']['prompts']} prompts (templates "
             f"{sp['discovery']['templates']}), confirmation {sp['confirmation']['prompts']} prompts (templates "
             f"{sp['confirmation']['templates']}); {r['n_resamples']} resamples; alpha {r['alpha']}. Mean logit "
             f"difference on the discovery prompts: clean {r['clean_logit_diff_mean']:.3g}, corrupt "
             f"{r['corrupt_logit_diff_mean']:.3g}.\n\n**Discovery: head scan (denoise at end, has_effect, "
             "maxT):**\n\n"]
    lines.append(md_table(r["head_scan"], ["site", "estimate", "ci_low", "ci_high", "p_adj", "verdict", "flag"]))
    sig = [x for x in r["resid_scan"] if x["verdict"] == "supported"]
    lines.append(f"\n**Discovery: resid_pre layer x position scan:** {len(sig)} of {len(r['resid_scan'])} sites "
                 "supported:\n\n")
    lines.append(md_table(r["resid_scan"], ["site", "estimate", "ci_low", "ci_high", "p_adj", "verdict"]))
    lines.append(f"\n**Circuit found on the discovery prompts** (supported heads with positive effect): "
                 f"{r['circuit']}\n\n")
    if "same_data" in r:
        x = r["same_data"]
        flag = f"flag `{x['flag']}`, " if x["flag"] else ""
        lines.append(f"The circuit's `recovers(0.5)` on the same discovery prompts: **{x['verdict']}** "
                     f"({flag}estimate {x['estimate']:.3g}) — {x['reasons'][0]}\n\n"
                     "**Confirmation (held-out templates), each head (has_effect increase, Holm):**\n\n")
        lines.append(md_table(r["confirm_heads"], ["site", "estimate", "ci_low", "ci_high", "p_adj", "verdict"]))
        lines.append("\n**Confirmation, the circuit as a whole:**\n\n")
    for key in ("recovers_0.5", "beats_random"):
        if key in r:
            x = r[key]
            lines.append(f"- `{key}`: **{x['verdict']}**, estimate {x['estimate']:.3g} "
                         f"[{x['ci'][0]:.3g}, {x['ci'][1]:.3g}] — {x['reasons'][0]}\n")
    if "faithfulness" in r:
        f = r["faithfulness"]
        lines.append(f"- faithfulness {f['estimate']:.3g} [{f['ci'][0]:.3g}, {f['ci'][1]:.3g}]: {f['definition']}\n")
    return "".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny sizes (seconds), for smoke tests")
    print(to_markdown(main(ap.parse_args().small)))
