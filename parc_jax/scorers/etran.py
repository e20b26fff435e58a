"""ETran: energy-based transferability, the parts defined for classification targets.

Paper: Gholami, Akbari, Wang, Zhang, "ETran: Energy-Based Transferability Estimation", ICCV 2023
(https://arxiv.org/abs/2308.02027); released code mgholamikn/ETran ``metrics.py``. Definition
as computed here: ``docs/metrics.md``.

``etran = S_en + S_lda``:

* ``S_en``: the mean over the probe images of the (negative free) energy
  ``logsumexp_j f_ij`` of the raw features (valid columns only). The released code averages
  only the lowest 0.5 % of the images (``Energy_Score(X, 0.5, 'bot')``: 2 of 500, none below
  200 images); the paper's score is over the target data, which is followed here.
* ``S_lda``: the mean true-class posterior of a linear discriminant with SFDA's shrinkage
  (``s = max(exp(-5 lambda_max(S_w)), 1e-10)``), on the features PCA-reduced to ``n_dims``
  (default ``ETRAN_N_DIMS``). The released ``LDA`` takes ``eigh`` of the non-symmetric
  ``S^-1 S_b``, whose orthonormal eigenvectors make ``W W^T = I`` and the classifier the
  Euclidean nearest mean; the paper's LDA (``W W^T = S^-1``) is followed here.

The regression part (``S_sa``) is not defined for class labels and is not computed. The
released evaluation combines min-max normalised parts over the model bank (0.15 and 0.85);
the paper's score is the per-model sum, followed here (so ``etran`` does not depend on which
other models are scored). Deterministic: no RNG.
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
    mask_or_ones,
    prepare_features,
    shrunk_eigh,
    true_class_mean,
)

__all__ = ["ETRAN_N_DIMS", "etran", "etran_core"]

#: Default PCA width of the LDA part of ``etran`` (the energy part reads the raw features).
ETRAN_N_DIMS = 64


def etran_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = ETRAN_N_DIMS,
    feature_mask: jax.Array | None = None,
) -> jax.Array:
    """ETran (``S_en + S_lda``) for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]`` raw, ``labels: int [n]``, ``feature_mask: bool [d]``.
    """
    valid = mask_or_ones(feature_mask, features.shape[1])
    energy = jnp.mean(jax.nn.logsumexp(jnp.where(valid, features, -jnp.inf), axis=1))
    x, valid_r = numerics.reduce_features(features, feature_mask, n_dims)
    onehot, counts = class_sums(labels, num_classes, x.dtype)
    means, sw = class_scatter(x, onehot, counts)
    eig = shrunk_eigh(sw, valid_r)
    s = jnp.maximum(jnp.exp(-5.0 * eig[0][-1]), 1e-10)
    return energy + true_class_mean(lda_log_probs(x, means, eig, s, counts), onehot)


_etran_jit = numerics.jit_per_pca_mode(etran_core, static_argnames=("num_classes", "n_dims"))


def etran(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = ETRAN_N_DIMS,
    feature_mask: ArrayLike | None = None,
) -> jax.Array:
    """ETran: mean feature energy plus an LDA's mean true-class posterior.

    Args:
      features: float ``[n, d]``, one row of a model's raw features per probe image.
      labels: int ``[n]`` class indices in ``0..K-1`` (single-label only).
      num_classes: ``K``. Default: ``max(labels) + 1`` from concrete labels; required when
        the labels are traced (inside jit/vmap).
      n_dims: PCA width of the LDA part (default ``ETRAN_N_DIMS``); None: raw features.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.

    Returns:
      float32 scalar (float64 under x64 with float64 features), in the features' units
      (plus a posterior in ``(0, 1]``), higher = predicted to transfer better. Raises
      ``ValueError`` on invalid input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.etran import etran
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 20)
      >>> good = rng.normal(size=(60, 8)) + 3.0 * np.eye(3, 8)[labels]
      >>> shuffled = good[rng.permutation(60)]  # the same energy, no class structure
      >>> bool(etran(good, labels) > etran(shuffled, labels))
      True

    References:
      Gholami, Akbari, Wang, Zhang. "ETran: Energy-Based Transferability Estimation".
      ICCV 2023. https://arxiv.org/abs/2308.02027
    """
    x, y, mask, k, _ = prepare_features(
        features, labels, feature_mask, num_classes, n_dims, "etran"
    )
    return _etran_jit(x, y, num_classes=k, n_dims=n_dims, feature_mask=mask)
