"""Circuit faithfulness equals hand-written ablation with torch hooks; curves and their areas on known answers."""
import numpy as np
import pytest
import torch

import causalinterp as ci
from causalinterp.circuits import CircuitError, curve_from_values, node_universe
from causalinterp.engine.compile import random_site_sets
from causalinterp.spec.sites import Site

from conftest import build_hf, random_data
from reference import logit_diff, read, run_patched

TOL = 1e-5


def ablated_reference(hf, data, ablate_sites, kind):
    """Per-prompt logit diff of the clean run with `ablate_sites` (all positions) replaced jointly by the mean over
    the corrupt prompts (kind="mean") or zeros, through plain hooks, one prompt at a time."""
    out = np.zeros(data.n)
    means = {}
    for s in ablate_sites:
        acts = torch.stack([read(hf, torch.tensor(data.corrupt[j]), s.component, s.layer) for j in range(data.n)])
        m = acts.mean(0) if kind == "mean" else torch.zeros_like(acts[0])
        means[s] = m if s.head is None else m[:, s.head]
    for i in range(data.n):
        patches = [(s.component, s.layer, s.head, None, means[s]) for s in ablate_sites]
        logits = run_patched(hf, torch.tensor(data.clean[i]), patches)
        out[i] = logit_diff(logits, data.positions["end"][i], data.answer[i], data.wrong[i])
    return out


@pytest.mark.parametrize("family,kind", [("gpt2", "mean"), ("llama", "zero")])
def test_faithfulness_equals_hand_written_ablation(family, kind):
    hf = build_hf(family)
    model = ci.load_model(hf)
    data = random_data(n=4, T=5)
    universe = node_universe(model)
    circuit = ci.Circuit(nodes=[Site("head_out", 0, 1), Site("head_out", 1, 2), Site("mlp_out", 0)])
    eff = ci.faithfulness(model, data, circuit, ablation=kind, n_random=3, seed=1)
    outside = [s for s in universe if s not in circuit.nodes]
    m_c = ablated_reference(hf, data, outside, kind)
    m_0 = ablated_reference(hf, data, list(universe), kind)
    full = ablated_reference(hf, data, [], kind)
    np.testing.assert_allclose(eff.values[:, 0], m_c, atol=TOL)
    np.testing.assert_allclose(eff.base, m_0, atol=TOL)
    np.testing.assert_allclose(eff.target, full, atol=TOL)
    assert eff.meta["faithfulness"] == pytest.approx((m_c.mean() - m_0.mean()) / (full.mean() - m_0.mean()),
                                                      rel=1e-4)
    # the random circuits are circuits of the same size, drawn as documented
    picks = random_site_sets(len(universe), 3, 3, 1)[0]
    rand = [universe[j] for j in picks]
    np.testing.assert_allclose(eff.random_values[:, 0],
                               ablated_reference(hf, data, [s for s in universe if s not in rand], kind), atol=TOL)
    # ablating everything moves the metric (the comparison could fail)
    assert np.abs(m_0 - full).max() > 1e-2


def test_faithful_and_beats_random_on_the_induction_testbed():
    model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(48, seed=0)
    true = ci.Circuit(nodes=ci.sites.heads(ci.testbeds.card("induction")["circuit_heads"]))
    heads = ci.sites.head_out(positions="all")      # the MLPs stay (ablating MLP 0 breaks every circuit)
    eff = ci.faithfulness(model, data, true, ablation="mean", n_random=40, universe=heads)
    ev = ci.evaluate(eff, ci.claims.faithful(at_least=0.5), n_resamples=500)
    assert ev.verdict == "supported" and ev.estimate == pytest.approx(eff.meta["faithfulness"])
    assert ev.ci_low <= ev.estimate <= ev.ci_high
    # only 28 circuits of 2 heads exist, the true one among them: the exact randomisation p is 2/29 > 0.05
    br = ci.evaluate(eff, ci.claims.beats_random(40), n_resamples=500)
    assert eff.random_values.shape[1] == 28 and br.verdict == "inconclusive"
    with_mlps = ci.Circuit(nodes=true.nodes + (Site("mlp_out", 0), Site("mlp_out", 1)))
    eff = ci.faithfulness(model, data, with_mlps, ablation="mean", n_random=60)     # 210 circuits of 4 nodes
    assert ci.evaluate(eff, ci.claims.beats_random(60), n_resamples=500).verdict == "supported"
    wrong = ci.Circuit(nodes=ci.sites.heads([(0, 0), (1, 0)]))
    assert ci.evaluate(ci.faithfulness(model, data, wrong, universe=heads), ci.claims.faithful(at_least=0.5),
                       n_resamples=500).verdict != "supported"


def test_curve_statistics_from_values():
    rng = np.random.default_rng(0)
    n, fr = 40, np.array([0.1, 0.5, 1.0])
    empty = rng.normal(0, 1, n)
    full = empty + 2 + rng.normal(0, 0.1, n)
    values = np.column_stack([empty + 0.5, empty + 1.5, full])      # f = 0.25, 0.75, 1
    c = curve_from_values(values, empty, full, fr, [1, 5, 10], n_resamples=500)
    gap = full.mean() - empty.mean()
    np.testing.assert_allclose(c.estimate, [(0.5) / gap, 1.5 / gap, 1.0])
    assert c.cpr[0] == pytest.approx(np.trapezoid(c.estimate, fr))
    assert c.cmd[0] == pytest.approx(np.trapezoid(np.abs(1 - c.estimate), fr))
    assert np.all(c.ci_low <= c.estimate + 1e-12) and np.all(c.estimate <= c.ci_high + 1e-12)
    assert c.cpr[1] <= c.cpr[0] <= c.cpr[2] and c.cmd[1] <= c.cmd[0] <= c.cmd[2]
    assert c.ci_high[1] - c.ci_low[1] > 0
    # clusters: whole clusters are resampled, so cluster-level noise widens the interval
    clusters = np.repeat(np.arange(4), 10)
    shift = np.repeat(rng.normal(0, 1, 4), 10)
    wide = curve_from_values(values + shift[:, None], empty, full, fr, [1, 5, 10], clusters=clusters,
                             n_resamples=500)
    plain = curve_from_values(values + shift[:, None], empty, full, fr, [1, 5, 10], n_resamples=500)
    assert (wide.ci_high[0] - wide.ci_low[0]) > (plain.ci_high[0] - plain.ci_low[0])


def test_curve_on_the_induction_testbed_ranks_the_true_circuit_first():
    model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(48, seed=0)
    heads = ci.testbeds.card("induction")["circuit_heads"]
    good = list(ci.sites.heads(heads).explicit)
    universe = ci.sites.head_out(positions="all").resolve(2, 4, data.lengths)
    bad = [s for s in universe if s not in good]           # everything but the circuit first
    cache = {}
    sizes = (0.1, 0.2, 0.5, 1.0)
    kw = dict(sizes=sizes, n_resamples=300, cache=cache, universe=universe)
    g = ci.faithfulness_curve(model, data, good, **kw)
    b = ci.faithfulness_curve(model, data, bad, **kw)
    assert g.k.tolist() == [1, 2, 4, 8] and g.estimate[-1] == pytest.approx(1.0)
    assert g.estimate[1] > 0.5 > b.estimate[1]
    assert g.cpr[1] > b.cpr[2] and g.cmd[2] < b.cmd[1]          # the CIs of the areas separate
    assert "CPR" in str(g)


def test_bad_circuits_are_refused():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=3, T=5)
    with pytest.raises(CircuitError, match="not a ci.Site"):
        ci.Circuit(nodes=[(0, 1)])
    with pytest.raises(CircuitError, match="not in the universe"):
        ci.faithfulness(model, data, ci.Circuit(nodes=[Site("head_out", 0, 1, -1)]))
    edge = ci.sites.Path((Site("head_out", 0, 1),), ("logits",))
    with pytest.raises(CircuitError, match="not both"):
        ci.faithfulness(model, data, ci.Circuit(nodes=[Site("head_out", 0, 1)], edges=[edge]))
    with pytest.raises(CircuitError, match="mixes nodes and edges"):
        ci.faithfulness_curve(model, data, [edge, Site("head_out", 0, 1)])
    with pytest.raises(CircuitError, match="not in the universe of edges"):
        ci.faithfulness(model, data, ci.Circuit(edges=[edge]), universe=ci.circuits.edge_universe(model)[:5])
    with pytest.raises(CircuitError, match="sizes"):
        ci.faithfulness_curve(model, data, [Site("head_out", 0, 1)], sizes=(0, 0.5))


def test_resample_ablation_takes_other_prompts_activations():
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=2, T=5)       # two prompts: "another prompt" is determined
    circuit = ci.Circuit(nodes=[Site("head_out", 1, 2)])
    eff = ci.faithfulness(model, data, circuit, ablation="resample")
    hf = model.hf
    universe = node_universe(model)
    outside = [s for s in universe if s not in circuit.nodes]
    # prompt i's ablated nodes take prompt 1 - i's corrupt activations (reference="corrupt")
    out = np.zeros(2)
    for i in range(2):
        patches = []
        for s in outside:
            act = read(hf, torch.tensor(data.corrupt[1 - i]), s.component, s.layer)
            patches.append((s.component, s.layer, s.head, None, act if s.head is None else act[:, s.head]))
        logits = run_patched(hf, torch.tensor(data.clean[i]), patches)
        out[i] = logit_diff(logits, data.positions["end"][i], data.answer[i], data.wrong[i])
    np.testing.assert_allclose(eff.values[:, 0], out, atol=TOL)


# --- edge circuits ---------------------------------------------------------------------------------
def test_edge_circuit_made_of_a_node_circuits_edges_is_that_node_circuit():
    """Keeping every edge out of the circuit's nodes (and removing every edge out of the others) ablates exactly the
    nodes outside the circuit: the same m(C), m(0), m(M) and random circuits as the node circuit."""
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=4, T=5)
    nodes = [Site("head_out", 0, 1), Site("head_out", 1, 2), Site("mlp_out", 0)]
    edges = ci.circuits.edge_universe(model, embed=False)
    kept = [e for e in edges if e.senders[0] in nodes]
    node = ci.faithfulness(model, data, ci.Circuit(nodes=nodes))
    edge = ci.faithfulness(model, data, ci.Circuit(edges=kept), universe=edges, n_random=4, seed=3)
    np.testing.assert_allclose(edge.values, node.values, atol=TOL)
    np.testing.assert_allclose(edge.base, node.base, atol=TOL)
    np.testing.assert_allclose(edge.target, node.target, atol=TOL)
    assert edge.meta["level"] == "edges" and edge.meta["circuit_size"] == len(kept)
    # random circuits: the same number of edges, drawn as documented, each the complement ablated
    from causalinterp.engine.edges import edge_ablated_metrics
    picks = random_site_sets(len(edges), len(kept), 4, 3)
    cols = [tuple(j for j in range(len(edges)) if j not in set(p)) for p in picks]
    ref, _ = edge_ablated_metrics(model, data, edges, cols, ci.ablate("mean"))
    np.testing.assert_allclose(edge.random_values, ref, atol=1e-6)
    assert np.abs(edge.random_values - edge.values).max() > 1e-2


def test_edge_circuits_on_the_induction_testbed():
    """Edges ranked by single-edge ablation on half of the prompts: on the other half the top edges keep the
    behaviour (faithful, better than random edge sets of the same size) and the curve of the ranking beats the
    curve of the reversed ranking; the previous-token head reaches the induction head through k, not q."""
    model = ci.load_model("testbed:induction")
    disc, conf = ci.testbeds.induction_data(64, seed=0).split(0.5, seed=0, by="prompt")
    edges = ci.circuits.edge_universe(model)
    scan = ci.scan(model, disc, ci.sites.paths(edges), intervention=ci.ablate("mean"), progress=False)
    ranking = ci.circuits.rank(scan)
    labels = [e.label for e in ranking]
    k_edge = labels.index("path(head_out L0.H1 @all -> k L1.H2 @all)")
    q_edge = labels.index("path(head_out L0.H1 @all -> q L1.H2 @all)")
    assert k_edge < 10 < q_edge
    cache = {}
    top = ci.faithfulness(model, conf, ci.Circuit(edges=ranking[:22]), n_random=30, cache=cache)
    assert ci.evaluate(top, ci.claims.faithful(at_least=0.8), n_resamples=500).verdict == "supported"
    assert ci.evaluate(top, ci.claims.beats_random(30), n_resamples=500).verdict == "supported"
    kw = dict(sizes=(0.05, 0.1, 0.2, 0.5, 1.0), n_resamples=300, cache=cache)
    good = ci.faithfulness_curve(model, conf, ranking, **kw)
    bad = ci.faithfulness_curve(model, conf, ranking[::-1], **kw)
    assert good.meta["level"] == "edges" and good.k.tolist() == [6, 11, 22, 55, 110]
    assert good.estimate[-1] == pytest.approx(1.0) and good.cpr[1] > bad.cpr[2]
