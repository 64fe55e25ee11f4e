"""Real checkpoints where present: GPT-2 small on IOI and induction, against the published heads.

Runs only when ``gpt2`` loads from the local Hugging Face cache (this machine has no hub access:
then the part is skipped with a message).  On a machine with the hub, run
``HF_HUB_OFFLINE=0 python -m benchmarks.real_checkpoints`` once to download and compare.

Published head classes (Wang et al. 2022, IOI in GPT-2 small) and GPT-2 induction heads
(Olsson et al. 2022 and later replications) are compared with the heads our scans call significant.
"""
from __future__ import annotations

import argparse
import time

from benchmarks.common import machine, md_table, versions, write_json

import causalinterp as ci

IOI_CLASSES = {
    "name mover": [(9, 9), (9, 6), (10, 0)],
    "negative name mover": [(10, 7), (11, 10)],
    "S-inhibition": [(7, 3), (7, 9), (8, 6), (8, 10)],
    "induction": [(5, 5), (5, 8), (5, 9), (6, 9)],
    "duplicate token": [(0, 1), (0, 10), (3, 0)],
    "previous token": [(2, 2), (4, 11)],
}
GPT2_INDUCTION = [(5, 1), (5, 5), (6, 9), (7, 2), (7, 10)]


def load_gpt2():
    """GPT-2 from the local cache only; None (with the reason) when it is not there."""
    import os
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        offline = os.environ.get("HF_HUB_OFFLINE", "1") != "0"
        hf = AutoModelForCausalLM.from_pretrained("gpt2", local_files_only=offline)
        tok = AutoTokenizer.from_pretrained("gpt2", local_files_only=offline)
    except Exception as e:  # noqa: BLE001 - any failure means "not available here"
        return None, f"gpt2 is not in the local Hugging Face cache ({type(e).__name__}); skipped"
    return ci.load_model(hf, tok), ""


def _compare(ev, classes: dict) -> list[dict]:
    t = ev.table
    sig = {(int(r.layer), int(r.head)) for r in t.itertuples() if r.verdict == "supported"}
    rows = []
    for cls, heads in classes.items():
        found = [h for h in heads if h in sig]
        rows.append({"class": cls, "published": str(heads), "significant here": str(found),
                     "fraction": len(found) / len(heads)})
    known = {h for hs in classes.values() for h in hs}
    rows.append({"class": "(not in any class)", "published": "", "significant here": str(sorted(sig - known)),
                 "fraction": None})
    return rows


def main(small: bool = False) -> dict:
    t0 = time.perf_counter()
    out: dict = {"benchmark": "real_checkpoints", "small": small, "machine": machine(), "versions": versions()}
    model, why = load_gpt2()
    if model is None:
        out["skipped"] = why
        print(why)
        write_json("real_checkpoints", out)
        return out
    n = 16 if small else 100
    data = ci.tasks.ioi(model.tokenizer, n, seed=0)
    eff = ci.scan(model, data, ci.sites.head_out(positions="end"))
    ev = ci.evaluate(eff, ci.claims.has_effect(), correction="maxT")
    out["ioi"] = _compare(ev, IOI_CLASSES)
    ind = ci.tasks.induction(model.tokenizer, n, seq_len=20, seed=0)
    eff = ci.scan(model, ind, ci.sites.head_out(positions="end"), metric=ci.metrics.logprob())
    ev = ci.evaluate(eff, ci.claims.has_effect(), correction="maxT")
    out["induction"] = _compare(ev, {"induction": GPT2_INDUCTION})
    out["seconds"] = time.perf_counter() - t0
    write_json("real_checkpoints", out)
    return out


def to_markdown(r: dict) -> str:
    if "skipped" in r:
        return ("## Real checkpoints\n\nSkipped: " + r["skipped"] + ". On a machine with the Hugging Face hub: "
                "`HF_HUB_OFFLINE=0 python -m benchmarks.real_checkpoints`.\n")
    return ("## Real checkpoints: GPT-2 small\n\n**IOI heads (denoise at end, maxT):**\n\n" + md_table(r["ioi"])
            + "\n**Induction heads:**\n\n" + md_table(r["induction"]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true")
    print(to_markdown(main(ap.parse_args().small)))
