"""PARC and RSA: Spearman correlation of pairwise-distance matrices.

Papers: PARC, Bolya, Mittapalli, Hoffman, "Scalable Diverse Model Selection for Accessible
Transfer Learning", NeurIPS 2021 (https://arxiv.org/abs/2111.06977); RSA for transfer
learning, Dwivedi, Roig, "Representation Similarity Analysis for Efficient Task Taxonomy &
Transfer Learning", CVPR 2019 (https://arxiv.org/abs/1904.11740). Definitions as computed
here: ``docs/metrics.md``.

Both scores compare ``D_F = 1 - corrcoef(rows of F)`` of a model's (reduced, standardised)
probe features with a second distance matrix over the same probe images:

* ``parc``: the label distance. Single-label targets have exactly two label distances
  (``0`` if ``y_i = y_j``, ``1 + 1/(K-1)`` otherwise), built from ``y_i != y_j``, never from
  ``corrcoef`` of one-hot rows (docs/metrics.md, first trap). Spearman with a two-valued variable
  needs only the ranks of ``D_F``: one sort (``numerics.spearman_two_valued``).
* ``rsa``: ``D_F`` of a reference model trained on the target, reduced the same way.

Scores are ``x100``. Multi-label ``[n, K]`` 0/1 targets use ``1 - corrcoef(label rows)``; its
values are computed from integer co-occurrence counts so that pairs with the same exact
correlation tie exactly (see :func:`multilabel_distance_key`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import (
    after_pca,
    check_informative,
    float_array,
    mask_or_ones,
    prepare_pair,
    require_num_classes,
)
from parc_jax.validation import (
    check_features,
    check_labels,
    check_mask,
    check_n_dims,
    is_traced,
)

__all__ = [
    "PARC_N_DIMS",
    "RSA_N_DIMS",
    "multilabel_distance_key",
    "parc",
    "parc_core",
    "rsa",
    "rsa_core",
]

#: Default PCA width of ``parc`` (the PARC paper's 32 dimensions).
PARC_N_DIMS = 32
#: Default PCA width of ``rsa`` (both the model's and the reference's features).
RSA_N_DIMS = 64


def _feature_distances(features: jax.Array, mask: jax.Array | None, n_dims: int | None):
    """``triu(1 - corrcoef(rows))`` of the reduced, standardised features, ``[n (n-1) / 2]``."""
    x, m = numerics.reduce_features(features, mask, n_dims)
    z = numerics.standardize(x, m)
    return numerics.upper_triangle(numerics.row_correlation_distance(z, m))


def multilabel_distance_key(labels: jax.Array) -> jax.Array:
    """A key ``[n, n]`` that orders pairs like ``1 - corrcoef(label rows)``, with exact ties.

    ``labels: [n, K]`` 0/1. For rows with ``a`` and ``b`` positives and ``c`` shared ones,
    ``corr = N / sqrt(P)`` with ``N = cK - ab`` and ``P = a (K - a) b (K - b)`` (integers).
    ``1 - corr`` increases with ``key = -sign(N) N^2 / P``, a single correctly rounded
    division of exact integers: equal correlations give bit-identical keys, so ties are exact
    (``1 - Z Z^T`` in floats splits them by rounding, the PARC label-distance trap again).
    Integers are exact in float32 for ``K <= 128``; beyond that rounded products are still
    identical for identical ``(a, b, c)``. Spearman needs only this order, not the values.
    Rows must not be all 0 or all 1 (``P = 0``); the diagonal is not used.
    """
    y = labels.astype(jnp.float32)
    k = jnp.float32(y.shape[1])
    a = jnp.sum(y, axis=1)
    shared = numerics.matmul(y, y.T)  # exact small integers
    num = shared * k - a[:, None] * a[None, :]
    spread = a * (k - a)
    den = spread[:, None] * spread[None, :]
    return -jnp.sign(num) * (num * num) / jnp.where(den > 0, den, 1.0)


def parc_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = PARC_N_DIMS,
    feature_mask: jax.Array | None = None,
) -> jax.Array:
    """PARC x100 for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]`` or 0/1 ``[n, K]``, ``feature_mask: bool [d]``.
    ``num_classes`` does not change the single-label value (Spearman ignores the scale of
    the two label distances); it is kept for the shared scorer signature.
    """
    del num_classes
    dist = _feature_distances(features, feature_mask, n_dims)
    n = features.shape[0]
    rows, cols = jnp.triu_indices(n, k=1)
    if labels.ndim == 1:
        rho = numerics.spearman_two_valued(dist, labels[rows] != labels[cols])
    else:
        rho = numerics.spearman(dist, multilabel_distance_key(labels)[rows, cols])
    return (100.0 * rho).astype(dist.dtype)


def rsa_core(
    features: jax.Array,
    reference_features: jax.Array,
    *,
    n_dims: int | None = RSA_N_DIMS,
    feature_mask: jax.Array | None = None,
    reference_mask: jax.Array | None = None,
) -> jax.Array:
    """RSA x100 for one model (pure): Spearman of the two feature-distance upper triangles.

    ``features: [n, d]``, ``reference_features: [n, d_r]``, masks ``bool [d]`` / ``[d_r]``.
    Both inputs are reduced to ``n_dims`` and standardised the same way.
    """
    a = _feature_distances(features, feature_mask, n_dims)
    b = _feature_distances(after_pca(reference_features, a, n_dims), reference_mask, n_dims)
    return (100.0 * numerics.spearman(a, b)).astype(a.dtype)


# num_classes is unused by the computation, so it is not static: no recompilation per K.
_parc_jit = numerics.jit_per_pca_mode(parc_core, static_argnames=("n_dims",))
_rsa_jit = numerics.jit_per_pca_mode(rsa_core, static_argnames=("n_dims",))


def _check_label_pairs(labels: np.ndarray, method: str) -> None:
    """Both label-distance groups (same / different) must be non-empty."""
    if labels.ndim == 1:
        if np.bincount(labels).max() < 2:
            raise ValueError(
                f"labels: every class has a single probe sample, so no pair of images shares a "
                f"label and {method} is undefined; draw at least 2 samples of some class"
            )
    elif np.all(labels == labels[:1]):
        raise ValueError(
            f"labels: all multi-label rows are identical, so all label distances are equal and "
            f"{method} is undefined"
        )


def _defined(score: jax.Array, method: str) -> jax.Array:
    """``score``, or a ValueError when it is NaN: every pairwise feature distance was equal
    (one dimension after PCA or masking: a one-element row has no correlation), so the rank
    correlation is undefined (the cores return NaN there; the engine flags it per model)."""
    if bool(jnp.isnan(score)):
        raise ValueError(
            f"{method}: the pairwise feature distances are all equal (e.g. one dimension left "
            "after PCA or the mask), so the rank correlation is undefined; use n_dims >= 2 "
            "or features with more than one varying dimension"
        )
    return score


def parc(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = PARC_N_DIMS,
    feature_mask: ArrayLike | None = None,
) -> jax.Array:
    """PARC: Spearman correlation of the probe's feature and label distance matrices, x100.

    The features are reduced to ``n_dims`` by exact PCA, standardised, and turned into
    ``D_F = 1 - corrcoef(rows)``; the score is ``100 * spearman(triu(D_F), triu(D_y))`` with
    ``D_y`` the label distance (docs/metrics.md). A row that is constant after
    standardisation gets correlation 0 (distance 1) with every other row instead of NaN.

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image (float16 is
        widened to float32; float64 is kept only under JAX's x64 mode). ``n >= 3``.
      labels: int ``[n]`` class indices in ``0..K-1``, or a 0/1 multi-label matrix ``[n, K]``.
      num_classes: ``K``. Default: inferred from concrete labels (``max + 1``, or the columns
        of a multi-label matrix); required when the labels are traced (inside jit/vmap). It
        does not change the value.
      n_dims: PCA width (``min(n_dims, n - 1, valid columns)`` components); None: no
        reduction.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.

    Returns:
      float32 scalar (float64 under x64 with float64 features), PARC x100 in ``[-100, 100]``,
      higher = predicted to transfer better. Raises ``ValueError`` on invalid input or when
      the score is undefined (all pairwise feature distances equal).

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.parc import parc
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(4), 10)
      >>> features = rng.normal(size=(40, 16)) + 3.0 * np.eye(4, 16)[labels]
      >>> bool(parc(features, labels) > 0)
      True

    References:
      Bolya, Mittapalli, Hoffman. "Scalable Diverse Model Selection for Accessible Transfer
      Learning". NeurIPS 2021. https://arxiv.org/abs/2111.06977
    """
    check_n_dims(n_dims)
    if is_traced(features, labels, feature_mask):
        k = require_num_classes(num_classes, labels, "parc")
        return _parc_jit(features, labels, num_classes=k, n_dims=n_dims, feature_mask=feature_mask)
    f = check_features(features, n=None, min_rows=3)
    check_mask(feature_mask, f.shape[1], "feature_mask")
    y, k = check_labels(
        labels, num_classes=num_classes, n=f.shape[0], allow_multilabel=True, method="parc"
    )
    check_informative(f, "features")
    _check_label_pairs(y, "parc")
    score = _parc_jit(
        float_array(f),
        jnp.asarray(y),
        num_classes=k,
        n_dims=n_dims,
        feature_mask=mask_or_ones(feature_mask, f.shape[1]),
    )
    return _defined(score, "parc")


def rsa(
    features: ArrayLike,
    reference_features: ArrayLike,
    *,
    n_dims: int | None = RSA_N_DIMS,
    feature_mask: ArrayLike | None = None,
    reference_mask: ArrayLike | None = None,
) -> jax.Array:
    """RSA: Spearman correlation of a model's and a reference model's feature distances, x100.

    Both feature sets are reduced to ``n_dims`` (exact PCA) and standardised; the score is
    ``100 * spearman(triu(D_F), triu(D_R))`` with ``D = 1 - corrcoef(rows)``. The reference is
    a model trained on the target task. Labels are not used.

    Args:
      features: float ``[n, d]``, the scored model's features of the ``n >= 3`` probe images.
      reference_features: float ``[n, d_r]``, the reference model's features of the same
        probe images in the same order.
      n_dims: PCA width for both inputs; None: no reduction.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.
      reference_mask: bool ``[d_r]``, the same for ``reference_features``.

    Returns:
      float32 scalar (float64 under x64 with float64 inputs), RSA x100 in ``[-100, 100]``,
      higher = predicted to transfer better. Raises ``ValueError`` on invalid input or when
      the score is undefined.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.parc import rsa
      >>> rng = np.random.default_rng(0)
      >>> reference = rng.normal(size=(30, 8))
      >>> features = reference @ rng.normal(size=(8, 12)) + 0.1 * rng.normal(size=(30, 12))
      >>> bool(rsa(features, reference) > 50)
      True

    References:
      Dwivedi, Roig. "Representation Similarity Analysis for Efficient Task Taxonomy &
      Transfer Learning". CVPR 2019. https://arxiv.org/abs/1904.11740

      Bolya, Mittapalli, Hoffman. "Scalable Diverse Model Selection for Accessible Transfer
      Learning". NeurIPS 2021. https://arxiv.org/abs/2111.06977
    """
    traced = is_traced(features, reference_features, feature_mask, reference_mask)
    features, reference_features, feature_mask, reference_mask = prepare_pair(
        features, reference_features, feature_mask, reference_mask, n_dims, min_rows=3
    )
    score = _rsa_jit(
        features,
        reference_features,
        n_dims=n_dims,
        feature_mask=feature_mask,
        reference_mask=reference_mask,
    )
    return score if traced else _defined(score, "rsa")
