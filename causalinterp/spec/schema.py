"""The one schema of every spec: strict field types (pydantic v2), unknown-key checks and readable errors.

Every spec class (`Site`, `SiteSet`, `Intervention`, `Metric`, the claims, `DataRef`, `Hypothesis`) annotates
its fields with the types below, and `check_fields` validates an instance's fields against those annotations
when it is built from Python.  Files (YAML/JSON) are validated by pydantic against the same classes
(`causalinterp.spec.files`), so the Python API, files and the CLI accept exactly the same values.

Strict means: no coercion.  ``"false"`` is not a bool, ``8.7`` and ``True`` are not ints, ``yes`` (a YAML
boolean) is not a name.  numpy integers and floats are accepted from Python (they are what array code yields).
"""
from __future__ import annotations

import difflib
import functools
import math
import re
import typing
from dataclasses import fields as dc_fields
from typing import Annotated, Any, ClassVar, Iterable, Literal, Union

import annotated_types as at
import numpy as np
from pydantic import (BaseModel, BeforeValidator, ConfigDict, PlainValidator, TypeAdapter, ValidationError,
                      WithJsonSchema, model_validator)
from pydantic_core import PydanticCustomError

__all__ = ["Int", "NonNegInt", "PosInt", "Float", "Bool", "Str", "Name", "Position", "Seed", "Alpha",
           "Correction", "check_fields", "check_keys", "did_you_mean", "explain", "format_loc"]

#: Corrections `evaluate` accepts (statsmodels' p-value adjustments, "none", and the resampling "maxT").
CORRECTION_NAMES = ("holm", "maxT", "fdr_bh", "bonferroni", "none", "hommel", "sidak", "holm-sidak", "fdr_by")


# ----------------------------------------------------------------------------- strict scalar types

def _int_in(v):
    if isinstance(v, (bool, np.bool_)):
        raise PydanticCustomError("bool_not_int", "expected an integer, got the boolean {value}",
                                  {"value": repr(bool(v))})
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, (float, np.floating)):
        raise PydanticCustomError("float_not_int", "expected an integer, got {value} (not a whole number type; "
                                  "no rounding is done)", {"value": repr(float(v))})
    raise PydanticCustomError("not_int", "expected an integer, got {kind} {value}",
                              {"kind": type(v).__name__, "value": repr(v)})


def _float_in(v):
    if isinstance(v, (bool, np.bool_)):
        raise PydanticCustomError("bool_not_number", "expected a number, got the boolean {value}", {"value": repr(bool(v))})
    if isinstance(v, (int, float, np.integer, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            raise PydanticCustomError("not_finite", "expected a finite number, got {value}", {"value": v})
        return v
    raise PydanticCustomError("not_number", "expected a number, got {kind} {value}",
                              {"kind": type(v).__name__, "value": repr(v)})


def _bool_in(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    raise PydanticCustomError("not_bool", "expected true or false, got {kind} {value}",
                              {"kind": type(v).__name__, "value": repr(v)})


def _str_in(v):
    if isinstance(v, str):
        return v
    raise PydanticCustomError("not_str", "expected a string, got {kind} {value}",
                              {"kind": type(v).__name__, "value": repr(v)})


def _position_in(v):
    if isinstance(v, str):
        if not v:
            raise PydanticCustomError("empty_position", "a named position cannot be the empty string")
        return v
    try:
        return _int_in(v)
    except PydanticCustomError:
        raise PydanticCustomError(
            "position_type", "a position is an integer token index (negative counts from each prompt's end) or a "
            "named position such as 'end'; got {kind} {value}", {"kind": type(v).__name__, "value": repr(v)}) from None


def int_type(ge: int | None = None):
    """A strict int (numpy ints accepted, bools and floats refused), optionally >= `ge`."""
    schema = {"type": "integer"} if ge is None else {"type": "integer", "minimum": ge}
    meta = (PlainValidator(_int_in, json_schema_input_type=int),) + ((at.Ge(ge),) if ge is not None else ())
    return Annotated[(int,) + meta + (WithJsonSchema(schema),)]


Int = int_type()
NonNegInt = int_type(0)
PosInt = int_type(1)
Float = Annotated[float, PlainValidator(_float_in, json_schema_input_type=float)]
Bool = Annotated[bool, PlainValidator(_bool_in, json_schema_input_type=bool)]
Str = Annotated[str, PlainValidator(_str_in, json_schema_input_type=str)]
Name = Annotated[str, PlainValidator(_str_in, json_schema_input_type=str), at.MinLen(1),
                 WithJsonSchema({"type": "string", "minLength": 1})]
#: An int token index (negative from each prompt's end) or a named position ("end", "S2", ...).
Position = Annotated[Union[int, str], PlainValidator(_position_in, json_schema_input_type=Union[int, str])]
#: Seeds are non-negative ints (numpy's generators refuse negative seeds).
Seed = NonNegInt
#: Significance level: a probability of a false positive, so in (0, 0.5).
Alpha = Annotated[float, PlainValidator(_float_in, json_schema_input_type=float), at.Gt(0), at.Lt(0.5),
                  WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.5})]
Correction = Literal["holm", "maxT", "fdr_bh", "bonferroni", "none", "hommel", "sidak", "holm-sidak", "fdr_by"]


# ----------------------------------------------------------------------------- validation helpers

#: pydantic config of the spec dataclasses: their JSON Schema forbids unknown keys (as validation does).
SPEC_CONFIG = ConfigDict(extra="forbid")


def _add_kind(schema: dict, cls) -> None:
    schema.setdefault("properties", {})["kind"] = {"const": cls.kind, "title": "Kind"}
    schema["required"] = ["kind"] + [r for r in schema.get("required", []) if r != "kind"]


#: ... and for claims, whose ``kind`` (a class constant) is written in the file.
CLAIM_CONFIG = ConfigDict(extra="forbid", json_schema_extra=_add_kind)

@functools.lru_cache(maxsize=None)
def _adapter(tp) -> TypeAdapter:
    return TypeAdapter(tp)


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls, include_extras=True)


def check_fields(obj, error: type[ValueError], what: str | None = None) -> None:
    """Validate (and normalise: numpy ints -> int) every field of the frozen dataclass `obj` against its
    annotation; raise `error` naming the field, the value and what is expected."""
    hints = _hints(type(obj))
    what = what or type(obj).__name__
    for f in dc_fields(obj):
        if not f.init or f.name not in hints:
            continue
        value = getattr(obj, f.name)
        try:
            clean = _adapter(hints[f.name]).validate_python(value)
        except ValidationError as e:
            raise error(f"{what}: {f.name}: {explain(e.errors()[0], value)}") from None
        if clean is not value:
            object.__setattr__(obj, f.name, clean)


def did_you_mean(word, choices: Iterable[str]) -> str:
    """`` (did you mean 'layers'?)`` for a close match among `choices`, else ``""``."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_keys(data, allowed: Iterable[str], what: str, drop: Iterable[str] = ()):
    """Before-validation of a mapping: unknown keys are an error naming the key, the closest allowed key and all
    allowed keys (pydantic's extra="forbid" says only "extra inputs are not permitted")."""
    if not isinstance(data, dict):
        return data
    allowed = list(allowed)
    for key in data:
        if key not in allowed and key not in drop:
            raise PydanticCustomError(
                "unknown_field", "unknown field {key} in {what}{hint}; allowed: {allowed}",
                {"key": repr(key), "name": key, "what": what, "hint": did_you_mean(key, allowed), "allowed": ", ".join(allowed)})
    return {k: v for k, v in data.items() if k not in drop} if drop else data


class StrictModel(BaseModel):
    """A file mapping: unknown keys are errors (naming the closest allowed key); values are never coerced
    (fields use the strict types above)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    what: ClassVar[str] = "mapping"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data):
        return check_keys(data, [f.alias or name for name, f in cls.model_fields.items()], cls.what)


def keys_checked(cls, what: str, drop: Iterable[str] = ()):
    """`cls` (a dataclass) as a pydantic type whose mapping form is checked for unknown keys first."""
    names = [f.name for f in dc_fields(cls) if f.init]
    drop = tuple(drop)
    return Annotated[cls, BeforeValidator(lambda d: check_keys(d, names + list(drop), what, drop))]


# ----------------------------------------------------------------------------- readable errors

_YAML_BOOL_HINT = (" (YAML reads unquoted yes/no/on/off/true/false as booleans: quote the value if you meant "
                   "text, e.g. 'yes')")


def explain(err: dict, value: Any = None) -> str:
    """One pydantic error as a sentence a user can act on."""
    typ, msg, inp = err["type"], err["msg"], err.get("input", value)
    ctx = err.get("ctx") or {}
    if typ in ("unknown_field", "missing_field"):
        return msg
    if typ == "missing":
        return "is required but missing"
    if typ == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"{inp!r} is not one of {', '.join(choices)}{did_you_mean(inp, choices)}"
    if typ == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif typ in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        msg = f"{inp!r} is out of range: {msg.replace('Input should be ', 'must be ')}"
    elif typ in ("too_short", "too_long"):
        msg = f"{msg.replace('Value should have', 'must have').replace('List should have', 'must have')}"
    elif typ in ("model_type", "model_attributes_type", "dataclass_type", "dict_type"):
        msg = f"expected a mapping of fields, got {type(inp).__name__} {inp!r}"
    elif typ == "list_type":
        msg = f"expected a list, got {type(inp).__name__} {inp!r}"
    if isinstance(inp, bool) and typ in ("not_str", "position_type", "not_int", "bool_not_int", "not_number",
                                         "bool_not_number", "literal_error"):
        msg += _YAML_BOOL_HINT
    if isinstance(inp, str) and typ == "not_bool":
        msg += " (write true or false without quotes)"
    return msg


def format_loc(loc: Iterable) -> str:
    """``sites.layers[0]`` from pydantic's loc tuple, without union tags (``<...>``) and validator names."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and (part.startswith("<") or "[" in part and part.endswith("]")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def clean_loc(loc: Iterable) -> tuple:
    """pydantic's loc without union tags, as a path into the input document."""
    return tuple(p for p in loc if not (isinstance(p, str) and (p.startswith("<") or "[" in p and p.endswith("]"))))


def check_value(tp, value, error: type[ValueError], what: str):
    """`value` validated against the schema type `tp` (normalised), or `error` saying what is expected."""
    try:
        return _adapter(tp).validate_python(value)
    except ValidationError as e:
        raise error(f"{what}: {explain(e.errors()[0], value)}") from None


def spec_files():
    """`causalinterp.spec.files` (the file forms of the specs), imported by name on first use: it imports the spec
    classes, so their ``from_dict`` methods reach it this way instead of importing it (no import cycle)."""
    import importlib
    return importlib.import_module("causalinterp.spec.files")
