"""Path sites in hypothesis files: the file form (``sites: {path: {senders, receivers, via}}`` or
``sites: {paths: [...]}``), strict errors naming the field, round trips, and the induction testbed's known
answer (previous-token head -> induction head through k, not q) through `ci.run_all` and the CLI."""
import json

import pytest
import yaml

import causalinterp as ci
from causalinterp.cli import main
from causalinterp.spec.paths import Path, PathSet
from causalinterp.spec.sites import Site

DATA = {"task": "induction", "n": 32, "seed": 2}


def hyp(name, via, **kw):
    return {"name": name, "model": "testbed:induction", "data": DATA,
            "sites": {"path": {"senders": {"heads": [[0, 1]]}, "receivers": {"heads": [[1, 2]]}, "via": via}},
            "intervention": {"kind": "mean"}, "claim": {"kind": "has_effect", "direction": "decrease"},
            "n_resamples": 999, **kw}


def test_file_form_builds_the_same_paths_as_python():
    h = ci.Hypothesis.from_dict(hyp("k", "k"))
    assert isinstance(h.sites, PathSet)
    model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(8)
    got = h.sites.resolve(model.n_layers, model.n_heads, data.lengths, data.positions.keys())
    assert got == (Path((Site("head_out", 0, 1),), (Site("k", 1, 2),)),)
    py = ci.sites.path(ci.sites.heads([(0, 1)]), [(1, 2)], via="k")
    assert py.resolve(model.n_layers, model.n_heads, data.lengths, data.positions.keys()) == got


@pytest.mark.parametrize("sites", [
    ci.sites.path(ci.sites.heads([(0, 1), (0, 3)]), [(1, 2)], via="k"),
    ci.sites.path(ci.sites.mlp_out(layers=[0], positions="end"), "logits"),
    ci.sites.path(ci.sites.attn_out(layers=[0]), ci.sites.mlp_out(layers=[1])),
    ci.sites.paths([Path((Site("head_out", 0, 1), Site("mlp_out", 0)), (Site("q", 1, 0), Site("mlp_out", 1))),
                    Path((Site("head_out", 1, 0, "end"),), ("logits",))]),
])
def test_hypotheses_with_paths_round_trip(sites):
    h = ci.Hypothesis(name="p", data=ci.DataRef("induction", n=8), sites=sites,
                      claim=ci.claims.has_effect(), model="testbed:induction")
    d = h.to_dict()
    json.dumps(d)
    again = ci.Hypothesis.from_dict(d)
    model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(8)
    resolve = lambda s: s.resolve(model.n_layers, model.n_heads, data.lengths, data.positions.keys())  # noqa: E731
    assert resolve(again.sites) == resolve(sites)
    assert ci.Hypothesis.from_dict(again.to_dict()) == again
    assert PathSet.from_dict(d["sites"]) == again.sites


def test_a_single_path_or_a_list_of_paths_is_accepted_in_python():
    p = Path((Site("head_out", 0, 1),), (Site("k", 1, 2),))
    for sites in (p, [p]):
        h = ci.Hypothesis(name="p", data=ci.DataRef("induction", n=8), sites=sites, claim=ci.claims.has_effect())
        assert h.sites == ci.sites.paths([p])


@pytest.mark.parametrize("path, field, words", [
    ({"senders": {"heads": [[0, 1]]}, "receivers": "logit"}, "sites.path.receivers", "did you mean 'logits'"),
    ({"senders": {"heads": [[0, 1]]}, "receivers": {"heads": [[1, 2]]}, "via": "x"}, "sites.path.via", "q, k, v"),
    ({"senders": {"heads": [[0, 1]]}, "receivers": {"heads": [[1, 2]]}}, "sites.path.via", "add via: q, k or v"),
    ({"senders": {"heads": [[0, 1]]}, "receivers": "logits", "via": "k"}, "sites.path.via", "drop it"),
    ({"senders": {"heads": [[0, 1]]}, "receiver": {"heads": [[1, 2]]}}, "sites.path", "did you mean 'receivers'"),
    ({"senders": "logits", "receivers": {"heads": [[1, 2]]}, "via": "k"}, "sites.path.senders", "mapping"),
    ({"senders": {"component": "q", "layers": [0], "heads": [1]}, "receivers": "logits"}, "sites.path",
     "head_out"),
    ({"senders": {"heads": [[0, 1]], "positions": "nowhere"}, "receivers": "logits"}, "sites", "nowhere"),
])
def test_bad_path_sites_are_refused_naming_the_field(path, field, words):
    with pytest.raises(ci.HypothesisError) as e:
        ci.Hypothesis.from_dict({**hyp("bad", "k"), "sites": {"path": path}})
    assert f"field {field}:" in str(e.value) and words in str(e.value), str(e.value)


def test_an_entry_of_paths_lists_its_sites():
    bad = {"paths": [{"senders": {"heads": [[0, 1]]}, "receivers": "logits"},
                     {"senders": {"component": "mlp_out"}, "receivers": "logits"}]}
    with pytest.raises(ci.HypothesisError, match=r"field sites\.paths\.1\.senders: .*not a grid"):
        ci.Hypothesis.from_dict({**hyp("bad", "k"), "sites": bad})


def test_json_schema_describes_path_sites():
    from causalinterp.spec.files import hypothesis_json_schema
    text = json.dumps(hypothesis_json_schema())
    assert "receivers" in text and "via" in text


def _write(tmp_path, hyps):
    path = tmp_path / "paths.yaml"
    path.write_text(yaml.safe_dump({"hypotheses": hyps}, sort_keys=False))
    return path


def test_induction_path_through_k_is_supported_and_through_q_is_not(tmp_path, capsys):
    path = _write(tmp_path, [hyp("prev-token head -> induction head via k", "k"),
                             hyp("prev-token head -> induction head via q", "q")])
    results = ci.run_all(ci.load_hypotheses(path), progress=False)
    assert [r.verdict for r in results] == ["supported", "null"]
    assert results[0].effects.sites == (Path((Site("head_out", 0, 1),), (Site("k", 1, 2),)),)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    assert "2 hypotheses: 1 supported, 1 null" in capsys.readouterr().out
    again = ci.Result.from_json(out / "results.json")
    assert [r.verdict for r in again] == ["supported", "null"]
    assert again[0].effects.sites == results[0].effects.sites
    assert ci.Hypothesis.from_dict(again[0].hypothesis) == ci.load_hypotheses(path)[0]
