"""The suite's speed part: statistics, patching, and the end-to-end IOI head scan.

  stats_speed     causalinterp.stats vs scipy.stats looped over sites (full size: 200 prompts x 1,000 sites
                  x 9,999 resamples; scipy timed on 20 sites and extrapolated)
  patching_speed  causalinterp.scan vs TransformerLens, a naive nnsight loop and the forward-pass floor, at
                  the *medium* size (GPT-2-small shape, 8 prompts of 8 tokens) so the part stays within
                  minutes; the full-size table (16 prompts of 16 tokens, ~10 min) comes from
                  ``python benchmarks/patching_speed.py --threads 1`` and its stored JSON is shown, dated
  e2e_ioi         the whole IOI head scan with statistics vs TransformerLens per prompt + scipy + Holm

``small=True``: every part at its smoke size (seconds).  Torch runs on one thread.

    python -m benchmarks.speed [--small]
"""
from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

from benchmarks.common import md_table, write_json  # noqa: E402

THREADS = 1


def _run(name, fn, log):
    t = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 - one failing sub-benchmark must not lose the others
        out = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        log(f"speed: {name} FAILED: {out['error']}")
    out["part_seconds"] = time.perf_counter() - t
    return out


def main(small: bool = False, verbose: bool = True) -> dict:
    import torch

    from benchmarks import e2e_ioi, patching_speed, stats_speed

    torch.set_num_threads(THREADS)
    log = print if verbose else (lambda *a, **k: None)
    out = {"small": small, "torch_threads": THREADS}
    out["stats"] = _run("stats_speed", lambda: stats_speed.main(small=small), log)
    out["patching"] = _run("patching_speed", lambda: patching_speed.main(
        small=small, medium=not small, threads=THREADS, verbose=verbose), log)
    stored = patching_speed.RESULTS
    out["patching_full_stored"] = (json.loads(stored.read_text()) if stored.is_file() else None)
    out["e2e_ioi"] = _run("e2e_ioi", lambda: e2e_ioi.main(small=small, verbose=verbose), log)
    write_json("speed_small" if small else "speed", out)
    return out


# --- markdown ---------------------------------------------------------------------------------------
def _stats_md(r: dict) -> str:
    if "error" in r:
        return f"FAILED: {r['error']}\n"
    base = {row["task"]: row["seconds"] for row in r["rows"] if row["impl"] != "causalinterp"}
    rows = []
    for row in r["rows"]:
        task = row["task"].replace(" (max_memory tight)", "")
        b = base.get(task)
        rows.append({"task": row["task"], "method": row["impl"], "seconds": row["seconds"],
                     "x baseline": None if b is None else row["seconds"] / b,
                     "peak MiB (tracemalloc)": row["peak_mib"],
                     "": "extrapolated" if row["extrapolated"] else ""})
    return (f"{r['n_prompts']} prompts x {r['n_sites']} sites x {r['n_resamples']} resamples; baseline = the "
            f"scipy.stats loop of the same task. {r['note']}\n\n" + md_table(rows)
            + f"\nSpeed-up: permutation {r['speedup_permutation']:.0f}x, BCa bootstrap "
              f"{r['speedup_bootstrap_bca']:.0f}x.\n")


def _patching_md(r: dict) -> str:
    if "error" in r:
        return f"FAILED: {r['error']}\n"
    c = r["config"]
    parts = [f"{c['n_layer']} layers x {c['n_head']} heads, d={c['n_embd']}, vocab {c['vocab_size']}, random "
             f"weights; {c['n_prompts']} prompts of {c['seq_len']} tokens; torch threads "
             f"{r['machine'].get('torch_threads')}; run {r['started_utc']}. Baseline = TransformerLens.\n"]
    for sweep, s in r["sweeps"].items():
        tl = s["methods"]["transformerlens"]
        rows = []
        for name, m in s["methods"].items():
            rows.append({"method": name, "seconds": m["seconds"], "CPU s": m["cpu_seconds"],
                         "x baseline (TL)": m["seconds"] / tl["seconds"],
                         "x TL (CPU)": m["cpu_seconds"] / tl["cpu_seconds"], "x floor": m["x_floor"],
                         "peak growth MB": m["peak_growth_mb"], "peak RSS MB": m["peak_rss_mb"],
                         "max |mean diff|": m.get("max_abs_diff_vs_causalinterp")})
        parts.append(f"**{sweep}**: {s['n_sites']} sites; causalinterp {s['rows_per_pass']} rows/pass, "
                     f"{s['n_forward_passes']} forward passes (floor)\n\n" + md_table(rows))
    return "\n".join(parts)


FLOOR_NOTE = ("`floor` = the forward passes causalinterp's plan makes (2 unpatched runs + one full forward per "
              "patched pass of `rows_per_pass` rows), with no intervention.  The engine now starts each patched pass "
              "at its lowest patched layer (blocks below it are replaced by the base run's cached outputs), so it "
              "runs fewer block forwards than the floor does: `x floor` below 1 means less work, not a faster "
              "forward pass.\n")


def to_markdown(r: dict) -> str:
    from benchmarks.e2e_ioi import to_markdown as e2e_md

    out = ["## speed\n",
           f"{'Smoke sizes (`--small`).' if r['small'] else ''} Torch on {r['torch_threads']} thread; one run per "
           "method in one process; wall-clock seconds (CPU seconds where shown); on a machine shared with other "
           "jobs compare ratios within a table.\n",
           "### Statistics: causalinterp.stats vs scipy.stats in a loop\n", _stats_md(r["stats"]),
           f"### Patching: {'small size (`patching_speed.main(small=True)`)' if r['small'] else 'medium size (`patching_speed.main(medium=True)`)'}\n",
           _patching_md(r["patching"]), FLOOR_NOTE]
    full = r.get("patching_full_stored")
    if full and not full.get("small"):
        out += ["### Patching: full size, stored result (not re-run by the suite)\n",
                f"From `python benchmarks/patching_speed.py` (benchmarks/results/patching_speed.json), measured "
                f"{full.get('started_utc')} to {full.get('finished_utc')} (about 10 minutes, so the suite does not re-run it); re-run it after "
                "engine changes: it is only as current as that date.\n",
                _patching_md(full)]
    else:
        out.append("(No stored full-size patching result: run `python benchmarks/patching_speed.py --threads 1`.)\n")
    e2e = r["e2e_ioi"]
    out.append(f"FAILED e2e_ioi: {e2e['error']}\n" if "error" in e2e else e2e_md(e2e))
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="smoke sizes (seconds)")
    args = ap.parse_args()
    res = main(small=args.small)
    print("\n" + to_markdown(res))
