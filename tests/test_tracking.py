"""Experiment tracking round-trips through a real local MLflow store (and a W&B offline run)."""
import json
import math

import pytest

import causalinterp as ci
from causalinterp import tracking

mlflow = pytest.importorskip("mlflow", reason="the 'track' extra (mlflow) is not installed")


def _hyps():
    data = ci.DataRef("induction", n=16, seed=3, options={"seq_len": 8})
    return [ci.Hypothesis(name="induction head carries the copy", data=data,
                          sites=ci.sites.heads([(1, 2)], positions="end"), intervention=ci.patch("noise"),
                          claim=ci.claims.has_effect("decrease"), n_resamples=999, seed=7),
            ci.Hypothesis(name="layer-1 heads at end", data=data,
                          sites=ci.sites.heads([(1, h) for h in range(4)], positions="end"),
                          intervention=ci.patch("noise"), claim=ci.claims.has_effect(), n_resamples=999)]


@pytest.fixture(scope="module")
def induction():
    return ci.load_model("testbed:induction")


def test_run_all_logs_every_hypothesis_to_a_local_mlflow_store(tmp_path, induction):
    uri = (tmp_path / "mlruns").as_uri()
    tracker = tracking.MLflow(uri=uri, experiment="tests")
    results = ci.run_all(_hyps(), induction, progress=False, track=tracker)
    assert len(tracker.run_ids) == 2

    # read back through MLflow's own client, independently of the tracker object
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tests")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {r.name for r in results}
    for r in results:
        run = runs[r.name]
        assert run.info.status == "FINISHED"
        assert run.data.tags["verdict"] == r.verdict
        assert run.data.tags["version.torch"] == r.meta["versions"]["torch"]
        p = run.data.params
        assert p["seed"] == str(r.hypothesis["seed"]) and p["data.seed"] == "3" and p["data.task"] == "induction"
        assert p["claim.kind"] == "has_effect" and p["intervention.kind"] == "noise"
        assert p["model"] == "testbed:induction"
        m = run.data.metrics
        assert m["n_prompts"] == 16
        row0 = r.table.iloc[0]
        if len(r.table) == 1:
            assert math.isclose(m["estimate"], r.evaluation.estimate, rel_tol=1e-12)
            assert math.isclose(m["ci_low"], r.evaluation.ci_low, rel_tol=1e-12)
            assert math.isclose(m["p_adj"], row0["p_adj"], rel_tol=1e-12)
        else:
            key = "site/" + tracking._key(str(row0["site"]))
            assert math.isclose(m[f"{key}/estimate"], row0["estimate"], rel_tol=1e-12)
            assert math.isclose(m[f"{key}/p_adj"], row0["p_adj"], rel_tol=1e-12)
            assert m["n_supported"] == (r.table["verdict"] == "supported").sum()
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"hypothesis.json", "result.json", "table.csv", "report.md", "report.html"} <= arts
        # the stored result is the whole result: it rebuilds with the same verdict and per-prompt values
        local = client.download_artifacts(run.info.run_id, "result.json", str(tmp_path / run.info.run_id))
        back = ci.Result.from_json(local)
        assert back.verdict == r.verdict
        assert (back.effects.values == r.effects.values).all()
        spec = json.loads(open(client.download_artifacts(run.info.run_id, "hypothesis.json",
                                                          str(tmp_path / "spec"))).read())
        assert ci.Hypothesis.from_dict(spec).to_dict() == r.hypothesis


def test_default_store_follows_mlflow_tracking_uri(tmp_path, monkeypatch):
    uri = (tmp_path / "elsewhere").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (t,) = tracking.trackers("mlflow")
    assert t.uri == uri
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    (t,) = tracking.trackers(True)
    assert t.uri == (tmp_path / "mlruns").as_uri()


def test_tracking_is_off_unless_asked_and_bad_values_say_what_to_use():
    assert tracking.trackers(None) == [] and tracking.trackers(False) == []
    with pytest.raises(tracking.TrackingError, match="'mlflow', 'wandb'"):
        tracking.trackers("tensorboard")
    with pytest.raises(tracking.TrackingError, match="tracker object"):
        tracking.trackers(3)


def test_wandb_offline_run_holds_the_verdict_and_files(tmp_path, monkeypatch, induction):
    wandb = pytest.importorskip("wandb", reason="the 'track' extra (wandb) is not installed")
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    t = tracking.WandB(project="tests", dir=tmp_path)
    assert t.mode == "offline"
    (r,) = ci.run_all(_hyps()[:1], induction, progress=False, track=t)
    (run_dir,) = t.run_dirs
    blobs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(blobs) == 1 and str(blobs[0].parent) == run_dir
    raw = blobs[0].read_bytes()
    # W&B stores the config and summary as JSON text inside its protobuf records
    for text in (r.name, r.verdict, json.dumps(r.evaluation.estimate), '"induction"'):
        assert text.encode() in raw, text
    assert wandb.__version__


YAML = """
model: testbed:induction
hypotheses:
  - name: induction head carries the copy
    data: {task: induction, n: 12, seed: 5, seq_len: 8}
    sites: {heads: [[1, 2]], positions: end}
    intervention: noise
    claim: {kind: has_effect, direction: decrease}
    n_resamples: 499
"""


def _runs(uri):
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("causalinterp")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_cli_track_flag_logs_to_mlflow(tmp_path, monkeypatch, capsys, induction):
    from causalinterp.cli import main
    uri = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    f = tmp_path / "hyp.yaml"
    f.write_text(YAML)
    assert main(["run", str(f), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert _runs(uri) == []                                   # nothing unless asked for
    assert main(["run", str(f), "--out", str(tmp_path / "o"), "--no-progress", "--track", "mlflow"]) == 0
    (run,) = _runs(uri)
    stored = json.loads((tmp_path / "o" / "results.json").read_text())["results"][0]
    assert run.data.tags["verdict"] == stored["evaluation"]["verdict"]
    assert math.isclose(run.data.metrics["estimate"], stored["evaluation"]["estimate"], rel_tol=1e-12)
    assert main(["run", str(f), "--out", str(tmp_path / "o"), "--track", "neptune"]) == 2
    assert "unknown tracker 'neptune'" in capsys.readouterr().err


pytest_plugins = ["pytester"]


def test_pytest_plugin_causal_track_option(pytester, tmp_path, monkeypatch, induction):
    uri = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    pytester.makefile(".yaml", hyp_induction=YAML)
    res = pytester.runpytest("-p", "no:cacheprovider", "--causal-track", "mlflow")
    res.assert_outcomes(passed=1)
    (run,) = _runs(uri)
    assert run.info.run_name == "induction head carries the copy" and run.data.tags["verdict"] == "supported"
