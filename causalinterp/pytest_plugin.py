"""pytest plugin: interpretability claims kept as a test suite that re-runs when model, data or code change.

Python hypothesis files (any file pytest collects, e.g. ``hypotheses/test_induction.py``)::

    import causalinterp as ci

    @ci.hypothesis(model="testbed:induction")
    def test_induction_head_is_sufficient(model):      # `model` is the loaded ci.Model
        return ci.Hypothesis(...)                      # the plugin runs it with ci.run

The function returns a `Hypothesis` (or a list of them; the item takes the least favourable verdict).
``model=`` is a hub id, a local path, ``"testbed:NAME"``, or a zero-argument callable returning a
`PreTrainedModel` or `ci.Model` (pass the same function object to share one load).  Models are loaded
once per session, keyed by name (or by the callable), and the unpatched clean/corrupt runs are shared
between hypotheses (`run_all`'s ``cache``).  A `model` fixture of your own (e.g. in conftest.py)
overrides the plugin's.

YAML/JSON hypothesis files named ``hyp_*.yaml``, ``*.hyp.yaml`` (also ``.yml``/``.json``) are collected
too; each hypothesis in a file is one test item.  Change the patterns with the ini option
``causal_files`` (e.g. ``causal_files = hyp_*.yaml test_*.yaml``).  An invalid file is a collection
error that names the file, the hypothesis and the field.

Outcomes
    supported      PASSED
    refuted        FAILED, with the reasons and the statistics table in the failure message
    null           passes, but reported as its own outcome ``NULL`` (letter ``N``)
    inconclusive   passes, but reported as its own outcome ``INCONCLUSIVE`` (letter ``I``)
    ``--causal-strict`` (or ini ``causal_strict = true``) fails null and inconclusive too.

Options: ``--causal-strict``; ``--causal-report DIR`` (index.html, report.md and results.json of the whole
session); ``--causal-model NAME`` (run every hypothesis on this model instead of the one it names, e.g. a
new checkpoint); ``--causal-track mlflow,wandb`` (log every hypothesis, see `causalinterp.tracking`).
The terminal summary lists every hypothesis with estimate, CI, p and verdict.
The decorator works without pytest installed (the CLI collects decorated functions too).
"""
from __future__ import annotations

import fnmatch
from pathlib import Path

try:
    import pytest
except ImportError:  # pragma: no cover - the decorator and ModelCache work without pytest
    pytest = None

from .session import ATTR, ModelCache, combine_verdicts, hypotheses_from, hypothesis  # noqa: F401 (public here)

__all__ = ["DEFAULT_FILE_PATTERNS", "ModelCache", "combine_verdicts", "hypothesis", "hypotheses_from"]

DEFAULT_FILE_PATTERNS = ("hyp_*.yaml", "hyp_*.yml", "hyp_*.json", "*.hyp.yaml", "*.hyp.yml", "*.hyp.json")


def _is_input_error(e: BaseException) -> bool:
    """Errors the library raises for bad input (their messages say what to fix): shown without a traceback."""
    return isinstance(e, ValueError) and type(e).__module__.startswith("causalinterp")


def _strict(config) -> bool:
    return bool(config.getoption("causal_strict") or config.getini("causal_strict"))


# ----------------------------------------------------------------------------- pytest integration

if pytest is not None:
    _SESSION = pytest.StashKey()
    _RESULTS = pytest.StashKey()

    class _Session(ModelCache):
        """Per-pytest-session state: models, cache of unpatched runs, results in run order."""

        def __init__(self):
            super().__init__()
            self.records: list = []  # (nodeid, Result)
            self.report_error: str | None = None
            self.report_paths: dict | None = None
            self.trackers: list | None = None  # made on first use from --causal-track
            self.family: list | None = None    # the session's results corrected as one family

    def _session(config) -> "_Session":
        return config.stash[_SESSION]

    def _trackers(config) -> list:
        sess = _session(config)
        if sess.trackers is None:
            from .tracking import trackers
            sess.trackers = trackers(config.getoption("causal_track") or config.getini("causal_track") or None)
        return sess.trackers

    def pytest_addoption(parser):
        group = parser.getgroup("causalinterp", "causalinterp hypothesis tests")
        group.addoption("--causal-strict", action="store_true", default=False,
                        help="fail hypotheses whose verdict is null or inconclusive (by default they pass but "
                             "are reported as NULL / INCONCLUSIVE; refuted always fails)")
        group.addoption("--causal-report", metavar="DIR", default=None,
                        help="write the session's report to DIR: index.html, report.md and results.json")
        group.addoption("--causal-correction", metavar="METHOD", default="holm",
                        choices=("holm", "bonferroni", "none"),
                        help="correction across the hypotheses of a test and of the session (default holm; 'none' "
                             "tests each at its own alpha and the summary says so)")
        group.addoption("--causal-model", metavar="NAME", default=None,
                        help="run every hypothesis on this model (hub id, local path or testbed:NAME) instead "
                             "of the model it names")
        group.addoption("--causal-track", metavar="KIND[,KIND]", default=None,
                        help="log every hypothesis to mlflow (MLFLOW_TRACKING_URI, else ./mlruns) and/or wandb "
                             "(offline unless WANDB_MODE=online): spec, seeds, versions, verdict, numbers, report")
        parser.addini("causal_track", default="", help="causalinterp: trackers to log to (as --causal-track)")
        parser.addini("causal_strict", type="bool", default=False,
                      help="causalinterp: fail null/inconclusive hypotheses (as --causal-strict)")
        parser.addini("causal_files", type="args", default=list(DEFAULT_FILE_PATTERNS),
                      help="causalinterp: glob patterns of YAML/JSON hypothesis files to collect "
                           f"(default: {' '.join(DEFAULT_FILE_PATTERNS)})")

    def pytest_configure(config):
        config.addinivalue_line("markers", "causal(model=None): a causalinterp hypothesis test (set by "
                                           "@ci.hypothesis and on YAML hypothesis items)")
        config.stash[_SESSION] = _Session()
        out = config.getoption("causal_report", None)
        if out and not hasattr(config, "workerinput"):  # checked before any test runs
            from .output import check_writable_dir
            try:
                check_writable_dir(out, "--causal-report")
            except OSError as e:
                raise pytest.UsageError(str(e)) from None

    # --- models ---------------------------------------------------------------------------------
    def _load_or_fail(config, spec, what: str):
        try:
            return _session(config).get(spec)
        except Exception as e:  # noqa: BLE001
            name = spec if isinstance(spec, str) else getattr(spec, "__name__", type(spec).__name__)
            msg = f"{what}: could not load model {name!r}: {type(e).__name__}: {' '.join(str(e).split())}"
        pytest.fail(msg, pytrace=False)  # outside the except block: no chained traceback in the report

    def _marked_model(item):
        override = item.config.getoption("causal_model")
        if override:
            return override
        mark = item.get_closest_marker("causal")
        return mark.kwargs.get("model") if mark is not None else None

    @pytest.fixture
    def model(request):
        """The `ci.Model` named by ``@ci.hypothesis(model=...)`` (or ``--causal-model``), loaded once per session."""
        spec = _marked_model(request.node)
        if spec is None:
            pytest.fail(f"{request.node.nodeid} asks for the `model` fixture but names no model: use "
                        "@ci.hypothesis(model='testbed:induction') (a hub id, local path, testbed:NAME or a "
                        "zero-argument callable) or run pytest with --causal-model NAME", pytrace=False)
        return _load_or_fail(request.config, spec, request.node.nodeid)

    # --- running and deciding -------------------------------------------------------------------
    def _run_item(item, hypotheses, model) -> None:
        """Run the hypotheses, keep the results for the summary/report, then pass, fail or mark the item."""
        from .family import correct_across
        from .runner import run_all
        sess = _session(item.config)
        results = []
        for h in hypotheses:
            m = model
            if m is None:
                if h.model is None:
                    pytest.fail(f"hypothesis {h.name!r} names no model: set model: in the hypothesis, use "
                                "@ci.hypothesis(model=...), or run pytest with --causal-model NAME", pytrace=False)
                m = _load_or_fail(item.config, h.model, f"hypothesis {h.name!r}")
            error = None
            try:
                r = run_all([h], m, progress=False, cache=sess.cache, models=sess.models,
                            track=_trackers(item.config), correction="none")[0]
            except Exception as e:  # noqa: BLE001
                if not _is_input_error(e):
                    raise
                error = f"hypothesis {h.name!r} could not run: {type(e).__name__}: {e}"
            if error is not None:
                pytest.fail(error, pytrace=False)
            results.append(r)
        # the hypotheses of one test are one family (`causalinterp.family`)
        results = correct_across(results, item.config.getoption("causal_correction"))
        sess.records.extend((item.nodeid, r) for r in results)
        item.stash[_RESULTS] = results
        verdict = combine_verdicts(r.verdict for r in results)
        item.user_properties.append(("causal_verdict", verdict))
        strict = _strict(item.config)
        if verdict == "refuted" or (strict and verdict != "supported"):
            from .report.text import failure_message
            note = "" if verdict == "refuted" else " (fails under --causal-strict)"
            pytest.fail("\n\n".join(failure_message(r, note) for r in results if r.verdict != "supported"),
                        pytrace=False)

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(pyfuncitem):
        func = pyfuncitem.obj
        if getattr(func, ATTR, None) is None:
            return None
        argnames = pyfuncitem._fixtureinfo.argnames
        testargs = {a: pyfuncitem.funcargs[a] for a in argnames}
        value = func(**testargs)
        try:
            hs, error = hypotheses_from(value, f"{pyfuncitem.name}()"), None
        except ValueError as e:
            error = str(e)
        if error is not None:
            pytest.fail(error, pytrace=False)
        model = None
        if "model" in testargs:
            model = _load_or_fail(pyfuncitem.config, testargs["model"], pyfuncitem.nodeid)
        else:
            spec = _marked_model(pyfuncitem)
            if spec is not None:
                model = _load_or_fail(pyfuncitem.config, spec, pyfuncitem.nodeid)
        _run_item(pyfuncitem, hs, model)
        return True

    # --- YAML / JSON hypothesis files -----------------------------------------------------------
    def pytest_collect_file(file_path, parent):
        patterns = parent.config.getini("causal_files")
        if any(fnmatch.fnmatch(file_path.name, p) for p in patterns):
            return HypothesisFile.from_parent(parent, path=file_path)
        return None

    class HypothesisFile(pytest.File):
        """A YAML/JSON file of hypotheses; each is one `HypothesisItem`."""

        def collect(self):
            from .spec.hypothesis import HypothesisError, load_hypotheses
            try:
                hs = load_hypotheses(self.path)
            except HypothesisError as e:
                raise self.CollectError(f"invalid hypothesis file: {e}") from None
            seen: dict = {}
            for h in hs:
                seen[h.name] = seen.get(h.name, 0) + 1
                name = h.name if seen[h.name] == 1 else f"{h.name}[{seen[h.name]}]"
                item = HypothesisItem.from_parent(self, name=name, hypothesis=h)
                item.add_marker(pytest.mark.causal(model=h.model))
                yield item

    class HypothesisItem(pytest.Item):
        """One hypothesis of a YAML/JSON file."""

        def __init__(self, *, hypothesis, **kw):
            super().__init__(**kw)
            self.hypothesis = hypothesis

        def runtest(self):
            spec = self.config.getoption("causal_model") or self.hypothesis.model
            model = None if spec is None else _load_or_fail(self.config, spec, f"hypothesis {self.name!r}")
            _run_item(self, [self.hypothesis], model)

        def reportinfo(self):
            return self.path, None, f"hypothesis: {self.name}"

    # --- reporting ------------------------------------------------------------------------------
    def pytest_report_teststatus(report, config):
        if report.when != "call" or not report.passed:
            return None
        verdict = dict(report.user_properties).get("causal_verdict")
        if verdict == "null":
            return "null", "N", ("NULL", {"yellow": True})
        if verdict == "inconclusive":
            return "inconclusive", "I", ("INCONCLUSIVE", {"yellow": True})
        return None

    def pytest_sessionfinish(session, exitstatus):
        config = session.config
        out = config.getoption("causal_report")
        sess = _session(config)
        if sess.records and not hasattr(config, "workerinput"):
            from .family import correct_across
            sess.family = correct_across([r for _, r in sess.records], config.getoption("causal_correction"))
        if not out or not sess.records or hasattr(config, "workerinput"):
            return
        from .session import rescue_results, write_reports
        results = sess.family or [r for _, r in sess.records]
        title = "causalinterp hypotheses (pytest session)"
        try:
            sess.report_paths = write_reports(results, Path(out), title=title)
        except Exception as e:  # noqa: BLE001 - reported, and the session fails (the report was asked for)
            sess.report_error = f"{type(e).__name__}: {e}" + rescue_results(results, title)
            if session.exitstatus == 0:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(terminalreporter, exitstatus, config):
        from .report.text import verdict_lines
        sess = _session(config)
        tr = terminalreporter
        if not sess.records:
            return
        tr.section("causalinterp hypotheses")
        colors = {"supported": {"green": True}, "refuted": {"red": True}, "null": {"yellow": True},
                  "inconclusive": {"yellow": True}}
        results = [r for _, r in sess.records]
        header, rows, footer = verdict_lines(results)
        tr.write_line(header)
        for (nodeid, r), line in zip(sess.records, rows):
            tr.write_line(line, **colors.get(r.verdict, {}))
        tr.write_line(footer)
        corr = config.getoption("causal_correction")
        if len(results) > 1:
            if corr == "none":
                tr.write_line(f"session family: {len(results)} hypotheses, NOT corrected across them "
                              "(--causal-correction none)")
            elif sess.family:
                changed = [(r.name, r.verdict, f.verdict) for r, f in zip(results, sess.family) if r.verdict != f.verdict]
                tr.write_line(f"session family: {len(results)} hypotheses, {corr} across them: "
                              f"{sum(f.verdict == 'supported' for f in sess.family)} supported"
                              + ("" if not changed else "; changed by the session-wide correction: " + ", ".join(
                                  f"{n}: {a} -> {b}" for n, a, b in changed)))
        if sess.report_paths:
            tr.write_line(f"causalinterp report: {sess.report_paths['html']}")
        elif sess.report_error:
            tr.write_line(f"causalinterp report not written: {sess.report_error}", red=True)
