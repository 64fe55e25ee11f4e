"""Path accounts of the testbeds, where the answer is known: the induction circuit's previous-token head reaches
the induction head through its keys (and not its queries); IOI paths chosen on one half are confirmed on the other."""
import numpy as np

import causalinterp as ci
from causalinterp.spec.paths import Path
from causalinterp.spec.sites import Site


def test_induction_previous_token_head_acts_through_k_not_q():
    model, data = ci.load_model("testbed:induction"), ci.testbeds.induction_data(32, seed=2)
    prev, other = Site("head_out", 0, 1), Site("head_out", 0, 2)
    paths = [Path((prev,), (Site(via, 1, 2),)) for via in "qk"] + [Path((other,), (Site("k", 1, 2),))]
    eff = ci.scan(model, data, ci.sites.paths(paths), intervention=ci.ablate("mean"), progress=False)
    ev = ci.evaluate(eff, ci.claims.has_effect(), n_resamples=999)
    assert ev.table["verdict"].tolist() == ["null", "supported", "null"]
    assert ev.table["estimate"][1] < -0.5 * eff.clean.mean()           # most of the induction behaviour
    # in the knock-out variant head 0.2's output weights are zero: its path to the induction head's keys is exactly 0
    ko = ci.load_model("testbed:induction-ko")
    assert [0, 2] in ci.testbeds.card("induction-ko")["knocked_out"]
    eff = ci.scan(ko, data, ci.sites.paths(paths), intervention=ci.ablate("mean"), progress=False)
    np.testing.assert_allclose(eff.values[:, 2], eff.base, atol=1e-5)
    assert np.abs(eff.values[:, 1] - eff.base).mean() > 1.0


def test_ioi_paths_chosen_on_discovery_are_confirmed_on_held_out_templates():
    model = ci.load_model("testbed:ioi")
    disc, conf = ci.testbeds.ioi_data(80, seed=7).split(0.5, seed=0)
    to_logits = ci.sites.path(ci.sites.heads([(2, h) for h in range(4)] + [(1, 1)]), "logits")
    eff = ci.scan(model, disc, to_logits, intervention=ci.patch("noise"), progress=False)
    chosen = ci.evaluate(eff, ci.claims.has_effect(), n_resamples=999).significant_sites()
    assert 0 < len(chosen) < 5 and all(isinstance(p, Path) for p in chosen)
    again = ci.evaluate(ci.scan(model, disc, chosen, intervention=ci.patch("noise"), progress=False),
                        ci.claims.has_effect(), n_resamples=999)
    assert "supported" not in set(again.table["verdict"])            # chosen on these prompts: flagged
    held = ci.evaluate(ci.scan(model, conf, chosen, intervention=ci.patch("noise"), progress=False),
                       ci.claims.has_effect(), n_resamples=999)
    assert "supported" in set(held.table["verdict"])
