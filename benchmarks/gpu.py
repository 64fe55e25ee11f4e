"""GPU patching throughput: our engine vs TransformerLens' patching helpers vs a naive nnsight loop.

One prepared script for a GPU machine (about 5-8 minutes on an H100): random-weight models of two
shapes, each in fp32 and bf16:

  gpt2-small  12 layers, 12 heads, d=768, vocab 50257 (GPT-2 small)
  llama-1b    16 layers, 32 heads (8 KV heads), d=2048, d_mlp=8192, vocab 32000 (~1.1B parameters)

and two exact sweeps on N prompts of T tokens: ``head_out`` at every layer x head x position in a
window of the last P positions, and ``resid_pre`` at every layer x position.  Per method it reports
patched sequences per second (sites x prompts / seconds), peak GPU memory
(``torch.cuda.max_memory_allocated`` after a reset) and, for our engine, the rows per pass chosen
from ``memory_budget`` (default 40GB; ``--budget``).

  causalinterp   ``ci.scan`` (denoise, logit_diff) including its clean/corrupt runs
  transformerlens ``patching.get_act_patch_resid_pre`` / ``get_act_patch_attn_head_out_by_pos`` on a
                 ``TransformerBridge`` booted from a copy of the same weights (fp32/bf16 as the model)
  nnsight_naive  one ``trace`` per site over all N prompts, clean activations cached first, full logits

TransformerLens and the naive loop do one forward pass per site, so they are timed on the first
``--baseline-sites`` sites of each sweep and their rate is per patched sequence (it does not depend
on how many sites there are); our engine runs the whole sweep.  Values are cross-checked: on the
shared sites every method's prompt-mean metric must agree with ours (to 1e-3 relative in fp32, 5e-2
in bf16), else the row says so.

``python -m benchmarks.gpu [--tiny] [--device cuda] [--out PATH]``; ``--tiny`` is a seconds-long
smoke run on CPU (used by the tests).  Writes benchmarks/results/gpu.json and prints a Markdown
section for RESULTS.md.  Never needed by a test to pass on a GPU.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time

import numpy as np

from benchmarks.common import machine, md_table, versions, write_json

SHAPES = {
    "gpt2-small": dict(family="gpt2", n_layers=12, n_heads=12, n_kv=12, d=768, d_mlp=3072, vocab=50257),
    "llama-1b": dict(family="llama", n_layers=16, n_heads=32, n_kv=8, d=2048, d_mlp=8192, vocab=32000),
    "tiny-gpt2": dict(family="gpt2", n_layers=2, n_heads=4, n_kv=4, d=32, d_mlp=128, vocab=101),
    "tiny-llama": dict(family="llama", n_layers=2, n_heads=4, n_kv=2, d=32, d_mlp=64, vocab=101),
}


def build_hf(shape: dict, dtype, device: str, seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    eot = shape["vocab"] - 1
    if shape["family"] == "gpt2":
        cfg = GPT2Config(n_layer=shape["n_layers"], n_head=shape["n_heads"], n_embd=shape["d"],
                         n_inner=shape["d_mlp"], vocab_size=shape["vocab"], n_positions=1024, resid_pdrop=0.0,
                         embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eot, eos_token_id=eot)
        hf = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(num_hidden_layers=shape["n_layers"], num_attention_heads=shape["n_heads"],
                          num_key_value_heads=shape["n_kv"], hidden_size=shape["d"], intermediate_size=shape["d_mlp"],
                          vocab_size=shape["vocab"], max_position_embeddings=2048, bos_token_id=eot,
                          eos_token_id=eot, pad_token_id=eot)
        hf = LlamaForCausalLM(cfg)
    return hf.to(device=device, dtype=dtype).eval()


def build_data(shape: dict, n: int, T: int, seed: int = 1):
    import causalinterp as ci
    g = np.random.default_rng(seed)
    V = shape["vocab"] - 1
    clean = g.integers(0, V, (n, T))
    corrupt = g.integers(0, V, (n, T))
    answer = g.integers(0, V, n)
    wrong = (answer + 1 + g.integers(0, V - 1, n)) % V
    return ci.ContrastSet.from_tokens(clean.tolist(), corrupt.tolist(), answer.tolist(), wrong.tolist())


def sweep_sites(sweep: str, shape: dict, T: int, window: int):
    import causalinterp as ci
    if sweep == "resid_pre":
        return ci.sites.resid_pre()  # every layer x every position
    return ci.sites.head_out(positions=list(range(T - window, T)))


def _cuda_peak_reset(device):
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak(device):
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def run_ours(model, data, sites, budget):
    import causalinterp as ci
    eff = ci.scan(model, data, sites, memory_budget=budget, progress=False)
    return eff.values.mean(0), eff


def run_naive(model, data, resolved, n_sites):
    """One nnsight trace per site over all prompts: what a plain nnsight script does."""
    import nnsight
    import torch

    from causalinterp.models.adapters import component_view, head_index, raw_tensor
    dev = model.device
    clean, corrupt = data.tokens("clean").to(dev), data.tokens("corrupt").to(dev)
    answer, wrong = torch.tensor(data.answer, device=dev), torch.tensor(data.wrong, device=dev)
    rows = torch.arange(data.n, device=dev)
    keys = sorted({(s.component, s.layer) for s in resolved[:n_sites]}, key=lambda k: k[1])
    out = []
    with torch.inference_mode():
        with model.nn.trace(clean):
            cache = []
            for comp, layer in keys:
                loc = model.location(comp, layer)
                env = model.envoy(loc.module)
                raw = raw_tensor(env.input if loc.io == "input" else env.output)
                cache.append(component_view(model.adapter, comp, raw, model.n_heads, model.n_kv_heads,
                                            model.d_head).clone())
            cache = nnsight.save(cache)
        cache = dict(zip(keys, cache))
        for s in resolved[:n_sites]:
            loc = model.location(s.component, s.layer)
            pos = data.position_index(s.position, 0)
            with model.nn.trace(corrupt):
                env = model.envoy(loc.module)
                raw = raw_tensor(env.input if loc.io == "input" else env.output)
                view = component_view(model.adapter, s.component, raw, model.n_heads, model.n_kv_heads, model.d_head)
                src = cache[(s.component, s.layer)]
                if s.head is None:
                    view[:, pos] = src[:, pos]
                else:
                    h = head_index(s.component, s.head, model.n_heads, model.n_kv_heads)
                    view[:, pos, h] = src[:, pos, h]
                logits = nnsight.save(model.nn.output.logits)
            last = logits[rows, -1].double()
            out.append(float((last[rows, answer] - last[rows, wrong]).mean()))
    return np.array(out)


def run_transformerlens(hf, data, resolved, n_sites, sweep, T, dtype, device):
    import pandas as pd
    import torch
    from transformer_lens import patching
    from transformer_lens.model_bridge import TransformerBridge

    from benchmarks.patching_speed import offline_tokenizer
    with tempfile.TemporaryDirectory() as d:
        tok = offline_tokenizer(hf.config.vocab_size, d)
        arch = "gpt2" if hf.config.model_type == "gpt2" else "meta-llama/Llama-3.2-1B"
        bridge = TransformerBridge.boot_transformers(arch, hf_model=copy.deepcopy(hf), tokenizer=tok, device=device,
                                                     dtype=dtype)
    bridge.eval()
    clean, corrupt = data.tokens("clean").to(device), data.tokens("corrupt").to(device)
    answer, wrong = torch.tensor(data.answer, device=device), torch.tensor(data.wrong, device=device)
    rows = torch.arange(data.n, device=device)

    def metric(logits):
        last = logits[:, -1].double()
        return (last[rows, answer] - last[rows, wrong]).mean()

    sites = resolved[:n_sites]
    t0 = time.perf_counter()
    with torch.no_grad():
        _, clean_cache = bridge.run_with_cache(clean)
        if sweep == "resid_pre":
            index_df = pd.DataFrame([{"layer": s.layer, "pos": data.position_index(s.position, 0)} for s in sites])
            flat = patching.get_act_patch_resid_pre(bridge, corrupt, clean_cache, metric, index_axis_names=None,
                                                    index_df=index_df)
        else:
            index_df = pd.DataFrame([{"layer": s.layer, "pos": data.position_index(s.position, 0), "head": s.head}
                                     for s in sites])
            flat = patching.get_act_patch_attn_head_out_by_pos(bridge, corrupt, clean_cache, metric,
                                                               index_axis_names=None, index_df=index_df)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return np.asarray(flat.double().cpu()), time.perf_counter() - t0, bridge


def bench(name: str, dtype_name: str, device: str, n: int, T: int, window: int, budget: str, baseline_sites: int,
          with_tl: bool = True) -> list[dict]:
    import torch

    import causalinterp as ci
    shape = SHAPES[name]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    hf = build_hf(shape, dtype, device)
    model = ci.load_model(hf, device=device)
    data = build_data(shape, n, T)
    tol = 1e-3 if dtype_name == "fp32" else 5e-2
    rows = []
    for sweep in ("head_out", "resid_pre"):
        first = len(rows)
        sites = sweep_sites(sweep, shape, T, window)
        ci.scan(model, data, ci.sites.resid_pre(layers=[0], positions=[-1]), progress=False)  # warm-up
        _cuda_peak_reset(device)
        t0 = time.perf_counter()
        ours, eff = run_ours(model, data, sites, budget)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t_ours = time.perf_counter() - t0
        resolved = list(eff.sites)
        k = min(baseline_sites, len(resolved))
        base = {"model": name, "dtype": dtype_name, "sweep": sweep, "sites": len(resolved), "prompts": n,
                "seq_len": T}
        rows.append({**base, "method": "causalinterp", "patched_seq_per_s": len(resolved) * n / t_ours,
                     "seconds": t_ours, "peak_gpu_mb": _cuda_peak(device), "rows_per_pass": eff.meta["rows_per_pass"],
                     "timed_sites": len(resolved), "agrees": True})
        _cuda_peak_reset(device)
        t0 = time.perf_counter()
        naive = run_naive(model, data, resolved, k)
        t_naive = time.perf_counter() - t0
        rows.append({**base, "method": "nnsight_naive", "patched_seq_per_s": k * n / t_naive, "seconds": t_naive,
                     "peak_gpu_mb": _cuda_peak(device), "rows_per_pass": n, "timed_sites": k,
                     "agrees": bool(np.allclose(naive, ours[:k], rtol=tol, atol=tol))})
        if with_tl:
            _cuda_peak_reset(device)
            try:
                tl, t_tl, bridge = run_transformerlens(hf, data, resolved, k, sweep, T, dtype, device)
                rows.append({**base, "method": "transformerlens", "patched_seq_per_s": k * n / t_tl,
                             "seconds": t_tl, "peak_gpu_mb": _cuda_peak(device), "rows_per_pass": n,
                             "timed_sites": k, "agrees": bool(np.allclose(tl, ours[:k], rtol=tol, atol=tol))})
                del bridge
            except Exception as e:  # noqa: BLE001 - reported in the table, the other methods still count
                rows.append({**base, "method": "transformerlens", "error": f"{type(e).__name__}: {e}"[:200]})
        print(md_table(rows[first:], ["model", "dtype", "sweep", "method", "patched_seq_per_s", "peak_gpu_mb",
                                   "rows_per_pass", "agrees"]), flush=True)
    del model, hf
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


def main(tiny: bool = False, device: str | None = None, budget: str = "40GB", baseline_sites: int = 48,
         out: str | None = None) -> dict:
    import torch
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t_start = time.perf_counter()
    card = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    runs = ([("tiny-gpt2", "fp32", 3, 6, 2), ("tiny-llama", "fp32", 3, 6, 2)] if tiny else
            [("gpt2-small", "fp32", 32, 64, 8), ("gpt2-small", "bf16", 32, 64, 8),
             ("llama-1b", "fp32", 16, 64, 4), ("llama-1b", "bf16", 16, 64, 4)])
    rows = []
    for name, dt, n, T, window in runs:
        rows += bench(name, dt, device, n, T, window, budget, 4 if tiny else baseline_sites, with_tl=not tiny)
    result = {"benchmark": "gpu", "tiny": tiny, "device": device, "card": card, "machine": machine(),
              "versions": versions(), "memory_budget": budget, "rows": rows, "seconds": time.perf_counter() - t_start}
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=1, default=str)
    elif not tiny:
        write_json("gpu", result)
    return result


def to_markdown(r: dict) -> str:
    if r is None or r.get("device", "cpu") == "cpu" or r.get("tiny"):
        return ("## GPU patching throughput\n\nNot yet measured on a GPU. `python -m benchmarks.gpu` on a GPU "
                "machine (one script, about 5-8 minutes) fills this section.\n")
    cols = ["model", "dtype", "sweep", "sites", "method", "patched_seq_per_s", "peak_gpu_mb", "rows_per_pass",
            "timed_sites", "agrees"]
    return (f"## GPU patching throughput ({r['card']})\n\n`python -m benchmarks.gpu` in {r['seconds'] / 60:.1f} min, "
            f"memory_budget {r['memory_budget']}; random weights; TransformerLens and the naive loop timed on the "
            "first sites of each sweep (per-sequence rate).\n\n" + md_table(r["rows"], cols))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="seconds-long CPU smoke run")
    ap.add_argument("--device", default=None)
    ap.add_argument("--budget", default="40GB", help="memory_budget for our engine (default 40GB)")
    ap.add_argument("--baseline-sites", type=int, default=48)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = main(a.tiny, a.device, a.budget, a.baseline_sites, a.out)
    print(to_markdown(res))
