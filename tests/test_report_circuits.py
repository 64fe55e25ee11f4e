"""The report shows a faithfulness curve with its CI band and a stability bar per site."""
import numpy as np

import causalinterp as ci
from causalinterp.circuits import curve_from_values
from causalinterp.report import circuits as rc
from causalinterp.spec.sites import Site

from conftest import random_data


def _curve():
    rng = np.random.default_rng(0)
    empty = rng.normal(0, 1, 30)
    full = empty + 2
    values = np.column_stack([empty + 0.4, empty + 1.6, full])
    return curve_from_values(values, empty, full, [0.1, 0.5, 1.0], [1, 5, 10], n_resamples=200)


def _stability():
    data = random_data(n=8, T=4)
    first = tuple(data.clean[0])
    return ci.stability(lambda d: [Site("head_out", 0, 1)] + ([Site("mlp_out", 1)] if first in
                                                                  set(map(tuple, d.clean)) else []),
                        data, n_resamples=6)


def test_html_report_has_the_curve_and_the_stability_bars(tmp_path):
    curve, st = _curve(), _stability()
    html = ci.report.render_html([], tmp_path / "r.html", extras=[curve, st])
    assert 'plot-faithfulness_curve' in html and 'plot-stability' in html
    assert f"CPR (area under the curve, higher is better) {curve.cpr[0]:.3f}" in html
    assert "mean pairwise Jaccard" in html and (tmp_path / "r.html").read_text() == html
    svg = rc.faithfulness_figure(curve, fmt="svg")
    assert svg.mime == "image/svg+xml" and "<svg" in svg.data


def test_markdown_sections():
    curve, st = _curve(), _stability()
    md = rc.section_markdown(curve)
    assert "| 50% | 5 |" in md and "CPR" in md
    md = rc.section_markdown(st)
    assert "head_out L0.H1 @all | 1.00 | yes" in md


def test_an_edge_curve_says_it_counts_edges():
    values = np.array([[0.5, 1.0], [0.4, 1.1], [0.6, 0.9]])
    curve = curve_from_values(values, np.zeros(3), np.ones(3), [0.5, 1.0], [55, 110], n_resamples=50,
                              meta={"level": "edges", "universe_size": 110, "ablation": "mean"})
    md = rc.section_markdown(curve)
    assert md.startswith("## Faithfulness curve (edges)")
    assert "of 110 edges" in rc.faithfulness_figure(curve, fmt="svg").caption
