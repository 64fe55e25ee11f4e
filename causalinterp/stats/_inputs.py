"""Input checks and small array helpers shared by every `causalinterp.stats` module.

Kept apart from the tests themselves so that the modules can import them without importing each other
(`permutation` and `bootstrap` used to import one another for these).
"""
from __future__ import annotations

from typing import Any

import numpy as np

#: Default memory budget (bytes) for the resampling buffers of one call.
DEFAULT_MAX_MEMORY = 256 * 2**20

ALTERNATIVES = ("two-sided", "greater", "less")


def _check_level(confidence_level) -> float:
    cl = float(confidence_level)
    if not 0 < cl < 1:
        raise ValueError(f"confidence_level must be in (0, 1), e.g. 0.95; got {confidence_level!r}")
    return cl



def _to_numpy(x: Any, name: str) -> np.ndarray:
    """A float64 numpy array from an array-like or a (CPU or GPU) torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor
        x = x.detach().cpu()
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a numeric array (numpy array, list or torch tensor); "
                        f"got {type(x).__name__}: {exc}") from None
    if arr.ndim == 0:
        raise ValueError(f"{name} is a scalar; pass one value per prompt (an array with prompts on `axis`)")
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        kinds = []
        if np.isnan(arr).any():
            kinds.append("NaN")
        if np.isinf(arr).any():
            kinds.append("inf")
        raise ValueError(
            f"{name} contains {int(bad.sum())} {'/'.join(kinds)} value(s) (first at index {first}); "
            "statistics on non-finite values are undefined. Drop those prompts, or fix the metric "
            "(e.g. a log-probability of a zero probability) before testing.")


def _check_n(n: int, name: str, what: str = "observations") -> None:
    if n < 2:
        raise ValueError(f"{name} has {n} {what} along the sample axis; at least 2 are needed "
                         "(no variability can be estimated from fewer). Use more prompts.")


def _paired_2d(x, y=None, axis: int = 0, name: str = "x", return_scale: bool = False):
    """``x - y`` as a float array [n, k] with the sample axis first, plus the shape of the other axes.

    With ``return_scale``, also the per-column magnitude of the inputs (max|x| + max|y|), against which
    rounding noise in ``x - y`` is judged (see `_zero_variance`).
    """
    xa = _to_numpy(x, name)
    if y is not None:
        ya = _to_numpy(y, "y")
        if xa.shape != ya.shape:
            raise ValueError(f"{name} has shape {xa.shape} but y has shape {ya.shape}; paired data need the "
                             "same shape (one row per prompt in both). Align them, or pass the differences as x.")
        _check_finite(xa, name)
        _check_finite(ya, "y")
        d = xa - ya
        _check_finite(d, f"{name} - y")
    else:
        _check_finite(xa, name)
        d = xa
    axis = _check_axis(axis, d.ndim)
    d = np.moveaxis(d, axis, 0)
    n = d.shape[0]
    _check_n(n, name)
    rest = d.shape[1:]
    d2 = np.ascontiguousarray(d.reshape(n, -1))
    if not return_scale:
        return d2, rest
    mag = np.abs(np.moveaxis(xa, axis, 0)).reshape(n, -1).max(axis=0)
    if y is not None:
        mag = mag + np.abs(np.moveaxis(ya, axis, 0)).reshape(n, -1).max(axis=0)
    return d2, rest, mag


#: Relative tolerance under which the spread of differences counts as rounding noise (zero variance).
ZERO_VAR_RTOL = 1e-12


def _zero_variance(d: np.ndarray, scale=None) -> np.ndarray:
    """Columns of ``d`` [n, k] whose values are all equal up to rounding (relative to `scale`, else max|d|)."""
    if scale is None:
        scale = np.abs(d).max(axis=0)
    return np.ptp(d, axis=0) <= ZERO_VAR_RTOL * scale


def _check_axis(axis: int, ndim: int) -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {ndim} dimension(s)")
    return int(axis) % ndim


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"seed must be None, an int, a SeedSequence or a numpy Generator; got {seed!r}") from exc


def _check_n_resamples(n_resamples) -> int:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive int, got {n_resamples!r}")
    return int(n_resamples)


def _check_alternative(alternative: str) -> str:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    return alternative


def _cluster_index(clusters, n: int):
    """(unit index per prompt [n], number of units) for cluster labels, or None."""
    if clusters is None:
        return None, n
    if hasattr(clusters, "detach") and hasattr(clusters, "cpu"):
        clusters = clusters.detach().cpu().numpy()
    labels = np.asarray(clusters)
    if labels.shape != (n,):
        raise ValueError(f"clusters must have one label per prompt, shape ({n},); got shape {labels.shape}")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise ValueError("clusters contains NaN/inf labels; give every prompt a cluster id (e.g. its template index)")
    _, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(-1)
    g = int(inverse.max()) + 1
    if g < 2:
        raise ValueError("all prompts are in one cluster; resampling whole clusters needs at least 2 clusters "
                         "(pass clusters=None to treat prompts as independent)")
    return inverse, g


def _cluster_sums(a: np.ndarray, inverse, g: int) -> np.ndarray:
    """Sum the rows of ``a`` [n, k] within each cluster -> [g, k] (identity without clusters)."""
    if inverse is None:
        return a
    out = np.zeros((g, a.shape[1]))
    np.add.at(out, inverse, a)
    return out


def _chunk_rows(max_memory: int, bytes_per_row: int, total: int) -> int:
    if max_memory is None:
        max_memory = DEFAULT_MAX_MEMORY
    if not isinstance(max_memory, (int, np.integer)) or max_memory <= 0:
        raise ValueError(f"max_memory must be a positive number of bytes, got {max_memory!r}")
    return int(max(1, min(total, max_memory // max(1, bytes_per_row))))


def _shape_out(a: np.ndarray, rest: tuple):
    """Reshape a per-column array to the non-sample axes; a numpy scalar for 1-D input."""
    a = np.asarray(a).reshape(rest)
    return a[()] if a.ndim == 0 else a
