"""Shared pieces of the NumPy/SciPy references: input checks, exact PCA, standardisation,
distances and rank correlation (float64)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

# The logistic train/test split is shared with the JAX side on purpose: it is not under test.

PROB_SUM_TOL = 1e-3


def _matrix(x: Any, name: str, *, n: int | None = None, min_rows: int = 2) -> np.ndarray:
    """A finite float64 ``[n, d]`` copy of ``x``."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot be read as a float matrix ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{name}: expected a 2-D array [n, d], got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} rows, got {arr.shape[0]}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(
            f"{name}: has {arr.shape[0]} rows but {n} were expected; all inputs must describe "
            "the same probe images"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values; clean the input first")
    return arr


def _check_n_dims(n_dims: Any) -> None:
    if n_dims is None:
        return
    if isinstance(n_dims, bool) or not isinstance(n_dims, (int, np.integer)) or n_dims < 1:
        raise ValueError(f"n_dims: expected a positive int or None (no reduction), got {n_dims!r}")


def _check_num_classes(num_classes: Any) -> int:
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 2
    ):
        raise ValueError(f"num_classes: expected an int >= 2, got {num_classes!r}")
    return int(num_classes)


def _single_labels(labels: Any, num_classes: int, n: int, method: str) -> np.ndarray:
    """Integer labels ``[n]`` in ``0..K-1`` with at least two classes present."""
    y = np.asarray(labels)
    if y.ndim == 2:
        raise ValueError(
            f"labels: {method} is defined for single-label targets only (integer labels [n]); "
            f"got a multi-label matrix of shape {y.shape}"
        )
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"labels: expected integer class indices of shape [n], got {y.dtype} {y.shape}"
        )
    if y.shape[0] != n:
        raise ValueError(f"labels: has {y.shape[0]} entries but the features have {n} rows")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels: class indices must lie in 0..{num_classes - 1}")
    if np.unique(y).size < 2:
        raise ValueError("labels: the probe holds a single class; at least 2 are needed")
    return y.astype(np.int64)


def _multi_labels(labels: np.ndarray, num_classes: int, n: int) -> np.ndarray:
    """0/1 label matrix ``[n, K]`` with no all-0 or all-1 row."""
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != (n, num_classes):
        raise ValueError(f"labels: expected a [{n}, {num_classes}] 0/1 matrix, got {y.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels: a multi-label matrix must hold only 0 and 1")
    sums = y.sum(axis=1)
    if np.any((sums == 0) | (sums == num_classes)):
        raise ValueError("labels: a multi-label row that is all 0 or all 1 has no correlation")
    return y


def _any_labels(labels: Any, num_classes: int, n: int, method: str) -> tuple[bool, np.ndarray]:
    """``(multilabel, labels)`` for scorers that accept both kinds."""
    if np.ndim(labels) == 2:
        return True, _multi_labels(np.asarray(labels), num_classes, n)
    return False, _single_labels(labels, num_classes, n, method)


def _regression_targets(labels: Any, n: int) -> np.ndarray:
    """Real targets ``[n]`` or ``[n, C]`` as a float64 ``[n, C]`` matrix; finite, and no
    output the same for every sample."""
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != n or y.shape[1] < 1:
        raise ValueError(f"labels: expected regression targets [{n}] or [{n}, C], got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("labels: contains NaN or infinite targets")
    if np.any(np.all(y == y[:1], axis=0)):
        raise ValueError("labels: a regression output is the same for every sample")
    return y


def _probs(probs: Any) -> np.ndarray:
    p = _matrix(probs, "probs", min_rows=1)
    if p.min() < 0 or np.max(np.abs(p.sum(axis=1) - 1.0)) > PROB_SUM_TOL:
        raise ValueError("probs: rows must be non-negative and sum to 1 (softmax probabilities)")
    return p


def _scalar(value: Any, name: str, *, positive: bool = True) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(out) or (positive and out <= 0):
        raise ValueError(f"{name}: expected a finite positive number, got {value!r}")
    return out


# --------------------------------------------------------------------------------------------
# Shared steps
# --------------------------------------------------------------------------------------------


# Variance ratio below which a principal component counts as rank noise: the resolution of a
# float32 Gram eigendecomposition (16 float32 epsilons), the precision of the engine and of
# float16/float32 bank features; float64 would resolve far weaker components.
NULL_COMPONENT_RTOL = 16 * float(np.finfo(np.float32).eps)


def pca(features: Any, n_dims: int) -> np.ndarray:
    """Exact PCA scores ``[n, f]`` of ``features: [n, d]``, ``f = min(n_dims, n - 1, d)``.

    Centre the columns, ``Xc = U S Vt`` (thin SVD), keep the top ``f`` directions. Each loading
    vector (row of ``Vt``) is signed so that its largest-magnitude entry (lowest index on ties)
    is positive. Returns ``Xc V = U S`` for those components.

    Components beyond the numerical rank (variance ``s_i^2 <= NULL_COMPONENT_RTOL * s_1^2``)
    are returned as exact zeros: in exact arithmetic they *are* zero (``Xc v = 0``), and
    standardisation would otherwise blow rounding noise up to unit variance. The same rule is
    in ``parc_jax.numerics.pca``.
    """
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    if n_dims is None:
        raise ValueError("n_dims: pca needs a positive int")
    n, d = x.shape
    f = min(int(n_dims), n - 1, d)
    xc = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    pivot = np.argmax(np.abs(vt[:f]), axis=1)  # argmax: first index among ties
    signs = np.where(vt[np.arange(f), pivot] < 0, -1.0, 1.0)
    null = s[:f] ** 2 <= NULL_COMPONENT_RTOL * s[0] ** 2
    return np.where(null, 0.0, u[:, :f] * s[:f] * signs)


def standardize(x: Any) -> np.ndarray:
    """Per column zero mean, unit population std, for ``x: [n, d]``.

    A column whose entries are all equal has zero variance and is left at zero.
    """
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(axis=0)
    std = np.sqrt(np.mean(xc**2, axis=0))
    keep = (np.ptp(x, axis=0) > 0) & (std > 0)
    out = np.zeros_like(xc)
    out[:, keep] = xc[:, keep] / std[keep]
    return out


def _reduce(features: np.ndarray, n_dims: int | None) -> np.ndarray:
    return features if n_dims is None else pca(features, n_dims)


def _row_corr_distance(x: np.ndarray) -> np.ndarray:
    """``1 - corrcoef(rows of x)`` ``[n, n]``.

    A constant row has no correlation; np.corrcoef returns NaN for it, which is replaced by
    correlation 0 (distance 1), the convention of the JAX numerics.
    """
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dist = 1.0 - np.corrcoef(x)
    return np.where(np.isnan(dist), 1.0, dist)


def _upper(m: np.ndarray) -> np.ndarray:
    return m[np.triu_indices(m.shape[0], 1)]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation with average ranks (scipy.stats.spearmanr)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise ValueError(
            "features: the pairwise distances are all equal, so their Spearman correlation is "
            "undefined; use more feature dimensions (n_dims >= 2) or check the input"
        )
    return float(scipy.stats.spearmanr(a, b).statistic)


def _class_means(x: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class means ``[K, d]`` (rows of absent classes are zero; they are never indexed)."""
    means = np.zeros((num_classes, x.shape[1]))
    for c in np.unique(y):
        means[c] = x[y == c].mean(axis=0)
    return means


def _cov(x: np.ndarray) -> np.ndarray:
    """Covariance ``[d, d]`` of the columns of ``x: [n, d]`` with ``1 / (n - 1)``."""
    return np.atleast_2d(np.cov(x, rowvar=False))
