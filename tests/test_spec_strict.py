"""Strict specs: every silent-wrong input of issue 11 (files and Python API) is now a clear error.

Each case states the input that used to run a different experiment than written (or crash from deep inside)
and the words the error must contain: the field, the line (for YAML), and the fix.
"""
import json
import textwrap

import numpy as np
import pytest

import causalinterp as ci
from causalinterp.spec.claims import ClaimError
from causalinterp.spec.data import DataError
from causalinterp.spec.files import hypothesis_json_schema
from causalinterp.spec.interventions import InterventionError
from causalinterp.spec.metrics import MetricError
from causalinterp.spec.sites import Site, SiteError

BASE = """\
name: t
model: testbed:induction
data: {task: induction, n: 8, seed: 0, seq_len: 5}
sites: {component: head_out, layers: [1], positions: [end]}
claim: has_effect
"""


def load(tmp_path, text, name="h.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return ci.load_hypotheses(p)


def error_of(tmp_path, text) -> str:
    with pytest.raises(ci.HypothesisError) as e:
        load(tmp_path, text)
    return str(e.value)


# ----------------------------------------------------------------------------- YAML that ran another experiment

@pytest.mark.parametrize("text,expect", [
    # unknown keys inside sites / intervention / metric / data / claim, with "did you mean"
    (BASE.replace("layers: [1]", "layer: [1]"), ["line 4", "field sites", "unknown field 'layer'",
                                                 "did you mean 'layers'"]),
    (BASE + "intervention: {kind: resample, sed: 7}\n", ["line 6", "unknown field 'sed'", "did you mean 'seed'"]),
    (BASE + "intervention: {kind: mean, refrence: clean}\n", ["unknown field 'refrence'",
                                                               "did you mean 'reference'"]),
    (BASE + "metric: {kind: logit_diff, positon: S2}\n", ["line 6", "field metric", "unknown field 'positon'",
                                                          "did you mean 'position'"]),
    (BASE.replace("seq_len: 5", "seqlen: 5"), ["line 3", "field data", "did you mean 'seq_len'"]),
    (BASE.replace("claim: has_effect", "claim: {kind: recovers, atleast: 0.5}"), ["did you mean 'at_least'"]),
    (BASE.replace("claim: has_effect", "claim: {kind: recover}"), ["unknown claim kind 'recover'",
                                                                   "did you mean 'recovers'"]),
    (BASE.replace("model:", "modle:"), ["line 2", "unknown field 'modle'", "did you mean 'model'"]),
    (BASE + "corection: holm\n", ["unknown field 'corection'", "did you mean 'correction'"]),
    # types are never coerced
    (BASE + 'joint: "false"\n', ["line 6", "field joint", "expected true or false", "without quotes"]),
    (BASE + "joint: 1\n", ["field joint", "expected true or false, got int 1"]),
    (BASE.replace("name: t", "name: yes"), ["line 1", "field name", "expected a string", "quote"]),
    (BASE.replace("positions: [end]", "positions: [on]"), ["field sites.positions[0]", "boolean", "quote"]),
    (BASE.replace("positions: [end]", "positions: [3.7]"), ["sites.positions[0]", "got float 3.7"]),
    (BASE.replace("n: 8", "n: 8.7"), ["line 3", "field data.n", "expected an integer, got 8.7"]),
    (BASE.replace("n: 8", "n: '8'"), ["field data.n", "expected an integer, got str '8'"]),
    (BASE.replace("layers: [1]", "layers: [true]"), ["sites.layers[0]", "boolean"]),
    (BASE + "seed: abc\n", ["field seed", "expected an integer, got str 'abc'"]),
    (BASE + "seed: -1\n", ["field seed", "out of range"]),
    (BASE + "alpha: '0.05'\n", ["field alpha", "expected a number"]),
    # ranges and names, checked before any model is loaded
    (BASE + "alpha: 0.7\n", ["field alpha", "0.7 is out of range"]),
    (BASE + "n_resamples: -1\n", ["field n_resamples", "-1 is out of range"]),
    (BASE + "n_resamples: 0\n", ["field n_resamples"]),
    (BASE + "correction: holmm\n", ["field correction", "'holmm' is not one of", "did you mean 'holm'"]),
    (BASE.replace("component: head_out", "component: head_ot"), ["'head_ot' is not one of", "did you mean 'head_out'"]),
    (BASE.replace("layers: [1]", "layers: [-1]"), ["sites.layers[0]", "out of range"]),
    (BASE.replace("task: induction", "task: inductoin"), ["unknown task 'inductoin'", "did you mean 'induction'"]),
    (BASE.replace("n: 8", "n: 1"), ["field data.n", "out of range"]),
    (BASE.replace("positions: [end]", "positions: [S2]"), ["line 4", "named position 'S2' does not exist in the "
                                                           "induction task's data"]),
    (BASE + "metric: {kind: logit_diff, position: S1}\n", ["field metric", "named position 'S1'"]),
    (BASE + "metric: {kind: logit_diff, position: all}\n", ["position 'all' is for sites"]),
    (BASE + "intervention: {kind: mean, reference: other}\n", ["field intervention.reference",
                                                               "'other' is not one of corrupt, clean"]),
    (BASE + "intervention: denoize\n", ["'denoize' is not one of", "did you mean 'denoise'"]),
    (BASE.replace("claim: has_effect", "claim: {kind: recovers, at_least: 7}"), ["at_least must be in (0, 1.5]"]),
    (BASE.replace("claim: has_effect", "claim: {kind: has_effect, direction: up}"), ["'up' is not one of"]),
    (BASE.replace("claim: has_effect", "claim: {kind: beats_random, n_random: 2.5}"), ["expected an integer"]),
    (BASE.replace("sites: {component: head_out, layers: [1], positions: [end]}", "sites: {heads: [[1, 2.5]]}"),
     ["sites.heads[0][1]", "expected an integer, got 2.5"]),
    (BASE.replace("sites: {component: head_out, layers: [1], positions: [end]}", "sites: {sites: [{layer: 1}]}"),
     ["field sites.sites[0]: missing required field 'component'"]),
    (BASE.replace("sites: {component: head_out, layers: [1], positions: [end]}",
                  "sites: {sites: [{component: mlp_out, layer: 1, postion: 2}]}"), ["did you mean 'position'"]),
    (BASE.replace("data: {task: induction, n: 8, seed: 0, seq_len: 5}", "data: {n: 8}"), ["give a task reference"]),
    (BASE.replace("name: t\n", ""), ["missing required field 'name'"]),
    # duplicate keys
    (BASE + "name: u\n", ["line 6", "duplicate key 'name' (first at line 1)"]),
    (BASE.replace("layers: [1]", "layers: [1], layers: [0]"), ["duplicate key 'layers'"]),
])
def test_yaml_errors_name_field_line_and_fix(tmp_path, text, expect):
    msg = error_of(tmp_path, text)
    assert "h.yaml" in msg
    for e in expect:
        assert e in msg, f"{e!r} not in: {msg}"


def test_every_problem_of_every_hypothesis_is_listed(tmp_path):
    text = textwrap.dedent("""\
        model: testbed:induction
        hypotheses:
          - name: first
            data: {task: induction, n: 8}
            sites: {component: head_out, layer: [1]}
            claim: has_effect
            alpha: 2
          - name: second
            data: {task: induction, n: 8}
            sites: {component: head_out, layers: [1]}
            claim: has_effect
            joint: "yes"
        """)
    msg = error_of(tmp_path, text)
    lines = msg.splitlines()
    assert len(lines) == 3, msg
    assert "hypothesis 1 ('first'), line 5" in lines[0] and "did you mean 'layers'" in lines[0]
    assert "hypothesis 1 ('first'), line 7, field alpha" in lines[1]
    assert "hypothesis 2 ('second'), line 12, field joint" in lines[2]


def test_top_level_keys_of_a_hypotheses_file(tmp_path):
    msg = error_of(tmp_path, "modle: testbed:induction\nhypotheses:\n  - " + BASE.replace("\n", "\n    "))
    assert "line 1" in msg and "did you mean 'model'" in msg


def test_json_files_get_the_same_checks(tmp_path):
    d = {"name": "t", "data": {"task": "ioi", "n": 8}, "sites": {"component": "resid_pre", "layers": [0]},
         "claim": "has_effect", "joint": "false"}
    p = tmp_path / "h.json"
    p.write_text(json.dumps(d, indent=1))
    with pytest.raises(ci.HypothesisError, match="field joint: expected true or false"):
        ci.load_hypotheses(p)
    p.write_text('{"name": "a", "name": "b"}')
    with pytest.raises(ci.HypothesisError, match="duplicate key 'name'"):
        ci.load_hypotheses(p)


def test_valid_files_round_trip_unchanged(tmp_path):
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "examples" / "hypotheses"
    for f in sorted(root.glob("*.yaml")):
        for h in ci.load_hypotheses(f):
            assert ci.Hypothesis.from_dict(h.to_dict()) == h
            assert ci.Hypothesis.from_dict(json.loads(json.dumps(h.to_dict()))) == h


def test_inline_data_is_strict_too(tmp_path):
    text = BASE.replace("data: {task: induction, n: 8, seed: 0, seq_len: 5}",
                        "data: {clean: [[1, 2.5]], corrupt: [[1, 3]], answer: [4]}")
    assert "data.clean[0][1]" in error_of(tmp_path, text)
    text = BASE.replace("data: {task: induction, n: 8, seed: 0, seq_len: 5}",
                        "data: {clean: [[1, 2]], corrupt: [[1, 3]], answer: [4], wrnog: [5]}")
    assert "did you mean 'wrong'" in error_of(tmp_path, text)


# ----------------------------------------------------------------------------- the Python API shares the schema

def test_python_api_refuses_what_files_refuse():
    with pytest.raises(SiteError, match="layer"):
        Site("resid_pre", True)
    with pytest.raises(SiteError, match="3.7"):
        Site("resid_pre", 1, position=3.7)
    with pytest.raises(SiteError, match="boolean"):
        ci.sites.resid_pre(layers=[0], positions=[True])
    with pytest.raises(SiteError, match="did you mean 'head_out'"):
        ci.sites.SiteSet("head_ot")
    with pytest.raises(InterventionError, match="put them in the contrast set"):
        ci.ablate("mean", reference="other")
    with pytest.raises(InterventionError, match="seed"):
        ci.ablate("resample", seed="abc")
    with pytest.raises(MetricError, match="position"):
        ci.metrics.logit_diff(2.0)
    with pytest.raises(ClaimError):
        ci.claims.recovers(True)
    with pytest.raises(ci.HypothesisError, match="alpha"):
        ci.Hypothesis("h", ci.DataRef("ioi"), ci.sites.resid_pre(), ci.claims.has_effect(), alpha=0.7)
    with pytest.raises(ci.HypothesisError, match="joint"):
        ci.Hypothesis("h", ci.DataRef("ioi"), ci.sites.resid_pre(), ci.claims.has_effect(), joint="false")
    with pytest.raises(ci.HypothesisError, match="correction"):
        ci.Hypothesis("h", ci.DataRef("ioi"), ci.sites.resid_pre(), ci.claims.has_effect(), correction="holmm")
    with pytest.raises(ci.HypothesisError, match="did you mean 'seq_len'"):
        ci.DataRef("induction", options={"seqlen": 5})
    with pytest.raises(ci.HypothesisError, match="n"):
        ci.DataRef("ioi", n=8.7)


def test_numpy_integers_are_fine_and_normalised():
    s = Site("head_out", np.int64(1), np.int32(2), np.int64(-1))
    assert s == Site("head_out", 1, 2, -1) and type(s.layer) is int and type(s.position) is int
    ss = ci.sites.resid_pre(layers=np.arange(2), positions=[np.int64(0), "end"])
    assert ss.layers == (0, 1) and all(type(x) is int for x in ss.layers)
    assert ci.sites.heads([(np.int64(1), np.int64(2))]).explicit[0] == Site("head_out", 1, 2, "all")
    assert ci.claims.beats_random(np.int64(20)).n_random == 20
    h = ci.Hypothesis("h", ci.DataRef("ioi", n=np.int64(8)), ci.sites.resid_pre(), ci.claims.has_effect(),
                      seed=np.int64(3))
    assert h.seed == 3 and type(h.seed) is int


def test_sites_as_tuples_get_a_clear_error():
    with pytest.raises(SiteError, match=r"not a ci.Site.*ci.sites.heads"):
        ci.sites.explicit([(1, 2)])
    with pytest.raises(SiteError, match="layer, head"):
        ci.sites.heads([1, 2])


def test_contrast_set_refuses_floats_and_bools_as_tokens():
    with pytest.raises(DataError, match="integers"):
        ci.ContrastSet.from_tokens([[1, 2.7]], [[1, 3]], [4])
    with pytest.raises(DataError, match="integers"):
        ci.ContrastSet.from_tokens([[1, 2]], [[1, 3]], [True])
    with pytest.raises(DataError, match="integers"):
        ci.ContrastSet.from_tokens([[1, 2]], [[1, 3]], [4], positions={"x": [0.5]})
    with pytest.raises(DataError, match="did you mean 'wrong'"):
        ci.ContrastSet.from_dict({"clean": [[1]], "corrupt": [[2]], "answer": [3], "wrnog": [4]})


def test_unknown_words_of_a_word_level_tokenizer_are_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {"[UNK]": 0, "the": 1, "cat": 2, "sat": 3, "dog": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    ok = ci.ContrastSet.from_text(hf, ["the cat"], ["the dog"], ["sat"], ["cat"])
    assert ok.clean == ((1, 2),)
    with pytest.raises(DataError, match=r"clean prompt 0 .*unknown token '\[UNK\]'"):
        ci.ContrastSet.from_text(hf, ["the zebra"], ["the dog"], ["sat"], ["cat"])
    with pytest.raises(DataError, match="answer 1"):
        ci.ContrastSet.from_text(hf, ["the cat", "the dog"], ["the dog", "the cat"], ["sat", "zebra"], ["cat", "dog"])
    with pytest.raises(DataError, match="corrupt prompt 1"):
        ci.ContrastSet.from_text(hf, ["the cat", "the dog"], ["the dog", "a cat"], ["sat", "sat"], ["cat", "dog"])


def test_position_index_never_wraps():
    d = ci.ContrastSet.from_tokens([[1, 2, 3], [1, 2, 3, 4]], [[5, 6, 7], [5, 6, 7, 8]], [1, 2], [3, 4])
    assert d.position_index(-1, 0) == 2 and d.position_index(-1, 1) == 3
    assert d.position_index(3, 1) == 3
    with pytest.raises(DataError, match="position 3 is out of range for prompt 0, which has 3 tokens"):
        d.position_index(3, 0)
    with pytest.raises(DataError, match="out of range for prompt 1"):
        d.position_index(-5, 1)
    with pytest.raises(DataError, match="integers"):
        d.position_index(True, 0)


# ----------------------------------------------------------------------------- JSON Schema for editors

def test_json_schema_describes_the_file_and_agrees_with_the_validator(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = hypothesis_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    import yaml
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "examples" / "hypotheses"
    for f in sorted(root.glob("*.yaml")):
        errors = list(validator.iter_errors(yaml.safe_load(f.read_text())))
        assert not errors, (f, errors[0].message)
    for bad in (BASE.replace("layers: [1]", "layer: [1]"), BASE + 'joint: "false"\n', BASE + "alpha: 0.7\n",
                BASE + "correction: holmm\n", BASE.replace("n: 8", "n: 8.7")):
        assert list(validator.iter_errors(yaml.safe_load(bad))), bad


def test_cli_schema_prints_the_json_schema(capsys):
    from causalinterp.cli import main
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == hypothesis_json_schema()
