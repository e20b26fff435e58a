"""Reference SFDA, ETran and the NCTI parts: linear discriminants with shrinkage, float64.

Written from the equations of docs/metrics.md with the generalised eigen-problem of the
released code (``scipy.linalg.eigh(S_b, S_w)``), where the JAX scorers use ``W W^T = S^-1``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
import scipy.special

from parc_jax.reference._common import (
    NULL_COMPONENT_RTOL,
    _check_num_classes,
    _matrix,
    _reduce,
    _single_labels,
)


def _scatter(x: np.ndarray, y: np.ndarray, classes: np.ndarray):
    n, d = x.shape
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    sw = np.zeros((d, d))
    for c, mu in zip(classes, means):
        xc = x[y == c] - mu
        sw += xc.T @ xc
    return means, sw / n


def _shrunk(cov: np.ndarray, s: float) -> np.ndarray:
    """``(1 - s) cov + s mu I``, eigenvalues at most ``NULL_COMPONENT_RTOL`` of the largest
    taken as zero (the structural-zero rule of docs/metrics.md)."""
    g, v = np.linalg.eigh(cov)
    g = np.where(g <= NULL_COMPONENT_RTOL * g[-1], 0.0, g)
    mu = np.trace(cov) / cov.shape[0]
    return (v * ((1.0 - s) * g + s * mu)) @ v.T


def _lda_probs(x, y, classes, means, sw_s, sb):
    """Posteriors ``[n, C]`` of the released discriminant: ``coef = M W W^T`` from the
    generalised eigenvectors ``W`` of ``(S_b, S_w,s)``."""
    _, w = scipy.linalg.eigh(sb, sw_s)
    coef = means @ w @ w.T
    priors = np.array([np.mean(y == c) for c in classes])
    logits = x @ coef.T - 0.5 * np.sum(coef * means, axis=1) + np.log(priors)
    return scipy.special.softmax(logits, axis=1), w


def _sfda_stage(x, y, classes, s):
    means, sw = _scatter(x, y, classes)
    sw_s = _shrunk(sw, s)
    xc = x - x.mean(axis=0)
    st_s = _shrunk(xc.T @ xc / x.shape[0], s)
    return _lda_probs(x, y, classes, means, sw_s, st_s - sw_s)[0], means


def _true(probs, y, classes):
    col = np.searchsorted(classes, y)
    return float(np.mean(probs[np.arange(len(y)), col]))


def _prepare(features, labels, num_classes, method, n_dims):
    x = _matrix(features, "features")
    k = _check_num_classes(num_classes)
    y = _single_labels(labels, k, x.shape[0], method)
    return _reduce(x, n_dims), y, np.unique(y)


def sfda(features: Any, labels: Any, *, num_classes: int, n_dims: int | None = 64) -> float:
    """SFDA (docs/metrics.md): LDA, ConfMix with the true-class posterior, LDA again."""
    x, y, classes = _prepare(features, labels, num_classes, "sfda", n_dims)
    _, sw = _scatter(x, y, classes)
    s = max(np.exp(-5.0 * np.linalg.eigvalsh(sw)[-1]), 1e-10)
    probs, means = _sfda_stage(x, y, classes, s)
    p = probs[np.arange(len(y)), np.searchsorted(classes, y)][:, None]
    outer = {c: (means.sum(axis=0) - mu) / (len(classes) - 1) for c, mu in zip(classes, means)}
    mixed = p * x + (1.0 - p) * np.stack([outer[c] for c in y])
    probs2, _ = _sfda_stage(mixed, y, classes, s)
    return _true(probs2, y, classes)


def etran(features: Any, labels: Any, *, num_classes: int, n_dims: int | None = 64) -> float:
    """ETran for classification: mean ``logsumexp`` energy of the raw features + LDA's mean
    true-class posterior (SFDA's first stage)."""
    raw = _matrix(features, "features")
    energy = float(np.mean(scipy.special.logsumexp(raw, axis=1)))
    x, y, classes = _prepare(features, labels, num_classes, "etran", n_dims)
    _, sw = _scatter(x, y, classes)
    s = max(np.exp(-5.0 * np.linalg.eigvalsh(sw)[-1]), 1e-10)
    return energy + _true(_sfda_stage(x, y, classes, s)[0], y, classes)


def ncti_parts(
    features: Any, labels: Any, *, num_classes: int, n_dims: int | None = 64
) -> tuple[float, float, float]:
    """``(seli, ncc, vc)`` of NCTI (docs/metrics.md; ``vc`` is minus the released S_vc)."""
    x, y, classes = _prepare(features, labels, num_classes, "ncti", n_dims)
    n = x.shape[0]
    xc = x - x.mean(axis=0)
    var = np.sort(np.linalg.eigvalsh(xc.T @ xc / (n - 1)))[::-1]
    s = max(np.exp(-var[:32].sum()), 1e-10)
    means, sw = _scatter(x, y, classes)
    sw_s = _shrunk(sw, s)
    st_s = _shrunk(xc.T @ xc / n, s)
    probs, w = _lda_probs(x, y, classes, means, sw_s, st_s - sw_s)
    m = min(len(classes) - 1, x.shape[1])
    low = xc @ w[:, ::-1][:, :m]
    seli = float(np.linalg.norm(low, ord="nuc"))
    ncc = _true(probs, y, classes)
    vc = sum(np.linalg.norm(probs[y == c], ord="nuc") for c in classes)
    return seli, ncc, -float(np.log(vc))


def ncti_seli(features: Any, labels: Any, *, num_classes: int, n_dims: int | None = 64) -> float:
    """NCTI's S_seli (see :func:`ncti_parts`)."""
    return ncti_parts(features, labels, num_classes=num_classes, n_dims=n_dims)[0]


def ncti_ncc(features: Any, labels: Any, *, num_classes: int, n_dims: int | None = 64) -> float:
    """NCTI's S_ncc (see :func:`ncti_parts`)."""
    return ncti_parts(features, labels, num_classes=num_classes, n_dims=n_dims)[1]


def ncti_vc(features: Any, labels: Any, *, num_classes: int, n_dims: int | None = 64) -> float:
    """Minus NCTI's S_vc (see :func:`ncti_parts`)."""
    return ncti_parts(features, labels, num_classes=num_classes, n_dims=n_dims)[2]
