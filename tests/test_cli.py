"""The CLI, in-process (`causalinterp.cli.main([...])`) on a tiny GPT-2 saved to a local path."""
import json
import textwrap

import pytest
import yaml

import causalinterp as ci
from causalinterp.cli import main
from conftest import VOCAB, build_hf

# six prompts: with fewer, even an exact (zero-variance) answer cannot reach alpha (smallest p 1/2**n)
CLEAN = [[5, 6, 7, 8, 9], [9, 10, 11, 12, 13], [13, 14, 15, 16, 17], [20, 21, 22, 23, 24], [25, 26, 27, 28, 29],
         [1, 2, 3, 4, 33]]
CORRUPT = [r[:-1] + [r[-1] + 30] for r in CLEAN]  # same tokens except the last one
# answer / wrong: the tiny model's top token on clean / corrupt, so the clean-corrupt gap is reliably positive
DATA = {"clean": CLEAN, "corrupt": CORRUPT, "answer": [48, 48, 32, 31, 31, 33], "wrong": [12, 32, 47, 62, 62, 31]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random GPT-2 and a word-level tokenizer of its vocabulary, saved like a hub checkpoint."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    path = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    build_hf("gpt2").save_pretrained(path)
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, **{f"t{i}": i for i in range(1, VOCAB)}}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(path)
    return str(path)


def hyp(name, positions, claim, **kw):
    return {"name": name, "data": DATA, "sites": {"component": "resid_pre", "layers": [0], "positions": positions},
            "claim": claim, "n_resamples": 999, **kw}


@pytest.fixture
def yaml_file(tmp_path, model_dir):
    path = tmp_path / "hyp.yaml"
    path.write_text(yaml.safe_dump({"model": model_dir, "hypotheses": [
        hyp("restores clean", ["all"], {"kind": "recovers", "at_least": 0.5}),
        hyp("shared token", [0], "has_effect")]}))
    return path


def err_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("causalinterp: error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


def test_run_yaml_writes_report_and_prints_table(yaml_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(yaml_file), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert (out / "index.html").is_file() and (out / "report.md").is_file()
    results = ci.Result.from_json(out / "results.json")
    assert [(r.name, r.verdict) for r in results] == [("restores clean", "supported"), ("shared token", "null")]
    lines = printed.splitlines()
    assert lines[0].split()[:2] == ["verdict", "hypothesis"]
    assert lines[1].startswith("SUPPORTED") and "restores clean" in lines[1] and "recovery 1 [1, 1]" in lines[1]
    assert lines[2].startswith("NULL") and "shared token" in lines[2]
    assert "2 hypotheses: 1 supported, 1 null" in printed
    assert f"report: {out / 'index.html'}" in printed


def test_strict_exit_code(yaml_file, tmp_path, capsys):
    # null is not supported -> 1 under --strict; without it verdicts are data (0, tested above)
    assert main(["run", str(yaml_file), "--out", str(tmp_path / "o"), "--strict", "--no-progress"]) == 1
    only_supported = tmp_path / "ok.yaml"
    only_supported.write_text(yaml.safe_dump({**hyp("ok", ["all"], "recovers"), "model": str(yaml.safe_load(
        yaml_file.read_text())["model"])}))
    assert main(["run", str(only_supported), "--out", str(tmp_path / "o2"), "--strict", "--no-progress"]) == 0


def test_run_python_file_and_directory(tmp_path, model_dir, capsys):
    d = tmp_path / "hyps"
    d.mkdir()
    (d / "test_claims.py").write_text(textwrap.dedent(f"""
        import causalinterp as ci

        DATA = ci.ContrastSet.from_dict({DATA!r})

        @ci.hypothesis(model={model_dir!r})
        def test_restores(model):
            assert isinstance(model, ci.Model)
            return ci.Hypothesis("from function", DATA, ci.sites.resid_pre(layers=[0], positions=["all"]),
                                 ci.claims.recovers(0.5), n_resamples=999)

        MODULE_LEVEL = ci.Hypothesis("module level", DATA, ci.sites.resid_pre(layers=[0], positions=[0]),
                                     ci.claims.recovers(0.5), n_resamples=999, model={model_dir!r})

        def helper():           # not decorated: ignored
            raise AssertionError
    """))
    (d / "more.yaml").write_text(yaml.safe_dump({**hyp("from yaml", ["all"], "recovers"), "model": model_dir}))
    (d / "_private.yaml").write_text("{{{")  # names starting with _ are skipped
    out = tmp_path / "out"
    assert main(["run", str(d), "--out", str(out), "--no-progress"]) == 0
    names = {r.name: r.verdict for r in ci.Result.from_json(out / "results.json")}
    assert names == {"from yaml": "supported", "from function": "supported", "module level": "refuted"}


def test_model_override(yaml_file, tmp_path, capsys):
    doc = yaml.safe_load(yaml_file.read_text())
    model = doc.pop("model")
    nomodel = tmp_path / "nomodel.yaml"
    nomodel.write_text(yaml.safe_dump(doc))
    assert main(["run", str(nomodel), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    line = err_line(capsys)
    assert "names no model" in line and "--model NAME" in line
    assert main(["run", str(nomodel), "--model", model, "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert ci.Result.from_json(tmp_path / "o" / "results.json")[0].meta["model"] == model


@pytest.mark.parametrize("case,content,expect", [
    ("missing file", None, "no such file or directory"),
    ("invalid yaml", "name: x\nsites: [resid_pre\n", "line 3: not valid YAML"),
    ("bad site name", {"component": "resid_foo", "layers": [0]}, "field sites.component: 'resid_foo' is not one of"),
    ("layer out of range", {"component": "resid_pre", "layers": [7]}, "layer 7 does not exist"),
    ("unknown model", "testbed:no-such-model", "no testbed 'no-such-model'"),
])
def test_input_errors_exit_2_with_one_line(case, content, expect, tmp_path, model_dir, capsys):
    path = tmp_path / "h.yaml"
    if isinstance(content, str) and case == "invalid yaml":
        path.write_text(content)
    elif isinstance(content, dict):
        path.write_text(yaml.safe_dump({**hyp("h", ["all"], "recovers"), "sites": content, "model": model_dir}))
    elif case == "unknown model":
        path.write_text(yaml.safe_dump({**hyp("h", ["all"], "recovers"), "model": content}))
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    line = err_line(capsys)
    assert expect in line, line
    assert not (tmp_path / "o" / "index.html").exists()


def test_usage_errors_and_help(capsys):
    assert main(["run"]) == 2                      # argparse: PATH is required
    assert "causalinterp run: error: the following arguments are required: PATH" in capsys.readouterr().err
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    for cmd in ("run", "scan", "report", "demo", "sitemap"):
        assert cmd in top
    assert main(["scan", "--help"]) == 0
    text = capsys.readouterr().out
    for opt in ("--task", "--model", "--sites", "--positions", "--n ", "--intervention", "--metric", "--claim",
                "--out", "--strict"):
        assert opt in text, opt
    assert main(["scan", "--task", "induction", "--model", "x", "--sites", "resid_foo"]) == 2
    assert "unknown site kind 'resid_foo'" in err_line(capsys)
    assert main(["scan", "--task", "induction", "--model", "x", "--sites", "resid_pre", "--claim", "recovers:9"]) == 2
    assert "at_least must be" in err_line(capsys)


def test_scan_induction(model_dir, tmp_path, capsys):
    out = tmp_path / "scan"
    rc = main(["scan", "--task", "induction", "--model", model_dir, "--sites", "resid_pre,head_out", "--layers", "1",
               "--heads", "0,1", "--positions", "end,-2", "--n", "8", "--seq-len", "4", "--n-resamples", "199",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    results = ci.Result.from_json(out / "results.json")
    assert [len(r.table) for r in results] == [2, 4]  # resid_pre: 2 positions; head_out: 2 heads x 2 positions
    assert results[0].hypothesis["data"] == {"task": "induction", "n": 8, "seed": 0, "seq_len": 4}
    assert "head_out L1.H0 @end" in printed and "report:" in printed
    assert (out / "index.html").is_file()


def test_report_command(yaml_file, tmp_path, capsys):
    first = tmp_path / "first"
    main(["run", str(yaml_file), "--out", str(first), "--no-progress"])
    capsys.readouterr()
    single = tmp_path / "single.json"
    ci.Result.from_json(first / "results.json")[0].to_json(single)
    out = tmp_path / "again"
    assert main(["report", str(first / "results.json"), str(single), "--out", str(out), "--title", "Again"]) == 0
    assert "Again" in (out / "index.html").read_text()
    assert len(json.loads((out / "results.json").read_text())["results"]) == 3
    assert "3 hypotheses: 2 supported, 1 null" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["report", str(bad), "--out", str(out)]) == 2
    assert "not valid JSON" in err_line(capsys)
    assert main(["report", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
    assert "no such file" in err_line(capsys)


def _testbeds_available(*names):
    try:
        return set(names) <= set(ci.testbeds.available())
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(_testbeds_available("induction", "ioi"), reason="testbeds are built; the fallback is not used")
def test_demo_without_testbeds_says_how_to_build_them(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "python -m causalinterp.testbeds.train" in err_line(capsys)


@pytest.mark.slow
@pytest.mark.skipif(not _testbeds_available("induction", "ioi"), reason="the shipped testbeds are not built")
def test_demo_runs_examples_on_testbeds(tmp_path, capsys):
    out = tmp_path / "reports"
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    assert (out / "index.html").is_file()
    verdicts = {r.name: r.verdict for r in ci.Result.from_json(out / "results.json")}
    assert verdicts and "report:" in capsys.readouterr().out


def test_example_hypothesis_files_are_valid():
    from causalinterp.cli import EXAMPLES
    files = sorted(EXAMPLES.glob("hyp_*.yaml"))
    assert files and (EXAMPLES / "test_testbeds.py").is_file()
    hs = [h for f in files for h in ci.load_hypotheses(f)]
    assert all(h.model and h.model.startswith("testbed:") for h in hs)
    if not _testbeds_available("induction", "induction-ko"):
        return
    prev, ind = (tuple(x) for x in ci.testbeds.card("induction")["circuit_heads"])
    ko = {tuple(x) for x in ci.testbeds.card("induction-ko")["knocked_out"]}
    for h in hs:
        heads = {(s.layer, s.head) for s in h.sites.explicit if s.head is not None}
        if h.model == "testbed:induction":
            assert heads <= {prev, ind}, (h.name, heads)
        elif h.model == "testbed:induction-ko" and "knocked-out" in h.name:
            assert heads and heads <= ko, (h.name, heads)
