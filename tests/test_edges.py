"""Edge ablation (causalinterp.engine.edges) against the node and path engines, which are themselves checked
against hand-written hooks: removing every edge out of a node is ablating the node, removing one edge is path
patching it, removing every edge is ablating every node at once, removing none is the clean run.  On GPT-2,
GPT-NeoX (parallel attention), Llama (GQA) and the real stories260K."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import causalinterp as ci
from causalinterp.engine.compile import ScanError
from causalinterp.engine.edges import EMBED, edge_ablated_metrics, edge_universe
from causalinterp.spec.paths import Path
from causalinterp.spec.sites import ALL, Site, SiteError

from conftest import VOCAB, build_hf, random_data
from shared_models import shared_model

TOL = 2e-5
STORIES = shared_model("stories260K")
_GPT2 = ci.load_model(build_hf("gpt2"))


def _model(name):
    if name == "stories260K":
        if STORIES is None:
            pytest.skip("the real model stories260K is not here (shared/models)")
        from transformers import AutoModelForCausalLM
        hf = AutoModelForCausalLM.from_pretrained(STORIES, local_files_only=True).eval()
        return ci.load_model(hf), random_data(n=4, T=6, vocab=hf.config.vocab_size)
    return ci.load_model(build_hf(name)), random_data(n=4, T=6)


def _out_of(edges, node):
    return tuple(i for i, e in enumerate(edges) if e.senders[0] == node)


@pytest.mark.parametrize("name", ["gpt2", "gpt_neox", "llama", "stories260K"])
@pytest.mark.parametrize("kind", ["mean", "zero"])
def test_edges_equal_node_and_path_ablation(name, kind):
    model, data = _model(name)
    edges = edge_universe(model)
    last = model.n_layers - 1
    nodes = [EMBED, Site("head_out", 0, 1, ALL), Site("mlp_out", 0, None, ALL), Site("head_out", last, 2, ALL)]
    # one edge of each receiver kind
    want = {"q": Site("q", last, 3, ALL), "k": Site("k", last, 0, ALL), "v": Site("v", last, 0, ALL),
            "mlp": Site("mlp_out", last, None, ALL), "logits": "logits"}
    singles = {k: next(i for i, e in enumerate(edges) if e.receivers[0] == r and e.senders[0] == nodes[-3])
               for k, r in want.items()}
    columns = [()] + [_out_of(edges, u) for u in nodes] + [(i,) for i in singles.values()]
    columns += [tuple(range(len(edges)))]
    ablation = ci.ablate(kind)
    vals, run = edge_ablated_metrics(model, data, edges, columns, ablation)
    np.testing.assert_allclose(vals[:, 0], run.clean_metric, atol=TOL)
    node = ci.scan(model, data, ci.sites.explicit(nodes), intervention=ablation, progress=False)
    np.testing.assert_allclose(vals[:, 1:1 + len(nodes)], node.values, atol=TOL)
    path = ci.scan(model, data, ci.sites.paths([edges[i] for i in singles.values()]), intervention=ablation,
                   progress=False)
    np.testing.assert_allclose(vals[:, 1 + len(nodes):-1], path.values, atol=TOL)
    every = ci.scan(model, data, ci.sites.explicit(list(run.senders)), joint=True, intervention=ablation,
                    progress=False)
    np.testing.assert_allclose(vals[:, -1], every.values[:, 0], atol=TOL)
    # the edges changed something (a test that could fail)
    assert np.abs(vals[:, 1:] - run.clean_metric[:, None]).max() > 100 * TOL


def test_random_edge_sets_do_not_depend_on_batching_or_column_order():
    model, data = _model("llama")
    edges = edge_universe(model)
    rng = np.random.default_rng(0)
    columns = [tuple(rng.choice(len(edges), size=k, replace=False)) for k in (3, 10, 30, 60, 3)]
    a, _ = edge_ablated_metrics(model, data, edges, columns, ci.ablate("mean"))
    b, _ = edge_ablated_metrics(model, data, edges, columns[::-1], ci.ablate("mean"), batch_size=1)
    np.testing.assert_allclose(a, b[:, ::-1], atol=1e-5)
    assert np.abs(a[:, 0] - a[:, 2]).max() > 1e-3


def test_universe_counts_and_gqa_groups():
    """Every sender feeds every receiver downstream: GPT-2 (sequential, 4 heads) and Llama (GQA, 2 key/value
    groups, so k and v receivers per group)."""
    gpt2 = ci.load_model(build_hf("gpt2"))
    # senders 1 + 2 x (4 + 1); receivers per layer 12 q/k/v + MLP; logits
    # layer 0: 12 x 1 + MLP 5; layer 1: 12 x 6 + MLP 10; logits 11
    assert len(edge_universe(gpt2)) == 12 + 5 + 72 + 10 + 11
    llama = ci.load_model(build_hf("llama"))
    edges = edge_universe(llama)
    assert len(edges) == 8 + 5 + 8 * 6 + 10 + 11
    assert not any(e.receivers[0].component == "k" and e.receivers[0].head == 1 for e in edges if e.receivers[0] != "logits")
    neox = ci.load_model(build_hf("gpt_neox", parallel=True))   # parallel: the MLP does not read its own layer's heads
    assert len(edge_universe(neox)) == 12 + 1 + 72 + 6 + 11
    assert len(edge_universe(gpt2, embed=False)) == len(edge_universe(gpt2)) - (12 + 1 + 12 + 1 + 1)


def test_gqa_key_receiver_of_any_head_of_a_group_is_the_groups_edge():
    model, data = _model("llama")
    h1 = Path((Site("head_out", 0, 1),), (Site("k", 1, 1),))     # group 0 = heads 0 and 1
    h0 = Path((Site("head_out", 0, 1),), (Site("k", 1, 0),))
    a, _ = edge_ablated_metrics(model, data, [h1], [(0,)], ci.ablate("mean"))
    b, _ = edge_ablated_metrics(model, data, [h0], [(0,)], ci.ablate("mean"))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(SiteError, match="same edge twice"):
        edge_ablated_metrics(model, data, [h0, h1], [(0,)], ci.ablate("mean"))


@pytest.mark.parametrize("edge, match", [
    (Path((Site("head_out", 0, 1), Site("head_out", 0, 2)), (Site("q", 1, 0),)), "one of each"),
    (Path((Site("head_out", 0, 1, "end"),), (Site("q", 1, 0),)), "every position"),
    (Path((Site("head_out", 1, 1),), (Site("q", 0, 0),)), "after the receiver reads"),
    (Path((Site("resid_pre", 1),), (Site("q", 1, 0),)), "embedding"),
    (Path((Site("head_out", 0, 1),), (Site("q", 1, 0, "end"),)), "receiver is a head's q"),
])
def test_bad_edges_are_refused_with_the_reason(edge, match):
    model, data = _model("gpt2")
    with pytest.raises(SiteError, match=match):
        edge_ablated_metrics(model, data, [edge], [(0,)], ci.ablate("mean"))


def test_denoising_is_refused():
    model, data = _model("gpt2")
    with pytest.raises(ScanError, match="ablates the clean run"):
        edge_ablated_metrics(model, data, edge_universe(model)[:3], [(0,)], ci.patch("denoise"))


def test_corrupt_activations_of_an_embedding_noise_run_are_the_ablated_values():
    """patch('noise') takes the corrupt run's activations; with embedding noise (causal tracing) that run carries the
    noise, as in the node engine: removing every edge out of a node equals noising the node."""
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=3, T=5).with_noise(ci.EmbeddingNoise(positions=[0, 1], scale=3.0))
    edges = edge_universe(model)
    node = Site("head_out", 1, 2, ALL)
    vals, _ = edge_ablated_metrics(model, data, edges, [_out_of(edges, node)], ci.patch("noise"))
    ref = ci.scan(model, data, [node], intervention=ci.patch("noise"), progress=False)
    np.testing.assert_allclose(vals, ref.values, atol=TOL)
    plain = ci.scan(model, random_data(n=3, T=5), [node], intervention=ci.patch("noise"), progress=False)
    assert np.abs(ref.values - plain.values).max() > 100 * TOL


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), size=st.integers(1, 60))
def test_padding_and_batch_composition_never_change_a_prompts_value(seed, size):
    """Zero ablation (no dependence on other prompts): each prompt of a right-padded batch of different lengths gets
    the value it gets alone, for random removed edge sets."""
    model = _GPT2
    g = np.random.default_rng(seed % 7)
    lengths = (5, 7, 6, 5)
    data = ci.ContrastSet.from_tokens([g.integers(1, VOCAB, L).tolist() for L in lengths],
                                      [g.integers(1, VOCAB, L).tolist() for L in lengths],
                                      answer=[1, 2, 3, 4], wrong=[5, 6, 7, 8])
    edges = edge_universe(model)
    rng = np.random.default_rng(seed)
    columns = [tuple(rng.choice(len(edges), size=size, replace=False)), tuple(rng.choice(len(edges), size=3))]
    together, _ = edge_ablated_metrics(model, data, edges, columns, ci.ablate("zero"))
    for i in range(data.n):
        alone, _ = edge_ablated_metrics(model, data.subset([i]), edges, columns, ci.ablate("zero"))
        np.testing.assert_allclose(alone[0], together[i], atol=TOL)


def test_zero_ablating_every_edge_into_the_logits_leaves_nothing():
    """In a model without biases, zero-ablating every edge into the logits makes the final stream exactly zero, so
    the logit difference is exactly 0 -- streams are sums of contributions, not clean + differences (whose float
    residue a norm would blow up into an O(1) logit difference)."""
    model, data = _model("stories260K")
    edges = edge_universe(model)
    into_logits = tuple(i for i, e in enumerate(edges) if e.receivers[0] == "logits")
    most = tuple(i for i in range(len(edges)) if i % 10 != 3)
    vals, run = edge_ablated_metrics(model, data, edges, [into_logits, most], ci.ablate("zero"))
    assert np.abs(vals[:, 0]).max() < 1e-6
    assert np.abs(run.clean_metric).max() > 1


def test_families_without_per_head_shares_use_attn_out_senders():
    """OLMo 2 normalises attention's output before the residual: its senders are whole attention outputs, and
    the equalities with node ablation and path patching hold for them; Gemma 2 soft-caps its logits, so the
    logits receiver (and with it edge ablation) is refused with the reason."""
    model, data = ci.load_model(build_hf("olmo2")), random_data(n=4, T=6)
    edges = edge_universe(model)
    assert {e.senders[0].component for e in edges} == {"resid_pre", "attn_out", "mlp_out"}
    attn = Site("attn_out", 0, None, ALL)
    single = next(i for i, e in enumerate(edges) if e.senders[0] == attn and e.receivers[0] == Site("q", 1, 2, ALL))
    vals, run = edge_ablated_metrics(model, data, edges, [_out_of(edges, attn), (single,)], ci.ablate("mean"))
    node = ci.scan(model, data, [attn], intervention=ci.ablate("mean"), progress=False)
    path = ci.scan(model, data, ci.sites.paths([edges[single]]), intervention=ci.ablate("mean"), progress=False)
    np.testing.assert_allclose(vals, np.column_stack([node.values[:, 0], path.values[:, 0]]), atol=TOL)
    assert np.abs(vals[:, 0] - run.clean_metric).max() > 100 * TOL
    gemma2 = ci.load_model(build_hf("gemma2"))
    with pytest.raises(ScanError, match="soft-capping"):
        edge_ablated_metrics(gemma2, data, edge_universe(gemma2)[:2], [(0,)], ci.ablate("mean"))
