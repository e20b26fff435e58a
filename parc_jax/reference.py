"""Plain NumPy/SciPy reference implementation of every transferability scorer.

Each function is written straight from the equations in ``../shared/METRICS.md`` and is meant to
be read: it is the baseline the JAX scorers are tested against and the one throughput
benchmarks time. It is independent of the JAX implementation (nothing from ``parc_jax`` is
imported except ``stratified_half``, the logistic train/test split, which is not under test;
it is re-exported here).

Conventions shared by all functions:

* float64 internally; scalar scores are returned as Python floats, on the scales of METRICS.md
  (higher = predicted to transfer better).
* ``n_dims`` is an int (exact PCA to ``min(n_dims, n - 1, d)`` components, see :func:`pca`) or
  None (no reduction). There are no masks: the reference never sees padding.
* Bad input raises ``ValueError`` naming the argument. Checks are kept minimal (this is a
  reference), but a score that is undefined for its input (multi-label targets for the
  probability and Gaussian scores, a single class, constant distances) is refused rather than
  returned as NaN.
* Classes listed by ``num_classes`` but absent from the probe have no samples. Where a formula
  sums or averages over classes (LogME's one-vs-rest columns, TransRate's ``1/K``, GBC's class
  pairs) the reference uses the classes present in the probe; elsewhere an absent class has no
  effect on the value. The literal PARC label distance alone uses all ``num_classes`` one-hot
  columns, as the published code did.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats
from scipy.spatial.distance import cdist

# The logistic train/test split is shared with the JAX side on purpose: it is not under test.
from parc_jax.scorers.logistic import stratified_half

__all__ = [
    "dds",
    "depth_prior",
    "gbc",
    "gbc_spherical",
    "heuristic",
    "hscore",
    "hscore_is_degenerate",
    "hscore_shrink",
    "hsic_unbiased",
    "knn",
    "ledoit_wolf",
    "leep",
    "logistic",
    "logistic_fit",
    "logistic_objective",
    "logme",
    "logme_fit",
    "nce",
    "parc",
    "pca",
    "rsa",
    "standardize",
    "stratified_half",
    "transrate",
]

GBC_VAR_FLOOR = 1e-4
LOGME_MAX_ITER = 11
LOGME_TOL = 1e-3
LOGME_GUARD = 1e-5
PROB_SUM_TOL = 1e-3


# --------------------------------------------------------------------------------------------
# Input checks (minimal)
# --------------------------------------------------------------------------------------------


def _matrix(x: Any, name: str, *, n: int | None = None, min_rows: int = 2) -> np.ndarray:
    """A finite float64 ``[n, d]`` copy of ``x``."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot be read as a float matrix ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{name}: expected a 2-D array [n, d], got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} rows, got {arr.shape[0]}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(
            f"{name}: has {arr.shape[0]} rows but {n} were expected; all inputs must describe "
            "the same probe images"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values; clean the input first")
    return arr


def _check_n_dims(n_dims: Any) -> None:
    if n_dims is None:
        return
    if isinstance(n_dims, bool) or not isinstance(n_dims, (int, np.integer)) or n_dims < 1:
        raise ValueError(f"n_dims: expected a positive int or None (no reduction), got {n_dims!r}")


def _check_num_classes(num_classes: Any) -> int:
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 2
    ):
        raise ValueError(f"num_classes: expected an int >= 2, got {num_classes!r}")
    return int(num_classes)


def _single_labels(labels: Any, num_classes: int, n: int, method: str) -> np.ndarray:
    """Integer labels ``[n]`` in ``0..K-1`` with at least two classes present."""
    y = np.asarray(labels)
    if y.ndim == 2:
        raise ValueError(
            f"labels: {method} is defined for single-label targets only (integer labels [n]); "
            f"got a multi-label matrix of shape {y.shape}"
        )
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"labels: expected integer class indices of shape [n], got {y.dtype} {y.shape}"
        )
    if y.shape[0] != n:
        raise ValueError(f"labels: has {y.shape[0]} entries but the features have {n} rows")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels: class indices must lie in 0..{num_classes - 1}")
    if np.unique(y).size < 2:
        raise ValueError("labels: the probe holds a single class; at least 2 are needed")
    return y.astype(np.int64)


def _multi_labels(labels: np.ndarray, num_classes: int, n: int) -> np.ndarray:
    """0/1 label matrix ``[n, K]`` with no all-0 or all-1 row."""
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != (n, num_classes):
        raise ValueError(f"labels: expected a [{n}, {num_classes}] 0/1 matrix, got {y.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels: a multi-label matrix must hold only 0 and 1")
    sums = y.sum(axis=1)
    if np.any((sums == 0) | (sums == num_classes)):
        raise ValueError("labels: a multi-label row that is all 0 or all 1 has no correlation")
    return y


def _any_labels(labels: Any, num_classes: int, n: int, method: str) -> tuple[bool, np.ndarray]:
    """``(multilabel, labels)`` for scorers that accept both kinds."""
    if np.ndim(labels) == 2:
        return True, _multi_labels(np.asarray(labels), num_classes, n)
    return False, _single_labels(labels, num_classes, n, method)


def _probs(probs: Any) -> np.ndarray:
    p = _matrix(probs, "probs", min_rows=1)
    if p.min() < 0 or np.max(np.abs(p.sum(axis=1) - 1.0)) > PROB_SUM_TOL:
        raise ValueError("probs: rows must be non-negative and sum to 1 (softmax probabilities)")
    return p


def _scalar(value: Any, name: str, *, positive: bool = True) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(out) or (positive and out <= 0):
        raise ValueError(f"{name}: expected a finite positive number, got {value!r}")
    return out


# --------------------------------------------------------------------------------------------
# Shared steps
# --------------------------------------------------------------------------------------------


# Variance ratio below which a principal component counts as rank noise: the resolution of a
# float32 Gram eigendecomposition (16 float32 epsilons), the precision of the engine and of
# float16/float32 bank features; float64 would resolve far weaker components.
NULL_COMPONENT_RTOL = 16 * float(np.finfo(np.float32).eps)


def pca(features: Any, n_dims: int) -> np.ndarray:
    """Exact PCA scores ``[n, f]`` of ``features: [n, d]``, ``f = min(n_dims, n - 1, d)``.

    Centre the columns, ``Xc = U S Vt`` (thin SVD), keep the top ``f`` directions. Each loading
    vector (row of ``Vt``) is signed so that its largest-magnitude entry (lowest index on ties)
    is positive. Returns ``Xc V = U S`` for those components.

    Components beyond the numerical rank (variance ``s_i^2 <= NULL_COMPONENT_RTOL * s_1^2``)
    are returned as exact zeros: in exact arithmetic they *are* zero (``Xc v = 0``), and
    standardisation would otherwise blow rounding noise up to unit variance. The same rule is
    in ``parc_jax.numerics.pca``.
    """
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    if n_dims is None:
        raise ValueError("n_dims: pca needs a positive int")
    n, d = x.shape
    f = min(int(n_dims), n - 1, d)
    xc = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    pivot = np.argmax(np.abs(vt[:f]), axis=1)  # argmax: first index among ties
    signs = np.where(vt[np.arange(f), pivot] < 0, -1.0, 1.0)
    null = s[:f] ** 2 <= NULL_COMPONENT_RTOL * s[0] ** 2
    return np.where(null, 0.0, u[:, :f] * s[:f] * signs)


def standardize(x: Any) -> np.ndarray:
    """Per column zero mean, unit population std, for ``x: [n, d]``.

    A column whose entries are all equal has zero variance and is left at zero.
    """
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(axis=0)
    std = np.sqrt(np.mean(xc**2, axis=0))
    keep = (np.ptp(x, axis=0) > 0) & (std > 0)
    out = np.zeros_like(xc)
    out[:, keep] = xc[:, keep] / std[keep]
    return out


def _reduce(features: np.ndarray, n_dims: int | None) -> np.ndarray:
    return features if n_dims is None else pca(features, n_dims)


def _row_corr_distance(x: np.ndarray) -> np.ndarray:
    """``1 - corrcoef(rows of x)`` ``[n, n]``.

    A constant row has no correlation; np.corrcoef returns NaN for it, which is replaced by
    correlation 0 (distance 1), the convention of the JAX numerics.
    """
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dist = 1.0 - np.corrcoef(x)
    return np.where(np.isnan(dist), 1.0, dist)


def _upper(m: np.ndarray) -> np.ndarray:
    return m[np.triu_indices(m.shape[0], 1)]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation with average ranks (scipy.stats.spearmanr)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise ValueError(
            "features: the pairwise distances are all equal, so their Spearman correlation is "
            "undefined; use more feature dimensions (n_dims >= 2) or check the input"
        )
    return float(scipy.stats.spearmanr(a, b).statistic)


def _class_means(x: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class means ``[K, d]`` (rows of absent classes are zero; they are never indexed)."""
    means = np.zeros((num_classes, x.shape[1]))
    for c in np.unique(y):
        means[c] = x[y == c].mean(axis=0)
    return means


def _cov(x: np.ndarray) -> np.ndarray:
    """Covariance ``[d, d]`` of the columns of ``x: [n, d]`` with ``1 / (n - 1)``."""
    return np.atleast_2d(np.cov(x, rowvar=False))


# --------------------------------------------------------------------------------------------
# Representation-similarity scores
# --------------------------------------------------------------------------------------------


def _multilabel_distance_order(y: np.ndarray) -> np.ndarray:
    """``[n, n]`` values ordered exactly like ``1 - corrcoef(rows of y)`` for 0/1 ``y``.

    For rows with ``a`` and ``b`` positives out of ``K`` and ``c`` shared ones the correlation
    is ``N / sqrt(P)``, ``N = cK - ab``, ``P = a (K - a) b (K - b)``, all integers. ``1 - corr``
    increases with ``-sign(N) N^2 / P``: one correctly rounded division of exact integers, so
    equal correlations give identical values. ``1 - np.corrcoef(y)`` splits such ties by
    rounding (for K = 5, n = 200: 21 distinct values where 12 exist), which moves Spearman.
    Spearman needs only the order.
    """
    y = np.asarray(y, dtype=np.float64)
    k = y.shape[1]
    a = y.sum(axis=1)
    num = (y @ y.T) * k - np.outer(a, a)
    spread = a * (k - a)
    return -np.sign(num) * num**2 / np.outer(spread, spread)


def parc(
    features: Any,
    labels: Any,
    *,
    num_classes: int,
    n_dims: int | None = 32,
    literal_label_distance: bool = False,
) -> float:
    """PARC (Bolya et al. 2021), x100.

    ``features: [n, d]``; ``labels: int [n]`` or a 0/1 ``[n, K]`` multi-label matrix.
    PCA (if ``n_dims``) -> standardise -> ``D_F = 1 - corrcoef(rows)`` -> Spearman of the upper
    triangles of ``D_F`` and the label distance ``D_y``. For integer labels ``D_y`` is the exact
    two-valued distance (0 if ``y_i = y_j``, ``1 + 1/(K-1)`` otherwise); with
    ``literal_label_distance`` it is ``1 - np.corrcoef(one_hot)`` as in the published code,
    whose rounding noise changes the ranks for K >= 10 (METRICS.md trap; reporting only).
    Multi-label: ``D_y = 1 - corrcoef(label rows)``, ranked through an order-equivalent key
    built from integer counts so that equal correlations tie exactly (see
    :func:`_multilabel_distance_order`).
    """
    k = _check_num_classes(num_classes)
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    multi, y = _any_labels(labels, k, x.shape[0], "parc")
    dist_f = _row_corr_distance(standardize(_reduce(x, n_dims)))
    if multi:
        dist_y = _multilabel_distance_order(y)
    elif literal_label_distance:
        dist_y = 1.0 - np.corrcoef(np.eye(k)[y])
    else:
        differ = y[:, None] != y[None, :]
        dist_y = np.where(differ, 1.0 + 1.0 / (k - 1), 0.0)
    return 100.0 * _spearman(_upper(dist_f), _upper(dist_y))


def rsa(features: Any, reference_features: Any, *, n_dims: int | None = 64) -> float:
    """RSA against a reference model's features, x100.

    ``features: [n, d]``, ``reference_features: [n, d_r]``: both reduced (if ``n_dims``) and
    standardised the same way; Spearman of the upper triangles of their ``1 - corrcoef(rows)``.
    """
    x = _matrix(features, "features")
    r = _matrix(reference_features, "reference_features", n=x.shape[0])
    _check_n_dims(n_dims)
    dist_x = _row_corr_distance(standardize(_reduce(x, n_dims)))
    dist_r = _row_corr_distance(standardize(_reduce(r, n_dims)))
    return 100.0 * _spearman(_upper(dist_x), _upper(dist_r))


def hsic_unbiased(k: Any, l: Any) -> float:  # noqa: E741 - the literature's name
    """Unbiased HSIC estimator (Song et al. 2012) of two ``[n, n]`` kernel matrices, n >= 4.

    With zeroed diagonals, ``HSIC_u = [tr(K L) + sum(K) sum(L) / ((n-1)(n-2))
    - 2/(n-2) 1^T K L 1] / (n (n-3))``.
    """
    kk = np.array(k, dtype=np.float64)
    ll = np.array(l, dtype=np.float64)
    n = kk.shape[0]
    np.fill_diagonal(kk, 0.0)
    np.fill_diagonal(ll, 0.0)
    ones = np.ones(n)
    value = (
        np.trace(kk @ ll)
        + kk.sum() * ll.sum() / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (ones @ kk @ ll @ ones)
    )
    return float(value / (n * (n - 3)))


def _cosine_distance(x: np.ndarray) -> np.ndarray:
    """``1 - cos(rows)`` ``[n, n]``; cdist's cosine metric, with a zero row at distance 1."""
    zero = np.linalg.norm(x, axis=1) == 0
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dist = cdist(x, x, "cosine")
    dist[zero, :] = 1.0
    dist[:, zero] = 1.0
    return dist


def dds(features: Any, reference_features: Any, *, n_dims: int | None = 64) -> float:
    """DDS: debiased CKA of cosine-distance matrices, x100.

    ``features: [n, d]``, ``reference_features: [n, d_r]``, n >= 4: reduce (if ``n_dims``) and
    standardise both; ``K = 1 - cos(rows of F)``, ``L`` likewise for the reference;
    ``CKA = HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L))`` with :func:`hsic_unbiased`.
    """
    x = _matrix(features, "features", min_rows=4)
    r = _matrix(reference_features, "reference_features", n=x.shape[0])
    _check_n_dims(n_dims)
    kx = _cosine_distance(standardize(_reduce(x, n_dims)))
    kr = _cosine_distance(standardize(_reduce(r, n_dims)))
    denom = hsic_unbiased(kx, kx) * hsic_unbiased(kr, kr)
    if not denom > 0:
        raise ValueError("features: a distance matrix has no variation; DDS is undefined")
    return 100.0 * hsic_unbiased(kx, kr) / math.sqrt(denom)


# --------------------------------------------------------------------------------------------
# Probability scores
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Label-feature scores
# --------------------------------------------------------------------------------------------


def hscore_is_degenerate(n: int, d: int, *, n_dims: int | None = None) -> bool:
    """True when the H-Score feature covariance is singular: reduced width ``>= n - 1``.

    ``d`` is the feature width; with ``n_dims`` it is first reduced to ``min(n_dims, n-1, d)``.
    Then, in exact arithmetic, H-Score is ``K - 1`` whatever the features (METRICS.md trap).
    """
    f = d if n_dims is None else min(n_dims, n - 1, d)
    return f >= n - 1


def hscore(features: Any, labels: Any, *, num_classes: int, n_dims: int | None = 32) -> float:
    """H-Score (Bao et al. 2019), >= 0.

    ``features: [n, d]``, ``labels: int [n]``. Reduce (if ``n_dims``), standardise;
    ``tr(pinv(Cov F) @ Cov G)`` where row i of ``G`` is the mean standardised feature of class
    ``y_i``; covariances with ``1/(n-1)``; ``np.linalg.pinv`` with its default ``rcond``.
    """
    k = _check_num_classes(num_classes)
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    y = _single_labels(labels, k, x.shape[0], "hscore")
    f = standardize(_reduce(x, n_dims))
    g = _class_means(f, y, k)[y]
    return float(np.trace(np.linalg.pinv(_cov(f)) @ _cov(g)))


def ledoit_wolf(centred: Any) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrunk covariance ``[d, d]`` and shrinkage ``alpha`` of centred ``[n, d]``.

    ``S = X^T X / n``, ``mu = tr(S) / d``, ``delta = ||S - mu I||_F^2``,
    ``beta_bar = (1/n^2) sum_k ||x_k x_k^T - S||_F^2``, ``beta = min(beta_bar, delta)``,
    ``alpha = beta / delta`` (0 when ``beta = 0``), ``Sigma = (1 - alpha) S + alpha mu I``.

    Same as scikit-learn's ``LedoitWolf`` (``assume_centered`` on centred data): it computes
    ``mu`` identically, ``delta_sk = ||S - mu I||_F^2 / d`` and
    ``beta_sk = (sum_k ||x_k||^4 / n - ||S||_F^2) / (n d)``. Expanding our sum,
    ``sum_k ||x_k x_k^T - S||_F^2 = sum_k ||x_k||^4 - 2 sum_k x_k^T S x_k + n ||S||_F^2`` and
    ``sum_k x_k^T S x_k = tr(S X^T X) = n ||S||_F^2``, so ``beta_bar = (sum_k ||x_k||^4 / n
    - ||S||_F^2) / n = d beta_sk``; likewise ``delta = d delta_sk``. The common factor ``d``
    cancels in both ``min`` and ratio, so ``alpha`` equals sklearn's ``shrinkage_`` and
    ``Sigma`` its ``covariance_`` (``(1 - shrinkage) S + shrinkage mu I``).
    """
    x = np.asarray(centred, dtype=np.float64)
    n, d = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / d
    delta = np.sum((s - mu * np.eye(d)) ** 2)
    # The literal sum over samples, in chunks of samples to bound the [c, d, d] temporaries.
    chunk = max(1, 2**22 // (d * d))
    total = 0.0
    for start in range(0, n, chunk):
        xk = x[start : start + chunk]
        total += np.sum((xk[:, :, None] * xk[:, None, :] - s) ** 2)
    beta_bar = total / n**2
    beta = min(beta_bar, delta)
    alpha = 0.0 if beta == 0 else beta / delta
    sigma = (1.0 - alpha) * s + alpha * mu * np.eye(d)
    return sigma, float(alpha)


def hscore_shrink(
    features: Any, labels: Any, *, num_classes: int, n_dims: int | None = 32
) -> float:
    """Shrinkage H-Score (Ibrahim et al. 2022), >= 0.

    ``features: [n, d]``, ``labels: int [n]``. Reduce (if ``n_dims``) and centre, *not*
    standardise (shrinkage is not scale-invariant); ``Sigma, alpha`` from :func:`ledoit_wolf`;
    ``tr(pinv(Sigma) @ (1 - alpha) Cov G)`` with ``G`` the class means of the centred
    features and ``Cov G`` with ``1/(n-1)``.
    """
    k = _check_num_classes(num_classes)
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    y = _single_labels(labels, k, x.shape[0], "hscore_shrink")
    f = _reduce(x, n_dims)
    f = f - f.mean(axis=0)
    sigma, alpha = ledoit_wolf(f)
    g = _class_means(f, y, k)[y]
    return float(np.trace(np.linalg.pinv(sigma) @ ((1.0 - alpha) * _cov(g))))


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


def logme(features: Any, labels: Any, *, num_classes: int, n_dims: int | None = None) -> float:
    """LogME (You et al. 2021), nats per sample.

    ``features: [n, d]`` raw (no standardisation; PCA first if ``n_dims``), ``labels: int [n]``.
    For each one-vs-rest column ``y_c = [labels == c]`` (K columns, also when K = 2), the
    fixed point: SVD of F, ``alpha = beta = 1``, at most 11 iterations of
    ``gamma = sum beta s_i^2 / (alpha + beta s_i^2)``, ``alpha = gamma / (m^T m + 1e-5)``,
    ``beta = (n - gamma) / (||F m - y||^2 + 1e-5)``, stopping when ``t = alpha / beta`` changes
    by < 1e-3 relative. Evidence
    ``n/2 log beta + d/2 log alpha - n/2 log 2 pi - beta/2 ||F m - y||^2 - alpha/2 m^T m
    - 1/2 sum_i log(alpha + beta s_i^2)`` with the spectrum padded with zeros to d entries
    (METRICS.md trap). Score: mean over the classes present of evidence / n.

    Deviation from You et al.'s code: the evidence uses ``m`` recomputed at the final
    (alpha, beta), so it is the exact marginal likelihood there; their code reuses the ``m``
    and residual from before the last update (a difference within the stopping tolerance).
    """
    k = _check_num_classes(num_classes)
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    y = _single_labels(labels, k, x.shape[0], "logme")
    f = _reduce(x, n_dims)
    u, s, vt = np.linalg.svd(f, full_matrices=False)
    n = f.shape[0]
    per_class = [
        _logme_column(u, s, vt, f, (y == c).astype(np.float64))[0] / n for c in np.unique(y)
    ]
    return float(np.mean(per_class))


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
    ``sigma_c^2 I_f`` is ``f ln sigma_c^2``: the dimension multiplies it (METRICS.md trap).
    """
    means, var = _gbc_stats(features, labels, num_classes, n_dims, "gbc_spherical")
    f = means.shape[1]
    sigma2 = np.maximum(var.mean(axis=1), GBC_VAR_FLOOR)  # [C]
    var_full = np.repeat(sigma2[:, None], f, axis=1)
    return _gbc_sum(means, var_full, f * np.log(sigma2))


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


# --------------------------------------------------------------------------------------------
# Logistic regression
# --------------------------------------------------------------------------------------------


def logistic_objective(
    theta: np.ndarray, x: np.ndarray, y: np.ndarray, *, num_classes: int, C: float = 1.0
) -> tuple[float, np.ndarray]:
    """Objective and gradient of L2 multinomial logistic regression with intercept.

    ``theta = [W.ravel(), b]`` with ``W: [f, K]``, ``b: [K]``; ``x: [m, f]``, ``y: int [m]``.
    ``sum_i CE_i + ||W||^2 / (2 C)``, the intercept unpenalised (scikit-learn's convention).
    """
    f = x.shape[1]
    w = theta[: f * num_classes].reshape(f, num_classes)
    b = theta[f * num_classes :]
    logits = x @ w + b
    lse = scipy.special.logsumexp(logits, axis=1)
    value = np.sum(lse - logits[np.arange(y.size), y]) + np.sum(w**2) / (2.0 * C)
    resid = np.exp(logits - lse[:, None])  # softmax
    resid[np.arange(y.size), y] -= 1.0
    grad_w = x.T @ resid + w / C
    grad_b = resid.sum(axis=0)
    return float(value), np.concatenate([grad_w.ravel(), grad_b])


def logistic_fit(
    x: np.ndarray, y: np.ndarray, *, num_classes: int, C: float = 1.0
) -> tuple[np.ndarray, np.ndarray, scipy.optimize.OptimizeResult]:
    """Minimise :func:`logistic_objective` by L-BFGS-B to tight tolerances.

    ``x: [m, f]`` (already standardised), ``y: int [m]``. Returns ``(W [f, K], b [K], result)``.
    """
    f = x.shape[1]
    theta0 = np.zeros(f * num_classes + num_classes)
    result = scipy.optimize.minimize(
        lambda th: logistic_objective(th, x, y, num_classes=num_classes, C=C),
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 50_000, "maxfun": 100_000, "gtol": 1e-8, "ftol": 1e-15, "maxls": 50},
    )
    w = result.x[: f * num_classes].reshape(f, num_classes)
    b = result.x[f * num_classes :]
    return w, b, result


def logistic(
    features: Any,
    labels: Any,
    *,
    num_classes: int,
    train_mask: Any,
    n_dims: int | None = None,
    C: float = 1.0,
) -> float:
    """Logistic-regression probe accuracy, %.

    ``features: [n, d]`` (PCA on all n rows if ``n_dims``), ``labels: int [n]``,
    ``train_mask: bool [n]`` (from :func:`stratified_half`). Standardise with the mean and
    population std of the training rows (columns constant there -> 0), fit
    :func:`logistic_fit` on them, score = accuracy on the other rows (argmax, lowest index on
    ties), x100.
    """
    k = _check_num_classes(num_classes)
    x = _matrix(features, "features")
    _check_n_dims(n_dims)
    y = _single_labels(labels, k, x.shape[0], "logistic")
    C = _scalar(C, "C")
    mask = np.asarray(train_mask)
    if mask.dtype != np.bool_ or mask.shape != (x.shape[0],):
        raise ValueError(f"train_mask: expected a bool array of shape ({x.shape[0]},)")
    if mask.all() or not mask.any():
        raise ValueError("train_mask: both the training and the held-out half must be non-empty")
    f = _reduce(x, n_dims)
    train = f[mask]
    mean = train.mean(axis=0)
    std = np.sqrt(np.mean((train - mean) ** 2, axis=0))
    keep = (np.ptp(train, axis=0) > 0) & (std > 0)
    scaled = np.zeros_like(f)
    scaled[:, keep] = (f[:, keep] - mean[keep]) / std[keep]
    w, b, _ = logistic_fit(scaled[mask], y[mask], num_classes=k, C=C)
    pred = np.argmax(scaled[~mask] @ w + b, axis=1)
    return 100.0 * float(np.mean(pred == y[~mask]))


# --------------------------------------------------------------------------------------------
# Meta scores
# --------------------------------------------------------------------------------------------


def heuristic(depth: Any, source_images: Any, target_images: Any) -> float:
    """PARC paper Eq. 4: ``depth + ln(source_images + target_images)``."""
    depth = _scalar(depth, "depth")
    source = _scalar(source_images, "source_images")
    target = _scalar(target_images, "target_images")
    return depth + math.log(source + target)


def depth_prior(scores: Any, depths: Any, *, l_max: float = 50.0) -> np.ndarray:
    """PARC paper Eq. 6 for one target: ``zscore(scores) + depths / l_max``, float64 ``[m]``.

    ``scores, depths: [m]`` over m >= 2 models; z-score with the mean and the sample std
    (ddof=1). Scores that are all equal carry no ranking; their z-scores are taken as 0.
    """
    s = np.asarray(scores, dtype=np.float64)
    dep = np.asarray(depths, dtype=np.float64)
    if s.ndim != 1 or s.size < 2:
        raise ValueError(f"scores: expected a 1-D array over >= 2 models, got shape {s.shape}")
    if dep.shape != s.shape:
        raise ValueError(f"depths: expected shape {s.shape} to match scores, got {dep.shape}")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(dep))):
        raise ValueError("scores: scores and depths must be finite")
    l_max = _scalar(l_max, "l_max")
    std = np.std(s, ddof=1)
    z = np.zeros_like(s) if std == 0 else (s - s.mean()) / std
    return z + dep / l_max
