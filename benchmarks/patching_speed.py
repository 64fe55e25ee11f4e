"""Patching speed: causalinterp vs TransformerLens vs a naive nnsight loop vs the forward-pass floor.

Spec (the issue): on a GPT-2-small-shaped model (12 layers, 12 heads, d=768, random weights, full
50,257 vocabulary), a ``resid_pre`` sweep over all layers x positions and a ``head_out`` sweep over
all layers x heads at the last position, N=16 prompts of 16 tokens.  Report, in one process:

  causalinterp  ``ci.scan`` (denoise, logit_diff), including its own clean/corrupt runs
  transformerlens  ``get_act_patch_resid_pre`` / ``get_act_patch_attn_head_out_by_pos`` given an
                ``index_df`` of (layer, last pos, head) rows and ``index_axis_names=None`` (without
                it the by-pos helper sweeps every position: 16x the work), including the
                ``run_with_cache`` of the clean prompts; booted with
                ``TransformerBridge.boot_transformers`` on its own deep copy of the model
  nnsight_naive one ``trace`` per site over the 16 corrupt prompts, clean activations cached in one
                trace first; full logits, as a plain nnsight script computes them
  floor         the forward passes causalinterp makes, with no intervention: the two unpatched runs
                plus ceil(n_sites*N / rows_per_pass) passes of ``eff.meta['rows_per_pass']`` rows,
                plain Hugging Face forward with ``logits_to_keep`` like the engine

Targets on CPU: causalinterp within 1.15x of the floor and never slower than TransformerLens.

Equal work: every method returns its per-site mean metric, and the run fails (after writing the
JSON) unless they agree with causalinterp's to 1e-3, so the timings compare the same computation.
All methods run under ``torch.no_grad()``/``inference_mode`` (TransformerLens users conventionally
call ``torch.set_grad_enabled(False)``; without it TL also builds autograd graphs and is slower).

Memory: per method, peak resident set size on Linux.  Before each method the process runs
``gc.collect()`` and glibc ``malloc_trim(0)`` (so freed memory is given back and not silently
reused), reads ``VmRSS``, and resets the kernel's high-water mark by writing ``5`` to
``/proc/self/clear_refs``; afterwards ``VmHWM`` is that method's peak RSS.  Reported: the peak
(``peak_rss_mb``, includes the ~0.5 GB of weights and the interpreter) and the growth above the
RSS at the method's start (``peak_growth_mb``: activations, caches, logits).  Where clear_refs is
not writable, growth falls back to a 2 ms RSS sampler thread (``memory_method`` says which).
Tensors are allocated by torch outside Python's allocator, so tracemalloc would not see them.

Timings are one run each, after one warm-up forward pass: wall-clock (``time.perf_counter``, the
headline) and the process's CPU time (``time.process_time``, all threads), which is less distorted
when other processes share the CPUs; the 1-minute load average before/after each method is recorded
too.  On a shared machine compare ratios within a run, and prefer the CPU-time ratios.  With
2 threads on 2 cores that other jobs also use, OpenMP threads wait on descheduled peers and single
runs swing by 2-10x; ``--threads 1`` makes wall time ~= CPU time and the ratios repeatable.

Sizes: full (the spec above, ~10 min on 2 shared cores, writes benchmarks/results/patching_speed.json);
``--medium``: the same GPT-2-small-shaped model with 8 prompts of 8 tokens (~1/8 of the work for
resid_pre, ~1/4 for head_out; the suite's speed part runs it; writes patching_speed_medium.json);
``--small``: a 2-layer toy (seconds, writes nothing unless --out).

Usage:  python benchmarks/patching_speed.py [--small | --medium] [--threads N] [--out PATH]
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "patching_speed.json"
RESULTS_MEDIUM = RESULTS.with_name("patching_speed_medium.json")
AGREE_ATOL = 1e-3

FULL = dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_prompts=16, seq_len=16)
MEDIUM = dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_prompts=8, seq_len=8)
SMALL = dict(n_layer=2, n_head=4, n_embd=32, vocab_size=60, n_prompts=4, seq_len=6)


# --- measurement ---------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) if m else 0


def _trim() -> None:
    gc.collect()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakRSS:
    """Peak RSS of a block: VmHWM after resetting it through /proc/self/clear_refs, else sampling."""

    def __enter__(self):
        _trim()
        self.start_kb = _status_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM reset via /proc/self/clear_refs"
            self._thread = None
        except OSError:
            self.method = "VmRSS sampled every 2 ms"
            self._peak = self.start_kb
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, _status_kb("VmRSS"))
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self._thread is None:
            self.peak_kb = _status_kb("VmHWM")
        else:
            self._stop.set()
            self._thread.join()
            self.peak_kb = max(self._peak, _status_kb("VmRSS"))
        return False

    def as_dict(self) -> dict:
        return {"peak_rss_mb": round(self.peak_kb / 1024, 1),
                "peak_growth_mb": round(max(0, self.peak_kb - self.start_kb) / 1024, 1),
                "memory_method": self.method}


def _measure(fn):
    """Run fn() once; returns (its result, {seconds, memory, load average})."""
    load0 = os.getloadavg()[0]
    with PeakRSS() as mem:
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return out, {"seconds": round(seconds, 5), "cpu_seconds": round(cpu, 5), **mem.as_dict(),
                 "loadavg_1min_before": round(load0, 2), "loadavg_1min_after": round(os.getloadavg()[0], 2)}


# --- model and data --------------------------------------------------------------------------------
def build_model(shape: dict, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    eot = shape["vocab_size"] - 1
    cfg = GPT2Config(n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"],
                     vocab_size=shape["vocab_size"], n_positions=max(64, shape["seq_len"]), resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eot, eos_token_id=eot)
    model = GPT2LMHeadModel(cfg)
    if shape["n_layer"] <= 2:  # make patching effects clearly non-zero in the tiny model
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 2:
                    p.mul_(8.0)
    return model.eval()


def build_data(shape: dict, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    V, N, T = shape["vocab_size"] - 1, shape["n_prompts"], shape["seq_len"]
    clean = torch.randint(0, V, (N, T), generator=g)
    corrupt = torch.randint(0, V, (N, T), generator=g)
    answer = torch.randint(0, V, (N,), generator=g)
    wrong = (answer + 1 + torch.randint(0, V - 1, (N,), generator=g)) % V
    return clean, corrupt, answer, wrong


def offline_tokenizer(vocab_size: int, directory: str):
    """Word-level tokenizer over the model's ids, built offline (boot_transformers insists on one).

    Saved and reloaded so it carries the ``name_or_path`` TransformerLens reads.  Never used to
    tokenise: every method is given token ids.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size - 1)}
    vocab["<|endoftext|>"] = vocab_size - 1
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  add_bos_token=True)
    tok.save_pretrained(directory)
    return PreTrainedTokenizerFast.from_pretrained(directory)


# --- sweeps: the sites, in causalinterp's column order -------------------------------------------
def sweep_sites(sweep: str, shape: dict) -> list[tuple[int, int]]:
    """(layer, position) for resid_pre; (layer, head) at the last position for head_out."""
    L, H, T = shape["n_layer"], shape["n_head"], shape["seq_len"]
    if sweep == "resid_pre":
        return [(l, p) for l in range(L) for p in range(T)]
    return [(l, h) for l in range(L) for h in range(H)]


def run_causalinterp(m, data, sweep: str):
    import causalinterp as ci

    sites = ci.sites.resid_pre() if sweep == "resid_pre" else ci.sites.head_out(positions="end")
    eff = ci.scan(m, data, sites, intervention=ci.patch("denoise"), metric=ci.metrics.logit_diff(), progress=False)
    return eff


def run_floor(hf, clean, corrupt, n_sites: int, rows_per_pass: int):
    """causalinterp's forward passes with no intervention: 2 unpatched runs + the patched-pass shapes."""
    from causalinterp.engine import plan

    N = clean.shape[0]
    base = plan.chunks(N, min(rows_per_pass, N))
    spans = plan.chunks(n_sites * N, rows_per_pass)
    keep = torch.tensor([clean.shape[1] - 1])
    with torch.inference_mode():
        for toks in (clean, corrupt):
            for a, b in base:
                hf(input_ids=toks[a:b], logits_to_keep=keep).logits.cpu()
        for a, b in spans:
            rows = torch.arange(a, b) % N
            hf(input_ids=corrupt[rows], logits_to_keep=keep).logits.cpu()
    return 2 * len(base) + len(spans)


def _mean_logit_diff_fn(answer, wrong):
    rows = torch.arange(answer.shape[0])

    def metric(logits):  # [batch, pos, vocab] -> batch-mean logit diff at the last position
        last = logits[:, -1, :].double()
        return (last[rows, answer] - last[rows, wrong]).mean()
    return metric


def run_transformerlens(bridge, clean, corrupt, answer, wrong, sweep: str, shape: dict):
    import pandas as pd
    from transformer_lens import patching

    metric = _mean_logit_diff_fn(answer, wrong)
    with torch.no_grad():
        _, clean_cache = bridge.run_with_cache(clean)
        if sweep == "resid_pre":
            grid = patching.get_act_patch_resid_pre(bridge, corrupt, clean_cache, metric)  # [layer, pos]
            return grid.reshape(-1).double().numpy()
        T = shape["seq_len"]
        index_df = pd.DataFrame([{"layer": l, "pos": T - 1, "head": h} for l, h in sweep_sites(sweep, shape)])
        flat = patching.get_act_patch_attn_head_out_by_pos(bridge, corrupt, clean_cache, metric,
                                                           index_axis_names=None, index_df=index_df)
        return flat.double().numpy()


def run_nnsight_naive(nn_model, clean, corrupt, answer, wrong, sweep: str, shape: dict):
    """One trace per site; what a plain nnsight script does (full logits, no batching of sites)."""
    import nnsight

    metric = _mean_logit_diff_fn(answer, wrong)
    L, H = shape["n_layer"], shape["n_head"]
    dh = shape["n_embd"] // H
    N, T = clean.shape
    blocks = nn_model.transformer.h
    out = []
    with torch.no_grad():
        with nn_model.trace(clean):
            if sweep == "resid_pre":
                cache = nnsight.save([blocks[l].input.clone() for l in range(L)])
            else:
                cache = nnsight.save([blocks[l].attn.c_proj.input.clone() for l in range(L)])
        for l, x in sweep_sites(sweep, shape):
            with nn_model.trace(corrupt):
                if sweep == "resid_pre":
                    blocks[l].input[:, x] = cache[l][:, x]
                else:
                    z = blocks[l].attn.c_proj.input.view(N, T, H, dh)
                    z[:, T - 1, x] = cache[l].view(N, T, H, dh)[:, T - 1, x]
                logits = nnsight.save(nn_model.output.logits)
            out.append(float(metric(logits)))
    return np.array(out)


# --- driver --------------------------------------------------------------------------------------
def _versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("transformers", "nnsight", "transformer_lens", "causalinterp", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            try:
                from importlib.metadata import version
                out[mod] = version(mod.replace("_", "-"))
            except Exception:  # noqa: BLE001
                out[mod] = None
    return out


def _machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            cpu = m.group(1).strip() if m else ""
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "torch_threads": torch.get_num_threads(), "ram_gb": mem_gb, "device": "cpu"}


def _table(results: dict) -> str:
    lines = []
    for sweep, r in results["sweeps"].items():
        lines.append(f"\n{sweep}: {r['n_sites']} sites x {results['config']['n_prompts']} prompts "
                     f"(causalinterp: {r['rows_per_pass']} rows/pass, {r['n_forward_passes']} forward passes)")
        lines.append(f"{'method':<16}{'seconds':>10}{'x floor':>10}{'CPU s':>10}{'x floor':>10}{'peak RSS MB':>13}"
                     f"{'growth MB':>11}{'max|mean diff|':>16}")
        for name, mres in r["methods"].items():
            diff = mres.get("max_abs_diff_vs_causalinterp")
            lines.append(f"{name:<16}{mres['seconds']:>10.2f}{mres['x_floor']:>10.3f}{mres['cpu_seconds']:>10.2f}"
                         f"{mres['x_floor_cpu']:>10.3f}{mres['peak_rss_mb']:>13.0f}{mres['peak_growth_mb']:>11.0f}"
                         f"{'' if diff is None else f'{diff:.1e}':>16}")
        t = r["targets"]
        lines.append(f"targets: causalinterp <= 1.15x floor: {t['within_1.15x_floor']} ({t['x_floor']:.3f}x); "
                     f"not slower than TransformerLens: {t['not_slower_than_transformerlens']} "
                     f"({t['x_transformerlens']:.3f}x TL); CPU time: {t['x_floor_cpu']:.3f}x floor, "
                     f"{t['x_transformerlens_cpu']:.3f}x TL")
    return "\n".join(lines)


def main(small: bool = False, out_path: str | os.PathLike | None = None, sweeps=("resid_pre", "head_out"),
         verbose: bool = True, threads: int | None = None, medium: bool = False) -> dict:
    """Run the benchmark; return the results dict (and write JSON: `out_path`, or the default
    benchmarks/results/patching_speed.json for the full-size run; the small run writes only if asked).

    small=True: a 2-layer model with a 60-token vocabulary and 4 prompts of 6 tokens (seconds).
    medium=True: the full GPT-2-small shape with 8 prompts of 8 tokens (writes patching_speed_medium.json).
    threads: torch intra-op threads for every method (None: torch's default).  On a machine whose
    cores are shared with other jobs, 1 thread gives the most repeatable numbers (see the docstring).
    Raises RuntimeError (after writing) if the methods' per-site means disagree.
    """
    if threads is not None:
        torch.set_num_threads(int(threads))
    import causalinterp as ci
    from transformer_lens.model_bridge import TransformerBridge

    size = "small" if small else "medium" if medium else "full"
    shape = {"small": SMALL, "medium": MEDIUM, "full": FULL}[size]
    log = print if verbose else (lambda *a, **k: None)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    log(f"patching_speed: {size} model {shape}, torch threads {torch.get_num_threads()}")

    hf = build_model(shape)
    clean, corrupt, answer, wrong = build_data(shape)
    data = ci.ContrastSet.from_tokens(clean, corrupt, answer=answer, wrong=wrong)
    m = ci.load_model(hf, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tok = offline_tokenizer(shape["vocab_size"], tmp)
        # The bridge rewrites the module tree in place: it gets its own copy (same weights).
        bridge = TransformerBridge.boot_transformers("gpt2", hf_model=copy.deepcopy(hf), tokenizer=tok, device="cpu")
    bridge.eval()
    with torch.no_grad():  # same weights, and one warm-up forward for every code path
        ref = hf(clean).logits
        same_weights = float((bridge(clean) - ref).abs().max())
        with m.nn.trace(clean[:1]):
            import nnsight
            nnsight.save(m.nn.output.logits)
    if same_weights > 1e-3:
        raise RuntimeError(f"TransformerLens' logits differ from the HF model's by {same_weights}: not the same weights")

    results = {"benchmark": "patching_speed", "small": small, "size": size, "started_utc": started, "config": dict(shape),
               "machine": _machine(), "versions": _versions(),
               "attention": {"causalinterp/nnsight/floor": hf.config._attn_implementation,
                             "transformerlens": "eager (forced by boot_transformers)"},
               "tl_vs_hf_max_abs_logit_diff": same_weights,
               "notes": ("one run per method, wall-clock, single process; memory: peak RSS per method via VmHWM "
                         "reset (see module docstring); all methods under no_grad/inference_mode"),
               "sweeps": {}}

    disagreements = []
    for sweep in sweeps:
        sites = sweep_sites(sweep, shape)
        log(f"\n[{sweep}] {len(sites)} sites")
        methods = {}

        eff, stats = _measure(lambda: run_causalinterp(m, data, sweep))
        means = {"causalinterp": eff.values.mean(0)}
        methods["causalinterp"] = stats
        rows = int(eff.meta["rows_per_pass"])
        log(f"  causalinterp     {stats['seconds']:.2f}s  ({rows} rows/pass, {eff.meta['n_passes']} patched passes)")

        n_fwd, stats = _measure(lambda: run_floor(hf, clean, corrupt, len(sites), rows))
        methods["floor"] = stats
        log(f"  floor            {stats['seconds']:.2f}s  ({n_fwd} forward passes)")

        means["transformerlens"], stats = _measure(
            lambda: run_transformerlens(bridge, clean, corrupt, answer, wrong, sweep, shape))
        methods["transformerlens"] = stats
        log(f"  transformerlens  {stats['seconds']:.2f}s")

        means["nnsight_naive"], stats = _measure(
            lambda: run_nnsight_naive(m.nn, clean, corrupt, answer, wrong, sweep, shape))
        methods["nnsight_naive"] = stats
        log(f"  nnsight_naive    {stats['seconds']:.2f}s")

        floor_s, floor_cpu = methods["floor"]["seconds"], methods["floor"]["cpu_seconds"]
        for name, st in methods.items():
            st["x_floor"] = round(st["seconds"] / floor_s, 4)
            st["x_floor_cpu"] = round(st["cpu_seconds"] / floor_cpu, 4)
            if name in means and name != "causalinterp":
                diff = float(np.abs(np.asarray(means[name]) - means["causalinterp"]).max())
                st["max_abs_diff_vs_causalinterp"] = diff
                if not diff <= AGREE_ATOL:
                    disagreements.append(f"{sweep}/{name}: max |mean diff| {diff:.2e} > {AGREE_ATOL}")
        ci_s, tl_s = methods["causalinterp"]["seconds"], methods["transformerlens"]["seconds"]
        results["sweeps"][sweep] = {
            "n_sites": len(sites), "rows_per_pass": rows, "n_forward_passes": n_fwd,
            "metric_range_causalinterp": float(np.ptp(means["causalinterp"])),
            "methods": methods,
            "targets": {"x_floor": ci_s / floor_s, "within_1.15x_floor": ci_s <= 1.15 * floor_s,
                        "x_transformerlens": ci_s / tl_s, "not_slower_than_transformerlens": ci_s <= tl_s,
                        "x_floor_cpu": methods["causalinterp"]["cpu_seconds"] / floor_cpu,
                        "x_transformerlens_cpu": (methods["causalinterp"]["cpu_seconds"]
                                                  / methods["transformerlens"]["cpu_seconds"])}}

    results["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["methods_agree"] = not disagreements
    results["disagreements"] = disagreements
    log(_table(results))
    if out_path is None and not small:
        out_path = RESULTS_MEDIUM if medium else RESULTS
    if out_path is not None:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2, default=float) + "\n")
        log(f"\nwrote {out_path}")
    if disagreements:
        raise RuntimeError("methods disagree, so the timings do not compare equal work: " + "; ".join(disagreements))
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="tiny model and few prompts: a smoke test (seconds)")
    ap.add_argument("--medium", action="store_true",
                    help="GPT-2-small shape, 8 prompts of 8 tokens (a few minutes); writes patching_speed_medium.json")
    ap.add_argument("--out", default=None, help=f"JSON path (default: {RESULTS} for the full run; none for --small)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    main(small=args.small, medium=args.medium, out_path=args.out, threads=args.threads)
    sys.exit(0)
