"""1-nearest-neighbour leave-one-out accuracy on (optionally reduced) probe features.

Each probe image is classified by the label of its nearest other probe image (Euclidean,
ties to the lowest index); the score is the accuracy x100. Multi-label ``[n, K]`` 0/1 targets
score ``mean_i (1 - L1(y_i, y_nn(i)) / K)`` x100 (METRICS.md).

Squared distances come from the Gram matrix, ``||a||^2 + ||b||^2 - 2 a.b``, on features
centred first: the nearest-neighbour order is translation invariant, and centring removes the
common offset whose large norms would otherwise cancel in float32. Neighbours whose true
distances differ by less than float32 rounding may still be ordered differently from an exact
float64 computation; exactly equal distances (duplicate rows) tie exactly, since identical rows
give bit-identical Gram entries.

Every class may have any number of samples (METRICS.md defines the LOO accuracy for all; a
class with a single sample simply cannot be matched).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from parc_jax import numerics
from parc_jax.scorers.parc import _float_array, _mask_or_ones, _reduce
from parc_jax.validation import check_features, check_labels, check_mask, check_n_dims, is_traced

__all__ = ["knn", "knn_core", "nearest_neighbours"]


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
    feature_mask: jax.Array | None = None,
    *,
    num_classes: int,
    n_dims: int | None = None,
) -> jax.Array:
    """1-NN LOO accuracy x100 for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]`` or 0/1 ``[n, K]``, ``feature_mask: bool [d]``.
    """
    del num_classes
    x, m = _reduce(features, feature_mask, n_dims)
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
    features: Any,
    labels: Any,
    feature_mask: Any = None,
    *,
    num_classes: int,
    n_dims: int | None = None,
) -> jax.Array:
    """1-nearest-neighbour leave-one-out accuracy x100 (%), Euclidean, ties to lowest index.

    ``features: [n, d]``; ``labels: int [n]`` in ``0..K-1`` or a 0/1 multi-label matrix
    ``[n, K]`` (then ``mean (1 - L1(y_i, y_nn) / K)`` x100); ``feature_mask: bool [d]``;
    ``n_dims``: optional exact PCA first (default none).
    """
    if not is_traced(features, labels, feature_mask):
        f = check_features(features)
        check_mask(feature_mask, f.shape[1], "feature_mask")
        check_n_dims(n_dims)
        y, num_classes = check_labels(
            labels, num_classes=num_classes, n=f.shape[0], allow_multilabel=True, method="knn"
        )
        features, labels = _float_array(f), jnp.asarray(y)
        feature_mask = _mask_or_ones(feature_mask, f.shape[1])
    return _knn_jit(features, labels, feature_mask, num_classes=num_classes, n_dims=n_dims)
