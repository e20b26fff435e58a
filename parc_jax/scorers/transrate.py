"""TransRate: the coding-rate gap between all features and the class-wise features.

Paper: Huang, Huang, Wei, Wei, "Frustratingly Easy Transferability Estimation", ICML 2022
(https://arxiv.org/abs/2106.09362), in the form of the authors' published code. Definition
as computed here: ``docs/metrics.md``.

On globally centred features ``Z: [n, d]`` (after PCA when ``n_dims`` is set),
``R(Z) = 1/2 logdet(I + Z^T Z / (n_Z eps))`` with ``n_Z`` the rows of ``Z`` and ``eps = 1e-4``,
and the score is ``R(Z) - (1/K) sum_c R(Z_c)``, in nats, ``Z_c`` the rows of class ``c`` (not
re-centred). Rows are not L2-normalised and the class terms are weighted ``1/K``, not
``n_c / n`` (docs/metrics.md: each variant is a different score). ``K`` counts the classes present
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
* Class blocks (docs/metrics.md's cost note: the class terms need only ``n_c x n_c`` matrices): with
  a static ``class_block >= max_c n_c``, the rows of each class are gathered into a padded
  ``[K, class_block, d]`` stack and ``K`` small ``class_block x class_block`` eigenvalue
  problems are solved in one batch (``~K b^2 d + 4 K b^3`` flops; with the Gram already made
  for the global term, its blocks are gathered from it and only the eigenvalues cost). For
  K = 100 classes of 5 probe images this replaces a 500 x 500 ``eigh`` by 100 of 8 x 8.
  ``class_block`` depends on the labels only, so the engine, which scores many models on one
  probe, passes it (:func:`class_block_size`); without it (a traced call that does not know
  the labels) the blocks are not available.

The cheapest available form by these counts is chosen from the static ``(n, d, K,
class_block)``.

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

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import class_sums, live_columns, prepare_features
from parc_jax.validation import check_positive_scalar, is_traced

__all__ = [
    "TRANSRATE_EPS",
    "TRANSRATE_N_DIMS",
    "class_block_size",
    "transrate",
    "transrate_core",
]

#: Default PCA width of ``transrate``: none, the raw features.
TRANSRATE_N_DIMS = None
#: Default coding precision ``eps`` of ``transrate`` (the authors' code).
TRANSRATE_EPS = 1e-4


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
    """``log det(I + m)`` for symmetric PSD ``m: [s, s]`` of rank at most ``rank_bound``."""
    return _log1p_live(jnp.linalg.eigh(m, symmetrize_input=True)[0], rank_bound)


def _log1p_live(lam: jax.Array, rank_bound: jax.Array) -> jax.Array:
    """``sum log1p(lam)`` over PSD matrices' ascending eigenvalues ``lam: [..., s]`` where, per
    matrix, the ``s - rank_bound[...]`` smallest are zero by construction and set so."""
    s = lam.shape[-1]
    null = jnp.arange(s) < s - jnp.expand_dims(rank_bound, -1)
    return jnp.sum(jnp.log1p(jnp.where(null, 0.0, jnp.maximum(lam, 0.0))))


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


def _class_terms_on_blocks(
    z: jax.Array,
    gram: jax.Array | None,
    labels: jax.Array,
    counts: jax.Array,
    eps,
    d_live: jax.Array,
    block: int,
) -> jax.Array:
    """``sum_c logdet(I + Z_c Z_c^T / (n_c eps))`` from ``K`` padded ``[block, block]`` blocks.

    Rows are grouped by class with a stable sort; class ``c`` takes the ``n_c <= block`` rows
    from its start, the rest of its block is zero (padding adds eigenvalues 0, ``log 1 = 0``).
    Block ``c`` has rank at most ``min(n_c, d_live)``; its other eigenvalues are set to 0.
    """
    n = z.shape[0]
    sizes = counts.astype(jnp.int32)
    order = jnp.argsort(labels, stable=True)
    starts = jnp.cumsum(sizes) - sizes
    slot = jnp.arange(block)
    live = slot[None, :] < sizes[:, None]  # [K, block]
    rows = order[jnp.minimum(starts[:, None] + slot[None, :], n - 1)]
    if gram is not None:
        g = gram[rows[:, :, None], rows[:, None, :]]
    else:
        zc = z[rows]  # [K, block, d]
        g = jnp.einsum("kid,kjd->kij", zc, zc, precision=numerics.HIGHEST)
    scale = 1.0 / (jnp.maximum(counts, 1.0) * eps)
    g = jnp.where(live[:, :, None] & live[:, None, :], g, 0.0) * scale[:, None, None]
    lam = jnp.linalg.eigh(g, symmetrize_input=True)[0]  # ascending, per class
    return _log1p_live(lam, jnp.minimum(sizes, d_live.astype(jnp.int32)))


def class_block_size(labels: ArrayLike, num_classes: int) -> int:
    """Static block size for the class terms on ``labels: int [n]``: the largest class count
    rounded up to a power of two (so that resampled probes compile few shapes), at most n."""
    y = np.asarray(labels)
    largest = int(np.bincount(y, minlength=num_classes).max())
    return min(y.shape[0], 1 << max(0, (largest - 1).bit_length()))


def _class_term_form(n: int, d: int, k: int, block: int | None) -> str:
    """The cheapest way to compute the class terms by a static flop count (module docstring):
    ``"features"``, ``"gram"`` or ``"blocks"``. The Gram exists already when ``d >= n``."""
    gram_made = d >= n
    cost = {
        "features": k * n * d * d + k * d**3 / 3,
        "gram": 4 * n**3 + (0 if gram_made else n * n * d),
    }
    if block is not None:
        cost["blocks"] = 4 * k * block**3 + (0 if gram_made else k * block * block * d)
    return min(cost, key=cost.get)


def transrate_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = TRANSRATE_N_DIMS,
    feature_mask: jax.Array | None = None,
    eps: float | jax.Array = TRANSRATE_EPS,
    class_block: int | None = None,
    spectrum: tuple[jax.Array, jax.Array] | None = None,
) -> jax.Array:
    """TransRate, nats, for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]``, ``feature_mask: bool [d]``; ``eps`` the coding
    precision (may be traced); ``class_block`` (static) at least the largest class count, to
    compute the class terms from per-class blocks (:func:`class_block_size`), or None.
    ``spectrum``: the centred features' ``numerics.Spectrum`` (smaller-side matrix and its
    ascending eigenvalues) when already computed (the engine's shared PCA makes it); then the
    global term is ``sum log1p(eigenvalues / (n eps))`` over the live ones (on either side,
    instead of a Cholesky when ``d < n``: equal in exact arithmetic). Only with ``n_dims=None``.
    """
    x, valid = numerics.reduce_features(features, feature_mask, n_dims)
    z = numerics.center(x, valid)
    n, d = z.shape
    d_live = live_columns(z, valid, centred=True)
    onehot, counts = class_sums(labels, num_classes, z.dtype)
    present = jnp.sum(counts > 0)
    gram = None
    if spectrum is not None:
        if n_dims is not None:
            raise ValueError("transrate_core: a given spectrum is of the unreduced features")
        matrix, eigenvalues = spectrum
        whole = _log1p_live(eigenvalues / (n * eps), jnp.minimum(n - 1, d_live))
        gram = matrix if d >= n else None
    elif d < n:
        whole = _logdet_pd(jnp.eye(d, dtype=z.dtype) + numerics.matmul(z.T, z) / (n * eps))
    else:
        gram = numerics.matmul(z, z.T)
        whole = _logdet_identity_plus(gram / (n * eps), jnp.minimum(n - 1, d_live))
    # the class terms' factorisation after the whole-set one (numerics.sequenced: concurrent
    # batched LAPACK calls can deadlock XLA:CPU's thread pool)
    z = numerics.sequenced(z, whole)
    if gram is not None:
        gram = numerics.sequenced(gram, whole)
    form = _class_term_form(n, d, num_classes, class_block)
    if form == "features":
        per_class = _class_terms_on_features(z, onehot, counts, eps)
    elif form == "blocks":
        per_class = _class_terms_on_blocks(z, gram, labels, counts, eps, d_live, class_block)
    else:
        gram = numerics.matmul(z, z.T) if gram is None else gram
        per_class = _class_terms_on_gram(gram, labels, counts, eps, d_live)
    return 0.5 * whole - 0.5 * per_class / present


_transrate_jit = numerics.jit_per_pca_mode(
    transrate_core, static_argnames=("num_classes", "n_dims", "class_block")
)


def transrate(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = TRANSRATE_N_DIMS,
    feature_mask: ArrayLike | None = None,
    eps: float = TRANSRATE_EPS,
) -> jax.Array:
    """TransRate: coding rate of all probe features minus the mean coding rate per class.

    ``R(Z) - (1/K) sum_c R(Z_c)`` with ``R(Z) = 1/2 logdet(I + Z^T Z / (n_Z eps))`` on the
    globally centred (optionally reduced) features ``Z`` and ``K`` the classes present: the
    authors' published form, ``1/K`` class weights and no row normalisation
    (docs/metrics.md).

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image (float16 is
        widened to float32; float64 is kept only under JAX's x64 mode).
      labels: int ``[n]`` class indices in ``0..K-1`` (single-label only).
      num_classes: ``K``. Default: ``max(labels) + 1`` from concrete labels; required when
        the labels are traced (inside jit/vmap).
      n_dims: PCA width; None (default): the raw features.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.
      eps: the coding precision, a positive float.

    Returns:
      float32 scalar (float64 under x64 with float64 features), TransRate in nats,
      higher = predicted to transfer better. Raises ``ValueError`` on invalid input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.transrate import transrate
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 20)
      >>> good = rng.normal(size=(60, 8)) + 3.0 * np.eye(3, 8)[labels]
      >>> noise = rng.normal(size=(60, 8))
      >>> bool(transrate(good, labels) > transrate(noise, labels))
      True

    References:
      Huang, Huang, Wei, Wei. "Frustratingly Easy Transferability Estimation". ICML 2022.
      https://arxiv.org/abs/2106.09362
    """
    if not is_traced(eps):
        eps = check_positive_scalar(eps, "eps")
    x, y, mask, k, _ = prepare_features(
        features, labels, feature_mask, num_classes, n_dims, "transrate"
    )
    block = None if is_traced(y) else class_block_size(y, k)
    return _transrate_jit(
        x, y, num_classes=k, n_dims=n_dims, feature_mask=mask, eps=eps, class_block=block
    )
