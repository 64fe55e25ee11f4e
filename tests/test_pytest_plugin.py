"""The pytest plugin, exercised through pytester (in-process): outcomes, strictness, summary, report, YAML files.

Verdicts are known by construction on a tiny random GPT-2:
  supported     denoise resid_pre L0 at "all": the patched run *is* the clean run -> recovery exactly 1
  refuted       denoise resid_pre L0 at position 0, where clean and corrupt share the token -> recovery exactly 0
  null          the same zero-effect site under has_effect -> effect exactly 0
  inconclusive  3 random prompt pairs: the clean-corrupt gap is not reliably non-zero
"""
import json
import textwrap
from importlib.metadata import entry_points

import pytest
import yaml

import causalinterp as ci

pytest_plugins = ["pytester"]

# Before the pytest11 entry point is installed the plugin is loaded with -p; afterwards that would register it twice.
_REGISTERED = any(ep.value == "causalinterp.pytest_plugin" for ep in entry_points(group="pytest11"))
PLUGIN = [] if _REGISTERED else ["-p", "causalinterp.pytest_plugin"]

HELPER = '''
import torch
from transformers import GPT2Config, GPT2LMHeadModel
import causalinterp as ci

LOADS = 0

def tiny():
    """Zero-argument model factory; counts how often the plugin calls it."""
    global LOADS
    LOADS += 1
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=64, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    m = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    return m.eval()

def last_token_data(n=8, T=6, seed=12):   # a seed whose clean-corrupt gap is reliably non-zero
    """Clean and corrupt prompts that differ only in their last token."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, 64, (n, T), generator=g)
    corrupt = clean.clone()
    corrupt[:, -1] = torch.randint(1, 64, (n,), generator=g)
    return ci.ContrastSet.from_tokens(clean, corrupt, answer=torch.randint(1, 64, (n,), generator=g),
                                      wrong=torch.randint(1, 64, (n,), generator=g))

def random_data(n=3, T=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return ci.ContrastSet.from_tokens(torch.randint(1, 64, (n, T), generator=g), torch.randint(1, 64, (n, T), generator=g),
                                      answer=torch.randint(1, 64, (n,), generator=g),
                                      wrong=torch.randint(1, 64, (n,), generator=g))

def supported(name="restores_clean"):
    return ci.Hypothesis(name, last_token_data(), ci.sites.resid_pre(layers=[0], positions=["all"]),
                         ci.claims.recovers(0.5), n_resamples=999)

def refuted(name="shared_token_recovers"):
    return ci.Hypothesis(name, last_token_data(), ci.sites.resid_pre(layers=[0], positions=[0]),
                         ci.claims.recovers(0.5), n_resamples=999)

def null(name="shared_token_has_effect"):
    return ci.Hypothesis(name, last_token_data(), ci.sites.resid_pre(layers=[0], positions=[0]),
                         ci.claims.has_effect(), n_resamples=999)

def inconclusive(name="three_random_prompts"):
    return ci.Hypothesis(name, random_data(), ci.sites.head_out(layers=[1], heads=[0], positions=["end"]),
                         ci.claims.recovers(0.5), n_resamples=999)
'''

OUTCOMES = '''
import causalinterp as ci
import ci_tiny

@ci.hypothesis(model=ci_tiny.tiny)
def test_supported(model):
    assert isinstance(model, ci.Model)
    return ci_tiny.supported()

@ci.hypothesis(model=ci_tiny.tiny)
def test_refuted(model):
    return ci_tiny.refuted()

@ci.hypothesis(model=ci_tiny.tiny)
def test_null():                       # no `model` argument: the plugin still runs it on the marked model
    return ci_tiny.null()

@ci.hypothesis(model=ci_tiny.tiny)
def test_inconclusive(model):
    return ci_tiny.inconclusive()

def test_zz_model_loaded_once():
    assert ci_tiny.LOADS == 1
'''


_HELPER_NS: dict = {}


def helper() -> dict:
    """The HELPER module's namespace in this process."""
    if not _HELPER_NS:
        exec(HELPER, _HELPER_NS)
    return _HELPER_NS


@pytest.fixture(scope="module", autouse=True)
def _warm(tmp_path_factory):
    """Import everything a run touches before pytester snapshots sys.modules (in-process runs drop modules
    imported during the run, and torch cannot import some of its submodules twice)."""
    from conftest import build_hf
    m = build_hf("gpt2")
    path = tmp_path_factory.mktemp("warm") / "m"
    m.save_pretrained(path)
    model = ci.load_model(str(path))
    from causalinterp.cli import write_reports
    write_reports([ci.run(helper()["supported"](), model, progress=False)], path.parent / "rep")


def _esc(pattern):
    """fnmatch pattern with literal brackets."""
    return pattern.replace("[", "[[]")


@pytest.fixture
def outcomes(pytester):
    pytester.makepyfile(ci_tiny=HELPER, test_claims=OUTCOMES)
    return pytester


def test_outcomes_summary_and_single_model_load(outcomes):
    res = outcomes.runpytest_inprocess(*PLUGIN, "-v")
    out = res.stdout.str()
    counts = res.parseoutcomes()
    assert counts.get("passed") == 2 and counts.get("failed") == 1, out
    assert counts.get("null") == 1 and counts.get("inconclusive") == 1, out   # own categories, not passes
    assert res.ret == 1  # the refuted hypothesis
    res.stdout.fnmatch_lines(["*test_claims.py::test_null NULL*", "*test_claims.py::test_inconclusive INCONCLUSIVE*"])
    # refuted: reasons and the statistics table in the failure message
    res.stdout.fnmatch_lines(["*hypothesis 'shared_token_recovers' is REFUTED*",
                              "*claim: recovers at least 0.5 of the clean-corrupt gap*",
                              "*site*n*estimate*ci_low*ci_high*p*p_adj*verdict*",
                              "*resid_pre L0 @0*REFUTED*"])
    # terminal summary: one line per hypothesis with estimate, CI, p and verdict
    res.stdout.fnmatch_lines([_esc(x) for x in [
        "*causalinterp hypotheses*",
        "verdict*hypothesis*estimate [CI]*p*n",
        "SUPPORTED*restores_clean*recovery 1 [1, 1] (95%)*8",
        "REFUTED*shared_token_recovers*recovery*0 [*0, *0] (95%)*8",
        "NULL*shared_token_has_effect*mean effect 0 [0, 0] (95%)*1*8",
        "INCONCLUSIVE*three_random_prompts*recovery*[*]*3",
        "4 hypotheses: 1 supported, 1 refuted, 1 null, 1 inconclusive"]])
    assert "test_zz_model_loaded_once PASSED" in out  # LOADS == 1 across the four hypotheses


def test_strict_fails_null_and_inconclusive(outcomes):
    res = outcomes.runpytest_inprocess(*PLUGIN, "--causal-strict")
    counts = res.parseoutcomes()
    assert counts.get("failed") == 3 and counts.get("passed") == 2, res.stdout.str()
    assert "null" not in counts and "inconclusive" not in counts
    res.stdout.fnmatch_lines(["*hypothesis 'shared_token_has_effect' is NULL (fails under --causal-strict)*",
                              "*hypothesis 'three_random_prompts' is INCONCLUSIVE (fails under --causal-strict)*"])


def test_strict_ini_option(outcomes):
    outcomes.makeini("[pytest]\ncausal_strict = true\n")
    res = outcomes.runpytest_inprocess(*PLUGIN, "-k", "null")
    res.assert_outcomes(failed=1)


def test_report_dir(outcomes):
    report = outcomes.path / "report"
    res = outcomes.runpytest_inprocess(*PLUGIN, "--causal-report", str(report))
    assert (report / "index.html").is_file() and (report / "report.md").is_file()
    results = ci.Result.from_json(report / "results.json")
    assert [r.verdict for r in results] == ["supported", "refuted", "null", "inconclusive"]
    assert "restores_clean" in (report / "index.html").read_text()
    res.stdout.fnmatch_lines([f"causalinterp report: {report / 'index.html'}"])


def test_bad_return_and_missing_model(pytester):
    pytester.makepyfile(ci_tiny=HELPER, test_bad='''
        import causalinterp as ci
        import ci_tiny

        @ci.hypothesis(model=ci_tiny.tiny)
        def test_forgot_return(model):
            ci_tiny.supported()

        @ci.hypothesis
        def test_no_model(model):
            return ci_tiny.supported()

        @ci.hypothesis
        def test_no_model_anywhere():
            return ci_tiny.supported()     # the hypothesis names no model either

        @ci.hypothesis(model="testbed:no-such-testbed")
        def test_unknown_model(model):
            return ci_tiny.supported()
    ''')
    res = pytester.runpytest_inprocess(*PLUGIN)
    res.assert_outcomes(failed=2, errors=2)
    res.stdout.fnmatch_lines(["*test_forgot_return() must return a ci.Hypothesis*got NoneType*"])
    res.stdout.fnmatch_lines(["*names no model: use @ci.hypothesis(model=*--causal-model NAME*"])
    res.stdout.fnmatch_lines(["*hypothesis 'restores_clean' names no model*"])
    res.stdout.fnmatch_lines(["*could not load model 'testbed:no-such-testbed'*"])
    assert "Traceback" not in res.stdout.str() and "During handling" not in res.stdout.str()


def _tiny_saved(pytester):
    from conftest import build_hf
    path = pytester.path / "tiny-model"
    build_hf("gpt2").save_pretrained(path)
    return str(path)


def test_yaml_files_collected(pytester):
    def as_yaml(h):
        d = h.to_dict()
        d["sites"] = {k: v for k, v in d["sites"].items() if v is not None}  # heads: null reads as a head list
        return d

    hs = [as_yaml(helper()["supported"]()), as_yaml(helper()["refuted"]())]
    doc = {"model": _tiny_saved(pytester), "hypotheses": hs}
    (pytester.path / "hyp_tiny.yaml").write_text(yaml.safe_dump(doc))
    (pytester.path / "claims.hyp.yml").write_text(yaml.safe_dump({**hs[0], "name": "again", "model": doc["model"]}))
    (pytester.path / "notes.yaml").write_text("not: a hypothesis\n")  # not a hypothesis file name: ignored
    res = pytester.runpytest_inprocess(*PLUGIN, "-v", "--causal-report", "rep")
    res.assert_outcomes(passed=2, failed=1)
    res.stdout.fnmatch_lines(["*claims.hyp.yml::again PASSED*", "*hyp_tiny.yaml::restores_clean PASSED*",
                              "*hyp_tiny.yaml::shared_token_recovers FAILED*",
                              "*hypothesis 'shared_token_recovers' is REFUTED*"])
    assert len(json.loads((pytester.path / "rep" / "results.json").read_text())["results"]) == 3


def test_yaml_collect_markers_and_custom_patterns(pytester):
    pytester.makeini("[pytest]\ncausal_files = test_*.yaml\n")
    (pytester.path / "test_x.yaml").write_text("name: x\n")
    (pytester.path / "hyp_y.yaml").write_text("{{{")  # default pattern no longer applies: not collected
    res = pytester.runpytest_inprocess(*PLUGIN, "--collect-only")
    res.stdout.fnmatch_lines(["*test_x.yaml*missing required field 'data'*"])
    assert "hyp_y.yaml" not in res.stdout.str()


def test_invalid_yaml_is_a_clear_collection_error(pytester):
    (pytester.path / "hyp_syntax.yaml").write_text("name: broken\nsites: [resid_pre\n")
    (pytester.path / "hyp_field.yaml").write_text(textwrap.dedent("""\
        name: bad claim
        model: testbed:induction
        data: {task: induction, n: 8}
        sites: {component: resid_pre, layers: [0]}
        claim: {kind: recovers, at_least: 7}
    """))
    res = pytester.runpytest_inprocess(*PLUGIN)
    res.assert_outcomes(errors=2)
    out = res.stdout.str()
    res.stdout.fnmatch_lines(["*invalid hypothesis file: *hyp_syntax.yaml line *: not valid YAML*"])
    res.stdout.fnmatch_lines(["*hyp_field.yaml, hypothesis 1 ('bad claim'), line 5, field claim: recovers: at_least must be*"])
    assert "Traceback" not in out


def test_decorator_forms():
    def f(model):
        return None
    assert ci.hypothesis(f) is f and f.__causalinterp_hypothesis__ == {"model": None}
    g = ci.hypothesis("gpt2")(lambda: None)
    assert g.__causalinterp_hypothesis__ == {"model": "gpt2"}
    assert [m.name for m in g.pytestmark] == ["causal"]
    with pytest.raises(TypeError):
        ci.hypothesis("gpt2", model="gpt2")


def _testbed_available(name):
    try:
        return name in ci.testbeds.available()
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(not _testbed_available("induction"), reason="the induction testbed is not built")
def test_shipped_induction_testbed(pytester):
    card = ci.testbeds.card("induction")
    layer, head = card["circuit_heads"][-1]
    pytester.makepyfile(test_tb=f'''
        import causalinterp as ci

        @ci.hypothesis(model="testbed:induction")
        def test_induction_head_is_sufficient(model):
            return ci.Hypothesis("induction head", ci.testbeds.induction_data(24, seed=1, tokenizer=model.tokenizer),
                                 ci.sites.heads([({layer}, {head})], positions="end"), ci.claims.has_effect(),
                                 intervention=ci.patch("noise"), n_resamples=999)
    ''')
    res = pytester.runpytest_inprocess(*PLUGIN)
    res.stdout.fnmatch_lines(["*causalinterp hypotheses*", "*induction head*"])
    res.assert_outcomes(passed=1)
