"""A family across hypotheses (run_all / pytest plugin): Holm by default, 'none' stated."""
import numpy as np
import pytest

from causalinterp.engine.effects import Effects
from causalinterp.evaluate import evaluate
from causalinterp.family import correct_across, decisive_p
from causalinterp.result import Result
from causalinterp.spec import claims
from causalinterp.spec.sites import Site


def _result(name, shift, seed, n=40):
    rng = np.random.default_rng(seed)
    corrupt = rng.normal(0, 1, n)
    clean = corrupt + 3 + rng.normal(0, 0.5, n)
    vals = corrupt + shift + rng.normal(0, 1, n)
    eff = Effects(values=vals[:, None], clean=clean, corrupt=corrupt, sites=(Site("head_out", 0, 0, "end"),),
                  base=corrupt, target=clean)
    ev = evaluate(eff, claims.has_effect(), n_resamples=9999)
    return Result(name=name, hypothesis={}, evaluation=ev, effects=eff, meta={})


def _borderline(k):
    """A hypothesis whose decisive p lies between alpha/k and alpha."""
    for seed in range(200):
        r = _result("b", 0.38, seed)
        if 0.05 / k < decisive_p(r.evaluation) < 0.05 and r.verdict == "supported":
            return r
    pytest.skip("no borderline dataset found")


def test_holm_across_hypotheses_removes_a_borderline_support():
    b = _borderline(3)
    others = [_result(f"null{i}", 0.0, 100 + i) for i in range(2)]
    out = correct_across([b] + others, "holm")
    assert out[0].verdict != "supported"
    assert out[0].meta["hypothesis_family"]["correction"] == "holm" and out[0].meta["hypothesis_family"]["hypotheses"] == 3
    assert "holm across hypotheses" in out[0].reasons[-1]


def test_strong_effects_survive_and_none_is_stated():
    strong = [_result(f"s{i}", 2.0, i) for i in range(3)]
    assert [r.verdict for r in correct_across(strong, "holm")] == ["supported"] * 3
    out = correct_across(strong, "none")
    assert all("NOT corrected" in r.reasons[-1] for r in out)


def test_unknown_family_correction_is_refused():
    with pytest.raises(ValueError, match="across hypotheses"):
        correct_across([], "fdr_bh")


def test_twelve_null_hypotheses_rarely_give_a_support():
    # family-wise: with holm across 12 true-null hypotheses, P(any supported) <= alpha (small simulation)
    hits = 0
    reps = 30
    for rep in range(reps):
        rs = [_result(f"h{i}", 0.0, 1000 * rep + i, n=20) for i in range(12)]
        hits += any(r.verdict == "supported" for r in correct_across(rs, "holm"))
    assert hits <= 4
