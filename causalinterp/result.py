"""`Result`: a tested hypothesis — verdict, reasons, table, per-prompt effects and provenance.

Round-trips through JSON (`to_json` / `Result.from_json`), so a report can be rebuilt later.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .engine.effects import Effects
from .evaluate import Evaluation
from .spec.claims import Claim
from .spec.interventions import Intervention
from .spec.metrics import Metric
from .spec.sites import Site

SCHEMA = "causalinterp.result/1"


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` via a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


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
    """What `causalinterp.run` returns for one hypothesis."""

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
    def from_dict(cls, d: dict) -> "Result":
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a causalinterp result (schema {d.get('schema')!r}, expected {SCHEMA!r})")
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
            return [cls.from_dict(r) for r in d["results"]]
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
