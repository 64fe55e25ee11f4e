"""Causal tracing: exact against hand-written torch hooks on the three families and stories260K."""
import numpy as np
import pytest
import torch
from conftest import build_hf, random_data
from reference import logit_diff, read, run_patched, with_embedding_noise
from shared_models import shared_model

import causalinterp as ci
from causalinterp.tracing import EmbeddingNoise, TracingError

STORIES = shared_model("stories260K")


def reference_trace(hf, data, noise, layer, pos, component="resid_post", sever=None):
    """Per prompt: logit diff of the noisy run with the clean `component` at (layer, pos) restored, and (sever)
    the MLP/attention outputs at pos in later layers frozen at their noisy-run values.  One prompt at a time."""
    out = []
    n_layers = hf.config.num_hidden_layers
    for i in range(data.n):
        toks = torch.tensor(data.clean[i])
        clean_val = read(hf, toks, component, layer)[pos]
        h = with_embedding_noise(hf, noise[i, :len(toks)])
        try:
            patches = [(component, layer, None, [pos], clean_val)]
            if sever:
                comp = {"mlp": "mlp_out", "attn": "attn_out"}[sever]
                patches += [(comp, l2, None, [pos], read(hf, toks, comp, l2)[pos]) for l2 in range(layer + 1, n_layers)]
            logits = run_patched(hf, toks, patches)
        finally:
            h.remove()
        out.append(logit_diff(logits, len(toks) - 1, data.answer[i], data.wrong[i]))
    return np.array(out)


def reference_noisy(hf, data, noise):
    out = []
    for i in range(data.n):
        toks = torch.tensor(data.clean[i])
        h = with_embedding_noise(hf, noise[i, :len(toks)])
        try:
            logits = run_patched(hf, toks, [])
        finally:
            h.remove()
        out.append(logit_diff(logits, len(toks) - 1, data.answer[i], data.wrong[i]))
    return np.array(out)


@pytest.mark.parametrize("sever", [None, "mlp", "attn"])
def test_causal_trace_matches_hand_written_hooks(family, sever):
    hf = build_hf(family)
    model = ci.load_model(hf)
    data = random_data(n=3, T=5, seed=2)
    corruption = EmbeddingNoise(positions=(1, 2), scale=3.0, seed=7)
    eff = ci.causal_trace(model, data, corruption, positions=[1, 2, 4], sever=sever, batch_size=7)
    assert eff.values.shape == (3, 2 * 3)
    noise = corruption.draw(model, data)
    assert np.allclose(eff.corrupt, reference_noisy(hf, data, noise), rtol=1e-4, atol=1e-4)
    for j, s in enumerate(eff.sites):
        ref = reference_trace(hf, data, noise, s.layer, s.position, sever=sever)
        assert np.allclose(eff.values[:, j], ref, rtol=1e-4, atol=1e-4), s.label
    # restoring the last layer's hidden state at the read position gives the clean run back exactly
    last = [j for j, s in enumerate(eff.sites) if s.layer == model.n_layers - 1 and s.position == 4]
    assert np.allclose(eff.values[:, last[0]], eff.clean, rtol=0, atol=1e-5)


@pytest.mark.parametrize("component", ["mlp_out", "attn_out"])
def test_mlp_and_attention_traces_match_hooks(component):
    hf = build_hf("gpt2")
    model = ci.load_model(hf)
    data = random_data(n=3, T=4, seed=5)
    corruption = EmbeddingNoise(positions=(0, 1), scale=2.0, seed=1)
    eff = ci.causal_trace(model, data, corruption, component=component, positions=[0, 3])
    noise = corruption.draw(model, data)
    for j, s in enumerate(eff.sites):
        ref = reference_trace(hf, data, noise, s.layer, s.position, component=component)
        assert np.allclose(eff.values[:, j], ref, rtol=1e-4, atol=1e-4), s.label


def test_noise_is_seeded_per_prompt_and_scaled_by_the_embedding_std():
    model = ci.load_model(build_hf("llama"))
    data = random_data(n=64, T=6, seed=3)
    c = EmbeddingNoise(positions=(2, "end"), scale=3.0, seed=4)
    a, b = c.draw(model, data), c.draw(model, data)
    assert torch.equal(a, b)                                              # deterministic
    assert torch.equal(c.draw(model, data.subset([0, 1]))[1], a[1])       # per prompt: independent of the batch
    assert not torch.equal(EmbeddingNoise((2, "end"), 3.0, seed=5).draw(model, data), a)
    assert (a[:, [0, 1, 3, 4]] == 0).all() and (a[:, [2, 5]] != 0).all()  # only the corrupted positions
    std = model.hf.get_input_embeddings().weight.std().item()
    emp = a[:, [2, 5]].std().item()                                        # 64 x 2 x 32 draws
    assert abs(emp / (3 * std) - 1) < 0.05


def test_spec_round_trip_and_errors():
    c = EmbeddingNoise.from_dict({"kind": "embedding_noise", "positions": ["S1"], "scale": 3})
    assert c == EmbeddingNoise(("S1",), 3.0) and EmbeddingNoise.from_dict(c.to_dict()) == c
    with pytest.raises(TracingError, match="positions"):
        EmbeddingNoise.from_dict({"kind": "embedding_noise"})
    with pytest.raises(TracingError, match="> 0"):
        EmbeddingNoise((1,), scale=0)
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=3, T=4)
    with pytest.raises(TracingError, match="sever"):
        ci.causal_trace(model, data, EmbeddingNoise((1,)), component="mlp_out", sever="mlp")
    with pytest.raises(TracingError, match="unknown named position 'S1'"):
        ci.causal_trace(model, data, EmbeddingNoise(("S1",)))


@pytest.mark.skipif(STORIES is None, reason="../shared/models/stories260K is not in this checkout")
def test_causal_trace_on_stories260k_matches_hooks():
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(STORIES).eval()
    model = ci.load_model(hf)
    data = random_data(n=2, T=6, seed=8, vocab=512)
    corruption = EmbeddingNoise(positions=(1, 2), scale=3.0, seed=0)
    eff = ci.causal_trace(model, data, corruption, layers=[1, 4], positions=[1, 5], sever="mlp")
    noise = corruption.draw(model, data)
    for j, s in enumerate(eff.sites):
        ref = reference_trace(hf, data, noise, s.layer, s.position, sever="mlp")
        assert np.allclose(eff.values[:, j], ref, rtol=1e-4, atol=1e-4), s.label


def test_noise_corruption_works_wherever_a_corrupt_prompt_does(family):
    """A ContrastSet with an embedding-noise corruption in the ordinary scan: denoising resid_post gives the
    causal trace; the baselines are the clean and noisy runs; noising writes noisy states into the clean run."""
    hf = build_hf(family)
    model = ci.load_model(hf)
    corruption = EmbeddingNoise(positions=(1, 2), scale=3.0, seed=7)
    data = random_data(n=3, T=5, seed=2).with_noise(corruption)
    assert data.corrupt == data.clean and ci.ContrastSet.from_dict(data.to_dict()) == data
    trace = ci.causal_trace(model, data, corruption, positions=[1, 4])
    eff = ci.scan(model, data, ci.sites.SiteSet("resid_post", None, None, (1, 4)), progress=False)
    assert [s.label for s in eff.sites] == [s.label for s in trace.sites]
    assert np.allclose(eff.values, trace.values, rtol=1e-5, atol=1e-5)
    assert np.allclose(eff.corrupt, trace.corrupt, rtol=1e-6, atol=1e-6)
    noise = corruption.draw(model, data)
    assert np.allclose(eff.corrupt, reference_noisy(hf, data, noise), rtol=1e-4, atol=1e-4)
    # the other direction: the noisy hidden state at (layer 0, position 1) written into the clean run
    back = ci.scan(model, data, [ci.Site("resid_post", 0, None, 1)], intervention=ci.patch("noise"), progress=False)
    for i in range(data.n):
        toks = torch.tensor(data.clean[i])
        h = with_embedding_noise(hf, noise[i])
        try:
            noisy_state = read(hf, toks, "resid_post", 0)[1]
        finally:
            h.remove()
        ref = logit_diff(run_patched(hf, toks, [("resid_post", 0, None, [1], noisy_state)]), 4, data.answer[i],
                         data.wrong[i])
        assert back.values[i, 0] == pytest.approx(ref, rel=1e-4, abs=1e-4)


def test_yaml_hypothesis_with_embedding_noise(tmp_path):
    model = ci.load_model("testbed:induction")
    f = tmp_path / "hyp_trace.yaml"
    f.write_text("""
model: testbed:induction
hypotheses:
  - name: restoring the second copy's last token state recovers the answer
    data: {task: induction, n: 12, seed: 0, seq_len: 6}
    corruption: {kind: embedding_noise, positions: [1, 2, 3, 4, 5, 6], scale: 3, seed: 1}
    sites: {component: resid_post, layers: [1], positions: [end]}
    claim: {kind: recovers, at_least: 0.9}
    n_resamples: 499
""")
    (h,) = ci.load_hypotheses(f)
    assert h.corruption == EmbeddingNoise(tuple(range(1, 7)), 3.0, 1)
    assert ci.Hypothesis.from_dict(h.to_dict()) == h
    r = ci.run(h, model, progress=False)
    # restoring the last layer's output at the read position undoes any corruption exactly
    assert r.verdict == "supported" and r.evaluation.estimate == pytest.approx(1.0, abs=1e-9)
    data = ci.testbeds.induction_data(12, seed=0, seq_len=6).with_noise(h.corruption)
    trace = ci.causal_trace(model, data, h.corruption, layers=[1], positions=["end"])
    assert np.allclose(r.effects.corrupt, trace.corrupt, rtol=1e-6, atol=1e-6)
    assert (r.effects.corrupt < r.effects.clean - 1).mean() > 0.5   # the noise destroys the copy
    with pytest.raises(ci.HypothesisError, match="corruption"):
        ci.Hypothesis.from_dict({**h.to_dict(), "corruption": {"kind": "embedding_noise", "scale": 3}})
