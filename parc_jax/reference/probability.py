"""The float64 NumPy/SciPy reference of LEEP and NCE.

Written from the equations in docs/metrics.md; see :mod:`parc_jax.reference`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from parc_jax.reference._common import _check_num_classes, _probs, _single_labels

# The logistic train/test split is shared with the JAX side on purpose: it is not under test.


def leep(probs: Any, labels: Any, *, num_classes: int) -> float:
    """LEEP (Nguyen et al. 2020), nats, <= 0.

    ``probs: [n, z]``, ``labels: int [n]``. ``J = onehot(y)^T P / n`` ``[K, z]``,
    ``P(y|z) = J / colsum(J)`` (a zero column, a source class no image selects, stays 0),
    score ``mean_i log(sum_z P(y_i|z) P_iz)``.
    """
    k = _check_num_classes(num_classes)
    p = _probs(probs)
    n = p.shape[0]
    y = _single_labels(labels, k, n, "leep")
    joint = np.eye(k)[y].T @ p / n
    col = joint.sum(axis=0)
    cond = np.divide(joint, col, out=np.zeros_like(joint), where=col > 0)
    eep = np.sum(cond[y] * p, axis=1)
    return float(np.mean(np.log(eep)))


def nce(probs: Any, labels: Any, *, num_classes: int) -> float:
    """NCE (Tran et al. 2019): ``-H(Y | Z_hat)``, nats, <= 0.

    ``probs: [n, z]``, ``labels: int [n]``. Hard source labels ``z_hat = argmax P`` (lowest
    index on ties); empirical joint ``p(y, z)``; ``sum p(y,z) log(p(y,z) / p(z))`` over cells
    with ``p(y, z) > 0`` (hence ``p(z) > 0``). No epsilon smoothing.
    """
    k = _check_num_classes(num_classes)
    p = _probs(probs)
    n = p.shape[0]
    y = _single_labels(labels, k, n, "nce")
    z_hat = np.argmax(p, axis=1)
    joint = np.zeros((k, p.shape[1]))
    np.add.at(joint, (y, z_hat), 1.0)
    joint /= n
    p_z = np.broadcast_to(joint.sum(axis=0), joint.shape)
    cells = joint > 0
    return float(np.sum(joint[cells] * np.log(joint[cells] / p_z[cells])))
