"""SFDA: Self-challenging Fisher Discriminant Analysis.

Paper: Shao, Zhao, Ge, Li, Luo, "Not All Models Are Equal: Predicting Model Transferability in
a Self-challenging Fisher Space", ECCV 2022 (https://arxiv.org/abs/2207.03036); released code
TencentARC/SFDA ``metrics.py``. Definition as computed here: ``docs/metrics.md``.

1. Fisher space: a linear discriminant with the shrunk within-class covariance
   ``S = (1 - s) S_w + s mu I`` (``mu = trace(S_w) / d``), ``s = max(exp(-5 lambda_max(S_w)),
   1e-10)`` (the paper's regularisation; ``lambda_max`` exact, where the released code takes 3
   power-iteration steps). With every discriminant direction kept, projecting onto the Fisher
   space and classifying there is the linear discriminant ``x S^-1 m_c - m_c S^-1 m_c / 2 +
   log pi_c`` (``W W^T = S^-1`` for the generalised eigenvectors ``W``), so no generalised
   eigen-problem is solved.
2. ConfMix (self-challenge): each sample moves toward the mean of the other classes' means,
   ``x' = p x + (1 - p) mean_{c != y} m_c``, with ``p`` the discriminant's posterior of its true
   class. The released code passes the posterior through a second softmax first; the paper
   mixes by the posterior itself, which is followed here (docs/metrics.md).
3. The discriminant is refitted on ``x'`` with the same ``s``; the score is the mean posterior
   of the true class (no log, as published), in ``(0, 1]``.

Features are PCA-reduced to ``SFDA_N_DIMS`` by default (the released code uses the raw
features; a ``d x d`` eigen-problem per model is the cost that the reduction bounds).
Single-label targets; classes listed but absent are left out. Deterministic: no RNG.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import (
    class_scatter,
    class_sums,
    lda_log_probs,
    prepare_features,
    shrunk_eigh,
    true_class_mean,
)

__all__ = ["SFDA_N_DIMS", "sfda", "sfda_core", "sfda_shrinkage"]

#: Default PCA width of ``sfda``.
SFDA_N_DIMS = 64


def sfda_shrinkage(largest_within_eigenvalue: jax.Array) -> jax.Array:
    """SFDA's regularisation ``max(exp(-5 lambda_max(S_w)), 1e-10)``."""
    return jnp.maximum(jnp.exp(-5.0 * largest_within_eigenvalue), 1e-10)


def sfda_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = SFDA_N_DIMS,
    feature_mask: jax.Array | None = None,
) -> jax.Array:
    """SFDA for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]``, ``feature_mask: bool [d]``.
    """
    x, valid = numerics.reduce_features(features, feature_mask, n_dims)
    onehot, counts = class_sums(labels, num_classes, x.dtype)
    means, sw = class_scatter(x, onehot, counts)
    eig = shrunk_eigh(sw, valid)
    s = sfda_shrinkage(eig[0][-1])
    log_p = lda_log_probs(x, means, eig, s, counts)
    p_true = jnp.sum(jnp.where(onehot > 0, jnp.exp(log_p), 0.0), axis=1, keepdims=True)
    present = (counts > 0).astype(x.dtype)
    total = jnp.sum(means * present[:, None], axis=0)
    outer = (total[None, :] - means) / (jnp.sum(present) - 1.0)  # [K, F]
    mixed = p_true * x + (1.0 - p_true) * numerics.matmul(onehot, outer)
    means2, sw2 = class_scatter(mixed, onehot, counts)
    log_p2 = lda_log_probs(mixed, means2, shrunk_eigh(sw2, valid), s, counts)
    return true_class_mean(log_p2, onehot)


_sfda_jit = numerics.jit_per_pca_mode(sfda_core, static_argnames=("num_classes", "n_dims"))


def sfda(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = SFDA_N_DIMS,
    feature_mask: ArrayLike | None = None,
) -> jax.Array:
    """SFDA: mean true-class posterior of a shrunk linear discriminant after ConfMix.

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image.
      labels: int ``[n]`` class indices in ``0..K-1`` (single-label only).
      num_classes: ``K``. Default: ``max(labels) + 1`` from concrete labels; required when
        the labels are traced (inside jit/vmap).
      n_dims: PCA width (default ``SFDA_N_DIMS``); None: the raw features.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.

    Returns:
      float32 scalar (float64 under x64 with float64 features) in ``(0, 1]``, higher =
      predicted to transfer better. Raises ``ValueError`` on invalid input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.sfda import sfda
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 20)
      >>> good = rng.normal(size=(60, 8)) + 3.0 * np.eye(3, 8)[labels]
      >>> noise = rng.normal(size=(60, 8))
      >>> bool(sfda(good, labels) > sfda(noise, labels))
      True

    References:
      Shao, Zhao, Ge, Li, Luo. "Not All Models Are Equal: Predicting Model Transferability in
      a Self-challenging Fisher Space". ECCV 2022. https://arxiv.org/abs/2207.03036
    """
    x, y, mask, k, _ = prepare_features(features, labels, feature_mask, num_classes, n_dims, "sfda")
    return _sfda_jit(x, y, num_classes=k, n_dims=n_dims, feature_mask=mask)
