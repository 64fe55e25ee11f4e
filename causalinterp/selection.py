"""Choosing sites vs testing them: site sets remember the prompts they were chosen on.

Sites picked because they looked strongest on some prompts will look strong on those prompts again
(selection bias, the winner's curse): "the top heads of a scan beat random heads" is true by construction
when tested on the scan's own prompts, even if every head is equal.  `Evaluation.significant_sites()` and
`Evaluation.top_sites(k)` return a `SelectedSites` -- a tuple of sites that carries the identity of the
prompts it was chosen on; `scan` copies that into `Effects.meta["selected_on"]`, and `evaluate` flags a
claim tested on any of the same prompts `selected-on-same-data` (never `supported`).  Split first
(`ContrastSet.split`), choose on one part, confirm on the other.

A prompt is identified by its unintervened clean and corrupt metric values (to 9 significant digits),
which needs no access to the tokens: the same prompt through the same model and metric gives the same two
numbers, and different prompts practically never share both.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

__all__ = ["SelectedSites", "prompt_keys", "selection_overlap"]


def prompt_keys(clean, corrupt) -> list[str]:
    """One identity string per prompt from its clean and corrupt metric values."""
    c = np.asarray(clean, dtype=float).ravel()
    r = np.asarray(corrupt, dtype=float).ravel()
    return [f"{a:.9g}|{b:.9g}" for a, b in zip(c, r)]


class SelectedSites(tuple):
    """A tuple of `Site` chosen from an evaluation; `selected_on` = {"prompts": keys, "rule": how chosen}."""

    selected_on: dict

    def __new__(cls, sites: Iterable, selected_on: dict):
        obj = super().__new__(cls, tuple(sites))
        obj.selected_on = dict(selected_on)
        return obj

    def __reduce__(self):
        return (SelectedSites, (tuple(self), self.selected_on))


def selection_overlap(selected_on: dict | None, clean, corrupt) -> str:
    """The reason text when the evaluated prompts overlap the ones the sites were chosen on (else "")."""
    if not selected_on:
        return ""
    chosen = set(selected_on.get("prompts", ()))
    keys = prompt_keys(clean, corrupt)
    shared = sum(k in chosen for k in keys)
    if shared == 0:
        return ""
    return (f"the sites were chosen ({selected_on.get('rule', 'selected')}) on {len(chosen)} prompts, {shared} of "
            f"the {len(keys)} evaluated here among them: a claim about sites chosen on the same data is biased in "
            "their favour")


def split(data, fraction: float = 0.5, seed: int = 0, by: str = "cluster"):
    """(discovery, confirmation) halves of a `ContrastSet`: choose sites on the first, test them on the second.

    `fraction` of the units go to discovery (at least one unit in each part).  ``by="cluster"`` keeps every
    cluster (template) whole on one side -- prompts of one template are not independent, so splitting them
    would leak -- and falls back to prompts when the set has no clusters; ``by="prompt"`` splits prompts.
    Deterministic for a given `seed`; prompt order is kept within each part.
    """
    if by not in ("cluster", "prompt"):
        raise ValueError(f"by must be 'cluster' or 'prompt', got {by!r}")
    f = float(fraction)
    if not 0 < f < 1:
        raise ValueError(f"fraction must be in (0, 1) (the share of prompts used to choose sites), got {fraction!r}")
    if by == "cluster" and data.clusters is not None:
        labels = list(data.clusters)
    else:
        labels = list(range(data.n))
    units = list(dict.fromkeys(labels))
    if len(units) < 2:
        raise ValueError(f"cannot split {len(units)} {'cluster' if by == 'cluster' else 'prompt'}(s) into two parts")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(units))
    k = min(len(units) - 1, max(1, int(round(f * len(units)))))
    first = {units[i] for i in order[:k]}
    disc = [i for i, lab in enumerate(labels) if lab in first]
    conf = [i for i, lab in enumerate(labels) if lab not in first]
    return data.subset(disc), data.subset(conf)
