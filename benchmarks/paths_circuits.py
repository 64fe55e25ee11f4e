"""Paths, circuits and stability on the testbeds: which heads act through which inputs, how faithful the found
circuits are (curves with CIs), and how stable their discovery is.

1. induction: every layer-0 head -> every layer-1 head through q, k and v, and every head -> logits (mean
   ablation at every position, `has_effect`, holm): the previous-token head 0.1 must reach the induction head
   1.2 through k, and not through q;
2. IOI: paths chosen on a discovery half (by template) and confirmed on the other half (noise patching: the
   ABC prompts' activations into the clean run, `has_effect`, holm);
3. faithfulness curves at the MIB sizes (heads ranked on the discovery half, evaluated on the confirmation
   half, mean ablation of the heads outside, MLPs kept), with per-point CIs and CPR/CMD with CIs;
4. stability of the head discovery (scan + `has_effect` supported) over resamples of the prompts by template;
5. edge circuits on the induction and IOI testbeds and stories260K (name copying): every edge ranked by
   single-edge mean ablation on the discovery half; the circuit size chosen on the discovery half (the
   smallest MIB size whose faithfulness reaches 0.8 there); on the confirmation half that circuit's
   faithfulness (`faithful(at_least=0.8)`) and `beats_random` against random edge sets of the same size, and
   the edge faithfulness curve with CIs; cost as a ratio to plain forward passes in the same process.

    python -m benchmarks.paths_circuits [--small]     # also writes its section into RESULTS.md / results.json
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.common import ROOT, machine, md_table, versions

import causalinterp as ci
from causalinterp import testbeds
from causalinterp.stability import by_claim

ALPHA = 0.05
COLS = ["site", "estimate", "ci_low", "ci_high", "p_adj", "verdict"]


def _rows(ev, keep=None):
    t = ev.table
    rows = t[COLS].to_dict(orient="records")
    return [r for r in rows if keep is None or keep(r)]


def _noise_test(model, data, sites, B):
    """Noise patching (the ABC prompts' activations into the clean run), has_effect, holm."""
    eff = ci.scan(model, data, sites, intervention=ci.patch("noise"), progress=False)
    return ci.evaluate(eff, ci.claims.has_effect(), alpha=ALPHA, n_resamples=B)


def _heads(model, layers, positions="all"):
    return ci.sites.heads([(l, h) for l in layers for h in range(model.n_heads)], positions=positions)


def _path_grid(model, positions="all"):
    """Every head -> every head of a later layer through q, k, v; and every head -> logits."""
    paths = []
    for recv_layer in range(1, model.n_layers):
        for via in "qkv":
            paths += list(ci.sites.path(_heads(model, range(recv_layer), positions),
                                        [(recv_layer, h) for h in range(model.n_heads)], via=via)
                          .resolve(model.n_layers, model.n_heads, [32]))
    paths += list(ci.sites.path(_heads(model, range(model.n_layers), positions), "logits")
                  .resolve(model.n_layers, model.n_heads, [32]))
    return paths


def induction(n: int, B: int) -> dict:
    model = testbeds.load("induction")
    data = testbeds.induction_data(n, seed=0)
    t = time.perf_counter()
    paths = _path_grid(model)
    eff = ci.scan(model, data, ci.sites.paths(paths), intervention=ci.ablate("mean"), progress=False)
    secs = time.perf_counter() - t
    ev = ci.evaluate(eff, ci.claims.has_effect(), alpha=ALPHA, n_resamples=B)
    rows = _rows(ev)
    counts = ev.table["verdict"].value_counts().to_dict()
    key = {r["site"]: r for r in rows}
    prev_ind = {via: key[f"path(head_out L0.H1 @all -> {via} L1.H2 @all)"] for via in "qkv"}
    # faithfulness curve: heads ranked by a node scan on one half, curve on the other
    disc, conf = data.split(0.5, seed=0, by="prompt")
    heads = _heads(model, range(model.n_layers))
    node = ci.evaluate(ci.scan(model, disc, heads, intervention=ci.ablate("mean"), progress=False),
                       ci.claims.has_effect(), n_resamples=B)
    ranking = [heads.explicit[i] for i in np.argsort(-np.abs(node.table["estimate"].to_numpy()), kind="stable")]
    curve = ci.faithfulness_curve(model, conf, ranking, universe=heads, n_resamples=B)
    return {"n_prompts": n, "n_paths": len(paths), "scan_seconds": secs, "verdict_counts": counts,
            "prev_to_induction": prev_ind, "supported": [r for r in rows if r["verdict"] == "supported"],
            "curve": curve.to_dict(), "curve_ranking": [s.label for s in ranking]}


def ioi(n: int, B: int, n_stab: int) -> dict:
    model = testbeds.load("ioi")
    data = testbeds.ioi_data(n, seed=7)
    disc, conf = data.split(0.5, seed=0)
    out = {"n_prompts": n, "n_discovery": disc.n, "n_confirmation": conf.n,
           "n_clusters": len(set(data.clusters))}
    t = time.perf_counter()
    paths = _path_grid(model)
    eff = ci.scan(model, disc, ci.sites.paths(paths), intervention=ci.patch("noise"), progress=False)
    out["discovery_scan_seconds"] = time.perf_counter() - t
    out["n_paths"] = len(paths)
    ev = ci.evaluate(eff, ci.claims.has_effect(), alpha=ALPHA, n_resamples=B)
    out["discovery_counts"] = ev.table["verdict"].value_counts().to_dict()
    chosen = ev.significant_sites()
    out["chosen"] = [p.label for p in chosen]
    if len(chosen):
        same = _noise_test(model, disc, chosen, B)
        out["same_data_verdicts"] = same.table["verdict"].value_counts().to_dict()
        ev_c = _noise_test(model, conf, chosen, B)
        out["confirmation"] = _rows(ev_c)
        out["confirmation_counts"] = ev_c.table["verdict"].value_counts().to_dict()
    # targeted: the heads a node scan supports on discovery, and the paths among them (a smaller family)
    heads = _heads(model, range(model.n_layers))
    node = _noise_test(model, disc, heads, B)
    found = [heads.explicit[i] for i, v in enumerate(node.table["verdict"]) if v == "supported"]
    out["targeted_heads"] = [s.label for s in found]
    targeted = [ci.sites.Path((s,), (ci.Site(via, r.layer, r.head),)) for s in found for r in found
                if r.layer > s.layer for via in "qkv"] + [ci.sites.Path((s,), ("logits",)) for s in found]
    out["targeted_n_paths"] = len(targeted)
    if targeted:
        ev_t = _noise_test(model, disc, ci.sites.paths(targeted), B)
        out["targeted_discovery_counts"] = ev_t.table["verdict"].value_counts().to_dict()
        chosen_t = ev_t.significant_sites()
        out["targeted_chosen"] = [p.label for p in chosen_t]
        if len(chosen_t):
            ev_tc = _noise_test(model, conf, chosen_t, B)
            out["targeted_confirmation"] = _rows(ev_tc)
    # faithfulness curve of the heads, ranked on discovery (noise patching at every position), on confirmation
    ranking = [heads.explicit[i] for i in np.argsort(-np.abs(node.table["estimate"].to_numpy()), kind="stable")]
    curve = ci.faithfulness_curve(model, conf, ranking, universe=heads, n_resamples=B)
    out["curve"] = curve.to_dict()
    # stability of the head discovery (has_effect supported) over template resamples
    discover = by_claim(model, ci.sites.head_out(positions="end"), ci.claims.has_effect(),
                        intervention=ci.patch("denoise"), n_resamples=999)
    st = ci.stability(discover, data, n_resamples=n_stab, seed=0)
    out["stability"] = st.summary()
    return out


def _forward_floor(model, data, rows: int) -> float:
    """Seconds of `rows` plain forward passes of the clean prompts (in batches of 128, no intervention)."""
    import torch
    toks = data.tokens("clean")
    reps = -(-rows // data.n)
    big = toks.repeat(reps, 1)[:rows]
    t = time.perf_counter()
    with torch.inference_mode():
        for a in range(0, rows, 128):
            chunk = big[a:a + 128].to(model.device)
            model.hf(chunk, attention_mask=torch.ones_like(chunk))
    return time.perf_counter() - t


def edges(name: str, model, data, B: int, n_random: int, split_by: str, watch=()) -> dict:
    """Edge circuits: rank on discovery, choose the size on discovery, confirm on the other half (`watch`: edges
    whose rank to report, by label fragment)."""
    from causalinterp.circuits import edge_universe, rank
    disc, conf = data.split(0.5, seed=0, by=split_by)
    universe = edge_universe(model)
    out = {"model": name, "n_prompts": data.n, "n_discovery": disc.n, "n_confirmation": conf.n,
           "n_edges": len(universe)}
    t = time.perf_counter()
    scan = ci.scan(model, disc, ci.sites.paths(universe), intervention=ci.ablate("mean"), progress=False)
    out["edge_scan_seconds"] = time.perf_counter() - t
    ranking = rank(scan)
    effect = np.abs(scan.values.mean(0) - scan.base.mean())
    order = np.argsort(-effect, kind="stable")
    out["top_edges"] = [{"edge": universe[i].label, "mean |effect|": float(effect[i])} for i in order[:10]]
    if watch:
        labels = [e.label for e in ranking]
        out["rank_of"] = {k: labels.index(k) + 1 for k in labels if any(w in k for w in watch)}
    t = time.perf_counter()
    on_disc = ci.faithfulness_curve(model, disc, ranking, n_resamples=B)
    out["curve_seconds"] = time.perf_counter() - t
    reach = [int(k) for k, e in zip(on_disc.k, on_disc.estimate) if e >= 0.8 and k > 0]
    k = reach[0] if reach else int(on_disc.k[-1])
    out["chosen_k"] = k
    out["discovery_curve"] = {"k": on_disc.k.tolist(), "estimate": on_disc.estimate.tolist()}
    t = time.perf_counter()
    eff = ci.faithfulness(model, conf, ci.Circuit(edges=ranking[:k]), n_random=n_random)
    secs = time.perf_counter() - t
    rows = (2 + n_random) * conf.n
    out["faithfulness_seconds"] = secs
    out["faithfulness_rows"] = rows
    out["cost_vs_forward"] = secs / _forward_floor(model, conf, rows)
    ev = ci.evaluate(eff, ci.claims.faithful(at_least=0.8), n_resamples=B)
    br = ci.evaluate(eff, ci.claims.beats_random(n_random), n_resamples=B)
    out["faithful"] = {"estimate": ev.estimate, "ci_low": ev.ci_low, "ci_high": ev.ci_high, "verdict": ev.verdict,
                       "reasons": list(ev.reasons)}
    out["beats_random"] = {"verdict": br.verdict, "estimate": br.estimate, "reasons": list(br.reasons),
                           "random_faithfulness_median": float(np.median(
                               (eff.random_values.mean(0) - eff.base.mean()) / (eff.target.mean() - eff.base.mean())))}
    out["curve"] = {k: v for k, v in ci.faithfulness_curve(model, conf, ranking, n_resamples=B).to_dict().items()
                    if k != "ranking"}      # the ranking is every edge; its top is in top_edges
    return out


def stories_edges(small: bool, B: int) -> dict | None:
    from benchmarks.calibration import _stories_dir
    path = _stories_dir()
    if path is None:
        return None
    model = ci.load_model(str(path), device="cpu")
    data = ci.tasks.name_copy(model.tokenizer, 16 if small else 48)
    return edges("stories260K (name copying)", model, data, B, 20 if small else 50, "prompt")


def main(small: bool = False) -> dict:
    t0 = time.perf_counter()
    B = 1999 if small else 4999
    out = {"benchmark": "paths_circuits", "small": small, "alpha": ALPHA, "n_resamples": B,
           "machine": machine(), "versions": versions()}
    out["induction"] = induction(24 if small else 64, B)
    out["ioi"] = ioi(48 if small else 120, B, 4 if small else 20)
    n_random = 20 if small else 100
    out["edges"] = [edges("induction testbed", testbeds.load("induction"), testbeds.induction_data(24 if small else 64),
                          B, n_random, "prompt", watch=("L0.H1 @all -> q L1.H2", "L0.H1 @all -> k L1.H2",
                                                        "L0.H1 @all -> v L1.H2")),
                    edges("IOI testbed", testbeds.load("ioi"), testbeds.ioi_data(48 if small else 120, seed=7), B,
                          n_random, "cluster")]
    story = stories_edges(small, B)
    if story is not None:
        out["edges"].append(story)
    out["seconds"] = time.perf_counter() - t0
    return out


def _curve_md(c: dict) -> str:
    rows = [{"size": f"{100 * f:g}%", "k": k, "faithfulness": e, "ci_low": lo, "ci_high": hi}
            for f, k, e, lo, hi in zip(c["fractions"], c["k"], c["estimate"], c["ci_low"], c["ci_high"])]
    return (md_table(rows) + f"\nCPR {c['cpr'][0]:.3f} [{c['cpr'][1]:.3f}, {c['cpr'][2]:.3f}]; "
            f"CMD {c['cmd'][0]:.3f} [{c['cmd'][1]:.3f}, {c['cmd'][2]:.3f}] ({100 * c['confidence_level']:g}% "
            "percentile CIs, one bootstrap of the prompts for all sizes).\n")


def to_markdown(r: dict) -> str:
    i, o = r["induction"], r["ioi"]
    md = ["## Paths, circuits and stability",
          f"`python -m benchmarks.paths_circuits{' --small' if r['small'] else ''}` ({r['seconds']:.0f} s); "
          f"has_effect (two-sided), holm, alpha {r['alpha']}, {r['n_resamples']} resamples.\n",
          f"### Induction testbed: path account (n = {i['n_prompts']}, mean ablation at every position)\n",
          f"{i['n_paths']} paths (every layer-0 head -> every layer-1 head through q, k, v; every head -> logits) in "
          f"one scan, {i['scan_seconds']:.1f} s. Verdicts: {i['verdict_counts']}. Previous-token head L0.H1 -> "
          "induction head L1.H2:\n",
          md_table([{"via": via, **{k: v for k, v in row.items() if k != 'site'}}
                    for via, row in i["prev_to_induction"].items()]),
          "\nEvery supported path:\n", md_table(i["supported"]),
          "\n**Faithfulness curve** (heads ranked by |mean-ablation effect| on half of the prompts, curve on the "
          "other half; heads outside the circuit mean-ablated, MLPs kept):\n", _curve_md(i["curve"]),
          f"\n### IOI testbed: path account on discovery/confirmation splits (n = {o['n_prompts']}, "
          f"{o['n_clusters']} templates; split by template: {o['n_discovery']} / {o['n_confirmation']})\n",
          f"{o['n_paths']} paths scanned on the discovery half ({o['discovery_scan_seconds']:.1f} s; noise "
          f"patching). Discovery verdicts: {o['discovery_counts']}; the {len(o['chosen'])} supported paths, "
          f"re-tested on the same prompts: {o.get('same_data_verdicts')} (flagged selected-on-same-data, never "
          f"supported); on the confirmation half: {o.get('confirmation_counts')}:\n",
          md_table(o.get("confirmation", [])),
          f"\n**Targeted:** the heads a node scan supports on the discovery half ({', '.join(o['targeted_heads'])}; "
          f"noise patching at every position), and the {o['targeted_n_paths']} paths among them (to later heads "
          f"through q, k, v, and to the logits). Discovery verdicts: {o.get('targeted_discovery_counts')}; the "
          f"{len(o.get('targeted_chosen', []))} supported paths on the confirmation half:\n",
          md_table(o.get("targeted_confirmation", [])),
          "\n**Faithfulness curve** (heads ranked on discovery by |noise-patching effect|, curve on confirmation):\n",
          _curve_md(o["curve"])]
    s = o["stability"]
    freq = [{"head": k, "selection frequency": v, "in full-data circuit": "yes" if k in s["full_circuit"] else ""}
            for k, v in s["frequency"].items()]
    md += [f"\n**Stability of the head discovery** (denoise at end, has_effect supported; {s['n_resamples']} "
           f"half-samples of the templates): mean pairwise Jaccard {s['jaccard_mean']:.3f} (5/50/95%: "
           f"{', '.join(f'{v:.2f}' for v in s['jaccard_q05_q50_q95'])}), mean Jaccard to the full-data circuit "
           f"{s['to_full_mean']:.3f}.\n", md_table(freq)]
    md += _edges_md(r.get("edges", []))
    return "\n".join(md) + "\n"


def _edges_md(parts: list) -> list:
    if not parts:
        return []
    md = ["\n### Edge circuits (mean ablation; ranked and sized on a discovery half, tested on the other half)\n",
          "Every edge (embedding, heads, MLPs -> every q/k/v, MLP input and the logits downstream) ranked by "
          "|mean effect of ablating that edge alone| on the discovery half; the circuit is the top k edges, k the "
          "smallest MIB size whose faithfulness reaches 0.8 on the discovery half. On the confirmation half: "
          "`faithful(at_least=0.8)` (bootstrap CI of the ratio of means) and `beats_random` against random edge "
          "sets of the same size. Cost: seconds of `ci.faithfulness` (circuit, empty circuit and the random "
          "circuits, every prompt) over seconds of as many plain forward passes, in the same process.\n"]
    rows = []
    for p in parts:
        f, b = p["faithful"], p["beats_random"]
        rows.append({"model": p["model"], "edges": p["n_edges"], "disc/conf": f"{p['n_discovery']}/{p['n_confirmation']}",
                     "k": p["chosen_k"], "faithfulness [CI]": f"{f['estimate']:.3f} [{f['ci_low']:.3f}, {f['ci_high']:.3f}]",
                     "faithful(0.8)": f["verdict"], "random median": b["random_faithfulness_median"],
                     "beats_random": b["verdict"], "cost / forward": p["cost_vs_forward"]})
    md.append(md_table(rows))
    for p in parts:
        md += [f"\n**{p['model']}**: edge scan {p['edge_scan_seconds']:.1f} s; top edges on discovery:\n",
               md_table(p["top_edges"])]
        if p.get("rank_of"):
            md.append("\nRanks of the previous-token head -> induction head edges: "
                      + ", ".join(f"{k}: {v}" for k, v in p["rank_of"].items()) + "\n")
        md += ["\nEdge faithfulness curve on the confirmation half:\n", _curve_md(p["curve"])]
    return md


def _splice(r: dict) -> None:
    """Write this part's section into RESULTS.md (replacing an earlier one) and its numbers into results.json."""
    from benchmarks.__main__ import _section
    from causalinterp.result import _plain, write_atomic
    suffix = "_small" if r["small"] else ""
    path = ROOT / "benchmarks" / f"RESULTS{suffix}.md"
    text = path.read_text() if path.exists() else "# causalinterp benchmark results\n\n"
    start, end = "<!-- --8<-- [start:paths_circuits] -->", "<!-- --8<-- [end:paths_circuits] -->\n"
    section = _section("paths_circuits", to_markdown(r))
    if start in text:
        a, b = text.index(start), text.index(end) + len(end)
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    write_atomic(path, text)
    jpath = ROOT / "benchmarks" / f"results{suffix}.json"
    data = json.loads(jpath.read_text()) if jpath.exists() else {"parts": {}}
    data.setdefault("parts", {})["paths_circuits"] = _plain(r)
    write_atomic(jpath, json.dumps(data, indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true")
    result = main(small=ap.parse_args().small)
    print(to_markdown(result))
    _splice(result)
