"""PARC and RSA: Spearman correlation of pairwise-distance matrices (Bolya et al. 2021).

Both scores compare ``D_F = 1 - corrcoef(rows of F)`` of a model's (reduced, standardised)
probe features with a second distance matrix over the same probe images:

* ``parc``: the label distance. Single-label targets have exactly two label distances
  (``0`` if ``y_i = y_j``, ``1 + 1/(K-1)`` otherwise), built from ``y_i != y_j``, never from
  ``corrcoef`` of one-hot rows (METRICS.md, first trap). Spearman with a two-valued variable
  needs only the ranks of ``D_F``: one sort (``numerics.spearman_two_valued``).
* ``rsa``: ``D_F`` of a reference model trained on the target, reduced the same way.

Scores are ``x100``. Multi-label ``[n, K]`` 0/1 targets use ``1 - corrcoef(label rows)``; its
values are computed from integer co-occurrence counts so that pairs with the same exact
correlation tie exactly (see :func:`multilabel_distance_key`).
"""

from __future__ import annotations

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
    "multilabel_distance_key",
    "parc",
    "parc_core",
    "rsa",
    "rsa_core",
]


_reduce = numerics.reduce_features


def _after_pca(reference: jax.Array, model_side: jax.Array, n_dims: int | None) -> jax.Array:
    """The reference input of rsa/dds, made to wait for the model's PCA when it gets its own.

    One PCA after the other: concurrent batched ``eigh`` calls can deadlock XLA:CPU's pool
    (``numerics.sequenced``). Without a PCA there is nothing to keep apart, and a reference
    left independent of the model stays unbatched under ``vmap`` when every model shares it:
    the engine passes reduced references so, and their side is then computed once per batch.
    """
    return reference if n_dims is None else numerics.sequenced(reference, model_side)


def _feature_distances(features: jax.Array, mask: jax.Array | None, n_dims: int | None):
    """``triu(1 - corrcoef(rows))`` of the reduced, standardised features, ``[n (n-1) / 2]``."""
    x, m = _reduce(features, mask, n_dims)
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
    feature_mask: jax.Array | None = None,
    *,
    num_classes: int,
    n_dims: int | None = 32,
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
    feature_mask: jax.Array | None = None,
    reference_mask: jax.Array | None = None,
    *,
    n_dims: int | None = 64,
) -> jax.Array:
    """RSA x100 for one model (pure): Spearman of the two feature-distance upper triangles.

    ``features: [n, d]``, ``reference_features: [n, d_r]``, masks ``bool [d]`` / ``[d_r]``.
    Both inputs are reduced to ``n_dims`` and standardised the same way.
    """
    a = _feature_distances(features, feature_mask, n_dims)
    b = _feature_distances(_after_pca(reference_features, a, n_dims), reference_mask, n_dims)
    return (100.0 * numerics.spearman(a, b)).astype(a.dtype)


# num_classes is unused by the computation, so it is not static: no recompilation per K.
_parc_jit = numerics.jit_per_pca_mode(parc_core, static_argnames=("n_dims",))
_rsa_jit = numerics.jit_per_pca_mode(rsa_core, static_argnames=("n_dims",))


def _float_dtype(dtype: Any) -> np.dtype:
    """float64 when x64 is enabled and the input is float64, else float32 (float16 widened)."""
    wide = np.promote_types(np.dtype(dtype), np.float32)
    return np.dtype(jax.dtypes.canonicalize_dtype(wide))


def _float_array(x: np.ndarray) -> jax.Array:
    """Concrete floats as a JAX array of :func:`_float_dtype` (no truncation warning)."""
    return jnp.asarray(np.asarray(x, dtype=_float_dtype(x.dtype)))


def check_reference(reference_features: Any, n: int, *, min_rows: int) -> np.ndarray:
    """Check ``reference_features: [n, d_r]``: same probe rows as the scored features."""
    r = check_features(reference_features, "reference_features", min_rows=min_rows)
    if r.shape[0] != n:
        raise ValueError(
            f"reference_features: has {r.shape[0]} rows but features have {n}; both must be "
            "extracted from the same probe images in the same order"
        )
    return r


def _mask_or_ones(mask: Any, width: int) -> jax.Array:
    """The given column mask, or all-valid: one compiled program serves both cases."""
    return jnp.ones(width, bool) if mask is None else jnp.asarray(mask)


def _check_informative(features: np.ndarray, name: str) -> None:
    """All-constant features give all-equal distances: Spearman would be 0/0."""
    if np.all(features == features[:1]):
        raise ValueError(
            f"{name}: every column is constant over the probe images, so all pairwise "
            "distances are equal and the rank correlation is undefined; check the extraction"
        )


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


def parc(
    features: Any,
    labels: Any,
    feature_mask: Any = None,
    *,
    num_classes: int,
    n_dims: int | None = 32,
) -> jax.Array:
    """PARC (Bolya et al. 2021) x100, higher = predicted to transfer better.

    ``features: [n, d]`` probe features; ``labels: int [n]`` in ``0..K-1`` or a 0/1 multi-label
    matrix ``[n, K]``; ``feature_mask: bool [d]`` marks valid (unpadded) columns. Reduce to
    ``n_dims`` by exact PCA (``None``: no reduction), standardise, then
    ``spearman(triu(1 - corrcoef(F)), triu(D_y))``. A row that is constant after
    standardisation gets correlation 0 (distance 1) with every other row instead of NaN.
    Returns a float32 scalar (float64 dtype with x64 and float64 features; the rank sums of
    ``numerics`` are float32 either way, about 1e-7 relative).
    """
    if not is_traced(features, labels, feature_mask):
        f = check_features(features, n=None, min_rows=3)
        check_mask(feature_mask, f.shape[1], "feature_mask")
        check_n_dims(n_dims)
        y, num_classes = check_labels(
            labels, num_classes=num_classes, n=f.shape[0], allow_multilabel=True, method="parc"
        )
        _check_informative(f, "features")
        _check_label_pairs(y, "parc")
        features, labels = _float_array(f), jnp.asarray(y)
        feature_mask = _mask_or_ones(feature_mask, f.shape[1])
        return _defined(
            _parc_jit(features, labels, feature_mask, num_classes=num_classes, n_dims=n_dims),
            "parc",
        )
    return _parc_jit(features, labels, feature_mask, num_classes=num_classes, n_dims=n_dims)


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


def prepare_pair(
    features: Any,
    reference_features: Any,
    feature_mask: Any,
    reference_mask: Any,
    n_dims: int | None,
    *,
    min_rows: int,
) -> tuple[Any, Any, Any, Any]:
    """Validate a (features, reference) pair before tracing (rsa, dds); tracers pass through.

    Returns the arrays as JAX floats and the masks (all-True when None).
    """
    if is_traced(features, reference_features, feature_mask, reference_mask):
        return features, reference_features, feature_mask, reference_mask
    f = check_features(features, min_rows=min_rows)
    r = check_reference(reference_features, f.shape[0], min_rows=min_rows)
    check_mask(feature_mask, f.shape[1], "feature_mask")
    check_mask(reference_mask, r.shape[1], "reference_mask")
    check_n_dims(n_dims)
    _check_informative(f, "features")
    _check_informative(r, "reference_features")
    features, reference_features = _float_array(f), _float_array(r)
    feature_mask = _mask_or_ones(feature_mask, f.shape[1])
    reference_mask = _mask_or_ones(reference_mask, r.shape[1])
    return features, reference_features, feature_mask, reference_mask


def rsa(
    features: Any,
    reference_features: Any,
    feature_mask: Any = None,
    reference_mask: Any = None,
    *,
    n_dims: int | None = 64,
) -> jax.Array:
    """Representation Similarity Analysis x100 against a target-trained reference model.

    ``features: [n, d]``, ``reference_features: [n, d_r]`` (same probe images, same order),
    optional column masks ``bool [d]`` / ``bool [d_r]``. Both are reduced to ``n_dims`` (exact
    PCA; ``None``: none) and standardised; the score is the Spearman correlation of the two
    ``triu(1 - corrcoef(rows))``. Labels are not used.
    """
    traced = is_traced(features, reference_features, feature_mask, reference_mask)
    features, reference_features, feature_mask, reference_mask = prepare_pair(
        features, reference_features, feature_mask, reference_mask, n_dims, min_rows=3
    )
    score = _rsa_jit(features, reference_features, feature_mask, reference_mask, n_dims=n_dims)
    return score if traced else _defined(score, "rsa")
