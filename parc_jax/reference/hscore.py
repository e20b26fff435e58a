"""The float64 NumPy/SciPy reference of H-Score and shrinkage H-Score.

Written from the equations in docs/metrics.md; see :mod:`parc_jax.reference`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from parc_jax.reference._common import (
    _check_n_dims,
    _check_num_classes,
    _class_means,
    _cov,
    _matrix,
    _reduce,
    _single_labels,
    standardize,
)

# The logistic train/test split is shared with the JAX side on purpose: it is not under test.


def hscore_is_degenerate(n: int, d: int, *, n_dims: int | None = None) -> bool:
    """True when the H-Score feature covariance is singular: reduced width ``>= n - 1``.

    ``d`` is the feature width; with ``n_dims`` it is first reduced to ``min(n_dims, n-1, d)``.
    Then, in exact arithmetic, H-Score is ``K - 1`` whatever the features (docs/metrics.md trap).
    """
    f = d if n_dims is None else min(n_dims, n - 1, d)
    return f >= n - 1


def hscore(features: Any, labels: Any, *, num_classes: int, n_dims: int | None = 32) -> float:
    """H-Score (Bao et al. 2019), >= 0.

    ``features: [n, d]``, ``labels: int [n]``. Reduce (if ``n_dims``), standardise;
    ``tr(pinv(Cov F) @ Cov G)`` where row i of ``G`` is the mean standardised feature of class
    ``y_i``; covariances with ``1/(n-1)``; ``np.linalg.pinv`` with its default ``rcond``.
    """
    k = _check_num_classes(num_classes)
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    y = _single_labels(labels, k, x.shape[0], "hscore")
    f = standardize(_reduce(x, n_dims))
    g = _class_means(f, y, k)[y]
    return float(np.trace(np.linalg.pinv(_cov(f)) @ _cov(g)))


def ledoit_wolf(centred: Any) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance ``[d, d]`` and shrinkage ``alpha`` of centred ``[n, d]``.

    ``S = X^T X / n``, ``mu = tr(S) / d``, ``delta = ||S - mu I||_F^2``,
    ``beta_bar = (1/n^2) sum_k ||x_k x_k^T - S||_F^2``, ``beta = min(beta_bar, delta)``,
    ``alpha = beta / delta`` (0 when ``beta = 0``), ``Sigma = (1 - alpha) S + alpha mu I``.

    Same as scikit-learn's ``LedoitWolf`` (``assume_centered`` on centred data): it computes
    ``mu`` identically, ``delta_sk = ||S - mu I||_F^2 / d`` and
    ``beta_sk = (sum_k ||x_k||^4 / n - ||S||_F^2) / (n d)``. Expanding our sum,
    ``sum_k ||x_k x_k^T - S||_F^2 = sum_k ||x_k||^4 - 2 sum_k x_k^T S x_k + n ||S||_F^2`` and
    ``sum_k x_k^T S x_k = tr(S X^T X) = n ||S||_F^2``, so ``beta_bar = (sum_k ||x_k||^4 / n
    - ||S||_F^2) / n = d beta_sk``; likewise ``delta = d delta_sk``. The common factor ``d``
    cancels in both ``min`` and ratio, so ``alpha`` equals sklearn's ``shrinkage_`` and
    ``Sigma`` its ``covariance_`` (``(1 - shrinkage) S + shrinkage mu I``).
    """
    x = np.asarray(centred, dtype=np.float64)
    n, d = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / d
    delta = np.sum((s - mu * np.eye(d)) ** 2)
    # The literal sum over samples, in chunks of samples to bound the [c, d, d] temporaries.
    chunk = max(1, 2**22 // (d * d))
    total = 0.0
    for start in range(0, n, chunk):
        xk = x[start : start + chunk]
        total += np.sum((xk[:, :, None] * xk[:, None, :] - s) ** 2)
    beta_bar = total / n**2
    beta = min(beta_bar, delta)
    alpha = 0.0 if beta == 0 else beta / delta
    sigma = (1.0 - alpha) * s + alpha * mu * np.eye(d)
    return sigma, float(alpha)


def hscore_shrink(
    features: Any, labels: Any, *, num_classes: int, n_dims: int | None = 32
) -> float:
    """Shrinkage H-Score (Ibrahim et al. 2022), >= 0.

    ``features: [n, d]``, ``labels: int [n]``. Reduce (if ``n_dims``) and centre, *not*
    standardise (shrinkage is not scale-invariant); ``Sigma, alpha`` from :func:`ledoit_wolf`;
    ``tr(pinv(Sigma) @ (1 - alpha) Cov G)`` with ``G`` the class means of the centred
    features and ``Cov G`` with ``1/(n-1)``.
    """
    k = _check_num_classes(num_classes)
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    y = _single_labels(labels, k, x.shape[0], "hscore_shrink")
    f = _reduce(x, n_dims)
    f = f - f.mean(axis=0)
    sigma, alpha = ledoit_wolf(f)
    g = _class_means(f, y, k)[y]
    return float(np.trace(np.linalg.pinv(sigma) @ ((1.0 - alpha) * _cov(g))))
