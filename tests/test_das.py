"""DAS: the orthogonal parametrisation, the known direction found on the induction ground truth, held-out only,
and null results where nothing is there (before the copy; random subspaces)."""
import numpy as np
import pytest
import torch

import causalinterp as ci
from causalinterp.features import HeldOutError, copy_choice_data, known_direction


@pytest.fixture(scope="module")
def model():
    return ci.load_model("testbed:induction")


@pytest.fixture(scope="module")
def split():
    return copy_choice_data(120, seed=3).split(0.5, seed=0)


@pytest.fixture(scope="module")
def fitted(model, split):
    return ci.das(model, split[0], ci.Site("resid_post", 1, position="end"), dim=1, steps=60, batch_size=32)


def test_das_finds_the_known_direction(model, fitted):
    B = fitted.basis
    assert torch.allclose(B @ B.T, torch.eye(1), atol=1e-5)
    assert float((B @ known_direction(model)).abs()) > 0.8
    assert fitted.train_iia > 0.95 and fitted.train_loss[-1] < fitted.train_loss[0]


def test_das_is_evaluated_on_held_out_prompts_only(model, split, fitted):
    with pytest.raises(HeldOutError, match="held-out"):
        fitted.evaluate(model, split[0])
    mixed = ci.ContrastSet.from_tokens(split[1].clean[:5] + split[0].clean[:1], split[1].corrupt[:5] + split[0].corrupt[:1],
                                       answer=list(split[1].answer[:5]) + [split[0].answer[0]],
                                       wrong=list(split[1].wrong[:5]) + [split[0].wrong[0]])
    with pytest.raises(HeldOutError, match="1 of the 6"):
        fitted.evaluate(model, mixed)
    ev = fitted.evaluate(model, split[1], n_random=20, n_resamples=999)
    assert ev.verdict == "supported" and ev.beats_random.verdict == "supported", str(ev)
    assert ev.iia_ci[0] > 0.9 and ev.random_iia < 0.1
    md = ev.to_markdown()
    assert "[subspace das k=1]" in md and "| supported | supported |" in md


def test_subspace_patch_in_the_engine_equals_the_training_hook(model, split, fitted):
    """The engine's feature site and DAS's own training hook compute the same intervention."""
    from causalinterp.features.das import _hook
    test = split[1]
    eff = ci.scan(model, test, [fitted.subspace_site()], metric=ci.metrics.logit_diff(), progress=False)
    src = ci.features.collect(model, test, fitted.site, run="clean")
    R = fitted.basis
    pos = torch.tensor([test.position_index("end", i) for i in range(test.n)])

    def edit(view):
        rows = torch.arange(view.shape[0])
        cur = view[rows, pos]
        view[rows, pos] = cur + ((src - cur) @ R.T) @ R

    h = _hook(model, fitted.site, edit)
    try:
        with torch.no_grad():
            logits = model.hf(test.tokens("corrupt")).logits
    finally:
        h.remove()
    rows = torch.arange(test.n)
    end = torch.tensor(test.positions["end"])
    ld = logits[rows, end, torch.tensor(test.answer)] - logits[rows, end, torch.tensor(test.wrong)]
    np.testing.assert_allclose(eff.values[:, 0], ld.numpy(), atol=1e-4)


def test_before_the_copy_das_finds_nothing(model, split):
    res = ci.das(model, split[0], ci.Site("resid_pre", 1, position="end"), dim=1, steps=40, batch_size=32)
    ev = res.evaluate(model, split[1], n_random=20, n_resamples=999)
    assert ev.verdict == "refuted" and ev.iia_ci[1] < 0.1, str(ev)


def test_das_input_errors(model, split):
    with pytest.raises(ValueError, match="one position"):
        ci.das(model, split[0], ci.Site("resid_post", 1), dim=1)
    with pytest.raises(ValueError, match="positive int"):
        ci.das(model, split[0], ci.Site("resid_post", 1, position="end"), dim=0)
    with pytest.raises(ValueError, match="exceeds"):
        ci.das(model, split[0], ci.Site("resid_post", 1, position="end"), dim=65)
