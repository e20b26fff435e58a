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
    _regression_targets,
)

# The logistic train/test split is shared with the JAX side on purpose: it is not under test.


def knn(
    features: Any,
    labels: Any,
    *,
    num_classes: int | None = None,
    n_dims: int | None = None,
    k: int = 1,
    regression: bool = False,
) -> float:
    """k-nearest-neighbour leave-one-out score, x100.

    ``features: [n, d]`` (PCA if ``n_dims``); Euclidean distances, each sample's own distance
    excluded; the ``k`` nearest, ties to the lowest index. Single-label: the majority class
    of the neighbours (a vote tie to the tied class met first, nearest first),
    ``100 mean(pred_i == y_i)``; multi-label ``[n, K]``: ``100 mean(1 - L1(y_i, p_i) / K)``
    with ``p_i`` the neighbours' mean label vector. ``regression=True``: targets ``[n]`` or
    ``[n, C]``, prediction the neighbours' mean target, score ``100 x`` the mean over outputs
    of Pearson(prediction, target) (0 for an output whose prediction is constant).
    """
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n - 1:
        raise ValueError(f"k: expected an int in 1..{n - 1}, got {k!r}")
    f = _reduce(x, n_dims)
    dist = cdist(f, f, "euclidean")
    np.fill_diagonal(dist, np.inf)
    nn = np.argsort(dist, axis=1, kind="stable")[:, :k]  # stable: lowest index among ties
    if regression:
        y = _regression_targets(labels, n)
        pred = y[nn].mean(axis=1)  # [n, C]
        rs = [
            0.0 if np.all(p == p[0]) else float(np.corrcoef(p, t)[0, 1])
            for p, t in zip(pred.T, y.T, strict=True)
        ]
        return 100.0 * float(np.mean(rs))
    num_classes = _check_num_classes(num_classes)
    multi, y = _any_labels(labels, num_classes, n, "knn")
    if multi:
        p = y[nn].mean(axis=1)
        return 100.0 * float(np.mean(1.0 - np.abs(y - p).sum(axis=1) / num_classes))
    pred = np.empty(n, dtype=y.dtype)
    for i in range(n):
        votes: dict[int, int] = {}
        for c in y[nn[i]]:  # nearest first; dicts keep first-seen order
            votes[int(c)] = votes.get(int(c), 0) + 1
        pred[i] = max(votes, key=votes.get)  # max keeps the first of equal counts
    return 100.0 * float(np.mean(pred == y))
