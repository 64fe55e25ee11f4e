"""Random site sets for `beats_random`: distinct sets, all of them when there are few.

A randomisation p-value ``(1 + #{random >= observed}) / (N + 1)`` is honest only if the N comparison sets
are distinct draws: drawing with replacement from a small population of sets repeats the same few sets
and makes the p-value look finer than the data allow (a 4-head set among 8 heads has exactly one other
4-head set).  `random_subsets` therefore counts the distinct sets, enumerates every one of them when there
are no more than requested (the p-value is then the exact randomisation p over all sets, and the smallest
attainable p is ``1 / (N + 1)``), and otherwise samples distinct sets without replacement.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["RandomSubsets", "random_subsets"]

#: Up to this many distinct sets, they are listed and sampled exactly without replacement.
_ENUMERATE_LIMIT = 200_000


@dataclass(frozen=True)
class RandomSubsets:
    """sets: sorted index tuples into the pool; n_distinct: C(pool, size); exhaustive: every set is listed."""

    sets: tuple[tuple[int, ...], ...]
    n_distinct: int
    exhaustive: bool

    def to_dict(self) -> dict:
        return {"distinct": self.n_distinct, "drawn": len(self.sets), "exhaustive": self.exhaustive}


def random_subsets(pool_size: int, size: int, n_sets: int, rng: np.random.Generator) -> RandomSubsets:
    """`n_sets` distinct subsets of ``range(pool_size)`` of `size` elements (all of them if fewer exist)."""
    if not 0 < size <= pool_size:
        raise ValueError(f"cannot draw sets of {size} from a pool of {pool_size}")
    if n_sets < 1:
        raise ValueError(f"n_sets must be >= 1, got {n_sets}")
    total = math.comb(pool_size, size)
    if total <= n_sets:
        return RandomSubsets(tuple(itertools.combinations(range(pool_size), size)), total, True)
    if total <= _ENUMERATE_LIMIT:
        every = list(itertools.combinations(range(pool_size), size))
        pick = rng.choice(total, size=n_sets, replace=False)
        return RandomSubsets(tuple(every[i] for i in pick), total, False)
    seen: dict[tuple[int, ...], None] = {}
    while len(seen) < n_sets:      # collisions are rare here (total > 200,000 and n_sets <= total / 2 in practice)
        s = tuple(sorted(int(i) for i in rng.choice(pool_size, size=size, replace=False)))
        seen.setdefault(s, None)
    return RandomSubsets(tuple(seen), total, False)
