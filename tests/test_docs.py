"""The documentation's promises that a test can hold: every public name has a docstring with an example, the
examples run, and the pages include (not copy) the verdict rules and the calibration tables."""
import doctest
import inspect
import os
from pathlib import Path

import pytest

import causalinterp as ci

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ci.__all__)
def test_public_name_has_a_docstring_with_an_example(name):
    doc = inspect.getdoc(getattr(ci, name)) or ""
    assert "Examples:" in doc and ">>>" in doc, (
        f"ci.{name} needs a docstring with an `Examples:` section of >>> lines (the API reference shows it)")


@pytest.mark.slow
def test_docstring_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for name in ci.__all__:
        for test in finder.find(getattr(ci, name), f"ci.{name}", globs={}):
            runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_pages_include_the_sources_they_document():
    statistics = (ROOT / "docs" / "statistics.md").read_text()
    assert '--8<-- "docs/verdicts.md"' in statistics
    assert '--8<-- "benchmarks/RESULTS.md:calibration"' in statistics
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert "<!-- --8<-- [start:calibration] -->" in results and "<!-- --8<-- [end:calibration] -->" in results
    for nb in (ROOT / "notebooks").glob("*.ipynb"):  # every notebook is a tutorial page
        assert (ROOT / "docs" / "tutorials" / nb.name).resolve() == nb.resolve(), nb.name
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs" / "howto").glob("*.md"):
        assert f"howto/{page.name}" in nav, f"{page.name} is not in mkdocs.yml's nav"
    assert os.path.isfile(ROOT / "docs" / "gen_api.py")
