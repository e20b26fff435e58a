"""H-Score and shrinkage H-Score: class-explained feature variance.

Papers: H-Score, Bao, Li, Huang, Wang, Zheng, Zhong, Wei, "An Information-Theoretic Approach
to Transferability in Task Transfer Learning", ICIP 2019 (https://arxiv.org/abs/2212.10082);
shrinkage H-Score, Ibrahim, Ponomareva, Mazumder, "Newer is not always better: Rethinking
transferability metrics, their peculiarities, stability and performance", ECML PKDD 2022
(https://arxiv.org/abs/2110.06893). Definitions as computed here: ``docs/metrics.md``.

Both measure how much of the (reduced) feature variance the target classes explain:
``tr(pinv(Sigma_F) Cov(G))`` where row ``i`` of ``G`` is the mean feature of class ``y_i``.

* ``hscore``: standardised features, ``Sigma_F = Cov F``, both covariances with ``1/(n-1)``.
  When the reduced width is ``>= n - 1`` the feature covariance is singular and the score is
  ``K - 1`` for every model in exact arithmetic (docs/metrics.md trap): the public function then
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
rounding noise of a ``d x d`` pseudo-inverse (docs/metrics.md: 360.7 instead of 99).

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

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import (
    DegenerateScoreWarning,
    class_sums,
    live_columns,
    prepare_features,
    spectrum,
)

__all__ = [
    "HSCORE_N_DIMS",
    "DegenerateScoreWarning",
    "hscore",
    "hscore_core",
    "hscore_is_degenerate",
    "hscore_shrink",
    "hscore_shrink_core",
]

#: Default PCA width of ``hscore`` and ``hscore_shrink``.
HSCORE_N_DIMS = 32


def hscore_is_degenerate(n: int, d_reduced: int, *, n_dims: int | None = None) -> bool:
    """True when the H-Score feature covariance is singular: reduced width ``>= n - 1``.

    ``d_reduced`` is the width H-Score sees. If ``n_dims`` is given, ``d_reduced`` is taken as
    the raw (valid) width and reduced first to ``min(n_dims, n - 1, d_reduced)``. In that
    case H-Score equals ``K - 1`` for every model in exact arithmetic.
    """
    f = d_reduced if n_dims is None else min(n_dims, n - 1, d_reduced)
    return f >= n - 1


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

    ``x: [n, F]``, ``onehot: [n, K]``, ``counts: [K]``, ``spectrum`` from
    :func:`_common.spectrum`.
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


# ---------------------------------------------------------------------------------------------
# Scorers


def hscore_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = HSCORE_N_DIMS,
    feature_mask: jax.Array | None = None,
) -> jax.Array:
    """H-Score for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]``, ``feature_mask: bool [d]``.
    """
    x, valid = numerics.reduce_features(features, feature_mask, n_dims)
    z = numerics.standardize(x, valid)
    n = z.shape[0]
    d_valid = jnp.sum(valid).astype(z.dtype)
    onehot, counts = class_sums(labels, num_classes, z.dtype)
    spec = spectrum(z, live_columns(z, valid, centred=True))
    q = _class_quadratic(
        z, onehot, counts, spec, d_valid, scale=jnp.asarray(1.0 / (n - 1), z.dtype), ridge=0.0
    )
    return q / (n - 1)


def _ledoit_wolf_shrinkage(
    x: jax.Array, g: jax.Array, d_valid: jax.Array, rank_bound: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(shrinkage a, mu)`` of centred ``x: [n, F]`` as scikit-learn's ``LedoitWolf``.

    ``g: [E]`` eigenvalues of ``X^T X`` from :func:`_common.spectrum` called with
    ``rank_bound`` (structural zeros exact); ``d_valid`` is the dimension ``d`` of the estimate.
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
    *,
    num_classes: int,
    n_dims: int | None = HSCORE_N_DIMS,
    feature_mask: jax.Array | None = None,
) -> jax.Array:
    """Shrinkage (Ledoit-Wolf) H-Score for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]``, ``feature_mask: bool [d]``.
    """
    x, valid = numerics.reduce_features(features, feature_mask, n_dims)
    z = numerics.center(x, valid)
    n = z.shape[0]
    d_valid = jnp.sum(valid).astype(z.dtype)
    onehot, counts = class_sums(labels, num_classes, z.dtype)
    live = live_columns(z, valid, centred=True)
    spec = spectrum(z, live)
    alpha, mu = _ledoit_wolf_shrinkage(z, spec[1], d_valid, live)
    q = _class_quadratic(
        z, onehot, counts, spec, d_valid, scale=(1.0 - alpha) / n, ridge=alpha * mu
    )
    return (1.0 - alpha) * q / (n - 1)


_hscore_jit = numerics.jit_per_pca_mode(hscore_core, static_argnames=("num_classes", "n_dims"))
_hscore_shrink_jit = numerics.jit_per_pca_mode(
    hscore_shrink_core, static_argnames=("num_classes", "n_dims")
)


def hscore(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = HSCORE_N_DIMS,
    feature_mask: ArrayLike | None = None,
) -> jax.Array:
    """H-Score: the share of the standardised feature variance that the classes explain.

    ``tr(pinv(Cov F) Cov(G))`` on the reduced, standardised features ``F``, where row ``i``
    of ``G`` is the mean feature of class ``y_i`` (docs/metrics.md). Warns with
    :class:`DegenerateScoreWarning` when the reduced width is ``>= n - 1``: the feature
    covariance is then singular and the score is ``K - 1`` whatever the features.

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image (float16 is
        widened to float32; float64 is kept only under JAX's x64 mode).
      labels: int ``[n]`` class indices in ``0..K-1`` (single-label only).
      num_classes: ``K``. Default: ``max(labels) + 1`` from concrete labels; required when
        the labels are traced (inside jit/vmap).
      n_dims: PCA width; None: no reduction.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.

    Returns:
      float32 scalar (float64 under x64 with float64 features), H-Score in ``[0, K - 1]``
      (unitless), higher = predicted to transfer better. Raises ``ValueError`` on invalid
      input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.hscore import hscore
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 20)
      >>> features = rng.normal(size=(60, 8)) + 3.0 * np.eye(3, 8)[labels]
      >>> bool(0.5 < hscore(features, labels) <= 2.0)
      True

    References:
      Bao, Li, Huang, Wang, Zheng, Zhong, Wei. "An Information-Theoretic Approach to
      Transferability in Task Transfer Learning". ICIP 2019. https://arxiv.org/abs/2212.10082
    """
    x, y, mask, k, width = prepare_features(
        features, labels, feature_mask, num_classes, n_dims, "hscore"
    )
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
    return _hscore_jit(x, y, num_classes=k, n_dims=n_dims, feature_mask=mask)


def hscore_shrink(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = HSCORE_N_DIMS,
    feature_mask: ArrayLike | None = None,
) -> jax.Array:
    """Shrinkage H-Score: H-Score with a Ledoit-Wolf feature covariance on centred features.

    ``tr(pinv(Sigma_F) (1 - a) Cov(G))`` with ``Sigma_F = (1 - a) S + a mu I`` the
    Ledoit-Wolf estimate of scikit-learn's ``LedoitWolf`` on the reduced, centred (not
    standardised) features (docs/metrics.md).

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image (float16 is
        widened to float32; float64 is kept only under JAX's x64 mode).
      labels: int ``[n]`` class indices in ``0..K-1`` (single-label only).
      num_classes: ``K``. Default: ``max(labels) + 1`` from concrete labels; required when
        the labels are traced (inside jit/vmap).
      n_dims: PCA width; None: no reduction.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.

    Returns:
      float32 scalar (float64 under x64 with float64 features), shrinkage H-Score ``>= 0``
      (unitless), higher = predicted to transfer better. Raises ``ValueError`` on invalid
      input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.hscore import hscore_shrink
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 20)
      >>> features = rng.normal(size=(60, 8)) + 3.0 * np.eye(3, 8)[labels]
      >>> bool(hscore_shrink(features, labels) > 0.5)
      True

    References:
      Ibrahim, Ponomareva, Mazumder. "Newer is not always better: Rethinking transferability
      metrics, their peculiarities, stability and performance". ECML PKDD 2022.
      https://arxiv.org/abs/2110.06893
    """
    x, y, mask, k, _ = prepare_features(
        features, labels, feature_mask, num_classes, n_dims, "hscore_shrink"
    )
    return _hscore_shrink_jit(x, y, num_classes=k, n_dims=n_dims, feature_mask=mask)
