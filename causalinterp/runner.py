"""`run` and `run_all`: scan + evaluate for hypotheses; every surface (API, pytest, CLI) calls these."""
from __future__ import annotations

import time
from typing import Iterable

from .engine.execute import scan
from .evaluate import evaluate
from .family import check_family_correction, correct_across
from .models.load import Model, load_model
from .result import Result, versions
from .spec.hypothesis import DataRef, Hypothesis, HypothesisError


def _model_for(h: Hypothesis, model, models: dict) -> Model:
    if model is not None:
        if isinstance(model, Model):
            return model
        key = ("given", id(model))          # the dict keeps the wrapped model (and so its id) alive
        if key not in models:
            models[key] = load_model(model)
        return models[key]
    if h.model is None:
        raise HypothesisError(f"hypothesis {h.name!r} names no model: pass run(h, model) or set model: in the "
                              "hypothesis (e.g. 'testbed:induction')")
    if h.model not in models:
        models[h.model] = load_model(h.model)
    return models[h.model]


def run(h: Hypothesis, model=None, *, progress: bool = True, cache: dict | None = None,
        memory_budget="2GB", checkpoint=None, track=None, executor=None) -> Result:
    """Run one hypothesis on `model` (or the model it names) and return its `Result`.

    ``track="mlflow"`` / ``"wandb"`` / a tracker logs the result (see `causalinterp.tracking`).

    Examples:
        >>> import causalinterp as ci
        >>> h = ci.Hypothesis(name="names carry the task", data=ci.DataRef("ioi", n=32),
        ...                   sites=ci.sites.resid_pre(layers=[0], positions=["IO", "S1", "S2"]), joint=True,
        ...                   claim=ci.claims.recovers(at_least=0.9))
        >>> ci.run(h, ci.load_model("testbed:ioi"), progress=False).verdict
        'supported'
    """
    return run_all([h], model, progress=progress, cache=cache, memory_budget=memory_budget,
                   checkpoint=checkpoint, track=track, executor=executor)[0]


def run_all(hypotheses: Iterable[Hypothesis], model=None, *, progress: bool = True, cache: dict | None = None,
            memory_budget="2GB", checkpoint=None, models: dict | None = None, track=None,
            executor=None, correction: str = "holm") -> list[Result]:
    """Run several hypotheses; models are loaded once and unpatched clean/corrupt runs are shared.

    The hypotheses of one call are one family: `correction` ("holm" default, "bonferroni", or "none", which
    the reasons then state) controls the error across them (`causalinterp.family`); each hypothesis's
    `Result.meta["hypothesis_family"]` and last reason say at which level it was tested.
    ``track`` logs each result once the family correction has been applied (see `causalinterp.tracking`).  `checkpoint` is one
    results directory for all hypotheses (units are stored by content hash); `executor` (from
    `causalinterp.executors`) runs every scan's units.

    Examples:
        >>> import causalinterp as ci
        >>> from causalinterp.examples import HYPOTHESES
        >>> results = ci.run_all(ci.load_hypotheses(HYPOTHESES / "hyp_induction_ko.yaml"), progress=False)
        >>> [r.verdict for r in results]
        ['null', 'supported']
    """
    from .tracking import trackers
    correction = check_family_correction(correction)
    loggers = trackers(track)
    cache = {} if cache is None else cache
    models = {} if models is None else models
    results = []
    for h in hypotheses:
        if not isinstance(h, Hypothesis):
            raise HypothesisError(f"run() takes Hypothesis objects, got {type(h).__name__}")
        m = _model_for(h, model, models)
        t0 = time.perf_counter()
        data = h.data.build(m) if isinstance(h.data, DataRef) else h.data
        if h.corruption is not None:  # causal tracing: noise on the clean prompts' embeddings is the corrupt run
            data = data.with_noise(h.corruption)
        eff = scan(m, data, h.sites, intervention=h.intervention, metric=h.metric, joint=h.joint,
                   n_random=h.n_random, seed=h.seed, progress=progress, cache=cache, memory_budget=memory_budget,
                   checkpoint=checkpoint, executor=executor)
        ev = evaluate(eff, h.claim, alpha=h.alpha, correction=h.correction, n_resamples=h.n_resamples, seed=h.seed)
        meta = {"model": m.name or type(m.hf).__name__, "family": m.family, "n_layers": m.n_layers,
                "n_heads": m.n_heads, "seconds": time.perf_counter() - t0, "versions": versions(),
                "n_prompts": data.n, "data_name": data.name}
        results.append(Result(name=h.name, hypothesis=h.to_dict(), evaluation=ev, effects=eff, meta=meta))
    results = correct_across(results, correction)
    for r in results:
        for t in loggers:
            t.log(r)
    for t in loggers:
        t.close()
    return results
