"""Claims and verdicts on constructed effects where the truth is known."""
import json

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from causalinterp.engine.effects import Effects
from causalinterp.evaluate import Evaluation, evaluate
from causalinterp.spec import claims
from causalinterp.spec.sites import Site
from causalinterp import verdict as V


def heads(m):
    return tuple(Site("head_out", l, h, "end") for l in range(m // 4 + 1) for h in range(4))[:m]


def denoise(values, clean, corrupt, **kw):
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    return Effects(values=values, clean=clean, corrupt=corrupt, sites=heads(values.shape[1]), base=corrupt,
                   target=clean, **kw)


def baselines(n=40, seed=0, gap=3.0):
    rng = np.random.default_rng(seed)
    corrupt = rng.normal(0, 1, n)
    clean = corrupt + gap + rng.normal(0, 0.5, n)
    return rng, clean, corrupt


# ----------------------------------------------------------------------------- the three truths

@pytest.fixture(scope="module")
def truths():
    rng, clean, corrupt = baselines()
    n = clean.size
    large = corrupt + 0.9 * (clean - corrupt) + rng.normal(0, 0.2, n)
    zero_small = corrupt + rng.normal(0, 0.01, n)
    zero_huge = corrupt + rng.normal(0, 10, n)
    return clean, corrupt, {"large": large, "zero_small": zero_small, "zero_huge": zero_huge}


@pytest.mark.parametrize("which, expected", [("large", "supported"), ("zero_small", "null"),
                                             ("zero_huge", "inconclusive")])
def test_has_effect_three_truths(truths, which, expected):
    clean, corrupt, v = truths
    res = evaluate(denoise(v[which], clean, corrupt), claims.has_effect(), n_resamples=1999)
    assert res.verdict == expected
    if expected == "inconclusive":
        assert "minimum detectable effect" in res.reasons[0]
    if expected == "null":
        assert "within" in res.reasons[0]


@pytest.mark.parametrize("which, expected", [("large", "supported"), ("zero_small", "refuted"),
                                             ("zero_huge", "inconclusive")])
def test_recovers_three_truths(truths, which, expected):
    clean, corrupt, v = truths
    res = evaluate(denoise(v[which], clean, corrupt), claims.recovers(0.5), n_resamples=1999)
    assert res.verdict == expected
    assert res.estimate == pytest.approx((v[which].mean() - corrupt.mean()) / (clean.mean() - corrupt.mean()))
    assert res.ci_low <= res.estimate <= res.ci_high
    if expected == "inconclusive":
        assert "straddles 0.5" in res.reasons[0] and res.reasons[0].startswith("95% CI [")


@pytest.mark.parametrize("which, expected", [("large", "refuted"), ("zero_small", "supported"),
                                             ("zero_huge", "inconclusive")])
def test_no_effect_three_truths(truths, which, expected):
    clean, corrupt, v = truths
    assert evaluate(denoise(v[which], clean, corrupt), claims.no_effect(0.1), n_resamples=1999).verdict == expected


def test_null_and_inconclusive_are_told_apart_in_the_table(truths):
    clean, corrupt, v = truths
    res = evaluate(denoise(np.column_stack([v["zero_small"], v["zero_huge"]]), clean, corrupt),
                   claims.has_effect(), n_resamples=1999)
    assert list(res.table["verdict"]) == ["null", "inconclusive"]
    assert "equivalence" in res.table["reason"][0] and "minimum detectable effect" in res.table["reason"][1]


def test_directional_claims(truths):
    clean, corrupt, v = truths
    eff = denoise(v["large"], clean, corrupt)
    assert evaluate(eff, claims.has_effect("increase"), n_resamples=999).verdict == "supported"
    res = evaluate(eff, claims.has_effect("decrease"), n_resamples=999)
    assert res.verdict == "refuted" and "against the claimed decrease" in res.reasons[0]


# ----------------------------------------------------------------------------- zero variance

def test_patched_equals_corrupt_is_an_exact_refutation():
    _, clean, corrupt = baselines(n=12)
    res = evaluate(denoise(corrupt.copy(), clean, corrupt), claims.recovers(0.5))
    assert res.verdict == "refuted"
    assert res.reasons[0].startswith("patched equals corrupt on every prompt")
    assert res.estimate == 0.0 and res.ci == (0.0, 0.0)
    assert res.table["flag"][0] == "zero-variance"
    eff = denoise(corrupt.copy(), clean, corrupt)
    assert evaluate(eff, claims.has_effect()).verdict == "null"
    assert evaluate(eff, claims.no_effect(0.1)).verdict == "supported"


def test_patched_equals_clean_is_an_exact_full_recovery():
    _, clean, corrupt = baselines(n=12)
    res = evaluate(denoise(clean.copy(), clean, corrupt), claims.recovers(1.0))
    assert res.verdict == "supported" and "patched equals clean on every prompt" in res.reasons[0]
    assert res.ci == (1.0, 1.0)


def test_constant_shift_is_known_exactly():
    _, clean, corrupt = baselines(n=6)
    eff = denoise(corrupt + 0.3, clean, corrupt)        # every prompt moved by the same amount
    res = evaluate(eff, claims.has_effect("increase"))
    assert res.verdict == "supported" and res.table["flag"][0] == "zero-variance"
    assert res.ci == pytest.approx((0.3, 0.3))
    assert evaluate(eff, claims.has_effect("decrease")).verdict == "refuted"
    assert evaluate(eff, claims.no_effect(0.5, relative=False)).verdict == "supported"
    assert evaluate(eff, claims.no_effect(0.2, relative=False)).verdict == "refuted"
    assert not res.table[["estimate", "ci_low", "ci_high", "p", "p_adj"]].isna().any().any()


def test_noising_names_the_runs():
    # noising: clean run patched with corrupt activations; base = clean, target = corrupt
    _, clean, corrupt = baselines(n=12)
    eff = Effects(values=clean.copy()[:, None], clean=clean, corrupt=corrupt, sites=heads(1), base=clean,
                  target=corrupt)
    res = evaluate(eff, claims.recovers(0.5))
    assert res.verdict == "refuted" and res.reasons[0].startswith("patched equals clean on every prompt")


# ----------------------------------------------------------------------------- undefined / underpowered

def test_clean_equals_corrupt_recovery_undefined():
    rng, clean, corrupt = baselines(n=20)
    res = evaluate(denoise(corrupt + rng.normal(0, 1, 20), corrupt.copy(), corrupt), claims.recovers(0.5))
    assert res.verdict == "inconclusive"
    assert "do not differ" in res.reasons[0] and "recovery undefined" in res.reasons[0]
    assert res.table["flag"][0] == "undefined"
    res = evaluate(denoise(corrupt + 1, corrupt.copy(), corrupt), claims.no_effect(0.1))
    assert res.verdict == "inconclusive" and "relative=False" in res.reasons[0]
    assert evaluate(denoise(corrupt + 1, corrupt.copy(), corrupt),
                    claims.no_effect(0.1, relative=False)).verdict == "refuted"


def test_unreliable_gap_is_inconclusive():
    rng = np.random.default_rng(3)
    corrupt = rng.normal(0, 1, 30)
    clean = corrupt + rng.normal(0.05, 1, 30)     # the gap is mostly noise
    res = evaluate(denoise(corrupt + 0.5 * (clean - corrupt) + rng.normal(0, 0.3, 30), clean, corrupt),
                   claims.recovers(0.5), n_resamples=999)
    assert res.verdict == "inconclusive" and res.table["flag"][0] == "unstable-gap"
    assert "not reliably non-zero" in res.reasons[0]


def test_exact_recovery_at_the_threshold_meets_it():
    _, clean, corrupt = baselines(n=10)
    res = evaluate(denoise(corrupt + 0.5 * (clean - corrupt), clean, corrupt), claims.recovers(0.5))
    assert res.verdict == "supported" and res.table["flag"][0] == "zero-variance"


def test_too_few_prompts_for_the_corrected_alpha():
    _, clean, corrupt = baselines(n=8)
    big = corrupt[:, None] + (clean - corrupt)[:, None] * np.linspace(0.8, 1.0, 10)
    res = evaluate(denoise(big, clean, corrupt), claims.has_effect(), correction="holm")
    assert res.verdict == "inconclusive"
    assert set(res.table["flag"]) == {"underpowered"}
    assert any("n=8: smallest attainable p 0.0078 > alpha/m = 0.05/10" in r for r in res.reasons)
    # one site alone is testable at alpha = 0.05 with n=8 (2/256 < 0.05)
    assert evaluate(denoise(big[:, 0], clean, corrupt), claims.has_effect()).verdict == "supported"
    # with BH the threshold is alpha and the same scan is decidable
    assert evaluate(denoise(big, clean, corrupt), claims.has_effect(), correction="fdr_bh").verdict == "supported"


def test_monte_carlo_resolution_reason_suggests_resamples():
    rng, clean, corrupt = baselines(n=30)
    vals = corrupt[:, None] + (clean - corrupt)[:, None] + rng.normal(0, 0.1, (30, 100))
    res = evaluate(denoise(vals, clean, corrupt), claims.has_effect(), n_resamples=999)
    assert res.verdict == "inconclusive"
    assert any("n_resamples >=" in r for r in res.reasons)


# ----------------------------------------------------------------------------- scans

def test_scan_is_one_family_with_statsmodels_adjustment():
    rng, clean, corrupt = baselines(n=50, seed=4)
    m = 20
    vals = corrupt[:, None] + rng.normal(0, 1, (50, m))
    vals[:, :5] += 1.5
    res = evaluate(denoise(vals, clean, corrupt), claims.has_effect(), n_resamples=4999)
    t = res.table
    assert len(t) == m and list(t.columns[:6]) == ["site", "component", "layer", "head", "position", "n"]
    for col in ("estimate", "ci_low", "ci_high", "p", "p_adj", "effect_size", "verdict", "flag", "reason"):
        assert col in t.columns
    np.testing.assert_allclose(t["p_adj"], multipletests(t["p"], method="holm")[1])
    assert set(t["verdict"][:5]) == {"supported"}
    assert (t["verdict"][5:] != "supported").all()
    assert res.verdict == "inconclusive" and res.reasons[0] == "5 of 20 sites supported"
    assert t["site"][0] == heads(m)[0].label and t["head"][1] == 1
    bh = evaluate(denoise(vals, clean, corrupt), claims.has_effect(), correction="fdr_bh", n_resamples=4999)
    np.testing.assert_allclose(bh.table["p_adj"], multipletests(bh.table["p"], method="fdr_bh")[1])


def test_overall_rules():
    d = [V.Decision(v, "", "r") for v in ("supported", "supported")]
    assert V.combine(d, ["a", "b"], "holm")[0] == "supported"
    d = [V.Decision(v, "", "r") for v in ("supported", "refuted", "null")]
    assert V.combine(d, ["a", "b", "c"], "holm")[0] == "refuted"
    d = [V.Decision(v, "", "r") for v in ("null", "null")]
    assert V.combine(d, ["a", "b"], "holm")[0] == "null"
    d = [V.Decision(v, "", "r") for v in ("null", "supported")]
    assert V.combine(d, ["a", "b"], "holm")[0] == "inconclusive"


def test_deterministic_given_seed(truths):
    clean, corrupt, v = truths
    eff = denoise(np.column_stack(list(v.values())), clean, corrupt)
    a = evaluate(eff, claims.recovers(0.5), n_resamples=999, seed=3)
    b = evaluate(eff, claims.recovers(0.5), n_resamples=999, seed=3)
    pd.testing.assert_frame_equal(a.table, b.table)
    c = evaluate(eff, claims.recovers(0.5), n_resamples=999, seed=4)
    assert not np.array_equal(a.table["ci_low"], c.table["ci_low"])
    json.dumps(a.to_dict())     # JSON-ready


def test_clustered_effects_use_clusters():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(6), 6)
    corrupt = rng.normal(0, 1, 36)
    clean = corrupt + 3
    vals = corrupt + 0.3 + rng.normal(0, 1, 6)[labels] + rng.normal(0, 0.05, 36)
    plain = evaluate(denoise(vals, clean, corrupt), claims.has_effect(), n_resamples=999)
    clus = evaluate(denoise(vals, clean, corrupt, clusters=labels), claims.has_effect(), n_resamples=999)
    assert clus.n_clusters == 6
    assert (clus.ci_high - clus.ci_low) > 2 * (plain.ci_high - plain.ci_low)
    assert clus.table["p"][0] >= 2 / 2 ** 6 - 1e-12      # 6 clusters: exact test over 64 sign patterns


# ----------------------------------------------------------------------------- beats_random

def joint(rng, clean, corrupt, observed_frac, n_random=200, random_hi=0.5):
    n = clean.size
    gap = clean - corrupt
    rv = corrupt[:, None] + rng.uniform(0, random_hi, (1, n_random)) * gap[:, None] + rng.normal(0, .1, (n, n_random))
    vals = corrupt + observed_frac * gap + rng.normal(0, 0.1, n)
    return Effects(values=vals[:, None], clean=clean, corrupt=corrupt, sites=heads(3), base=corrupt, target=clean,
                   joint=True, random_values=rv)


def test_beats_random():
    rng, clean, corrupt = baselines(n=30, seed=6)
    res = evaluate(joint(rng, clean, corrupt, 0.9), claims.beats_random(200), n_resamples=999)
    assert res.verdict == "supported" and res.table["p"][0] == pytest.approx(1 / 201)
    res = evaluate(joint(rng, clean, corrupt, 0.05), claims.beats_random(200), n_resamples=999)
    assert res.verdict == "null"
    res = evaluate(joint(rng, clean, corrupt, 0.9, n_random=10), claims.beats_random(10), n_resamples=999)
    assert res.verdict == "inconclusive" and "n_random >= 20" in res.reasons[0]


def test_beats_random_needs_random_sets():
    _, clean, corrupt = baselines(n=10)
    with pytest.raises(ValueError, match=r"scan\(\.\.\., joint=True, n_random=200\)"):
        evaluate(denoise(clean, clean, corrupt), claims.beats_random(200))
    eff = Effects(values=clean[:, None], clean=clean, corrupt=corrupt, sites=heads(2), base=corrupt, target=clean,
                  joint=True)
    with pytest.raises(ValueError, match="random_values is None"):
        evaluate(eff, claims.beats_random())


# ----------------------------------------------------------------------------- bad input

def test_bad_effects_input():
    _, clean, corrupt = baselines(n=10)
    vals = clean.copy()
    vals[4] = np.nan
    with pytest.raises(ValueError, match="NaN/inf.*prompt 4"):
        evaluate(denoise(vals, clean, corrupt), claims.recovers())
    with pytest.raises(ValueError, match="at least 2"):
        evaluate(denoise(clean[:1], clean[:1], corrupt[:1]), claims.recovers())
    with pytest.raises(ValueError, match="correction"):
        evaluate(denoise(clean, clean, corrupt), claims.recovers(), correction="BH")
    with pytest.raises(ValueError, match="alpha"):
        evaluate(denoise(clean, clean, corrupt), claims.recovers(), alpha=5)


# ----------------------------------------------------------------------------- claims

@pytest.mark.parametrize("claim", [claims.recovers(0.7), claims.has_effect("decrease", margin=0.5, relative=False),
                                   claims.no_effect(0.05), claims.beats_random(500)])
def test_claim_round_trip(claim):
    d = json.loads(json.dumps(claim.to_dict()))
    assert d["kind"] == claim.kind
    assert claims.Claim.from_dict(d) == claim
    assert str(claim)


@pytest.mark.parametrize("make, field", [(lambda: claims.recovers(0), "at_least"),
                                         (lambda: claims.recovers(2.0), "at_least"),
                                         (lambda: claims.recovers("half"), "at_least"),
                                         (lambda: claims.has_effect("up"), "direction"),
                                         (lambda: claims.no_effect(-0.1), "margin"),
                                         (lambda: claims.no_effect(5), "relative=False"),
                                         (lambda: claims.beats_random(0), "n_random"),
                                         (lambda: claims.Claim.from_dict({"kind": "explains"}), "kind"),
                                         (lambda: claims.Claim.from_dict({"kind": "recovers", "tau": 1}), "tau")])
def test_claim_validation_names_the_field(make, field):
    with pytest.raises(claims.ClaimError, match=field):
        make()


def test_evaluate_accepts_claim_dicts(truths):
    clean, corrupt, v = truths
    res = evaluate(denoise(v["large"], clean, corrupt), {"kind": "recovers", "at_least": 0.5}, n_resamples=999)
    assert isinstance(res, Evaluation) and res.claim == claims.recovers(0.5) and res.verdict == "supported"


def test_docs_table_covers_every_verdict_and_flag():
    import pathlib
    doc = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "verdicts.md").read_text()
    for word in V.VERDICTS + (V.ZERO_VARIANCE, V.UNDERPOWERED, V.UNDEFINED, V.UNSTABLE_GAP):
        assert f"`{word}`" in doc
    for rule in ("recovers(", "has_effect(", "no_effect(", "beats_random("):
        assert rule in doc


# ----------------------------------------------------------------------------- issue 10: audit cases

def test_two_prompts_with_the_same_effect_are_not_proof():
    clean, corrupt = np.array([3.0, 2.5]), np.array([0.0, 0.2])
    res = evaluate(denoise(corrupt + 1.0, clean, corrupt), claims.has_effect())
    assert res.verdict == "inconclusive"
    assert "zero-variance" in res.table["flag"][0] and "underpowered" in res.table["flag"][0]


def test_no_null_when_the_primary_test_cannot_reject():
    rng, clean, corrupt = baselines(n=3, seed=2)
    res = evaluate(denoise(corrupt + rng.normal(0, 1e-4, 3), clean, corrupt), claims.has_effect())
    assert res.verdict == "inconclusive" and "underpowered" in res.table["flag"][0]


def test_unstable_gap_comes_before_the_exact_rule():
    rng = np.random.default_rng(3)
    corrupt = rng.normal(0, 1, 8)
    clean = corrupt + rng.normal(0.1, 1, 8)           # a gap that is not reliably non-zero
    res = evaluate(denoise(clean, clean, corrupt), claims.recovers(0.5))   # patched == clean: zero variance
    assert res.verdict == "inconclusive" and res.table["flag"][0] == "unstable-gap"


def test_all_or_nothing_recovery_with_a_few_failures_is_not_supported_on_symmetry_alone():
    rng, clean, corrupt = baselines(n=20, seed=5)
    ok = np.ones(20, bool)
    ok[:2] = False                                       # 18 prompts recovered fully, 2 not at all
    res = evaluate(denoise(np.where(ok, clean, corrupt), clean, corrupt), claims.recovers(0.5))
    assert res.table["p"][0] > 0.05                      # the sign-flip p alone is 1e-4; the bootstrap-t is not
    assert res.verdict == "inconclusive"


def test_a_sample_skewed_against_the_claim_abstains_and_says_how_many_prompts():
    rng, clean, corrupt = baselines(n=40, seed=5)
    e = np.where(np.arange(40) < 4, -3.0, 1.0) + rng.normal(0, 0.05, 40)     # a long left tail
    res = evaluate(denoise(corrupt + e, clean, corrupt), claims.has_effect("increase"))
    assert res.verdict == "inconclusive" and res.table["flag"][0] == "skewed"
    assert "prompts would do" in res.reasons[0]


def test_relative_margin_equivalence_uses_the_gap_contrasts():
    rng, clean, corrupt = baselines(n=60, seed=6)
    res = evaluate(denoise(corrupt + rng.normal(0, 0.02, 60), clean, corrupt), claims.no_effect(0.1))
    assert res.verdict == "supported" and "equivalence p_adj" in res.reasons[0]
    assert any("gap's uncertainty" in r for r in res.reasons)


def test_constant_metric_is_refused():
    z = np.zeros(6)
    with pytest.raises(ValueError, match="constant by construction"):
        evaluate(denoise(np.zeros((6, 2)), z, z), claims.has_effect())


def _joint(values, clean, corrupt, random_values, info):
    return Effects(values=values[:, None], clean=clean, corrupt=corrupt, sites=heads(4), base=corrupt,
                   target=clean, joint=True, random_values=random_values, meta={"random_sets": info})


@pytest.mark.parametrize("n_sets", [1, 15])
def test_beats_random_with_few_distinct_sets_is_exact_and_underpowered(n_sets):
    rng, clean, corrupt = baselines(n=30, seed=7)
    rv = corrupt[:, None] + 0.1 * (clean - corrupt)[:, None] + rng.normal(0, 0.1, (30, n_sets))
    info = {"distinct": n_sets, "drawn": n_sets, "exhaustive": True}
    res = evaluate(_joint(clean, clean, corrupt, rv, info), claims.beats_random(200))
    assert res.verdict == "inconclusive" and res.table["flag"][0] == "underpowered"
    assert res.table["p_adj"][0] == pytest.approx(1 / (n_sets + 1))
    assert any(f"all {n_sets} distinct random site sets" in r for r in res.reasons)
    assert any(f"only {n_sets} distinct site sets" in r for r in res.reasons)


def test_sites_chosen_on_the_same_prompts_are_never_supported():
    rng, clean, corrupt = baselines(n=30, seed=8)
    vals = corrupt[:, None] + rng.normal(0, 1, (30, 8)) + 0.3     # every site equal
    chosen = evaluate(denoise(vals, clean, corrupt), claims.has_effect()).top_sites(2)
    assert len(chosen) == 2 and chosen.selected_on["prompts"]
    joint_same = Effects(values=corrupt[:, None] + 0.9 * (clean - corrupt)[:, None], clean=clean, corrupt=corrupt,
                         sites=tuple(chosen), base=corrupt, target=clean, joint=True,
                         meta={"selected_on": chosen.selected_on})
    res = evaluate(joint_same, claims.recovers(0.5))
    assert res.verdict == "inconclusive" and "selected-on-same-data" in res.table["flag"][0]
    assert "held-out" in res.reasons[0]
    # held-out prompts: no flag
    _, clean2, corrupt2 = baselines(n=30, seed=9)
    held = Effects(values=corrupt2[:, None] + 0.9 * (clean2 - corrupt2)[:, None], clean=clean2, corrupt=corrupt2,
                   sites=tuple(chosen), base=corrupt2, target=clean2, joint=True,
                   meta={"selected_on": chosen.selected_on})
    assert evaluate(held, claims.recovers(0.5)).verdict == "supported"


def test_p_exactly_alpha_is_not_significant_and_reject_rule_is_strict():
    # exact sign-flip with n = 5, one-sided: p = 1/32; at alpha = 1/32 the test must not reject
    clean, corrupt = np.full(5, 3.0) + np.arange(5) * 0.1, np.zeros(5)
    vals = corrupt[:, None] + np.array([1.0, 1.1, 1.2, 1.3, 1.4])[:, None]
    res = evaluate(denoise(vals, clean, corrupt), claims.has_effect("increase"), alpha=1 / 32)
    assert res.verdict == "inconclusive"
