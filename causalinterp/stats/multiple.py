"""Multiple-comparison correction: a scan of many sites is one family of tests.

`adjust_pvalues` corrects a vector of p-values.  The resampling correction "maxT" (Westfall-Young) needs
the data, not the p-values: it is `causalinterp.stats.maxt_pvalues`, and `evaluate(..., correction="maxT")`.
"""
from __future__ import annotations

import numpy as np
from statsmodels.stats.multitest import multipletests

__all__ = ["adjust_pvalues", "CORRECTIONS"]

#: Accepted `method` names ("none" leaves the p-values as they are; the others are statsmodels').
CORRECTIONS = ("holm", "fdr_bh", "bonferroni", "none", "hommel", "sidak", "holm-sidak", "fdr_by")

#: Corrections computed from the resampled data rather than from p-values (accepted by `evaluate`).
RESAMPLING_CORRECTIONS = ("maxT",)


def check_correction(method: str, *, resampling: bool = True) -> str:
    """The canonical name of a correction ("maxt" -> "maxT"); `resampling=False` refuses "maxT"."""
    if method is None:
        return "none"
    if isinstance(method, str) and method.lower() == "maxt":
        if not resampling:
            raise ValueError("correction 'maxT' resamples the data and cannot adjust a vector of p-values: use "
                             "causalinterp.stats.maxt_pvalues(differences) or evaluate(..., correction='maxT')")
        return "maxT"
    if method not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS + RESAMPLING_CORRECTIONS}, got {method!r} "
                         "('holm' controls the family-wise error, 'maxT' too with far fewer resamples for large "
                         "scans, 'fdr_bh' the false discovery rate)")
    return method


def adjust_pvalues(p, method: str = "holm"):
    """Adjusted p-values for one family of tests (every element of `p`, whatever its shape).

    method: "holm" (default; family-wise error), "fdr_bh" (Benjamini-Hochberg false discovery rate),
    "bonferroni", "none", or another `statsmodels.stats.multitest.multipletests` method
    ("hommel", "sidak", "holm-sidak", "fdr_by"). Values equal ``multipletests(p, method=...)[1]``
    (Holm is computed here with statsmodels' formula, the others by statsmodels).
    Returns an array of the same shape (a float for a scalar).
    """
    method = check_correction(method, resampling=False)
    arr = np.asarray(p, dtype=float)
    if arr.size == 0:
        return arr.copy()
    if not np.isfinite(arr).all():
        raise ValueError("p contains NaN/inf; every test in the family needs a p-value "
                         "(drop undefined tests before correcting, and report them separately)")
    if (arr < 0).any() or (arr > 1).any():
        raise ValueError(f"p-values must lie in [0, 1]; got values in [{arr.min():.3g}, {arr.max():.3g}]")
    if method == "none" or arr.size == 1:
        out = arr.copy()
    elif method == "holm":
        out = _holm(arr.ravel()).reshape(arr.shape)
    else:
        out = multipletests(arr.ravel(), method=method)[1].reshape(arr.shape)
    return float(out) if out.ndim == 0 else out


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values; the same formula as statsmodels' ``multipletests(method="holm")``
    (sorted p times (m - i), running maximum, capped at 1), without its per-call ``gc.collect()``, which
    costs a noticeable fraction of a second in a process holding a model."""
    m = p.size
    order = np.argsort(p)
    adj = np.maximum.accumulate(p[order] * np.arange(m, 0, -1))
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def effective_alpha(alpha: float, m: int, method: str) -> float:
    """The level the *smallest* p-value of a family of m tests must reach to be rejected.

    Holm, Bonferroni, Hommel, Sidak and BH all need ``min p <= alpha/m`` (about) to reject the best
    test when it stands alone; BH can reject at larger p once many tests are small, so for "fdr_bh"
    and "fdr_by" the most lenient possible threshold is alpha. maxT compares each site with the null
    distribution of the family's maximum, so its smallest attainable adjusted p is the resampling
    resolution itself (``1/(B+1)``, or ``1/2**n`` exact): the threshold is alpha.
    Used to tell "too few prompts".
    """
    method = check_correction(method)
    if method == "none" or m <= 1:
        return alpha
    if method in ("fdr_bh", "fdr_by", "maxT"):
        return alpha
    return alpha / m
