"""Data that cannot support a claim is refused; discovery/confirmation splits keep clusters whole."""
import pytest

from causalinterp.spec.checks import check_usable, deduplicate, duplicate_groups
from causalinterp.spec.data import ContrastSet, DataError


def _data(n=6, clusters=None, wrong=None):
    clean = [[1, 2, i % 3 + 3] for i in range(n)]
    corrupt = [[1, 2, 9] for _ in range(n)]
    return ContrastSet.from_tokens(clean, corrupt, answer=[5] * n, wrong=wrong or [6] * n, clusters=clusters)


def test_duplicated_prompts_are_named():
    d = _data(6)
    assert duplicate_groups(d) == [[0, 3], [1, 4], [2, 5]]
    with pytest.raises(DataError, match=r"3 duplicated prompt\(s\) in 3 group\(s\).*\[0, 3\]"):
        check_usable(d)
    dd = deduplicate(d)
    assert dd.n == 3 and not duplicate_groups(dd)
    check_usable(dd)


def test_answer_equal_to_wrong_is_refused():
    d = _data(3, wrong=[6, 5, 6])
    with pytest.raises(DataError, match="answer == wrong"):
        check_usable(d)
    check_usable(d, needs_wrong=False)


def test_split_by_cluster_keeps_templates_whole():
    n = 24
    d = ContrastSet.from_tokens([[1, i, 3] for i in range(n)], [[1, i, 4] for i in range(n)], answer=[5] * n,
                                wrong=[6] * n, clusters=[i % 6 for i in range(n)])
    a, b = d.split(0.5, seed=1)
    assert a.n + b.n == n and set(a.clusters).isdisjoint(b.clusters) and len(set(a.clusters)) == 3
    a2, _ = d.split(0.5, seed=1)
    assert a2 == a                                        # deterministic
    p, q = d.split(0.25, seed=0, by="prompt")
    assert p.n == 6 and q.n == 18
    with pytest.raises(ValueError):
        d.split(1.0)


def test_selected_sites_keep_their_prompts_through_a_hypothesis_and_its_file(tmp_path):
    """Sites an evaluation chose, put into a Hypothesis (directly or via ci.sites.explicit, or written to a file
    and read back), are flagged when tested on the prompts they were chosen on, and not on held-out prompts."""
    import causalinterp as ci
    model = ci.load_model("testbed:ioi")
    data = ci.testbeds.ioi_data(48, seed=3)
    discovery, confirmation = data.split(0.5, seed=0)
    scan = ci.scan(model, discovery, ci.sites.head_out(positions="end"), progress=False)
    chosen = ci.evaluate(scan, ci.claims.has_effect("increase"), n_resamples=999).top_sites(2)
    assert chosen.selected_on["prompts"]
    for sites in (chosen, ci.sites.explicit(chosen)):
        h = ci.Hypothesis(name="chosen heads matter", data=discovery, sites=sites,
                          claim=ci.claims.has_effect("increase"), joint=True, n_resamples=999)
        assert h.sites.selected_on == chosen.selected_on
        back = ci.Hypothesis.from_dict(h.to_dict())
        assert back.sites.selected_on == chosen.selected_on
        same = ci.run(back, model, progress=False)
        assert same.verdict == "inconclusive" and "selected-on-same-data" in same.evaluation.table["flag"][0]
    held = ci.run(ci.Hypothesis(name="chosen heads matter", data=confirmation, sites=chosen,
                                claim=ci.claims.has_effect("increase"), joint=True,
                                n_resamples=999), model, progress=False)
    assert held.verdict == "supported" and "selected-on-same-data" not in held.evaluation.table["flag"][0]
    from causalinterp.spec.sites import SiteError
    with pytest.raises(SiteError, match="selected_on"):
        ci.SiteSet.from_dict({"sites": [{"component": "mlp_out", "layer": 0}], "selected_on": {"rule": "top 2"}})
