"""LFC: label-feature correlation of the linearised fine-tuning model.

Paper: Deshpande, Achille, Ravichandran, Li, Zancato, Fowlkes, Bhotika, Soatto, Perona, "A
linearized framework and a new benchmark for model selection for fine-tuning", 2021
(https://arxiv.org/abs/2102.00084); released code Model-Spider ``mptms/LFC.py``. Definition as
computed here: ``docs/metrics.md``.

The Pearson correlation, over all ``n^2`` entries, between the feature Gram matrix
``G = X X^T`` and the label kernel ``Y_ij = +1`` (same class) / ``-1`` (different classes),
each with its scalar mean subtracted (the released code's centring), in ``[-1, 1]``.
Features are used raw (no PCA by default). Computed without forming ``n x n`` matrices:
with ``s_c`` the sum of class ``c``'s rows and ``s`` of all rows,
``sum G = ||s||^2``, ``sum G * Y = 2 sum_c ||s_c||^2 - ||s||^2``,
``sum G^2 = ||X^T X||_F^2`` (or of ``X X^T``, whichever is smaller) and
``sum Y = 2 sum_c n_c^2 - n^2``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import class_sums, prepare_features

__all__ = ["LFC_N_DIMS", "lfc", "lfc_core"]

#: Default PCA width of ``lfc``: none, the raw features.
LFC_N_DIMS = None


def lfc_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = LFC_N_DIMS,
    feature_mask: jax.Array | None = None,
) -> jax.Array:
    """LFC for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]``, ``feature_mask: bool [d]``.
    """
    x, _ = numerics.reduce_features(features, feature_mask, n_dims)
    n, f = x.shape
    onehot, counts = class_sums(labels, num_classes, x.dtype)
    class_sum = numerics.matmul(onehot.T, x)  # [K, F]
    total = jnp.sum(class_sum, axis=0)
    nn = float(n) * float(n)
    sum_g = jnp.sum(total * total)
    sum_gy = 2.0 * jnp.sum(class_sum * class_sum) - sum_g
    small = numerics.matmul(x.T, x) if f <= n else numerics.matmul(x, x.T)
    sum_g2 = jnp.sum(small * small)
    sum_y = 2.0 * jnp.sum(counts * counts) - nn
    mean_g, mean_y = sum_g / nn, sum_y / nn
    cov = sum_gy - nn * mean_g * mean_y
    var_g = sum_g2 - nn * mean_g * mean_g
    var_y = nn - nn * mean_y * mean_y  # Y_ij^2 = 1
    return cov / jnp.sqrt(var_g * var_y)


_lfc_jit = numerics.jit_per_pca_mode(lfc_core, static_argnames=("num_classes", "n_dims"))


def lfc(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = LFC_N_DIMS,
    feature_mask: ArrayLike | None = None,
) -> jax.Array:
    """LFC: correlation of the feature Gram matrix with the +-1 same-class label kernel.

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image.
      labels: int ``[n]`` class indices in ``0..K-1`` (single-label only).
      num_classes: ``K``. Default: ``max(labels) + 1`` from concrete labels; required when
        the labels are traced (inside jit/vmap).
      n_dims: PCA width; None (default): the raw features.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.

    Returns:
      float32 scalar (float64 under x64 with float64 features) in ``[-1, 1]``, higher =
      predicted to transfer better. Raises ``ValueError`` on invalid input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.lfc import lfc
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 20)
      >>> good = rng.normal(size=(60, 8)) + 3.0 * np.eye(3, 8)[labels]
      >>> noise = rng.normal(size=(60, 8))
      >>> bool(lfc(good, labels) > lfc(noise, labels))
      True

    References:
      Deshpande, Achille, Ravichandran, Li, Zancato, Fowlkes, Bhotika, Soatto, Perona. "A
      linearized framework and a new benchmark for model selection for fine-tuning". 2021.
      https://arxiv.org/abs/2102.00084
    """
    x, y, mask, k, _ = prepare_features(features, labels, feature_mask, num_classes, n_dims, "lfc")
    return _lfc_jit(x, y, num_classes=k, n_dims=n_dims, feature_mask=mask)
