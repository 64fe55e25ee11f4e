"""Path scans on the Ray and submitit executors (the same units and `engine.unit.run_unit` as node scans):
the merged table, random paths included, equals the local run bit for bit, and a run resumed on another
executor reads back what the first one stored."""
import numpy as np
import pytest

import causalinterp as ci
from test_executors import one_thread, ray2, ray_cluster, worker_path  # noqa: F401 (fixtures)
from test_path_scale import IV, PATHS, tiny  # noqa: F401 (fixtures)

pytest.importorskip("ray")
pytest.importorskip("submitit")


@pytest.fixture(scope="module")
def local(tiny):  # noqa: F811
    model, data = tiny
    return {"paths": ci.scan(model, data, ci.sites.paths(PATHS), intervention=IV, batch_size=3, progress=False),
            "random": ci.scan(model, data, PATHS[5], intervention=IV, joint=True, n_random=5, seed=1, batch_size=4,
                              progress=False)}


def test_ray_equals_local_bit_for_bit_and_resumes_a_local_checkpoint(tiny, local, ray2, tmp_path):  # noqa: F811
    model, data = tiny
    got = ci.scan(model, data, ci.sites.paths(PATHS), intervention=IV, batch_size=3, progress=False, executor=ray2)
    np.testing.assert_array_equal(got.values, local["paths"].values)
    assert ray2.last_run["workers"] == 2
    rnd = ci.scan(model, data, PATHS[5], intervention=IV, joint=True, n_random=5, seed=1, batch_size=4,
                  progress=False, executor=ray2)
    np.testing.assert_array_equal(rnd.values, local["random"].values)
    np.testing.assert_array_equal(rnd.random_values, local["random"].random_values)
    # half the units stored by a local run (a killed run), the rest computed on Ray
    ck = tmp_path / "ck"
    ci.scan(model, data, ci.sites.paths(PATHS), intervention=IV, batch_size=3, progress=False, checkpoint=ck)
    for shard in sorted((ck / "units").glob("*.npz"))[::2]:
        shard.unlink()
    got = ci.scan(model, data, ci.sites.paths(PATHS), intervention=IV, batch_size=3, progress=False, executor=ray2,
                  checkpoint=ck)
    assert got.meta["units_reused"] > 0 and got.meta["units_computed"] > 0
    np.testing.assert_array_equal(got.values, local["paths"].values)


@pytest.mark.slow
def test_submitit_local_array(tiny, local, tmp_path):  # noqa: F811
    model, data = tiny
    ex = ci.executors.slurm(tmp_path / "jobs", cluster="local", n_jobs=2, timeout_min=10, torch_threads=1)
    got = ci.scan(model, data, ci.sites.paths(PATHS), intervention=IV, batch_size=3, progress=False, executor=ex,
                  checkpoint=tmp_path / "ck")
    np.testing.assert_array_equal(got.values, local["paths"].values)
    again = ci.scan(model, data, ci.sites.paths(PATHS), intervention=IV, batch_size=3, progress=False,
                    checkpoint=tmp_path / "ck")
    assert again.meta["units_computed"] == 0
