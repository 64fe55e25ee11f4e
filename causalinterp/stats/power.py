"""Power: the smallest attainable p-value and the minimum detectable effect."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import optimize
from scipy import stats as _st

from ._inputs import _check_alternative, _paired_2d, _shape_out

__all__ = ["MDEResult", "min_detectable_effect", "smallest_pvalue"]


def smallest_pvalue(n: int, n_resamples: int = 9999, alternative: str = "two-sided") -> float:
    """The smallest p-value `permutation_test` can return with n observations (or clusters).

    Exact test (``2**n <= n_resamples``): ``1 / 2**n`` one-sided, ``2 / 2**n`` two-sided.
    Monte Carlo: ``1 / (n_resamples + 1)``.  If this exceeds the level a test must reach
    (alpha, or alpha/m after Holm/Bonferroni over m sites), no amount of effect can be significant.
    """
    alternative = _check_alternative(alternative)
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n < 63 and 2 ** n <= n_resamples:
        return (2.0 if alternative == "two-sided" else 1.0) / 2 ** n
    return 1.0 / (n_resamples + 1)


@lru_cache(maxsize=256)
def _standardized_mde(n: int, alpha: float, power: float, alternative: str) -> float:
    """Smallest standardized effect (Cohen's d) a one-sample t-test detects with the given power."""
    df = n - 1
    if alternative == "two-sided":
        crit = _st.t.ppf(1 - alpha / 2, df)

        def pw(d):
            nc = d * np.sqrt(n)
            lower = _st.nct.cdf(-crit, df, nc)   # the wrong-sign tail: negligible, can be NaN for large nc
            return _st.nct.sf(crit, df, nc) + (lower if np.isfinite(lower) else 0.0)
    else:
        crit = _st.t.ppf(1 - alpha, df)

        def pw(d):
            return _st.nct.sf(crit, df, d * np.sqrt(n))
    hi = 1.0
    while pw(hi) < power:
        hi *= 2
        if hi > 1e6:
            return float("inf")
    return float(optimize.brentq(lambda d: pw(d) - power, 0.0, hi, xtol=1e-10))


@dataclass(frozen=True)
class MDEResult:
    """Result of `min_detectable_effect` (scalars for 1-D input, else arrays over the other axes).

    effect            smallest true mean difference detected with probability `power`, in data units
                      (inf when no p-value below alpha is attainable: see `smallest_pvalue`)
    standardized      the same as Cohen's d (effect / sd)
    sd                standard deviation of the data (ddof=1)
    n, alpha, power, alternative
    smallest_pvalue   smallest attainable permutation p-value for this n and n_resamples
    attainable        smallest_pvalue <= alpha
    """

    effect: Any
    standardized: float
    sd: Any
    n: int
    alpha: float
    power: float
    alternative: str
    smallest_pvalue: float
    attainable: bool


def min_detectable_effect(x, alpha: float = 0.05, power: float = 0.8, *, y=None, alternative: str = "two-sided",
                          axis: int = 0, n_resamples: int | None = 9999) -> MDEResult:
    """Minimum detectable effect of a paired test of ``mean(x - y)`` at level `alpha` with power `power`.

    Uses the one-sample t-test power function (noncentral t; same as
    ``statsmodels.stats.power.TTestPower().solve_power``), scaled by the observed standard
    deviation: ``effect = d_min * sd``.  For a sign-flip permutation test with ``n_resamples``
    resamples, ``smallest_pvalue`` reports the smallest attainable p; when it exceeds alpha nothing
    is detectable and ``effect`` is inf.  Pass ``n_resamples=None`` to skip that check.
    Pass the per-test level (e.g. alpha/m after Holm over m sites) as `alpha`.
    """
    alternative = _check_alternative(alternative)
    alpha = float(alpha)
    power = float(power)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), e.g. 0.8; got {power!r}")
    d, rest = _paired_2d(x, y, axis)
    n = d.shape[0]
    sd = d.std(axis=0, ddof=1)
    std_mde = _standardized_mde(n, alpha, power, alternative)
    p_min = smallest_pvalue(n, n_resamples, alternative) if n_resamples is not None else 0.0
    attainable = p_min <= alpha
    effect = std_mde * sd if attainable else np.full_like(sd, np.inf)
    return MDEResult(effect=_shape_out(effect, rest), standardized=std_mde, sd=_shape_out(sd, rest), n=n,
                     alpha=alpha, power=power, alternative=alternative, smallest_pvalue=p_min,
                     attainable=attainable)
