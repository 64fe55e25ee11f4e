"""Tests of a mean whose error rate does not rest on symmetry: sign-flip AND studentised bootstrap.

The sign-flip test (`permutation`) is exact when every prompt's difference is symmetric about the null
value; the per-prompt effects of real patching experiments are often not (all-or-nothing recoveries,
sparse effects, skewed logit differences), and then it rejects far more often than alpha.  The
studentised bootstrap (bootstrap-t; Hall 1992, Efron & Tibshirani ch. 12) corrects for skewness to second
order, but is unreliable at very small n where the sign-flip test is exact.

`robust_mean_test` reports ``p = max(p_signflip, p_bootstrap_t)``.  Rejecting when the larger p is below
alpha is a valid level-alpha test whenever *either* test is valid for the data at hand
(``P(max(p1, p2) <= a) <= min(P(p1 <= a), P(p2 <= a))``), so the combination keeps the sign-flip
guarantee on symmetric data and gains the bootstrap-t's on skewed data; on symmetric data the two
p-values nearly coincide, so little power is lost.  The choice was made by simulation
(``python -m benchmarks.calibration``; docs/verdicts.md).

Where neither is trustworthy -- a sample skewed *against* the direction tested, with fewer units than a
Cochran-type rule asks for (Cochran 1977: n > 25 g1**2; here ``n > 50 (|g1| - 0.5 sqrt(6/n))**2``, the
sample skewness shrunk by half its standard error under normality so that symmetric data are not
penalised, with the constant chosen by simulation on the calibration panel) -- `n_reliable` says how
many units (prompts, or clusters) would do, and the verdict rules abstain.  No rule can catch a sample
that simply missed a rare large value (Bahadur & Savage 1956); the calibration panel shows that floor.

Everything is vectorised over sites: one resample is a vector of counts over the units, and the
bootstrap-t statistic of every site comes from two matrix products (three with clusters).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtri

from ._inputs import (_check_alternative, _check_n_resamples, _chunk_rows, _cluster_index, _cluster_sums,
                      _paired_2d, _rng, _shape_out)
from .bootstrap import _count_chunk
from .permutation import StepDown, _SignFlip, _signflip

__all__ = ["RobustTestResult", "robust_mean_test", "bootstrap_t_test", "cochran_n"]

#: Cochran-type rule: a test of a mean is trusted from n > COCHRAN * (|g1| - SKEW_SLACK * sqrt(6/n))**2 units.
COCHRAN = 50.0
SKEW_SLACK = 0.5


def cochran_n(skewness, n: int) -> np.ndarray:
    """Units the Cochran-type rule asks for at sample skewness `skewness` of `n` units (0: no doubt).

    ``ceil(50 * max(0, |g1| - 0.5 * sqrt(6/n))**2)``: sqrt(6/n) is the standard error of g1 under normality,
    so noise-level skewness of symmetric data costs nothing (see the module docstring).
    """
    excess = np.maximum(0.0, np.abs(np.asarray(skewness, dtype=float)) - SKEW_SLACK * np.sqrt(6.0 / n))
    return np.ceil(COCHRAN * excess ** 2).astype(np.int64)


def _units(d: np.ndarray, inverse, n_units: int):
    """(cluster sums [g, k], cluster sizes [g]) of ``d`` [n, k] (prompts themselves without clusters)."""
    if inverse is None:
        return d, np.ones(d.shape[0])
    return _cluster_sums(d, inverse, n_units), np.bincount(inverse, minlength=n_units).astype(float)


def _skewness(R: np.ndarray) -> np.ndarray:
    """Sample skewness g1 = m3 / m2**1.5 of the unit residuals R [g, k] (0 where they have no spread)."""
    m2 = np.mean(R * R, axis=0)
    m3 = np.mean(R * R * R, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        g1 = np.where(m2 > 0, m3 / np.where(m2 > 0, m2, 1.0) ** 1.5, 0.0)
    return np.nan_to_num(g1)


@dataclass(frozen=True)
class _BootT:
    """Bootstrap-t counts of one pass (internal; see `bootstrap_t_test`)."""

    t: np.ndarray              # [k] observed t = mean / se
    count_ge: np.ndarray       # [k] #{b: t*_b >= t}
    count_le: np.ndarray       # [k] #{b: t*_b <= t}
    count_abs: np.ndarray      # [k] #{b: |t*_b| >= |t|}
    n_resamples: int
    steps: tuple | None        # (greater, less, two-sided) StepDown with maxt

    def pvalue(self, alternative: str) -> np.ndarray:
        b = {"greater": self.count_ge, "less": self.count_le, "two-sided": self.count_abs}[alternative]
        return np.clip((b + 1.0) / (self.n_resamples + 1.0), 0.0, 1.0)

    def maxt_pvalue(self, alternative: str) -> np.ndarray:
        sd = dict(zip(("greater", "less", "two-sided"), self.steps))[alternative]
        return sd.pvalues(self.n_resamples, False)


def _boot_t(d: np.ndarray, *, n_resamples: int, rng: np.random.Generator, inverse=None, n_units=None,
            max_memory=None, maxt: bool = False) -> _BootT:
    """Studentised bootstrap of the (prompt-weighted) mean of ``d`` [n, k], resampling units.

    t* = (m* - m) / se*, with m* the resample's ratio of sums and se* its cluster-robust standard error
    (``sqrt(sum_j c_j (A_j - m* N_j)**2 * g/(g-1)) / sum_j c_j N_j``; the usual s/sqrt(n) without clusters).
    Residuals are centred at m before the products, so a large common mean does not cancel.  A resample
    whose units are all equal has se* = 0 and counts as infinitely extreme in the direction of m* - m (as
    extreme as anything: conservative).
    """
    n, k = d.shape
    clustered = inverse is not None
    g = n_units if clustered else n
    A, N = _units(d, inverse, n_units)
    m = A.sum(axis=0) / N.sum()
    R = A - np.outer(N, m)                       # unit residuals [g, k]
    R2 = R * R
    RN = R * N[:, None] if clustered else None
    N2 = N * N
    corr = g / (g - 1.0)
    ss = R2.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        se_num = np.sqrt(ss * corr)
        t_obs = np.where(se_num > 0, m * N.sum() / np.where(se_num > 0, se_num, 1.0),
                         np.sign(m) * np.inf)
    t_obs = np.nan_to_num(t_obs, nan=0.0)
    tol = 1e-9 * np.abs(t_obs)
    tol = np.where(np.isfinite(tol), tol, 0.0)
    ge = np.zeros(k, dtype=np.int64)
    le = np.zeros(k, dtype=np.int64)
    ab = np.zeros(k, dtype=np.int64)
    steps = None
    if maxt:
        steps = (StepDown(t_obs, t_obs - tol), StepDown(-t_obs, -t_obs - tol),
                 StepDown(np.abs(t_obs), np.abs(t_obs) - tol))
    chunk = _chunk_rows(max_memory, 16 * g + (40 + (16 if clustered else 0) + (24 if maxt else 0)) * k, n_resamples)
    base = np.random.default_rng(int(rng.integers(0, 2 ** 63 - 1)))
    for start in range(0, n_resamples, chunk):
        rows = min(n_resamples, start + chunk) - start
        c = _count_chunk(base, rows, g)
        s1 = c @ R                               # sum c_j R_j = SN (m* - m)
        sn = (c @ N)[:, None]
        s2 = c @ R2
        # sum c_j (R_j - (m* - m) N_j)**2 = s2 - 2 (m* - m) c@(R N) + (m* - m)**2 c@N**2
        if clustered:
            dm = s1 / sn
            s2 -= 2 * dm * (c @ RN) - dm * dm * (c @ N2)[:, None]
            del dm
        else:
            s2 -= s1 * s1 / sn
        del sn
        scale = c @ R2                           # rounding scale of the variance term
        degenerate = s2 <= 1e-12 * scale
        np.maximum(s2, 0.0, out=s2)
        s2 *= corr
        np.sqrt(s2, out=s2)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(degenerate, np.sign(s1) * np.inf, s1 / s2)
        del s1, s2, scale, degenerate, c
        with np.errstate(over="ignore", invalid="ignore"):
            ge += np.count_nonzero(t >= t_obs - tol, axis=0)
            le += np.count_nonzero(t <= t_obs + tol, axis=0)
        if steps is not None:
            steps[0].update(t)
            steps[1].update(-t)
        np.abs(t, out=t)
        with np.errstate(over="ignore", invalid="ignore"):
            ab += np.count_nonzero(t >= np.abs(t_obs) - tol, axis=0)
        if steps is not None:
            steps[2].update(t)
        del t
    return _BootT(t_obs, ge, le, ab, n_resamples, steps)


@dataclass(frozen=True)
class _Robust:
    """The sign-flip and bootstrap-t tests of one set of columns, and the skewness diagnostic (internal)."""

    sf: _SignFlip
    bt: _BootT
    skewness: np.ndarray       # [k] sample skewness of the units' residuals
    n_units: int

    @property
    def statistic(self) -> np.ndarray:
        return self.sf.statistic

    def pvalue(self, alternative: str) -> np.ndarray:
        return np.maximum(self.sf.pvalue(alternative), self.bt.pvalue(alternative))

    def maxt_pvalue(self, alternative: str) -> np.ndarray:
        return np.maximum(self.sf.maxt_pvalue(alternative), self.bt.maxt_pvalue(alternative))

    def n_reliable(self, alternative: str, alpha: float = 0.05) -> np.ndarray:
        """Units the Cochran-type rule asks for before a rejection in `alternative` is trusted (0: no doubt).

        Only skewness *against* the direction tested matters: a long left tail (g1 < 0) makes samples
        that missed it look shifted up, so it casts doubt on "greater"; a long right tail on "less".  A
        rejection far beyond the skew's reach is trusted anyway: when the studentised statistic exceeds
        ``z_(1-alpha) * (1 + |g1|)`` (e.g. 95 of 100 prompts fully recovered against a claim of 0.5), no
        plausible missing tail of the size the sample shows could undo it (chosen on the calibration panel).
        """
        g1 = self.skewness
        danger = {"greater": g1 < 0, "less": g1 > 0, "two-sided": g1 != 0}[alternative]
        t = {"greater": self.bt.t, "less": -self.bt.t, "two-sided": np.abs(self.bt.t)}[alternative]
        z = float(ndtri(1 - (alpha / 2 if alternative == "two-sided" else alpha)))
        far = t > z * (1 + np.abs(g1))
        return np.where(danger & ~far, cochran_n(g1, self.n_units), 0)

    def doubtful(self, alternative: str, alpha: float = 0.05) -> np.ndarray:
        return self.n_units < self.n_reliable(alternative, alpha)


def _robust(d: np.ndarray, *, n_resamples: int, rng_signflip, rng_boot, inverse=None, n_units=None,
            max_memory=None, maxt: bool = False, ci_level: float | None = None) -> _Robust:
    g = n_units if inverse is not None else d.shape[0]
    sf = _signflip(d, n_resamples=n_resamples, rng=rng_signflip, inverse=inverse, n_units=g, max_memory=max_memory,
                   maxt=maxt, ci_level=ci_level)
    bt = _boot_t(d, n_resamples=n_resamples, rng=rng_boot, inverse=inverse, n_units=g, max_memory=max_memory,
                 maxt=maxt)
    A, N = _units(d, inverse, g)
    R = A - np.outer(N, A.sum(axis=0) / N.sum())
    return _Robust(sf, bt, _skewness(R), g)


# ----------------------------------------------------------------------------- public

@dataclass(frozen=True)
class RobustTestResult:
    """Result of `robust_mean_test` (scalars for 1-D input, else arrays over the other axes).

    statistic            the mean (over prompts; prompt-weighted with clusters)
    pvalue               max(pvalue_signflip, pvalue_bootstrap_t)
    pvalue_signflip      sign-flip p (valid under symmetry)
    pvalue_bootstrap_t   studentised-bootstrap p (valid to second order under skewness, large enough n)
    skewness             sample skewness of the units (prompts, or cluster residuals)
    n_reliable           units the Cochran-type rule asks for before a rejection in `alternative` is trusted
    reliable             n_units >= n_reliable
    n_units, n_resamples, alternative
    """

    statistic: Any
    pvalue: Any
    pvalue_signflip: Any
    pvalue_bootstrap_t: Any
    skewness: Any
    n_reliable: Any
    reliable: Any
    n_units: int
    n_resamples: int
    alternative: str


def robust_mean_test(x, y=None, *, alternative: str = "two-sided", n_resamples: int = 9999, seed=None,
                     axis: int = 0, clusters=None, max_memory: int | None = None,
                     alpha: float = 0.05) -> RobustTestResult:
    """Test of ``mean(x - y) = 0`` valid when the differences are symmetric OR moderately skewed.

    p = max(sign-flip p, bootstrap-t p): see the module docstring for why the larger p keeps the level.
    `reliable` is False where the sample is skewed against `alternative` more than the Cochran-type rule
    allows for this many units and the statistic is not far beyond the level-`alpha` critical value; treat a
    rejection there as unproven (`evaluate` abstains).
    Deterministic for an int `seed`; vectorised over the non-sample axes like `permutation_test`.
    """
    alternative = _check_alternative(alternative)
    n_resamples = _check_n_resamples(n_resamples)
    d, rest = _paired_2d(x, y, axis)
    inverse, g = _cluster_index(clusters, d.shape[0])
    r1, r2 = (np.random.default_rng(s) for s in np.random.SeedSequence(
        int(_rng(seed).integers(0, 2 ** 63 - 1))).spawn(2))
    res = _robust(d, n_resamples=n_resamples, rng_signflip=r1, rng_boot=r2, inverse=inverse, n_units=g,
                  max_memory=max_memory)
    nrel = res.n_reliable(alternative, alpha)
    return RobustTestResult(statistic=_shape_out(res.statistic, rest), pvalue=_shape_out(res.pvalue(alternative), rest),
                            pvalue_signflip=_shape_out(res.sf.pvalue(alternative), rest),
                            pvalue_bootstrap_t=_shape_out(res.bt.pvalue(alternative), rest),
                            skewness=_shape_out(res.skewness, rest), n_reliable=_shape_out(nrel, rest),
                            reliable=_shape_out(g >= nrel, rest), n_units=g, n_resamples=n_resamples,
                            alternative=alternative)


def bootstrap_t_test(x, y=None, *, alternative: str = "two-sided", n_resamples: int = 9999, seed=None,
                     axis: int = 0, clusters=None, max_memory: int | None = None):
    """Studentised bootstrap (bootstrap-t) p-values of ``mean(x - y) = 0``, vectorised over sites.

    ``p = (1 + #{b: t*_b as extreme as t}) / (B + 1)`` with ``t* = (m* - m)/se*`` from resampled units
    (whole clusters with `clusters`: cluster-robust se, prompt-weighted mean).  Two-sided uses |t|.
    Returns the p-values with the shape of the non-sample axes (a float for 1-D input).
    """
    alternative = _check_alternative(alternative)
    n_resamples = _check_n_resamples(n_resamples)
    d, rest = _paired_2d(x, y, axis)
    inverse, g = _cluster_index(clusters, d.shape[0])
    res = _boot_t(d, n_resamples=n_resamples, rng=_rng(seed), inverse=inverse, n_units=g, max_memory=max_memory)
    return _shape_out(res.pvalue(alternative), rest)
