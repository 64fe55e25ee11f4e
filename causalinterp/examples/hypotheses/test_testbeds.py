"""Hypotheses about the shipped testbeds as a Python test file.

    pytest examples/hypotheses                      # each function is one test; refuted claims fail
    causalinterp run examples/hypotheses --out reports

The head indices come from the testbed's card, so these never go stale when the testbed is retrained.
"""
import causalinterp as ci


def circuit():
    """(previous-token head, induction head) as (layer, head) pairs, from the testbed's card."""
    prev, ind = ci.testbeds.card("induction")["circuit_heads"]
    return tuple(prev), tuple(ind)


@ci.hypothesis(model="testbed:induction")
def test_induction_head_is_sufficient(model):
    """Denoising the induction head's output at the last position brings back a quarter of the copy."""
    _, ind = circuit()
    return ci.Hypothesis(
        name="induction head is sufficient at the end position",
        data=ci.testbeds.induction_data(64, seed=1, tokenizer=model.tokenizer),
        sites=ci.sites.heads([ind], positions="end"),
        intervention=ci.patch("denoise"),
        claim=ci.claims.recovers(at_least=0.25),
    )


@ci.hypothesis(model="testbed:induction")
def test_previous_token_head_feeds_the_induction_head(model):
    """Resample-ablating the previous-token head (every position) breaks the copy.

    Noising would do nothing here: clean and corrupt prompts share their first half, where the head
    writes what the induction head reads.  (At the single position `first_answer` the effect is null:
    this testbed's previous-token head is diffuse, see causalinterp/testbeds/README.md.)
    """
    prev, _ = circuit()
    return ci.Hypothesis(
        name="previous-token head is necessary",
        data=ci.testbeds.induction_data(64, seed=1, tokenizer=model.tokenizer),
        sites=ci.sites.heads([prev], positions="all"),
        intervention=ci.ablate("resample", seed=0),
        claim=ci.claims.has_effect(direction="decrease"),
    )


@ci.hypothesis(model="testbed:induction-ko")
def test_knocked_out_heads_do_nothing(model):
    """Every knocked-out head moves the metric by less than 5% of the clean-corrupt gap (TOST)."""
    ko = ci.testbeds.card("induction-ko")["knocked_out"]
    return ci.Hypothesis(
        name="knocked-out heads have no effect",
        data=ci.testbeds.induction_data(64, seed=1, tokenizer=model.tokenizer),
        sites=ci.sites.heads([tuple(h) for h in ko], positions="end"),
        intervention=ci.patch("noise"),
        claim=ci.claims.no_effect(margin=0.05),
    )


@ci.hypothesis(model="testbed:ioi")
def test_ioi_heads_found_by_a_scan_hold_on_held_out_templates(model):
    """Discover, then confirm: scan every head on one half of the templates, keep the supported ones, and
    claim they matter jointly on the other half (templates the scan never saw).

    Testing them on the scan's own prompts would be biased in their favour; causalinterp flags that
    (`selected-on-same-data`) and never calls it supported.
    """
    data = ci.testbeds.ioi_data(192, seed=2, tokenizer=model.tokenizer)
    discovery, confirmation = data.split(0.5, seed=0, by="cluster")
    scan = ci.scan(model, discovery, ci.sites.head_out(positions="end"), progress=False)
    chosen = ci.evaluate(scan, ci.claims.has_effect("increase"), correction="maxT").significant_sites()
    return ci.Hypothesis(
        name="heads found on discovery templates matter on held-out templates",
        data=confirmation,
        sites=chosen,
        joint=True,
        claim=ci.claims.has_effect(direction="increase"),
    )
