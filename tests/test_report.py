"""Reports: HTML structure (one summary row and badge per result, every verdict and flag visible, plots
embedded, nothing external), escaping, Markdown content, JSON round trip, plot choice, atomic writes."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest

import causalinterp as ci
from causalinterp.report import html as report_html
from causalinterp.report import markdown as report_md
from causalinterp.report import plots, table
from causalinterp.result import Result, versions
from causalinterp.spec.sites import Site, SiteSet

VERDICTS = ("supported", "refuted", "null", "inconclusive")
FLAGS = ("zero-variance", "underpowered", "undefined", "unstable-gap")
N_RES = 999


# ----------------------------------------------------------------------------- synthetic results

def make_result(name, values, sites, base, target, claim, *, joint=False, random_values=None, description="",
                site_spec=None):
    """A Result built from per-prompt values without a model (evaluate() does the statistics)."""
    values = np.asarray(values, dtype=float)
    fx = ci.Effects(values=values, clean=np.asarray(target, float), corrupt=np.asarray(base, float),
                    sites=tuple(sites), base=np.asarray(base, float), target=np.asarray(target, float), joint=joint,
                    intervention=ci.patch("denoise"), metric=ci.metrics.logit_diff(), random_values=random_values)
    ev = ci.evaluate(fx, claim, n_resamples=N_RES, seed=0)
    spec = site_spec if site_spec is not None else SiteSet(explicit=tuple(sites))
    hyp = {"name": name, "description": description, "model": "synthetic",
           "data": {"task": "synthetic", "n": int(values.shape[0]), "seed": 0}, "sites": spec.to_dict(),
           "intervention": ci.patch("denoise").to_dict(), "metric": ci.metrics.logit_diff().to_dict(),
           "claim": claim.to_dict(), "alpha": 0.05, "joint": joint, "correction": "holm", "n_resamples": N_RES,
           "seed": 0}
    meta = {"model": "synthetic", "family": "none", "n_layers": 3, "n_heads": 4, "seconds": 0.01,
            "versions": versions(), "n_prompts": int(values.shape[0]), "data_name": "synthetic"}
    return Result(name=name, hypothesis=hyp, evaluation=ev, effects=fx, meta=meta)


def synthetic_results():
    rng = np.random.default_rng(0)
    out = []

    # A. head sweep, direction=increase: supported, refuted, null (exact and TOST) and inconclusive heads
    n = 40
    base = rng.normal(0, 1, n)
    target = base + 2.0
    sites = [Site("head_out", l, h, "end") for l in range(3) for h in range(4)]
    cols = []
    for s in sites:
        key = (s.layer, s.head)
        if key == (2, 1):
            d = 1.5 + rng.normal(0, 0.3, n)
        elif key == (1, 3):
            d = 0.8 + rng.normal(0, 0.3, n)
        elif key == (0, 2):
            d = -1.0 + rng.normal(0, 0.3, n)
        elif key == (0, 0):
            d = np.zeros(n)
        elif key in ((1, 0), (2, 3)):
            d = rng.normal(0, 0.03, n)
        else:
            d = rng.normal(0.1, 0.6, n)
        cols.append(base + d)
    out.append(make_result("name mover heads <L2.H1> & co", np.stack(cols, 1), sites, base, target,
                           ci.claims.has_effect("increase"), description="Head sweep at the final position.",
                           site_spec=ci.sites.head_out(positions=["end"])))

    # B. residual stream sweep, every site clearly moves the metric: supported
    n = 30
    base = rng.normal(0, 1, n)
    target = base + 3.0
    sites = [Site("resid_pre", l, None, p) for l in range(3) for p in range(5)]
    cols = [base + 3.0 * (0.3 + 0.6 * (s.position == 4) * s.layer / 2 + 0.1 * s.position) + rng.normal(0, 0.2, n)
            for s in sites]
    out.append(make_result("residual stream", np.stack(cols, 1), sites, base, target, ci.claims.has_effect(),
                           site_spec=ci.sites.resid_pre()))

    # C. MLPs do nothing (within the margin): null
    n = 40
    base = rng.normal(0, 1, n)
    target = base + 2.0
    sites = [Site("mlp_out", l, None, -1) for l in range(3)]
    noise = [rng.normal(0, 0.05, n) for _ in sites]
    cols = [base + d - d.mean() for d in noise]     # mean effect 0, well inside the +-0.2 margin
    out.append(make_result("mlps are irrelevant", np.stack(cols, 1), sites, base, target, ci.claims.has_effect()))

    # D. four prompts: underpowered -> inconclusive
    n = 4
    base = rng.normal(0, 1, n)
    target = base + 2.0
    out.append(make_result("tiny sample", (base + 1.2 + rng.normal(0, 0.2, n))[:, None],
                           [Site("attn_out", 1, None, "end")], base, target, ci.claims.recovers(0.5)))

    # E. clean-corrupt gap not reliably non-zero: inconclusive, unstable-gap
    n = 30
    base = rng.normal(0, 1, n)
    target = base + rng.normal(0.05, 1.0, n)
    out.append(make_result("noisy gap", (base + rng.normal(0.05, 0.5, n))[:, None],
                           [Site("resid_post", 0, None, "end")], base, target, ci.claims.recovers(0.5)))

    # F. clean == corrupt: relative margin undefined -> inconclusive, undefined
    n = 20
    base = rng.normal(0, 1, n)
    out.append(make_result("no gap at all", (base + rng.normal(0, 0.5, n))[:, None],
                           [Site("attn_out", 0, None, "end")], base, base.copy(), ci.claims.has_effect()))

    # G. a joint site set against random site sets of the same size: supported
    n = 30
    base = rng.normal(0, 1, n)
    target = base + 2.0
    joint_sites = [Site("head_out", 2, 1, "end"), Site("head_out", 1, 3, "end")]
    rv = base[:, None] + rng.normal(0.2, 0.4, (n, 99))
    out.append(make_result("circuit beats random", (base + 1.6 + rng.normal(0, 0.3, n))[:, None], joint_sites, base,
                           target, ci.claims.beats_random(99), joint=True, random_values=rv))
    return out


@pytest.fixture(scope="module")
def results():
    return synthetic_results()


@pytest.fixture(scope="module")
def real_results():
    """The engine's own output on a tiny random GPT-2: a head sweep and a residual-stream grid."""
    from conftest import build_hf, random_data
    m = ci.load_model(build_hf("gpt2"))
    data = random_data(n=12, T=5)
    hs = [ci.Hypothesis(name="heads", data=data, sites=ci.sites.head_out(positions=[-1]),
                        claim=ci.claims.has_effect(), n_resamples=N_RES),
          ci.Hypothesis(name="grid", data=data, sites=ci.sites.resid_pre(), claim=ci.claims.has_effect(),
                        n_resamples=N_RES)]
    return ci.run_all(hs, m, progress=False)


@pytest.fixture(scope="module")
def all_results(results, real_results):
    return results + real_results


@pytest.fixture(scope="module")
def report(all_results, tmp_path_factory):
    """The HTML report of every result, rendered once (plots are the slow part)."""
    path = tmp_path_factory.mktemp("report") / "report.html"
    doc = report_html.render(all_results, path, title="My <report>")
    return path, doc


# ----------------------------------------------------------------------------- HTML parsing

class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.summary_rows, self.badges, self.summary_badges = [], [], [], []
        self.flags, self.imgs, self.urls, self.tags = [], [], [], set()
        self._in = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        self.tags.add(tag)
        for k in ("src", "href", "action", "poster", "data"):
            if a.get(k):
                self.urls.append(a[k])
        if tag == "tr" and "summary-row" in cls:
            self.summary_rows.append(cls)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "span" and "badge" in cls:
            v = [c[len("badge-"):] for c in cls if c.startswith("badge-")]
            self.badges.append(v[0] if v else None)
            self._in = ("badge", v[0] if v else None)
        if tag == "span" and "flag" in cls:
            self._in = ("flag", None)
        if tag not in ("img", "br", "meta", "link", "input"):
            self.stack.append((tag, cls))

    def handle_endtag(self, tag):
        while self.stack:
            t, _ = self.stack.pop()
            if t == tag:
                break
        self._in = None

    def handle_data(self, data):
        if self._in and self._in[0] == "flag":
            self.flags.append(data.strip())
        if self._in and self._in[0] == "badge":
            self.summary_badges.append((self._in[1], data.strip(), any("summary-row" in c for _, c in self.stack)))


def parse(doc):
    p = _Collect()
    p.feed(doc)
    return p


def _summary_verdicts(doc):
    p = parse(doc)
    return [next(c[len("verdict-"):] for c in cls if c.startswith("verdict-")) for cls in p.summary_rows]


# ----------------------------------------------------------------------------- tests

def test_fixtures_cover_every_verdict_and_flag(results):
    assert {r.verdict for r in results} == set(VERDICTS)
    site_verdicts = {v for r in results for v in r.table["verdict"]}
    assert site_verdicts == set(VERDICTS)
    flags = {f for r in results for f in table.flag_counts(r.table)}
    assert flags == set(FLAGS)


def test_html_structure(all_results, report):
    rs = all_results
    path, doc = report
    assert path.read_text(encoding="utf-8") == doc
    assert doc.startswith("<!DOCTYPE html>") and "<title>My &lt;report&gt;</title>" in doc
    p = parse(doc)
    # one summary row per result, in order, each carrying its verdict, with a badge inside
    assert _summary_verdicts(doc) == [r.verdict for r in rs]
    in_summary = [(v, text) for v, text, summ in p.summary_badges if summ]
    assert [v for v, _ in in_summary] == [r.verdict for r in rs]
    for v, text in in_summary:
        assert v.upper() in text                      # a text label, not colour alone
    # every verdict appears as a badge, with a distinct colour
    assert set(VERDICTS) <= set(p.badges)
    colours = {table.VERDICT_STYLE[v]["color"] for v in VERDICTS}
    assert len(colours) == 4
    # null/inconclusive are not hidden: no collapsed summary rows, every reason shown
    for r in rs:
        for reason in r.reasons:
            assert report_html._e(reason) in doc
    # every flag in the tables appears as a flag chip
    assert set(FLAGS) <= set(p.flags)
    # images embedded, nothing external, no scripts
    assert p.imgs and all(src.startswith("data:image/png;base64,") for src in p.imgs)
    assert all(not re.match(r"^(https?:|//|ftp:|file:)", u, re.I) for u in p.urls), p.urls
    assert all(u.startswith(("#", "data:")) for u in p.urls)
    assert not {"script", "link", "iframe"} & p.tags
    assert "http://" not in doc and "https://" not in doc
    # per-hypothesis sections with reproduction details
    for r in rs:
        assert report_html._e(r.name) in doc
    for word in ("holm", "alpha", "resamples", "seed", "versions", "torch", "GPT2LMHeadModel", "12 prompts"):
        assert word in doc


def _figure_kinds(doc):
    """Per hypothesis section, the kinds of the plots embedded in it."""
    sections = re.split(r'<section class="hypothesis', doc)[1:]
    return [re.findall(r'<figure class="plot plot-([a-z_]+)"', sec) for sec in sections]


def test_plot_choice(all_results, report):
    kinds = dict(zip([r.name for r in all_results], _figure_kinds(report[1])))
    assert kinds["name mover heads <L2.H1> & co"] == ["layer_head", "forest"]
    assert kinds["heads"] == ["layer_head", "forest"]
    assert kinds["residual stream"] == ["layer_position", "forest"]
    assert kinds["grid"] == ["layer_position", "forest"]
    assert kinds["mlps are irrelevant"] == ["layer_position", "forest"]
    assert kinds["tiny sample"] == ["forest"]
    assert kinds["no gap at all"] == ["forest"]
    assert kinds["circuit beats random"] == ["forest", "random"]
    by = {r.name: r for r in all_results}
    # many sites: the forest plot shows the top k and says how many are omitted
    fig = plots.forest(by["residual stream"].table, k=5)
    assert fig[:8] == b"\x89PNG\r\n\x1a\n"
    caption = [f for f in plots.figures(by["mlps are irrelevant"], max_forest=2) if f.kind == "forest"][0].caption
    assert "2 sites with the largest |estimate| of 3; 1 more are omitted" in caption
    capped = plots.figures(by["mlps are irrelevant"], max_heatmaps=0)
    assert [f.kind for f in capped] == ["forest"] and "1 heatmap(s) not drawn" in capped[0].caption
    svg = plots.heatmap(by["heads"].table, "layer", "head", fmt_="svg")
    assert svg.lstrip().startswith("<svg") and "DOCTYPE" not in svg


def test_no_figure_leak(results):
    import matplotlib.pyplot as plt
    before = plt.get_fignums()
    plots.heatmap(results[0].table, "layer", "head")
    assert plt.get_fignums() == before


def test_big_scan_shows_top_rows_and_counts_the_rest(results):
    r = next(r for r in results if r.name == "residual stream")
    doc = report_html.render([r], max_rows=4)
    assert doc.count('class="site-row') == 4
    assert "Showing the first 4 of 15 sites; 11 more rows" in doc
    md = report_md.render([r], max_rows=4)
    assert "Showing the first 4 of 15 sites; 11 more rows" in md
    # significant rows first
    shown, left = table.top_rows(r.table, 4)
    assert left == 11 and list(shown["verdict"]) == ["supported"] * 4


def test_escapes_user_text(results, report):
    r = results[3]
    evil = Result(name='<script>alert("x")</script>', hypothesis={**r.hypothesis, "description": "<b>bold</b>"},
                  evaluation=r.evaluation, effects=r.effects, meta=r.meta)
    doc = report_html.render([evil])
    assert "<script>" not in doc and "<b>bold</b>" not in doc
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in doc
    assert "name mover heads &lt;L2.H1&gt; &amp; co" in report[1]


def test_markdown(all_results, tmp_path):
    rs = all_results
    md = report_md.render(rs, tmp_path / "r.md")
    assert (tmp_path / "r.md").read_text(encoding="utf-8") == md
    for r in rs:
        assert r.name in md
        assert f"## {rs.index(r) + 1}. {r.name} — " in md
    for v in VERDICTS:
        assert f"**{v.upper()}**" in md
    for f in FLAGS:
        assert f"`{f}`" in md
    rows = [line for line in md.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert len(rows) == len(rs)
    for row, r in zip(rows, rs):
        assert f"**{r.verdict.upper()}**" in row and r.reasons[0].replace("|", "\\|") in row
    assert "holm" in md and "resamples" in md and "versions" in md


def test_json_round_trip_gives_the_same_report(all_results, report):
    rs = all_results
    back = [Result.from_json(r.to_json()) for r in rs]
    assert [b.verdict for b in back] == [r.verdict for r in rs]
    assert report_md.render(back) == report_md.render(rs)
    # the full HTML (text, tables and plot bytes) of a head sweep and a joint beats_random result
    pick = [0, 6]
    doc = report_html.render([back[i] for i in pick])
    assert _summary_verdicts(doc) == [rs[i].verdict for i in pick]
    stamp = re.compile(r"generated [0-9: -]+UTC")
    assert stamp.sub("", doc) == stamp.sub("", report_html.render([rs[i] for i in pick]))


def test_result_methods_and_fragment(results, tmp_path):
    r = results[5]
    frag = r._repr_html_()
    assert frag.startswith('<div class="ci-report">') and "<html" not in frag and "<body" not in frag
    assert "badge-inconclusive" in frag and "undefined" in frag
    doc = r.to_html(tmp_path / "one.html")
    assert (tmp_path / "one.html").read_text(encoding="utf-8") == doc
    assert r.to_markdown().startswith("# causalinterp report")
    assert "No results." in report_html.render([]) and "No results." in report_md.render([])
    svg_doc = report_html.render([r], image_format="svg")
    assert "<svg" in svg_doc and "<img" not in svg_doc
