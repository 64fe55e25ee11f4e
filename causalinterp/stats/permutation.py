"""Paired sign-flip (permutation) tests, vectorised over every axis but the sample axis.

The test of ``mean(x - y) = 0`` flips the sign of each paired difference (or of
each cluster's sum of differences) at random; under the null hypothesis that
the differences are symmetric about zero every sign pattern is equally likely.

All sites share the same sign patterns, so the null distribution of 1,000
sites is one matrix product ``signs @ d`` per chunk of resamples; memory is
bounded by chunking the resamples (``max_memory``).

The same pass can record, per resample, the largest and smallest studentised statistic over all
sites, and counts Westfall and Young's step-down maxT (`maxt_pvalues`, `StepDown`).

The input checks shared by every `causalinterp.stats` module live in `_inputs`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PermutationResult", "permutation_test", "maxt_pvalues", "signflip_ci", "DEFAULT_MAX_MEMORY"]

# Relative tolerance for null statistics that equal the observed one in exact arithmetic
# but differ by rounding (scipy uses 100 * eps relative to the observed statistic; we
# use the data's scale as well, so ties at a near-zero observed mean are also caught).
_TIE_RTOL = 100 * np.finfo(float).eps


from ._inputs import (ALTERNATIVES, DEFAULT_MAX_MEMORY, ZERO_VAR_RTOL, _check_alternative,  # noqa: F401
                      _check_axis, _check_finite, _check_level, _check_n, _check_n_resamples, _chunk_rows,
                      _cluster_index, _cluster_sums, _paired_2d, _rng, _shape_out, _to_numpy, _zero_variance)


# ------------------------------------------------------------------------------- core

#: maxT studentisation: the standard deviation of the units is floored at this fraction of their root
#: mean square, so a site whose units are (almost) all equal gets a very large but finite |t|.
T_SD_FLOOR = 1e-6


def _studentize(s: np.ndarray, ss: np.ndarray, g: int) -> np.ndarray:
    """One-sample t of g units with sum `s` [..., k] and sum of squares `ss` [k] (fixed by sign flips).

    ``t = mean / (sd / sqrt(g)) = s * sqrt(g - 1) / sqrt(g * ss - s**2)``.  The variance term is floored at
    ``T_SD_FLOOR**2 * g * ss`` (sd >= ~1e-6 x root mean square), so constant non-zero sites get a finite,
    huge |t| and rounding noise cannot make it negative; sites whose units are all zero get t = 0.  t stays
    strictly increasing in `s` for each site, so its sign-flip test is the test of the mean.
    """
    gss = g * ss
    floor = np.where(ss > 0, T_SD_FLOOR ** 2 * gss, 1.0)    # all-zero site: s = 0 -> t = 0/1 = 0
    out = np.multiply(s, s)
    np.subtract(gss, out, out=out)
    np.maximum(out, floor, out=out)
    np.sqrt(out, out=out)
    np.divide(s, out, out=out)
    out *= np.sqrt(g - 1.0)
    return out


class StepDown:
    """Westfall-Young step-down maxT counts, accumulated one chunk of resamples at a time.

    Sites are ranked by their observed statistic ``T_obs`` (largest first).  For the site of rank r the
    count is ``#{b: max over the sites of rank >= r of T^(b) >= thr_r}`` -- the maximum over the sites not
    yet rejected when the procedure reaches it -- one reverse running maximum per resample row.  The
    adjusted p-values (`pvalues`) are then made monotone along the ranking (Westfall & Young 1993, alg. 2.8),
    so a site is never rejected unless every higher-ranked one is.  ``thr`` is the observed statistic less a
    rounding tolerance (ties count as "as extreme").  Works for any statistic whose joint null distribution
    over the sites is the same for every subset of true nulls (subset pivotality): the sign-flip
    studentised means, and the centred bootstrap-t statistics.
    """

    def __init__(self, t_obs: np.ndarray, thr: np.ndarray | None = None):
        self.order = np.argsort(-t_obs, kind="stable")
        self.thr = (t_obs if thr is None else thr)[self.order]
        self.count = np.zeros(t_obs.shape[0], dtype=np.int64)
        self.null_max: list[np.ndarray] = []

    def update(self, t_null: np.ndarray) -> None:
        """Count one chunk of null statistics ``t_null`` [rows, k] (same site order as `t_obs`)."""
        q = t_null[:, self.order[::-1]]
        np.maximum.accumulate(q, axis=1, out=q)
        q = q[:, ::-1]
        self.null_max.append(q[:, 0].copy())
        self.count += np.count_nonzero(q >= self.thr, axis=0)

    def pvalues(self, total: int, exact: bool) -> np.ndarray:
        """Monotone adjusted p-values in the original site order: ``c / 2**n`` (exact) or ``(c + 1)/(B + 1)``."""
        p = self.count / float(total) if exact else (self.count + 1.0) / (total + 1.0)
        p = np.maximum.accumulate(np.clip(p, 0.0, 1.0))
        out = np.empty_like(p)
        out[self.order] = p
        return out

    def maxima(self) -> np.ndarray:
        """Per resample, the maximum over all sites (the single-step null distribution)."""
        return np.concatenate(self.null_max) if self.null_max else np.empty(0)


@dataclass(frozen=True)
class _MaxT:
    """Step-down maxT counts per alternative, and the per-resample extremes of the studentised statistic."""

    t: np.ndarray              # [k] observed t
    greater: StepDown          # statistic t
    less: StepDown             # statistic -t
    two_sided: StepDown        # statistic |t|
    null_max: np.ndarray       # [B] max_k t_k per resample
    null_min: np.ndarray       # [B] min_k t_k per resample


@dataclass(frozen=True)
class _SignFlip:
    statistic: np.ndarray      # [k] observed mean
    count_ge: np.ndarray       # [k] null >= observed
    count_le: np.ndarray       # [k] null <= observed
    count_abs: np.ndarray      # [k] |null| >= |observed|
    n_resamples: int           # resamples used (2**units when exact)
    exact: bool
    maxt: _MaxT | None = None  # with `_signflip(..., maxt=True)`
    n_units: int = 0           # prompts, or clusters
    ci_low: np.ndarray | None = None    # with `_signflip(..., ci_level=...)`: the inverted-test interval
    ci_high: np.ndarray | None = None

    def pvalue(self, alternative: str) -> np.ndarray:
        """p-values: exact p = count / 2**n (two-sided 2*min, as scipy); Monte Carlo p = (b + 1) / (B + 1)."""
        if self.exact:
            total = float(self.n_resamples)
            if alternative == "greater":
                p = self.count_ge / total
            elif alternative == "less":
                p = self.count_le / total
            else:
                p = 2 * np.minimum(self.count_ge, self.count_le) / total
        else:
            b = {"greater": self.count_ge, "less": self.count_le, "two-sided": self.count_abs}[alternative]
            p = (b + 1.0) / (self.n_resamples + 1.0)
        return np.clip(p, 0.0, 1.0)

    def maxt_pvalue(self, alternative: str) -> np.ndarray:
        """Westfall-Young step-down maxT adjusted p-values (needs ``_signflip(..., maxt=True)``; `StepDown`).

        Exact: counts over the ``2**n`` patterns (the identity included) / 2**n; Monte Carlo:
        ``(1 + count) / (B + 1)``; monotone along the ranking of the observed statistic.
        """
        mt = self.maxt
        sd = {"greater": mt.greater, "less": mt.less, "two-sided": mt.two_sided}[alternative]
        return sd.pvalues(self.n_resamples, self.exact)

    def maxt_critical(self, alternative: str, alpha: float) -> float | None:
        """The studentised statistic a site must exceed for its maxT p to fall below `alpha` (None: no site can)."""
        mt = self.maxt
        if alternative == "greater":
            m = mt.null_max
        elif alternative == "less":
            m = -mt.null_min
        else:
            m = np.maximum(mt.null_max, -mt.null_min)
        total = self.n_resamples
        # largest count c with p(c) < alpha: c / 2**n (exact) or (c + 1) / (B + 1) (Monte Carlo)
        c = int(np.ceil(alpha * total)) - 1 if self.exact else int(np.ceil(alpha * (total + 1))) - 2
        if c < (1 if self.exact else 0):
            return None
        return float(np.sort(m)[::-1][c])


def _sign_chunks(g: int, total: int, exact: bool, rng: np.random.Generator, chunk: int):
    """Yield (start, stop, signs [stop - start, g]) over the sign patterns, `chunk` rows at a time.

    Exact: the patterns 0 .. 2**g - 1 in binary (bit u of the index flips unit u; pattern 0 is the
    identity).  Monte Carlo: `total` random patterns, drawn row by row, so the patterns do not depend on
    `chunk` (nor on `max_memory`).
    """
    bits = np.arange(g, dtype=np.int64)
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        if exact:
            idx = np.arange(start, stop, dtype=np.int64)
            signs = 1.0 - 2.0 * ((idx[:, None] >> bits) & 1)
        else:
            signs = np.where(rng.random((stop - start, g)) < 0.5, -1.0, 1.0)
        yield start, stop, signs
        del signs


def _reject_count(alpha: float, total: int, exact: bool) -> int:
    """Largest count c of "as extreme" patterns whose two-sided p-value is <= alpha (-1: no count is).

    The p-values are those of `_SignFlip.pvalue`: exact ``2 c / 2**n`` (c: the smaller one-sided count),
    Monte Carlo ``(c + 1) / (B + 1)``.
    """
    def p(c):
        return min(1.0, 2.0 * c / total if exact else (c + 1.0) / (total + 1.0))
    c = int(np.floor(alpha * total / 2)) if exact else int(np.floor(alpha * (total + 1))) - 1
    c = max(-1, min(c, total))
    while c + 1 <= total and p(c + 1) <= alpha:
        c += 1
    while c >= 0 and p(c) > alpha:
        c -= 1
    return c


def _keep_largest(top, new: np.ndarray, keep: int) -> np.ndarray:
    """The `keep` largest values per column of ``top`` and ``new`` stacked (unordered)."""
    cat = new if top is None else np.concatenate([top, new])
    if cat.shape[0] > keep:
        cat = np.partition(cat, cat.shape[0] - keep, axis=0)[cat.shape[0] - keep:]
    return cat


class _CIBounds:
    """Confidence interval of the mean by inverting the two-sided sign-flip test, fed the sign patterns.

    For a hypothesised mean mu = obs + t (t > 0) the test of ``x - mu`` compares the observed statistic
    ``-t`` with the resampled ones ``c_b - t s_b``, where ``c_b = mean(s_b (x - obs))`` (signs per unit,
    each prompt's sign that of its unit) and ``s_b = mean(s_b)`` over prompts, ``|s_b| <= 1``.  Pattern b
    counts as "as extreme" exactly for ``t <= t_b`` with

        Monte Carlo (|null| >= |observed|):   t_b = |c_b| / (1 + sign(c_b) s_b)
        exact       (null <= observed):       t_b = max(-c_b, 0) / (1 - s_b)

    (``|c - t s| - t`` is convex with slope < 0 for |s| < 1, so its zero set is one interval; the exact
    p-value is twice the smaller one-sided count, which for t > 0 is the lower tail).  Patterns with
    ``s_b = 1`` (and ``-1`` in the Monte Carlo count) tie with the observed statistic for every t: t_b = inf.
    So the count -- and the p-value -- is non-increasing in t, the test rejects at mu iff fewer than
    ``K + 1`` of the t_b reach t (K = `_reject_count`), and the upper bound is ``obs + `` the (K+1)-th
    largest t_b.  The lower bound is the mirror image (``c -> -c``).  No search is needed: one pass keeps
    the K + 1 largest t_b per site and side.  Ties up to rounding follow the test only approximately (a
    crossing point is exact in real arithmetic; the test's ``100 eps`` tolerance shifts it by as much).
    """

    def __init__(self, d, units, inverse, n_units, obs, exact: bool, total: int, alpha: float):
        n = d.shape[0]
        self.n, self.exact, self.obs = n, exact, obs
        self.keep = _reject_count(alpha, total, exact) + 1
        # centred before summing, so a large common mean does not cancel in c_b
        self.uc = _cluster_sums(d - obs, inverse, n_units) if inverse is not None else d - obs
        self.size = (np.bincount(inverse, minlength=n_units).astype(float) if inverse is not None
                     else np.ones(n))
        self.top_hi = self.top_lo = None

    def update(self, signs: np.ndarray) -> None:
        if self.keep <= 0:
            return
        c = signs @ self.uc
        c /= self.n
        s = (signs @ self.size / self.n)[:, None]
        tie = np.abs(s) >= 1.0 if not self.exact else s >= 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.exact:
                t_hi = np.maximum(-c, 0.0) / (1.0 - s)
                t_lo = np.maximum(c, 0.0) / (1.0 - s)
            else:
                sc = np.sign(c) * s
                a = np.abs(c)
                t_hi = a / (1.0 + sc)
                t_lo = a / (1.0 - sc)
        del c
        if tie.any():
            rows = tie[:, 0]
            t_hi[rows] = np.inf
            t_lo[rows] = np.inf
        self.top_hi = _keep_largest(self.top_hi, t_hi, self.keep)
        del t_hi
        self.top_lo = _keep_largest(self.top_lo, t_lo, self.keep)

    def bounds(self):
        if self.keep <= 0:       # no p-value can reach alpha: the test never rejects
            inf = np.full(self.obs.shape, np.inf)
            return self.obs - inf, self.obs + inf
        return self.obs - self.top_lo.min(axis=0), self.obs + self.top_hi.min(axis=0)


def _signflip(d: np.ndarray, *, n_resamples: int, rng: np.random.Generator, inverse=None, n_units=None,
              max_memory=None, maxt: bool = False, ci_level: float | None = None) -> _SignFlip:
    """Sign-flip null distribution of the mean of ``d`` [n, k], counted against the observed mean.

    With `ci_level`, the same sign patterns also give the confidence interval of the mean obtained by
    inverting the two-sided test (`_CIBounds`; `signflip_ci`), in ``ci_low``/``ci_high``.

    With `maxt`, the same sign patterns also give the null distribution of the largest (and smallest)
    studentised mean over all k sites (`_studentize` on the units), for the maxT correction.
    """
    n, k = d.shape
    units = _cluster_sums(d, inverse, n_units) if inverse is not None else d
    g = units.shape[0]
    obs = d.mean(axis=0)
    scale = np.abs(d).mean(axis=0)
    gamma = _TIE_RTOL * np.maximum(np.abs(obs), scale)
    lo_thr, hi_thr = obs - gamma, obs + gamma
    abs_thr = np.abs(obs) - gamma

    exact = g < 63 and 2 ** g <= n_resamples
    total = 2 ** g if exact else n_resamples
    # per resample row: signs (8 g), null row (8 k), a boolean temporary (k); maxT: t row (8 k);
    # CI: centred null (8 k), two crossing points (16 k) and their merge with the kept ones (16 k)
    chunk = _chunk_rows(max_memory, 8 * g + (41 if maxt else 9) * k + (40 * k if ci_level is not None else 0),
                        total)
    ge = np.zeros(k, dtype=np.int64)
    le = np.zeros(k, dtype=np.int64)
    ab = np.zeros(k, dtype=np.int64)
    if maxt:
        ss = np.einsum("ij,ij->j", units, units)
        null_max = np.empty(total)
        null_min = np.empty(total)
        # the observed t, and the per-site tie thresholds of the mean test mapped through the increasing map
        # mean -> t (so with one site the maxT p equals the sign-flip p, ties included)
        t_obs = _studentize(n * obs, ss, g)
        t_lo, t_hi, t_abs = (_studentize(n * v, ss, g) for v in (lo_thr, hi_thr, abs_thr))
        steps = (StepDown(t_obs, t_lo), StepDown(-t_obs, -t_hi), StepDown(np.abs(t_obs), t_abs))
    ci = None
    if ci_level is not None:
        ci = _CIBounds(d, units, inverse, n_units, obs, exact, total, 1.0 - ci_level)
    for start, stop, signs in _sign_chunks(g, total, exact, rng, chunk):
        if ci is not None:
            ci.update(signs)
        null = signs @ units
        if maxt:
            t = _studentize(null, ss, g)
            t.max(axis=1, out=null_max[start:stop])
            t.min(axis=1, out=null_min[start:stop])
            steps[0].update(t)
            np.negative(t, out=t)
            steps[1].update(t)
            np.abs(t, out=t)
            steps[2].update(t)
            del t
        null /= n
        ge += np.count_nonzero(null >= lo_thr, axis=0)
        le += np.count_nonzero(null <= hi_thr, axis=0)
        np.abs(null, out=null)
        ab += np.count_nonzero(null >= abs_thr, axis=0)
        del null, signs   # free before the next chunk allocates its own
    mt = None
    if maxt:
        mt = _MaxT(t=t_obs, greater=steps[0], less=steps[1], two_sided=steps[2], null_max=null_max,
                   null_min=null_min)
    bounds = ci.bounds() if ci is not None else (None, None)
    return _SignFlip(obs, ge, le, ab, total, exact, mt, g, *bounds)


# ----------------------------------------------------------------------------- public

@dataclass(frozen=True)
class PermutationResult:
    """Result of `permutation_test` (scalars for 1-D input, else arrays over the other axes).

    statistic    observed mean of ``x - y``
    pvalue       p-value for `alternative`
    n_resamples  sign patterns used (``2**n`` when exact)
    exact        True when every sign pattern was enumerated
    alternative  "two-sided" | "greater" | "less"
    """

    statistic: Any
    pvalue: Any
    n_resamples: int
    exact: bool
    alternative: str = "two-sided"


def permutation_test(x, y=None, *, alternative: str = "two-sided", n_resamples: int = 9999, seed=None,
                     axis: int = 0, clusters=None, max_memory: int | None = None) -> PermutationResult:
    """Paired sign-flip permutation test of ``mean(x - y) = 0`` (one-sample test of ``mean(x) = 0`` if y is None).

    Vectorised over every axis except `axis` (the prompts): data [n_prompts, n_sites] gives one
    test per site, all computed together from one set of sign patterns.

    * Exact when ``2**n <= n_resamples``: every one of the ``2**n`` sign patterns is enumerated and
      ``p = count / 2**n`` (two-sided: twice the smaller one-sided p, capped at 1 -- identical to
      ``scipy.stats.permutation_test(..., permutation_type="samples")`` with the mean).
    * Monte Carlo otherwise: ``B = n_resamples`` random sign patterns and ``p = (b + 1) / (B + 1)``,
      where ``b`` counts null statistics at least as extreme (two-sided: ``|null| >= |observed|``).
      This p-value is valid (never anti-conservative) for any B.

    Null statistics equal to the observed one up to rounding (``100 * eps`` relative) count as ties.

    Parameters
    ----------
    alternative  "two-sided" | "greater" (mean > 0) | "less" (mean < 0)
    seed         None, int, SeedSequence or numpy Generator; the result is deterministic given an int seed
                 and does not depend on `max_memory`.
    clusters     optional group label per prompt; whole groups' signs are flipped together (use when prompts
                 from one template are not independent). Exactness then depends on the number of groups.
    max_memory   bytes for the resampling buffers (default 256 MiB); resamples are processed in chunks.

    The smallest attainable p is ``2 / 2**n`` (two-sided, exact), ``1 / 2**n`` (one-sided, exact) or
    ``1 / (B + 1)`` (Monte Carlo); see `causalinterp.stats.smallest_pvalue`.
    """
    alternative = _check_alternative(alternative)
    n_resamples = _check_n_resamples(n_resamples)
    d, rest = _paired_2d(x, y, axis)
    inverse, g = _cluster_index(clusters, d.shape[0])
    res = _signflip(d, n_resamples=n_resamples, rng=_rng(seed), inverse=inverse, n_units=g,
                    max_memory=max_memory)
    return PermutationResult(statistic=_shape_out(res.statistic, rest),
                             pvalue=_shape_out(res.pvalue(alternative), rest),
                             n_resamples=res.n_resamples, exact=res.exact, alternative=alternative)


def maxt_pvalues(x, *, alternative: str = "two-sided", n_resamples: int = 9999, seed=None, axis: int = 0,
                 clusters=None, max_memory: int | None = None):
    """Westfall-Young step-down maxT adjusted p-values: family-wise error control over all sites of `x`.

    `x` holds per-prompt differences (prompts on `axis`, sites on the other axes; the whole array is one
    family).  Each resample flips the signs of the prompts (of whole clusters when `clusters` is given)
    with ONE sign pattern shared by every site, so the joint null distribution -- and any correlation
    between the sites -- is kept.  Per site the statistic is the studentised mean
    ``t_j = mean_j / sd_j * sqrt(n)`` of the units (prompts, or cluster sums of prompts);
    ``T = t`` ("greater"), ``-t`` ("less") or ``|t|`` ("two-sided"), and

        p_j = (1 + #{b: max_{k: T_k <= T_j} T_k^(b) >= T_j}) / (B + 1)   (Monte Carlo, B = n_resamples)
        p_j = #{patterns: max_{k: T_k <= T_j} T_k >= T_j} / 2**n        (exact, when 2**n <= n_resamples)

    (the identity pattern is one of the 2**n; the maximum runs over the sites ranked at or below j), made
    monotone along the ranking: ``p_adj_(r) = max_{r' <= r} p_(r')`` (step-down; `StepDown`).  The most
    significant site gets the single-step p-value; the others can only gain.  Rejecting where ``p_adj < alpha`` controls the family-wise
    error at alpha whenever every prompt's row of differences is symmetric about zero under the null
    (for every subset of true nulls: the sign-flip null is the same for any subset).  Unlike
    Bonferroni/Holm, the smallest attainable p_adj is ``1 / (B + 1)`` for any number of sites, so ~20/alpha
    resamples suffice for a scan of thousands of sites, and correlated sites cost less than independent
    ones.  Every ``p_adj_j`` is at least the site's own sign-flip p-value (`permutation_test`, same seed:
    the same sign patterns), and equals it when there is one site.

    Sign flips keep each site's sum of squares fixed, so t is an increasing function of the mean within a
    site (each site's own test is unchanged); the studentisation puts sites of different spread on one
    scale for the maximum.  Sites whose units are all equal: all zero -> t = 0 (p_adj 1); constant non-zero
    -> the sd is floored at ``T_SD_FLOOR`` (1e-6) times the units' root mean square, giving a huge finite
    |t| that only the identity (and the all-flipped) pattern reaches.  Ties up to rounding count as in
    `permutation_test`.

    Parameters are those of `permutation_test`.  Returns an array of adjusted p-values with the shape of
    the non-sample axes (a float for 1-D input).  Deterministic for an int `seed`, whatever `max_memory`.
    """
    alternative = _check_alternative(alternative)
    n_resamples = _check_n_resamples(n_resamples)
    d, rest = _paired_2d(x, None, axis)
    inverse, g = _cluster_index(clusters, d.shape[0])
    res = _signflip(d, n_resamples=n_resamples, rng=_rng(seed), inverse=inverse, n_units=g,
                    max_memory=max_memory, maxt=True)
    return _shape_out(res.maxt_pvalue(alternative), rest)


def signflip_ci(x, *, confidence_level: float = 0.95, n_resamples: int = 9999, seed=None, axis: int = 0,
                clusters=None, max_memory: int | None = None):
    """Confidence interval for the mean of `x` by inverting the paired sign-flip test (`permutation_test`).

    The interval is every mu for which the two-sided sign-flip test of ``x - mu`` does not reject at
    ``alpha = 1 - confidence_level`` (p > alpha), with ONE fixed set of sign patterns for all mu: the
    patterns `permutation_test` uses with the same `seed`, `n_resamples` and `clusters` (every one of the
    ``2**n`` when ``2**n <= n_resamples``; then the interval does not depend on the seed).  It covers the
    mean with probability >= `confidence_level` whenever each prompt's value (each cluster's sum of
    deviations) is symmetric about the mean -- the assumption the sign-flip p-values make -- however heavy
    the tails, where a bootstrap interval can under-cover badly.  With `clusters`, whole clusters are
    flipped (their sums of ``x - mu``), as in the clustered test; the estimand stays the mean over prompts.

    The bounds are exact order statistics of the per-pattern crossing points (see `_CIBounds`), found in
    the same single pass over the resamples as the test (memory bounded by `max_memory`).  Sites with zero
    variance get ``[mean, mean]``.  When no p-value can be as small as alpha (tiny n, or
    ``n_resamples < 1/alpha - 1``) the test never rejects and the interval is infinite.

    Returns a `ConfidenceInterval` (method "signflip"; `standard_error` None; `n_resamples` the patterns
    used, ``2**n`` when exact), with arrays over the non-sample axes (scalars for 1-D input).
    """
    from .bootstrap import ConfidenceInterval
    cl = _check_level(confidence_level)
    n_resamples = _check_n_resamples(n_resamples)
    d, rest = _paired_2d(x, None, axis)
    inverse, g = _cluster_index(clusters, d.shape[0])
    res = _signflip(d, n_resamples=n_resamples, rng=_rng(seed), inverse=inverse, n_units=g,
                    max_memory=max_memory, ci_level=cl)
    zero = _zero_variance(d)
    low = np.where(zero, res.statistic, res.ci_low)
    high = np.where(zero, res.statistic, res.ci_high)
    return ConfidenceInterval(low=_shape_out(low, rest), high=_shape_out(high, rest), method="signflip",
                              confidence_level=cl, estimate=_shape_out(res.statistic, rest),
                              standard_error=None, n_resamples=res.n_resamples)
