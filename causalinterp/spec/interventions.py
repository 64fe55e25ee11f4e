"""Interventions: what value is written at a site.

denoise  run the corrupt prompt, write the clean activation (tests sufficiency)
noise    run the clean prompt, write the corrupt activation (tests necessity)
zero     run the clean prompt, write zeros
mean     run the clean prompt, write the mean activation of the reference prompts at that site and
         position (reference = the contrast set's corrupt prompts unless one is given)
resample run the clean prompt, write the activation of another reference prompt (seeded)

Prompts of different lengths: padding never reaches a result.  ``mean`` at ``positions="all"`` averages each
position over the reference prompts that are long enough to have it; ``resample`` at ``positions="all"``
(a whole sequence of activations) draws each prompt's source among the prompts of the same length, and
refuses a prompt whose length no other prompt has.  At a single position the source prompt's own index of
that position is used (a named position follows the prompt).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .schema import SPEC_CONFIG, Seed, check_fields, did_you_mean

KINDS = ("denoise", "noise", "zero", "mean", "resample")
Kind = Literal["denoise", "noise", "zero", "mean", "resample"]


class InterventionError(ValueError):
    """An intervention that cannot be built as described."""


@dataclass(frozen=True)
class Intervention:
    """Which run is intervened on and what value is written (see the module docstring).

    Examples:
        >>> import causalinterp as ci
        >>> ci.patch("denoise").base_run, ci.ablate("mean").base_run
        ('corrupt', 'clean')
    """

    __pydantic_config__ = SPEC_CONFIG

    kind: Kind
    seed: Seed = 0
    reference: Literal["corrupt", "clean"] = "corrupt"  # for mean/resample: which prompts of the contrast set

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InterventionError(f"unknown intervention {self.kind!r}{did_you_mean(self.kind, KINDS)}; use "
                                    "patch('denoise'|'noise') or ablate('zero'|'mean'|'resample')")
        if self.reference not in ("corrupt", "clean"):
            raise InterventionError(f"reference must be 'corrupt' or 'clean' (whose activations mean/resample "
                                    f"ablation writes), got {self.reference!r}; to ablate with other prompts, put "
                                    "them in the contrast set as its corrupt prompts")
        check_fields(self, InterventionError, f"intervention {self.kind!r}")

    @property
    def base_run(self) -> str:
        """The run the intervention is applied to."""
        return "corrupt" if self.kind == "denoise" else "clean"

    @property
    def target_run(self) -> str:
        """Where a complete effect would take the metric."""
        return "clean" if self.kind == "denoise" else "corrupt"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "seed": self.seed, "reference": self.reference}

    @classmethod
    def from_dict(cls, d) -> "Intervention":
        """Inverse of `to_dict` (or a kind name), validated like a file."""
        from .schema import spec_files
        files = spec_files()
        return files.validate(files.InterventionSpec, d, InterventionError, "intervention")


def patch(direction: str = "denoise") -> Intervention:
    """Activation patching: ``"denoise"`` (clean into corrupt) or ``"noise"`` (corrupt into clean).

    Examples:
        >>> import causalinterp as ci
        >>> ci.patch("noise")
        Intervention(kind='noise', seed=0, reference='corrupt')
    """
    if direction not in ("denoise", "noise"):
        raise InterventionError(f"patch direction must be 'denoise' or 'noise', got {direction!r}"
                                f"{did_you_mean(direction, ('denoise', 'noise'))}")
    return Intervention(direction)


def ablate(kind: str = "mean", seed: int = 0, reference: str = "corrupt") -> Intervention:
    """Ablation of the clean run: ``"zero"``, ``"mean"`` or ``"resample"`` (seeded).

    Examples:
        >>> import causalinterp as ci
        >>> ci.ablate("resample", seed=1)
        Intervention(kind='resample', seed=1, reference='corrupt')
    """
    if kind not in ("zero", "mean", "resample"):
        raise InterventionError(f"ablation must be 'zero', 'mean' or 'resample', got {kind!r}"
                                f"{did_you_mean(kind, ('zero', 'mean', 'resample'))}")
    return Intervention(kind, seed, reference)
