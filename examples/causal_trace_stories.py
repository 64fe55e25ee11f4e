"""Causal trace of name copying in the real model stories260K (llama2.c, 5 layers), Meng et al. 2022 style.

    python examples/causal_trace_stories.py [MODEL_DIR] [OUT_DIR]      # MODEL_DIR: ../shared/models/stories260K

Prompt: "Once upon a time, there was a dog named Kip. Kip liked to run. One day, K" -> "i" (the model copies
the made-up name).  Both mentions of the name get Gaussian noise (3 x the embedding std, seeded per prompt)
on their input embeddings; the clean hidden state is restored at every layer x position, plainly and with
the later MLPs or attention at that position frozen (severed).  Recovery of log p(answer) is tested per
cell (sign-flip test, Westfall-Young maxT over the 5 x 32 cells).  Writes the three heatmaps (PNG) and a Markdown report.
"""
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import causalinterp as ci
from causalinterp.report import plots

model_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/models/stories260K")
out = Path(sys.argv[2] if len(sys.argv) > 2 else "reports/causal_trace_stories")
out.mkdir(parents=True, exist_ok=True)
tok = AutoTokenizer.from_pretrained(model_dir)
model = ci.load_model(AutoModelForCausalLM.from_pretrained(model_dir).eval(), tok)

NAMES = ["Dug", "Vek", "Gud", "Dix", "Fix", "Rux", "Gib", "Vex", "Nep", "Peg", "Rax", "Zox", "Gem", "Dod", "Fum",
         "Fod", "Geg", "Pix", "Kip", "Rum"]
clean, answer = [], []
for name in NAMES:   # keep prompts of 32 tokens whose next token is the name's next piece, one token
    ids = tok.encode(f"Once upon a time, there was a dog named {name}. {name} liked to run. One day, {name[0]}")
    full = tok.encode(f"Once upon a time, there was a dog named {name}. {name} liked to run. One day, {name}")
    if len(ids) == 32 and full[:32] == ids:
        clean.append(ids)
        answer.append(full[32])
data = ci.ContrastSet.from_tokens(clean, clean, answer, positions={"name1": 13, "name2": 18})
with torch.no_grad():
    p = torch.softmax(model.hf(data.tokens("clean")).logits[:, -1], -1)[torch.arange(data.n), torch.tensor(answer)]
print(f"{data.n} prompts; clean p(answer) mean {p.mean():.2f} (min {p.min():.2f})")
noise = ci.EmbeddingNoise(positions=(12, 13, 14, 15, 17, 18, 19, 20), scale=3.0, seed=0)   # both mentions
results = []
for sever in (None, "mlp", "attn"):
    eff = ci.causal_trace(model, data, noise, sever=sever, metric=ci.metrics.logprob())
    ev = ci.evaluate(eff, ci.claims.recovers(at_least=0.5), correction="maxT", n_resamples=9999)
    name = "causal trace" + (f", {sever} severed" if sever else "")
    results.append(ci.Result(name=name, hypothesis={"model": str(model_dir), "corruption": noise.to_dict(),
                                                     "sever": sever}, evaluation=ev, effects=eff,
                             meta={"model": "stories260K"}))
    grid = ev.table.pivot(index="layer", columns="position", values="estimate")
    grid = grid[sorted(grid.columns, key=int)]
    grid.columns = grid.columns.astype(int)
    print(f"\n{name}: mean recovery of log p(answer), layer x position 10..31 "
          f"(clean {eff.clean.mean():.2f}, noisy {eff.corrupt.mean():.2f})")
    print(grid[[c for c in grid.columns if c >= 10]].round(2).to_string())
    sup = ev.table[ev.table["verdict"] == "supported"]
    print("cells where recovery >= 0.5 is supported:", ", ".join(sup["site"]) or "none")
for suffix, r in zip(("", "_mlp_severed", "_attn_severed"), results):
    fig = next(f for f in plots.figures(r) if f.kind == "layer_position")
    (out / f"causal_trace{suffix}.png").write_bytes(fig.data)
ci.report.markdown.render(results, out / "causal_trace.md", "causal trace: name copying in stories260K")
print("\nwrote", ", ".join(str(p) for p in sorted(out.iterdir())))
