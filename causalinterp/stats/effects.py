"""Effect sizes and the normalised recovery (ratio of means) with a joint bootstrap CI."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import gammaln

from .bootstrap import ConfidenceInterval, _check_level, _check_method, _ratio_ci, _ratio_distribution
from ._inputs import (DEFAULT_MAX_MEMORY, ZERO_VAR_RTOL, _check_axis, _check_finite, _check_n,
                          _check_n_resamples, _chunk_rows, _cluster_index, _cluster_sums, _paired_2d, _rng,
                          _shape_out, _to_numpy, _zero_variance)

__all__ = ["EffectSize", "effect_size", "RecoveryResult", "recovery", "RecoveryUndefined"]


class RecoveryUndefined(ValueError):
    """Clean and corrupt runs do not differ on average, so a normalised recovery has no denominator."""


@dataclass(frozen=True)
class EffectSize:
    """Standardised mean difference of paired data (scalars for 1-D input).

    cohens_d   Cohen's d_z = mean(x - y) / sd(x - y)   (sd with ddof=1)
    hedges_g   Hedges' g_z = J(n - 1) * d_z, the small-sample unbiased version (exact gamma-function J)
    mean, sd, n
    Zero variance (all differences equal up to rounding): d = g = +-inf for a non-zero mean, 0 when every
    difference is 0 (never NaN).
    """

    cohens_d: Any
    hedges_g: Any
    mean: Any
    sd: Any
    n: int


def _hedges_j(df: int) -> float:
    if df < 2:
        return 1.0 - 3.0 / (4.0 * df - 1.0) if df > 0 else float("nan")
    return float(np.exp(gammaln(df / 2) - 0.5 * np.log(df / 2) - gammaln((df - 1) / 2)))


def effect_size(x, y=None, *, axis: int = 0) -> EffectSize:
    """Cohen's d_z and Hedges' g_z of the paired differences ``x - y`` (of x when y is None) along `axis`."""
    d, rest, scale = _paired_2d(x, y, axis, return_scale=True)
    n = d.shape[0]
    mean = d.mean(axis=0)
    sd = d.std(axis=0, ddof=1)
    zero = _zero_variance(d, scale)
    mean = np.where(zero & (np.abs(mean) <= ZERO_VAR_RTOL * scale), 0.0, mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        dz = np.where(zero, np.where(mean == 0, 0.0, np.sign(mean) * np.inf), mean / np.where(zero, 1.0, sd))
    g = np.where(np.isinf(dz), dz, _hedges_j(n - 1) * dz)
    return EffectSize(cohens_d=_shape_out(dz, rest), hedges_g=_shape_out(g, rest), mean=_shape_out(mean, rest),
                      sd=_shape_out(sd, rest), n=n)


@dataclass(frozen=True)
class RecoveryResult:
    """Result of `recovery` (scalars for 1-D input, else arrays over the other axes).

    estimate           (mean patched - mean corrupt) / (mean clean - mean corrupt)
    ci                 joint bootstrap `ConfidenceInterval` of that ratio (zero width when every prompt, or
                       every cluster, recovers the same fraction)
    gap                mean(clean - corrupt), the denominator (per site if clean/corrupt were given per site)
    n                  prompts
    n_units            resampled units (clusters, or prompts)
    gap_flip_fraction  fraction of bootstrap resamples whose mean gap has the other sign (or is 0): when it
                       exceeds (1 - confidence_level)/2 the gap is not reliably non-zero and the ratio unstable
    exact              True where every unit (prompt or cluster) has the same recovery: zero variance, the
                       ratio is known exactly
    """

    estimate: Any
    ci: ConfidenceInterval
    gap: Any
    n: int
    n_units: int
    gap_flip_fraction: Any
    exact: Any

    @property
    def low(self):
        return self.ci.low

    @property
    def high(self):
        return self.ci.high


#: |mean(clean - corrupt)| at or below this fraction of the metric's scale counts as no gap at all.
GAP_RTOL = 1e-9


def gap_is_zero(gap_mean: float, clean: np.ndarray, corrupt: np.ndarray) -> bool:
    """True when the mean clean-corrupt gap is zero relative to the metric's scale (recovery undefined)."""
    scale = float(np.mean(np.abs(clean)) + np.mean(np.abs(corrupt)))
    return gap_mean == 0 or abs(gap_mean) <= GAP_RTOL * scale


def recovery(patched, clean, corrupt, *, method: str = "bca", confidence_level: float = 0.95,
             n_resamples: int = 9999, seed=None, axis: int = 0, clusters=None,
             max_memory: int | None = None) -> RecoveryResult:
    """Normalised recovery ``(mean patched - mean corrupt) / (mean clean - mean corrupt)`` with a bootstrap CI.

    This is a **ratio of means**, bootstrapped **jointly over prompts**: each resample draws prompts
    (or whole clusters) and recomputes both means from the same prompts.  It is *not* the mean of
    per-prompt ratios ``(patched_i - corrupt_i) / (clean_i - corrupt_i)``, which explodes whenever a
    single prompt has clean ~= corrupt.

    `patched` is [n_prompts, ...] (one column per site); `clean` and `corrupt` are [n_prompts] or the
    same shape as `patched`.  For noising/ablation pass ``clean=target, corrupt=base`` (the unintervened
    run that was patched is "corrupt"; where a full effect goes is "clean").

    Raises `RecoveryUndefined` when mean(clean - corrupt) is 0 relative to the metric's scale (the ratio
    has no denominator).  When every prompt recovers exactly the same fraction, the interval has zero width.
    """
    method = _check_method(method)
    cl = _check_level(confidence_level)
    n_resamples = _check_n_resamples(n_resamples)
    p = _to_numpy(patched, "patched")
    c = _to_numpy(clean, "clean")
    r = _to_numpy(corrupt, "corrupt")
    for arr, name in ((p, "patched"), (c, "clean"), (r, "corrupt")):
        _check_finite(arr, name)
    axis = _check_axis(axis, p.ndim)
    shape_in = p.shape
    p = np.moveaxis(p, axis, 0)
    n = p.shape[0]
    rest = p.shape[1:]
    p2 = p.reshape(n, -1)

    def _base(arr, name):
        if arr.ndim == 1:
            if arr.shape[0] != n:
                raise ValueError(f"{name} has {arr.shape[0]} prompts but patched has {n}; give one {name} value "
                                 "per prompt (same order)")
            return arr.reshape(n, 1)
        if arr.shape != shape_in:
            raise ValueError(f"{name} has shape {arr.shape}; it must be [n_prompts] or the shape of patched")
        return np.moveaxis(arr, axis, 0).reshape(n, -1)

    c2, r2 = _base(c, "clean"), _base(r, "corrupt")
    _check_n(n, "patched", "prompts")
    num = p2 - r2
    den = np.broadcast_to(c2 - r2, (n, c2.shape[1]))
    gap = den.mean(axis=0)
    scale = np.abs(c2).mean(axis=0) + np.abs(r2).mean(axis=0)
    zero = (gap == 0) | (np.abs(gap) <= GAP_RTOL * scale)
    if zero.any():
        raise RecoveryUndefined(
            f"clean and corrupt do not differ (mean clean - corrupt = {gap[zero][0]:.3g}): the recovery "
            "(patched - corrupt)/(clean - corrupt) has no denominator. Check the contrast set (do corrupt prompts "
            "change the answer?) or test the raw effect with has_effect/no_effect and an absolute margin.")
    inverse, g = _cluster_index(clusters, n)
    A = _cluster_sums(num, inverse, g)
    Bs = _cluster_sums(np.ascontiguousarray(den), inverse, g)
    seed_int = int(_rng(seed).integers(0, 2 ** 63 - 1))
    est, lo, hi, se, exact = _ratio_ci(A, Bs, method=method, confidence_level=cl, n_resamples=n_resamples,
                                       rng=np.random.default_rng(seed_int), max_memory=max_memory)
    # the sign of a resampled mean gap is the sign of c @ gap-sums; same resamples as the CI
    base_seed = int(np.random.default_rng(seed_int).integers(0, 2 ** 63 - 1))
    kg = Bs.shape[1]   # 1, or one gap per site when clean/corrupt were given per site
    chunk = _chunk_rows(max_memory or DEFAULT_MAX_MEMORY, 32 * g + 16 * kg, n_resamples)
    gdist = _ratio_distribution(Bs, np.ones((g, 1)), n_resamples, base_seed, chunk)
    flip = np.mean(np.sign(gdist) != np.sign(Bs.sum(axis=0)), axis=0)
    flip = float(flip[0]) if kg == 1 else _shape_out(flip, rest)
    gap_out = float(gap[0]) if kg == 1 else _shape_out(gap, rest)
    ci = ConfidenceInterval(low=_shape_out(lo, rest), high=_shape_out(hi, rest), method=method, confidence_level=cl,
                            estimate=_shape_out(est, rest), standard_error=_shape_out(se, rest),
                            n_resamples=n_resamples)
    return RecoveryResult(estimate=_shape_out(est, rest), ci=ci, gap=gap_out,
                          n=n, n_units=g, gap_flip_fraction=flip, exact=_shape_out(exact, rest))
