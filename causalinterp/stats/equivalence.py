"""Equivalence testing: TOST (two one-sided t-tests) for ``|mean| < margin``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _st

from ._inputs import _paired_2d, _shape_out, _zero_variance

__all__ = ["TOSTResult", "tost"]


@dataclass(frozen=True)
class TOSTResult:
    """Result of `tost` (scalars for 1-D input, else arrays over the other axes).

    statistic        the mean
    pvalue           TOST p-value, ``max(pvalue_lower, pvalue_upper)``; equivalence shown when < alpha
    pvalue_lower     one-sided p for H0: mean <= -margin
    pvalue_upper     one-sided p for H0: mean >= +margin
    pvalue_exceeds   p for H0: |mean| <= margin against |mean| > margin (the two-sided (1 - alpha) CI lies
                     entirely outside [-margin, margin]): an effect *beyond* the margin is shown when < alpha
    low, high        the (1 - 2 alpha) confidence interval; equivalence <=> it lies inside (-margin, margin)
    margin, alpha, df, equivalent (pvalue < alpha)
    """

    statistic: Any
    pvalue: Any
    pvalue_lower: Any
    pvalue_upper: Any
    pvalue_exceeds: Any
    low: Any
    high: Any
    margin: Any
    alpha: float
    df: int
    equivalent: Any


def tost(x, margin, *, alpha: float = 0.05, axis: int = 0, y=None) -> TOSTResult:
    """Two one-sided t-tests of equivalence, ``|mean(x - y)| < margin``, vectorised over the other axes.

    `margin` is a positive scalar or an array broadcastable to the non-sample axes (one margin per site).
    Same p-values as ``statsmodels.stats.weightstats.ttost_paired(x, y, -margin, margin)``.

    Zero variance is an answer: if every difference is the same value c, equivalence holds exactly
    when ``|c| < margin`` (p = 0)  [differences equal up to rounding count as equal] and fails exactly otherwise (p = 1); no NaN is produced.
    """
    alpha = float(alpha)
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    d, rest, scale = _paired_2d(x, y, axis, return_scale=True)
    n, k = d.shape
    marg = np.asarray(margin, dtype=float)
    try:
        marg = np.broadcast_to(marg, rest).reshape(k) if marg.ndim else np.full(k, float(marg))
    except ValueError:
        raise ValueError(f"margin of shape {marg.shape} does not match the sites' shape {rest}; "
                         "give one margin, or one per site") from None
    if not (np.isfinite(marg).all() and (marg > 0).all()):
        raise ValueError(f"margin must be positive and finite, got {margin!r}")
    mean = d.mean(axis=0)
    sd = d.std(axis=0, ddof=1)
    se = sd / np.sqrt(n)
    df = n - 1
    zero = _zero_variance(d, scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_lo = (mean + marg) / se
        t_hi = (mean - marg) / se
        p_lo = _st.t.sf(t_lo, df)          # H0: mean <= -margin
        p_hi = _st.t.cdf(t_hi, df)         # H0: mean >= margin
        p_beyond_up = _st.t.sf(t_hi, df)   # H0: mean <= margin vs mean > margin
        p_beyond_dn = _st.t.cdf(t_lo, df)  # H0: mean >= -margin vs mean < -margin
    # exact answers when every difference is the same number
    p_lo = np.where(zero, np.where(mean > -marg, 0.0, 1.0), p_lo)
    p_hi = np.where(zero, np.where(mean < marg, 0.0, 1.0), p_hi)
    p_beyond_up = np.where(zero, np.where(mean > marg, 0.0, 1.0), p_beyond_up)
    p_beyond_dn = np.where(zero, np.where(mean < -marg, 0.0, 1.0), p_beyond_dn)
    p = np.maximum(p_lo, p_hi)
    p_exc = np.minimum(1.0, 2 * np.minimum(p_beyond_up, p_beyond_dn))
    q = _st.t.ppf(1 - alpha, df)
    low, high = mean - q * se, mean + q * se
    return TOSTResult(statistic=_shape_out(mean, rest), pvalue=_shape_out(p, rest),
                      pvalue_lower=_shape_out(p_lo, rest), pvalue_upper=_shape_out(p_hi, rest),
                      pvalue_exceeds=_shape_out(p_exc, rest), low=_shape_out(low, rest),
                      high=_shape_out(high, rest), margin=_shape_out(marg, rest), alpha=alpha, df=df,
                      equivalent=_shape_out(p < alpha, rest))
