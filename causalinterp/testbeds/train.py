"""Train, measure and save the testbed models.

    python -m causalinterp.testbeds.train induction        # retrain into causalinterp/testbeds/data/
    python -m causalinterp.testbeds.train ioi --out /tmp/tb  # somewhere else
    python -m causalinterp.testbeds.train induction --measure  # only re-measure the shipped weights

Training is seeded, uses one CPU thread and `torch.use_deterministic_algorithms(True)`, so a rerun on the
same machine and torch version gives the same weights; other CPUs/versions may differ in the last bits but
reach the same behaviour (a slow test checks this).  Each run also measures the model and writes the facts
into card.json (and the cards of its knock-out variants).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import sys
import time
from pathlib import Path

import torch

from .common import (BOS, INDUCTION_TOKENS, PAD, SPECIALS, UNK, induction_pool, knock_out,  # noqa: F401
                     wrap_tokenizer)

DATA = Path(__file__).resolve().parent / "data"

# ------------------------------------------------------------------------------------------------
# recipes: everything that determines a model
# ------------------------------------------------------------------------------------------------
RECIPES: dict[str, dict] = {
    "induction": {
        "seed": 1, "threads": 1,
        "n_layer": 2, "n_head": 4, "n_embd": 64, "n_inner": 256, "n_positions": 64, "n_tokens": INDUCTION_TOKENS,
        "scale_attn_weights": False,
        "steps": 3000, "batch": 64, "lr": 2e-3, "weight_decay": 0.01, "warmup": 100,
        "plant_heads": [[0, 1], [1, 2]], "phase1_steps": 1500,
        "seq_len_min": 4, "seq_len_max": 12, "prefix_max": 10, "gap_max": 5,
        "recall_fraction": 0.5, "pairs_min": 3, "pairs_max": 8,
        "data": "per row, at random: copy rows [bos] p s g s (s: L in [4, 12] random tokens; filler p, g of "
                "lengths [0, 10], [0, 5]; loss on the second copy of s) or recall rows [bos] a1 b1 .. an bn followed "
                "by the n pairs in shuffled order (n in [3, 8]; loss on each b of the second part); all tokens "
                "of a row distinct, from t0..t99",
        "schedule": "steps < phase1_steps: only the planted heads write to the residual stream (the other heads' "
                    "c_proj inputs are zeroed), so the copy circuit forms in them; then every head trains",
    },
    "ioi": {
        "seed": 0, "threads": 1,
        "n_layer": 3, "n_head": 4, "n_embd": 64, "n_inner": 256, "n_positions": 32,
        "steps": 4000, "batch": 64, "lr": 1e-3, "weight_decay": 0.01, "warmup": 100,
        "n_train_prompts": 40000, "heldout_pair_fraction": 0.1, "heldout_families": [5, 13],
        "data": "IOI sentences (prompt + answer) from tasks.ioi with the 99 IOI names, 8 places, 8 objects; "
                "ABBA and BABA templates except the held-out families; prompts whose unordered {IO, S} name "
                "pair is held out are removed; next-token loss on every token",
    },
}
EVAL = {"induction": {"n": 200, "seq_len": 16, "seed": 12345},
        "ioi": {"n": 500, "seed": 12345}}
COMMAND = "python -m causalinterp.testbeds.train {name}"
IOI_KO_MIN_ACCURACY = 0.97
IOI_KO_MIN_LD_FRACTION = 0.6


# ------------------------------------------------------------------------------------------------
# tokenizers
# ------------------------------------------------------------------------------------------------
def induction_words() -> list[str]:
    return [f"t{i}" for i in range(RECIPES["induction"]["n_tokens"])]


def ioi_words() -> list[str]:
    from ..tasks.ioi import NAMES, OBJECTS, PLACES, TEMPLATES
    words: list[str] = []
    for t in TEMPLATES.values():
        for w in re.findall(r"\w+|[^\w\s]+", re.sub(r"\[(A|B|PLACE|OBJECT)\]", " ", t)):
            if w not in words:
                words.append(w)
    return words + list(NAMES) + list(PLACES) + list(OBJECTS)


def build_tokenizer(words: list[str]):
    """A `tokenizers` WordLevel tokenizer: specials <pad> <unk> <bos> (ids 0, 1, 2), then `words`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {w: i for i, w in enumerate(list(SPECIALS) + list(dict.fromkeys(words)))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return tk


def make_config(recipe: dict, vocab_size: int):
    from transformers import GPT2Config
    return GPT2Config(vocab_size=vocab_size, n_positions=recipe["n_positions"], n_embd=recipe["n_embd"],
                      n_layer=recipe["n_layer"], n_head=recipe["n_head"], n_inner=recipe["n_inner"],
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=BOS, eos_token_id=BOS,
                      pad_token_id=PAD, tie_word_embeddings=True,
                      scale_attn_weights=recipe.get("scale_attn_weights", True))


def new_model(recipe: dict, vocab_size: int):
    from transformers import GPT2LMHeadModel
    cfg = make_config(recipe, vocab_size)
    cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(cfg)
    if recipe.get("sinusoidal_init"):
        # start the (trainable) position embeddings as sinusoids: relative offsets are then linear maps,
        # which makes previous-token attention easy to learn
        with torch.no_grad():
            model.transformer.wpe.weight.copy_(sinusoids(cfg.n_positions, cfg.n_embd) * recipe["sinusoidal_init"])
    return model


def sinusoids(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(-torch.arange(0, d, 2, dtype=torch.float32) * (torch.log(torch.tensor(10000.0)) / d))
    out = torch.zeros(n, d)
    out[:, 0::2], out[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return out


@contextlib.contextmanager
def deterministic(threads: int):
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _optimizer(model, recipe):
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    steps, warm = recipe["steps"], recipe["warmup"]

    def lr_at(s):  # linear warm-up, cosine decay to 10%
        import math
        if s < warm:
            return (s + 1) / warm
        p = (s - warm) / max(1, steps - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


# ------------------------------------------------------------------------------------------------
# head interventions with plain torch hooks (no engine needed)
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def patch_heads(hf, heads, value=0.0):
    """Replace the given (layer, head) slices of each layer's `attn.c_proj` input (the per-head outputs).

    `value`: a number, a tensor broadcastable to [batch, pos, d_head], or a callable (layer, head, slice) ->
    tensor.  Zero replacement is zero-ablation of the head.
    """
    cfg = hf.config
    dh = cfg.n_embd // cfg.n_head
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(int(layer), []).append(int(head))
    handles = []

    def make(layer, hs):
        def hook(module, args):
            x = args[0].clone()
            for h in hs:
                sl = x[..., h * dh:(h + 1) * dh]
                new = value(layer, h, sl) if callable(value) else value
                x[..., h * dh:(h + 1) * dh] = new
            return (x,) + tuple(args[1:])
        return hook
    try:
        for layer, hs in by_layer.items():
            handles.append(hf.transformer.h[layer].attn.c_proj.register_forward_pre_hook(make(layer, hs)))
        yield
    finally:
        for h in handles:
            h.remove()


# ------------------------------------------------------------------------------------------------
# induction
# ------------------------------------------------------------------------------------------------
def train_induction(recipe: dict | None = None, log=print):
    recipe = dict(RECIPES["induction"], **(recipe or {}))
    tk = build_tokenizer(induction_words())
    V = tk.get_vocab_size()
    with deterministic(recipe["threads"]):
        torch.manual_seed(recipe["seed"])
        gen = torch.Generator().manual_seed(recipe["seed"] + 1)
        model = new_model(recipe, V)
        model.train()
        opt, sched = _optimizer(model, recipe)
        B, t0 = recipe["batch"], time.time()
        planted = [tuple(h) for h in recipe.get("plant_heads") or []]
        others = [(l, h) for l in range(recipe["n_layer"]) for h in range(recipe["n_head"]) if (l, h) not in planted]
        for step in range(recipe["steps"]):
            x, target = _induction_batch(recipe, B, gen)
            # phase 1: only the planted heads can write to the residual stream; phase 2: every head
            with patch_heads(model, others if planted and step < recipe["phase1_steps"] else []):
                logits = model(x).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), target.reshape(-1), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % 250 == 0 or step == recipe["steps"] - 1:
                log(f"step {step:5d}  loss {loss.item():.4f}  ({time.time() - t0:.0f}s)")
    model.eval()
    return model, wrap_tokenizer(tk), {"train_seconds": round(time.time() - t0, 1), "final_loss": round(loss.item(), 4)}


def _induction_batch(recipe: dict, B: int, gen: torch.Generator):
    """Rows (right-padded) and next-token targets (-100 where nothing can be predicted).

    Two kinds of rows, drawn at random, each with its own lengths:
    - copy rows ``[bos] p s g s``: loss on the second copy of s (s, filler p and g all distinct tokens);
    - recall rows ``[bos] a1 b1 .. an bn  a_k1 b_k1 .. a_kn b_kn`` (the pairs again in shuffled order): loss on
      each b of the second part.  Only the token right after the earlier a answers this, so a head that looks
      further back than the previous token cannot solve it: this makes the copy circuit the canonical
      previous-token head + induction head.
    """
    first = len(SPECIALS)
    rows, targets = [], []
    for _ in range(B):
        if float(torch.rand(1, generator=gen)) < recipe["recall_fraction"]:
            n = int(torch.randint(recipe["pairs_min"], recipe["pairs_max"] + 1, (1,), generator=gen))
            toks = (torch.randperm(recipe["n_tokens"], generator=gen)[:2 * n] + first).tolist()
            order = torch.randperm(n, generator=gen).tolist()
            row = [BOS] + toks + [t for k in order for t in toks[2 * k:2 * k + 2]]
            tgt = [-100] * len(row)
            for m in range(n):
                tgt[1 + 2 * n + 2 * m] = row[2 + 2 * n + 2 * m]
        else:
            L = int(torch.randint(recipe["seq_len_min"], recipe["seq_len_max"] + 1, (1,), generator=gen))
            P = int(torch.randint(0, recipe["prefix_max"] + 1, (1,), generator=gen))
            G = int(torch.randint(0, recipe["gap_max"] + 1, (1,), generator=gen))
            toks = (torch.randperm(recipe["n_tokens"], generator=gen)[:P + L + G] + first).tolist()
            seq = toks[P:P + L]
            row = [BOS] + toks + seq
            start = 1 + P + L + G  # position t predicts row[t + 1]; from the second copy's first token on, a copy
            tgt = [-100] * len(row)
            tgt[start:start + L - 1] = row[start + 1:start + L]
        rows.append(row)
        targets.append(tgt)
    T = max(len(r) for r in rows)
    x = torch.full((B, T), PAD, dtype=torch.long)
    target = torch.full((B, T), -100, dtype=torch.long)
    for i, (r, t) in enumerate(zip(rows, targets)):
        x[i, :len(r)] = torch.tensor(r)
        target[i, :len(t)] = torch.tensor(t)
    return x, target


def _forward(hf, ids: torch.Tensor, attentions: bool = False):
    with torch.no_grad():
        return hf(ids.to(hf.device), output_attentions=attentions)


def measure_induction(hf, tokenizer, *, n=None, seq_len=None, seed=None, ablate=True) -> dict:
    """Copying accuracy, logit diffs, per-head previous-token and induction scores, and zero-ablation effects."""
    from ..tasks import induction
    ev = dict(EVAL["induction"], **{k: v for k, v in {"n": n, "seq_len": seq_len, "seed": seed}.items() if v})
    L = ev["seq_len"]
    data = induction(tokenizer, ev["n"], seq_len=L, seed=ev["seed"], tokens=induction_pool(tokenizer), bos=BOS)
    clean, corrupt = data.tokens("clean"), data.tokens("corrupt")
    ans, wrong = torch.tensor(data.answer), torch.tensor(data.wrong)
    rep = torch.tensor([data.positions[f"rep{k}"][0] for k in range(L - 1)])

    def copy_stats(out_logits, ids):
        lg = out_logits.float().cpu()
        # in the repeated half, position p predicts the token at p + 1 (the answer for the last one)
        target = torch.cat([ids[:, rep[1:]], ans[:, None]], dim=1)
        acc = (lg[:, rep].argmax(-1) == target).float().mean().item()
        end_acc = (lg[:, -1].argmax(-1) == ans).float().mean().item()
        ld = (lg[:, -1].gather(1, ans[:, None]) - lg[:, -1].gather(1, wrong[:, None])).squeeze(1)
        return acc, end_acc, ld.mean().item()

    out = _forward(hf, clean, attentions=True)
    acc, end_acc, ld = copy_stats(out.logits, clean)
    c_acc, c_end, c_ld = copy_stats(_forward(hf, corrupt).logits, clean)
    T = clean.shape[1]
    prev, ind = [], []
    for att in out.attentions:  # [B, H, T, T]
        a = att.float().cpu()
        q = torch.arange(2, T)
        prev.append(a[:, :, q, q - 1].mean(dim=(0, 2)).tolist())
        ind.append(a[:, :, rep, rep - (L - 1)].mean(dim=(0, 2)).tolist())
    res = {"eval": ev, "copy_accuracy": round(acc, 4), "end_accuracy": round(end_acc, 4),
           "logit_diff_mean": round(ld, 4), "corrupt_copy_accuracy": round(c_acc, 4),
           "corrupt_end_accuracy": round(c_end, 4), "corrupt_logit_diff_mean": round(c_ld, 4),
           "prev_token_score": [[round(s, 4) for s in row] for row in prev],
           "induction_score": [[round(s, 4) for s in row] for row in ind]}
    if ablate:
        cfg = hf.config
        abl = {}
        for layer in range(cfg.n_layer):
            for head in range(cfg.n_head):
                with patch_heads(hf, [(layer, head)]):
                    a_acc, _, a_ld = copy_stats(_forward(hf, clean).logits, clean)
                abl[f"L{layer}H{head}"] = {"copy_accuracy": round(a_acc, 4), "logit_diff_mean": round(a_ld, 4)}
        res["zero_ablation"] = abl
    return res


def induction_circuit(m: dict) -> dict:
    prev0 = m["prev_token_score"][0]
    ind1 = m["induction_score"][1]
    p = max(range(len(prev0)), key=prev0.__getitem__)
    i = max(range(len(ind1)), key=ind1.__getitem__)
    return {"prev_token_head": [0, p], "induction_head": [1, i]}


# ------------------------------------------------------------------------------------------------
# IOI
# ------------------------------------------------------------------------------------------------
def _heldout_pairs(fraction: float, seed: int) -> set[frozenset]:
    from ..tasks.ioi import NAMES
    pairs = [frozenset((a, b)) for i, a in enumerate(NAMES) for b in NAMES[i + 1:]]
    rng = random.Random(seed + 7)
    return set(rng.sample(pairs, int(round(fraction * len(pairs)))))


def ioi_split(recipe: dict | None = None):
    """(train template ids, held-out template ids, held-out name pairs as frozensets of names)."""
    from ..tasks.ioi import TEMPLATES
    recipe = dict(RECIPES["ioi"], **(recipe or {}))
    fam = {f"{k:02d}" for k in recipe["heldout_families"]}
    held_t = [t for t in TEMPLATES if t[-2:] in fam]
    train_t = [t for t in TEMPLATES if t[-2:] not in fam]
    return train_t, held_t, _heldout_pairs(recipe["heldout_pair_fraction"], recipe["seed"])


def _pair_mask(data, tokenizer, pairs: set[frozenset]) -> list[bool]:
    ids = {frozenset(tokenizer.convert_tokens_to_ids(list(p))) for p in pairs}
    return [frozenset((a, w)) in ids for a, w in zip(data.answer, data.wrong)]


def train_ioi(recipe: dict | None = None, log=print):
    from ..tasks import ioi
    recipe = dict(RECIPES["ioi"], **(recipe or {}))
    tk = build_tokenizer(ioi_words())
    tok = wrap_tokenizer(tk)
    V = tk.get_vocab_size()
    train_t, _, held_pairs = ioi_split(recipe)
    t0 = time.time()
    data = ioi(tk, recipe["n_train_prompts"], templates=train_t, corruption="swap", seed=recipe["seed"] + 1000)
    keep = [i for i, h in enumerate(_pair_mask(data, tok, held_pairs)) if not h]
    rows = [list(data.clean[i]) + [data.answer[i]] for i in keep]
    T = max(len(r) for r in rows)
    X = torch.full((len(rows), T), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        X[i, :len(r)] = torch.tensor(r)
    log(f"{len(rows)} training sentences ({time.time() - t0:.0f}s to generate)")
    with deterministic(recipe["threads"]):
        torch.manual_seed(recipe["seed"])
        gen = torch.Generator().manual_seed(recipe["seed"] + 1)
        model = new_model(recipe, V)
        model.train()
        opt, sched = _optimizer(model, recipe)
        B, t1 = recipe["batch"], time.time()
        perm, at = torch.randperm(len(rows), generator=gen), 0
        for step in range(recipe["steps"]):
            if at + B > len(rows):
                perm, at = torch.randperm(len(rows), generator=gen), 0
            x = X[perm[at:at + B]]
            at += B
            x = x[:, :int((x != PAD).sum(1).max())]
            logits = model(x).logits
            target = x[:, 1:].clone()
            target[target == PAD] = -100
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), target.reshape(-1),
                                                     ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % 250 == 0 or step == recipe["steps"] - 1:
                log(f"step {step:5d}  loss {loss.item():.4f}  ({time.time() - t1:.0f}s)")
    model.eval()
    return model, tok, {"train_seconds": round(time.time() - t0, 1), "final_loss": round(loss.item(), 4),
                        "n_train_sentences": len(rows)}


def ioi_logits(hf, data):
    """[n, vocab] logits at each prompt's end position (prompts are right-padded)."""
    ids = data.tokens("clean")
    out = _forward(hf, ids).logits.float().cpu()
    end = torch.tensor(data.positions["end"])
    return out[torch.arange(len(data)), end]


def _ioi_stats(hf, data) -> dict:
    lg = ioi_logits(hf, data)
    ans, wrong = torch.tensor(data.answer), torch.tensor(data.wrong)
    ld = lg.gather(1, ans[:, None]).squeeze(1) - lg.gather(1, wrong[:, None]).squeeze(1)
    return {"n": len(data), "accuracy": round((lg.argmax(-1) == ans).float().mean().item(), 4),
            "io_over_s": round((ld > 0).float().mean().item(), 4), "logit_diff_mean": round(ld.mean().item(), 4),
            "logit_diff_min": round(ld.min().item(), 4)}


def ioi_eval_sets(tokenizer, n: int, seed: int, recipe: dict | None = None) -> dict:
    """Held-out evaluation sets: prompts whose name pair never occurred in training, on the trained templates,
    on the held-out templates, and on all 30 templates."""
    from ..tasks import ioi
    train_t, held_t, held_pairs = ioi_split(recipe)
    out = {}
    for label, tmpl in (("heldout_pairs_all_templates", "mixed"), ("heldout_pairs_train_templates", train_t),
                        ("heldout_pairs_heldout_templates", held_t)):
        names = sorted({x for p in held_pairs for x in p})
        d = ioi(tokenizer, 12 * n, templates=tmpl, corruption="ABC", seed=seed, names=names)
        mask = _pair_mask(d, tokenizer, held_pairs)
        out[label] = d.subset([i for i, m in enumerate(mask) if m][:n])
    return out


def measure_ioi(hf, tokenizer, *, n=None, seed=None, ablate=True) -> dict:
    from .. import testbeds
    ev = dict(EVAL["ioi"], **{k: v for k, v in {"n": n, "seed": seed}.items() if v})
    res: dict = {"eval": ev}
    for label, d in ioi_eval_sets(tokenizer, ev["n"], ev["seed"]).items():
        res[label] = _ioi_stats(hf, d)
    data = testbeds.ioi_data(ev["n"], seed=ev["seed"], tokenizer=tokenizer)
    res["ioi_data_default"] = _ioi_stats(hf, data)
    if ablate:
        abl = {}
        for layer in range(hf.config.n_layer):
            for head in range(hf.config.n_head):
                with patch_heads(hf, [(layer, head)]):
                    s = _ioi_stats(hf, data)
                abl[f"L{layer}H{head}"] = {"accuracy": s["accuracy"], "logit_diff_mean": s["logit_diff_mean"]}
        res["zero_ablation"] = abl
    return res


# ------------------------------------------------------------------------------------------------
# saving and cards
# ------------------------------------------------------------------------------------------------
def save_model(name: str, hf, tokenizer, card: dict, out: Path = DATA) -> Path:
    d = Path(out) / name
    d.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(d, safe_serialization=True)
    for extra in ("generation_config.json",):
        (d / extra).unlink(missing_ok=True)
    tokenizer.backend_tokenizer.save(str(d / "tokenizer.json"))
    write_card(d, card)
    return d


def write_card(d: Path, card: dict) -> None:
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    (d / "card.json").write_text(json.dumps(card, indent=1) + "\n")


def _arch(hf) -> dict:
    c = hf.config
    return {"class": type(hf).__name__, "n_layer": c.n_layer, "n_head": c.n_head, "d_model": c.n_embd,
            "d_head": c.n_embd // c.n_head, "d_mlp": c.n_inner, "n_ctx": c.n_positions, "vocab_size": c.vocab_size,
            "dropout": 0.0, "tied_embeddings": True,
            "n_params": sum(p.numel() for p in hf.parameters())}


def build_induction(out: Path = DATA, log=print, measure_only: bool = False) -> dict:
    from .. import testbeds
    if measure_only:
        m = testbeds.load("induction", device="cpu", data_dir=out)
        hf, tok, info = m.hf, m.tokenizer, testbeds.card("induction", data_dir=out).get("training", {})
    else:
        hf, tok, info = train_induction(log=log)
    with deterministic(1):
        metrics = measure_induction(hf, tok)
    circ = induction_circuit(metrics)
    heads = [circ["prev_token_head"], circ["induction_head"]]
    abl = metrics["zero_ablation"]
    others = [[l, h] for l in range(hf.config.n_layer) for h in range(hf.config.n_head) if [l, h] not in heads]
    unrelated = max(others, key=lambda lh: abl[f"L{lh[0]}H{lh[1]}"]["copy_accuracy"])
    card = {"name": "induction", "architecture": _arch(hf),
            "tokenizer": {"kind": "tokenizers WordLevel (whitespace pre-tokenizer)", "specials": list(SPECIALS),
                          "tokens": "t0..t99", "vocab_size": hf.config.vocab_size},
            "recipe": RECIPES["induction"], "training": {**info, "torch": torch.__version__},
            "command": COMMAND.format(name="induction"),
            "task": "in-context copying of a repeated random sequence (testbeds.induction_data)",
            "metrics": metrics, "circuit": circ, "circuit_heads": heads, "unrelated_head": unrelated,
            "knocked_out": [],
            "known_circuit": "previous-token head L{}H{} composes with induction head L{}H{}".format(*heads[0], *heads[1])}
    if not measure_only:
        save_model("induction", hf, tok, card, out)
    else:
        write_card(Path(out) / "induction", card)
    log(json.dumps({k: metrics[k] for k in metrics if k != "zero_ablation"}))
    log(json.dumps(abl))
    # knock-out variant: every head except the two circuit heads
    knock_out(hf, others)
    with deterministic(1):
        ko_metrics = measure_induction(hf, tok)
    write_card(Path(out) / "induction-ko", {
        "name": "induction-ko", "base": "induction", "knocked_out": others, "circuit_heads": heads,
        "null_heads": others, "large_effect_heads": heads, "command": COMMAND.format(name="induction"),
        "description": "the induction model with every head except the previous-token head and the induction "
                       "head knocked out (their c_proj weight rows set to zero at load time): the knocked-out "
                       "heads have exactly zero causal effect; the two circuit heads have large effects",
        "metrics": ko_metrics})
    log("induction-ko: " + json.dumps({k: v for k, v in ko_metrics.items() if k != "zero_ablation"}))
    log(json.dumps(ko_metrics["zero_ablation"]))
    return card


def build_ioi(out: Path = DATA, log=print, measure_only: bool = False) -> dict:
    from .. import testbeds
    if measure_only:
        m = testbeds.load("ioi", device="cpu", data_dir=out)
        hf, tok, info = m.hf, m.tokenizer, testbeds.card("ioi", data_dir=out).get("training", {})
    else:
        hf, tok, info = train_ioi(log=log)
    with deterministic(1):
        metrics = measure_ioi(hf, tok)
    train_t, held_t, held_pairs = ioi_split()
    card = {"name": "ioi", "architecture": _arch(hf),
            "tokenizer": {"kind": "tokenizers WordLevel (whitespace pre-tokenizer)", "specials": list(SPECIALS),
                          "words": "IOI template words, 99 names, 8 places, 8 objects",
                          "vocab_size": hf.config.vocab_size},
            "recipe": RECIPES["ioi"], "training": {**info, "torch": torch.__version__},
            "split": {"train_templates": train_t, "heldout_templates": held_t,
                      "n_heldout_pairs": len(held_pairs)},
            "command": COMMAND.format(name="ioi"),
            "task": "indirect object identification (testbeds.ioi_data); answer IO, wrong S at the end position",
            "metrics": metrics, "circuit": None, "circuit_heads": None, "knocked_out": [],
            "known_circuit": "not known in advance; to be found with the toolkit's scans"}
    # knock-out variant: greedily knock out the heads whose zero-ablation matters least, as long as the
    # model still solves the task; the heads left are the ones that carry it
    data = testbeds.ioi_data(EVAL["ioi"]["n"], seed=EVAL["ioi"]["seed"], tokenizer=tok)
    base = _ioi_stats(hf, data)
    order = sorted(metrics["zero_ablation"], key=lambda k: -metrics["zero_ablation"][k]["logit_diff_mean"])
    ko: list[list[int]] = []
    for key in order:
        trial = ko + [[int(key[1]), int(key[3])]]
        with patch_heads(hf, trial):
            st = _ioi_stats(hf, data)
        if st["accuracy"] >= IOI_KO_MIN_ACCURACY and st["logit_diff_mean"] >= IOI_KO_MIN_LD_FRACTION * base["logit_diff_mean"]:
            ko = trial
    kept = [[l, h] for l in range(hf.config.n_layer) for h in range(hf.config.n_head) if [l, h] not in ko]
    card["circuit_heads"] = None
    if not measure_only:
        save_model("ioi", hf, tok, card, out)
    else:
        write_card(Path(out) / "ioi", card)
    log(json.dumps({k: v for k, v in metrics.items() if k != "zero_ablation"}, indent=1))
    log(json.dumps(metrics.get("zero_ablation"), indent=None))
    knock_out(hf, ko)
    with deterministic(1):
        ko_metrics = measure_ioi(hf, tok)
    ref = ko_metrics["ioi_data_default"]
    large = [[l, h] for l, h in kept
             if ref["accuracy"] - ko_metrics["zero_ablation"][f"L{l}H{h}"]["accuracy"] >= 0.2
             or ko_metrics["zero_ablation"][f"L{l}H{h}"]["logit_diff_mean"] <= 0.7 * ref["logit_diff_mean"]]
    write_card(Path(out) / "ioi-ko", {
        "name": "ioi-ko", "base": "ioi", "knocked_out": sorted(ko), "circuit_heads": kept, "null_heads": sorted(ko),
        "large_effect_heads": large,
        "large_effect_rule": "zero-ablating the head in ioi-ko lowers accuracy by >= 0.2 or the mean logit "
                             "difference to <= 70% (on ioi_data(500, seed=12345))",
        "command": COMMAND.format(name="ioi"),
        "description": "the ioi model with the heads it needs least knocked out (chosen greedily by zero-ablation "
                       f"effect while accuracy stays >= {IOI_KO_MIN_ACCURACY} and the logit difference >= "
                       f"{IOI_KO_MIN_LD_FRACTION} of the full model's); the knocked-out heads have exactly zero "
                       "causal effect; zero_ablation in metrics gives the effect of each remaining head",
        "metrics": ko_metrics})
    log("ioi-ko: knocked out " + json.dumps(sorted(ko)) + " " +
        json.dumps({k: v for k, v in ko_metrics.items() if k != "zero_ablation"}))
    log(json.dumps(ko_metrics["zero_ablation"]))
    return card


BUILDERS = {"induction": build_induction, "ioi": build_ioi}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m causalinterp.testbeds.train", description=__doc__.split("\n")[0])
    p.add_argument("name", choices=sorted(BUILDERS), help="base testbed to train (its -ko variants follow)")
    p.add_argument("--out", default=str(DATA), help="data folder to write NAME/ into (default: the package's)")
    p.add_argument("--measure", action="store_true", help="only re-measure the saved weights and rewrite the cards")
    a = p.parse_args(argv)
    BUILDERS[a.name](Path(a.out), measure_only=a.measure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
