"""The float64 NumPy/SciPy reference of LogME.

Written from the equations in docs/metrics.md; see :mod:`parc_jax.reference`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from parc_jax.reference._common import (
    _check_n_dims,
    _check_num_classes,
    _matrix,
    _reduce,
    _regression_targets,
    _single_labels,
)

# The logistic train/test split is shared with the JAX side on purpose: it is not under test.

LOGME_MAX_ITER = 11
LOGME_TOL = 1e-3
LOGME_GUARD = 1e-5


def _logme_column(
    u: np.ndarray, s: np.ndarray, vt: np.ndarray, x: np.ndarray, target: np.ndarray
) -> tuple[float, float, float]:
    """LogME evidence (total, not per sample), alpha, beta for one target column ``[n]``.

    ``x = u diag(s) vt`` is the thin SVD of the features ``[n, d]``; ``s`` has ``r = min(n, d)``
    entries, and the spectrum of ``x^T x`` is ``s^2`` padded with ``d - r`` zeros.
    """
    n, d = x.shape
    uty = u.T @ target

    def posterior_mean(alpha: float, beta: float) -> np.ndarray:
        # m = beta (alpha I + beta X^T X)^{-1} X^T y, through the SVD; no component outside
        # the row space of X (the prior mean is 0 there).
        return vt.T @ (beta * s * uty / (alpha + beta * s**2))

    alpha, beta = 1.0, 1.0
    t = alpha / beta
    for _ in range(LOGME_MAX_ITER):
        m = posterior_mean(alpha, beta)
        gamma = np.sum(beta * s**2 / (alpha + beta * s**2))  # padded zeros add nothing
        residual = np.sum((x @ m - target) ** 2)
        alpha = gamma / (m @ m + LOGME_GUARD)
        beta = (n - gamma) / (residual + LOGME_GUARD)
        t_new = alpha / beta
        converged = abs(t_new - t) / t < LOGME_TOL
        t = t_new
        if converged:
            break
    # Evidence at the final (alpha, beta), with m recomputed there, so that it equals the
    # marginal likelihood log N(y | 0, I / beta + X X^T / alpha) exactly.
    m = posterior_mean(alpha, beta)
    residual = np.sum((x @ m - target) ** 2)
    log_det = np.sum(np.log(alpha + beta * s**2)) + (d - s.size) * np.log(alpha)
    evidence = (
        n / 2.0 * np.log(beta)
        + d / 2.0 * np.log(alpha)
        - n / 2.0 * np.log(2.0 * np.pi)
        - beta / 2.0 * residual
        - alpha / 2.0 * (m @ m)
        - 0.5 * log_det
    )
    return float(evidence), float(alpha), float(beta)


def logme_fit(features: Any, target: Any) -> tuple[float, float, float]:
    """LogME for one real-valued target ``[n]`` on raw ``features: [n, d]``.

    Returns ``(evidence, alpha, beta)``: the total log evidence at the fixed point (not divided
    by n) and the final prior / noise precisions. See :func:`logme`.
    """
    x = _matrix(features, "features")
    y = np.asarray(target, dtype=np.float64)
    if y.shape != (x.shape[0],):
        raise ValueError(f"target: expected shape ({x.shape[0]},), got {y.shape}")
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    return _logme_column(u, s, vt, x, y)


def logme(
    features: Any,
    labels: Any,
    *,
    num_classes: int | None = None,
    n_dims: int | None = None,
    regression: bool = False,
) -> float:
    """LogME (You et al. 2021), nats per sample.

    ``features: [n, d]`` raw (no standardisation; PCA first if ``n_dims``), ``labels: int [n]``.
    For each one-vs-rest column ``y_c = [labels == c]`` (K columns, also when K = 2), the
    fixed point: SVD of F, ``alpha = beta = 1``, at most 11 iterations of
    ``gamma = sum beta s_i^2 / (alpha + beta s_i^2)``, ``alpha = gamma / (m^T m + 1e-5)``,
    ``beta = (n - gamma) / (||F m - y||^2 + 1e-5)``, stopping when ``t = alpha / beta`` changes
    by < 1e-3 relative. Evidence
    ``n/2 log beta + d/2 log alpha - n/2 log 2 pi - beta/2 ||F m - y||^2 - alpha/2 m^T m
    - 1/2 sum_i log(alpha + beta s_i^2)`` with the spectrum padded with zeros to d entries
    (docs/metrics.md trap). Score: mean over the classes present of evidence / n.

    Deviation from You et al.'s code: the evidence uses ``m`` recomputed at the final
    (alpha, beta), so it is the exact marginal likelihood there; their code reuses the ``m``
    and residual from before the last update (a difference within the stopping tolerance).

    ``regression=True`` (the paper's regression / multi-output formulation): ``labels`` are
    real targets ``[n]`` or ``[n, C]``; each output column, as given, is a target column in
    place of a class indicator, and the score is the mean over the C outputs of evidence / n
    (``num_classes`` is not used).
    """
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    if regression:
        t = _regression_targets(labels, x.shape[0])
        f = _reduce(x, n_dims)
        u, s, vt = np.linalg.svd(f, full_matrices=False)
        n = f.shape[0]
        return float(np.mean([_logme_column(u, s, vt, f, col)[0] / n for col in t.T]))
    k = _check_num_classes(num_classes)
    y = _single_labels(labels, k, x.shape[0], "logme")
    f = _reduce(x, n_dims)
    u, s, vt = np.linalg.svd(f, full_matrices=False)
    n = f.shape[0]
    per_class = [
        _logme_column(u, s, vt, f, (y == c).astype(np.float64))[0] / n for c in np.unique(y)
    ]
    return float(np.mean(per_class))
