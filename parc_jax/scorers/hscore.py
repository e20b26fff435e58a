"""H-Score (Bao et al. 2019) and shrinkage H-Score (Ibrahim et al. 2022).

Both measure how much of the (reduced) feature variance the target classes explain:
``tr(pinv(Sigma_F) Cov(G))`` where row ``i`` of ``G`` is the mean feature of class ``y_i``.

* ``hscore``: standardised features, ``Sigma_F = Cov F``, both covariances with ``1/(n-1)``.
  When the reduced width is ``>= n - 1`` the feature covariance is singular and the score is
  ``K - 1`` for every model in exact arithmetic (METRICS.md trap): the public function then
  emits :class:`DegenerateScoreWarning`.
* ``hscore_shrink``: centred, *not* standardised features; ``Sigma_F`` is the Ledoit-Wolf
  estimate ``(1 - a) S + a mu I`` exactly as scikit-learn's ``LedoitWolf`` (``S = X^T X / n``),
  and the score is ``tr(pinv(Sigma_F) (1 - a) Cov(G))`` with ``Cov(G)`` over ``n - 1``.

How it is computed. With ``T_c = X^T e_c`` the class sums (``e_c`` the class indicator) and
``n_c`` the class sizes, ``Cov(G) = (1/(n-1)) sum_c T_c T_c^T / n_c``, so both scores are
``(1/(n-1)) sum_c T_c^T pinv(A) T_c / n_c`` with ``A = s X^T X + r I`` (``s = 1/(n-1), r = 0``
for H-Score; ``s = (1-a)/n, r = a mu`` with the extra factor ``1 - a`` for the shrinkage
form). Only the spectrum of ``X^T X`` is needed, taken from the smaller of the ``F x F``
matrix ``X^T X`` and the ``n x n`` Gram ``X X^T`` (chosen from the static shape): on the Gram
side ``v_j^T T_c = sigma_j u_j^T e_c``, so ``T_c^T pinv(A) T_c = sum_j g_j (u_j^T e_c)^2 /
(s g_j + r)`` with ``g_j`` the Gram eigenvalues; ``T_c`` has no component outside the row
space of ``X``. Class sums come from a one-hot matmul with the static ``num_classes``; an
absent class contributes nothing. In the degenerate case (width ``>= n - 1``, Gram side) the
sum is a projection of the class indicators and comes out ``K - 1`` in float32 too, not the
rounding noise of a ``d x d`` pseudo-inverse (METRICS.md: 360.7 instead of 99).

Eigenvalues that are zero by construction (beyond the rank bound ``min(n, d_live)``, with
``d_live`` the valid non-constant columns: padding, constant columns, null PCA components)
are set to exactly 0 before the cutoff below, so that padding never changes the result.

pinv cutoff: an eigenvalue ``lambda_j`` of ``A`` is dropped when ``lambda_j <= max(n,
d_valid) * eps * lambda_max`` (``eps`` of the float dtype), the rank tolerance of
``np.linalg.matrix_rank`` and ``jnp.linalg.pinv``'s order of magnitude. It is larger than
``np.linalg.pinv``'s ``1e-15`` default: for well-conditioned covariances the two agree, and
it reliably drops the zero eigenvalues of singular covariances (padding, constant columns,
``d >= n - 1``), where ``1e-15`` can keep float64 rounding noise. ``d_valid`` (not the padded
width) enters it, so padding does not change the result.

Ledoit-Wolf shrinkage ``a``, as scikit-learn computes it (which divides by ``n``):
``mu = tr(S)/d``, ``delta = ||S - mu I||_F^2 / d``, ``beta = (sum_k ||x_k||^4 / n -
||S||_F^2) / (n d)``, ``a = min(beta, delta) / delta`` (0 when that is 0, and 0 for ``d = 1``).
``||S||_F^2`` and ``delta`` come from the eigenvalues of ``S`` (``g / n``): ``delta`` as
``sum_j (lambda_j - mu)^2`` has no cancellation, unlike ``||S||_F^2 - d mu^2``.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from parc_jax import numerics
from parc_jax.validation import (
    check_features,
    check_labels,
    check_mask,
    check_n_dims,
    is_traced,
)

__all__ = [
    "DegenerateScoreWarning",
    "hscore",
    "hscore_core",
    "hscore_is_degenerate",
    "hscore_shrink",
    "hscore_shrink_core",
]


class DegenerateScoreWarning(UserWarning):
    """A score is uninformative for this input (e.g. H-Score with reduced width >= n - 1)."""


def hscore_is_degenerate(n: int, d_reduced: int, *, n_dims: int | None = None) -> bool:
    """True when the H-Score feature covariance is singular: reduced width ``>= n - 1``.

    ``d_reduced`` is the width H-Score sees. If ``n_dims`` is given, ``d_reduced`` is taken as
    the raw (valid) width and reduced first to ``min(n_dims, n - 1, d_reduced)``. In that
    case H-Score equals ``K - 1`` for every model in exact arithmetic.
    """
    f = d_reduced if n_dims is None else min(n_dims, n - 1, d_reduced)
    return f >= n - 1


# ---------------------------------------------------------------------------------------------
# Shared helpers (also used by logme, transrate and gbc)


_reduce = numerics.reduce_features


def _live_columns(x: jax.Array, valid: jax.Array, *, centred: bool) -> jax.Array:
    """Number of valid columns of ``x: [n, F]`` that can add to its rank, as ``x.dtype``.

    Uncentred data: the columns that are not all zero. Centred (or standardised) data: the
    columns that are not constant, tested exactly (``max == min``) on ``x`` as given. Dead
    units and constant columns are common in real features; with this count the rank bound
    of :func:`_spectrum` covers them, not only padding.
    """
    if centred:
        live = jnp.max(x, axis=0) != jnp.min(x, axis=0)
    else:
        live = jnp.any(x != 0, axis=0)
    return jnp.sum(jnp.logical_and(live, valid)).astype(x.dtype)


def _spectrum(x: jax.Array, rank_bound: jax.Array) -> tuple[bool, jax.Array, jax.Array]:
    """Eigen-decomposition of the smaller of ``X^T X`` and ``X X^T`` for ``x: [n, F]``.

    Returns ``(feature_side, g, vecs)``: ``feature_side`` (static) is True for the ``F x F``
    side; ``g: [E]`` are the eigenvalues of ``X^T X`` in ascending order, ``E = min(n, F)``
    (on the Gram side these are also its nonzero ones); ``vecs`` are the eigenvectors
    ``[F, F]`` or ``[n, n]``. ``X`` has rank at most ``r = min(n, rank_bound)`` (the caller's
    bound, e.g. from :func:`_live_columns`), so the smallest ``E - r`` eigenvalues are zero by
    construction (padding, dead units, ``n > d_valid`` on the Gram side) and are set so,
    rather than left at rounding noise of order ``eps * g_max``. Negative rounding is
    clipped to 0.
    """
    n, f = x.shape
    feature_side = f <= n
    a = numerics.matmul(x.T, x) if feature_side else numerics.matmul(x, x.T)
    g, vecs = jnp.linalg.eigh(a, symmetrize_input=True)
    e = g.shape[0]
    rank_bound = jnp.minimum(n, rank_bound)
    structural_zero = jnp.arange(e) < e - rank_bound
    g = jnp.where(structural_zero, 0.0, jnp.maximum(g, 0.0))
    return feature_side, g, vecs


def _class_sums(labels: jax.Array, num_classes: int, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """``(onehot [n, K], counts [K])`` for integer ``labels: [n]``."""
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype)
    return onehot, jnp.sum(onehot, axis=0)


def _class_quadratic(
    x: jax.Array,
    onehot: jax.Array,
    counts: jax.Array,
    spectrum: tuple[bool, jax.Array, jax.Array],
    d_valid: jax.Array,
    *,
    scale: jax.Array,
    ridge: jax.Array,
) -> jax.Array:
    """``sum_c T_c^T pinv(scale X^T X + ridge I) T_c / n_c`` over present classes.

    ``x: [n, F]``, ``onehot: [n, K]``, ``counts: [K]``, ``spectrum`` from :func:`_spectrum`.
    See the module docstring for the Gram-side identity and the pinv cutoff.
    """
    feature_side, g, vecs = spectrum
    n = x.shape[0]
    lam = scale * g + ridge
    rtol = jnp.maximum(jnp.asarray(n, x.dtype), d_valid) * jnp.finfo(x.dtype).eps
    keep = lam > rtol * jnp.max(lam)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, lam, 1.0), 0.0)  # [E]
    if feature_side:
        proj = numerics.matmul(numerics.matmul(onehot.T, x), vecs)  # [K, F] = T V
        sq = proj * proj
    else:
        w = numerics.matmul(onehot.T, vecs)  # [K, n]: u_j^T e_c
        sq = g[None, :] * w * w
    per_class = numerics.matmul(sq, inv[:, None])[:, 0]  # [K]
    return jnp.sum(jnp.where(counts > 0, per_class / jnp.where(counts > 0, counts, 1.0), 0.0))


def _float_array(x: np.ndarray) -> jax.Array:
    """Concrete floats as a JAX array: float16 widened to float32, float64 kept under x64."""
    arr = jnp.asarray(x)
    return arr if arr.dtype in (jnp.float32, jnp.float64) else arr.astype(jnp.float32)


def _prepare(
    features: Any,
    labels: Any,
    feature_mask: Any,
    num_classes: int | None,
    n_dims: int | None,
    method: str,
    *,
    min_per_class: int = 0,
) -> tuple[Any, Any, Any, int, int | None]:
    """Validate a feature scorer's concrete inputs (tracers pass through unchecked).

    Returns ``(features, labels, mask, num_classes, reduced width or None when traced)``.
    """
    check_n_dims(n_dims)
    if is_traced(features, labels, feature_mask):
        if num_classes is None:
            raise ValueError(f"num_classes: {method} needs it as a static int inside jit/vmap")
        return features, labels, feature_mask, num_classes, None
    x = check_features(features)
    y, k = check_labels(
        labels,
        num_classes=num_classes,
        n=x.shape[0],
        method=method,
        min_per_class=min_per_class,
    )
    n, d = x.shape
    d_valid = d
    if feature_mask is not None:
        check_mask(feature_mask, d, "feature_mask")
        d_valid = int(np.count_nonzero(feature_mask))
        feature_mask = jnp.asarray(feature_mask)
    width = d_valid if n_dims is None else min(n_dims, n - 1, d_valid)
    return _float_array(x), jnp.asarray(y), feature_mask, k, width


# ---------------------------------------------------------------------------------------------
# Scorers


def hscore_core(
    features: jax.Array,
    labels: jax.Array,
    feature_mask: jax.Array | None = None,
    *,
    num_classes: int,
    n_dims: int | None = 32,
) -> jax.Array:
    """H-Score for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]``, ``feature_mask: bool [d]``.
    """
    x, valid = _reduce(features, feature_mask, n_dims)
    z = numerics.standardize(x, valid)
    n = z.shape[0]
    d_valid = jnp.sum(valid).astype(z.dtype)
    onehot, counts = _class_sums(labels, num_classes, z.dtype)
    spectrum = _spectrum(z, _live_columns(z, valid, centred=True))
    q = _class_quadratic(
        z, onehot, counts, spectrum, d_valid, scale=jnp.asarray(1.0 / (n - 1), z.dtype), ridge=0.0
    )
    return q / (n - 1)


def _ledoit_wolf_shrinkage(
    x: jax.Array, g: jax.Array, d_valid: jax.Array, rank_bound: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(shrinkage a, mu)`` of centred ``x: [n, F]`` as scikit-learn's ``LedoitWolf``.

    ``g: [E]`` eigenvalues of ``X^T X`` from :func:`_spectrum` called with ``rank_bound``
    (structural zeros exact); ``d_valid`` is the dimension ``d`` of the estimate.
    """
    n = x.shape[0]
    e = g.shape[0]
    s = g / n  # eigenvalues of S = X^T X / n
    mu = jnp.sum(s) / d_valid
    nonzero_slots = jnp.minimum(jnp.asarray(n, x.dtype), rank_bound)  # entries not forced to 0
    top = jnp.arange(e) >= e - nonzero_slots
    # sum over all d_valid eigenvalues of (lambda - mu)^2: the listed ones plus zeros.
    dev = jnp.sum(jnp.where(top, (s - mu) ** 2, 0.0)) + (d_valid - nonzero_slots) * mu * mu
    delta = dev / d_valid
    row_sq = jnp.sum(x * x, axis=1)
    beta = (jnp.sum(row_sq * row_sq) / n - jnp.sum(s * s)) / (d_valid * n)
    beta = jnp.maximum(jnp.minimum(beta, delta), 0.0)
    alpha = jnp.where(beta > 0, beta / jnp.where(delta > 0, delta, 1.0), 0.0)
    alpha = jnp.where(d_valid > 1, alpha, 0.0)  # scikit-learn: one feature -> no shrinkage
    return alpha, mu


def hscore_shrink_core(
    features: jax.Array,
    labels: jax.Array,
    feature_mask: jax.Array | None = None,
    *,
    num_classes: int,
    n_dims: int | None = 32,
) -> jax.Array:
    """Shrinkage (Ledoit-Wolf) H-Score for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]``, ``feature_mask: bool [d]``.
    """
    x, valid = _reduce(features, feature_mask, n_dims)
    z = numerics.center(x, valid)
    n = z.shape[0]
    d_valid = jnp.sum(valid).astype(z.dtype)
    onehot, counts = _class_sums(labels, num_classes, z.dtype)
    live = _live_columns(z, valid, centred=True)
    spectrum = _spectrum(z, live)
    alpha, mu = _ledoit_wolf_shrinkage(z, spectrum[1], d_valid, live)
    q = _class_quadratic(
        z, onehot, counts, spectrum, d_valid, scale=(1.0 - alpha) / n, ridge=alpha * mu
    )
    return (1.0 - alpha) * q / (n - 1)


_hscore_jit = numerics.jit_per_pca_mode(hscore_core, static_argnames=("num_classes", "n_dims"))
_hscore_shrink_jit = numerics.jit_per_pca_mode(
    hscore_shrink_core, static_argnames=("num_classes", "n_dims")
)


def hscore(
    features: Any,
    labels: Any,
    *,
    num_classes: int | None = None,
    n_dims: int | None = 32,
    feature_mask: Any = None,
) -> jax.Array:
    """H-Score (Bao et al. 2019) on standardised (reduced) features, >= 0.

    ``features: [n, d]``, ``labels: int [n]``, ``num_classes``: K (default ``max + 1``),
    ``n_dims``: PCA width (None = no reduction), ``feature_mask: bool [d]`` valid columns.
    Warns with :class:`DegenerateScoreWarning` when the reduced width is ``>= n - 1`` (the
    score is then ``K - 1`` whatever the features). Raises ``ValueError`` on bad input.
    """
    x, y, mask, k, width = _prepare(features, labels, feature_mask, num_classes, n_dims, "hscore")
    if width is not None and hscore_is_degenerate(x.shape[0], width):
        present = int(np.unique(np.asarray(y)).size)
        warnings.warn(
            f"hscore: the reduced feature width {width} is >= n - 1 = {x.shape[0] - 1}, so the "
            f"feature covariance is singular and H-Score is K - 1 = {present - 1} (K classes "
            "in the probe) for any model; reduce to fewer dimensions (n_dims) or draw a larger "
            "probe",
            DegenerateScoreWarning,
            stacklevel=2,
        )
    return _hscore_jit(x, y, mask, num_classes=k, n_dims=n_dims)


def hscore_shrink(
    features: Any,
    labels: Any,
    *,
    num_classes: int | None = None,
    n_dims: int | None = 32,
    feature_mask: Any = None,
) -> jax.Array:
    """Shrinkage H-Score (Ibrahim et al. 2022) with the Ledoit-Wolf covariance, >= 0.

    ``features: [n, d]``, ``labels: int [n]``, ``num_classes``: K (default ``max + 1``),
    ``n_dims``: PCA width (None = no reduction), ``feature_mask: bool [d]`` valid columns.
    Raises ``ValueError`` on bad input.
    """
    x, y, mask, k, _ = _prepare(
        features, labels, feature_mask, num_classes, n_dims, "hscore_shrink"
    )
    return _hscore_shrink_jit(x, y, mask, num_classes=k, n_dims=n_dims)
