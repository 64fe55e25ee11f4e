"""Feature sites in hypothesis files (YAML/JSON, strict), results and reports, the CLI; the probe report."""
import json

import numpy as np
import pytest
import torch

import causalinterp as ci
from causalinterp.cli import main

HEADER = """hypotheses:
  - name: sae features carry the copied token
    model: testbed:induction
    data: {task: induction, n: 12, seed: 3}
    sites:
      sae: {path: "testbed:induction", features: [116, 121, 108], positions: end}
    claim: {kind: has_effect, direction: increase}
  - name: a direction
    model: testbed:induction
    data: {task: induction, n: 12, seed: 3}
    sites:
      subspace: {component: resid_post, layer: 1, positions: end, basis: BASIS}
    claim: {kind: has_effect}
"""


@pytest.fixture
def yaml_file(tmp_path):
    basis = ci.features.orthonormalize(torch.randn(2, 64, generator=torch.Generator().manual_seed(0)))
    np.save(tmp_path / "basis.npy", basis.numpy())
    p = tmp_path / "features.yaml"
    p.write_text(HEADER.replace("BASIS", str(tmp_path / "basis.npy")))
    return p


def test_yaml_feature_sites_load_round_trip_and_run(yaml_file):
    hs = ci.load_hypotheses(yaml_file)
    sae_site, sub_site = hs[0].sites.explicit[0], hs[1].sites.explicit[0]
    assert sae_site.feature.features == (116, 121, 108) and sae_site.feature.path == "testbed:induction"
    assert sub_site.feature.dim == 2
    for h in hs:  # the hypothesis (and its sites) survives JSON
        assert ci.Hypothesis.from_dict(json.loads(json.dumps(h.to_dict()))).sites == h.sites
    results = ci.run_all(hs, progress=False)
    back = ci.Result.from_json(results[0].to_json())
    assert back.verdict == results[0].verdict
    md = results[0].to_markdown() + results[1].to_markdown()
    assert "sae features [116, 121, 108]" in md and "subspace k=2" in md  # feature ids and subspace dims reported


@pytest.mark.parametrize("sites, expect", [
    ({"subspace": {"component": "resid_post", "layer": 1, "basis": [[1.0, 1.0]]}}, "not orthonormal"),
    ({"subspace": {"component": "resid_post", "layer": 1, "basis": [[1.0]], "rank": 1}}, "unknown field 'rank'"),
    ({"subspace": {"component": "resid_post", "layer": 1, "basis": "nope.npy"}}, "does not exist"),
    ({"sae": {"path": "/nope", "features": [1]}}, "not an SAE directory"),
    ({"sae": {"path": "testbed:induction", "features": [1000]}}, "does not exist"),
    ({"sae": {"path": "testbed:induction", "features": ["a"]}}, "integer"),
])
def test_bad_feature_sites_in_files_are_clear_errors(sites, expect):
    d = {"name": "x", "model": "testbed:induction", "data": {"task": "induction", "n": 4}, "sites": sites,
         "claim": "has_effect"}
    with pytest.raises(ci.HypothesisError, match=expect):
        ci.Hypothesis.from_dict(d)


def test_cli_runs_feature_hypotheses(yaml_file, tmp_path, capsys):
    out = tmp_path / "out"
    main(["run", str(yaml_file), "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert "sae features carry the copied token" in printed and (out / "report.md").is_file()
    assert "sae features [116, 121, 108]" in (out / "report.md").read_text()


def test_json_schema_describes_feature_sites():
    schema = json.dumps(ci.spec.files.hypothesis_json_schema())
    assert "subspace" in schema and "sae" in schema


def test_probe_report_names_accuracy_control_and_dim():
    model = ci.load_model("testbed:induction")
    data = ci.features.copy_choice_data(60, seed=2)
    res = ci.probe(model, data, ci.Site("resid_post", 1, position="end"),
                   [a == data.answer[0] for a in data.answer], n_resamples=199, folds=3)
    md = res.to_markdown()
    assert "control task" in md and "selectivity" in md and "| 1 | supported |" in md
    assert json.loads(json.dumps(res.to_dict()))["subspace_dim"] == 1


@pytest.mark.slow
def test_features_benchmark_small():
    from benchmarks import features as b
    r = b.main(small=True)
    assert all(row["verdict"] == "supported" for row in r["probes"] if row["site"].startswith("after"))
    assert all(row["recovers_0.5"] == "supported" for row in r["das"] if row["site"] == "after copy")
    assert "DAS" in b.to_markdown(r)


def test_cli_das_and_probe(tmp_path, capsys):
    out = tmp_path / "das.json"
    assert main(["das", "--model", "testbed:induction", "--task", "copy_choice", "--site", "resid_post:1:end",
                 "--n", "40", "--steps", "40", "--n-random", "20", "--n-resamples", "199", "--json", str(out),
                 "--strict"]) == 0
    printed = capsys.readouterr().out
    assert "IIA" in printed and "SUPPORTED" in printed
    saved = json.loads(out.read_text())
    assert saved["n_train"] + saved["n_test"] == 40 and len(saved["basis"]) == 1
    assert main(["probe", "--model", "testbed:induction", "--task", "copy_choice", "--site", "resid_pre:0:end",
                 "--n", "40", "--n-resamples", "199", "--folds", "3", "--no-causal", "--strict"]) == 1
    assert "control task" in capsys.readouterr().out
    # a probe's direction, written by `causalinterp probe --json`, is a subspace site in a hypothesis file
    pj = tmp_path / "probe.json"
    assert main(["probe", "--model", "testbed:induction", "--task", "copy_choice", "--site", "resid_post:1:end",
                 "--n", "40", "--n-resamples", "199", "--folds", "3", "--no-causal", "--json", str(pj)]) == 0
    capsys.readouterr()
    probe_basis = np.asarray(json.loads(pj.read_text())["basis"])
    assert probe_basis.shape[1] == ci.load_model("testbed:induction").d_model
    assert np.allclose(probe_basis @ probe_basis.T, np.eye(len(probe_basis)), atol=1e-5)
    ph = tmp_path / "probe.yaml"
    ph.write_text("name: ablating the probe direction hurts the copy\nmodel: testbed:induction\n"
                  "data: {task: induction, n: 12, seed: 9}\nintervention: {kind: mean}\n"
                  f"sites: {{subspace: {{component: resid_post, layer: 1, positions: end, basis: {pj}, name: probe}}}}\n"
                  "claim: {kind: has_effect, direction: decrease}\n")
    hp = ci.load_hypotheses(ph)[0]
    assert hp.sites.explicit[0].label == f"resid_post L1 @end [subspace probe k={len(probe_basis)}]"
    # the learned basis, tested on fresh prompts from a hypothesis file
    hyp = tmp_path / "das.yaml"
    hyp.write_text("name: the DAS direction transfers\nmodel: testbed:induction\n"
                   "data: {task: induction, n: 12, seed: 9}\n"
                   f"sites: {{subspace: {{component: resid_post, layer: 1, positions: end, basis: {out}, name: das}}}}\n"
                   "claim: {kind: has_effect}\n")
    h = ci.load_hypotheses(hyp)[0]
    assert h.sites.explicit[0].label == "resid_post L1 @end [subspace das k=1]"
    assert main(["das", "--model", "testbed:induction", "--task", "copy_choice", "--site", "resid_post:one:end"]) == 2
    assert "COMPONENT:LAYER" in capsys.readouterr().err
