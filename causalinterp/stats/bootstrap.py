"""Bootstrap confidence intervals (BCa, percentile, basic), vectorised over sites, optionally clustered.

The fast path covers every statistic that is a ratio of sums -- the mean
(``sum x / n``) and the ratio of means used by `recovery` -- and resamples
*units*: prompts, or whole clusters when ``clusters`` is given.  A resample is
a vector of counts ``c`` over the units, so the bootstrap statistic of every
site is ``(c @ A) / (c @ B)`` with ``A``/``B`` the per-unit sums: one matrix
product per chunk of resamples for all sites at once.

Clustered resampling draws whole clusters with replacement and weighs each by
its size, so with one prompt per cluster it is the plain bootstrap.  The BCa
acceleration comes from the jackknife over the same units (leave one cluster out).

Memory is bounded by `max_memory`: the sites are processed in blocks whose
bootstrap distributions fit in the budget; every block sees the same resamples,
so results do not depend on the budget (beyond rounding).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy.special import ndtr, ndtri

from ._inputs import (_check_axis, _check_finite, _check_n, _check_n_resamples, _chunk_rows,
                          _cluster_index, _cluster_sums, _rng, _shape_out, _to_numpy, _zero_variance,
                          DEFAULT_MAX_MEMORY, ZERO_VAR_RTOL, _check_level)

__all__ = ["ConfidenceInterval", "bootstrap_ci", "bootstrap_distribution"]

METHODS = ("bca", "percentile", "basic")


@dataclass(frozen=True)
class ConfidenceInterval:
    """A two-sided confidence interval (scalars for 1-D input, else arrays over the other axes).

    low, high         the interval
    method            "bca" | "percentile" | "basic" | "exact" (zero variance: the statistic is known)
    confidence_level  e.g. 0.95
    estimate          the statistic on the data
    standard_error    standard deviation of the bootstrap distribution
    n_resamples       bootstrap resamples drawn
    """

    low: Any
    high: Any
    method: str
    confidence_level: float
    estimate: Any = None
    standard_error: Any = None
    n_resamples: int = 0

    def __iter__(self):  # allows ``low, high = ci``
        return iter((self.low, self.high))


# ----------------------------------------------------------------------------- validation

def _check_method(method: str) -> str:
    m = str(method).lower()
    if m not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return m


# ----------------------------------------------------------------------------- ratio-of-sums core

def _count_chunk(rng: np.random.Generator, rows: int, g: int) -> np.ndarray:
    """Resample counts [rows, g]: g draws with replacement from g units per row."""
    idx = (rng.random((rows, g)) * g).astype(np.int64)
    np.minimum(idx, g - 1, out=idx)
    idx += (np.arange(rows, dtype=np.int64) * g)[:, None]
    return np.bincount(idx.ravel(), minlength=rows * g).reshape(rows, g).astype(float)


def _all_counts(n_resamples: int, g: int, base_seed: int, chunk: int) -> np.ndarray:
    """Every resample's counts [n_resamples, g] as float32 (exact for counts < 2**24), drawn as in
    `_ratio_distribution`, to reuse across blocks of sites."""
    rng = np.random.default_rng(base_seed)
    out = np.empty((n_resamples, g), dtype=np.float32)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        out[start:stop] = _count_chunk(rng, stop - start, g)
    return out


def _ratio_distribution(A: np.ndarray, Bs: np.ndarray, n_resamples: int, base_seed: int, chunk: int,
                        counts: np.ndarray | None = None) -> np.ndarray:
    """Bootstrap distribution [n_resamples, k] of sum(c*A)/sum(c*Bs) for per-unit sums A [g, k], Bs [g, 1|k].

    The resamples are drawn from `base_seed` (or taken from precomputed `counts`), so every call with the
    same seed, number of units and n_resamples sees the same resamples, whatever `chunk` is."""
    g, k = A.shape
    rng = np.random.default_rng(base_seed)
    out = np.empty((n_resamples, k))
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        c = counts[start:stop].astype(float) if counts is not None else _count_chunk(rng, stop - start, g)
        num = c @ A
        den = c @ Bs
        with np.errstate(divide="ignore", invalid="ignore"):
            np.divide(num, den, out=out[start:stop])
    return out


def _quantile_sorted(s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-column quantile (numpy's default 'linear' method) of column-sorted ``s`` [B, k] at levels q [k]."""
    b = s.shape[0]
    h = (b - 1) * np.clip(q, 0.0, 1.0)
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, b - 1)
    frac = h - lo
    cols = np.arange(s.shape[1])
    a, c = s[lo, cols], s[hi, cols]
    return np.where(frac >= 0.5, c - (c - a) * (1 - frac), a + (c - a) * frac)


def _bca_levels(theta_b: np.ndarray, theta_hat: np.ndarray, jack: np.ndarray, alpha: float):
    """BCa lower/upper percentile levels per column (Efron & Tibshirani 14.3; as scipy.stats.bootstrap)."""
    b = theta_b.shape[0]
    pct = (np.count_nonzero(theta_b < theta_hat, axis=0) + np.count_nonzero(theta_b <= theta_hat, axis=0)) / (2 * b)
    # all resamples on one side of the estimate (tiny n): keep z0 finite instead of returning NaN
    pct = np.clip(pct, 0.5 / b, 1 - 0.5 / b)
    z0 = ndtri(pct)
    n = jack.shape[0]
    u = (n - 1) * (jack.mean(axis=0) - jack)
    num = (u ** 3).sum(axis=0) / n ** 3
    den = (u ** 2).sum(axis=0) / n ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        a_hat = np.where(den > 0, num / (6 * den ** 1.5), 0.0)
    za = ndtri(alpha)
    levels = []
    for z in (za, -za):
        t = z0 + z
        with np.errstate(divide="ignore", invalid="ignore"):
            lev = ndtr(z0 + t / (1 - a_hat * t))
        levels.append(np.where(np.isfinite(lev), lev, ndtr(z)))
    return levels[0], levels[1]


def _ratio_ci(A: np.ndarray, Bs: np.ndarray, *, method: str, confidence_level: float, n_resamples: int,
              rng: np.random.Generator, max_memory: int | None):
    """Estimate, CI, standard error of sum(A)/sum(Bs) per column; A [g, k] and Bs [g, 1|k] are per-unit sums."""
    g, k = A.shape
    base_seed = int(rng.integers(0, 2 ** 63 - 1))
    a_tot = A.sum(axis=0)
    b_tot = Bs.sum(axis=0)
    theta_hat = a_tot / b_tot
    alpha = (1 - confidence_level) / 2

    budget = DEFAULT_MAX_MEMORY if max_memory is None else max_memory
    # a block of sites keeps its bootstrap distribution (and a sorted copy): 16 bytes per resample and site
    block = _chunk_rows(budget // 2, 16 * n_resamples, k)
    chunk = _chunk_rows(budget // 2, 24 * g + 16 * block, n_resamples)
    # several blocks of sites: draw the resamples once and reuse them, if they fit in a quarter of the budget
    counts = None
    if block < k and 4 * n_resamples * g <= budget // 4:
        counts = _all_counts(n_resamples, g, base_seed, chunk)
    low = np.empty(k)
    high = np.empty(k)
    se = np.empty(k)
    for s0 in range(0, k, block):
        s1 = min(k, s0 + block)
        Ab = A[:, s0:s1]
        Bb = Bs if Bs.shape[1] == 1 else Bs[:, s0:s1]
        th = theta_hat[s0:s1]
        dist = _ratio_distribution(Ab, Bb, n_resamples, base_seed, chunk, counts)
        se[s0:s1] = dist.std(axis=0, ddof=1) if n_resamples > 1 else 0.0
        if method == "bca":
            b_blk = b_tot if Bs.shape[1] == 1 else b_tot[s0:s1]
            with np.errstate(divide="ignore", invalid="ignore"):
                jack = (a_tot[s0:s1] - Ab) / (b_blk - Bb)   # leave one unit out
            q_lo, q_hi = _bca_levels(dist, th, jack, alpha)
        else:
            q_lo = np.full(s1 - s0, alpha)
            q_hi = np.full(s1 - s0, 1 - alpha)
        dist.sort(axis=0)
        lo, hi = _quantile_sorted(dist, q_lo), _quantile_sorted(dist, q_hi)
        if method == "basic":
            lo, hi = 2 * th - hi, 2 * th - lo
        low[s0:s1], high[s0:s1] = lo, hi

    # Zero variance: every unit has the same ratio, so every resample gives the estimate exactly.
    resid = A - theta_hat * Bs
    scale = np.abs(A).max(axis=0) + np.abs(theta_hat) * np.abs(Bs).max(axis=0)
    exact = np.abs(resid).max(axis=0) <= ZERO_VAR_RTOL * scale
    low = np.where(exact, theta_hat, low)
    high = np.where(exact, theta_hat, high)
    se = np.where(exact, 0.0, se)
    return theta_hat, low, high, se, exact


def _mean_units(x2: np.ndarray, clusters):
    """Per-unit sums for the mean: (A [g, k], Bs [g, 1])."""
    inverse, g = _cluster_index(clusters, x2.shape[0])
    ones = np.ones((x2.shape[0], 1))
    return _cluster_sums(x2, inverse, g), _cluster_sums(ones, inverse, g)


# ----------------------------------------------------------------------------- generic statistic

def _generic_distribution(x2: np.ndarray, func: Callable, n_resamples: int, rng, max_memory) -> np.ndarray:
    n, k = x2.shape
    out = np.empty((n_resamples, k))
    chunk = _chunk_rows(max_memory, 8 * n * k * 2 + 8 * n, n_resamples)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        idx = (rng.random((stop - start, n)) * n).astype(np.int64)
        np.minimum(idx, n - 1, out=idx)
        out[start:stop] = func(x2[idx], axis=1)
    return out


def _generic_ci(x2, func, *, method, confidence_level, n_resamples, rng, max_memory):
    n, k = x2.shape
    theta_hat = np.asarray(func(x2, axis=0), dtype=float).reshape(k)
    dist = _generic_distribution(x2, func, n_resamples, rng, max_memory)
    alpha = (1 - confidence_level) / 2
    if method == "bca":
        loo = np.array([func(np.delete(x2, i, axis=0), axis=0) for i in range(n)]).reshape(n, k)
        q_lo, q_hi = _bca_levels(dist, theta_hat, loo, alpha)
    else:
        q_lo, q_hi = np.full(k, alpha), np.full(k, 1 - alpha)
    se = dist.std(axis=0, ddof=1) if n_resamples > 1 else np.zeros(k)
    dist.sort(axis=0)
    lo, hi = _quantile_sorted(dist, q_lo), _quantile_sorted(dist, q_hi)
    if method == "basic":
        lo, hi = 2 * theta_hat - hi, 2 * theta_hat - lo
    exact = _zero_variance(x2)
    return (theta_hat, np.where(exact, theta_hat, lo), np.where(exact, theta_hat, hi),
            np.where(exact, 0.0, se), exact)


def _resolve_statistic(statistic):
    if callable(statistic):
        return "callable", statistic
    if statistic == "mean":
        return "mean", None
    if statistic == "median":
        return "median", np.median
    raise ValueError(f"statistic must be 'mean', 'median' or a function f(x, axis) -> array; got {statistic!r}")


def _prep(x, axis, name="x"):
    xa = _to_numpy(x, name)
    _check_finite(xa, name)
    axis = _check_axis(axis, xa.ndim)
    xa = np.moveaxis(xa, axis, 0)
    _check_n(xa.shape[0], name)
    return np.ascontiguousarray(xa.reshape(xa.shape[0], -1)), xa.shape[1:]


# ----------------------------------------------------------------------------- public

def bootstrap_ci(x, *, statistic="mean", method: str = "bca", confidence_level: float = 0.95,
                 n_resamples: int = 9999, seed=None, axis: int = 0, clusters=None,
                 max_memory: int | None = None) -> ConfidenceInterval:
    """Bootstrap confidence interval of `statistic` along `axis`, one interval per position of the other axes.

    Parameters
    ----------
    x            data, e.g. per-prompt effects [n_prompts, n_sites]
    statistic    "mean" (fast, vectorised, supports clusters), "median", or a function ``f(x, axis)``
    method       "bca" (bias-corrected and accelerated, default), "percentile" or "basic"
    clusters     optional group label per prompt: resample whole groups (e.g. prompt templates), since
                 prompts from one template are not independent; "mean" only. With one prompt per group
                 this is the plain bootstrap.
    seed         None, int, SeedSequence or Generator; deterministic for an int seed; max_memory changes only
                 the rounding of the matrix products, not the resamples
    max_memory   bytes for resampling buffers and bootstrap distributions (default 256 MiB)

    Zero variance (all values equal, or all clusters with the same mean) is not an error: the
    statistic is known exactly and the interval is ``[estimate, estimate]`` (``standard_error`` 0).
    BCa follows ``scipy.stats.bootstrap`` (mid-rank bias correction, jackknife acceleration, linear
    interpolation of the bootstrap quantiles).
    """
    method = _check_method(method)
    cl = _check_level(confidence_level)
    n_resamples = _check_n_resamples(n_resamples)
    kind, func = _resolve_statistic(statistic)
    x2, rest = _prep(x, axis)
    rng = _rng(seed)
    if kind == "mean":
        A, Bs = _mean_units(x2, clusters)
        est, lo, hi, se, _ = _ratio_ci(A, Bs, method=method, confidence_level=cl, n_resamples=n_resamples,
                                       rng=rng, max_memory=max_memory)
    else:
        if clusters is not None:
            raise ValueError("clusters= is supported for statistic='mean' only; aggregate per cluster first, "
                             "or use statistic='mean'")
        est, lo, hi, se, _ = _generic_ci(x2, func, method=method, confidence_level=cl, n_resamples=n_resamples,
                                         rng=rng, max_memory=max_memory)
    return ConfidenceInterval(low=_shape_out(lo, rest), high=_shape_out(hi, rest), method=method,
                              confidence_level=cl, estimate=_shape_out(est, rest),
                              standard_error=_shape_out(se, rest), n_resamples=n_resamples)


def bootstrap_distribution(x, *, statistic="mean", n_resamples: int = 9999, seed=None, axis: int = 0,
                           clusters=None) -> np.ndarray:
    """The bootstrap distribution itself, shape ``[n_resamples, *other axes]`` (for plots and checks).

    Same resampling as `bootstrap_ci` (the same seed gives the same resamples); memory grows with
    ``n_resamples`` times the number of sites.
    """
    n_resamples = _check_n_resamples(n_resamples)
    kind, func = _resolve_statistic(statistic)
    x2, rest = _prep(x, axis)
    rng = _rng(seed)
    if kind == "mean":
        A, Bs = _mean_units(x2, clusters)
        base_seed = int(rng.integers(0, 2 ** 63 - 1))
        chunk = _chunk_rows(DEFAULT_MAX_MEMORY, 16 * A.shape[0] + 16 * A.shape[1], n_resamples)
        dist = _ratio_distribution(A, Bs, n_resamples, base_seed, chunk)
    else:
        if clusters is not None:
            raise ValueError("clusters= is supported for statistic='mean' only")
        dist = _generic_distribution(x2, func, n_resamples, rng, None)
    return dist.reshape((n_resamples,) + tuple(rest))
