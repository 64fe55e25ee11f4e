"""Data that cannot support a claim is refused; discovery/confirmation splits keep clusters whole."""
import pytest

from causalinterp.spec.checks import check_usable, deduplicate, duplicate_groups
from causalinterp.spec.data import ContrastSet, DataError


def _data(n=6, clusters=None, wrong=None):
    clean = [[1, 2, i % 3 + 3] for i in range(n)]
    corrupt = [[1, 2, 9] for _ in range(n)]
    return ContrastSet.from_tokens(clean, corrupt, answer=[5] * n, wrong=wrong or [6] * n, clusters=clusters)


def test_duplicated_prompts_are_named():
    d = _data(6)
    assert duplicate_groups(d) == [[0, 3], [1, 4], [2, 5]]
    with pytest.raises(DataError, match=r"3 duplicated prompt\(s\) in 3 group\(s\).*\[0, 3\]"):
        check_usable(d)
    dd = deduplicate(d)
    assert dd.n == 3 and not duplicate_groups(dd)
    check_usable(dd)


def test_answer_equal_to_wrong_is_refused():
    d = _data(3, wrong=[6, 5, 6])
    with pytest.raises(DataError, match="answer == wrong"):
        check_usable(d)
    check_usable(d, needs_wrong=False)


def test_split_by_cluster_keeps_templates_whole():
    n = 24
    d = ContrastSet.from_tokens([[1, i, 3] for i in range(n)], [[1, i, 4] for i in range(n)], answer=[5] * n,
                                wrong=[6] * n, clusters=[i % 6 for i in range(n)])
    a, b = d.split(0.5, seed=1)
    assert a.n + b.n == n and set(a.clusters).isdisjoint(b.clusters) and len(set(a.clusters)) == 3
    a2, _ = d.split(0.5, seed=1)
    assert a2 == a                                        # deterministic
    p, q = d.split(0.25, seed=0, by="prompt")
    assert p.n == 6 and q.n == 18
    with pytest.raises(ValueError):
        d.split(1.0)
