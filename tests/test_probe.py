"""Probes: cross-validated accuracy against scikit-learn, the control task, verdicts on the induction ground truth,
and the probe direction as a causal site (held-out only)."""
import numpy as np
import pytest
import torch

import causalinterp as ci
from causalinterp.features import HeldOutError, control_labels, copy_choice_data, known_direction


@pytest.fixture(scope="module")
def model():
    return ci.load_model("testbed:induction")


@pytest.fixture(scope="module")
def data():
    return copy_choice_data(160, seed=1)


def is_a(data):
    return np.array([a == data.answer[0] for a in data.answer])


def test_control_labels_are_one_label_per_type():
    y = np.array([0, 1] * 10)
    types = np.array(list(range(5)) * 4)
    yc = control_labels(y, types, seed=0)
    for t in range(5):
        assert len(set(yc[types == t])) == 1
    assert set(yc) <= {0, 1}
    assert not np.array_equal(control_labels(y, np.arange(20), 0), control_labels(y, np.arange(20), 1))


def test_accuracy_is_out_of_fold_sklearn(model, data):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    site = ci.Site("resid_pre", 1, position="end")
    res = ci.probe(model, data, site, is_a(data), n_resamples=999)
    X = ci.features.collect(model, data, site).numpy().astype(np.float64)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=0))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    assert res.accuracy == pytest.approx(cross_val_score(pipe, X, is_a(data), cv=cv).mean(), abs=1e-9)
    assert res.accuracy_ci[0] <= res.accuracy <= res.accuracy_ci[1]


def test_known_feature_is_found_and_selective(model, data):
    res = ci.probe(model, data, ci.Site("resid_post", 1, position="end"), is_a, n_resamples=999)
    assert res.verdict == "supported", str(res)
    assert res.accuracy_ci[0] > 0.9 and res.selectivity_ci[0] > 0.2
    assert res.basis.shape == (1, 64)
    assert float((res.basis @ known_direction(model)).abs()) > 0.5  # the readout leans on the known direction


def test_before_the_copy_the_probe_is_null_and_the_control_task_is_memorised(model, data):
    res = ci.probe(model, data, ci.Site("resid_pre", 0, position="end"), is_a(data), n_resamples=999)
    assert res.verdict == "null", str(res)
    assert res.control_accuracy > res.accuracy  # the embedding identifies the type, so the control task is learnable


def test_probe_direction_is_a_causal_site_on_held_out_prompts(model, data):
    train, test = data.split(0.5, seed=0)
    res = ci.probe(model, train, ci.Site("resid_post", 1, position="end"), is_a(train), n_resamples=999)
    with pytest.raises(HeldOutError, match="held-out"):
        res.causal_test(model, train)
    ev = res.causal_test(model, test, n_resamples=999)
    assert ev.verdict == "supported", str(ev)
    assert ev.estimate < -0.2 * np.mean(clean_metric(model, test))  # a large part of the copy signal
    # a random direction of the same dimension, ablated the same way, moves the metric by less than 10% of the gap
    rand = ci.features.orthonormalize(torch.randn(1, 64, generator=torch.Generator().manual_seed(0)))
    eff = ci.scan(model, test, ci.sites.subspace("resid_post", 1, "end", rand), intervention=ci.ablate("mean"),
                  progress=False)
    assert ci.evaluate(eff, ci.claims.no_effect(margin=0.1), n_resamples=999).verdict == "supported"


def clean_metric(model, data):
    return ci.scan(model, data, ci.Site("resid_post", 1, position="end"), progress=False).clean


def test_probe_input_errors(model, data):
    site = ci.Site("resid_post", 1, position="end")
    with pytest.raises(ValueError, match="one label per prompt"):
        ci.probe(model, data, site, [0, 1])
    with pytest.raises(ValueError, match="two classes"):
        ci.probe(model, data, site, np.zeros(data.n))
    with pytest.raises(ValueError, match="one position"):
        ci.probe(model, data, ci.Site("resid_post", 1), is_a(data))
