"""The installed package is complete: one version, example hypotheses as package data, a changelog.

The wheel itself is built, installed into a fresh venv and used from another folder by .ci/wheel_test.sh
(too slow for the default suite); these tests catch the usual ways it breaks before that runs.
"""
import fnmatch
import re
import tomllib
from pathlib import Path

import causalinterp as ci
from causalinterp._version import __version__
from causalinterp.cli import EXAMPLES, main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_one_version_source(capsys):
    assert ci.__version__ == __version__ and re.fullmatch(r"\d+\.\d+\.\d+(\S*)", __version__)
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "causalinterp._version.__version__"}
    try:
        main(["--version"])
    except SystemExit as e:  # argparse's version action exits 0
        assert e.code in (0, None)
    assert capsys.readouterr().out.strip() == f"causalinterp {__version__}"


def test_example_hypotheses_are_package_data():
    pkg = Path(ci.__file__).resolve().parent
    assert EXAMPLES.is_dir() and pkg in EXAMPLES.parents
    files = [p.relative_to(EXAMPLES.parent).as_posix() for p in EXAMPLES.iterdir()
             if p.is_file() and not p.name.endswith(".pyc")]
    assert any(f.endswith(".yaml") for f in files) and any(f.endswith(".py") for f in files)
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["causalinterp.examples"]
    missing = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert not missing, f"not matched by package-data, so not in the wheel: {missing}"


def test_checkout_examples_folder_is_the_package_copy():
    link = ROOT / "examples" / "hypotheses"
    assert link.resolve() == EXAMPLES, "examples/hypotheses must point at causalinterp/examples/hypotheses (one copy)"


def test_changelog_has_this_version_and_unreleased():
    text = (ROOT / "CHANGELOG.md").read_text()
    heads = re.findall(r"^## \[?([^\]\s]+)", text, flags=re.M)
    assert heads[0] == "Unreleased" and __version__ in heads, heads
