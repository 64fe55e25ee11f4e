"""Contrast sets that cannot support a claim are refused before any model runs.

* Duplicated prompts (same clean, corrupt, answer and wrong token) are not independent observations: a
  set of 3 distinct prompts repeated 20 times each "shows" any effect at p = 1e-4.  `check_usable` names
  them; `deduplicate` keeps the first of each (the explicit opt-in).
* ``answer == wrong`` makes a logit or probability difference identically 0: nothing can be measured.
"""
from __future__ import annotations

from .data import ContrastSet, DataError

__all__ = ["check_usable", "deduplicate", "duplicate_groups"]


def _key(data: ContrastSet, i: int) -> tuple:
    return (data.clean[i], data.corrupt[i], data.answer[i], None if data.wrong is None else data.wrong[i])


def duplicate_groups(data: ContrastSet) -> list[list[int]]:
    """Groups (two or more prompt indices) of identical prompts: same clean, corrupt, answer and wrong."""
    seen: dict[tuple, list[int]] = {}
    for i in range(data.n):
        seen.setdefault(_key(data, i), []).append(i)
    return [g for g in seen.values() if len(g) > 1]


def check_usable(data: ContrastSet, needs_wrong: bool = True) -> None:
    """Raise `DataError` for duplicated prompts, or (when the metric reads the wrong token) answer == wrong."""
    if needs_wrong and data.wrong is not None:
        same = [i for i, (a, w) in enumerate(zip(data.answer, data.wrong)) if a == w]
        if same:
            raise DataError(f"{len(same)} prompt(s) have answer == wrong (first: prompt {same[0]}, token "
                            f"{data.answer[same[0]]}): a difference between the two is 0 by construction. Give each "
                            "prompt a different wrong token, or drop those prompts")
    groups = duplicate_groups(data)
    if groups:
        extra = sum(len(g) - 1 for g in groups)
        shown = "; ".join(str(g[:6])[:-1] + (", ...]" if len(g) > 6 else "]") for g in groups[:5])
        raise DataError(f"{extra} duplicated prompt(s) in {len(groups)} group(s) of identical clean, corrupt, answer "
                        f"and wrong (prompt indices {shown}{' ...' if len(groups) > 5 else ''}): repeats are not "
                        "independent observations and would make any test look far more certain than it is. Remove "
                        "them, or pass the set through causalinterp.spec.checks.deduplicate(data) to keep the first "
                        "of each")


def deduplicate(data: ContrastSet) -> ContrastSet:
    """The contrast set with only the first of each group of identical prompts (order kept)."""
    seen: set = set()
    keep = []
    for i in range(data.n):
        k = _key(data, i)
        if k not in seen:
            seen.add(k)
            keep.append(i)
    return data if len(keep) == data.n else data.subset(keep)
