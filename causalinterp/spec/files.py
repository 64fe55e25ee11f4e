"""Hypothesis files (YAML/JSON): their schema, strict validation, errors with line numbers, JSON Schema export.

The file form of each spec is a pydantic type over the spec class itself (`Site`, `Intervention`, `Metric`,
the claims, `DataRef`, `ContrastSet`, `Hypothesis`), so a file accepts exactly what the Python API accepts.
Everything is checked here, before any model is loaded: unknown keys (with "did you mean"), wrong types (no
coercion: ``"false"`` is not a bool, ``8.7`` is not an int, YAML's ``yes``/``on`` are booleans, not text),
ranges, duplicate YAML keys, and named positions the task's data does not have.

    load_hypotheses(path)        -> list[Hypothesis]      (raises HypothesisError naming file, line, field, fix)
    hypothesis_json_schema()     -> dict                  (``causalinterp schema > hypothesis.schema.json``)
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

import annotated_types as at
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Tag, TypeAdapter,
                      ValidationError, model_validator)
from pydantic_core import PydanticCustomError

from . import features as _features
from . import paths as _paths
from . import sites as _sites
from .claims import Claim
from .corruption import EmbeddingNoise
from .data import ContrastSet
from .hypothesis import DataRef, Hypothesis, HypothesisError
from .interventions import KINDS as INTERVENTION_KINDS
from .interventions import Intervention
from .metrics import KINDS as METRIC_KINDS
from .metrics import Metric
from .schema import (Alpha, Bool, Correction, Float, Int, Name, NonNegInt, Position, PosInt, Seed, Str, _adapter,
                     StrictModel, check_keys, clean_loc, did_you_mean, explain, format_loc, int_type,
                     keys_checked)
from .sites import HEAD_COMPONENTS, Component, Site, SiteSet

__all__ = ["load_hypotheses", "hypothesis_json_schema", "validate", "SitesSpec", "HypothesisSitesSpec", "ClaimSpec",
           "InterventionSpec",
           "MetricSpec", "ContrastSetSpec", "DataSpec", "HypothesisSpec"]


_Strict = StrictModel


def _one_or_many(tp):
    """A list of `tp`, also written as a single `tp` (``positions: end`` = ``positions: [end]``)."""
    return Annotated[list[tp], BeforeValidator(lambda v: v if isinstance(v, (list, tuple)) or v is None else [v],
                                               json_schema_input_type=Union[tp, list[tp]])]


def _kind_form(cls, kinds, what: str):
    """`cls` written as ``{kind: ..., <fields>}`` or just its kind name."""
    def before(v):
        return {"kind": v} if isinstance(v, str) else v
    return Annotated[keys_checked(cls, what),
                     BeforeValidator(before, json_schema_input_type=Union[Literal[tuple(kinds)], cls])]


# ----------------------------------------------------------------------------- sites

class _Grid(_Strict):
    what: ClassVar[str] = "sites (a grid: component, layers, heads, positions)"
    component: Component
    layers: Optional[_one_or_many(NonNegInt)] = None
    heads: Optional[_one_or_many(NonNegInt)] = None
    positions: Optional[_one_or_many(Position)] = None

    def build(self) -> SiteSet:
        t = lambda x: None if x is None else tuple(x)  # noqa: E731
        return SiteSet(self.component, t(self.layers), t(self.heads), t(self.positions))


class _SelectedOn(_Strict):
    what: ClassVar[str] = "selected_on (the prompts the sites were chosen on: prompts, rule)"
    prompts: list[Str]
    rule: Str = "selected"


def _feature_entry(v):
    """A listed site written with a ``feature`` (what `FeatureSite.to_dict` writes) becomes a `FeatureSite`."""
    if isinstance(v, dict) and "feature" in v:
        try:
            return _features.site_from_dict(v)
        except ValueError as e:
            raise PydanticCustomError("feature_site", "{msg}", {"msg": str(e)}) from None
    return v


class _List(_Strict):
    what: ClassVar[str] = "sites (a list: sites, selected_on)"
    sites: Annotated[list[Annotated[keys_checked(Site, "a site"), BeforeValidator(_feature_entry)]], at.MinLen(1)]
    selected_on: Optional[_SelectedOn] = None

    def build(self) -> SiteSet:
        return SiteSet(explicit=tuple(self.sites),
                       selected_on=None if self.selected_on is None else self.selected_on.model_dump())


class _Pairs(_Strict):
    what: ClassVar[str] = "sites (heads as [layer, head] pairs: heads, positions, component)"
    heads: Annotated[list[tuple[NonNegInt, NonNegInt]], at.MinLen(1)]
    positions: _one_or_many(Position) = ["all"]
    component: Literal[HEAD_COMPONENTS] = "head_out"

    def build(self) -> SiteSet:
        return _sites.heads(self.heads, positions=tuple(self.positions), component=self.component)


class _SubspaceBody(_Strict):
    what: ClassVar[str] = "subspace (component, layer, head, positions, basis, name)"
    component: Component
    layer: NonNegInt
    head: Optional[NonNegInt] = None
    positions: _one_or_many(Position) = ["all"]
    basis: Union[Annotated[list[Annotated[list[Float], at.MinLen(1)]], at.MinLen(0)], Annotated[list[Float], at.MinLen(1)],
                 Str]
    name: Optional[Str] = None


class _Subspace(_Strict):
    what: ClassVar[str] = "sites (a subspace: subspace: {component, layer, positions, basis})"
    subspace: _SubspaceBody

    def build(self) -> SiteSet:
        b = self.subspace
        basis = _features.read_basis(b.basis) if isinstance(b.basis, str) else b.basis
        try:
            return _features.subspace(b.component, b.layer, tuple(b.positions), basis, head=b.head, name=b.name)
        except ValueError as e:
            raise PydanticCustomError("feature_site", "{msg}", {"msg": str(e)}) from None


class _SAEBody(_Strict):
    what: ClassVar[str] = "sae (path, features, positions, each, error, component, layer)"
    path: Str
    features: Optional[list[NonNegInt]] = None
    positions: _one_or_many(Position) = ["all"]
    each: Bool = False
    error: Bool = False
    component: Optional[Component] = None
    layer: Optional[NonNegInt] = None


class _SAE(_Strict):
    what: ClassVar[str] = "sites (SAE latents: sae: {path, features, positions})"
    sae: _SAEBody

    def build(self) -> SiteSet:
        b = self.sae
        try:
            return _features.sae_features(_features.load_registered_sae(b.path), b.features, tuple(b.positions),
                                          each=b.each, error=b.error, component=b.component, layer=b.layer)
        except (ValueError, OSError) as e:
            raise PydanticCustomError("feature_site", "{msg}", {"msg": str(e)}) from None


def _sites_tag(v) -> str:
    if isinstance(v, dict) and "path" in v:
        return "<path>"
    if isinstance(v, dict) and "paths" in v:
        return "<paths>"
    if isinstance(v, dict) and "subspace" in v:
        return "<subspace>"
    if isinstance(v, dict) and "sae" in v:
        return "<sae>"
    if isinstance(v, dict) and "sites" in v:
        return "<list>"
    if isinstance(v, dict) and isinstance(v.get("heads"), list) and v["heads"] and isinstance(v["heads"][0], list):
        return "<pairs>"
    return "<grid>"


SitesSpec = Annotated[Union[Annotated[_Grid, Tag("<grid>")], Annotated[_List, Tag("<list>")],
                            Annotated[_Pairs, Tag("<pairs>")], Annotated[_Subspace, Tag("<subspace>")],
                            Annotated[_SAE, Tag("<sae>")]],
                      Discriminator(_sites_tag), AfterValidator(lambda m: m.build())]


# path sites (causalinterp.spec.paths): senders and receivers are written like node sites
def _path_error(e: Exception, field: str):
    return PydanticCustomError("path_site", "{msg}", {"msg": str(e), "field": field})


def _named_receiver(v):
    if isinstance(v, str) and v != "logits":
        raise PydanticCustomError("path_site", "receivers {v}: the only named receiver is 'logits'{hint}; give heads "
                                  "({heads} with via: q, k or v) or MLPs ({mlps})",
                                  {"v": repr(v), "hint": did_you_mean(v, ["logits"]),
                                   "heads": "{heads: [[layer, head]]}", "mlps": "{component: mlp_out, layers: [...]}"})
    return v


def _head_receivers(x) -> bool:
    """Whether receivers (a SiteSet) name heads by their output (head_out), which need via: q, k or v."""
    if isinstance(x, str):
        return False
    return x.component == "head_out" or any(s.component == "head_out" for s in x.explicit)


class _PathBody(_Strict):
    what: ClassVar[str] = "path (senders, receivers, via)"
    senders: SitesSpec
    receivers: Annotated[Union[Literal["logits"], SitesSpec], BeforeValidator(_named_receiver)]
    via: Optional[Literal["q", "k", "v"]] = None

    @model_validator(mode="after")
    def _via(self):
        if self.via is None and _head_receivers(self.receivers):
            raise PydanticCustomError("path_site", "head receivers take the path through their query, key or value "
                                      "input: add via: q, k or v", {"field": "via"})
        if self.via is not None and not _head_receivers(self.receivers):
            raise PydanticCustomError("path_site", "via applies to head receivers ({heads}); drop it for "
                                      "'logits' or MLP receivers", {"heads": "{heads: [[layer, head]]}",
                                                                     "field": "via"})
        return self

    def build_set(self) -> "_paths.PathSet":
        """Every (sender, receiver) pair, one column each (`ci.sites.path`)."""
        try:
            return _paths.path(self.senders, self.receivers, self.via)
        except _sites.SiteError as e:
            raise PydanticCustomError("path_site", "{msg}", {"msg": str(e), "field": "path"}) from None

    def build_one(self, where: str) -> "_paths.Path":
        """One path from all senders to all receivers (a `ci.sites.Path`); grids must be explicit lists here."""
        def explicit(x, what):
            if isinstance(x, str):
                return (x,)
            if not x.explicit:
                raise PydanticCustomError("path_site", "an entry of paths lists its {what} (e.g. {example}), not a "
                                          "grid; use path: for a grid of sender x receiver pairs",
                                          {"what": what, "example": "{heads: [[0, 1]]} or {sites: [...]}",
                                           "field": f"{where}.{what}"})
            return x.explicit
        receivers = explicit(self.receivers, "receivers")
        if self.via is not None:
            receivers = tuple(_sites.Site(self.via, r.layer, r.head, r.position)
                              if r.component == "head_out" else r for r in receivers)
        try:
            return _paths.Path(explicit(self.senders, "senders"), receivers)
        except _sites.SiteError as e:
            raise PydanticCustomError("path_site", "{msg}", {"msg": str(e), "field": where}) from None


class _PathSites(_Strict):
    what: ClassVar[str] = "sites (a path: path: {senders, receivers, via})"
    path: _PathBody

    def build(self) -> "_paths.PathSet":
        return self.path.build_set()


class _PathList(_Strict):
    what: ClassVar[str] = "sites (explicit paths: paths: [{senders, receivers, via}, ...])"
    paths: Annotated[list[_PathBody], at.MinLen(1)]

    def build(self) -> "_paths.PathSet":
        return _paths.paths([p.build_one(f"paths.{i}") for i, p in enumerate(self.paths)])


# a hypothesis's sites: node sites or path sites
HypothesisSitesSpec = Annotated[Union[Annotated[_Grid, Tag("<grid>")], Annotated[_List, Tag("<list>")],
                                      Annotated[_Pairs, Tag("<pairs>")], Annotated[_Subspace, Tag("<subspace>")],
                                      Annotated[_SAE, Tag("<sae>")], Annotated[_PathSites, Tag("<path>")],
                                      Annotated[_PathList, Tag("<paths>")]],
                                Discriminator(_sites_tag), AfterValidator(lambda m: m.build())]

# ----------------------------------------------------------------------------- intervention, metric, claim

InterventionSpec = _kind_form(Intervention, INTERVENTION_KINDS, "intervention")
MetricSpec = _kind_form(Metric, METRIC_KINDS, "metric")


def _claim_before(v):
    if isinstance(v, str):
        v = {"kind": v}
    if isinstance(v, dict):
        kind = v.get("kind")
        kinds = list(Claim._registry)
        if kind is None:
            raise PydanticCustomError("claim_kind", "a claim needs a kind: one of {kinds}", {"kinds": ", ".join(kinds)})
        if kind not in Claim._registry:
            raise PydanticCustomError("claim_kind", "unknown claim kind {kind}{hint}; choose one of {kinds}",
                                      {"kind": repr(kind), "hint": did_you_mean(kind, kinds), "kinds": ", ".join(kinds)})
    return v


def _claim_union():
    members = tuple(Annotated[keys_checked(cls, f"claim {kind!r}", drop=("kind",)), Tag(f"<{kind}>")]
                    for kind, cls in Claim._registry.items())
    shown = Union[(Literal[tuple(Claim._registry)],) + tuple(Claim._registry.values())]  # JSON Schema
    return Annotated[Union[members], Discriminator(lambda v: f"<{v.get('kind')}>" if isinstance(v, dict) else None),
                     BeforeValidator(_claim_before, json_schema_input_type=shown)]


ClaimSpec = _claim_union()

# ----------------------------------------------------------------------------- data


class EmbeddingNoiseSpec(_Strict):
    """Gaussian noise on the input embeddings as the corrupt run (causal tracing): `causalinterp.EmbeddingNoise`."""

    what: ClassVar[str] = "corruption (embedding_noise: positions, scale, seed, std)"
    kind: Literal["embedding_noise"] = "embedding_noise"
    positions: Annotated[list[Position], at.MinLen(1)]
    scale: Annotated[Float, at.Gt(0)] = 3.0
    seed: Seed = 0
    std: Optional[Annotated[Float, at.Gt(0)]] = None

    def build(self) -> EmbeddingNoise:
        return EmbeddingNoise(positions=tuple(self.positions), scale=self.scale, seed=self.seed, std=self.std)


class _Inline(_Strict):
    what: ClassVar[str] = "data (inline token ids: clean, corrupt, answer, wrong, positions, clusters, name)"
    clean: Annotated[list[Annotated[list[Int], at.MinLen(1)]], at.MinLen(1)]
    corrupt: Annotated[list[Annotated[list[Int], at.MinLen(1)]], at.MinLen(1)]
    answer: Union[list[Int], Int]
    wrong: Optional[Union[list[Int], Int]] = None
    positions: dict[str, Union[list[Int], Int]] = {}
    clusters: Optional[list[Union[Int, Str]]] = None
    name: Str = ""
    corruption: Optional[EmbeddingNoiseSpec] = None

    def build(self) -> ContrastSet:
        data = ContrastSet.from_tokens(self.clean, self.corrupt, self.answer, self.wrong, self.positions,
                                       self.clusters, self.name)
        return data if self.corruption is None else data.with_noise(self.corruption.build())


class _Ioi(_Strict):
    what: ClassVar[str] = "data (task ioi)"
    task: Literal["ioi"]
    n: int_type(2) = 32
    seed: Seed = 0
    templates: Union[Str, list[Union[Int, Str]]] = "mixed"
    corruption: Literal["ABC", "swap"] = "ABC"
    names: Optional[list[Name]] = None
    places: Optional[list[Name]] = None
    objects: Optional[list[Name]] = None
    min_names: PosInt = 10

    def build(self) -> DataRef:
        opts = {k: getattr(self, k) for k in self.model_fields_set if k not in ("task", "n", "seed")}
        return DataRef(self.task, self.n, self.seed, opts)


class _Induction(_Strict):
    what: ClassVar[str] = "data (task induction)"
    task: Literal["induction"]
    n: int_type(2) = 32
    seed: Seed = 0
    seq_len: int_type(2) = 10
    tokens: Optional[list[NonNegInt]] = None
    bos: Union[Literal["auto"], NonNegInt, None] = "auto"

    def build(self) -> DataRef:
        opts = {k: getattr(self, k) for k in self.model_fields_set if k not in ("task", "n", "seed")}
        return DataRef(self.task, self.n, self.seed, opts)


TASK_MODELS = {"ioi": _Ioi, "induction": _Induction}


def _data_before(v):
    if isinstance(v, dict) and "task" in v and v["task"] not in TASK_MODELS:
        raise PydanticCustomError("unknown_task", "unknown task {task}{hint}; use one of {tasks}, or give the prompts "
                                  "inline (clean, corrupt, answer, wrong)",
                                  {"task": repr(v["task"]), "hint": did_you_mean(v["task"], TASK_MODELS),
                                   "tasks": ", ".join(TASK_MODELS), "field": "task"})
    return v


def _data_tag(v):
    if isinstance(v, dict) and "task" in v:
        return f"<{v['task']}>" if v["task"] in TASK_MODELS else None
    if isinstance(v, dict) and "clean" in v:
        return "<inline>"
    return None


ContrastSetSpec = Annotated[_Inline, AfterValidator(lambda m: m.build())]
DataSpec = Annotated[Union[Annotated[_Ioi, Tag("<ioi>")], Annotated[_Induction, Tag("<induction>")],
                           Annotated[_Inline, Tag("<inline>")]],
                     Discriminator(_data_tag, custom_error_type="data_form",
                                   custom_error_message="give a task reference ({task: ioi | induction, n: 64, "
                                                        "seed: 0}) or inline token ids ({clean: [[...]], corrupt: "
                                                        "[[...]], answer: [...], wrong: [...]})"),
                     AfterValidator(lambda m: m.build()), BeforeValidator(_data_before)]


def check_task_options(task: str, n, seed, options: dict, error) -> None:
    """`DataRef` from Python: the same checks as a file's ``data:`` (used by `DataRef.__post_init__`)."""
    validate(TASK_MODELS[task], {"task": task, "n": n, "seed": seed, **dict(options)}, error, "data")


# ----------------------------------------------------------------------------- hypothesis

TASK_POSITIONS = {"ioi": {"IO", "S1", "S2", "end"}, "induction": {"end", "first_answer", "first_end"}}


def _task_position_ok(task: str, name: str) -> bool:
    return name in TASK_POSITIONS[task] or (task == "induction" and re.fullmatch(r"rep\d+", name) is not None)


class HypothesisSpec(_Strict):
    """One hypothesis in a file: the fields of `causalinterp.Hypothesis`."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="causalinterp hypothesis",
                              validate_default=True)
    what: ClassVar[str] = "a hypothesis"
    name: Name
    description: Str = ""
    model: Optional[Str] = None
    data: DataSpec
    sites: HypothesisSitesSpec
    claim: ClaimSpec
    intervention: InterventionSpec = "denoise"
    metric: MetricSpec = "logit_diff"
    alpha: Alpha = 0.05
    joint: Bool = False
    correction: Correction = "holm"
    n_resamples: PosInt = 9999
    seed: Seed = 0
    corruption: Optional[EmbeddingNoiseSpec] = None

    @model_validator(mode="after")
    def _positions_exist(self):
        if isinstance(self.data, DataRef):
            task = self.data.task
            names = [("sites", s.position) for s in _explicit_or_grid(self.sites)]
            names.append(("metric", self.metric.position))
            names += [("corruption", p) for p in (self.corruption.positions if self.corruption else ())]
            for field, p in names:
                if isinstance(p, str) and p != "all" and not _task_position_ok(task, p):
                    known = sorted(TASK_POSITIONS[task]) + (["rep0", "rep1", "..."] if task == "induction" else [])
                    raise PydanticCustomError(
                        "unknown_position", "named position {position} does not exist in the {task} task's data{hint}; "
                        "it has {known}", {"position": repr(p), "task": task, "hint": did_you_mean(p, known),
                                           "known": ", ".join(known), "field": field})
        return self

    def build(self) -> Hypothesis:
        return Hypothesis(name=self.name, data=self.data, sites=self.sites, claim=self.claim,
                          intervention=self.intervention, metric=self.metric, alpha=self.alpha, joint=self.joint,
                          correction=self.correction, n_resamples=self.n_resamples, seed=self.seed,
                          model=self.model, description=self.description,
                          corruption=None if self.corruption is None else self.corruption.build())


def _explicit_or_grid(ss):
    if isinstance(ss, _paths.PathSet):  # the senders' and receivers' positions
        if ss.explicit:
            return [s for p in ss.explicit for s in p.senders + p.receivers if isinstance(s, Site)]
        return [s for part in (ss.senders, ss.receivers) if not isinstance(part, str)
                for s in _explicit_or_grid(part)]
    if ss.explicit:
        return list(ss.explicit)
    return [Site("resid_pre", 0, None, p) for p in (ss.positions or ())]


class HypothesesFile(_Strict):
    """A file of several hypotheses; a top-level ``model`` applies to those that name none."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="causalinterp hypotheses file")
    what: ClassVar[str] = "a hypotheses file (model, hypotheses)"
    model: Optional[Str] = None
    hypotheses: Annotated[list[HypothesisSpec], at.MinLen(1)]


def hypothesis_json_schema() -> dict:
    """JSON Schema of a hypothesis file (one hypothesis, or ``{model, hypotheses: [...]}``), for editors."""
    schema = TypeAdapter(Union[HypothesisSpec, HypothesesFile]).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "causalinterp hypothesis file"
    return schema


# ----------------------------------------------------------------------------- validation entry points

def describe(e: ValidationError, lines: dict | None = None, prefix: str = "", root: tuple = ()) -> list[str]:
    """One line per error: ``[line N, ]field PATH: what is wrong and how to fix it``."""
    out = []
    for err in e.errors():
        loc = clean_loc(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == "unknown_field":
            loc = loc + (ctx.get("name"),)
        elif "field" in ctx:
            loc = loc + (ctx["field"],)
        line = _line_of(lines, root + loc) if lines else None
        field = format_loc(loc[:-1] if err["type"] in ("unknown_field", "missing") else loc)
        if err["type"] == "missing" and loc:
            err = {**err, "msg": f"missing required field {loc[-1]!r}", "type": "missing_field"}
        where = ", ".join(x for x in (f"line {line}" if line else "", f"field {prefix}{field}" if field or prefix
                                      else "") if x)
        out.append(f"{where}: {explain(err)}" if where else explain(err))
    return out


def validate(tp, data, error: type[ValueError], what: str):
    """Validate `data` (plain Python: parsed YAML/JSON) against the file type `tp`; `error` lists every problem."""
    try:
        return _adapter(tp).validate_python(data)
    except ValidationError as e:
        raise error(f"{what}: " + "; ".join(describe(e, prefix=f"{what}." if what else ""))) from None


# ----------------------------------------------------------------------------- YAML with line numbers

def _yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""

        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {seen[key]}): a mapping may name each "
                        "key once; remove or rename one", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep)

    return Loader


def _lines(node, path=(), out=None) -> dict:
    """Line (1-based) of every key and list item in a composed YAML node tree, by path."""
    import yaml
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = k.start_mark.line + 1
            _lines(v, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out[path + (i,)] = v.start_mark.line + 1
            _lines(v, path + (i,), out)
    return out


def _line_of(lines: dict, loc: tuple):
    for k in range(len(loc), -1, -1):
        key = tuple(str(p) if not isinstance(p, int) else p for p in loc[:k])
        if key in lines:
            return lines[key]
    return None


def read_document(path: Path) -> tuple[Any, dict]:
    """Parse a YAML/JSON file: (data, {path: line}); errors name the file and line."""
    import yaml
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise HypothesisError(f"{path}: cannot read the file ({e})") from None
    loader = _yaml_loader()(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise HypothesisError(f"{path}{line}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    finally:
        loader.dispose()
    return data, (_lines(node) if node is not None else {})


def load_hypotheses(path: str | Path) -> list[Hypothesis]:
    """Hypotheses from a YAML or JSON file: one mapping, or a list under ``hypotheses:``.

    A top-level ``model:`` applies to every hypothesis that names none.  Every hypothesis is validated
    completely before any is returned; the error lists every problem with its line and field.
    """
    path = Path(path)
    doc, lines = read_document(path)
    if not isinstance(doc, dict):
        raise HypothesisError(f"{path}: expected a hypothesis (a mapping with name, data, sites, claim, ...) or a "
                              f"mapping with a 'hypotheses' list; got {type(doc).__name__}")
    if "hypotheses" in doc:
        try:
            check_keys(doc, ["model", "hypotheses"], "the file's top level")
        except PydanticCustomError as e:
            key = next(k for k in doc if k not in ("model", "hypotheses"))
            raise HypothesisError(f"{path} line {lines.get((key,), '?')}: {e.message()}") from None
        default_model, items, root = doc.get("model"), doc["hypotheses"], ("hypotheses",)
        if default_model is not None and not isinstance(default_model, str):
            raise HypothesisError(f"{path} line {lines.get(('model',))}: model: expected a string (a hub id, path "
                                  f"or testbed:NAME), got {default_model!r}")
        if not isinstance(items, list) or not items:
            raise HypothesisError(f"{path} line {lines.get(('hypotheses',))}: 'hypotheses' must be a non-empty list "
                                  "of hypothesis mappings")
    else:
        default_model, items, root = None, [doc], None
    problems, out = [], []
    for i, item in enumerate(items):
        base = root + (i,) if root else ()
        name = item.get("name") if isinstance(item, dict) else None
        who = f"hypothesis {i + 1}" + (f" ({name!r})" if isinstance(name, str) else "")
        try:
            spec = HypothesisSpec.model_validate(item)
        except ValidationError as e:
            problems += [f"{path}, {who}, {m}" for m in describe(e, lines, root=base)]
            continue
        h = spec.build()
        if h.model is None and default_model:
            h = replace(h, model=default_model)
        out.append(h)
    if problems:
        raise HypothesisError("\n".join(problems))
    return out
