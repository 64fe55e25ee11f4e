"""Replication with known answers: testbed circuits replicate; a site selected on its own data does not."""
import json

import numpy as np
import pytest
from conftest import build_hf, random_data

import causalinterp as ci
from causalinterp.replicate import ReplicationError, _diff_p, _overall


@pytest.fixture(scope="module")
def induction():
    return ci.load_model("testbed:induction")


def _induction_head(n=24):
    return ci.Hypothesis(name="induction head carries the copy", model="testbed:induction",
                         data=ci.DataRef("induction", n=n, seed=0, options={"seq_len": 8}),
                         sites=ci.sites.heads([(1, 2)], positions="end"), intervention=ci.patch("noise"),
                         claim=ci.claims.has_effect("decrease"), n_resamples=999)


def test_testbed_circuit_replicates_on_fresh_prompts(induction, tmp_path):
    original = ci.run(_induction_head(), induction, progress=False)
    assert original.verdict == "supported"
    rep = ci.replicate(original, induction, seed=1, progress=False)
    assert rep.replication.hypothesis["data"]["seed"] == 1 and rep.changes["data seed"] == "0 -> 1"
    # the rerun really used other prompts, and everything else is unchanged
    assert not np.array_equal(rep.replication.effects.clean, original.effects.clean)
    assert {k: v for k, v in rep.replication.hypothesis.items() if k != "data"} == \
        {k: v for k, v in original.hypothesis.items() if k != "data"}
    assert rep.verdict == "replicated" and rep.replicated
    row = rep.table.iloc[0]
    assert row["original_verdict"] == row["replication_verdict"] == "supported"
    assert row["replication_estimate"] < 0 and row["replication_ci_high"] < 0
    # the report shows the verdict on replication as prominently as the verdicts
    md = rep.to_markdown(tmp_path / "r.md")
    assert "**REPLICATED**" in md and "**SUPPORTED**" in md
    back = ci.Replication.from_dict(json.loads(rep.to_json(tmp_path / "r.json")))
    assert back.verdict == rep.verdict and back.original.verdict == "supported"


def test_ioi_names_carry_the_task_on_held_out_templates():
    """Denoising every name position at layer 0 recovers exactly 1: true on any templates."""
    m = ci.load_model("testbed:ioi")
    held = ci.testbeds.card("ioi")["split"]["heldout_templates"]
    h = ci.Hypothesis(name="names are the task information", data=ci.DataRef("ioi", n=24, seed=0),
                      sites=ci.sites.resid_pre(layers=[0], positions=["IO", "S1", "S2"]), joint=True,
                      claim=ci.claims.recovers(at_least=0.9), n_resamples=999)
    original = ci.run(h, m, progress=False)
    rep = ci.replicate(original, m, seed=5, templates=held, progress=False)
    assert rep.changes["templates"].endswith(str(held))
    assert rep.table.iloc[0]["replication_estimate"] == pytest.approx(1.0, abs=1e-9)
    # every prompt recovers exactly 1, but prompts are clustered by template and there are only 4 held-out
    # templates: the smallest attainable p is 1/16 > alpha, so the exact answer is not proof (issue 10)
    if len(held) < 5:
        assert rep.verdict == "not replicated" and rep.replication.verdict == "inconclusive", rep
        assert "underpowered" in rep.replication.table["flag"].iloc[0]
    else:
        assert rep.verdict == "replicated", rep


def test_site_selected_on_its_own_data_does_not_replicate():
    """Answer and wrong token are drawn independently of the prompts, so by symmetry every site's true mean
    effect on the logit difference is exactly 0.  Picking the best of many sites on 12 prompts without
    correction gives a 'supported' claim; fresh prompts do not bear it out."""
    model = ci.load_model(build_hf("gpt2"))
    data = random_data(n=12, T=6, seed=3)
    pool = ci.sites.SiteSet("head_out", (0, 1), None, None)      # 48 sites: every layer x head x position
    scan = ci.evaluate(ci.scan(model, data, pool, intervention=ci.patch("noise"), progress=False),
                       ci.claims.has_effect(), correction="none", n_resamples=999)
    best = scan.table.sort_values("p").iloc[0]
    site = ci.Site("head_out", int(best["layer"]), int(best["head"]), int(best["position"]))
    h = ci.Hypothesis(name=f"selected site {site.label}", data=data, sites=ci.sites.SiteSet(explicit=(site,)),
                      intervention=ci.patch("noise"), claim=ci.claims.has_effect(), n_resamples=999)
    original = ci.run(h, model, progress=False)
    assert original.verdict == "supported", "precondition: selection produced a 'supported' claim"
    with pytest.raises(ReplicationError, match="inline prompts"):
        ci.replicate(original, model, progress=False)
    # each fresh sample replicates the selected claim with probability alpha/2 at most (an exact sign-flip test
    # under a symmetric null, same sign required): out of five, at most one may do so by chance
    reps = [ci.replicate(original, model, data=random_data(n=12, T=6, seed=100 + k), progress=False)
            for k in range(5)]
    assert sum(r.verdict == "replicated" for r in reps) <= 1, [r.verdict for r in reps]
    failed = next(r for r in reps if r.verdict != "replicated")
    assert "NOT REPLICATED" in failed.to_markdown() or "CONTRADICTED" in failed.to_markdown()


def test_replication_statuses_and_difference_test():
    from causalinterp.replicate import _status
    assert _status("supported", "supported", 0.5, 0.2) == "replicated"
    assert _status("supported", "supported", 0.5, -0.2) == "contradicted"
    assert _status("null", "supported", 0.0, 0.3) == "contradicted"
    assert _status("refuted", "inconclusive") == "not replicated"
    assert _status("inconclusive", "supported") == "untestable"
    assert _overall(["replicated"]) == "replicated"
    assert _overall(["replicated", "not replicated"]) == "partly replicated"
    assert _overall(["not replicated", "contradicted"]) == "not replicated"
    assert _overall(["contradicted", "untestable", "contradicted"]) == "contradicted"
    assert _overall(["untestable", "untestable"]) == "untestable"
    # equal estimates: p = 1; estimates 4 standard errors of the difference apart: p = 2 * Phi(-4)
    from scipy.stats import norm
    assert _diff_p(1.0, 0.0, 2.0, 1.0, 0.5, 1.5, 0.95, 0.95) == pytest.approx(1.0)
    se = 1 / norm.ppf(0.975)
    assert _diff_p(0.0, -1.0, 1.0, 4 * se * np.sqrt(2), 4 * se * np.sqrt(2) - 1, 4 * se * np.sqrt(2) + 1,
                   0.95, 0.95) == pytest.approx(2 * norm.sf(4), rel=1e-9)


def test_cli_replicate(tmp_path, capsys):
    from causalinterp.cli import main
    f = tmp_path / "hyp.yaml"
    f.write_text(json.dumps({"model": "testbed:induction", "hypotheses": [_induction_head(16).to_dict()]}))
    assert main(["run", str(f), "--out", str(tmp_path / "orig"), "--no-progress"]) == 0
    capsys.readouterr()
    out = tmp_path / "rep"
    assert main(["replicate", str(tmp_path / "orig" / "results.json"), "--seed", "9", "--out", str(out),
                 "--no-progress", "--option", "seq_len=10"]) == 0
    text = capsys.readouterr().out
    assert "REPLICATED" in text and "replication.html" in text
    doc = json.loads((out / "replication.json").read_text())["replications"][0]
    assert doc["replication"]["hypothesis"]["data"] == {"task": "induction", "n": 16, "seed": 9, "seq_len": 10}
    assert doc["verdict"] == "replicated"
    assert "REPLICATED" in (out / "replication.html").read_text()
    assert main(["replicate", str(tmp_path / "orig" / "results.json"), "--option", "nokey"]) == 2
    assert main(["replicate", str(tmp_path / "orig" / "results.json"), "--seed", "0", "--out", str(out)]) == 2
    assert "same prompts" in capsys.readouterr().err
