"""Edge ablation: the hand-written reference (tests/reference.py `edge_ablated`) checked against what it must equal
(the clean run, node ablation, path patching, everything ablated), then the engine checked against the reference.

Edge-ablated run of a prompt: every receiver v (a head's q/k/v input, an MLP's input, the logits) reads
clean_stream_v + sum over its upstream senders u of (c_u - clean_u), with c_u the sender's ablated contribution a_u
when the edge u -> v is removed and its actual output o_u in this run otherwise."""
import numpy as np
import pytest
import torch

from conftest import build_hf, random_data
from reference import (_dims, edge_ablated, edge_list, edge_senders, every_node_ablated, kv_group,
                       logit_diff, parallel_blocks, path_patched, read, run_patched)
from shared_models import shared_model

TOL = 1e-5    # engine vs reference, float32
EXACT = 1e-9  # the reference's own checks run in float64, where two exact computations agree to rounding
STORIES = shared_model("stories260K")
MODELS = ["gpt2", "gpt_neox", "gpt_neox_seq", "llama", "stories260K"]
_CACHE = {}


def load(name, dtype=torch.float64):
    """A model by name (the tiny config-built ones, or the real stories260K), built once per session."""
    if (name, dtype) not in _CACHE:
        if name == "stories260K":
            if STORIES is None:
                pytest.skip("the real model stories260K is not here (shared/models)")
            from transformers import AutoModelForCausalLM
            hf = AutoModelForCausalLM.from_pretrained(STORIES, local_files_only=True).eval()
        else:
            hf = build_hf("gpt_neox", parallel=False) if name == "gpt_neox_seq" else build_hf(name)
        _CACHE[(name, dtype)] = hf.to(dtype)
    return _CACHE[(name, dtype)]


def prompts(hf, n=3, T=5, seed=1):
    return random_data(n=n, T=T, seed=seed, vocab=hf.config.vocab_size)


def native(hf, tokens, n_layers):
    """Every sender's native activation on one prompt: resid_pre of layer 0, head_out per head, mlp_out."""
    acts = {("embed",): read(hf, tokens, "resid_pre", 0)}
    for l in range(n_layers):
        z = read(hf, tokens, "head_out", l)
        acts.update({("head", l, h): z[:, h] for h in range(z.shape[1])})
        acts[("mlp", l)] = read(hf, tokens, "mlp_out", l)
    return acts


def ablated_values(hf, data, kind, n_layers, reference="corrupt"):
    """Per prompt: sender -> ablated native activation. mean: the mean over the reference prompts at each position
    (over the prompts long enough to have it); zero: zeros; other: the prompt's own corrupt prompt's activation."""
    runs = data.corrupt if reference == "corrupt" else data.clean
    corrupt = [native(hf, torch.tensor(runs[j]), n_layers) for j in range(data.n)]
    out = []
    for i in range(data.n):
        T = len(data.clean[i])
        if kind == "other":
            out.append(corrupt[i])
        elif kind == "zero":
            out.append({u: torch.zeros((T,) + a.shape[1:], dtype=a.dtype) for u, a in corrupt[0].items()})
        else:
            vals = {}
            for u in corrupt[0]:
                vals[u] = torch.stack([torch.stack([c[u][t] for c in corrupt if len(c[u]) > t]).mean(0)
                                       for t in range(T)])
            out.append(vals)
    return out


def as_patch(u, values):
    """The node patch (reference.run_patched / path_patched form) replacing sender u's activation by `values`."""
    if u == ("embed",):
        return ("resid_pre", 0, None, None, values)
    if u[0] == "head":
        return ("head_out", u[1], u[2], None, values)
    return ("mlp_out", u[1], None, None, values)


def as_receiver(hf, v):
    """Receiver key -> path_patched receiver (k/v groups name their first query head)."""
    if v[0] == "mlp":
        return ("mlp_out", v[1], None, None)
    H, KV, _ = _dims(hf)
    return (v[0], v[1], v[2] * (H // KV) if v[0] in "kv" else v[2], None)


def setup(name, kind="mean", n=3):
    hf = load(name)
    L = hf.config.num_hidden_layers
    data = prompts(hf, n=n)
    return hf, L, data, ablated_values(hf, data, kind, L)


# ----------------------------------------------------------------------------- the reference's own checks

def test_edge_list_counts_by_hand():
    """2 layers, 4 heads (GPT-2): layer-0 q/k/v read the embedding (12), MLP 0 reads embed + 4 heads (5), layer-1
    q/k/v read embed + 4 heads + MLP 0 (12 * 6), MLP 1 reads 10, the logits all 11 senders: 110 edges.
    Parallel GPT-NeoX: each MLP loses its own layer's 4 heads (102).  Llama with 2 kv groups: 4 q + 2 k + 2 v
    receivers per layer (8 * 1 + 5 + 8 * 6 + 10 + 11 = 82)."""
    assert len(edge_list(load("gpt2"), 2)) == 110
    assert len(edge_list(load("gpt_neox_seq"), 2)) == 110
    assert len(edge_list(load("gpt_neox"), 2)) == 102
    assert len(edge_list(load("llama"), 2)) == 82
    assert len(set(edge_list(load("llama"), 2))) == 82


@pytest.mark.parametrize("name", MODELS)
def test_nothing_removed_is_the_clean_run(name):
    hf, L, data, _ = setup(name)
    for i in range(data.n):
        t = torch.tensor(data.clean[i])
        with torch.no_grad():
            clean = hf(t[None]).logits[0]
        torch.testing.assert_close(edge_ablated(hf, t, {}, set(), L), clean, rtol=0, atol=EXACT)


NODES = [("embed",), ("head", 0, 1), ("head", 1, 2), ("mlp", 0), ("mlp", 1)]


@pytest.mark.parametrize("name,kind", [(m, "mean") for m in MODELS] + [("gpt2", "zero"), ("llama", "other"),
                                                                      ("gpt_neox", "other")])
def test_removing_every_edge_out_of_a_node_is_node_ablation(name, kind):
    hf, L, data, abl = setup(name, kind)
    every = edge_list(hf, L)
    nodes = NODES + ([("head", L - 1, 7), ("mlp", 3)] if name == "stories260K" else [])
    for i in range(data.n):
        t = torch.tensor(data.clean[i])
        clean = run_patched(hf, t, [])
        for u in nodes:
            removed = {(s, v) for s, v in every if s == u}
            got = edge_ablated(hf, t, abl[i], removed, L)
            want = run_patched(hf, t, [as_patch(u, abl[i][u])])
            torch.testing.assert_close(got, want, rtol=0, atol=EXACT, msg=f"{name} {u} prompt {i}")
            assert (want - clean).abs().max() > 1e-3, (u, "the ablation must change the logits for the check to bite")


def _single_receiver_cases(hf, L):
    """(senders, receiver) cases: every sender kind into every receiver kind, and sets of senders into one."""
    H = hf.config.num_attention_heads
    cases = [([("head", 0, 1)], ("q", 1, 2)), ([("head", 0, 3)], ("k", 1, 1)), ([("mlp", 0)], ("v", 1, 0)),
             ([("embed",)], ("q", 0, 1)), ([("embed",)], ("k", L - 1, 0)), ([("head", 0, 0)], ("mlp", 1)),
             ([("embed",)], ("mlp", 0)), ([("mlp", 0)], ("mlp", L - 1)),
             ([("head", L - 1, H - 1)], ("logits",)), ([("mlp", 0)], ("logits",)), ([("embed",)], ("logits",)),
             ([("head", 0, 1), ("mlp", 0), ("embed",)], ("q", 1, 0)),
             ([("head", 0, 2), ("head", 1, 1), ("mlp", 1)], ("logits",))]
    if not parallel_blocks(hf):   # sequential: a head reaches its own layer's MLP
        cases += [([("head", 1, 3)], ("mlp", 1)), ([("head", 1, 0), ("head", 0, 2)], ("mlp", 1))]
    return cases


@pytest.mark.parametrize("name,kind", [(m, "mean") for m in MODELS] + [("gpt_neox", "zero"), ("gpt2", "other")])
def test_removing_edges_into_one_receiver_is_path_patching(name, kind):
    """Removing u -> v for senders u into ONE receiver v: v reads clean + sum_u (a_u - clean_u), everything else
    clean, which is Wang et al.'s path patching of the senders into v (reference.path_patched on the clean run)."""
    hf, L, data, abl = setup(name, kind)
    for i in range(data.n):
        t = torch.tensor(data.clean[i])
        clean = run_patched(hf, t, [])
        for senders, v in _single_receiver_cases(hf, L):
            got = edge_ablated(hf, t, abl[i], {(u, v) for u in senders}, L)
            receivers = "logits" if v == ("logits",) else [as_receiver(hf, v)]
            want = path_patched(hf, t, [as_patch(u, abl[i][u]) for u in senders], receivers, L)
            torch.testing.assert_close(got, want, rtol=0, atol=EXACT, msg=f"{name} {senders} -> {v} prompt {i}")
            assert (want - clean).abs().max() > 1e-4, (senders, v, "the edge must matter for the check to bite")


@pytest.mark.parametrize("name,kind", [(m, "mean") for m in MODELS] + [("llama", "zero"), ("gpt_neox_seq", "other")])
def test_removing_every_edge_is_ablating_every_node(name, kind):
    """With every edge removed each receiver reads only ablated contributions, so nothing the prompt computes
    reaches the logits: they are final_norm(a_embed + sum a_heads + attention output biases + sum a_mlps) -> unembed,
    which is also node ablation of every sender at once."""
    hf, L, data, abl = setup(name, kind)
    every = set(edge_list(hf, L))
    for i in range(data.n):
        t = torch.tensor(data.clean[i])
        got = edge_ablated(hf, t, abl[i], every, L)
        torch.testing.assert_close(got, every_node_ablated(hf, abl[i], L), rtol=0, atol=EXACT)
        nodes = run_patched(hf, t, [as_patch(u, abl[i][u]) for u in edge_senders(hf, L)])
        torch.testing.assert_close(got, nodes, rtol=0, atol=EXACT)
        assert (got - run_patched(hf, t, [])).abs().max() > 1e-3


def test_ablating_to_the_clean_values_changes_nothing():
    """a_u = the prompt's own clean activation: any set of removed edges gives the clean logits."""
    hf = load("llama")
    data = prompts(hf)
    t = torch.tensor(data.clean[0])
    own = native(hf, t, 2)
    rng = np.random.default_rng(0)
    edges = edge_list(hf, 2)
    removed = {edges[j] for j in rng.choice(len(edges), 30, replace=False)}
    torch.testing.assert_close(edge_ablated(hf, t, own, removed, 2), run_patched(hf, t, []), rtol=0, atol=EXACT)


def test_an_edge_that_does_not_exist_is_refused():
    hf = load("gpt_neox")
    data = prompts(hf)
    abl = ablated_values(hf, data, "zero", 2)[0]
    t = torch.tensor(data.clean[0])
    with pytest.raises(ValueError, match="no edge"):
        edge_ablated(hf, t, abl, {(("head", 1, 0), ("q", 1, 0))}, 2)
    with pytest.raises(ValueError, match="no edge"):   # parallel blocks: heads do not reach their own layer's MLP
        edge_ablated(hf, t, abl, {(("head", 1, 0), ("mlp", 1))}, 2)
    seq = load("gpt_neox_seq")
    edge_ablated(seq, t, abl, {(("head", 1, 0), ("mlp", 1))}, 2)


def test_kv_receivers_are_per_group():
    """Under GQA a k/v receiver is a key/value group: ablating the edge into group 1's k moves query heads 2 and 3's
    attention only, and equals path patching into k of head 2 or head 3 alike."""
    hf = load("llama")
    data = prompts(hf)
    abl = ablated_values(hf, data, "other", 2)[0]
    t = torch.tensor(data.clean[0])
    assert kv_group(hf, "k", 2) == kv_group(hf, "k", 3) == 1
    got = edge_ablated(hf, t, abl, {(("head", 0, 1), ("k", 1, 1))}, 2)
    for h in (2, 3):
        want = path_patched(hf, t, [as_patch(("head", 0, 1), abl[("head", 0, 1)])], [("k", 1, h, None)], 2)
        torch.testing.assert_close(got, want, rtol=0, atol=EXACT)


# ----------------------------------------------------------------------------- the engine against the reference
# causalinterp.engine.edges runs in float32, layer by layer over batches of (circuit, prompt) rows; the reference
# runs one prompt in one hooked float64 forward pass of the same weights.

def _engine():
    return pytest.importorskip("causalinterp.engine.edges", reason="the edge ablation engine is not here yet")


def _key(hf, site):
    """An engine Site (or 'logits') as a reference sender/receiver key."""
    if site == "logits":
        return ("logits",)
    c, l, h = site.component, site.layer, site.head
    if c == "resid_pre":
        assert l == 0
        return ("embed",)
    if c == "head_out":
        return ("head", l, h)
    if c == "mlp_out":
        return ("mlp", l)
    return (c, l, kv_group(hf, c, h))


def _edge_keys(hf, edges):
    return [(_key(hf, e.senders[0]), _key(hf, e.receivers[0])) for e in edges]


def _resample_values(hf, data, senders, sources, n_layers):
    """Resample ablation: sender j of prompt i takes corrupt prompt sources[j, i]'s activation."""
    corrupt = [native(hf, torch.tensor(data.corrupt[j]), n_layers) for j in range(data.n)]
    keys = [_key(hf, s) for s in senders]
    return [{u: corrupt[sources[j, i]][u] for j, u in enumerate(keys)} for i in range(data.n)]


def reference_metrics(hf, data, keys, columns, ablated):
    """[n_prompts, n_columns] logit differences (at 'end') of the reference's edge-ablated runs."""
    L = hf.config.num_hidden_layers
    out = np.zeros((data.n, len(columns)))
    for i in range(data.n):
        t = torch.tensor(data.clean[i])
        for c, col in enumerate(columns):
            logits = edge_ablated(hf, t, ablated[i], {keys[j] for j in col}, L)
            out[i, c] = logit_diff(logits, data.positions["end"][i], data.answer[i], data.wrong[i])
    return out


def random_columns(keys, seed, hf):
    """Seeded edge sets: none, every edge, single edges, small and large random sets, every edge into one receiver,
    every edge out of one sender, and everything but one sender's edges."""
    rng = np.random.default_rng(seed)
    E = len(keys)
    cols = [(), tuple(range(E))]
    cols += [(int(j),) for j in rng.choice(E, 3, replace=False)]
    for frac in (0.02, 0.1, 0.3, 0.5, 0.7, 0.9):
        cols.append(tuple(sorted(int(j) for j in rng.choice(E, max(2, int(frac * E)), replace=False))))
    receivers = sorted({v for _, v in keys})
    senders = sorted({u for u, _ in keys})
    for v in [receivers[int(j)] for j in rng.choice(len(receivers), 2, replace=False)]:
        cols.append(tuple(j for j, (_, r) in enumerate(keys) if r == v))
    for u in [senders[int(j)] for j in rng.choice(len(senders), 2, replace=False)]:
        cols.append(tuple(j for j, (s, _) in enumerate(keys) if s == u))
        cols.append(tuple(j for j, (s, _) in enumerate(keys) if s != u))
    return cols


def _engine_case(name, kind, n=4, T=5, seed=0):
    """The engine's values and the reference's on seeded random edge sets of one model."""
    import causalinterp as ci
    edges_mod = _engine()
    hf32, hf64 = load(name, torch.float32), load(name, torch.float64)
    L = hf64.config.num_hidden_layers
    model = ci.load_model(hf32)
    data = prompts(hf32, n=n, T=T, seed=seed + 1)
    edges = edges_mod.edge_universe(model)
    keys = _edge_keys(hf64, edges)
    columns = random_columns(keys, seed, hf64)
    vals, run = edges_mod.edge_ablated_metrics(model, data, edges, columns, ci.ablate(kind))
    if kind == "resample":
        from causalinterp.engine.compile import _resample_sources   # the engine's seeded draw of source prompts
        sources = _resample_sources(data.n, len(run.senders), 0, data.lengths)
        ablated = _resample_values(hf64, data, run.senders, sources, L)
    else:
        ablated = ablated_values(hf64, data, kind, L)
    return vals, reference_metrics(hf64, data, keys, columns, ablated), columns, keys


@pytest.mark.parametrize("name", MODELS)
def test_engine_edge_universe_is_the_reference_edge_list(name):
    import causalinterp as ci
    edges_mod = _engine()
    hf = load(name, torch.float32)
    edges = edges_mod.edge_universe(ci.load_model(hf))
    keys = _edge_keys(hf, edges)
    assert len(set(keys)) == len(keys)
    assert set(keys) == set(edge_list(hf, hf.config.num_hidden_layers))
    no_embed = _edge_keys(hf, edges_mod.edge_universe(ci.load_model(hf), embed=False))
    assert set(no_embed) == {(u, v) for u, v in keys if u != ("embed",)}


def starving(keys, col) -> bool:
    """Whether the removed set `col` leaves some receiver with every incoming edge removed."""
    removed = set(col)
    return any(all(j in removed for j, (_, r) in enumerate(keys) if r == v) for v in {r for _, r in keys})


SLOW = pytest.mark.slow


@pytest.mark.parametrize("name,kind", [pytest.param(m, k, marks=[SLOW] * (m == "stories260K" and k != "mean"))
                                       for k in ("mean", "zero", "resample") for m in MODELS])
def test_engine_matches_reference_on_random_edge_sets(name, kind):
    vals, ref, columns, keys = _engine_case(name, kind)
    moved = np.abs(ref - ref[:, :1]).max(0)
    assert (moved[1:] > 100 * TOL).sum() >= len(columns) // 2, "most edge sets must move the metric"
    assert sum(starving(keys, col) for col in columns) >= 3
    np.testing.assert_allclose(vals, ref, rtol=1e-6, atol=TOL, err_msg=f"{name} {kind}")


@pytest.mark.parametrize("name", [pytest.param("stories260K", marks=SLOW), "llama"])
def test_engine_zero_ablation_of_cut_off_receivers(name):
    """Zero ablation with every edge into some receivers removed: in a bias-free model those receivers read exactly
    0, and so does the final norm when every edge into the logits is removed (logit difference exactly 0).  Forming
    a stream as clean + differences instead of a sum of contributions left float32 residue there that RMSNorm
    amplified (stories260K: up to 2.0 logits off; fixed in engine/edges.py c04d8b8)."""
    vals, ref, columns, keys = _engine_case(name, "zero")
    cut = [c for c, col in enumerate(columns) if starving(keys, col)]
    assert len(cut) >= 3
    np.testing.assert_allclose(vals[:, cut], ref[:, cut], rtol=1e-6, atol=TOL)
    every = columns.index(tuple(range(len(keys))))
    assert np.abs(ref[:, every]).max() < 1e-9          # nothing the prompt computes reaches the logits
    np.testing.assert_allclose(vals[:, every], 0.0, atol=1e-6)


def test_engine_values_do_not_depend_on_batching_or_column_order():
    import causalinterp as ci
    edges_mod = _engine()
    hf = load("llama", torch.float32)
    model = ci.load_model(hf)
    data = prompts(hf, n=5)
    edges = edges_mod.edge_universe(model)
    columns = random_columns(_edge_keys(hf, edges), 3, hf)
    whole, _ = edges_mod.edge_ablated_metrics(model, data, edges, columns, ci.ablate("mean"))
    one, _ = edges_mod.edge_ablated_metrics(model, data, edges, columns, ci.ablate("mean"), batch_size=1)
    np.testing.assert_allclose(one, whole, rtol=0, atol=1e-6)
    order = np.random.default_rng(0).permutation(len(columns))
    shuffled, _ = edges_mod.edge_ablated_metrics(model, data, edges, [tuple(reversed(columns[c])) for c in order],
                                                 ci.ablate("mean"), batch_size=3)
    np.testing.assert_allclose(shuffled, whole[:, order], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["gpt2", "gpt_neox", "llama"])
def test_engine_matches_reference_on_prompts_of_different_lengths(name):
    """Right-padded batches: mean ablation averages each position over the corrupt prompts that have it."""
    import causalinterp as ci
    from causalinterp.spec.data import ContrastSet
    edges_mod = _engine()
    hf32, hf64 = load(name, torch.float32), load(name, torch.float64)
    rng = np.random.default_rng(0)
    lengths = (5, 7, 6, 7, 5)
    clean = [rng.integers(1, 64, n).tolist() for n in lengths]
    corrupt = [rng.integers(1, 64, n).tolist() for n in lengths]
    answer = rng.integers(1, 64, len(lengths))
    wrong = answer % 63 + 1
    data = ContrastSet.from_tokens(clean, corrupt, answer, wrong)
    model = ci.load_model(hf32)
    edges = edges_mod.edge_universe(model)
    keys = _edge_keys(hf64, edges)
    columns = random_columns(keys, 5, hf64)
    vals, _ = edges_mod.edge_ablated_metrics(model, data, edges, columns, ci.ablate("mean"), batch_size=2)
    ref = reference_metrics(hf64, data, keys, columns, ablated_values(hf64, data, "mean", 2))
    np.testing.assert_allclose(vals, ref, rtol=0, atol=TOL)


def test_engine_mean_over_the_clean_prompts_and_any_head_of_a_kv_group():
    """ci.ablate('mean', reference='clean') averages the clean prompts; a k/v receiver named by any query head of
    a GQA group is that group's receiver."""
    import causalinterp as ci
    from causalinterp.spec.paths import Path
    from causalinterp.spec.sites import ALL, Site
    edges_mod = _engine()
    hf32, hf64 = load("llama", torch.float32), load("llama", torch.float64)
    model = ci.load_model(hf32)
    data = prompts(hf32, n=4)
    edges = [Path((Site("head_out", 0, 1, ALL),), (Site("k", 1, 3, ALL),)),     # group 1, named by its 2nd head
             Path((Site("mlp_out", 0, None, ALL),), (Site("v", 1, 0, ALL),)),
             Path((Site("resid_pre", 0, None, ALL),), ("logits",))]
    keys = [(("head", 0, 1), ("k", 1, 1)), (("mlp", 0), ("v", 1, 0)), (("embed",), ("logits",))]
    columns = [(0,), (1,), (2,), (0, 1), (0, 1, 2)]
    vals, _ = edges_mod.edge_ablated_metrics(model, data, edges, columns, ci.ablate("mean", reference="clean"))
    ref = reference_metrics(hf64, data, keys, columns, ablated_values(hf64, data, "mean", 2, reference="clean"))
    np.testing.assert_allclose(vals, ref, rtol=0, atol=TOL)
    assert (np.abs(ref - reference_metrics(hf64, data, keys, [()], ablated_values(hf64, data, "mean", 2))) > 1e-3
            ).any(0).all()


@pytest.mark.parametrize("name,kind", [("gpt2", "noise"), ("llama", "mean")])
def test_engine_matches_reference_with_an_embedding_noise_corrupt_run(name, kind):
    """Causal-tracing data: the ablated value is the sender's activation in the prompt's own noisy run (noise) or its
    mean over the noisy runs (mean).  The noise is the data's seeded draw; the reference adds it with a plain hook."""
    import causalinterp as ci
    from causalinterp.tracing import EmbeddingNoise
    from reference import with_embedding_noise
    edges_mod = _engine()
    hf32, hf64 = load(name, torch.float32), load(name, torch.float64)
    model = ci.load_model(hf32)
    data = prompts(hf32, n=4).with_noise(EmbeddingNoise(positions=(0, 1), scale=3.0, seed=7))
    noise = data.corruption.draw(model, data)
    edges = edges_mod.edge_universe(model)
    keys = _edge_keys(hf64, edges)
    columns = random_columns(keys, 7, hf64)
    intervention = ci.patch("noise") if kind == "noise" else ci.ablate("mean")
    vals, _ = edges_mod.edge_ablated_metrics(model, data, edges, columns, intervention)
    noisy = []
    for i in range(data.n):
        h = with_embedding_noise(hf64, noise[i].double())
        try:
            noisy.append(native(hf64, torch.tensor(data.clean[i]), 2))
        finally:
            h.remove()
    if kind == "noise":
        ablated = noisy
    else:
        ablated = [{u: torch.stack([a[u] for a in noisy]).mean(0) for u in noisy[0]}] * data.n
    ref = reference_metrics(hf64, data, keys, columns, ablated)
    np.testing.assert_allclose(vals, ref, rtol=0, atol=TOL)
    assert (np.abs(ref - ref[:, :1]).max(0)[1:] > 100 * TOL).sum() >= len(columns) // 2


@pytest.mark.parametrize("name", ["gpt_neox", "llama"])
def test_edge_circuit_faithfulness_matches_reference(name):
    """ci.faithfulness of an edge circuit: m(C) removes every universe edge outside the circuit, m(0) every edge,
    m(M) none; the point estimate is their ratio of means."""
    import causalinterp as ci
    from causalinterp.spec.sites import Site
    edges_mod = _engine()
    hf32, hf64 = load(name, torch.float32), load(name, torch.float64)
    model = ci.load_model(hf32)
    data = prompts(hf32, n=5)
    universe = edges_mod.edge_universe(model)
    keys = _edge_keys(hf64, universe)
    pick = sorted(np.random.default_rng(4).choice(len(universe), len(universe) // 4, replace=False).tolist())
    members = [universe[j] for j in pick]
    if name == "llama":   # a k/v edge named by the second query head of its group is the same edge
        members = [ci.sites.Path(e.senders, (Site(r.component, r.layer, r.head + 1, r.position),))
                   if r != "logits" and r.component in "kv" else e for e in members for r in e.receivers]
    eff = ci.faithfulness(model, data, ci.Circuit(edges=members), "mean")
    outside = tuple(j for j in range(len(universe)) if j not in pick)
    ref = reference_metrics(hf64, data, keys, [outside, tuple(range(len(universe))), ()],
                            ablated_values(hf64, data, "mean", 2))
    np.testing.assert_allclose(eff.values[:, 0], ref[:, 0], rtol=0, atol=TOL)
    np.testing.assert_allclose(eff.base, ref[:, 1], rtol=0, atol=TOL)
    np.testing.assert_allclose(eff.target, ref[:, 2], rtol=0, atol=TOL)
    f = (ref[:, 0].mean() - ref[:, 1].mean()) / (ref[:, 2].mean() - ref[:, 1].mean())
    assert abs(eff.meta["faithfulness"] - f) < 1e-4 and 0.05 < abs(1 - f)


def test_edge_faithfulness_curve_points_match_reference():
    """Each point of an edge faithfulness curve is the top-k edges of the ranking kept, every other edge removed."""
    import causalinterp as ci
    edges_mod = _engine()
    hf32, hf64 = load("gpt2", torch.float32), load("gpt2", torch.float64)
    model = ci.load_model(hf32)
    data = prompts(hf32, n=4)
    universe = edges_mod.edge_universe(model)
    keys = _edge_keys(hf64, universe)
    order = np.random.default_rng(9).permutation(len(universe)).tolist()
    sizes = (0.05, 0.3, 0.6, 1.0)
    curve = ci.faithfulness_curve(model, data, [universe[j] for j in order], "mean", sizes=sizes, n_resamples=100)
    ks = [int(np.floor(f * len(universe) + 0.5)) for f in sizes]        # 6, 33, 66, 110 of 110
    assert curve.k.tolist() == ks
    columns = [tuple(sorted(order[k:])) for k in ks] + [tuple(range(len(universe))), ()]
    ref = reference_metrics(hf64, data, keys, columns, ablated_values(hf64, data, "mean", 2))
    np.testing.assert_allclose(curve.values, ref[:, :len(ks)], rtol=0, atol=TOL)
    np.testing.assert_allclose(curve.empty, ref[:, -2], rtol=0, atol=TOL)
    np.testing.assert_allclose(curve.full, ref[:, -1], rtol=0, atol=TOL)
    f = (ref[:, :len(ks)].mean(0) - ref[:, -2].mean()) / (ref[:, -1].mean() - ref[:, -2].mean())
    np.testing.assert_allclose(curve.estimate, f, rtol=0, atol=1e-4)
