"""The float64 NumPy/SciPy reference of TransRate.

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
    _scalar,
    _single_labels,
)

# The logistic train/test split is shared with the JAX side on purpose: it is not under test.


def transrate(
    features: Any,
    labels: Any,
    *,
    num_classes: int,
    n_dims: int | None = None,
    eps: float = 1e-4,
) -> float:
    """TransRate (Huang et al. 2022, published-code form), nats.

    ``features: [n, d]``, ``labels: int [n]``. On globally centred features (after PCA if
    ``n_dims``), ``R(Z) = 1/2 logdet(I_d + Z^T Z / (n_Z eps))`` with ``n_Z`` the rows of Z
    (the plain ``d x d`` form), score ``R(F) - (1/K) sum_c R(F_c)`` over the classes present;
    the class blocks are not re-centred and rows are not normalised.
    """
    k = _check_num_classes(num_classes)
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    eps = _scalar(eps, "eps")
    y = _single_labels(labels, k, x.shape[0], "transrate")
    f = _reduce(x, n_dims)
    f = f - f.mean(axis=0)

    def rate(z: np.ndarray) -> float:
        n_z, d = z.shape
        sign, logdet = np.linalg.slogdet(np.eye(d) + z.T @ z / (n_z * eps))
        return 0.5 * logdet

    classes = np.unique(y)
    return float(rate(f) - np.mean([rate(f[y == c]) for c in classes]))
