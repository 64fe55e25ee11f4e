"""Held-out discipline for fitted features: a fit remembers its prompts; evaluation on any of them is refused."""
from __future__ import annotations

from ..spec.data import ContrastSet


class HeldOutError(ValueError):
    """Evaluation asked on prompts a probe, SAE selection or DAS rotation was fitted on."""


def prompt_set(data: ContrastSet) -> frozenset:
    """Identity of each prompt: its clean and corrupt token tuples."""
    return frozenset(zip(map(tuple, data.clean), map(tuple, data.corrupt)))


def check_held_out(fitted_on: frozenset, data: ContrastSet, what: str) -> None:
    """Refuse `data` if any of its prompts is among `fitted_on` (the claim must be tested on fresh prompts)."""
    overlap = [i for i, key in enumerate(zip(map(tuple, data.clean), map(tuple, data.corrupt))) if key in fitted_on]
    if overlap:
        raise HeldOutError(f"{len(overlap)} of the {data.n} evaluation prompts (first: prompt {overlap[0]}) were used "
                           f"to fit the {what}; evaluate on held-out prompts only (e.g. train, test = data.split(0.5))")
