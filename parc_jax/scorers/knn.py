"""1-nearest-neighbour leave-one-out accuracy on (optionally reduced) probe features.

A baseline of the PARC paper's comparison (Table 1): Bolya, Mittapalli, Hoffman, "Scalable
Diverse Model Selection for Accessible Transfer Learning", NeurIPS 2021
(https://arxiv.org/abs/2111.06977). Definition as computed here: ``docs/metrics.md``.

Each probe image is classified by the label of its nearest other probe image (Euclidean,
ties to the lowest index); the score is the accuracy x100. Multi-label ``[n, K]`` 0/1 targets
score ``mean_i (1 - L1(y_i, y_nn(i)) / K)`` x100 (docs/metrics.md).

Squared distances come from the Gram matrix, ``||a||^2 + ||b||^2 - 2 a.b``, on features
centred first: the nearest-neighbour order is translation invariant, and centring removes the
common offset whose large norms would otherwise cancel in float32. Neighbours whose true
distances differ by less than float32 rounding may still be ordered differently from an exact
float64 computation; exactly equal distances (duplicate rows) tie exactly, since identical rows
give bit-identical Gram entries.

Every class may have any number of samples (docs/metrics.md defines the LOO accuracy for all; a
class with a single sample simply cannot be matched).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import mask_or_ones, prepare_features
from parc_jax.validation import is_traced

__all__ = ["KNN_N_DIMS", "knn", "knn_core", "nearest_neighbours"]

#: Default PCA width of ``knn``: none, the raw features.
KNN_N_DIMS = None


def nearest_neighbours(features: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Index ``int [n]`` of each row's nearest other row of ``features: [n, d]``.

    Euclidean over the valid columns (padded columns are zero); ties go to the lowest index.
    """
    x = numerics.center(features, mask)
    sq = jnp.sum(x * x, axis=1)
    dist = sq[:, None] + sq[None, :] - 2.0 * numerics.matmul(x, x.T)
    dist = jnp.where(jnp.eye(x.shape[0], dtype=bool), jnp.inf, dist)
    return jnp.argmin(dist, axis=1)  # the first minimum: lowest index on ties


def knn_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = KNN_N_DIMS,
    feature_mask: jax.Array | None = None,
) -> jax.Array:
    """1-NN LOO accuracy x100 for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]`` or 0/1 ``[n, K]``, ``feature_mask: bool [d]``.
    """
    del num_classes
    x, m = numerics.reduce_features(features, feature_mask, n_dims)
    nn = nearest_neighbours(x, m)
    dtype = x.dtype
    if labels.ndim == 1:
        hits = (labels[nn] == labels).astype(dtype)
    else:
        y = labels.astype(dtype)
        hits = 1.0 - jnp.sum(jnp.abs(y - y[nn]), axis=1) / y.shape[1]
    return 100.0 * jnp.sum(hits) / hits.shape[0]


# num_classes is unused by the computation, so it is not static: no recompilation per K.
_knn_jit = numerics.jit_per_pca_mode(knn_core, static_argnames=("n_dims",))


def knn(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = KNN_N_DIMS,
    feature_mask: ArrayLike | None = None,
) -> jax.Array:
    """1-nearest-neighbour leave-one-out accuracy on the probe features, in percent.

    Each probe image takes the label of its nearest other probe image (Euclidean over the
    valid columns, ties to the lowest index). For a multi-label target the per-image hit is
    ``1 - L1(y_i, y_nn(i)) / K``.

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image (float16 is
        widened to float32; float64 is kept only under JAX's x64 mode). ``n >= 2``.
      labels: int ``[n]`` class indices in ``0..K-1``, or a 0/1 multi-label matrix ``[n, K]``.
      num_classes: ``K``. Default: inferred from concrete labels (``max + 1``, or the columns
        of a multi-label matrix); required when the labels are traced (inside jit/vmap). It
        does not change the value.
      n_dims: exact PCA width first; None (default): the raw features.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.

    Returns:
      float32 scalar (float64 under x64 with float64 features), accuracy x100 in
      ``[0, 100]``, higher = predicted to transfer better. Raises ``ValueError`` on invalid
      input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.knn import knn
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 10)
      >>> features = rng.normal(size=(30, 8)) + 4.0 * np.eye(3, 8)[labels]
      >>> round(float(knn(features, labels)), 1)
      100.0

    References:
      Bolya, Mittapalli, Hoffman. "Scalable Diverse Model Selection for Accessible Transfer
      Learning". NeurIPS 2021 (Table 1 baselines). https://arxiv.org/abs/2111.06977
    """
    x, y, mask, k, _ = prepare_features(
        features, labels, feature_mask, num_classes, n_dims, "knn", multilabel=True
    )
    if not is_traced(x, y, mask):
        mask = mask_or_ones(mask, x.shape[1])
    return _knn_jit(x, y, num_classes=k, n_dims=n_dims, feature_mask=mask)
