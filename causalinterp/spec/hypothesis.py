"""`Hypothesis`: a whole experiment as data — data, sites, intervention, metric, claim, alpha.

Also readable from YAML/JSON files, with errors that name the field and the fix.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from .claims import Claim, ClaimError
from .data import ContrastSet
from .interventions import Intervention, InterventionError, patch
from .metrics import Metric, MetricError, logit_diff
from .sites import SiteError, SiteSet

TASKS = ("ioi", "induction")


class HypothesisError(ValueError):
    """A hypothesis (object or file) that is not valid; the message names the field and the fix."""


@dataclass(frozen=True)
class DataRef:
    """Data built at run time for the model's tokenizer: ``DataRef("ioi", n=64, seed=0, options={...})``."""

    task: str
    n: int = 32
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise HypothesisError(f"data.task {self.task!r} is unknown; use one of {', '.join(TASKS)} "
                                  "or give the prompts inline (clean/corrupt/answer/wrong)")
        if int(self.n) < 2:
            raise HypothesisError(f"data.n = {self.n}: a test needs at least 2 prompts (20+ recommended)")

    def build(self, model) -> ContrastSet:
        from .. import tasks, testbeds
        if str(getattr(model, "name", "")).startswith("testbed:"):  # the testbeds' own token pools
            build = testbeds.ioi_data if self.task == "ioi" else testbeds.induction_data
            return build(int(self.n), seed=int(self.seed), **dict(self.options))
        if self.task == "ioi":
            if model.tokenizer is None:
                raise HypothesisError("the ioi task needs a tokenizer: load the model with one")
            return tasks.ioi(model.tokenizer, int(self.n), seed=int(self.seed), **dict(self.options))
        vocab = model.tokenizer if model.tokenizer is not None else model.vocab_size
        opts = dict(self.options)
        opts.setdefault("seq_len", 10)
        return tasks.induction(vocab, int(self.n), seed=int(self.seed), **opts)

    def to_dict(self) -> dict:
        return {"task": self.task, "n": int(self.n), "seed": int(self.seed), **dict(self.options)}


@dataclass(frozen=True)
class Hypothesis:
    """One claim about a model, stated as data; `causalinterp.run(h, model)` tests it."""

    name: str
    data: ContrastSet | DataRef
    sites: SiteSet
    claim: Claim
    intervention: Intervention = field(default_factory=lambda: patch("denoise"))
    metric: Metric = field(default_factory=logit_diff)
    alpha: float = 0.05
    joint: bool = False
    correction: str = "holm"
    n_resamples: int = 9999
    seed: int = 0
    model: str | None = None
    description: str = ""

    def __post_init__(self):
        if not self.name:
            raise HypothesisError("a hypothesis needs a name (it labels the report)")
        if not isinstance(self.data, (ContrastSet, DataRef)):
            raise HypothesisError("data must be a ContrastSet or a task reference, e.g. DataRef('ioi', n=64)")
        if not isinstance(self.sites, SiteSet):
            raise HypothesisError("sites must come from ci.sites (e.g. ci.sites.heads([(1, 2)]))")
        if not isinstance(self.claim, Claim):
            raise HypothesisError("claim must come from ci.claims (e.g. ci.claims.recovers(at_least=0.5))")
        if not 0 < float(self.alpha) < 1:
            raise HypothesisError(f"alpha = {self.alpha} must be between 0 and 1 (e.g. 0.05)")
        if self.claim.kind == "beats_random" and not self.joint:
            object.__setattr__(self, "joint", True)  # a site set is compared with random sets as a whole

    @property
    def n_random(self) -> int:
        return int(getattr(self.claim, "n_random", 0)) if self.claim.kind == "beats_random" else 0

    def with_data(self, data) -> "Hypothesis":
        return replace(self, data=data)

    def to_dict(self) -> dict:
        data = self.data.to_dict()
        return {"name": self.name, "description": self.description, "model": self.model, "data": data,
                "sites": self.sites.to_dict(), "intervention": self.intervention.to_dict(),
                "metric": self.metric.to_dict(), "claim": self.claim.to_dict(), "alpha": self.alpha,
                "joint": self.joint, "correction": self.correction, "n_resamples": self.n_resamples,
                "seed": self.seed}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "hypothesis") -> "Hypothesis":
        """Build from plain data (a parsed YAML/JSON file); errors name `where` and the field."""
        if not isinstance(d, Mapping):
            raise HypothesisError(f"{where}: expected a mapping of fields, got {type(d).__name__}")
        known = {"name", "description", "model", "data", "sites", "intervention", "metric", "claim", "alpha",
                 "joint", "correction", "n_resamples", "seed"}
        extra = set(d) - known
        if extra:
            raise HypothesisError(f"{where}: unknown field(s) {sorted(extra)}; allowed: {sorted(known)}")
        for req in ("name", "data", "sites", "claim"):
            if req not in d:
                raise HypothesisError(f"{where}: missing required field '{req}'")

        def part(name, fn):
            try:
                return fn(d[name])
            except (KeyError, TypeError, ValueError, SiteError, ClaimError, InterventionError, MetricError) as e:
                raise HypothesisError(f"{where}, field '{name}': {e}") from None

        data = part("data", _data_from)
        sites = part("sites", _sites_from)
        claim = part("claim", _claim_from)
        intervention = part("intervention", _intervention_from) if "intervention" in d else patch("denoise")
        metric = part("metric", _metric_from) if "metric" in d else logit_diff()
        return cls(name=str(d["name"]), data=data, sites=sites, claim=claim, intervention=intervention,
                   metric=metric, alpha=float(d.get("alpha", 0.05)), joint=bool(d.get("joint", False)),
                   correction=str(d.get("correction", "holm")), n_resamples=int(d.get("n_resamples", 9999)),
                   seed=int(d.get("seed", 0)), model=d.get("model"), description=str(d.get("description", "")))


def _data_from(v) -> ContrastSet | DataRef:
    if isinstance(v, Mapping) and "task" in v:
        opts = {k: x for k, x in v.items() if k not in ("task", "n", "seed")}
        return DataRef(v["task"], int(v.get("n", 32)), int(v.get("seed", 0)), opts)
    if isinstance(v, Mapping) and "clean" in v:
        return ContrastSet.from_dict(v)
    raise HypothesisError("give a task reference ({task: ioi, n: 64, seed: 0}) or inline token ids "
                          "({clean: [[...]], corrupt: [[...]], answer: [...], wrong: [...]})")


def _sites_from(v) -> SiteSet:
    if isinstance(v, Mapping) and v.get("heads") is not None and "component" not in v:  # explicit head list
        from .sites import heads
        return heads([tuple(p) for p in v["heads"]], positions=v.get("positions", "all"),
                     component=v.get("component", "head_out"))
    if isinstance(v, Mapping):
        return SiteSet.from_dict(dict(v))
    raise HypothesisError("sites must be a mapping, e.g. {component: head_out, layers: [1], positions: [end]} "
                          "or {heads: [[1, 2], [0, 3]], positions: end}")


def _claim_from(v) -> Claim:
    if isinstance(v, str):
        v = {"kind": v}
    return Claim.from_dict(dict(v))


def _intervention_from(v) -> Intervention:
    if isinstance(v, str):
        v = {"kind": v}
    return Intervention.from_dict(dict(v))


def _metric_from(v) -> Metric:
    if isinstance(v, str):
        v = {"kind": v}
    return Metric.from_dict(dict(v))


def load_hypotheses(path: str | Path) -> list[Hypothesis]:
    """Hypotheses from a YAML or JSON file: one mapping, or a list under ``hypotheses:``.

    A top-level ``model:`` applies to every hypothesis that names none.
    """
    import yaml
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise HypothesisError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if isinstance(doc, Mapping) and "hypotheses" in doc:
        default_model = doc.get("model")
        items = doc["hypotheses"]
        if not isinstance(items, list):
            raise HypothesisError(f"{path}: 'hypotheses' must be a list of hypothesis mappings")
    else:
        default_model, items = None, [doc]
    out = []
    for i, item in enumerate(items):
        where = f"{path}, hypothesis {i + 1}" + (f" ({item.get('name')!r})" if isinstance(item, Mapping) else "")
        h = Hypothesis.from_dict(item, where)
        if h.model is None and default_model:
            h = replace(h, model=default_model)
        out.append(h)
    return out
