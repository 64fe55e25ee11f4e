"""Ray and submitit executors on real engines (a local Ray with 2 workers x 1 torch thread; submitit's
local executor): the merged table equals the local run bit for bit, through a SIGKILLed Ray worker,
a killed driver resumed on another executor, and an array task that fails once."""
import os
import signal
from pathlib import Path

import numpy as np
import pytest

import causalinterp as ci
from causalinterp.executors.slurm import _Task
from test_plan_checkpoint import SITES, data, kill_driver_mid_scan, model  # noqa: F401 (fixtures)

ray = pytest.importorskip("ray")
pytest.importorskip("submitit")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def worker_path():
    """Worker processes import this checkout's causalinterp (and, for submitit, this test module)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")] + ([old] if old else []))
    yield
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def ray_cluster(worker_path):
    """One local Ray for the module: 2 CPUs, no dashboard, a small object store."""
    import logging
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False,
             logging_level=logging.ERROR)
    yield
    ray.shutdown()


HEADS = ci.sites.heads([(0, 1), (1, 2)], positions="end")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The driver (clean/corrupt runs, local reference) uses the workers' 1 torch thread: CPU matmuls
    split their sums by thread count, so at 2 threads the last float32 bits of a few values differ
    (we saw up to 2e-7)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def local(model, data):
    return {"sweep": ci.scan(model, data, SITES, batch_size=3, progress=False),
            "random": ci.scan(model, data, HEADS, joint=True, n_random=6, seed=2, batch_size=4, progress=False,
                              intervention=ci.ablate("resample", seed=1))}


@pytest.fixture(scope="module")
def ray2(ray_cluster):
    ex = ci.executors.ray(num_workers=2)
    yield ex
    ex.shutdown()


def test_ray_with_1_and_2_workers_equals_local_bit_for_bit(model, data, local, ray2):
    for workers in (2, 1):
        ray2.num_workers = workers  # the executor reuses its loaded actors
        sweep = ci.scan(model, data, SITES, batch_size=3, progress=False, executor=ray2)
        np.testing.assert_array_equal(sweep.values, local["sweep"].values)
        assert ray2.last_run["workers"] == workers
        rnd = ci.scan(model, data, HEADS, joint=True, n_random=6, seed=2, batch_size=4, progress=False,
                      intervention=ci.ablate("resample", seed=1), executor=ray2)
        np.testing.assert_array_equal(rnd.values, local["random"].values)
        np.testing.assert_array_equal(rnd.random_values, local["random"].random_values)
    assert ray2.last_run["balance"] >= 1.0
    ray2.num_workers = 2


def test_a_sigkilled_ray_worker_is_replaced_and_its_unit_retried(model, data, local, ray2):
    killed = []

    def kill_once(pid, unit):
        if len(killed) == 0 and unit.index == 3:  # SIGKILL the worker the moment it was given a unit
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    ray2.on_dispatch = kill_once
    try:
        got = ci.scan(model, data, SITES, batch_size=3, progress=False, executor=ray2)
    finally:
        ray2.on_dispatch = None
    assert killed and ray2.last_run["retries"] >= 1
    assert killed[0] not in ray2.last_run["busy_s"] or ray2.last_run["busy_s"][killed[0]] >= 0
    np.testing.assert_array_equal(got.values, local["sweep"].values)


def test_a_killed_driver_resumes_on_ray(model, data, local, ray2, tmp_path):
    ck = tmp_path / "ck"
    n_written = kill_driver_mid_scan(ck)
    got = ci.scan(model, data, SITES, batch_size=3, progress=False, executor=ray2, checkpoint=ck)
    assert got.meta["units_reused"] == n_written and got.meta["units_computed"] > 0
    np.testing.assert_array_equal(got.values, local["sweep"].values)


class FailOnce(_Task):
    """The first array task to start fails (an injected fault); every later one works."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __call__(self, *args):
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return super().__call__(*args)
        os.close(fd)
        raise RuntimeError("injected failure")


def test_submitit_local_array_with_a_task_failing_once(model, data, local, tmp_path):
    ex = ci.executors.slurm(tmp_path / "jobs", cluster="local", n_jobs=2, timeout_min=10, torch_threads=1)
    ex.task = FailOnce(tmp_path / "failed-once")
    got = ci.scan(model, data, SITES, batch_size=3, progress=False, executor=ex, checkpoint=tmp_path / "ck")
    assert ex.last_run == {"arrays": 2, "failed_tasks": 1}
    np.testing.assert_array_equal(got.values, local["sweep"].values)
    again = ci.scan(model, data, SITES, batch_size=3, progress=False, executor=ex, checkpoint=tmp_path / "ck")
    assert again.meta["units_computed"] == 0  # everything read back from the shared results directory
