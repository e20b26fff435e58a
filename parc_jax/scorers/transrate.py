"""TransRate (Huang et al. 2022), in the form of the authors' published code.

On globally centred features ``Z: [n, d]`` (after PCA when ``n_dims`` is set),
``R(Z) = 1/2 logdet(I + Z^T Z / (n_Z eps))`` with ``n_Z`` the rows of ``Z`` and ``eps = 1e-4``,
and the score is ``R(Z) - (1/K) sum_c R(Z_c)``, in nats, ``Z_c`` the rows of class ``c`` (not
re-centred). Rows are not L2-normalised and the class terms are weighted ``1/K``, not
``n_c / n`` (METRICS.md: each variant is a different score). ``K`` counts the classes present
in the probe; a class listed by ``num_classes`` but absent has no rows and no term (the
published code would divide by zero there).

Cost. By Sylvester's identity ``logdet(I_d + Z^T Z / c) = logdet(I_m + Z Z^T / c)`` for ``Z``
``[m, d]``, so every term can use the smaller side. The global term uses ``d x d`` when
``d < n`` and the ``n x n`` Gram otherwise. For the class terms, with static shapes:

* Gram side: the matrix ``B = I_n + [y_i = y_j] G_ij / (n_{y_i} eps)`` (``G = Z Z^T``) is,
  up to a simultaneous permutation of rows and columns, block diagonal with one block
  ``I + Z_c Z_c^T / (n_c eps)`` per class, so ``sum_c logdet(...) = logdet(B)``: one
  ``n x n`` symmetric eigenvalue problem for all classes together (``~n^2 d + 4 n^3`` flops,
  a rough count for ``eigh``).
* Feature side: ``K`` matrices ``I_d + Z^T diag(1[y = c]) Z / (n_c eps)``, a batched ``d x d``
  Cholesky (``~K n d^2 + K d^3 / 3`` flops, ``K d^2`` memory); an absent class gives ``I``.

The cheaper of the two by that count is chosen from the static ``(n, d, K)``.

Log determinants. On the feature side they come from Cholesky factors (``I`` plus a PSD
matrix is positive definite); padded or constant columns are exact zero rows and columns
there and add exactly ``log 1 = 0``. On the Gram side they come from the eigenvalues
``lambda`` of the PSD part, ``sum log1p(lambda)``, because there the rank is often far below
the matrix size: a model with ``d_live`` valid non-constant columns (padding, dead units and
constant columns excluded) has ``rank(Z) <= min(n - 1, d_live)`` (``min(n_c, d_live)`` per
class block), and the other
eigenvalues, zero in exact arithmetic, would be float32 rounding noise scaled by
``1 / (n eps)`` (a Cholesky log-determinant moved a padded score by ~2e-4 relative). Those
structural zeros (the smallest eigenvalues, as many as the rank bound leaves) are set to
exactly 0, so that a padded model scores as its unpadded self.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from parc_jax import numerics
from parc_jax.scorers.hscore import _class_sums, _live_columns, _prepare, _reduce
from parc_jax.validation import check_positive_scalar, is_traced

__all__ = ["transrate", "transrate_core"]


def _logdet_pd(a: jax.Array) -> jax.Array:
    """``log det`` of symmetric positive-definite ``a: [..., m, m]`` via Cholesky."""
    chol = jnp.linalg.cholesky(a, symmetrize_input=True)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def _class_terms_on_features(z: jax.Array, onehot: jax.Array, counts: jax.Array, eps) -> jax.Array:
    """``sum_c logdet(I_d + Z_c^T Z_c / (n_c eps))`` with ``K`` batched ``d x d`` matrices."""
    d = z.shape[1]
    scatter = jnp.einsum("nk,ni,nj->kij", onehot, z, z, precision=numerics.HIGHEST)  # [K, d, d]
    scale = jnp.where(counts > 0, 1.0 / (jnp.where(counts > 0, counts, 1.0) * eps), 0.0)
    mats = jnp.eye(d, dtype=z.dtype) + scatter * scale[:, None, None]
    return jnp.sum(_logdet_pd(mats))


def _logdet_identity_plus(m: jax.Array, rank_bound: jax.Array) -> jax.Array:
    """``log det(I + m)`` for symmetric PSD ``m: [s, s]`` of rank at most ``rank_bound``.

    The ``s - rank_bound`` smallest eigenvalues are zero by construction and set so.
    """
    lam = jnp.linalg.eigh(m, symmetrize_input=True)[0]  # ascending
    s = lam.shape[0]
    lam = jnp.where(jnp.arange(s) < s - rank_bound, 0.0, jnp.maximum(lam, 0.0))
    return jnp.sum(jnp.log1p(lam))


def _class_terms_on_gram(
    gram: jax.Array, labels: jax.Array, counts: jax.Array, eps, d_live: jax.Array
) -> jax.Array:
    """``sum_c logdet(I + Z_c Z_c^T / (n_c eps))`` as one ``n x n`` block-diagonal logdet.

    ``gram: [n, n] = Z Z^T``; entries between different classes are zeroed. Block ``c`` has
    rank at most ``min(n_c, d_live)``.
    """
    same = labels[:, None] == labels[None, :]
    row_scale = 1.0 / (counts[labels] * eps)  # n_{y_i} >= 1 for every row
    blocks = jnp.where(same, gram, 0.0) * row_scale[:, None]  # symmetric: equal scales
    rank_bound = jnp.sum(jnp.minimum(counts, d_live))
    return _logdet_identity_plus(blocks, rank_bound)


def _class_terms_on_features_is_cheaper(n: int, d: int, k: int) -> bool:
    """Static flop comparison of the two ways to compute the class terms (module docstring)."""
    return k * n * d * d + k * d**3 / 3 < n * n * d + 4 * n**3


def transrate_core(
    features: jax.Array,
    labels: jax.Array,
    feature_mask: jax.Array | None = None,
    *,
    num_classes: int,
    n_dims: int | None = None,
    eps: float | jax.Array = 1e-4,
) -> jax.Array:
    """TransRate, nats, for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]``, ``feature_mask: bool [d]``; ``eps`` the coding
    precision (may be traced).
    """
    x, valid = _reduce(features, feature_mask, n_dims)
    z = numerics.center(x, valid)
    n, d = z.shape
    d_live = _live_columns(z, valid, centred=True)
    onehot, counts = _class_sums(labels, num_classes, z.dtype)
    present = jnp.sum(counts > 0)
    gram = None
    if d < n:
        whole = _logdet_pd(jnp.eye(d, dtype=z.dtype) + numerics.matmul(z.T, z) / (n * eps))
    else:
        gram = numerics.matmul(z, z.T)
        whole = _logdet_identity_plus(gram / (n * eps), jnp.minimum(n - 1, d_live))
    # the class terms' factorisation after the whole-set one (numerics.sequenced: concurrent
    # batched LAPACK calls can deadlock XLA:CPU's thread pool)
    z = numerics.sequenced(z, whole)
    if gram is not None:
        gram = numerics.sequenced(gram, whole)
    if _class_terms_on_features_is_cheaper(n, d, num_classes):
        per_class = _class_terms_on_features(z, onehot, counts, eps)
    else:
        gram = numerics.matmul(z, z.T) if gram is None else gram
        per_class = _class_terms_on_gram(gram, labels, counts, eps, d_live)
    return 0.5 * whole - 0.5 * per_class / present


_transrate_jit = jax.jit(transrate_core, static_argnames=("num_classes", "n_dims"))


def transrate(
    features: Any,
    labels: Any,
    *,
    num_classes: int | None = None,
    n_dims: int | None = None,
    eps: float = 1e-4,
    feature_mask: Any = None,
) -> jax.Array:
    """TransRate (Huang et al. 2022, published-code form: ``1/K`` class weights), nats.

    ``features: [n, d]``, ``labels: int [n]``, ``num_classes``: K (default ``max + 1``),
    ``n_dims``: PCA width (None = no reduction, the default), ``eps``: coding precision,
    ``feature_mask: bool [d]`` valid columns. Raises ``ValueError`` on bad input.
    """
    if not is_traced(eps):
        eps = check_positive_scalar(eps, "eps")
    x, y, mask, k, _ = _prepare(features, labels, feature_mask, num_classes, n_dims, "transrate")
    return _transrate_jit(x, y, mask, num_classes=k, n_dims=n_dims, eps=eps)
