"""GBC, the Gaussian Bhattacharyya Coefficient: overlap of per-class Gaussians.

Paper: Pándy, Agostinelli, Uijlings, Ferrari, Mensink, "Transferability Estimation using
Bhattacharyya Class Separability", CVPR 2022 (https://arxiv.org/abs/2111.12780). Definitions
as computed here: ``docs/metrics.md``.

Each target class ``c`` present in the probe is modelled by a Gaussian on the (PCA-64)
features: the class mean ``mu_c`` and the per-dimension population variance, floored at
1e-4 (``gbc``, diagonal covariance) or one variance per class (``gbc_spherical``). The score
is ``-sum_{c != c'} exp(-D_B(c, c'))`` over ordered pairs of present classes, with the
Bhattacharyya distance

``D_B = 1/8 sum_k (mu_ck - mu_c'k)^2 / s_k + 1/2 sum_k [ln s_k - (ln v_ck + ln v_c'k) / 2]``,

``s_k = (v_ck + v_c'k) / 2``. It lies in ``[-K(K-1), 0]``; higher = better separated classes.
Classes listed by ``num_classes`` but absent from the probe are skipped: they take part in
no pair (so ``K`` above is the number of present classes).

Spherical variant: ``v_c`` is the mean over the valid dimensions of the class's population
variances, floored at 1e-4 (as ``parc_jax.reference``; Pandy et al.'s code floors each
dimension before averaging, which differs only when a dimension's variance is below 1e-4).
Its log-determinant ``ln det(v_c I_f) = f ln v_c`` is multiplied by the dimension ``f``
(docs/metrics.md trap: the published code omitted the factor).

Means and variances are computed with one-hot matmuls over the static ``num_classes``
(variance in two passes, around the class mean). The pairwise tensor ``[K, K, F]`` of the
diagonal case is built at once when it is small and otherwise row block by row block
(``lax.map``), so memory stays at most ~``2^20`` elements per model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import class_sums, prepare_features

__all__ = [
    "GBC_N_DIMS",
    "GBC_VAR_FLOOR",
    "gbc",
    "gbc_core",
    "gbc_spherical",
    "gbc_spherical_core",
]

#: Default PCA width of ``gbc`` and ``gbc_spherical`` (the paper's 64 dimensions).
GBC_N_DIMS = 64
GBC_VAR_FLOOR = 1e-4
_PAIR_BLOCK_ELEMENTS = 2**20


def _class_gaussians(
    x: jax.Array, labels: jax.Array, valid: jax.Array, num_classes: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(means [K, F], population variances [K, F] (unfloored), counts [K])``.

    Padded dimensions (``valid`` False) get zero mean and zero variance. ``x`` is centred
    first (GBC is translation-invariant) so that the means are small and the spherical
    distances' Gram form ``|a|^2 + |b|^2 - 2 a.b`` does not cancel.
    """
    x = numerics.center(x, valid)
    onehot, counts = class_sums(labels, num_classes, x.dtype)
    safe = jnp.where(counts > 0, counts, 1.0)[:, None]
    means = numerics.matmul(onehot.T, x) / safe
    dev = x - means[labels]
    var = numerics.matmul(onehot.T, dev * dev) / safe
    m = valid.astype(x.dtype)[None, :]
    return means * m, var * m, counts


def _pair_sum(dist: jax.Array, present: jax.Array) -> jax.Array:
    """``-sum exp(-D_B)`` over ordered pairs ``c != c'`` of present classes; ``dist: [K, K]``."""
    k = dist.shape[0]
    pair = present[:, None] & present[None, :] & ~jnp.eye(k, dtype=bool)
    return -jnp.sum(jnp.where(pair, jnp.exp(-jnp.where(pair, dist, 0.0)), 0.0))


def _diagonal_distances(means: jax.Array, var: jax.Array, valid: jax.Array) -> jax.Array:
    """Bhattacharyya distances ``[K, K]`` between diagonal Gaussians (floored ``var``)."""
    k, f = means.shape
    m = valid.astype(means.dtype)
    log_var = jnp.log(var)  # [K, F]

    def rows(mu_a: jax.Array, var_a: jax.Array, log_a: jax.Array) -> jax.Array:
        """Distances from a block of classes ``[B, F]`` to all ``K``: ``[B, K]``."""
        avg = (var_a[:, None, :] + var[None, :, :]) / 2.0  # [B, K, F]
        diff = mu_a[:, None, :] - means[None, :, :]
        mahal = jnp.sum(m * diff * diff / avg, axis=-1) / 8.0
        logdet = jnp.sum(m * (jnp.log(avg) - 0.5 * (log_a[:, None, :] + log_var[None, :, :])), -1)
        return mahal + 0.5 * logdet

    if k * k * f <= _PAIR_BLOCK_ELEMENTS:
        return rows(means, var, log_var)
    block = max(1, _PAIR_BLOCK_ELEMENTS // (k * f))
    out = lax.map(lambda a: rows(*(v[None] for v in a))[0], (means, var, log_var), batch_size=block)
    return out


def _spherical_distances(means: jax.Array, var: jax.Array, valid: jax.Array) -> jax.Array:
    """Bhattacharyya distances ``[K, K]`` between spherical Gaussians ``(means, var [K])``."""
    f_valid = jnp.sum(valid.astype(means.dtype))
    sq = jnp.sum(means * means, axis=1)
    cross = numerics.matmul(means, means.T)
    dist2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * cross, 0.0)
    avg = (var[:, None] + var[None, :]) / 2.0
    log_var = jnp.log(var)
    logdet = f_valid * (jnp.log(avg) - 0.5 * (log_var[:, None] + log_var[None, :]))
    return dist2 / (8.0 * avg) + 0.5 * logdet


def gbc_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = GBC_N_DIMS,
    feature_mask: jax.Array | None = None,
) -> jax.Array:
    """GBC with diagonal Gaussians for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]``, ``feature_mask: bool [d]``.
    """
    x, valid = numerics.reduce_features(features, feature_mask, n_dims)
    means, var, counts = _class_gaussians(x, labels, valid, num_classes)
    var = jnp.maximum(var, GBC_VAR_FLOOR)
    return _pair_sum(_diagonal_distances(means, var, valid), counts > 0)


def gbc_spherical_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = GBC_N_DIMS,
    feature_mask: jax.Array | None = None,
) -> jax.Array:
    """GBC with spherical Gaussians for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]``, ``feature_mask: bool [d]``.
    """
    x, valid = numerics.reduce_features(features, feature_mask, n_dims)
    means, var, counts = _class_gaussians(x, labels, valid, num_classes)
    f_valid = jnp.sum(valid.astype(x.dtype))
    sphere = jnp.maximum(jnp.sum(var, axis=1) / f_valid, GBC_VAR_FLOOR)  # [K]
    return _pair_sum(_spherical_distances(means, sphere, valid), counts > 0)


_gbc_jit = numerics.jit_per_pca_mode(gbc_core, static_argnames=("num_classes", "n_dims"))
_gbc_spherical_jit = numerics.jit_per_pca_mode(
    gbc_spherical_core, static_argnames=("num_classes", "n_dims")
)


def gbc(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = GBC_N_DIMS,
    feature_mask: ArrayLike | None = None,
) -> jax.Array:
    """GBC with diagonal Gaussians: minus the summed Bhattacharyya overlap of class pairs.

    Each class present is a Gaussian with its mean and per-dimension population variance
    (floored at ``GBC_VAR_FLOOR``) on the reduced features; the score is
    ``-sum_{c != c'} exp(-D_B(c, c'))`` over ordered pairs of present classes
    (docs/metrics.md).

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image (float16 is
        widened to float32; float64 is kept only under JAX's x64 mode).
      labels: int ``[n]`` class indices in ``0..K-1`` (single-label only, >= 1 sample per
        class present).
      num_classes: ``K``. Default: ``max(labels) + 1`` from concrete labels; required when
        the labels are traced (inside jit/vmap).
      n_dims: PCA width; None: no reduction.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.

    Returns:
      float32 scalar (float64 under x64 with float64 features), GBC in ``[-K(K-1), 0]``
      (unitless, ``K`` the classes present), higher = better separated classes = predicted
      to transfer better. Raises ``ValueError`` on invalid input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.gbc import gbc
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 20)
      >>> good = rng.normal(size=(60, 8)) + 3.0 * np.eye(3, 8)[labels]
      >>> noise = rng.normal(size=(60, 8))
      >>> bool(gbc(noise, labels) < gbc(good, labels) <= 0)
      True

    References:
      Pándy, Agostinelli, Uijlings, Ferrari, Mensink. "Transferability Estimation using
      Bhattacharyya Class Separability". CVPR 2022. https://arxiv.org/abs/2111.12780
    """
    x, y, mask, k, _ = prepare_features(features, labels, feature_mask, num_classes, n_dims, "gbc")
    return _gbc_jit(x, y, num_classes=k, n_dims=n_dims, feature_mask=mask)


def gbc_spherical(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = GBC_N_DIMS,
    feature_mask: ArrayLike | None = None,
) -> jax.Array:
    """GBC with spherical Gaussians: one variance per class instead of one per dimension.

    As :func:`gbc`, with each class's variance the mean of its per-dimension population
    variances (floored at ``GBC_VAR_FLOOR``) and the log-determinant multiplied by the
    dimension (docs/metrics.md).

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image (float16 is
        widened to float32; float64 is kept only under JAX's x64 mode).
      labels: int ``[n]`` class indices in ``0..K-1`` (single-label only, >= 1 sample per
        class present).
      num_classes: ``K``. Default: ``max(labels) + 1`` from concrete labels; required when
        the labels are traced (inside jit/vmap).
      n_dims: PCA width; None: no reduction.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.

    Returns:
      float32 scalar (float64 under x64 with float64 features), GBC in ``[-K(K-1), 0]``
      (unitless, ``K`` the classes present), higher = better separated classes = predicted
      to transfer better. Raises ``ValueError`` on invalid input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.gbc import gbc_spherical
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 20)
      >>> good = rng.normal(size=(60, 8)) + 3.0 * np.eye(3, 8)[labels]
      >>> noise = rng.normal(size=(60, 8))
      >>> bool(gbc_spherical(noise, labels) < gbc_spherical(good, labels) <= 0)
      True

    References:
      Pándy, Agostinelli, Uijlings, Ferrari, Mensink. "Transferability Estimation using
      Bhattacharyya Class Separability". CVPR 2022. https://arxiv.org/abs/2111.12780
    """
    x, y, mask, k, _ = prepare_features(
        features, labels, feature_mask, num_classes, n_dims, "gbc_spherical"
    )
    return _gbc_spherical_jit(x, y, num_classes=k, n_dims=n_dims, feature_mask=mask)
