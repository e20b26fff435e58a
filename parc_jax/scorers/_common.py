"""Private helpers shared by the scorer modules: input preparation and spectral building blocks.

Every scorer module imports its shared helpers from here (and from :mod:`parc_jax.numerics` and
:mod:`parc_jax.validation`), never from a sibling scorer. Public names that live here
(:class:`DegenerateScoreWarning`) are re-exported by the scorer modules that use them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.validation import (
    check_features,
    check_labels,
    check_mask,
    check_n_dims,
    check_probs,
    check_regression_targets,
    is_traced,
)

__all__ = [
    "DegenerateScoreWarning",
    "after_pca",
    "check_informative",
    "check_reference",
    "class_scatter",
    "class_sums",
    "float_array",
    "float_dtype",
    "lda_log_probs",
    "live_columns",
    "mask_or_ones",
    "prepare_features",
    "prepare_pair",
    "prepare_probs",
    "require_num_classes",
    "shrunk_eigh",
    "spectrum",
    "true_class_mean",
]


class DegenerateScoreWarning(UserWarning):
    """A score is uninformative for this input (e.g. H-Score with reduced width >= n - 1)."""


# ---------------------------------------------------------------------------------------------
# Input conversion and validation


def float_dtype(dtype: Any) -> np.dtype:
    """float64 when x64 is enabled and the input is float64, else float32 (float16 widened)."""
    wide = np.promote_types(np.dtype(dtype), np.float32)
    return np.dtype(jax.dtypes.canonicalize_dtype(wide))


def float_array(x: np.ndarray) -> jax.Array:
    """Concrete floats as a JAX array of :func:`float_dtype` (no truncation warning)."""
    return jnp.asarray(np.asarray(x, dtype=float_dtype(x.dtype)))


def mask_or_ones(mask: ArrayLike | None, width: int) -> jax.Array:
    """The given column mask, or all-valid: one compiled program serves both cases."""
    return jnp.ones(width, bool) if mask is None else jnp.asarray(mask)


def require_num_classes(num_classes: int | None, labels: ArrayLike, method: str) -> int:
    """``num_classes`` for a call whose inputs are traced: given, or read from concrete labels.

    Traced labels (inside ``jit``/``vmap``) have no values to infer ``K`` from, and ``K`` is a
    static shape of the compiled program, so it must then be passed.
    """
    if num_classes is None:
        if is_traced(labels):
            raise ValueError(
                f"num_classes: {method} cannot infer it from traced labels inside jit/vmap; "
                "pass num_classes=K (a static int) there"
            )
        _, num_classes = check_labels(
            labels, num_classes=None, allow_multilabel=True, method=method
        )
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"num_classes: expected an int, got {num_classes!r}")
    return int(num_classes)


def check_informative(features: np.ndarray, name: str) -> None:
    """All-constant features give all-equal distances: a rank correlation would be 0/0."""
    if np.all(features == features[:1]):
        raise ValueError(
            f"{name}: every column is constant over the probe images, so all pairwise "
            "distances are equal and the rank correlation is undefined; check the extraction"
        )


def prepare_features(
    features: ArrayLike,
    labels: ArrayLike,
    feature_mask: ArrayLike | None,
    num_classes: int | None,
    n_dims: int | None,
    method: str,
    *,
    min_per_class: int = 0,
    multilabel: bool = False,
    min_rows: int = 2,
    regression: bool = False,
) -> tuple[Any, Any, Any, int, int | None]:
    """Validate a feature scorer's concrete inputs (tracers pass through unchecked).

    Returns ``(features, labels, mask, num_classes, reduced width or None when traced)``:
    concrete features as :func:`float_array`, labels as a JAX array, the mask as given (None
    stays None) and ``num_classes`` inferred from the labels when None (``max + 1``, or the
    columns of a multi-label matrix; :func:`require_num_classes` when traced). With
    ``regression`` the labels are real targets ``[n]`` / ``[n, C]`` (as floats) and
    ``num_classes`` is the number of outputs ``C`` (1 for ``[n]``).
    """
    check_n_dims(n_dims)
    if regression:
        outputs = 1 if np.ndim(labels) < 2 else int(np.shape(labels)[1])
        if num_classes is not None and num_classes != outputs:
            raise ValueError(
                f"num_classes: a regression target has no classes; leave it None (got "
                f"{num_classes!r})"
            )
        num_classes = outputs
    if is_traced(features, labels, feature_mask):
        k = num_classes if regression else require_num_classes(num_classes, labels, method)
        return features, labels, feature_mask, k, None
    x = check_features(features, min_rows=min_rows)
    if regression:
        y = check_regression_targets(labels, n=x.shape[0], method=method)
        y, k = float_array(y), num_classes
    else:
        y, k = check_labels(
            labels,
            num_classes=num_classes,
            n=x.shape[0],
            allow_multilabel=multilabel,
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
    return float_array(x), jnp.asarray(y), feature_mask, k, width


def prepare_probs(
    probs: ArrayLike,
    labels: ArrayLike,
    prob_mask: ArrayLike | None,
    num_classes: int | None,
    method: str,
) -> tuple[Any, Any, Any, int]:
    """Validate a probability scorer's concrete inputs (tracers pass through) and convert
    them for the jitted core."""
    if is_traced(probs, labels, prob_mask):
        return probs, labels, prob_mask, require_num_classes(num_classes, labels, method)
    p = check_probs(probs)
    y, k = check_labels(labels, num_classes=num_classes, n=p.shape[0], method=method)
    if prob_mask is not None:
        check_mask(prob_mask, p.shape[1], "prob_mask")
        pad = ~np.asarray(prob_mask)
        if np.any(p[:, pad] != 0):
            raise ValueError(
                "probs: columns marked invalid by prob_mask must be zero padding; pass the "
                "unpadded probabilities or fix the mask"
            )
        prob_mask = jnp.asarray(prob_mask)
    return float_array(p), jnp.asarray(y), prob_mask, k


def check_reference(reference_features: ArrayLike, n: int, *, min_rows: int) -> np.ndarray:
    """Check ``reference_features: [n, d_r]``: same probe rows as the scored features."""
    r = check_features(reference_features, "reference_features", min_rows=min_rows)
    if r.shape[0] != n:
        raise ValueError(
            f"reference_features: has {r.shape[0]} rows but features have {n}; both must be "
            "extracted from the same probe images in the same order"
        )
    return r


def prepare_pair(
    features: ArrayLike,
    reference_features: ArrayLike,
    feature_mask: ArrayLike | None,
    reference_mask: ArrayLike | None,
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
    check_informative(f, "features")
    check_informative(r, "reference_features")
    features, reference_features = float_array(f), float_array(r)
    feature_mask = mask_or_ones(feature_mask, f.shape[1])
    reference_mask = mask_or_ones(reference_mask, r.shape[1])
    return features, reference_features, feature_mask, reference_mask


# ---------------------------------------------------------------------------------------------
# Building blocks of the pure cores


def after_pca(reference: jax.Array, model_side: jax.Array, n_dims: int | None) -> jax.Array:
    """The reference input of rsa/dds, made to wait for the model's PCA when it gets its own.

    One PCA after the other: concurrent batched ``eigh`` calls can deadlock XLA:CPU's pool
    (``numerics.sequenced``). Without a PCA there is nothing to keep apart, and a reference
    left independent of the model stays unbatched under ``vmap`` when every model shares it:
    the engine passes reduced references so, and their side is then computed once per batch.
    """
    return reference if n_dims is None else numerics.sequenced(reference, model_side)


def class_sums(labels: jax.Array, num_classes: int, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """``(onehot [n, K], counts [K])`` for integer ``labels: [n]``."""
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype)
    return onehot, jnp.sum(onehot, axis=0)


def live_columns(x: jax.Array, valid: jax.Array, *, centred: bool) -> jax.Array:
    """Number of valid columns of ``x: [n, F]`` that can add to its rank, as ``x.dtype``.

    Uncentred data: the columns that are not all zero. Centred (or standardised) data: the
    columns that are not constant, tested exactly (``max == min``) on ``x`` as given. Dead
    units and constant columns are common in real features; with this count the rank bound
    of :func:`spectrum` covers them, not only padding.
    """
    if centred:
        live = jnp.max(x, axis=0) != jnp.min(x, axis=0)
    else:
        live = jnp.any(x != 0, axis=0)
    return jnp.sum(jnp.logical_and(live, valid)).astype(x.dtype)


def spectrum(x: jax.Array, rank_bound: jax.Array) -> tuple[bool, jax.Array, jax.Array]:
    """Eigen-decomposition of the smaller of ``X^T X`` and ``X X^T`` for ``x: [n, F]``.

    Returns ``(feature_side, g, vecs)``: ``feature_side`` (static) is True for the ``F x F``
    side; ``g: [E]`` are the eigenvalues of ``X^T X`` in ascending order, ``E = min(n, F)``
    (on the Gram side these are also its nonzero ones); ``vecs`` are the eigenvectors
    ``[F, F]`` or ``[n, n]``. ``X`` has rank at most ``r = min(n, rank_bound)`` (the caller's
    bound, e.g. from :func:`live_columns`), so the smallest ``E - r`` eigenvalues are zero by
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


# ---------------------------------------------------------------------------------------------
# Linear discriminant analysis with shrinkage (sfda, etran, ncti)

#: Within-class eigenvalues at most this fraction of the largest are structural zeros (padding,
#: dead units, the null space when d > n): 16 float32 epsilons, the rule of numerics.pca.
LDA_NULL_RTOL = 16 * float(np.finfo(np.float32).eps)


def class_scatter(
    x: jax.Array, onehot: jax.Array, counts: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(means [K, F], S_w [F, F])``: class means and the pooled within-class covariance
    ``S_w = sum_c (n_c / n) cov_c`` (biased, ``1 / n_c`` per class) of ``x: [n, F]``."""
    means = numerics.matmul(onehot.T, x) / jnp.maximum(counts, 1.0)[:, None]
    within = x - numerics.matmul(onehot, means)
    return means, numerics.matmul(within.T, within) / x.shape[0]


def shrunk_eigh(scatter: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(g, vecs, mu)``: eigenvalues (ascending; structural zeros set to 0, see
    ``LDA_NULL_RTOL``) and eigenvectors of a covariance ``[F, F]``, and ``mu = trace / d_valid``,
    the identity target of its shrinkage ``(1 - s) S + s mu I``."""
    g, vecs = jnp.linalg.eigh(scatter, symmetrize_input=True)
    g = jnp.where(g <= LDA_NULL_RTOL * g[-1], 0.0, g)
    mu = jnp.trace(scatter) / jnp.sum(valid.astype(scatter.dtype))
    return g, vecs, mu


def lda_log_probs(
    x: jax.Array,
    means: jax.Array,
    eig: tuple[jax.Array, jax.Array, jax.Array],
    shrinkage: jax.Array,
    counts: jax.Array,
) -> jax.Array:
    """Log posteriors ``[n, K]`` of the linear discriminant with the shrunk within-class
    covariance ``S = (1 - s) S_w + s mu I`` (scikit-learn's ``LinearDiscriminantAnalysis``,
    eigen solver, all components): ``x S^-1 m_c - m_c S^-1 m_c / 2 + log(n_c / n)``; absent
    classes get ``-inf``. ``eig`` is :func:`shrunk_eigh` of ``S_w``."""
    g, vecs, mu = eig
    inv_e = 1.0 / ((1.0 - shrinkage) * g + shrinkage * mu)
    coef = numerics.matmul(numerics.matmul(means, vecs) * inv_e, vecs.T)  # [K, F] = M S^-1
    present = counts > 0
    log_prior = jnp.log(jnp.where(present, counts, 1.0) / jnp.sum(counts))
    logits = numerics.matmul(x, coef.T) - 0.5 * jnp.sum(coef * means, axis=1) + log_prior
    return jax.nn.log_softmax(jnp.where(present, logits, -jnp.inf), axis=1)


def true_class_mean(log_probs: jax.Array, onehot: jax.Array) -> jax.Array:
    """Mean over the probe rows of the probability given to the true class."""
    return jnp.mean(jnp.sum(jnp.where(onehot > 0, jnp.exp(log_probs), 0.0), axis=1))
