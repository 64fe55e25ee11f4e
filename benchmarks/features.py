"""Feature-level ground truth on the induction testbed (copy-choice task): probes, DAS, SAE features, identities.

Task (`ci.features.copy_choice_data`): induction prompts whose answer is t0 or t1; the corrupt prompt differs only
in that token.  Known: at ``end`` after layer 1 the choice is the 1-D direction the logit difference reads
(`ci.features.known_direction`); before the copy (``resid_pre`` L0/L1 @end) it is absent.  Every fitted object
(probe, DAS rotation, SAE feature choice) is fitted on a discovery half and tested on the held-out half.

    python -m benchmarks.features [--small]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import md_table, write_json

import causalinterp as ci

END = ci.Site("resid_post", 1, position="end")
BEFORE = ci.Site("resid_pre", 1, position="end")
EMBED = ci.Site("resid_pre", 0, position="end")


def copies_t0(d):
    return np.array([a == d.answer[0] for a in d.answer])


def recovery(eff, col=0):
    return float((eff.values[:, col].mean() - eff.corrupt.mean()) / (eff.clean.mean() - eff.corrupt.mean()))


def main(small: bool = False) -> dict:
    t0 = time.perf_counter()
    torch.set_num_threads(1)
    model = ci.load_model("testbed:induction")
    n, seeds, steps = (60, [0, 1], 60) if small else (120, [0, 1, 2, 3, 4], 100)
    u = ci.features.known_direction(model)
    out: dict = {"benchmark": "features", "small": small, "n": n, "seeds": seeds, "das_steps": steps}

    # identities on the real testbed (max |difference| in logit-diff units)
    data = ci.features.copy_choice_data(n, seed=100)
    whole = ci.scan(model, data, END, progress=False).values
    full = ci.scan(model, data, ci.sites.subspace("resid_post", 1, "end", torch.eye(64)), progress=False).values
    sae = ci.features.load_sae("testbed:induction")
    every = ci.scan(model, data, ci.sites.sae_features(sae, None, "end", error=True), progress=False).values
    none = ci.scan(model, data, ci.sites.sae_features(sae, [], "end"), progress=False)
    out["identities"] = {"full_basis_vs_whole": float(np.abs(full - whole).max()),
                         "all_latents_and_error_vs_whole": float(np.abs(every - whole).max()),
                         "no_latent_vs_unpatched": float(np.abs(none.values[:, 0] - none.corrupt).max())}
    kd = ci.scan(model, data, ci.sites.subspace("resid_post", 1, "end", u), progress=False).values[:, 0]
    out["known_direction_iia"] = float((kd > 0).mean())

    probes, das_rows, sae_rows = [], [], []
    for seed in seeds:
        disc, conf = ci.features.copy_choice_data(n, seed=seed).split(0.5, seed=seed)
        for name, site in (("after copy (resid_post L1 @end)", END), ("before copy (resid_pre L0 @end)", EMBED)):
            p = ci.probe(model, disc, site, copies_t0, n_resamples=1999, seed=seed)
            row = {"seed": seed, "site": name, "accuracy": p.accuracy, "acc_ci": f"[{p.accuracy_ci[0]:.2f}, "
                   f"{p.accuracy_ci[1]:.2f}]", "chance": p.chance, "control": p.control_accuracy,
                   "selectivity": p.selectivity, "sel_ci": f"[{p.selectivity_ci[0]:.2f}, {p.selectivity_ci[1]:.2f}]",
                   "verdict": p.verdict, "cos_known": float((p.basis @ u).abs().max())}
            if site is END:
                ev = p.causal_test(model, conf, n_resamples=1999)
                row["ablate_dir_effect"] = ev.estimate
                row["ablate_verdict"] = ev.verdict
            probes.append(row)
        for name, site in (("after copy", END), ("before copy (resid_pre L1)", BEFORE)):
            res = ci.das(model, disc, site, dim=1, steps=steps, seed=seed)
            ev = res.evaluate(model, conf, n_random=20, n_resamples=1999, seed=seed)
            das_rows.append({"seed": seed, "site": name, "train_iia": res.train_iia, "iia": ev.iia,
                             "iia_ci": f"[{ev.iia_ci[0]:.2f}, {ev.iia_ci[1]:.2f}]", "random_iia": ev.random_iia,
                             "recovers_0.5": ev.verdict, "beats_random": ev.beats_random.verdict,
                             "cos_known": float((res.basis @ u).abs())})
        sweep = ci.scan(model, disc, ci.sites.sae_features(sae, each=True, positions="end"), progress=False)
        top = ci.evaluate(sweep, ci.claims.has_effect("increase"), n_resamples=999, seed=seed).top_sites(3)
        feats = [s.feature.features[0] for s in top]
        held = ci.scan(model, conf, ci.sites.sae_features(sae, feats, positions="end"), progress=False)
        rng = np.random.default_rng(seed)
        rand_sites = [ci.features.FeatureSite("resid_post", 1, None, "end", ci.features.SAEFeatures(sae, list(r)))
                      for r in (rng.choice(sae.d_sae, 3, replace=False) for _ in range(20))]
        rand = ci.scan(model, conf, rand_sites, progress=False)
        rr = [recovery(rand, j) for j in range(len(rand_sites))]
        sae_rows.append({"seed": seed, "features": str(feats), "held_out_recovery": recovery(held),
                         "random_sets_mean": float(np.mean(rr)), "random_sets_max": float(np.max(rr)),
                         "beats_all_random": bool(recovery(held) > max(rr))})
    out.update(probes=probes, das=das_rows, sae_features=sae_rows,
               sae={k: v for k, v in ci.features.sae_stats(sae, ci.features.collect(
                   model, ci.testbeds.induction_data(100, seed=100), ci.Site("resid_post", 1))).items()},
               seconds=time.perf_counter() - t0)
    write_json("features_small" if small else "features", out)
    return out


def to_markdown(r: dict) -> str:
    idn = r["identities"]
    lines = [
        "## Feature sites, probes and DAS: induction copy-choice ground truth\n",
        f"`ci.features.copy_choice_data(n={r['n']}, seed)` split in halves (discovery / held-out) for seeds {r['seeds']}; "
        "the known feature is the direction the t0-t1 logit difference reads at resid_post L1 @end; nothing is "
        f"there before the copy. ({r['seconds']:.0f} s; `python -m benchmarks.features`)\n",
        f"**Identities on the testbed** (max |difference| of logit diffs, n = {r['n']}): full basis vs whole patch "
        f"{idn['full_basis_vs_whole']:.2g}; all SAE latents + error term vs whole patch "
        f"{idn['all_latents_and_error_vs_whole']:.2g}; no latent vs unpatched {idn['no_latent_vs_unpatched']:.2g}. "
        f"Patching only the known 1-D direction: IIA {r['known_direction_iia']:.3f}.\n",
        "**Probes** (logistic regression, 5-fold CV on the discovery half, Hewitt & Liang control task over the token "
        "at the probed position; `ablate_dir_effect` = mean ablation of the probe direction on the held-out half, "
        "mean change of the logit diff, claim has_effect(decrease)):\n",
        md_table(r["probes"], ["seed", "site", "accuracy", "acc_ci", "chance", "control", "selectivity", "sel_ci",
                               "verdict", "cos_known", "ablate_dir_effect", "ablate_verdict"]),
        f"\n**DAS** (dim 1, {r['das_steps']} Adam steps on the discovery half; held-out IIA with bootstrap CI; "
        "recovers(0.5) and beats_random against 20 random 1-D subspaces at the same place):\n",
        md_table(r["das"], ["seed", "site", "train_iia", "iia", "iia_ci", "random_iia", "recovers_0.5", "beats_random",
                            "cos_known"]),
        f"\n**SAE features** (the shipped SAE: 128 latents at resid_post L1, explained variance "
        f"{r['sae']['explained_variance']:.3f}, L0 {r['sae']['l0']:.1f}, {r['sae']['dead']} dead; top 3 latents by "
        "the discovery sweep, patched together on the held-out half, vs 20 random sets of 3 latents):\n",
        md_table(r["sae_features"], ["seed", "features", "held_out_recovery", "random_sets_mean", "random_sets_max",
                                     "beats_all_random"]),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny sizes, for smoke tests")
    print(to_markdown(main(ap.parse_args().small)))
