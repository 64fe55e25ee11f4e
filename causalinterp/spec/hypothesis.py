"""`Hypothesis`: a whole experiment as data — data, sites, intervention, metric, claim, alpha.

Also readable from YAML/JSON files, with errors that name the field and the fix.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from .claims import Claim
from .corruption import EmbeddingNoise, TracingError
from .data import ContrastSet
from .interventions import Intervention, patch
from .metrics import Metric, logit_diff
from .schema import Alpha, Bool, Correction, Int, Name, PosInt, Seed, Str, check_fields, did_you_mean
from .sites import Site, SiteSet, explicit

TASKS = ("ioi", "induction")


class HypothesisError(ValueError):
    """A hypothesis (object or file) that is not valid; the message names the field and the fix.

    Examples:
        >>> import causalinterp as ci
        >>> try:
        ...     ci.DataRef("no-such-task")
        ... except ci.HypothesisError as e:
        ...     print("unknown" in str(e))
        True
    """


@dataclass(frozen=True)
class DataRef:
    """Data built at run time for the model's tokenizer: ``DataRef("ioi", n=64, seed=0, options={...})``.

    Examples:
        >>> import causalinterp as ci
        >>> ref = ci.DataRef("ioi", n=32, seed=0)          # data: {task: ioi, n: 32, seed: 0} in YAML
        >>> ref.build(ci.load_model("testbed:ioi")).n
        32
    """

    task: Literal["ioi", "induction"]
    n: Int = 32
    seed: Seed = 0
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise HypothesisError(f"data.task {self.task!r} is unknown{did_you_mean(self.task, TASKS)}; use one of "
                                  f"{', '.join(TASKS)} or give the prompts inline (clean/corrupt/answer/wrong)")
        from .schema import spec_files  # the same checks as a file's data: (types, ranges, option names)
        spec_files().check_task_options(self.task, self.n, self.seed, self.options, HypothesisError)
        check_fields(self, HypothesisError, "data")

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
    """One claim about a model, stated as data; `causalinterp.run(h, model)` tests it.

    Examples:
        >>> import causalinterp as ci
        >>> h = ci.Hypothesis(name="induction head carries the copy", data=ci.DataRef("induction", n=32),
        ...                   sites=ci.sites.heads([(1, 2)], positions="end"), intervention=ci.patch("noise"),
        ...                   claim=ci.claims.has_effect(direction="decrease"), model="testbed:induction")
        >>> ci.run(h, progress=False).verdict
        'supported'
    """

    name: Name
    data: Any  # ContrastSet | DataRef
    sites: Any  # SiteSet
    claim: Any  # Claim
    intervention: Any = field(default_factory=lambda: patch("denoise"))  # Intervention
    metric: Any = field(default_factory=logit_diff)  # Metric
    alpha: Alpha = 0.05
    joint: Bool = False
    correction: Correction = "holm"
    n_resamples: PosInt = 9999
    seed: Seed = 0
    model: Optional[Str] = None
    description: Str = ""
    corruption: Any = None   # EmbeddingNoise instead of the corrupt prompts (causal tracing)

    def __post_init__(self):
        if isinstance(self.name, str) and not self.name:
            raise HypothesisError("a hypothesis needs a name (it labels the report)")
        check_fields(self, HypothesisError, f"hypothesis {self.name!r}")
        if not isinstance(self.data, (ContrastSet, DataRef)):
            raise HypothesisError("data must be a ContrastSet or a task reference, e.g. DataRef('ioi', n=64)")
        if isinstance(self.sites, (tuple, list)) and self.sites and all(isinstance(s, Site) for s in self.sites):
            object.__setattr__(self, "sites", explicit(self.sites))   # e.g. evaluation.significant_sites()
        from .paths import Path, PathSet, paths
        if isinstance(self.sites, Path):
            object.__setattr__(self, "sites", paths([self.sites]))
        elif isinstance(self.sites, (tuple, list)) and self.sites and all(isinstance(p, Path) for p in self.sites):
            object.__setattr__(self, "sites", paths(self.sites))
        if not isinstance(self.sites, (SiteSet, PathSet)):
            raise HypothesisError("sites must come from ci.sites (e.g. ci.sites.heads([(1, 2)]), or path sites from "
                                  "ci.sites.path(...); for sites an evaluation chose, "
                                  "ci.sites.explicit(evaluation.significant_sites()))")
        if not isinstance(self.claim, Claim):
            raise HypothesisError("claim must come from ci.claims (e.g. ci.claims.recovers(at_least=0.5))")
        if not isinstance(self.intervention, Intervention):
            raise HypothesisError("intervention must come from ci.patch(...) or ci.ablate(...)")
        if not isinstance(self.metric, Metric):
            raise HypothesisError("metric must come from ci.metrics (e.g. ci.metrics.logit_diff())")
        if self.corruption is not None and not isinstance(self.corruption, EmbeddingNoise):
            try:
                object.__setattr__(self, "corruption", EmbeddingNoise.from_dict(self.corruption))
            except TracingError as e:
                raise HypothesisError(f"hypothesis {self.name!r}, field 'corruption': {e}") from None
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
                "seed": self.seed, **({"corruption": self.corruption.to_dict()} if self.corruption else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "hypothesis") -> "Hypothesis":
        """Build from plain data (a parsed YAML/JSON file), validated strictly; errors name `where` and the field."""
        from pydantic import ValidationError

        from .schema import spec_files
        files = spec_files()
        try:
            return files.HypothesisSpec.model_validate(d).build()
        except ValidationError as e:
            raise HypothesisError("\n".join(f"{where}, {m}" for m in files.describe(e))) from None


def load_hypotheses(path: str | Path) -> list[Hypothesis]:
    """Hypotheses from a YAML or JSON file: one mapping, or a list under ``hypotheses:``.

    A top-level ``model:`` applies to every hypothesis that names none.  Validated completely (strict types,
    unknown keys, ranges, duplicate keys) before anything runs; see `causalinterp.spec.files`.

    Examples:
        >>> import causalinterp as ci
        >>> from causalinterp.examples import HYPOTHESES
        >>> [h.name for h in ci.load_hypotheses(HYPOTHESES / "hyp_induction_ko.yaml")]
        ['knocked-out head has an effect', 'induction head still works after the knock-out']
    """
    from .schema import spec_files
    return spec_files().load_hypotheses(path)
