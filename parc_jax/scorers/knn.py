"""k-nearest-neighbour leave-one-out prediction on (optionally reduced) probe features.

A baseline of the PARC paper's comparison (Table 1): Bolya, Mittapalli, Hoffman, "Scalable
Diverse Model Selection for Accessible Transfer Learning", NeurIPS 2021
(https://arxiv.org/abs/2111.06977). Definition as computed here: ``docs/metrics.md``.

Each probe image is predicted from its ``k`` nearest other probe images (Euclidean, ties to
the lowest index; ``k = 1`` by default, the PARC paper's 1-NN). Classification: the majority
class of the neighbours (a tie in votes goes to the tied class met first, nearest first);
the score is the accuracy x100. Multi-label ``[n, K]`` 0/1 targets score
``mean_i (1 - L1(y_i, p_i) / K)`` x100 with ``p_i`` the mean of the neighbours' label
vectors (for ``k = 1`` the neighbour's vector). Regression ``[n]`` / ``[n, C]`` targets: the
prediction is the mean of the neighbours' targets, and the score is the Pearson correlation
of prediction and target per output, averaged over the outputs, x100 (in ``[-100, 100]``; an
output whose prediction is the same for every image carries no information and counts 0), as
transformer-ranker scores regression with k-NN.

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

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import mask_or_ones, prepare_features
from parc_jax.validation import is_traced

__all__ = ["KNN_K", "KNN_N_DIMS", "knn", "knn_core", "nearest_neighbours"]

#: Default PCA width of ``knn``: none, the raw features.
KNN_N_DIMS = None
#: Default number of neighbours: 1, the PARC paper's 1-NN baseline.
KNN_K = 1


def nearest_neighbours(
    features: jax.Array, mask: jax.Array | None = None, k: int | None = None
) -> jax.Array:
    """Indices of each row's nearest other rows of ``features: [n, d]``: ``int [n]`` when
    ``k`` is None, else ``int [n, k]``, nearest first.

    Euclidean over the valid columns (padded columns are zero); ties go to the lowest index.
    """
    x = numerics.center(features, mask)
    sq = jnp.sum(x * x, axis=1)
    dist = sq[:, None] + sq[None, :] - 2.0 * numerics.matmul(x, x.T)
    dist = jnp.where(jnp.eye(x.shape[0], dtype=bool), jnp.inf, dist)
    if k is None:
        return jnp.argmin(dist, axis=1)  # the first minimum: lowest index on ties
    return jax.lax.top_k(-dist, k)[1]  # top_k puts the lower index first among equal values


def _majority(labels: jax.Array, nn: jax.Array) -> jax.Array:
    """The majority class of each row's neighbours ``nn: [n, k]`` (nearest first); a tie in
    votes goes to the tied class whose first neighbour is nearest."""
    lab = labels[nn]  # [n, k]
    k = lab.shape[1]
    votes = jnp.sum(lab[:, :, None] == lab[:, None, :], axis=2)  # votes for position j's class
    # more votes win; among equal votes the earlier position (every position of a class has
    # its votes, so the class's first position decides)
    key = votes * (k + 1) + (k - jnp.arange(k))[None, :]
    return jnp.take_along_axis(lab, jnp.argmax(key, axis=1)[:, None], axis=1)[:, 0]


def _column_pearson(pred: jax.Array, y: jax.Array) -> jax.Array:
    """Pearson correlation per column of ``pred, y: [n, C]``; 0 where ``pred`` is constant
    (a prediction that does not vary carries no information about the target)."""
    r = jax.vmap(numerics.pearson, in_axes=(1, 1))(pred, y)
    flat = jnp.all(pred == pred[:1], axis=0)
    return jnp.where(flat, 0.0, r)


def knn_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = KNN_N_DIMS,
    feature_mask: jax.Array | None = None,
    k: int = KNN_K,
    regression: bool = False,
) -> jax.Array:
    """k-NN LOO score x100 for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]`` or 0/1 ``[n, K]`` (``regression=False``) or
    real ``[n]`` / ``[n, C]`` (``regression=True``), ``feature_mask: bool [d]``; ``k`` and
    ``regression`` are static, ``1 <= k <= n - 1``.
    """
    del num_classes
    x, m = numerics.reduce_features(features, feature_mask, n_dims)
    dtype = x.dtype
    if k == 1:
        nn = nearest_neighbours(x, m)[:, None]  # the nearest (argmin, lowest index on ties)
    else:
        nn = nearest_neighbours(x, m, k)
    if regression:
        y = labels.astype(dtype).reshape(labels.shape[0], -1)  # [n, C]
        pred = jnp.mean(y[nn], axis=1)
        return 100.0 * jnp.mean(_column_pearson(pred, y))
    if labels.ndim == 1:
        pred = labels[nn[:, 0]] if k == 1 else _majority(labels, nn)
        hits = (pred == labels).astype(dtype)
    else:
        y = labels.astype(dtype)
        hits = 1.0 - jnp.sum(jnp.abs(y - jnp.mean(y[nn], axis=1)), axis=1) / y.shape[1]
    return 100.0 * jnp.sum(hits) / hits.shape[0]


# num_classes is unused by the computation, so it is not static: no recompilation per K.
_knn_jit = numerics.jit_per_pca_mode(knn_core, static_argnames=("n_dims", "k", "regression"))


def knn(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = KNN_N_DIMS,
    feature_mask: ArrayLike | None = None,
    k: int = KNN_K,
    regression: bool = False,
) -> jax.Array:
    """k-nearest-neighbour leave-one-out score on the probe features, x100.

    Each probe image is predicted from its ``k`` nearest other probe images (Euclidean over
    the valid columns, ties to the lowest index). Classification: their majority class
    (vote ties to the class met first, nearest first), scored by accuracy. Multi-label: the
    per-image hit is ``1 - L1(y_i, p_i) / K`` with ``p_i`` the mean of the neighbours' label
    vectors. Regression (``regression=True``): the mean of the neighbours' targets, scored by
    the Pearson correlation with the targets per output, averaged over the outputs (an
    output whose prediction does not vary counts 0).

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image (float16 is
        widened to float32; float64 is kept only under JAX's x64 mode). ``n >= 2``.
      labels: int ``[n]`` class indices in ``0..K-1``, or a 0/1 multi-label matrix ``[n, K]``;
        with ``regression=True`` finite real targets ``[n]`` or ``[n, C]``, every output
        varying over the probe.
      num_classes: ``K``. Default: inferred from concrete labels (``max + 1``, or the columns
        of a multi-label matrix); required when classification labels are traced (inside
        jit/vmap). It does not change the value; unused for regression.
      n_dims: exact PCA width first; None (default): the raw features.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.
      k: neighbours per prediction, ``1 <= k <= n - 1`` (default 1: the 1-NN baseline).
      regression: the labels are real-valued targets (default False).

    Returns:
      float32 scalar (float64 under x64 with float64 features), x100: accuracy in
      ``[0, 100]``, or for regression the mean Pearson correlation in ``[-100, 100]``;
      higher = predicted to transfer better. Raises ``ValueError`` on invalid input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.knn import knn
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 10)
      >>> features = rng.normal(size=(30, 8)) + 4.0 * np.eye(3, 8)[labels]
      >>> round(float(knn(features, labels)), 1)
      100.0
      >>> latent = rng.normal(size=40)
      >>> carries = np.c_[latent, rng.normal(size=(40, 3))]  # the latent is a feature
      >>> target = np.sin(latent) + 0.1 * rng.normal(size=40)
      >>> bool(knn(carries, target, k=3, regression=True) > 50.0)
      True

    References:
      Bolya, Mittapalli, Hoffman. "Scalable Diverse Model Selection for Accessible Transfer
      Learning". NeurIPS 2021 (Table 1 baselines). https://arxiv.org/abs/2111.06977
    """
    x, y, mask, num_classes, _ = prepare_features(
        features, labels, feature_mask, num_classes, n_dims, "knn", multilabel=True,
        regression=regression,
    )  # fmt: skip
    _check_k(k, np.shape(x)[0])  # shapes are static, traced or not
    if not is_traced(x, y, mask):
        mask = mask_or_ones(mask, x.shape[1])
    return _knn_jit(
        x, y, num_classes=num_classes, n_dims=n_dims, feature_mask=mask, k=int(k),
        regression=bool(regression),
    )  # fmt: skip


def _check_k(k: Any, n: int) -> None:
    """``k``: an int with ``1 <= k <= n - 1``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive int (neighbours per prediction), got {k!r}")
    if k > n - 1:
        raise ValueError(f"k: {k} neighbours but only {n - 1} other probe images; lower k")
