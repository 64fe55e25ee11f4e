"""Path scans at scale: random paths for `claims.beats_random` (same receivers, same number of senders, drawn
through `compile.random_site_sets`), checkpoints (a resumed or reordered run never changes a value) and the
per-pass memory of the senders' changes."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import causalinterp as ci
from causalinterp.engine import store
from causalinterp.engine.paths import make_path_plan, random_paths
from causalinterp.spec.paths import Path
from causalinterp.spec.sites import ALL, Site
from conftest import build_hf, random_data
from test_plan_checkpoint import Shuffled

TRUE = Path((Site("head_out", 0, 1),), (Site("k", 1, 2),))     # previous-token head -> induction head's keys
ABSENT = Path((Site("head_out", 0, 2),), (Site("k", 1, 2),))   # a layer-0 head with no such path


@pytest.fixture(scope="module")
def induction():
    return ci.load_model("testbed:induction"), ci.testbeds.induction_data(32, seed=2)


# --- random paths -------------------------------------------------------------------------------------
def test_random_paths_have_the_receivers_and_size_of_the_path(induction):
    model, data = induction
    path = Path((Site("head_out", 0, 1), Site("mlp_out", 0)), (Site("k", 1, 2), Site("q", 1, 0)))
    pool = ci.sites.head_out(layers=[0], positions=[ALL, "end"])
    got = random_paths(model, data, path, 12, seed=4, random_pool=pool)
    assert len(got) == 12 and len(set(got)) == 12
    for p in got:
        assert p.receivers == path.receivers and len(p.senders) == 2 and len(set(p.senders)) == 2
        assert not set(p.senders) & set(path.senders)
    assert random_paths(model, data, path, 12, seed=4, random_pool=pool) == got          # seeded
    assert random_paths(model, data, path, 12, seed=5, random_pool=pool) != got
    # the default pool: the senders' components at their positions, at every layer upstream of every receiver
    default = random_paths(model, data, TRUE, 50, seed=0)
    assert sorted(p.senders for p in default) == [(Site("head_out", 0, h),) for h in (0, 2, 3)]


def test_true_path_beats_random_paths_and_an_absent_one_does_not(induction):
    model, data = induction
    pool = ci.sites.head_out(layers=[0])            # every layer-0 head at every single position: 128 senders
    kw = dict(intervention=ci.ablate("mean"), joint=True, n_random=39, seed=0, random_pool=pool, progress=False)
    eff = ci.scan(model, data, TRUE, **kw)
    assert eff.random_values.shape == (32, 39) and eff.meta["random_sets"]["exhaustive"] is False
    ev = ci.evaluate(eff, ci.claims.beats_random(39))
    assert ev.verdict == "supported" and ev.table["p_adj"][0] == pytest.approx(1 / 40)
    ev = ci.evaluate(ci.scan(model, data, ABSENT, **kw), ci.claims.beats_random(39))
    assert ev.verdict != "supported" and ev.table["p_adj"][0] > 0.5


def test_a_small_pool_is_used_whole_as_in_node_scans(induction):
    model, data = induction
    eff = ci.scan(model, data, TRUE, intervention=ci.ablate("mean"), joint=True, n_random=20, progress=False)
    node = ci.scan(model, data, ci.sites.heads([(1, 2)]), intervention=ci.ablate("mean"), joint=True, n_random=20,
                   progress=False, random_pool=ci.sites.heads([(1, 0), (1, 1), (1, 3)]))
    assert eff.meta["random_sets"] == node.meta["random_sets"] == {"distinct": 3, "drawn": 3, "exhaustive": True}
    # the three random paths are exactly the other layer-0 heads' paths to the same keys
    others = [Path((Site("head_out", 0, h),), (Site("k", 1, 2),)) for h in (0, 2, 3)]
    direct = ci.scan(model, data, ci.sites.paths(others), intervention=ci.ablate("mean"), progress=False)
    np.testing.assert_allclose(np.sort(eff.random_values, axis=1), np.sort(direct.values, axis=1), atol=1e-5)
    ev = ci.evaluate(eff, ci.claims.beats_random(20))
    assert ev.verdict == "inconclusive" and "random_pool" in ev.table["reason"][0]   # 1/4 is the smallest p


def test_random_paths_are_refused_where_undefined(induction):
    model, data = induction
    with pytest.raises(ci.ScanError, match="joint=True"):
        ci.scan(model, data, ci.sites.paths([TRUE, ABSENT]), n_random=5, progress=False)
    with pytest.raises(ci.ScanError, match="needs n_random"):
        ci.scan(model, data, TRUE, random_pool=ci.sites.head_out(layers=[0]), progress=False)
    with pytest.raises(ci.ScanError, match="not upstream"):
        ci.scan(model, data, TRUE, joint=True, n_random=5, random_pool=ci.sites.head_out(layers=[1], positions=ALL),
                progress=False)
    with pytest.raises(ci.ScanError, match="cannot send"):
        ci.scan(model, data, TRUE, joint=True, n_random=5, random_pool=ci.sites.q(layers=[0], positions=ALL),
                progress=False)
    with pytest.raises(ci.ScanError, match="fewer than"):
        ci.scan(model, data, Path(tuple(Site("head_out", 0, h) for h in range(4)) + (Site("mlp_out", 0),),
                                  (Site("k", 1, 2),)), joint=True, n_random=5, progress=False,
                random_pool=ci.sites.head_out(layers=[0], positions=ALL))


def test_hypothesis_file_with_beats_random_on_paths(induction, tmp_path):
    model, _ = induction
    h = ci.Hypothesis.from_dict({
        "name": "prev-token head -> induction keys beats random paths", "model": "testbed:induction",
        "data": {"task": "induction", "n": 32, "seed": 2},
        "sites": {"path": {"senders": {"heads": [[0, 1]]}, "receivers": {"heads": [[1, 2]]}, "via": "k"}},
        "intervention": "mean", "claim": {"kind": "beats_random", "n_random": 3}})
    r = ci.run(h, model, progress=False)
    assert r.effects.joint and r.effects.random_values.shape == (32, 3)
    assert r.verdict == "inconclusive" and r.evaluation.table["p_adj"][0] == pytest.approx(1 / 4)  # beats all 3
    assert r.evaluation.table["estimate"][0] > 0.5


# --- checkpoints and order -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return ci.load_model(build_hf("gpt2")), random_data(n=4, T=5)


H = lambda l, h, p=ALL: Site("head_out", l, h, p)  # noqa: E731
PATHS = [Path((H(0, 1),), (Site("k", 1, 2),)), Path((H(0, 3, -1),), (Site("q", 1, 0),)),
         Path((Site("mlp_out", 0, None, -1),), (Site("mlp_out", 1),)), Path((H(1, 0),), ("logits",)),
         Path((Site("resid_pre", 0, None, 3),), (Site("k", 0, 1),)),
         Path((H(0, 1), Site("mlp_out", 0)), (Site("v", 1, 3), Site("mlp_out", 1)))]
IV = ci.ablate("resample", seed=2)


@pytest.fixture(scope="module")
def full(tiny):
    model, data = tiny
    return ci.scan(model, data, ci.sites.paths(PATHS), intervention=IV, batch_size=3, progress=False)


@settings(max_examples=4, deadline=None)
@given(order_seed=st.integers(0, 10**6), stored=st.sets(st.integers(0, 7), max_size=8))
def test_unit_order_and_resume_point_never_change_a_value(tiny, full, tmp_path_factory, order_seed, stored):
    model, data = tiny
    ck = tmp_path_factory.mktemp("ck")
    kw = dict(intervention=IV, batch_size=3, progress=False, checkpoint=ck)
    first = ci.scan(model, data, ci.sites.paths(PATHS), executor=Shuffled(order_seed), **kw)
    np.testing.assert_array_equal(first.values, full.values)
    plan = make_path_plan(model, data, ci.sites.paths(PATHS), intervention=IV, batch_size=3)
    assert len(list((ck / "units").glob("*.npz"))) == len(plan.units)
    for i, u in enumerate(plan.units):     # keep a random subset of the shards: a run killed at any point
        if i not in stored:
            store.ResultStore(ck).shard_path(u.hash).unlink()
    resumed = ci.scan(model, data, ci.sites.paths(PATHS), executor=Shuffled(order_seed + 1), **kw)
    assert resumed.meta["units_reused"] == len(stored & set(range(len(plan.units))))
    np.testing.assert_array_equal(resumed.values, full.values)


@settings(max_examples=4, deadline=None)
@given(perm=st.permutations(range(len(PATHS))))
def test_the_order_of_paths_never_changes_a_value(tiny, perm):
    """One row per pass: each (path, prompt) value is computed alone, so reordering the paths is exact."""
    model, data = tiny
    iv = ci.ablate("mean")
    base = ci.scan(model, data, ci.sites.paths(PATHS), intervention=iv, batch_size=1, progress=False)
    got = ci.scan(model, data, ci.sites.paths([PATHS[i] for i in perm]), intervention=iv, batch_size=1,
                  progress=False)
    np.testing.assert_array_equal(got.values, base.values[:, list(perm)])


@pytest.mark.parametrize("batch_size", [1, 2, 5, 24])
def test_pass_size_changes_values_by_float_rounding_only(tiny, full, batch_size):
    model, data = tiny
    got = ci.scan(model, data, ci.sites.paths(PATHS), intervention=IV, batch_size=batch_size, progress=False)
    np.testing.assert_allclose(got.values, full.values, rtol=0, atol=1e-5)


def test_random_paths_through_a_checkpoint(tiny, tmp_path):
    model, data = tiny
    kw = dict(intervention=IV, joint=True, n_random=6, seed=3, batch_size=5, progress=False)
    one = ci.scan(model, data, PATHS[0], **kw)
    two = ci.scan(model, data, PATHS[0], checkpoint=tmp_path, **kw)
    again = ci.scan(model, data, PATHS[0], checkpoint=tmp_path, **kw)
    assert again.meta["units_computed"] == 0
    for e in (two, again):
        np.testing.assert_array_equal(e.values, one.values)
        np.testing.assert_array_equal(e.random_values, one.random_values)


def test_memory_of_the_senders_changes_follows_the_pass(tiny, monkeypatch):
    """The senders' changes are computed per pass for that pass's prompts, never for every prompt at once."""
    from causalinterp.engine import paths as engine_paths
    model, data = tiny
    seen = []
    real = engine_paths._sender_delta

    def spy(model, s, base_acts, new, pos):
        seen.append(base_acts.shape[0])
        return real(model, s, base_acts, new, pos)

    monkeypatch.setattr(engine_paths, "_sender_delta", spy)
    ci.scan(model, data, ci.sites.paths(PATHS), intervention=IV, batch_size=2, progress=False)
    assert seen and max(seen) <= 2


def test_testbed_paths_equal_the_hook_reference_where_blocks_are_skipped(induction):
    """On the testbed both passes skip the blocks below the lowest receiver (cached outputs); the compute pass
    overwrites the next block's input in place, which must never leak into the final pass's skipped outputs."""
    from test_paths import reference
    model, data = induction
    small = ci.testbeds.induction_data(3, seed=5)
    paths = [TRUE, ABSENT, Path((Site("head_out", 0, 3),), (Site("mlp_out", 1),)),
             Path((Site("mlp_out", 0, None, "end"),), (Site("q", 1, 1),))]
    for bs in (None, 1):
        eff = ci.scan(model, small, ci.sites.paths(paths), batch_size=bs, progress=False)
        np.testing.assert_allclose(eff.values, reference(model.hf, small, paths), atol=1e-4, rtol=1e-5)
