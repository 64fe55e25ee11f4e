"""Example hypotheses about the shipped testbeds, installed with the package.

`HYPOTHESES` is the folder (``hyp_*.yaml`` files and ``test_testbeds.py``) that ``causalinterp demo`` runs.
In a source checkout ``examples/hypotheses`` is a link to it, so there is one copy::

    from causalinterp.examples import HYPOTHESES
    print(HYPOTHESES)                                   # .../causalinterp/examples/hypotheses
    # causalinterp run "$(python -c 'from causalinterp.examples import HYPOTHESES; print(HYPOTHESES)')"
"""
from pathlib import Path

HYPOTHESES = Path(__file__).resolve().parent / "hypotheses"

__all__ = ["HYPOTHESES"]
