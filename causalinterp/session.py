"""What a CLI run and a pytest session share: the `@ci.hypothesis` decorator, what a hypothesis function may
return, the cache of loaded models, and writing the session's report files.

Shared by `causalinterp.cli` and `causalinterp.pytest_plugin` (neither imports the other).  Works without
pytest installed; with pytest, the decorator also marks the function ``causal`` for the plugin.
"""
from __future__ import annotations

import json
from pathlib import Path

try:
    import pytest
except ImportError:  # pragma: no cover - the decorator and ModelCache work without pytest
    pytest = None

__all__ = ["ATTR", "SESSION_SCHEMA", "ModelCache", "combine_verdicts", "hypothesis", "hypotheses_from",
           "session_json", "write_reports", "rescue_results"]

SESSION_SCHEMA = "causalinterp.session/1"

ATTR = "__causalinterp_hypothesis__"  # set on decorated functions: {"model": ...}
_SEVERITY = {"supported": 0, "null": 1, "inconclusive": 2, "refuted": 3}


def hypothesis(fn=None, *, model=None):
    """Mark a function that returns a `ci.Hypothesis` (or a list) as a hypothesis test.

    ``@ci.hypothesis(model="testbed:induction")``, ``@ci.hypothesis("gpt2")`` or bare ``@ci.hypothesis``
    (the hypothesis then names its model, or ``--causal-model`` / ``causalinterp run --model`` gives one).
    The function may take a ``model`` argument: the loaded `ci.Model` (e.g. for its tokenizer).
    """
    if isinstance(fn, str):  # @ci.hypothesis("testbed:induction")
        if model is not None:
            raise TypeError("ci.hypothesis: give the model once, either positionally or as model=")
        fn, model = None, fn

    def decorate(f):
        if not callable(f):
            raise TypeError(f"ci.hypothesis decorates a function returning a ci.Hypothesis, got {type(f).__name__}")
        setattr(f, ATTR, {"model": model})
        if pytest is not None:  # like @pytest.mark.causal(model=...), which would skip lambdas
            f.pytestmark = [*getattr(f, "pytestmark", []), pytest.mark.causal(model=model).mark]
        return f

    return decorate if fn is None else decorate(fn)


def hypotheses_from(value, where: str) -> list:
    """The `Hypothesis` objects a hypothesis function returned (one, or a list/tuple of them)."""
    from .spec.hypothesis import Hypothesis, HypothesisError
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(h, Hypothesis) for h in items):
        got = type(value).__name__ if not isinstance(value, (list, tuple)) else \
            f"a {type(value).__name__} of {sorted({type(h).__name__ for h in items}) or 'nothing'}"
        raise HypothesisError(f"{where} must return a ci.Hypothesis (or a list of them), got {got}; "
                              "did you forget the `return`?")
    return items


def combine_verdicts(verdicts) -> str:
    """The least favourable verdict: refuted > inconclusive > null > supported."""
    return max(verdicts, key=lambda v: _SEVERITY.get(v, 2))


class ModelCache:
    """Models loaded once and shared: keyed by name (hub id, path, ``testbed:NAME``) or by the callable.

    `models` is the dict `run_all(models=...)` uses, so hypotheses that name their model share it too;
    `cache` is `run_all`'s cache of unpatched clean/corrupt runs; `loads` counts actual loads.
    """

    def __init__(self):
        self.models: dict = {}
        self.cache: dict = {}
        self.failed: dict = {}
        self.loads = 0

    @staticmethod
    def key(spec):
        if isinstance(spec, str):
            return spec
        try:
            hash(spec)
            return ("object", spec)
        except TypeError:
            return ("id", id(spec))

    def get(self, spec):
        """A `ci.Model` for `spec` (name, callable, PreTrainedModel or Model), loading it at most once."""
        from .models.load import Model, load_model
        if isinstance(spec, Model):
            return spec
        k = self.key(spec)
        if k in self.models:
            return self.models[k]
        if k in self.failed:
            raise self.failed[k]
        try:
            self.loads += 1
            if isinstance(spec, str):
                m = load_model(spec)
            elif callable(spec) and not hasattr(spec, "config"):
                obj = spec()
                m = obj if isinstance(obj, Model) else load_model(obj)
                if not m.name:
                    m.name = getattr(spec, "__name__", "") or type(obj).__name__
            else:
                m = load_model(spec)
        except Exception as e:  # noqa: BLE001 - remembered so the next test fails fast with the same message
            self.failed[k] = e
            raise
        self.models[k] = m
        return m


# ----------------------------------------------------------------------------- the session's report files

def session_json(results, title: str) -> str:
    """results.json of a session: every result, in run order."""
    return json.dumps({"schema": SESSION_SCHEMA, "title": title, "results": [r.to_dict() for r in results]},
                      indent=1)


def write_reports(results, out, title: str = "causalinterp report") -> dict:
    """DIR/results.json, DIR/index.html and DIR/report.md, written as a set: all three are rendered first,
    then replaced together, so a failure leaves the old files as they were.  Returns their paths."""
    from .output import check_writable_dir, write_set
    from .report import html, markdown
    out = check_writable_dir(out)
    paths = {"json": out / "results.json", "html": out / "index.html", "markdown": out / "report.md"}
    write_set({paths["json"]: session_json(results, title), paths["html"]: html.render(results, None, title),
               paths["markdown"]: markdown.render(results, None, title)})
    return paths


def rescue_results(results, title: str) -> str:
    """Save results.json in a fresh directory after the report could not be written; a sentence saying where."""
    from .output import rescue_dir, write_set
    try:
        saved = rescue_dir() / "results.json"
        write_set({saved: session_json(results, title)})
    except OSError as e:
        return f"; the results could not be saved elsewhere either ({e})"
    return f"; the results are saved in {saved} (rebuild the report: causalinterp report {saved} --out DIR)"
