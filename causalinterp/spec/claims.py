"""Claims: what a scan is supposed to show, as small frozen data (JSON/YAML round-trip).

    recovers(at_least=0.5)               the intervention recovers >= tau of the clean-corrupt gap
    has_effect(direction="any")          the intervention moves the metric ("increase" / "decrease")
    no_effect(margin=0.1)                the intervention moves the metric by less than the margin
    beats_random(n_random=200)           the site set's joint effect exceeds random site sets of its size
    faithful(at_least=0.8)               a circuit keeps >= tau of the model's behaviour (ci.faithfulness)

`causalinterp.evaluate(effects, claim)` turns a claim and the engine's `Effects` into a verdict.

Examples:
    >>> import causalinterp as ci
    >>> ci.claims.recovers(at_least=0.5).to_dict()
    {'kind': 'recovers', 'at_least': 0.5}
"""
from __future__ import annotations

import math

import numpy as np
from dataclasses import asdict, dataclass
from typing import ClassVar, Literal

from .schema import CLAIM_CONFIG, Bool, Float, PosInt

__all__ = ["Claim", "ClaimError", "Recovers", "HasEffect", "NoEffect", "BeatsRandom", "Faithful",
           "recovers", "has_effect", "no_effect", "beats_random", "faithful", "DIRECTIONS"]

DIRECTIONS = ("any", "increase", "decrease")


class ClaimError(ValueError):
    """A claim with an invalid field; the message names the field and the accepted values."""


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            import numpy as np  # numpy scalars are fine
            if isinstance(value, np.number) and not isinstance(value, np.bool_):
                value = float(value)
            else:
                raise TypeError
        except TypeError:
            raise ClaimError(f"{name} must be a number, got {value!r}") from None
    value = float(value)
    if not math.isfinite(value):
        raise ClaimError(f"{name} must be finite, got {value!r}")
    return value


@dataclass(frozen=True)
class Claim:
    """Base class of claims; `kind` names the claim in serialised form."""

    __pydantic_config__ = CLAIM_CONFIG

    kind: ClassVar[str] = ""
    _registry: ClassVar[dict] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.kind:
            Claim._registry[cls.kind] = cls

    def to_dict(self) -> dict:
        """``{"kind": ..., <fields>}``; plain types only, for JSON/YAML."""
        return {"kind": self.kind, **asdict(self)}

    @staticmethod
    def from_dict(d) -> "Claim":
        """Inverse of `to_dict` (or a kind name), validated like a file: unknown kinds and fields, and values of
        the wrong type, are errors."""
        from .schema import spec_files
        files = spec_files()
        return files.validate(files.ClaimSpec, d, ClaimError, "claim")

    def describe(self) -> str:  # pragma: no cover - overridden
        return self.kind

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class Recovers(Claim):
    """Patching the sites recovers at least `at_least` (tau) of the clean-corrupt gap.

    Normalised effect (recovery) = (mean values - mean base) / (mean target - mean base):
    for denoising (patching clean activations into the corrupt run), (patched - corrupt)/(clean - corrupt).
    """

    kind: ClassVar[str] = "recovers"
    at_least: Float = 0.5

    def __post_init__(self):
        v = _number("recovers: at_least", self.at_least)
        if not 0 < v <= 1.5:
            raise ClaimError(f"recovers: at_least must be in (0, 1.5] (a fraction of the clean-corrupt gap, "
                             f"e.g. 0.5); got {self.at_least!r}. To claim no recovery use no_effect(margin=...)")
        object.__setattr__(self, "at_least", v)

    def describe(self) -> str:
        return f"recovers at least {self.at_least:g} of the clean-corrupt gap"


def _check_margin(claim: str, margin, relative) -> float:
    v = _number(f"{claim}: margin", margin)
    if v <= 0:
        raise ClaimError(f"{claim}: margin must be > 0, got {margin!r}")
    if not isinstance(relative, bool):
        raise ClaimError(f"{claim}: relative must be True (margin is a fraction of the clean-corrupt gap) or "
                         f"False (margin in metric units); got {relative!r}")
    if relative and v > 1.5:
        raise ClaimError(f"{claim}: a relative margin is a fraction of the clean-corrupt gap and must be <= 1.5; "
                         f"got {margin!r}. For a margin in metric units pass relative=False")
    return v


@dataclass(frozen=True)
class HasEffect(Claim):
    """The intervention changes the metric (relative to the unintervened base run).

    direction: "any" (two-sided), "increase" or "decrease".  `margin` (relative to the mean
    clean-corrupt gap, or absolute with relative=False) is the equivalence margin used to call a
    non-significant site `null` (shown smaller than the margin) rather than `inconclusive`.
    """

    kind: ClassVar[str] = "has_effect"
    direction: Literal["any", "increase", "decrease"] = "any"
    margin: Float = 0.1
    relative: Bool = True

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ClaimError(f"has_effect: direction must be one of {DIRECTIONS}, got {self.direction!r}")
        object.__setattr__(self, "margin", _check_margin("has_effect", self.margin, self.relative))

    def describe(self) -> str:
        what = {"any": "changes", "increase": "increases", "decrease": "decreases"}[self.direction]
        return f"the intervention {what} the metric"


@dataclass(frozen=True)
class NoEffect(Claim):
    """The intervention moves the metric by less than `margin` (TOST equivalence).

    margin: a fraction of the mean clean-corrupt gap |mean(target - base)| (relative=True, default),
    or metric units (relative=False).
    """

    kind: ClassVar[str] = "no_effect"
    margin: Float = 0.1
    relative: Bool = True

    def __post_init__(self):
        object.__setattr__(self, "margin", _check_margin("no_effect", self.margin, self.relative))

    def describe(self) -> str:
        unit = " of the clean-corrupt gap" if self.relative else ""
        return f"the intervention moves the metric by less than {self.margin:g}{unit}"


@dataclass(frozen=True)
class BeatsRandom(Claim):
    """The site set's joint effect exceeds that of random site sets of the same size.

    Needs ``scan(..., joint=True, n_random=n_random)``.  p = (1 + #{random >= observed}) / (n_random + 1).
    """

    kind: ClassVar[str] = "beats_random"
    n_random: PosInt = 200

    def __post_init__(self):
        if isinstance(self.n_random, np.integer) and not isinstance(self.n_random, bool):
            object.__setattr__(self, "n_random", int(self.n_random))
        if isinstance(self.n_random, bool) or not isinstance(self.n_random, int) or self.n_random < 1:
            raise ClaimError(f"beats_random: n_random must be a positive int (e.g. 200; at least 20 for "
                             f"alpha=0.05), got {self.n_random!r}")

    def describe(self) -> str:
        return f"the site set beats {self.n_random} random site sets of the same size"


@dataclass(frozen=True)
class Faithful(Recovers):
    """The circuit keeps at least `at_least` of the model's behaviour: on `ci.faithfulness` effects,
    (m(circuit) - m(all ablated)) / (m(model) - m(all ablated)) >= tau, a ratio of means with a bootstrap CI.

    The same test as `Recovers` (the effects put the circuit in ``values``, everything ablated in ``base``
    and the full model in ``target``); its own kind so reports say what was claimed.
    """

    kind: ClassVar[str] = "faithful"
    at_least: Float = 0.8

    def describe(self) -> str:
        return f"the circuit is faithful: it keeps at least {self.at_least:g} of the model's behaviour"


def faithful(at_least: float = 0.8) -> Faithful:
    """Claim: the circuit (effects from `ci.faithfulness`) keeps at least `at_least` of the full model's
    metric relative to everything ablated."""
    return Faithful(at_least)


def recovers(at_least: float = 0.5) -> Recovers:
    """Claim: patching recovers at least `at_least` of the clean-corrupt gap (0 < at_least <= 1.5)."""
    return Recovers(at_least)


def has_effect(direction: str = "any", *, margin: float = 0.1, relative: bool = True) -> HasEffect:
    """Claim: the intervention changes the metric ("any"), or increases / decreases it."""
    return HasEffect(direction, margin, relative)


def no_effect(margin: float = 0.1, *, relative: bool = True) -> NoEffect:
    """Claim: the intervention changes the metric by less than `margin` (fraction of the gap, or absolute)."""
    return NoEffect(margin, relative)


def beats_random(n_random: int = 200) -> BeatsRandom:
    """Claim: the site set's joint effect beats `n_random` random site sets of the same size."""
    return BeatsRandom(n_random)
