"""The float64 NumPy/SciPy reference of 1-NN leave-one-out accuracy.

Written from the equations in docs/metrics.md; see :mod:`parc_jax.reference`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.distance import cdist

from parc_jax.reference._common import (
    _any_labels,
    _check_n_dims,
    _check_num_classes,
    _matrix,
    _reduce,
)

# The logistic train/test split is shared with the JAX side on purpose: it is not under test.


def knn(features: Any, labels: Any, *, num_classes: int, n_dims: int | None = None) -> float:
    """1-nearest-neighbour leave-one-out accuracy, %.

    ``features: [n, d]`` (PCA if ``n_dims``); Euclidean distances, each sample's own distance
    excluded, ties to the lowest index. Single-label: ``100 mean(y_nn(i) == y_i)``;
    multi-label ``[n, K]``: ``100 mean(1 - L1(y_i, y_nn(i)) / K)``.
    """
    k = _check_num_classes(num_classes)
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    multi, y = _any_labels(labels, k, x.shape[0], "knn")
    f = _reduce(x, n_dims)
    dist = cdist(f, f, "euclidean")
    np.fill_diagonal(dist, np.inf)
    nn = np.argmin(dist, axis=1)  # first index among ties
    if multi:
        return 100.0 * float(np.mean(1.0 - np.abs(y - y[nn]).sum(axis=1) / k))
    return 100.0 * float(np.mean(y[nn] == y))
