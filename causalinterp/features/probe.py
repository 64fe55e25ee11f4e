"""Linear probes with controls: cross-validated accuracy with CIs, a Hewitt & Liang control task, selectivity,
and the probe's direction as a subspace site (so a probing claim can be turned into a causal one).

Accuracy is out-of-fold (every prompt is predicted by a probe that did not see it; scikit-learn's
`cross_val_predict`), so each prompt contributes one 0/1 outcome and the CIs are bootstrap intervals over prompts
(whole clusters when the data has them).  The control task (Hewitt & Liang 2019) gives every *type* (by default
the token at the probed position) a random label drawn from the task's label distribution: a probe that scores
well on it is memorising types, not reading the property; selectivity = task accuracy - control accuracy
(paired, per prompt).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..spec.data import ContrastSet
from ..spec.features import Subspace, subspace
from ..spec.sites import ALL, Site
from ..stats.bootstrap import bootstrap_ci
from .activations import collect, site_of, tokens_at
from .heldout import check_held_out, prompt_set


@dataclass
class ProbeResult:
    """What `probe` measured.  ``verdict``: "supported" (accuracy above chance and above the control task, both by
    their CI's lower bound), "null" (accuracy's CI upper bound within `margin` of chance, or selectivity's within
    `margin` of 0), else "inconclusive".  ``basis`` is the probe's readout subspace ([k, d], orthonormal)."""

    site: Site
    n: int
    classes: list
    folds: int
    accuracy: float
    accuracy_ci: tuple
    chance: float
    control_accuracy: float
    control_ci: tuple
    selectivity: float
    selectivity_ci: tuple
    basis: torch.Tensor
    verdict: str
    reasons: list
    confidence_level: float = 0.95
    fitted_on: frozenset = field(default=frozenset(), repr=False)

    def subspace_site(self, position=None, name: str = "probe"):
        """The probe's readout subspace as a site (same component/layer; `position` defaults to the probed one)."""
        s = self.site
        return subspace(s.component, s.layer, s.position if position is None else position, Subspace(self.basis, name),
                        head=s.head)

    def causal_test(self, model, data: ContrastSet, *, intervention=None, claim=None, metric=None, **evaluate_kw):
        """Ablate the probe subspace on held-out `data` and evaluate `claim` (default: the metric decreases).

        Refuses prompts the probe was fitted on.  Default intervention: mean ablation (over `data`'s clean run).
        """
        from ..engine import scan
        from ..evaluate import evaluate
        from ..spec.claims import has_effect
        from ..spec.interventions import ablate
        check_held_out(self.fitted_on, data, "probe")
        eff = scan(model, data, self.subspace_site(), intervention=intervention or ablate("mean"), metric=metric,
                   progress=False)
        return evaluate(eff, claim or has_effect("decrease"), **evaluate_kw)

    def to_dict(self) -> dict:
        return {"site": self.site.to_dict(), "n": self.n, "classes": [str(c) for c in self.classes],
                "folds": self.folds, "accuracy": self.accuracy, "accuracy_ci": list(self.accuracy_ci),
                "chance": self.chance, "control_accuracy": self.control_accuracy, "control_ci": list(self.control_ci),
                "selectivity": self.selectivity, "selectivity_ci": list(self.selectivity_ci),
                "subspace_dim": int(self.basis.shape[0]), "verdict": self.verdict, "reasons": list(self.reasons),
                "confidence_level": self.confidence_level,
                # the readout subspace, so that a hypothesis file can test it causally on fresh prompts
                # (sites: {subspace: {..., basis: probe.json}}; `read_basis` reads this mapping)
                "basis": self.basis.detach().cpu().double().tolist()}

    def to_markdown(self) -> str:
        """A report table: site, accuracy with CI, chance, control task, selectivity, subspace dim, verdict."""
        f = lambda x, lo, hi: f"{x:.3f} [{lo:.3f}, {hi:.3f}]"  # noqa: E731
        head = "| site | n | accuracy (CI) | chance | control task (CI) | selectivity (CI) | subspace dim | verdict |"
        row = (f"| {self.site.label} | {self.n} | {f(self.accuracy, *self.accuracy_ci)} | {self.chance:.3f} | "
               f"{f(self.control_accuracy, *self.control_ci)} | {f(self.selectivity, *self.selectivity_ci)} | "
               f"{int(self.basis.shape[0])} | {self.verdict} |")
        return "\n".join([head, "|" + "---|" * 8, row, "", *[f"- {r}" for r in self.reasons]]) + "\n"

    def __str__(self) -> str:
        pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
        lines = [f"probe {self.site.label} ({self.n} prompts, {len(self.classes)} classes, {self.folds}-fold): "
                 f"{self.verdict.upper()}",
                 f"  accuracy {pct(self.accuracy)} [{pct(self.accuracy_ci[0])}, {pct(self.accuracy_ci[1])}] "
                 f"(chance {pct(self.chance)})",
                 f"  control task {pct(self.control_accuracy)} [{pct(self.control_ci[0])}, {pct(self.control_ci[1])}]",
                 f"  selectivity {pct(self.selectivity)} [{pct(self.selectivity_ci[0])}, {pct(self.selectivity_ci[1])}]"]
        return "\n".join(lines + [f"  - {r}" for r in self.reasons])


def control_labels(labels: np.ndarray, types: np.ndarray, seed: int) -> np.ndarray:
    """Hewitt & Liang's control task: each distinct type gets one label drawn from the empirical label distribution."""
    rng = np.random.default_rng(seed)
    uniq = list(dict.fromkeys(types.tolist()))
    drawn = rng.choice(labels, size=len(uniq), replace=True)
    lookup = dict(zip(uniq, drawn.tolist()))
    return np.array([lookup[t] for t in types.tolist()])


def _pipeline(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))


def _out_of_fold(X, y, groups, folds, C, seed):
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict
    if groups is not None:
        cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    pred = cross_val_predict(_pipeline(C, seed), X, y, cv=cv, groups=groups)
    return (pred == y).astype(float)


def readout_basis(X: np.ndarray, y: np.ndarray, C: float, seed: int) -> torch.Tensor:
    """Orthonormal basis of the row space of the probe's weights in activation space (fitted on all of X)."""
    pipe = _pipeline(C, seed).fit(X, y)
    scaler, lr = pipe[0], pipe[-1]
    W = lr.coef_ / scaler.scale_[None, :]  # decision = W x + c in the activations' own coordinates
    _, s, vt = np.linalg.svd(W, full_matrices=False)
    keep = s > 1e-6 * s.max()
    return torch.tensor(vt[keep], dtype=torch.float32)


def probe(model, data: ContrastSet, site, labels, *, types=None, folds: int = 5, C: float = 1.0, run: str = "clean",
          control: bool = True, margin: float = 0.05, confidence_level: float = 0.95, n_resamples: int = 9999,
          seed: int = 0) -> ProbeResult:
    """Fit a linear probe (logistic regression) for `labels` on the activation at `site` in the `run` of `data`.

    labels   one label per prompt (ints or strings), or a function ``labels(data) -> array``
    types    the type of each prompt for the control task (default: the token at the probed position)
    folds    cross-validation folds (stratified; grouped by cluster when the data has clusters)
    margin   accuracy within `margin` of chance (or selectivity within `margin` of 0) is a null result

    Examples:
        >>> import causalinterp as ci
        >>> model, data = ci.load_model("testbed:induction"), ci.features.copy_choice_data(120, seed=1)
        >>> copies_t0 = [a == data.answer[0] for a in data.answer]   # which of two tokens the model copies
        >>> res = ci.probe(model, data, ci.Site("resid_post", 1, position="end"), copies_t0, n_resamples=999)
        >>> res.verdict, res.accuracy > res.control_accuracy
        ('supported', True)
    """
    s = site_of(site)
    if s.position == ALL:
        raise ValueError("probe: give one position (e.g. 'end'); a probe at every position needs one label per token")
    y = np.asarray(labels(data) if callable(labels) else labels)
    if y.ndim != 1 or len(y) != data.n:
        raise ValueError(f"probe: need one label per prompt ({data.n}), got shape {y.shape}")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"probe: the labels take one value ({classes[0]!r}); a probe needs at least two classes")
    if counts.min() < folds:
        raise ValueError(f"probe: class {classes[np.argmin(counts)]!r} has {counts.min()} prompts, fewer than the "
                         f"{folds} folds; use more prompts or fewer folds")
    t = np.asarray(types) if types is not None else tokens_at(data, s.position, run)
    if len(t) != data.n:
        raise ValueError(f"probe: need one type per prompt ({data.n}), got {len(t)}")
    X = collect(model, data, s, run=run).numpy().astype(np.float64)
    groups = None if data.clusters is None else np.asarray(data.clusters)
    clusters = groups
    correct = _out_of_fold(X, y, groups, folds, C, seed)
    chance = float(counts.max() / counts.sum())
    boot = dict(confidence_level=confidence_level, n_resamples=n_resamples, seed=seed, clusters=clusters)
    acc = bootstrap_ci(correct, **boot)
    reasons = []
    if control:
        yc = control_labels(y, t, seed + 1)
        if len(np.unique(yc)) < 2 or np.unique(yc, return_counts=True)[1].min() < folds:
            ctrl_correct = np.full(data.n, chance)  # degenerate control task: it scores chance by construction
            reasons.append("the control task has too few prompts per label to fit; its accuracy is taken as chance")
        else:
            ctrl_correct = _out_of_fold(X, yc, groups, folds, C, seed)
        ctrl = bootstrap_ci(ctrl_correct, **boot)
        sel = bootstrap_ci(correct - ctrl_correct, **boot)
    else:
        ctrl = sel = None
    lo, hi = float(acc.low), float(acc.high)
    level = f"{100 * confidence_level:g}%"
    above = lo > chance
    selective = sel is None or float(sel.low) > 0
    if above and selective:
        verdict = "supported"
        reasons.insert(0, f"accuracy {acc.estimate:.3f} ({level} CI [{lo:.3f}, {hi:.3f}]) is above chance {chance:.3f}"
                       + ("" if sel is None else f" and above the control task by {sel.estimate:.3f} "
                          f"([{float(sel.low):.3f}, {float(sel.high):.3f}])"))
    elif hi < chance + margin or (sel is not None and float(sel.high) < margin):
        verdict = "null"
        why = (f"accuracy's {level} CI [{lo:.3f}, {hi:.3f}] lies below chance {chance:.3f} + margin {margin}"
               if hi < chance + margin else
               f"selectivity's {level} CI [{float(sel.low):.3f}, {float(sel.high):.3f}] lies below the margin {margin}: "
               "the probe does no better on the task than on the control task")
        reasons.insert(0, why)
    else:
        verdict = "inconclusive"
        reasons.insert(0, f"accuracy {acc.estimate:.3f} [{lo:.3f}, {hi:.3f}] vs chance {chance:.3f}"
                       + ("" if sel is None else f"; selectivity [{float(sel.low):.3f}, {float(sel.high):.3f}]")
                       + ": neither clearly above chance and the control task nor within the margin")
    basis = readout_basis(X, y, C, seed)
    return ProbeResult(site=s, n=data.n, classes=classes.tolist(), folds=folds, accuracy=float(acc.estimate),
                       accuracy_ci=(lo, hi), chance=chance,
                       control_accuracy=float("nan") if ctrl is None else float(ctrl.estimate),
                       control_ci=(float("nan"), float("nan")) if ctrl is None else (float(ctrl.low), float(ctrl.high)),
                       selectivity=float("nan") if sel is None else float(sel.estimate),
                       selectivity_ci=(float("nan"), float("nan")) if sel is None else (float(sel.low), float(sel.high)),
                       basis=basis, verdict=verdict, reasons=reasons, confidence_level=confidence_level,
                       fitted_on=prompt_set(data))
