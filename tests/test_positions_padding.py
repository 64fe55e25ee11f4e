"""Positions are range-checked against every prompt (no wraparound), aliases are resolved before duplicates
are checked, errors from deep inside are clear, and padding never reaches a result."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import causalinterp as ci
from causalinterp.engine.compile import _resample_sources
from causalinterp.engine.execute import ScanError
from causalinterp.spec.data import ContrastSet, DataError
from causalinterp.spec.metrics import MetricError
from causalinterp.spec.sites import Site, SiteError
from conftest import VOCAB, build_hf


@pytest.fixture(scope="module")
def model():
    return ci.load_model(build_hf("gpt2"))


def mixed_data(lengths=(5, 5, 7, 7, 6, 6), seed=0):
    """Prompts of different lengths (so the batch is right-padded)."""
    rng = np.random.default_rng(seed)
    clean = [rng.integers(1, VOCAB, L).tolist() for L in lengths]
    corrupt = [rng.integers(1, VOCAB, L).tolist() for L in lengths]
    n = len(lengths)
    answer, wrong = rng.integers(1, VOCAB, n), rng.integers(1, VOCAB, n)
    wrong = np.where(wrong == answer, answer % (VOCAB - 1) + 1, wrong)   # answer == wrong is refused
    return ContrastSet.from_tokens(clean, corrupt, answer, wrong, positions={"first": [0] * n, "second": [1] * n})


def scan(model, data, sites, **kw):
    return ci.scan(model, data, sites, progress=False, **kw)


# ----------------------------------------------------------------------------- metric positions never wrap

def test_metric_position_beyond_the_prompt_is_an_error_not_modulo(model):
    data = mixed_data((6, 6, 6, 6))
    with pytest.raises(MetricError, match="position 100 is out of range for prompt 0, which has 6 tokens"):
        scan(model, data, ci.sites.resid_pre([0], positions=[0]), metric=ci.metrics.logit_diff(100))


def test_metric_position_out_of_range_for_one_prompt_names_it(model):
    data = mixed_data((7, 7, 5, 6))
    with pytest.raises(MetricError, match="position 5 is out of range for prompt 2, which has 5 tokens"):
        scan(model, data, ci.sites.resid_pre([0], positions=[0]), metric=ci.metrics.logit_diff(5))
    with pytest.raises(MetricError, match="position -6 is out of range for prompt 2"):
        scan(model, data, ci.sites.resid_pre([0], positions=[0]), metric=ci.metrics.logprob(-6))


def test_metric_reads_the_position_it_names(model):
    """An in-range int position reads that token: equal to the named position at the same index."""
    data = mixed_data((6, 6, 6, 6))
    a = scan(model, data, ci.sites.resid_pre([1], positions=[0]), metric=ci.metrics.logprob(1))
    b = scan(model, data, ci.sites.resid_pre([1], positions=[0]), metric=ci.metrics.logprob("second"))
    c = scan(model, data, ci.sites.resid_pre([1], positions=[0]), metric=ci.metrics.logprob(-5))
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.values, c.values)


# ----------------------------------------------------------------------------- site positions

def test_site_position_out_of_range_names_the_prompt(model):
    data = mixed_data((7, 7, 5, 6))
    with pytest.raises(SiteError, match="position 5 is out of range for prompt 2, which has 5 tokens"):
        scan(model, data, ci.sites.resid_pre([0], positions=[5]))


@pytest.mark.parametrize("position", [3.7, True, np.float64(2.0), None, [1]])
def test_site_positions_must_be_ints_or_names(position):
    with pytest.raises(SiteError, match="position"):
        Site("resid_pre", 0, None, position) if position is not None else ci.sites.resid_pre([0], positions=[None])


@pytest.mark.parametrize("a,b", [("end", -1), (5, "end"), ("first", 0), (-6, "first"), (1, "second")])
def test_aliases_of_one_position_are_one_site(model, a, b):
    data = mixed_data((6, 6, 6, 6))
    with pytest.raises(SiteError, match="same site twice"):
        scan(model, data, ci.sites.resid_pre([0], positions=[a, b]))
    with pytest.raises(SiteError, match="same site twice"):
        scan(model, data, ci.sites.explicit([Site("head_out", 1, 2, a), Site("head_out", 1, 2, b)]), joint=True)


def test_positions_that_differ_in_some_prompt_are_distinct_sites(model):
    data = mixed_data((6, 6, 5, 6))  # 'end' is 5 in most prompts but 4 in prompt 2
    eff = scan(model, data, ci.sites.resid_pre([0], positions=[4, "end"]))
    assert eff.values.shape == (4, 2)
    assert not np.array_equal(eff.values[:, 0], eff.values[:, 1])


def test_same_site_in_two_heads_is_not_a_duplicate(model):
    data = mixed_data((6, 6, 6, 6))
    eff = scan(model, data, ci.sites.heads([(1, 0), (1, 1)], positions=["end", 2]))
    assert eff.values.shape == (4, 4)


# ----------------------------------------------------------------------------- errors from deep inside

def test_prompt_longer_than_the_context_is_a_clear_error(model):
    n_ctx = model.config.n_positions
    rows = [[1] * 6, [2] * (n_ctx + 3)]
    data = ContrastSet.from_tokens(rows, rows, [1, 2], [3, 4])
    with pytest.raises(DataError, match=f"prompt 1 has {n_ctx + 3} tokens but the model's context holds {n_ctx}"):
        scan(model, data, ci.sites.resid_pre([0], positions=[0]))


def test_sites_as_a_list_of_tuples(model):
    with pytest.raises(SiteError, match=r"not a ci.Site.*ci.sites.heads"):
        scan(model, mixed_data(), [(1, 2), (0, 3)])


def test_numpy_layers_heads_and_positions_work(model):
    data = mixed_data((6, 6, 6, 6))
    a = scan(model, data, ci.sites.heads([(np.int64(1), np.int64(2))], positions=[np.int64(-1)]))
    b = scan(model, data, ci.sites.heads([(1, 2)], positions=[-1]))
    np.testing.assert_array_equal(a.values, b.values)
    c = scan(model, data, ci.sites.resid_pre(layers=np.array([0, 1]), positions=[0]))
    assert c.values.shape == (4, 2)


@pytest.mark.parametrize("kw,match", [({"seed": "abc"}, "seed: expected an integer"), ({"seed": -3}, "seed"),
                                      ({"n_random": 2.5}, "n_random"), ({"joint": "false"}, "joint")])
def test_scan_arguments_are_checked(model, kw, match):
    with pytest.raises(ScanError, match=match):
        scan(model, mixed_data(), ci.sites.resid_pre([0], positions=[0]), **kw)


# ----------------------------------------------------------------------------- padding never reaches a result

def test_resample_sources_at_all_positions_have_the_same_length():
    lengths = (5, 5, 7, 7, 7, 6, 6)
    src = _resample_sources(len(lengths), 40, seed=3, lengths=lengths)
    L = np.asarray(lengths)
    assert (L[src] == L[None, :]).all()
    assert (src != np.arange(len(lengths))[None, :]).all()
    with pytest.raises(ScanError, match="prompt 2 is the only prompt with 7 tokens"):
        _resample_sources(4, 2, 0, (5, 5, 7, 5))
    # one length: the draw is the one it always was (results of existing scans do not change)
    np.testing.assert_array_equal(_resample_sources(5, 3, 1, (4,) * 5), _resample_sources(5, 3, 1))


def test_resample_at_all_positions_refuses_a_lone_length(model):
    data = mixed_data((5, 5, 7, 6, 6))
    with pytest.raises(ScanError, match="only prompt with 7 tokens"):
        scan(model, data, ci.sites.resid_pre([1], positions=["all"]), intervention=ci.ablate("resample"))
    # at one position any prompt is a valid source: no refusal
    scan(model, data, ci.sites.resid_pre([1], positions=["end"]), intervention=ci.ablate("resample"))


INTERVENTIONS = [ci.patch("denoise"), ci.patch("noise"), ci.ablate("zero"), ci.ablate("mean"),
                 ci.ablate("resample", seed=1), ci.ablate("mean", reference="clean"),
                 ci.ablate("resample", seed=2, reference="clean")]
METRICS = [ci.metrics.logit_diff(), ci.metrics.logprob(), ci.metrics.prob(), ci.metrics.kl_to_clean(),
           ci.metrics.accuracy(), ci.metrics.logprob("second")]
SITES = ci.sites.explicit([Site("resid_pre", 1, None, "all"), Site("head_out", 0, 1, "all"), Site("mlp_out", 0),
                           Site("attn_out", 1, None, "end"), Site("resid_post", 0, None, 1),
                           Site("k", 1, 3, "first"), Site("resid_mid", 1, None, -2)])


def _scan_with_pad(monkeypatch, model, data, pad, **kw):
    original = ContrastSet.tokens
    monkeypatch.setattr(ContrastSet, "tokens", lambda self, which, pad_=0: original(self, which, pad=pad))
    try:
        return scan(model, data, SITES, **kw)
    finally:
        monkeypatch.setattr(ContrastSet, "tokens", original)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pad=st.integers(1, VOCAB - 1), seed=st.integers(0, 2 ** 16), iv=st.integers(0, len(INTERVENTIONS) - 1),
       metric=st.integers(0, len(METRICS) - 1), joint=st.booleans())
def test_the_padding_token_never_changes_any_value(monkeypatch, model, pad, seed, iv, metric, joint):
    """Property: with prompts of different lengths, the value of every intervention and metric is the same
    whatever token pads the batch (padding never reaches a result)."""
    data = mixed_data((5, 5, 7, 7, 6, 6, 7), seed=seed)
    kw = dict(intervention=INTERVENTIONS[iv], metric=METRICS[metric], joint=joint)
    a = _scan_with_pad(monkeypatch, model, data, 0, **kw)
    b = _scan_with_pad(monkeypatch, model, data, pad, **kw)
    for name in ("values", "clean", "corrupt", "base", "target"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-6, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("iv", range(len(INTERVENTIONS)))
def test_every_intervention_is_padding_free(monkeypatch, model, iv):
    """Each intervention once (the property test above draws a few at random)."""
    data = mixed_data((5, 5, 7, 7, 6, 6, 7), seed=11)
    a = _scan_with_pad(monkeypatch, model, data, 0, intervention=INTERVENTIONS[iv], metric=METRICS[1])
    b = _scan_with_pad(monkeypatch, model, data, VOCAB - 1, intervention=INTERVENTIONS[iv], metric=METRICS[1])
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6, atol=1e-9)


def test_resample_all_positions_equals_a_same_length_reference(model):
    """The resampled value at 'all' is that of a real same-length prompt: equal to patching in its activations
    by hand (with a one-length set, where the draw is unchanged)."""
    data = mixed_data((6,) * 5, seed=4)
    eff = scan(model, data, ci.sites.resid_pre([1], positions=["all"]), intervention=ci.ablate("resample", seed=5, reference="clean"), metric=ci.metrics.logprob())
    src = _resample_sources(5, 1, 5)[0]
    # denoising prompt i with prompt src[i]'s clean activations = resampling from src[i]
    swapped = ContrastSet.from_tokens([data.clean[s] for s in src], list(data.clean), data.answer, data.wrong)
    ref = scan(model, swapped, ci.sites.resid_pre([1], positions=["all"]), intervention=ci.patch("denoise"),
               metric=ci.metrics.logprob())
    np.testing.assert_allclose(eff.values, ref.values, rtol=1e-6, atol=1e-9)
