"""The float64 NumPy/SciPy reference of GBC (diagonal and spherical).

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
    _single_labels,
)

# The logistic train/test split is shared with the JAX side on purpose: it is not under test.

GBC_VAR_FLOOR = 1e-4


def _gbc_sum(means: np.ndarray, var: np.ndarray, logdet: np.ndarray) -> float:
    """``-sum_{c != c'} exp(-D_B)`` for diagonal Gaussians ``(means [K, f], var [K, f])``.

    ``logdet [K]`` is each class's log-determinant; passed in so that the spherical case states
    its own (``f ln sigma^2``). ``D_B = 1/8 dmu^T Sigma^-1 dmu + 1/2 ln(det Sigma /
    sqrt(det S1 det S2))`` with ``Sigma = (S1 + S2) / 2``.
    """
    k = means.shape[0]
    total = 0.0
    for a in range(k):
        for b in range(k):
            if a == b:
                continue
            var_ab = (var[a] + var[b]) / 2.0
            diff = means[a] - means[b]
            d_b = 0.125 * np.sum(diff**2 / var_ab) + 0.5 * (
                np.sum(np.log(var_ab)) - 0.5 * (logdet[a] + logdet[b])
            )
            total += np.exp(-d_b)
    return -float(total)


def _gbc_stats(
    features: Any, labels: Any, num_classes: int, n_dims: int | None, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per present class: means ``[C, f]`` and population variances ``[C, f]`` (unfloored)."""
    k = _check_num_classes(num_classes)
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    y = _single_labels(labels, k, x.shape[0], method)
    f = _reduce(x, n_dims)
    classes = np.unique(y)
    means = np.stack([f[y == c].mean(axis=0) for c in classes])
    var = np.stack([f[y == c].var(axis=0) for c in classes])
    return means, var


def gbc(features: Any, labels: Any, *, num_classes: int, n_dims: int | None = 64) -> float:
    """GBC (Pandy et al. 2022) with diagonal Gaussians, in ``[-K(K-1), 0]``.

    ``features: [n, d]`` (PCA if ``n_dims``, no standardisation), ``labels: int [n]``. Per
    class a Gaussian with the class mean and the per-dimension population variance floored at
    1e-4; score ``-sum over ordered pairs c != c' of exp(-D_B(c, c'))`` (Bhattacharyya).
    """
    means, var = _gbc_stats(features, labels, num_classes, n_dims, "gbc")
    var = np.maximum(var, GBC_VAR_FLOOR)
    return _gbc_sum(means, var, np.sum(np.log(var), axis=1))


def gbc_spherical(
    features: Any, labels: Any, *, num_classes: int, n_dims: int | None = 64
) -> float:
    """GBC with spherical Gaussians, in ``[-K(K-1), 0]``.

    As :func:`gbc` but each class has one variance ``sigma_c^2``: the mean of its
    per-dimension population variances, floored at 1e-4. The log-determinant of
    ``sigma_c^2 I_f`` is ``f ln sigma_c^2``: the dimension multiplies it (docs/metrics.md trap).
    """
    means, var = _gbc_stats(features, labels, num_classes, n_dims, "gbc_spherical")
    f = means.shape[1]
    sigma2 = np.maximum(var.mean(axis=1), GBC_VAR_FLOOR)  # [C]
    var_full = np.repeat(sigma2[:, None], f, axis=1)
    return _gbc_sum(means, var_full, f * np.log(sigma2))
