"""Reference PACTran (Dirichlet, Gamma, Gauss), float64, from the released equations."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.optimize
import scipy.special
from scipy.special import digamma, gammaln

from parc_jax.reference._common import (
    _check_num_classes,
    _matrix,
    _probs,
    _reduce,
    _single_labels,
)


def _setup(probs, labels, num_classes, method):
    p = _probs(probs)
    y = _single_labels(labels, _check_num_classes(num_classes), p.shape[0], method)
    classes = np.unique(y)
    onehot = (y[:, None] == classes[None, :]).astype(float)  # classes present only
    a0 = onehot.sum(axis=0) / len(y) + 1e-10  # alpha = 1
    return p, onehot, a0, np.log(p + 1e-10)


def _loop(p, onehot, a0, log_s, with_total):
    q, aw = p, None
    for _ in range(10):
        aw = a0[:, None] + onehot.T @ q
        logits = log_s + onehot @ digamma(aw)
        if with_total:
            logits = logits - digamma(aw.sum(axis=0))
        log_q = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
        q = np.exp(log_q)
    return q, log_q, aw


def pactran_dir(probs: Any, labels: Any, *, num_classes: int) -> float:
    """Minus the released PAC_Dir bound, per image and present class."""
    p, onehot, a0, log_s = _setup(probs, labels, num_classes, "pactran_dir")
    q, log_q, aw = _loop(p, onehot, a0, log_s, True)
    log_c0 = gammaln(a0.sum()) - gammaln(a0).sum()
    log_c = gammaln(aw.sum(axis=0)) - gammaln(aw).sum(axis=0)
    elbo = np.sum(log_c0 - log_c) - np.sum(q * (log_q - log_s))
    return float(elbo / onehot.size)


def pactran_gamma(probs: Any, labels: Any, *, num_classes: int) -> float:
    """Minus the released PAC_Gamma bound (rate 1), per image and present class, minus 1."""
    p, onehot, a0, log_s = _setup(probs, labels, num_classes, "pactran_gamma")
    q, log_q, aw = _loop(p, onehot, a0, log_s, False)
    lw = p @ aw.sum(axis=0)
    bound = np.sum(gammaln(a0)[:, None] - gammaln(aw)) + np.sum(
        np.sum(q * (log_q - log_s), axis=1) + np.log(lw) - 1.0
    )
    return float(-(bound / onehot.size + 1.0))


def pactran_gauss(
    features: Any, labels: Any, *, num_classes: int, n_dims: int | None = None
) -> float:
    """Minus the released PAC_Gauss bound (lda_factor 1, s2 = 1 / d), fitted by SciPy's
    L-BFGS-B from zero to a tight tolerance."""
    x = _reduce(_matrix(features, "features"), n_dims)
    y = _single_labels(labels, _check_num_classes(num_classes), x.shape[0], "pactran_gauss")
    classes = np.unique(y)
    onehot = (y[:, None] == classes[None, :]).astype(float)
    n, d = x.shape
    k = len(classes)
    lam_n = 1.0 * n

    def loss_grad(theta):
        w, b = theta[: d * k].reshape(d, k), theta[d * k :]
        logits = x @ w + b
        log_q = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
        loss = -np.sum(onehot * log_q) / n + 0.5 * np.sum(w * w) / lam_n
        r = (np.exp(log_q) - onehot) / n
        return loss, np.concatenate([(x.T @ r + w / lam_n).ravel(), r.sum(axis=0)])

    res = scipy.optimize.minimize(
        loss_grad, np.zeros(d * k + k), jac=True, method="L-BFGS-B",
        options={"maxiter": 20000, "gtol": 1e-12, "ftol": 1e-15},
    )  # fmt: skip
    loss, _ = loss_grad(res.x)
    w, b = res.x[: d * k].reshape(d, k), res.x[d * k :]
    prob = scipy.special.softmax(x @ w + b, axis=1)
    curv = prob - prob * prob
    h = np.sum((x * x).T @ curv) + d * k / lam_n + np.sum(curv)
    sigma2_inv = h * lam_n / (d * k) + 1e-10
    return float(-(loss + 0.5 * d * k / lam_n * (1.0 / d) * np.log(sigma2_inv)))
