"""Logit-lens readouts: exact at the last layer, equal to a hand-written reference at every layer."""
import numpy as np
import pytest
import torch
from conftest import build_hf, random_data
from reference import lens_logits
from shared_models import shared_model

import causalinterp as ci

STORIES = shared_model("stories260K")


def _metric_ref(kind, logits, answer, wrong, clean_logits):
    if kind == "logprob":
        return float(torch.log_softmax(logits.double(), -1)[answer])
    if kind == "logit_diff":
        return float(logits[answer].double() - logits[wrong].double())
    ref = torch.log_softmax(clean_logits.double(), -1)
    return float((ref.exp() * (ref - torch.log_softmax(logits.double(), -1))).sum())


@pytest.mark.parametrize("kind", ["logprob", "logit_diff", "kl_to_clean"])
def test_lens_matches_hand_written_reference_and_is_exact_at_the_last_layer(family, kind):
    hf = build_hf(family)
    model = ci.load_model(hf)
    data = random_data(n=5, T=6)
    eff = ci.logit_lens(model, data, positions=[1, "end"], metric=ci.metrics.Metric(kind))
    assert [(s.layer, s.position) for s in eff.sites] == [(0, 1), (0, "end"), (1, 1), (1, "end")]
    # the last layer's readout at the metric's position is the model's own output, bit for bit
    assert np.array_equal(eff.values[:, -1], eff.clean)
    toks = data.tokens("clean")
    with torch.no_grad():
        own = hf(toks).logits
    for i in range(data.n):
        clean_i = own[i]
        for j, s in enumerate(eff.sites):
            p = data.position_index(s.position, i)
            ref = _metric_ref(kind, lens_logits(hf, toks[i], s.layer)[p], data.answer[i], data.wrong[i], clean_i[p])
            assert eff.values[i, j] == pytest.approx(ref, rel=1e-5, abs=1e-5), (i, s.label)
    # the model's own (batched) final metric is what the lens gives at the last layer
    ref_clean = [_metric_ref(kind, own[i, -1], data.answer[i], data.wrong[i], own[i, -1]) for i in range(data.n)]
    assert np.allclose(eff.clean, ref_clean, rtol=1e-6, atol=1e-6)


def test_lens_last_layer_exact_on_every_batch_size():
    hf = build_hf("llama")
    model = ci.load_model(hf)
    data = random_data(n=7, T=5, seed=4)
    for b in (1, 3, 7):
        eff = ci.logit_lens(model, data, layers=[1], metric=ci.metrics.logprob(), batch_size=b)
        assert np.array_equal(eff.values[:, 0], eff.clean)


def test_tuned_lens_with_zero_translators_is_the_logit_lens_and_others_change_it():
    hf = build_hf("gpt2")
    model = ci.load_model(hf)
    data = random_data(n=4, T=6)
    plain = ci.logit_lens(model, data, metric=ci.metrics.logprob())
    zero = torch.nn.Linear(32, 32)
    torch.nn.init.zeros_(zero.weight)
    torch.nn.init.zeros_(zero.bias)
    same = ci.logit_lens(model, data, metric=ci.metrics.logprob(), lens=ci.lens.tuned(model, {0: zero, 1: zero}))
    assert np.array_equal(same.values, plain.values)
    shift = torch.nn.Linear(32, 32)
    other = ci.logit_lens(model, data, metric=ci.metrics.logprob(), lens=ci.lens.tuned(model, {0: shift}))
    assert not np.allclose(other.values[:, 0], plain.values[:, 0]) and np.array_equal(other.values[:, 1],
                                                                                      plain.values[:, 1])
    with pytest.raises(ci.lens.LensError, match="shape"):
        ci.logit_lens(model, data, lens=lambda layer, resid: resid)


def test_readable_from_layer_k_on_the_induction_testbed():
    """The induction testbed copies with a layer-1 head, so the answer is readable after block 1, not 0."""
    model = ci.load_model("testbed:induction")
    data = ci.testbeds.induction_data(24, seed=2, seq_len=8)
    eff = ci.logit_lens(model, data)
    ev = ci.evaluate(eff, ci.claims.recovers(at_least=0.9), n_resamples=999)
    t = ev.table.set_index("layer")
    assert t.loc[1, "verdict"] == "supported" and t.loc[1, "estimate"] == pytest.approx(1.0, abs=1e-12)
    assert t.loc[0, "verdict"] != "supported"
    assert ci.lens.readable_from(ev) == {"end": 1}


def test_lens_errors_name_the_problem():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=3, T=4)
    with pytest.raises(ci.lens.LensError, match="layers 0..1"):
        ci.logit_lens(model, data, layers=[2])
    with pytest.raises(ci.lens.LensError, match="position 'IO'"):
        ci.logit_lens(model, data, positions=["IO"])
    with pytest.raises(ci.lens.LensError, match="clean' or 'corrupt"):
        ci.logit_lens(model, data, prompts="both")


@pytest.mark.skipif(STORIES is None, reason="../shared/models/stories260K is not in this checkout")
def test_lens_on_stories260k_is_exact_at_the_last_layer_and_matches_the_reference():
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(STORIES).eval()
    model = ci.load_model(hf)
    data = random_data(n=4, T=8, seed=2, vocab=512)
    eff = ci.logit_lens(model, data, positions=[3, "end"], metric=ci.metrics.logprob())
    assert np.array_equal(eff.values[:, -1], eff.clean)
    toks = data.tokens("clean")
    for i in range(data.n):
        for j, s in enumerate(eff.sites):
            p = data.position_index(s.position, i)
            ref = _metric_ref("logprob", lens_logits(hf, toks[i], s.layer)[p], data.answer[i], None, None)
            assert eff.values[i, j] == pytest.approx(ref, rel=1e-5, abs=1e-5)


def test_lens_reads_an_embedding_noise_corrupt_run_with_its_noise():
    model = ci.load_model(build_hf("gpt2"))
    noise = ci.EmbeddingNoise(positions=(0, 1, 2), scale=3.0, seed=0)
    data = random_data(n=4, T=6).with_noise(noise)
    eff = ci.logit_lens(model, data, prompts="corrupt", metric=ci.metrics.logprob())
    assert np.array_equal(eff.values[:, -1], eff.corrupt)            # the noisy run's own output, bit for bit
    assert not np.allclose(eff.corrupt, eff.clean)
    trace = ci.causal_trace(model, data, noise, layers=[0], positions=[0], metric=ci.metrics.logprob())
    assert np.allclose(eff.corrupt, trace.corrupt, rtol=1e-6, atol=1e-6)
