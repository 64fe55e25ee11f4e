"""Upper confidence bounds on what a screen missed, from a random audit of the sites it did not select.

A screen ranks `N` sites; the top ones are patched exactly, and of the `n_rest` others a uniformly random
sample of `n_audited` (without replacement) is patched exactly too.  If `found` of the audited exceed the
threshold, then with confidence `confidence`:

* ``fraction_upper``: the one-sided Clopper–Pearson upper bound on the fraction of the rest that exceeds
  it (``scipy.stats.binomtest(...).proportion_ci(method="exact")`` at level ``2*confidence - 1``, whose
  upper end is the one-sided bound); conservative for sampling without replacement.
* ``count_upper``: the exact finite-population bound on how many of the rest exceed it: the largest
  ``K`` with ``P(X <= found | hypergeometric(n_rest, K, n_audited)) > 1 - confidence``;
  ``missed_upper = count_upper - found`` of them are among the sites nobody patched.

Both hold whatever the screen did, because the audit sample is random (`tests/test_confirm.py` checks
their coverage by simulation).

Examples:
    >>> from causalinterp.stats.audit import audit_bound
    >>> b = audit_bound(n_rest=100, n_audited=20, found=0)
    >>> round(b.fraction_upper, 3), b.count_upper, b.missed_upper
    (0.139, 12, 12)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as st

__all__ = ["AuditBound", "audit_bound"]


@dataclass(frozen=True)
class AuditBound:
    """Bounds from an audit; see the module docstring."""

    n_rest: int
    n_audited: int
    found: int
    confidence: float
    fraction_upper: float
    count_upper: int

    @property
    def missed_upper(self) -> int:
        """Upper bound on the number of never-patched sites that exceed the threshold."""
        return self.count_upper - self.found

    def to_dict(self) -> dict:
        return {"n_rest": self.n_rest, "n_audited": self.n_audited, "found": self.found,
                "confidence": self.confidence, "fraction_upper": self.fraction_upper,
                "count_upper": self.count_upper, "missed_upper": self.missed_upper}


def audit_bound(n_rest: int, n_audited: int, found: int, confidence: float = 0.95) -> AuditBound:
    """Bounds on the sites of `n_rest` above the threshold, from `found` of a random `n_audited` of them."""
    n_rest, n_audited, found = int(n_rest), int(n_audited), int(found)
    if not 0 <= found <= n_audited <= n_rest:
        raise ValueError(f"need 0 <= found ({found}) <= n_audited ({n_audited}) <= n_rest ({n_rest})")
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1), e.g. 0.95; got {confidence!r}")
    if n_audited == 0:
        return AuditBound(n_rest, 0, 0, confidence, 1.0, n_rest)
    ci = st.binomtest(found, n_audited).proportion_ci(confidence_level=2 * confidence - 1, method="exact")
    fraction = 1.0 if found == n_audited else float(ci.high)
    alpha = 1 - confidence
    # P(X <= found) falls as K grows: the bound is the last K where it is still above alpha
    K = np.arange(found + (n_rest - n_audited) + 1)
    K = K[K >= found]
    ok = K[st.hypergeom.cdf(found, n_rest, K, n_audited) > alpha]
    return AuditBound(n_rest, n_audited, found, confidence, fraction, int(ok.max()))
