"""Experiment tracking: log every tested hypothesis to MLflow and/or Weights & Biases.

Opt-in everywhere and never required: ``run(h, model, track="mlflow")``, ``run_all(..., track=...)``,
``causalinterp run PATH --track mlflow``, ``pytest --causal-track mlflow``.  One tracking run per
hypothesis holds

- params: the spec (model, data, sites, intervention, metric, claim, alpha, correction, resamples, seeds);
- tags: the verdict, the quantity and the package versions;
- metrics: estimate, CI ends, p-values, effect size (per hypothesis, and per site for up to
  `MAX_SITE_METRICS` sites), verdict counts, prompts and seconds;
- artifacts: ``hypothesis.json`` (the spec), ``result.json`` (everything, `Result.from_json` reads it),
  ``table.csv`` (the per-site statistics), ``report.md`` and ``report.html``.

Where it goes:

- MLflow: the tracking URI given (``MLflow(uri="http://host:5000")``), else ``MLFLOW_TRACKING_URI`` (a
  tracking server when configured), else a local file store ``./mlruns``.  The file store is in
  maintenance mode in MLflow 3 and refuses to open unless ``MLFLOW_ALLOW_FILE_STORE=true``; for a
  ``file:`` URI this module sets that variable (only if unset), since a file store is what it asked for.
- Weights & Biases: offline by default (``mode="offline"``; no network, no account; ``wandb sync DIR``
  uploads later), ``WandB(mode="online")`` or ``WANDB_MODE`` to send directly.

``track`` accepts ``"mlflow"``, ``"wandb"``, ``"mlflow,wandb"``, ``True`` (= ``"mlflow"``), a tracker
object (`MLflow`, `WandB`, or anything with ``log(result)`` and ``close()``), or a list of those.
"""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable

__all__ = ["MLflow", "WandB", "TrackingError", "trackers", "params_of", "metrics_of", "tags_of", "KINDS",
           "MAX_SITE_METRICS"]

KINDS = ("mlflow", "wandb")
MAX_SITE_METRICS = 64        # per-site metrics above this many sites would flood the store; the CSV has them all
_STATS = ("estimate", "ci_low", "ci_high", "p", "p_adj", "effect_size")


class TrackingError(ValueError):
    """Tracking asked for but not possible (unknown backend, package missing); says what to do."""


# ----------------------------------------------------------------------------- what is logged

def _flat(prefix: str, d: Any, out: dict) -> dict:
    if isinstance(d, dict):
        for k, v in d.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = d
    return out


def _short(v) -> str:
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= 490 else text[:489] + "\u2026"   # MLflow limits param values


def params_of(result) -> dict[str, str]:
    """The spec as flat string params: data (task, n, seed or 'inline'), sites, intervention, metric, claim..."""
    h = dict(result.hypothesis or {})
    data = h.pop("data", {}) or {}
    meta = result.meta or {}
    out = {"name": result.name, "model": meta.get("model") or h.get("model"), "family": meta.get("family"),
           "n_prompts": meta.get("n_prompts", result.evaluation.n_prompts)}
    if "clean" in data:   # inline prompts: too large for a param; the spec artifact has them
        out["data"] = f"inline ({len(data['clean'])} prompts){' ' + data['name'] if data.get('name') else ''}"
    else:
        _flat("data", data, out)
    h.pop("name", None)
    h.pop("model", None)
    _flat("", {k: v for k, v in h.items() if k != "description"}, out)
    return {k: _short(v) for k, v in out.items() if v is not None and v != ""}


def tags_of(result) -> dict[str, str]:
    """verdict, quantity, the first reason and the versions of the packages the result depends on."""
    e = result.evaluation
    tags = {"verdict": result.verdict, "quantity": e.quantity or "", "claim": str(e.claim),
            "reason": (result.reasons[0] if result.reasons else "")[:4000], "causalinterp.schema": "result/1"}
    for k, v in ((result.meta or {}).get("versions") or {}).items():
        if v is not None:
            tags[f"version.{k}"] = str(v)
    return tags


def _key(text: str) -> str:
    """A metric key MLflow and W&B both accept (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", text).strip()


def metrics_of(result, max_sites: int = MAX_SITE_METRICS) -> dict[str, float]:
    """Numbers of the result: the hypothesis-level estimate/CI, the smallest corrected p, verdict counts,
    and per site ``site/<label>/<stat>`` while there are at most `max_sites` sites.  Non-finite values are
    left out (an unbounded CI end is absent, not infinity)."""
    e, t = result.evaluation, result.table
    out: dict[str, float] = {"n_prompts": e.n_prompts, "n_sites": len(t), "alpha": e.alpha,
                             "seconds": (result.meta or {}).get("seconds")}
    for k in ("estimate", "ci_low", "ci_high"):
        out[k] = getattr(e, k)
    if len(t) == 1:
        for k in ("p", "p_adj", "effect_size"):
            out[k] = t[k].iloc[0]
    elif len(t):
        out["min_p_adj"] = t["p_adj"].min()
    for v in ("supported", "refuted", "null", "inconclusive"):
        out[f"n_{v}"] = int((t["verdict"] == v).sum()) if len(t) else 0
    if 1 < len(t) <= max_sites:
        for _, row in t.iterrows():
            for k in _STATS:
                out[f"site/{_key(str(row['site']))}/{k}"] = row[k]
    clean = {}
    for k, v in out.items():
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            clean[k] = v
    return clean


def write_artifacts(result, folder: Path) -> list[Path]:
    """hypothesis.json, result.json, table.csv, report.md and report.html of `result` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hypothesis.json").write_text(json.dumps(result.hypothesis, indent=1, default=str))
    result.to_json(folder / "result.json")
    result.table.to_csv(folder / "table.csv", index=False)
    result.to_markdown(folder / "report.md")
    result.to_html(folder / "report.html")
    return sorted(folder.iterdir())


# ----------------------------------------------------------------------------- backends

class MLflow:
    """One MLflow run per hypothesis in `experiment` (default ``causalinterp``).

    uri: a tracking URI (``http://host:5000``, ``sqlite:///mlflow.db``, ``file:/path/mlruns``); default
    ``MLFLOW_TRACKING_URI`` if set, else ``file:./mlruns`` (absolute, resolved when the tracker is made).
    """

    def __init__(self, uri: str | None = None, experiment: str = "causalinterp", tags: dict | None = None):
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise TrackingError("tracking to MLflow needs the mlflow package: pip install 'causalinterp[track]' "
                                "(or mlflow-skinny)") from None
        uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()
        if "://" not in uri and not uri.startswith(("file:", "databricks")):
            uri = Path(uri).resolve().as_uri()   # a plain directory means a file store there
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient
        self.uri, self.experiment, self.tags = uri, experiment, dict(tags or {})
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
        self.run_ids: list[str] = []

    def log(self, result) -> str:
        """Log `result` as a finished run; returns the run id."""
        from mlflow.entities import Metric, Param, RunTag
        import time
        c = self.client
        run = c.create_run(self.experiment_id, run_name=result.name[:250],
                           tags={**tags_of(result), **self.tags})
        rid = run.info.run_id
        try:
            now = int(time.time() * 1000)
            params = [Param(k[:250], v) for k, v in params_of(result).items()]
            metrics = [Metric(_key(k)[:250], v, now, 0) for k, v in metrics_of(result).items()]
            for i in range(0, max(len(params), len(metrics)), 100):  # log_batch takes at most 100 params
                c.log_batch(rid, metrics=metrics[i:i + 100], params=params[i:i + 100], tags=[])
            with tempfile.TemporaryDirectory() as tmp:
                write_artifacts(result, Path(tmp))
                c.log_artifacts(rid, tmp)
            c.set_terminated(rid, "FINISHED")
        except BaseException:
            c.set_terminated(rid, "FAILED")
            raise
        self.run_ids.append(rid)
        return rid

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"MLflow(uri={self.uri!r}, experiment={self.experiment!r})"


class WandB:
    """One Weights & Biases run per hypothesis in `project`; offline unless ``mode="online"``/``WANDB_MODE``.

    dir: where ``wandb/`` run folders go (default: the current directory).  A run's config is the spec,
    its summary the verdict and numbers; the per-site table is a ``wandb.Table`` and the files
    (spec, result JSON, CSV, reports) a ``causalinterp-result`` artifact.
    """

    def __init__(self, project: str = "causalinterp", mode: str | None = None, dir: str | os.PathLike | None = None,
                 entity: str | None = None, tags: Iterable[str] = ()):
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise TrackingError("tracking to Weights & Biases needs the wandb package: "
                                "pip install 'causalinterp[track]'") from None
        self.project, self.entity, self.tags = project, entity, tuple(tags)
        self.mode = mode or os.environ.get("WANDB_MODE") or "offline"
        self.dir = str(Path(dir if dir is not None else ".").resolve())
        Path(self.dir).mkdir(parents=True, exist_ok=True)
        self.run_dirs: list[str] = []

    def log(self, result) -> str:
        """Log `result` as one finished run; returns its local run directory."""
        import wandb
        run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, dir=self.dir,
                         name=result.name[:128], config=params_of(result), tags=[result.verdict, *self.tags],
                         reinit="create_new", settings=wandb.Settings(silent=True, console="off"))
        try:
            run.summary.update({**tags_of(result), **metrics_of(result)})
            run.log({"sites": wandb.Table(dataframe=result.table.astype(str))})
            with tempfile.TemporaryDirectory() as tmp:
                art = wandb.Artifact(_key(f"result-{result.name}").replace(" ", "_").replace("/", "_")[:120],
                                     type="causalinterp-result")
                for f in write_artifacts(result, Path(tmp)):
                    art.add_file(str(f))
                run.log_artifact(art)
                run_dir = str(Path(run.dir).parent)
                run.finish()
        except BaseException:
            run.finish(exit_code=1)
            raise
        self.run_dirs.append(run_dir)
        return run_dir

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"WandB(project={self.project!r}, mode={self.mode!r}, dir={self.dir!r})"


def trackers(track) -> list:
    """The tracker objects `track` asks for (see the module docstring); ``[]`` for None/False."""
    if track is None or track is False:
        return []
    if track is True:
        return [MLflow()]
    if isinstance(track, str):
        kinds = [k.strip().lower() for k in track.split(",") if k.strip()]
        bad = [k for k in kinds if k not in KINDS]
        if bad or not kinds:
            raise TrackingError(f"track={track!r}: unknown tracker {bad[0] if bad else ''!r}; use 'mlflow', 'wandb' "
                                "or 'mlflow,wandb' (or pass ci.tracking.MLflow(...) / WandB(...))")
        return [MLflow() if k == "mlflow" else WandB() for k in dict.fromkeys(kinds)]
    if isinstance(track, (list, tuple)):
        return [t for item in track for t in trackers(item)]
    if callable(getattr(track, "log", None)):
        return [track]
    raise TrackingError(f"track must be 'mlflow', 'wandb', True, a tracker object or a list of them; got "
                        f"{type(track).__name__}")
