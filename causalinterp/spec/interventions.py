"""Interventions: what value is written at a site.

denoise  run the corrupt prompt, write the clean activation (tests sufficiency)
noise    run the clean prompt, write the corrupt activation (tests necessity)
zero     run the clean prompt, write zeros
mean     run the clean prompt, write the mean activation of the reference prompts at that site and
         position (reference = the contrast set's corrupt prompts unless one is given)
resample run the clean prompt, write the activation of another reference prompt (seeded)
"""
from __future__ import annotations

from dataclasses import dataclass

KINDS = ("denoise", "noise", "zero", "mean", "resample")


class InterventionError(ValueError):
    """An intervention that cannot be built as described."""


@dataclass(frozen=True)
class Intervention:
    """Which run is intervened on and what value is written (see the module docstring)."""

    kind: str
    seed: int = 0
    reference: str = "corrupt"  # for mean/resample: "corrupt" or "clean" prompts of the contrast set

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InterventionError(f"unknown intervention {self.kind!r}; use patch('denoise'|'noise') or "
                                    "ablate('zero'|'mean'|'resample')")
        if self.reference not in ("corrupt", "clean"):
            raise InterventionError(f"reference must be 'corrupt' or 'clean', got {self.reference!r}; for another "
                                    "prompt set, pass reference_data= to scan()")

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
    def from_dict(cls, d: dict) -> "Intervention":
        return cls(d["kind"], int(d.get("seed", 0)), d.get("reference", "corrupt"))


def patch(direction: str = "denoise") -> Intervention:
    """Activation patching: ``"denoise"`` (clean into corrupt) or ``"noise"`` (corrupt into clean)."""
    if direction not in ("denoise", "noise"):
        raise InterventionError(f"patch direction must be 'denoise' or 'noise', got {direction!r}")
    return Intervention(direction)


def ablate(kind: str = "mean", seed: int = 0, reference: str = "corrupt") -> Intervention:
    """Ablation of the clean run: ``"zero"``, ``"mean"`` or ``"resample"`` (seeded)."""
    if kind not in ("zero", "mean", "resample"):
        raise InterventionError(f"ablation must be 'zero', 'mean' or 'resample', got {kind!r}")
    return Intervention(kind, seed, reference)
