"""Shipped testbed models: load offline, solve their tasks, have the recorded circuits, and knock-outs are exact."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from causalinterp import testbeds  # noqa: E402
from causalinterp.models import Model, load_model  # noqa: E402
from causalinterp.spec.data import ContrastSet  # noqa: E402
from causalinterp.testbeds import train  # noqa: E402

BASES = ("induction", "ioi")


def heads_of(card, key):
    return [tuple(h) for h in card[key] or []]


@pytest.fixture(scope="module")
def ind():
    hf = testbeds.load_hf("induction")
    tok = testbeds.tokenizer("induction")
    return hf, tok, train.measure_induction(hf, tok)


@pytest.fixture(scope="module")
def ioi_model():
    hf = testbeds.load_hf("ioi")
    tok = testbeds.tokenizer("ioi")
    return hf, tok, train.measure_ioi(hf, tok, ablate=False)


# ------------------------------------------------------------------------------------------------
# shipping and loading
# ------------------------------------------------------------------------------------------------
def test_available_and_files():
    names = testbeds.available()
    assert {"induction", "induction-ko", "ioi"} <= set(names)
    total = 0
    for name in names:
        c = testbeds.card(name)
        assert c["name"] == name and "knocked_out" in c
        d = testbeds.DATA / name
        if "base" not in c:
            for f in ("config.json", "model.safetensors", "tokenizer.json", "card.json"):
                assert (d / f).is_file(), f"{name} lacks {f}"
        else:
            assert c["base"] in BASES and not (d / "model.safetensors").exists()  # derived at load time
        total += sum(f.stat().st_size for f in d.iterdir())
    assert total < 5 * 2**20, f"testbed data is {total / 2**20:.1f} MiB; keep it to a few MB"


def test_unknown_testbed():
    with pytest.raises(testbeds.TestbedError, match="available"):
        testbeds.card("gpt2")
    with pytest.raises(testbeds.TestbedError):
        testbeds.load("nope")


@pytest.mark.parametrize("name", ["induction", "induction-ko", "ioi"])
def test_load_offline(name):
    m = testbeds.load(name, device="cpu")
    assert isinstance(m, Model) and m.family == "gpt2" and m.name == f"testbed:{name}"
    assert m.tokenizer is not None and m.vocab_size == m.config.vocab_size
    assert not m.hf.training
    same = load_model(f"testbed:{name}", device="cpu")
    for (k, a), (_, b) in zip(m.hf.state_dict().items(), same.hf.state_dict().items()):
        assert torch.equal(a, b), k


def test_tokenizers_round_trip():
    tok = testbeds.tokenizer("ioi")
    ids = tok.encode("When Mary and John went to the store, John gave a drink to", add_special_tokens=False)
    assert tok.unk_token_id not in ids and len(ids) == 14
    itok = testbeds.tokenizer("induction-ko")
    assert itok.convert_ids_to_tokens(itok.encode("t0 t99", add_special_tokens=False)) == ["t0", "t99"]
    assert itok.bos_token_id == train.BOS


def test_data_helpers():
    d = testbeds.induction_data(20, seed=1)
    assert isinstance(d, ContrastSet) and d == testbeds.induction_data(20, seed=1)
    assert all(row[0] == train.BOS for row in d.clean)
    d.check_vocab(testbeds.card("induction")["architecture"]["vocab_size"])
    q = testbeds.ioi_data(20, seed=1, corruption="swap")
    assert q == testbeds.ioi_data(20, seed=1, corruption="swap") and q.clusters is not None
    q.check_vocab(testbeds.card("ioi")["architecture"]["vocab_size"])


# ------------------------------------------------------------------------------------------------
# induction: behaviour, head scores, causal facts
# ------------------------------------------------------------------------------------------------
def test_induction_copies(ind):
    _, _, m = ind
    card = testbeds.card("induction")["metrics"]
    assert m["copy_accuracy"] >= 0.95 and m["end_accuracy"] >= 0.95 and m["logit_diff_mean"] > 5
    assert m["corrupt_end_accuracy"] <= 0.2  # nothing to copy -> no copying
    for k in ("copy_accuracy", "end_accuracy", "logit_diff_mean", "corrupt_end_accuracy"):
        assert m[k] == pytest.approx(card[k], abs=0.02), k


def test_induction_head_scores(ind):
    _, _, m = ind
    c = testbeds.card("induction")
    (pl, ph), (il, ih) = heads_of(c, "circuit_heads")
    assert (pl, il) == (0, 1)
    prev, indc = m["prev_token_score"], m["induction_score"]
    # the stated heads have the stated scores, and they have the highest score of their layer (the scores are
    # diffuse in this small model: see the README; the causal facts below are the sharp ones)
    for layer, scores in ((0, prev), (1, indc)):
        key = "prev_token_score" if layer == 0 else "induction_score"
        for h, v in enumerate(scores[layer]):
            assert v == pytest.approx(c["metrics"][key][layer][h], abs=0.02), (key, layer, h)
    assert prev[pl][ph] == max(prev[pl]) and indc[il][ih] == max(indc[il])
    assert indc[il][ih] >= 2 * sorted(indc[il])[-2]


def test_induction_ablations(ind):
    _, _, m = ind
    c = testbeds.card("induction")
    (pl, ph), (il, ih) = heads_of(c, "circuit_heads")
    abl = m["zero_ablation"]
    assert abl[f"L{il}H{ih}"]["copy_accuracy"] <= 0.3  # ablating the induction head destroys copying
    assert abl[f"L{pl}H{ph}"]["copy_accuracy"] <= 0.3  # so does ablating the previous-token head
    ul, uh = c["unrelated_head"]
    assert abl[f"L{ul}H{uh}"]["copy_accuracy"] >= 0.95  # an unrelated head does not matter
    for layer in range(2):
        for head in range(4):
            if [layer, head] not in c["circuit_heads"]:
                assert abl[f"L{layer}H{head}"]["copy_accuracy"] >= 0.95, (layer, head)


def _logits(hf, ids):
    with torch.no_grad():
        return hf(ids).logits


@pytest.mark.parametrize("name", ["induction-ko", "ioi-ko"])
def test_knockout_heads_are_exact_nulls(name):
    if name not in testbeds.available():
        pytest.skip(f"{name} is not shipped")
    c = testbeds.card(name)
    hf = testbeds.load_hf(name)
    data = testbeds.induction_data(16, seed=3) if c["base"] == "induction" else testbeds.ioi_data(16, seed=3)
    ids = data.tokens("clean")
    base = _logits(hf, ids)
    dh = hf.config.n_embd // hf.config.n_head
    ko = heads_of(c, "knocked_out")
    assert ko and set(ko).isdisjoint(heads_of(c, "circuit_heads"))
    gen = torch.Generator().manual_seed(0)
    for layer, head in ko:
        w = hf.transformer.h[layer].attn.c_proj.weight[head * dh:(head + 1) * dh]
        assert torch.count_nonzero(w) == 0
        # any other values in this head's slice of the c_proj input: logits exactly unchanged
        for value in (lambda l, h, s: torch.randn(s.shape, generator=gen) * 100, 0.0,
                      lambda l, h, s: s.flip(0)):
            with train.patch_heads(hf, [(layer, head)], value):
                assert torch.equal(_logits(hf, ids), base), (name, layer, head)
    with train.patch_heads(hf, ko, lambda l, h, s: torch.randn(s.shape, generator=gen)):
        assert torch.equal(_logits(hf, ids), base)
    # ... while the circuit heads do matter
    for layer, head in heads_of(c, "circuit_heads"):
        with train.patch_heads(hf, [(layer, head)]):
            assert not torch.equal(_logits(hf, ids), base)


def test_induction_ko_behaviour():
    c = testbeds.card("induction-ko")
    hf, tok = testbeds.load_hf("induction-ko"), testbeds.tokenizer("induction-ko")
    m = train.measure_induction(hf, tok)
    assert m["copy_accuracy"] >= 0.9 and m["copy_accuracy"] == pytest.approx(c["metrics"]["copy_accuracy"], abs=0.02)
    abl = m["zero_ablation"]
    for layer, head in heads_of(c, "circuit_heads"):  # known-large effects
        assert abl[f"L{layer}H{head}"]["copy_accuracy"] <= 0.3
    for layer, head in heads_of(c, "knocked_out"):  # exact nulls
        assert abl[f"L{layer}H{head}"]["copy_accuracy"] == m["copy_accuracy"]
        assert abl[f"L{layer}H{head}"]["logit_diff_mean"] == m["logit_diff_mean"]


# ------------------------------------------------------------------------------------------------
# IOI
# ------------------------------------------------------------------------------------------------
def test_ioi_accuracy(ioi_model):
    _, _, m = ioi_model
    card = testbeds.card("ioi")["metrics"]
    for split in ("heldout_pairs_all_templates", "heldout_pairs_train_templates", "ioi_data_default"):
        assert m[split]["accuracy"] >= 0.95, split
        assert m[split]["logit_diff_mean"] >= 2.0, split
        assert m[split]["accuracy"] == pytest.approx(card[split]["accuracy"], abs=0.02)
        assert m[split]["logit_diff_mean"] == pytest.approx(card[split]["logit_diff_mean"], abs=0.05)


def test_ioi_swap_flips_answer(ioi_model):
    hf, tok, _ = ioi_model
    d = testbeds.ioi_data(100, seed=5, corruption="swap", tokenizer=tok)
    lg = train.ioi_logits(hf, ContrastSet.from_tokens(d.corrupt, d.corrupt, d.wrong, d.answer))
    # in the swapped prompt the old subject is the IO: the model now prefers it
    pref = (lg.gather(1, torch.tensor(d.wrong)[:, None]) > lg.gather(1, torch.tensor(d.answer)[:, None])).float()
    assert pref.mean().item() >= 0.95


# ------------------------------------------------------------------------------------------------
# retraining (slow): the recipe reproduces the behaviour
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_retrain_induction(tmp_path):
    card = train.build_induction(tmp_path, log=lambda *a: None)
    m = card["metrics"]
    assert m["copy_accuracy"] >= 0.95
    (pl, ph), (il, ih) = card["circuit_heads"]
    assert m["prev_token_score"][pl][ph] == max(m["prev_token_score"][pl])
    assert m["induction_score"][il][ih] == max(m["induction_score"][il])
    assert m["zero_ablation"][f"L{il}H{ih}"]["copy_accuracy"] <= 0.3
    ko = testbeds.card("induction-ko", data_dir=tmp_path)
    assert ko["metrics"]["copy_accuracy"] >= 0.9
    shipped = testbeds.card("induction")
    if shipped["training"].get("torch") == torch.__version__:
        assert card["circuit_heads"] == shipped["circuit_heads"]


@pytest.mark.slow
def test_retrain_ioi(tmp_path):
    card = train.build_ioi(tmp_path, log=lambda *a: None)
    m = card["metrics"]
    assert m["heldout_pairs_all_templates"]["accuracy"] >= 0.95
    assert m["heldout_pairs_all_templates"]["logit_diff_mean"] >= 2.0
