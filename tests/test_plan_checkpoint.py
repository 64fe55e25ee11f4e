"""Plans are pure, serialisable and content-addressed; checkpoints are checksummed per-unit shards that
survive kills, corruption, edits, another model and a full disk; no executor, unit order or resume
point changes a value."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import causalinterp as ci
from causalinterp.engine import CheckpointError, CheckpointWarning, Plan, store, unit
from causalinterp.engine.fingerprint import weights_hash
from causalinterp.engine.unit import run_unit
from conftest import build_hf, random_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return ci.load_model(build_hf("gpt2"))


@pytest.fixture(scope="module")
def data():
    return random_data(n=4, T=5)


SITES = ci.sites.resid_pre()


@pytest.fixture(scope="module")
def full(model, data):
    return ci.scan(model, data, SITES, batch_size=3, progress=False)


def shards(ck):
    return sorted((Path(ck) / "units").glob("*.npz"))


# --- the plan ------------------------------------------------------------------------------------
def test_plan_is_json_round_trippable_and_covers_every_row_once(model, data):
    plan = ci.plan(model, data, SITES, batch_size=3)
    again = Plan.from_json(plan.to_json())
    assert again == plan
    covered = np.concatenate([np.arange(u.start, u.stop) for u in plan.units])
    np.testing.assert_array_equal(np.sort(covered), np.arange(plan.n_rows))
    assert len({u.hash for u in plan.units}) == len(plan.units)
    assert ci.plan(model, data, SITES, batch_size=3) == plan  # deterministic


def test_unit_cost_follows_the_layer_skip(model, data):
    plan = ci.plan(model, data, ci.sites.resid_pre(positions=[-1]), batch_size=data.n)  # one layer per unit
    assert plan.skip_blocks
    by_low = {u.low_layer: u for u in plan.units}
    assert by_low[0].flops > by_low[1].flops  # the low-layer pass runs more blocks
    assert by_low[1].bytes > 0


def test_plan_hash_changes_with_anything_that_changes_a_value(model, data):
    base = ci.plan(model, data, SITES).key
    assert ci.plan(model, data, ci.sites.resid_pre(layers=[1])).key != base
    assert ci.plan(model, data, SITES, metric=ci.metrics.logprob()).key != base
    assert ci.plan(model, data, SITES, intervention=ci.patch("noise")).key != base
    assert ci.plan(model, random_data(n=4, T=5, seed=9), SITES).key != base
    other = ci.load_model(build_hf("gpt2", seed=1))
    assert ci.plan(other, data, SITES).key != base
    assert ci.plan(ci.load_model(build_hf("gpt2")), data, SITES).key == base  # same weights, new object: same


def test_weights_hash_is_cached_and_sees_in_place_edits(monkeypatch):
    from causalinterp.engine import fingerprint
    m = ci.load_model(build_hf("gpt2"))
    first = weights_hash(m)
    calls = {"n": 0}
    real = fingerprint.tensor_checksum
    monkeypatch.setattr(fingerprint, "tensor_checksum", lambda t: calls.update(n=calls["n"] + 1) or real(t))
    assert weights_hash(m) == first and calls["n"] == 0  # computed once per model
    with torch.no_grad():
        m.hf.transformer.h[1].attn.c_proj.weight[0, 0] += 1e-3  # a knock-out-style in-place edit
    assert weights_hash(m) != first and calls["n"] > 0


# --- invariances -----------------------------------------------------------------------------------
class Shuffled:
    """An executor that computes units in a random order (as a cluster might)."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def map(self, job, units):
        for i in self.rng.permutation(len(units)):
            yield units[i], run_unit(job.model, job.context, units[i])


@settings(max_examples=5, deadline=None)
@given(order_seed=st.integers(0, 10**6), stored=st.sets(st.integers(0, 5), max_size=6))
def test_unit_order_and_resume_point_never_change_a_value(model, data, full, tmp_path_factory, order_seed, stored):
    ck = tmp_path_factory.mktemp("ck")
    plan = ci.plan(model, data, SITES, batch_size=3)
    first = ci.scan(model, data, SITES, batch_size=3, progress=False, checkpoint=ck, executor=Shuffled(order_seed))
    np.testing.assert_array_equal(first.values, full.values)
    for i, u in enumerate(plan.units):  # keep only a random subset of units: a run killed at any point
        if i not in stored:
            store.ResultStore(ck).shard_path(u.hash).unlink()
    resumed = ci.scan(model, data, SITES, batch_size=3, progress=False, checkpoint=ck, executor=Shuffled(order_seed + 1))
    assert resumed.meta["units_reused"] == len(stored & set(range(len(plan.units))))
    np.testing.assert_array_equal(resumed.values, full.values)


# --- damaged shards --------------------------------------------------------------------------------
def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p):
    b = bytearray(p.read_bytes())
    b[len(b) // 3] ^= 0x10
    p.write_bytes(bytes(b))


def _edit(p):  # a well-formed shard whose values were changed (checksum kept)
    with np.load(p) as z:
        d = dict(z)
    d["values"] = d["values"] + 1.0
    np.savez(p, **d)


def _nan(p):  # a "finished" shard holding NaN with a matching checksum
    with np.load(p) as z:
        d = dict(z)
    d["values"] = np.full_like(d["values"], np.nan)
    d["sha256"] = np.array(store.values_checksum(str(d["unit"]), d["values"]))
    np.savez(p, **d)


def _swap(p):  # another unit's shard filed under this name
    other = [q for q in p.parent.glob("*.npz") if q != p][0]
    p.write_bytes(other.read_bytes())


@pytest.mark.parametrize("damage", [_truncate, _flip, _edit, _nan, _swap])
def test_damaged_shard_is_named_and_recomputed(model, data, full, tmp_path, damage):
    ck = tmp_path / "ck"
    ci.scan(model, data, SITES, batch_size=3, progress=False, checkpoint=ck)
    victim = shards(ck)[1]
    damage(victim)
    with pytest.warns(CheckpointWarning, match=victim.name):
        again = ci.scan(model, data, SITES, batch_size=3, progress=False, checkpoint=ck)
    assert again.meta["units_computed"] == 1
    np.testing.assert_array_equal(again.values, full.values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: a third run reads every shard cleanly
        assert ci.scan(model, data, SITES, batch_size=3, progress=False, checkpoint=ck).meta["units_computed"] == 0


def test_a_different_model_object_never_reuses_another_models_shards(model, data, tmp_path):
    ck = tmp_path / "ck"
    ci.scan(model, data, SITES, batch_size=3, progress=False, checkpoint=ck)
    other = ci.load_model(build_hf("gpt2", seed=3))
    got = ci.scan(other, data, SITES, batch_size=3, progress=False, checkpoint=ck)
    assert got.meta["units_reused"] == 0
    np.testing.assert_array_equal(got.values, ci.scan(other, data, SITES, batch_size=3, progress=False).values)


def test_disk_full_keeps_the_results_and_leaves_no_partial_shard(model, data, full, tmp_path, monkeypatch):
    ck = tmp_path / "ck"
    real = np.savez
    writes = {"n": 0}

    def savez_until_full(f, **kw):
        writes["n"] += 1
        if writes["n"] > 2:
            f.write(b"partial")
            raise OSError(28, "No space left on device")
        return real(f, **kw)

    monkeypatch.setattr(store.np, "savez", savez_until_full)
    with pytest.warns(CheckpointWarning, match="No space left on device"):
        got = ci.scan(model, data, SITES, batch_size=3, progress=False, checkpoint=ck)
    np.testing.assert_array_equal(got.values, full.values)
    assert len(shards(ck)) == 2 and not list((ck / "units").glob("*.tmp"))
    monkeypatch.setattr(store.np, "savez", real)
    resumed = ci.scan(model, data, SITES, batch_size=3, progress=False, checkpoint=ck)
    assert resumed.meta["units_reused"] == 2
    np.testing.assert_array_equal(resumed.values, full.values)


def test_checkpoint_path_errors(model, data, tmp_path):
    old = tmp_path / "scan.npz"
    np.savez(old, values=np.zeros(3))
    with pytest.raises(CheckpointError, match="older version"):
        ci.scan(model, data, SITES, progress=False, checkpoint=old)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        ci.scan(model, data, SITES, progress=False, checkpoint=f)


def test_nan_units_are_not_stored(model, data, tmp_path, monkeypatch):
    ck = tmp_path / "ck"
    monkeypatch.setattr(unit, "_run_patched", lambda model, tokens, *a: torch.full((len(tokens), 1, 64), float("nan")))
    with pytest.raises(ci.metrics.MetricError, match="patched runs"):
        ci.scan(model, data, SITES, batch_size=3, progress=False, checkpoint=ck)
    assert shards(ck) == []


# --- SIGKILL of the driver -------------------------------------------------------------------------
DRIVER = textwrap.dedent("""
    import os, sys, time
    sys.path[:0] = [{root!r}, {tests!r}]
    import numpy as np
    import causalinterp as ci
    from causalinterp.engine import store, unit
    from conftest import build_hf, random_data
    real_run, real_savez = unit._run_patched, np.savez
    def slow_run(*a, **k):
        time.sleep(0.15)
        return real_run(*a, **k)
    def slow_savez(f, **kw):  # a kill can land in the middle of writing a shard
        real_savez(f, **kw)
        time.sleep(0.15)
    unit._run_patched, store.np.savez = slow_run, slow_savez
    model = ci.load_model(build_hf("gpt2"))
    print("ready", flush=True)
    ci.scan(model, random_data(n=4, T=5), ci.sites.resid_pre(), batch_size=3, progress=False, checkpoint={ck!r})
    print("finished", flush=True)
""")


def kill_driver_mid_scan(ck: Path, min_shards: int = 2, timeout: float = 120) -> int:
    """Run a scan in a subprocess and SIGKILL it once `min_shards` shards exist; returns how many were written."""
    script = DRIVER.format(root=str(ROOT), tests=str(ROOT / "tests"), ck=str(ck))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        while len(shards(ck)) < min_shards:
            assert proc.poll() is None, "the driver finished before it could be killed"
            assert time.monotonic() - t0 < timeout
            time.sleep(0.02)
        time.sleep(float(np.random.default_rng().uniform(0, 0.3)))  # somewhere in a compute or a save
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return len(shards(ck))


def test_sigkill_of_the_driver_resumes_to_the_same_table(model, data, full, tmp_path):
    ck = tmp_path / "ck"
    n_written = kill_driver_mid_scan(ck)
    plan = ci.plan(model, data, SITES, batch_size=3)
    assert n_written < len(plan.units)
    resumed = ci.scan(model, data, SITES, batch_size=3, progress=False, checkpoint=ck)
    assert resumed.meta["units_reused"] == n_written
    np.testing.assert_array_equal(resumed.values, full.values)


# --- CLI -------------------------------------------------------------------------------------------
def test_cli_scale_options_are_checked_before_work_and_checkpoint_resumes(tmp_path, capsys):
    from causalinterp.cli import main
    base = ["scan", "--task", "induction", "--model", "testbed:induction", "--sites", "resid_pre",
            "--layers", "0,1", "--positions=-1", "--n", "4", "--n-resamples", "99", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "o0"), "--executor", "slurm"]) == 2
    assert "--folder" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "o0"), "--workers", "0", "--executor", "ray"]) == 2
    ck = tmp_path / "ck"
    assert main(base + ["--out", str(tmp_path / "o1"), "--checkpoint", str(ck)]) == 0
    first = sorted(p.name for p in (ck / "units").glob("*.npz"))
    assert first
    assert main(base + ["--out", str(tmp_path / "o2"), "--checkpoint", str(ck)]) == 0
    assert sorted(p.name for p in (ck / "units").glob("*.npz")) == first  # nothing new: every unit reused
    a = (tmp_path / "o1" / "results.json").read_text()
    b = (tmp_path / "o2" / "results.json").read_text()
    import json
    va = [r["effects"]["values"] for r in json.loads(a)["results"]]
    vb = [r["effects"]["values"] for r in json.loads(b)["results"]]
    assert va == vb


@settings(max_examples=4, deadline=None)
@given(batch_size=st.integers(1, 12))
def test_batch_composition_changes_values_by_float_rounding_only(model, data, full, batch_size):
    """Other rows per pass put different prompts side by side in a matmul: equal to 1e-6, not bit for bit."""
    got = ci.scan(model, data, SITES, batch_size=batch_size, progress=False)
    np.testing.assert_allclose(got.values, full.values, rtol=0, atol=1e-6)
