"""Reference NLEEP: class-initialised diagonal Gaussian mixture by EM, then LEEP (float64)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.special
import scipy.stats

from parc_jax.reference._common import _check_num_classes, _matrix, _reduce, _single_labels


def nleep(
    features: Any,
    labels: Any,
    *,
    num_classes: int,
    n_dims: int | None = 32,
    components_per_class: int = 5,
    em_steps: int = 20,
    reg: float = 1e-3,
) -> float:
    """NLEEP (docs/metrics.md)."""
    x = _matrix(features, "features")
    y = _single_labels(labels, _check_num_classes(num_classes), x.shape[0], "nleep")
    x = _reduce(x, n_dims)
    n = x.shape[0]
    m = components_per_class
    # initial groups: within each class, equal rank groups on the first column (stable order)
    comp = np.zeros(n, int)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        order = idx[np.argsort(x[idx, 0], kind="stable")]
        comp[order] = c * m + (np.arange(idx.size) * m) // idx.size
    alive = np.unique(comp)
    resp = (comp[:, None] == alive[None, :]).astype(float)
    floor = reg * np.mean(x.var(axis=0))
    for _ in range(em_steps):
        nk = resp.sum(axis=0)
        means = resp.T @ x / nk[:, None]
        var = np.stack([(resp[:, j] @ (x - means[j]) ** 2) / nk[j] for j in range(len(nk))])
        var = var + floor
        log_pdf = np.stack(
            [scipy.stats.norm.logpdf(x, means[j], np.sqrt(var[j])).sum(axis=1)
             for j in range(len(nk))], axis=1,
        )  # fmt: skip
        resp = scipy.special.softmax(log_pdf + np.log(nk / n), axis=1)
    onehot = np.eye(int(y.max()) + 1)[y]
    joint = onehot.T @ resp
    cond = joint / joint.sum(axis=0)
    return float(np.mean(np.log(np.sum(cond[y] * resp, axis=1))))
