"""`Result`: a tested hypothesis — verdict, reasons, table, per-prompt effects and provenance.

Round-trips through JSON (`to_json` / `Result.from_json`), so a report can be rebuilt later.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional

import annotated_types as at
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .engine.effects import Effects
from .evaluate import Evaluation
from .output import write_atomic  # noqa: F401 (re-exported: written results are atomic)
from .spec.claims import Claim
from .spec.interventions import Intervention
from .spec.metrics import Metric
from .spec.schema import Alpha, Bool, Correction, Float, Name, PosInt, Str, StrictModel
from .spec.sites import Site
from .verdict import VERDICTS

SCHEMA = "causalinterp.result/1"


class ResultFileError(ValueError):
    """A result file that does not match the schema or whose statistics contradict its verdict."""


def _plain(x):
    """numpy scalars/arrays -> Python types, NaN -> None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if x is pd.NA:
        return None
    return x


@dataclass(frozen=True, eq=False)
class Result:
    """What `causalinterp.run` returns for one hypothesis.

    Examples:
        >>> import causalinterp as ci
        >>> h = ci.Hypothesis(name="induction head", data=ci.DataRef("induction", n=32), model="testbed:induction",
        ...                   sites=ci.sites.heads([(1, 2)], positions="end"), intervention=ci.patch("noise"),
        ...                   claim=ci.claims.has_effect(direction="decrease"))
        >>> result = ci.run(h, progress=False)
        >>> result.verdict
        'supported'
        >>> _ = result.to_json("result.json")              # also to_html(...), to_markdown(...)
        >>> ci.Result.from_json("result.json").verdict
        'supported'
    """

    name: str
    hypothesis: dict            # the hypothesis as plain data (Hypothesis.to_dict())
    evaluation: Evaluation
    effects: Effects
    meta: dict = field(default_factory=dict)  # model, versions, seconds, seeds

    @property
    def verdict(self) -> str:
        return self.evaluation.verdict

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.evaluation.reasons

    @property
    def table(self) -> pd.DataFrame:
        return self.evaluation.table

    @property
    def claim(self) -> Claim:
        return self.evaluation.claim

    def __str__(self) -> str:
        est = ""
        if self.evaluation.estimate is not None:
            e = self.evaluation
            est = f"  {e.quantity} {e.estimate:.3g} [{e.ci_low:.3g}, {e.ci_high:.3g}]"
        return f"{self.name}: {self.verdict.upper()}{est}\n" + "\n".join(f"  - {r}" for r in self.reasons)

    # --- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        e = self.effects
        effects = {"values": e.values, "clean": e.clean, "corrupt": e.corrupt, "base": e.base, "target": e.target,
                   "sites": [s.to_dict() for s in e.sites], "joint": e.joint,
                   "intervention": e.intervention.to_dict() if e.intervention is not None else None,
                   "metric": e.metric.to_dict() if e.metric is not None else None,
                   "clusters": None if e.clusters is None else [str(c) for c in e.clusters],
                   "random_values": e.random_values, "meta": e.meta}
        return _plain({"schema": SCHEMA, "name": self.name, "hypothesis": self.hypothesis,
                       "evaluation": self.evaluation.to_dict(), "effects": effects, "meta": self.meta})

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """JSON text; also written atomically to `path` when given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            write_atomic(path, text)
        return text

    @classmethod
    def from_dict(cls, d: dict, where: str = "result") -> "Result":
        """Inverse of `to_dict`; the dict is validated first (`ResultFileError` lists every problem)."""
        check_result_dict(d, where)
        fx = d["effects"]
        arr = lambda v: None if v is None else np.asarray(v, dtype=float)  # noqa: E731
        effects = Effects(values=np.asarray(fx["values"], dtype=float), clean=arr(fx["clean"]),
                          corrupt=arr(fx["corrupt"]), sites=tuple(Site.from_dict(s) for s in fx["sites"]),
                          base=arr(fx["base"]), target=arr(fx["target"]), joint=fx["joint"],
                          intervention=Intervention.from_dict(fx["intervention"]) if fx["intervention"] else None,
                          metric=Metric.from_dict(fx["metric"]) if fx["metric"] else None,
                          clusters=None if fx["clusters"] is None else np.asarray(fx["clusters"]),
                          random_values=arr(fx["random_values"]), meta=fx.get("meta", {}))
        ev = d["evaluation"]
        table = pd.DataFrame(ev["table"])
        evaluation = Evaluation(verdict=ev["verdict"], reasons=tuple(ev["reasons"]), table=table,
                                claim=Claim.from_dict(ev["claim"]), quantity=ev["quantity"], alpha=ev["alpha"],
                                correction=ev["correction"], n_resamples=ev["n_resamples"],
                                confidence_level=ev["confidence_level"], seed=ev["seed"],
                                n_prompts=ev["n_prompts"], n_clusters=ev.get("n_clusters"),
                                estimate=ev.get("estimate"), ci_low=ev.get("ci_low"), ci_high=ev.get("ci_high"))
        return cls(name=d["name"], hypothesis=d["hypothesis"], evaluation=evaluation, effects=effects,
                   meta=d.get("meta", {}))

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> "Result | list[Result]":
        """Read a result written by `to_json` (a file path or the JSON text); a list for a session file."""
        text = str(path_or_text)
        if not text.lstrip().startswith(("{", "[")):
            text = Path(path_or_text).read_text()
        d = json.loads(text)
        if isinstance(d, dict) and "results" in d:
            if not isinstance(d["results"], list):
                raise ResultFileError("'results' must be a list of results")
            return [cls.from_dict(r, f"result {i + 1}" + (f" ({r.get('name')!r})" if isinstance(r, dict) else ""))
                    for i, r in enumerate(d["results"])]
        return cls.from_dict(d)

    # --- reports (see causalinterp.report) ------------------------------------------------------
    def to_html(self, path: str | os.PathLike | None = None) -> str:
        from .report import html
        return html.render([self], path)

    def to_markdown(self, path: str | os.PathLike | None = None) -> str:
        from .report import markdown
        return markdown.render([self], path)

    def _repr_html_(self) -> str:  # notebooks show the report inline
        from .report import html
        return html.render_fragment([self])


def versions() -> dict[str, Any]:
    """Versions of the packages a result depends on (for reproducibility)."""
    import platform
    out = {"python": platform.python_version()}
    for mod in ("causalinterp", "torch", "nnsight", "transformers", "numpy", "scipy", "statsmodels"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = None
    return out


# ----------------------------------------------------------------------------- the result file's schema

class _Row(BaseModel):
    """One row of a result's statistics table (more columns are allowed: the table grows with the claims)."""

    model_config = ConfigDict(extra="allow")
    site: Str
    verdict: Literal[VERDICTS]
    estimate: Optional[Float] = None
    ci_low: Optional[Float] = None
    ci_high: Optional[Float] = None
    p: Optional[Annotated[Float, at.Ge(0), at.Le(1)]] = None
    p_adj: Optional[Annotated[Float, at.Ge(0), at.Le(1)]] = None

    @model_validator(mode="after")
    def _consistent(self):
        if self.ci_low is not None and self.ci_high is not None and self.ci_low > self.ci_high:
            raise ValueError(f"ci_low {self.ci_low:g} is above ci_high {self.ci_high:g}")
        if self.p is not None and self.p_adj is not None and self.p_adj < self.p - 1e-12:
            raise ValueError(f"adjusted p {self.p_adj:g} is below the raw p {self.p:g} (a correction never lowers "
                             "a p-value)")
        return self


class _EvaluationFile(StrictModel):
    what: ClassVar[str] = "evaluation"
    verdict: Literal[VERDICTS]
    reasons: list[Str]
    claim: Any
    quantity: Optional[Str] = None
    alpha: Alpha
    correction: Correction
    n_resamples: PosInt
    confidence_level: Annotated[Float, at.Gt(0), at.Lt(1)]
    seed: Any = None
    n_prompts: PosInt
    n_clusters: Optional[PosInt] = None
    estimate: Optional[Float] = None
    ci_low: Optional[Float] = None
    ci_high: Optional[Float] = None
    table: Annotated[list[_Row], at.MinLen(1)]

    @model_validator(mode="after")
    def _consistent(self):
        from .spec.files import ClaimSpec, validate
        validate(ClaimSpec, self.claim, ValueError, "claim")
        if self.ci_low is not None and self.ci_high is not None and self.ci_low > self.ci_high:
            raise ValueError(f"ci_low {self.ci_low:g} is above ci_high {self.ci_high:g}")
        from .verdict import Decision, combine
        expected, _ = combine([Decision(r.verdict, "", "") for r in self.table], [r.site for r in self.table],
                              self.correction)
        if expected != self.verdict:
            raise ValueError(f"the verdict {self.verdict!r} does not follow from the sites' verdicts "
                             f"({', '.join(r.verdict for r in self.table)}), which give {expected!r}; the file was "
                             "edited or is corrupt: rerun the hypothesis")
        return self


class _EffectsFile(StrictModel):
    what: ClassVar[str] = "effects"
    values: list[list[Optional[Float]]]
    clean: Optional[list[Optional[Float]]]
    corrupt: Optional[list[Optional[Float]]]
    base: Optional[list[Optional[Float]]]
    target: Optional[list[Optional[Float]]]
    sites: list[dict]
    joint: Bool
    intervention: Optional[dict] = None
    metric: Optional[dict] = None
    clusters: Optional[list] = None
    random_values: Optional[list[list[Optional[Float]]]] = None
    meta: dict = {}

    @model_validator(mode="after")
    def _shapes(self):
        n = len(self.values)
        widths = {len(row) for row in self.values}
        if len(widths) > 1:
            raise ValueError("values: rows of different lengths")
        for name in ("clean", "corrupt", "base", "target", "clusters"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"{name} has {len(v)} entries for {n} prompts")
        return self


class ResultFile(StrictModel):
    """A result as written by `Result.to_json` (``causalinterp.result/1``): checked before it is used."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="causalinterp result")
    what: ClassVar[str] = "a result"
    schema_: Literal["causalinterp.result/1"] = Field(alias="schema")
    name: Name
    hypothesis: dict
    evaluation: _EvaluationFile
    effects: _EffectsFile
    meta: dict = {}


def check_result_dict(d, where: str = "result") -> None:
    """Raise `ResultFileError` listing every problem of a result dict (schema, verdicts, statistics)."""
    if not isinstance(d, dict):
        raise ResultFileError(f"{where}: expected a result (a JSON object with schema {SCHEMA!r}) or a session "
                              f"file (an object with 'results'), got {type(d).__name__}")
    if d.get("schema") != SCHEMA:
        raise ResultFileError(f"{where}: not a causalinterp result (schema {d.get('schema')!r}, expected {SCHEMA!r})")
    try:
        ResultFile.model_validate(d)
    except ValidationError as e:
        from .spec.files import describe
        raise ResultFileError(f"{where}: " + "; ".join(describe(e))) from None
