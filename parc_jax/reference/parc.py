"""The float64 NumPy/SciPy reference of PARC, RSA and DDS.

Written from the equations in docs/metrics.md; see :mod:`parc_jax.reference`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist

from parc_jax.reference._common import (
    _any_labels,
    _check_n_dims,
    _check_num_classes,
    _matrix,
    _reduce,
    _row_corr_distance,
    _spearman,
    _upper,
    standardize,
)

# The logistic train/test split is shared with the JAX side on purpose: it is not under test.


def _multilabel_distance_order(y: np.ndarray) -> np.ndarray:
    """``[n, n]`` values ordered exactly like ``1 - corrcoef(rows of y)`` for 0/1 ``y``.

    For rows with ``a`` and ``b`` positives out of ``K`` and ``c`` shared ones the correlation
    is ``N / sqrt(P)``, ``N = cK - ab``, ``P = a (K - a) b (K - b)``, all integers. ``1 - corr``
    increases with ``-sign(N) N^2 / P``: one correctly rounded division of exact integers, so
    equal correlations give identical values. ``1 - np.corrcoef(y)`` splits such ties by
    rounding (for K = 5, n = 200: 21 distinct values where 12 exist), which moves Spearman.
    Spearman needs only the order.
    """
    y = np.asarray(y, dtype=np.float64)
    k = y.shape[1]
    a = y.sum(axis=1)
    num = (y @ y.T) * k - np.outer(a, a)
    spread = a * (k - a)
    return -np.sign(num) * num**2 / np.outer(spread, spread)


def parc(
    features: Any,
    labels: Any,
    *,
    num_classes: int,
    n_dims: int | None = 32,
    literal_label_distance: bool = False,
) -> float:
    """PARC (Bolya et al. 2021), x100.

    ``features: [n, d]``; ``labels: int [n]`` or a 0/1 ``[n, K]`` multi-label matrix.
    PCA (if ``n_dims``) -> standardise -> ``D_F = 1 - corrcoef(rows)`` -> Spearman of the upper
    triangles of ``D_F`` and the label distance ``D_y``. For integer labels ``D_y`` is the exact
    two-valued distance (0 if ``y_i = y_j``, ``1 + 1/(K-1)`` otherwise); with
    ``literal_label_distance`` it is ``1 - np.corrcoef(one_hot)`` as in the published code,
    whose rounding noise changes the ranks for K >= 10 (docs/metrics.md trap; reporting only).
    Multi-label: ``D_y = 1 - corrcoef(label rows)``, ranked through an order-equivalent key
    built from integer counts so that equal correlations tie exactly (see
    :func:`_multilabel_distance_order`).
    """
    k = _check_num_classes(num_classes)
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    multi, y = _any_labels(labels, k, x.shape[0], "parc")
    dist_f = _row_corr_distance(standardize(_reduce(x, n_dims)))
    if multi:
        dist_y = _multilabel_distance_order(y)
    elif literal_label_distance:
        dist_y = 1.0 - np.corrcoef(np.eye(k)[y])
    else:
        differ = y[:, None] != y[None, :]
        dist_y = np.where(differ, 1.0 + 1.0 / (k - 1), 0.0)
    return 100.0 * _spearman(_upper(dist_f), _upper(dist_y))


def rsa(features: Any, reference_features: Any, *, n_dims: int | None = 64) -> float:
    """RSA against a reference model's features, x100.

    ``features: [n, d]``, ``reference_features: [n, d_r]``: both reduced (if ``n_dims``) and
    standardised the same way; Spearman of the upper triangles of their ``1 - corrcoef(rows)``.
    """
    x = _matrix(features, "features")
    r = _matrix(reference_features, "reference_features", n=x.shape[0])
    _check_n_dims(n_dims)
    dist_x = _row_corr_distance(standardize(_reduce(x, n_dims)))
    dist_r = _row_corr_distance(standardize(_reduce(r, n_dims)))
    return 100.0 * _spearman(_upper(dist_x), _upper(dist_r))


def hsic_unbiased(k: Any, l: Any) -> float:  # noqa: E741 - the literature's name
    """Unbiased HSIC estimator (Song et al. 2012) of two ``[n, n]`` kernel matrices, n >= 4.

    With zeroed diagonals, ``HSIC_u = [tr(K L) + sum(K) sum(L) / ((n-1)(n-2))
    - 2/(n-2) 1^T K L 1] / (n (n-3))``.
    """
    kk = np.array(k, dtype=np.float64)
    ll = np.array(l, dtype=np.float64)
    n = kk.shape[0]
    np.fill_diagonal(kk, 0.0)
    np.fill_diagonal(ll, 0.0)
    ones = np.ones(n)
    value = (
        np.trace(kk @ ll)
        + kk.sum() * ll.sum() / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (ones @ kk @ ll @ ones)
    )
    return float(value / (n * (n - 3)))


def _cosine_distance(x: np.ndarray) -> np.ndarray:
    """``1 - cos(rows)`` ``[n, n]``; cdist's cosine metric, with a zero row at distance 1."""
    zero = np.linalg.norm(x, axis=1) == 0
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dist = cdist(x, x, "cosine")
    dist[zero, :] = 1.0
    dist[:, zero] = 1.0
    return dist


def dds(features: Any, reference_features: Any, *, n_dims: int | None = 64) -> float:
    """DDS: debiased CKA of cosine-distance matrices, x100.

    ``features: [n, d]``, ``reference_features: [n, d_r]``, n >= 4: reduce (if ``n_dims``) and
    standardise both; ``K = 1 - cos(rows of F)``, ``L`` likewise for the reference;
    ``CKA = HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L))`` with :func:`hsic_unbiased`.
    """
    x = _matrix(features, "features", min_rows=4)
    r = _matrix(reference_features, "reference_features", n=x.shape[0])
    _check_n_dims(n_dims)
    kx = _cosine_distance(standardize(_reduce(x, n_dims)))
    kr = _cosine_distance(standardize(_reduce(r, n_dims)))
    denom = hsic_unbiased(kx, kx) * hsic_unbiased(kr, kr)
    if not denom > 0:
        raise ValueError("features: a distance matrix has no variation; DDS is undefined")
    return 100.0 * hsic_unbiased(kx, kr) / math.sqrt(denom)
