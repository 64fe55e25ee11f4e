"""Random site sets: distinct, all of them when few."""
import math

import numpy as np
import pytest

from causalinterp.stats.randomization import random_subsets


def test_few_sets_are_enumerated_exhaustively():
    r = random_subsets(4, 4, 200, np.random.default_rng(0))      # a 4-head set among the 4 other heads: one set
    assert r.exhaustive and r.n_distinct == 1 and r.sets == ((0, 1, 2, 3),)
    r = random_subsets(6, 2, 200, np.random.default_rng(0))      # head pairs among 6: 15 sets
    assert r.exhaustive and len(r.sets) == 15 == len(set(r.sets))


@pytest.mark.parametrize("pool,size", [(12, 3), (200, 4)])
def test_many_sets_are_distinct_draws(pool, size):
    r = random_subsets(pool, size, 150, np.random.default_rng(1))
    assert not r.exhaustive and r.n_distinct == math.comb(pool, size)
    assert len(r.sets) == 150 == len(set(r.sets))
    assert all(len(s) == size and list(s) == sorted(s) and max(s) < pool for s in r.sets)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        random_subsets(3, 4, 10, np.random.default_rng(0))
