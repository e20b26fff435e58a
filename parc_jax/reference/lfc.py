"""Reference LFC: Pearson correlation of the ``n x n`` Gram matrix and the +-1 label kernel."""

from __future__ import annotations

from typing import Any

import numpy as np

from parc_jax.reference._common import _check_num_classes, _matrix, _reduce, _single_labels


def lfc(features: Any, labels: Any, *, num_classes: int, n_dims: int | None = None) -> float:
    """LFC (docs/metrics.md), with the ``n x n`` matrices formed."""
    x = _matrix(features, "features")
    y = _single_labels(labels, _check_num_classes(num_classes), x.shape[0], "lfc")
    x = _reduce(x, n_dims)
    g = x @ x.T
    k = np.where(y[:, None] == y[None, :], 1.0, -1.0)
    g, k = g - g.mean(), k - k.mean()
    return float(np.sum(g * k) / np.sqrt(np.sum(g * g) * np.sum(k * k)))
