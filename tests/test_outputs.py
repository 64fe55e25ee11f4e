"""The CLI checks before it computes and loses nothing; `report` validates result files; report files are
written as a set; `pytest --causal-report` to a place it cannot write fails the session."""
import json
import os

import numpy as np
import pytest
import yaml

import causalinterp as ci
from causalinterp.cli import main
from causalinterp.output import OutputError, check_writable_dir, write_set
from causalinterp.result import Result, ResultFileError
from conftest import build_hf

CLEAN = [[5, 6, 7, 8, 9], [9, 10, 11, 12, 13], [13, 14, 15, 16, 17], [20, 21, 22, 23, 24]]
CORRUPT = [r[:-1] + [r[-1] + 30] for r in CLEAN]
DATA = {"clean": CLEAN, "corrupt": CORRUPT, "answer": [30, 31, 32, 33], "wrong": [40, 41, 42, 43]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    build_hf("gpt2").save_pretrained(path)
    return str(path)


@pytest.fixture
def hyp_file(tmp_path, model_dir):
    path = tmp_path / "hyp.yaml"
    path.write_text(yaml.safe_dump({"model": model_dir, "hypotheses": [
        {"name": "restores clean", "data": DATA, "sites": {"component": "resid_pre", "layers": [0],
                                                          "positions": ["all"]},
         "claim": {"kind": "recovers", "at_least": 0.5}, "n_resamples": 99},
        {"name": "shared token", "data": DATA, "sites": {"component": "resid_pre", "layers": [0], "positions": [0]},
         "claim": "has_effect", "n_resamples": 99}]}))
    return path


def errors(capsys) -> list[str]:
    err = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in err), err
    return [line for line in err if line.startswith("causalinterp: error: ")]


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if any hypothesis is run."""
    import causalinterp.runner as runner

    def boom(*a, **k):
        raise AssertionError("a hypothesis ran before the output directory was checked")
    monkeypatch.setattr(runner, "run_all", boom)


@pytest.fixture(scope="module")
def results_json(tmp_path_factory, model_dir):
    """A real session results.json (computed once)."""
    out = tmp_path_factory.mktemp("run")
    path = out / "hyp.yaml"
    path.write_text(yaml.safe_dump({"model": model_dir, "hypotheses": [
        {"name": "restores clean", "data": DATA, "sites": {"component": "resid_pre", "layers": [0],
                                                          "positions": ["all"]},
         "claim": {"kind": "recovers", "at_least": 0.5}, "n_resamples": 99},
        {"name": "scan", "data": DATA, "sites": {"component": "resid_pre", "layers": [0, 1], "positions": [0, -1]},
         "claim": "has_effect", "n_resamples": 99}]}))
    assert main(["run", str(path), "--out", str(out / "o"), "--no-progress"]) == 0
    return json.loads((out / "o" / "results.json").read_text())


# ----------------------------------------------------------------------------- --out checked before any work

def test_out_is_a_file_fails_before_compute(tmp_path, hyp_file, capsys, no_compute):
    out = tmp_path / "report.html"
    out.write_text("not a directory")
    assert main(["run", str(hyp_file), "--out", str(out), "--no-progress"]) == 2
    (line,) = errors(capsys)
    assert "--out" in line and "is not a directory" in line


def test_out_below_a_file_fails_before_compute(tmp_path, hyp_file, capsys, no_compute):
    (tmp_path / "f").write_text("x")
    assert main(["run", str(hyp_file), "--out", str(tmp_path / "f" / "sub"), "--no-progress"]) == 2
    (line,) = errors(capsys)
    assert "is not writable" in line


def test_scan_and_report_check_out_first(tmp_path, capsys, no_compute, results_json):
    out = tmp_path / "file"
    out.write_text("x")
    assert main(["scan", "--task", "induction", "--model", "testbed:induction", "--sites", "resid_pre",
                 "--out", str(out)]) == 2
    assert "is not a directory" in errors(capsys)[0]
    res = tmp_path / "r.json"
    res.write_text(json.dumps(results_json))
    assert main(["report", str(res), "--out", str(out)]) == 2
    assert "is not a directory" in errors(capsys)[0]


def test_write_failure_after_compute_saves_results_beside(tmp_path, hyp_file, capsys, monkeypatch):
    import causalinterp.output as output
    real = output.write_set
    calls = []

    def failing_once(files):
        calls.append(list(files))
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real(files)
    monkeypatch.setattr("causalinterp.output.write_set", failing_once)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(hyp_file), "--out", str(out), "--no-progress"]) == 2
    (line,) = errors(capsys)
    assert "No space left on device" in line and "the results are saved in" in line
    saved = line.split("the results are saved in ")[1].split(" ")[0]
    results = ci.Result.from_json(saved)
    assert [r.name for r in results] == ["restores clean", "shared token"]
    assert not (out / "results.json").exists()  # the failed set left nothing half-written


# ----------------------------------------------------------------------------- report validates result files

def _tamper(results_json, edit):
    d = json.loads(json.dumps(results_json))
    edit(d["results"][0])
    return d


@pytest.mark.parametrize("edit,expect", [
    (lambda r: r["evaluation"].update(verdict="PROVEN"), "'PROVEN' is not one of supported, refuted, null"),
    (lambda r: r["evaluation"]["table"][0].update(verdict="maybe"), "evaluation.table[0].verdict"),
    (lambda r: r["evaluation"].update(alpha="x"), "evaluation.alpha"),
    (lambda r: r["evaluation"].update(alpha=0.9), "evaluation.alpha"),
    (lambda r: r["evaluation"].update(n_resamples=-5), "evaluation.n_resamples"),
    (lambda r: r["evaluation"].update(correction="holmes"), "did you mean 'holm'"),
    (lambda r: r["evaluation"]["table"][0].update(p=1.5), "evaluation.table[0].p"),
    (lambda r: r["evaluation"]["table"][0].update(ci_low=5.0, ci_high=-5.0), "ci_low 5 is above ci_high -5"),
    (lambda r: r["evaluation"]["table"][0].update(p=0.5, p_adj=0.01), "a correction never lowers"),
    (lambda r: r["evaluation"].update(verdict="refuted"), "does not follow from the sites' verdicts"),
    (lambda r: r["evaluation"]["claim"].update(kind="proves"), "unknown claim kind 'proves'"),
    (lambda r: r.pop("effects"), "missing required field 'effects'"),
    (lambda r: r["effects"].update(clean=[1.0]), "clean has 1 entries for 4 prompts"),
    (lambda r: r["effects"]["values"][0].append(1.0), "rows of different lengths"),
    (lambda r: r.update(schema="other/1"), "not a causalinterp result"),
    (lambda r: r.update(extra_field=1), "unknown field 'extra_field'"),
])
def test_report_refuses_tampered_or_malformed_results(tmp_path, capsys, results_json, edit, expect):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_tamper(results_json, edit)))
    out = tmp_path / "out"
    assert main(["report", str(path), "--out", str(out)]) == 2
    lines = errors(capsys)
    assert lines and expect in " ".join(lines), lines
    assert str(path) in lines[0]
    assert not (out / "index.html").exists()


@pytest.mark.parametrize("text,expect", [("[1, 2]", "expected a result"), ('{"results": "x"}', "must be a list"),
                                         ('{"results": [3]}', "expected a result"), ("{", "not valid JSON")])
def test_report_refuses_files_of_another_shape(tmp_path, capsys, text, expect):
    path = tmp_path / "r.json"
    path.write_text(text)
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 2
    assert expect in errors(capsys)[0]


def test_report_accepts_untouched_results(tmp_path, capsys, results_json):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results_json))
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "index.html").is_file()
    single = tmp_path / "one.json"
    single.write_text(json.dumps(results_json["results"][1]))
    assert isinstance(Result.from_json(single), Result)
    with pytest.raises(ResultFileError, match="PROVEN"):
        Result.from_dict(_tamper(results_json, lambda r: r["evaluation"].update(verdict="PROVEN"))["results"][0])


def test_report_files_are_replaced_as_a_set(tmp_path, capsys, results_json, monkeypatch):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results_json))
    out = tmp_path / "out"
    assert main(["report", str(path), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"index.html", "report.md", "results.json"}
    import causalinterp.report.markdown as md

    def broken(*a, **k):
        raise RuntimeError("renderer failed")
    monkeypatch.setattr(md, "render", broken)
    with pytest.raises(RuntimeError):
        main(["report", str(path), "--out", str(out), "--title", "new title"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing replaced, no temporaries


def test_write_set_replaces_nothing_when_one_file_fails(tmp_path, monkeypatch):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    b.write_text("old b")
    real_fdopen = os.fdopen
    n = []

    def fdopen(fd, *args, **kw):
        n.append(fd)
        if len(n) == 2:
            os.close(fd)
            raise OSError(28, "No space left on device")
        return real_fdopen(fd, *args, **kw)
    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(OSError, match="No space"):
        write_set({a: "new a", b: "new b"})
    assert a.read_text() == "old a" and b.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_check_writable_dir(tmp_path):
    assert check_writable_dir(tmp_path / "new" / "dir").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        check_writable_dir(tmp_path / "file")
    with pytest.raises(OutputError, match="not writable"):
        check_writable_dir(tmp_path / "file" / "below")


# ----------------------------------------------------------------------------- clean output

def test_p_values_below_the_resolution_are_printed_as_a_bound():
    from causalinterp.report.table import fmt_p
    assert fmt_p(0.0) == "< 1e-4"
    assert fmt_p(3e-7) == "< 1e-4"
    assert fmt_p(1e-4) == "1.0e-04"
    assert fmt_p(0.03) == "0.03"


def test_histogram_bins_are_visible_when_the_random_distribution_is_narrow():
    from causalinterp.report.plots import _histogram_bins
    rng = np.random.default_rng(0)
    random = 0.01 + 1e-5 * rng.standard_normal(200)
    observed = 0.9
    edges = _histogram_bins(random, observed)
    span = observed - random.min()
    assert np.diff(edges).min() >= span / 60 * 0.999
    assert edges[0] <= random.min() and edges[-1] >= random.max()
    wide = rng.standard_normal(200)
    assert 10 <= len(_histogram_bins(wide, 0.5)) - 1 <= 40
    assert len(_histogram_bins(np.zeros(50), 0.0)) >= 2  # all equal and observed equal: still a bar


# ----------------------------------------------------------------------------- pytest --causal-report

pytest_plugins = ["pytester"]
from test_pytest_plugin import HELPER, PLUGIN  # noqa: E402


def test_causal_report_to_a_file_is_a_usage_error(pytester):
    pytester.makepyfile(ci_tiny=HELPER, test_x="def test_plain():\n    assert True\n")
    (pytester.path / "taken").write_text("x")
    res = pytester.runpytest_inprocess(*PLUGIN, "--causal-report", "taken")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "is not a directory" in res.stderr.str()


def test_causal_report_write_failure_fails_the_session(pytester):
    pytester.makepyfile(ci_tiny=HELPER, test_h='''
        import causalinterp as ci
        import ci_tiny

        @ci.hypothesis(model=ci_tiny.tiny)
        def test_restores():
            return ci_tiny.supported()
        ''')
    pytester.makeconftest('''
        import causalinterp.output as output

        REAL = output.write_set

        def fail(files):
            raise OSError(28, "No space left on device")

        def pytest_sessionstart(session):
            output.write_set = fail

        def pytest_unconfigure(config):
            output.write_set = REAL
        ''')
    res = pytester.runpytest_inprocess(*PLUGIN, "--causal-report", "rep")
    res.assert_outcomes(passed=1)
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    res.stdout.fnmatch_lines(["*causalinterp report not written*No space left on device*"])


def test_no_attention_mask_warning_from_padded_batches(caplog):
    """transformers warns once per process when input_ids hold the pad token and no mask is passed; the
    engine passes one (all ones: causal attention already keeps right-padding out)."""
    import logging

    import torch
    from transformers.utils import logging as hf_logging
    hf = build_hf("gpt2")
    hf.config.pad_token_id = 0
    model = ci.load_model(hf)
    data = ci.ContrastSet.from_tokens([[1, 2, 3], [4, 5, 6, 7]], [[1, 2, 8], [4, 5, 6, 9]], [1, 2], [3, 4])
    verbosity, disabled = hf_logging.get_verbosity(), logging.root.manager.disable
    hf_logging.set_verbosity_warning()  # other tests' libraries may have silenced transformers
    logging.disable(logging.NOTSET)
    hf_logging.enable_propagation()
    try:
        logging.Logger.warning_once.cache_clear()
        with caplog.at_level(logging.WARNING):
            ci.scan(model, data, ci.sites.resid_pre([0], positions=[0]), progress=False)
        assert not [r for r in caplog.records if "attention_mask" in r.getMessage()]
        logging.Logger.warning_once.cache_clear()
        with caplog.at_level(logging.WARNING), torch.no_grad():
            hf(torch.tensor([[1, 2, 0]]))  # the same kind of input without a mask does warn
        assert [r for r in caplog.records if "attention_mask" in r.getMessage()]
    finally:
        hf_logging.disable_propagation()
        hf_logging.set_verbosity(verbosity)
        logging.disable(disabled)


def test_cli_shows_progress_bars_only_on_a_terminal(monkeypatch):
    import argparse

    from causalinterp.cli import _progress
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert _progress(argparse.Namespace(no_progress=False)) is False
