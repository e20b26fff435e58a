"""DDS: Duality Diagram Similarity as debiased CKA of distance matrices.

Paper: Dwivedi, Huang, Cichy, Roig, "Duality Diagram Similarity: a generic framework for
initialization selection in task transfer learning", ECCV 2020
(https://arxiv.org/abs/2008.02107). Definition as computed here: ``docs/metrics.md``.

Both feature sets are reduced (default 64 dims) and standardised; each gives a cosine-distance
matrix ``1 - cos(rows)``; the score is the debiased, centred CKA of the two matrices
(Kornblith et al. 2019) built on the unbiased HSIC estimator (Song et al. 2012), x100.

The unbiased HSIC is computed in its U-centred form (Szekely & Rizzo 2014): for a symmetric
``K: [n, n]`` with zero diagonal, ``U(K)_ij = K_ij - r_i/(n-2) - r_j/(n-2) + S/((n-1)(n-2))``
off the diagonal (``r`` the row sums, ``S`` the total) and ``U(K)_ii = 0``; then
``HSIC_u(K, L) = <U(K), U(L)> / (n (n - 3))``, the same number as Song et al.'s three-term
formula. Centring first removes the large common mean of the distances before the products
are summed, so float32 does not lose the small covariance to cancellation; the ``n (n - 3)``
factors cancel in CKA.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import DegenerateScoreWarning, after_pca, prepare_pair
from parc_jax.validation import is_traced

__all__ = [
    "DDS_N_DIMS",
    "DegenerateScoreWarning",
    "cosine_distance",
    "dds",
    "dds_core",
    "dds_is_degenerate",
    "u_centre",
]

#: Default PCA width of ``dds`` (both the model's and the reference's features).
DDS_N_DIMS = 64


def dds_is_degenerate(n: int, width: int, n_dims: int | None) -> bool:
    """True when PCA to ``min(n_dims, width) >= n - 1`` dims and standardisation whiten the
    ``n`` probe rows: every pair is then equally far apart and CKA is 0/0 (rounding noise).
    ``width``: the valid feature (or reference) columns. Without PCA nothing is whitened."""
    return n_dims is not None and min(n_dims, width) >= n - 1


def cosine_distance(x: jax.Array) -> jax.Array:
    """``1 - cos(rows)`` of ``x: [n, f]`` as ``[n, n]`` with a zero diagonal.

    A zero row has no direction: it is given cosine 0 (distance 1) with every other row,
    rather than NaN (SciPy's ``cdist`` answer; the NumPy reference rejects such rows).
    Padded columns are zero and contribute nothing.
    """
    norm = jnp.linalg.norm(x, axis=1, keepdims=True)
    unit = x / jnp.where(norm > 0, norm, 1.0)
    dist = 1.0 - numerics.matmul(unit, unit.T)
    return jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0, dist)


def u_centre(k: jax.Array) -> jax.Array:
    """U-centring of a symmetric ``k: [n, n]`` (its diagonal is ignored), ``n >= 4``."""
    n = k.shape[0]
    eye = jnp.eye(n, dtype=bool)
    k = jnp.where(eye, 0.0, k)
    rows = jnp.sum(k, axis=1)
    total = numerics.accurate_sum(rows)
    out = k - (rows[:, None] + rows[None, :]) / (n - 2) + total / ((n - 1) * (n - 2))
    return jnp.where(eye, 0.0, out)


def dds_core(
    features: jax.Array,
    reference_features: jax.Array,
    *,
    n_dims: int | None = DDS_N_DIMS,
    feature_mask: jax.Array | None = None,
    reference_mask: jax.Array | None = None,
) -> jax.Array:
    """DDS x100 for one model (pure; jit/vmap-able, no checks); NaN when either distance
    matrix is constant off the diagonal (undefined).

    ``features: [n, d]``, ``reference_features: [n, d_r]``, masks ``bool [d]`` / ``[d_r]``;
    ``n >= 4``.
    """
    x, xm = numerics.reduce_features(features, feature_mask, n_dims)
    r, rm = numerics.reduce_features(
        after_pca(reference_features, x, n_dims), reference_mask, n_dims
    )
    dx = cosine_distance(numerics.standardize(x, xm))
    dr = cosine_distance(numerics.standardize(r, rm))
    ux, ur = u_centre(dx), u_centre(dr)
    cross = numerics.accurate_sum(ux * ur)
    self_x = numerics.accurate_sum(ux * ux)
    self_r = numerics.accurate_sum(ur * ur)
    score = (100.0 * cross / jnp.sqrt(self_x * self_r)).astype(x.dtype)
    # All distances equal (constant features): CKA is 0/0, but U-centring leaves rounding
    # noise (8.9e-6 for constant features), so test the distances themselves, exactly.
    return jnp.where(_all_equal_off_diagonal(dx) | _all_equal_off_diagonal(dr), jnp.nan, score)


def _all_equal_off_diagonal(d: jax.Array) -> jax.Array:
    off = ~jnp.eye(d.shape[0], dtype=bool)
    return jnp.max(jnp.where(off, d, -jnp.inf)) == jnp.min(jnp.where(off, d, jnp.inf))


_dds_jit = numerics.jit_per_pca_mode(dds_core, static_argnames=("n_dims",))


def dds(
    features: ArrayLike,
    reference_features: ArrayLike,
    *,
    n_dims: int | None = DDS_N_DIMS,
    feature_mask: ArrayLike | None = None,
    reference_mask: ArrayLike | None = None,
) -> jax.Array:
    """DDS: debiased CKA of a model's and a reference model's cosine-distance matrices, x100.

    Both feature sets are reduced to ``n_dims`` (exact PCA) and standardised; each gives a
    cosine-distance matrix ``1 - cos(rows)``, and the score is their debiased, centred CKA
    (unbiased HSIC). The reference is a model trained on the target task. Labels are not
    used. Warns with :class:`DegenerateScoreWarning` when the PCA width reaches ``n - 1``
    (:func:`dds_is_degenerate`: the score is then rounding noise).

    Args:
      features: float ``[n, d]``, the scored model's features of the ``n >= 4`` probe images.
      reference_features: float ``[n, d_r]``, the reference model's features of the same
        probe images in the same order.
      n_dims: PCA width for both inputs; None: no reduction.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.
      reference_mask: bool ``[d_r]``, the same for ``reference_features``.

    Returns:
      float32 scalar (float64 under x64 with float64 inputs), DDS x100 in ``[-100, 100]``,
      higher = predicted to transfer better; NaN when either distance matrix is constant.
      Raises ``ValueError`` on invalid input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.dds import dds
      >>> rng = np.random.default_rng(0)
      >>> reference = rng.normal(size=(30, 8))
      >>> features = reference @ rng.normal(size=(8, 12)) + 0.1 * rng.normal(size=(30, 12))
      >>> bool(dds(features, reference, n_dims=4) > 50)
      True

    References:
      Dwivedi, Huang, Cichy, Roig. "Duality Diagram Similarity: a generic framework for
      initialization selection in task transfer learning". ECCV 2020.
      https://arxiv.org/abs/2008.02107
    """
    traced = is_traced(features, reference_features, feature_mask, reference_mask)
    features, reference_features, feature_mask, reference_mask = prepare_pair(
        features, reference_features, feature_mask, reference_mask, n_dims, min_rows=4
    )
    n = features.shape[0]
    widths = [] if traced else [int(np.sum(np.asarray(m))) for m in (feature_mask, reference_mask)]
    if any(dds_is_degenerate(n, w, n_dims) for w in widths):
        warnings.warn(
            f"dds: PCA to {min(n_dims, max(widths))} >= n - 1 = {n - 1} dims whitens the probe "
            "(every pair of images equally far apart), so DDS is 0/0 and the value is rounding "
            "noise; reduce to fewer dimensions (n_dims) or draw a larger probe",
            DegenerateScoreWarning,
            stacklevel=2,
        )
    return _dds_jit(
        features,
        reference_features,
        n_dims=n_dims,
        feature_mask=feature_mask,
        reference_mask=reference_mask,
    )
