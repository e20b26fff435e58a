"""The float64 NumPy/SciPy reference of logistic regression on the stratified half.

Written from the equations in docs/metrics.md; see :mod:`parc_jax.reference`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

from parc_jax.reference._common import (
    _check_n_dims,
    _check_num_classes,
    _matrix,
    _reduce,
    _scalar,
    _single_labels,
)

# The logistic train/test split is shared with the JAX side on purpose: it is not under test.


def logistic_objective(
    theta: np.ndarray, x: np.ndarray, y: np.ndarray, *, num_classes: int, C: float = 1.0
) -> tuple[float, np.ndarray]:
    """Objective and gradient of L2 multinomial logistic regression with intercept.

    ``theta = [W.ravel(), b]`` with ``W: [f, K]``, ``b: [K]``; ``x: [m, f]``, ``y: int [m]``.
    ``sum_i CE_i + ||W||^2 / (2 C)``, the intercept unpenalised (scikit-learn's convention).
    """
    f = x.shape[1]
    w = theta[: f * num_classes].reshape(f, num_classes)
    b = theta[f * num_classes :]
    logits = x @ w + b
    lse = scipy.special.logsumexp(logits, axis=1)
    value = np.sum(lse - logits[np.arange(y.size), y]) + np.sum(w**2) / (2.0 * C)
    resid = np.exp(logits - lse[:, None])  # softmax
    resid[np.arange(y.size), y] -= 1.0
    grad_w = x.T @ resid + w / C
    grad_b = resid.sum(axis=0)
    return float(value), np.concatenate([grad_w.ravel(), grad_b])


def logistic_fit(
    x: np.ndarray, y: np.ndarray, *, num_classes: int, C: float = 1.0
) -> tuple[np.ndarray, np.ndarray, scipy.optimize.OptimizeResult]:
    """Minimise :func:`logistic_objective` by L-BFGS-B to tight tolerances.

    ``x: [m, f]`` (already standardised), ``y: int [m]``. Returns ``(W [f, K], b [K], result)``.
    """
    f = x.shape[1]
    theta0 = np.zeros(f * num_classes + num_classes)
    result = scipy.optimize.minimize(
        lambda th: logistic_objective(th, x, y, num_classes=num_classes, C=C),
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 50_000, "maxfun": 100_000, "gtol": 1e-8, "ftol": 1e-15, "maxls": 50},
    )
    w = result.x[: f * num_classes].reshape(f, num_classes)
    b = result.x[f * num_classes :]
    return w, b, result


def logistic(
    features: Any,
    labels: Any,
    *,
    num_classes: int,
    train_mask: Any,
    n_dims: int | None = None,
    C: float = 1.0,
) -> float:
    """Logistic-regression probe accuracy, %.

    ``features: [n, d]`` (PCA on all n rows if ``n_dims``), ``labels: int [n]``,
    ``train_mask: bool [n]`` (from :func:`stratified_half`). Standardise with the mean and
    population std of the training rows (columns constant there -> 0), fit
    :func:`logistic_fit` on them, score = accuracy on the other rows (argmax, lowest index on
    ties), x100.
    """
    k = _check_num_classes(num_classes)
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    y = _single_labels(labels, k, x.shape[0], "logistic")
    C = _scalar(C, "C")
    mask = np.asarray(train_mask)
    if mask.dtype != np.bool_ or mask.shape != (x.shape[0],):
        raise ValueError(f"train_mask: expected a bool array of shape ({x.shape[0]},)")
    if mask.all() or not mask.any():
        raise ValueError("train_mask: both the training and the held-out half must be non-empty")
    f = _reduce(x, n_dims)
    train = f[mask]
    mean = train.mean(axis=0)
    std = np.sqrt(np.mean((train - mean) ** 2, axis=0))
    keep = (np.ptp(train, axis=0) > 0) & (std > 0)
    scaled = np.zeros_like(f)
    scaled[:, keep] = (f[:, keep] - mean[keep]) / std[keep]
    w, b, _ = logistic_fit(scaled[mask], y[mask], num_classes=k, C=C)
    pred = np.argmax(scaled[~mask] @ w + b, axis=1)
    return 100.0 * float(np.mean(pred == y[~mask]))
