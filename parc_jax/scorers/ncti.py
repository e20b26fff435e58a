"""NCTI: neural-collapse transferability index, its three per-model parts.

Paper: Wang, Zhao, Li, Wang, Lin, "How Far Pre-trained Models Are from Neural Collapse on the
Target Dataset Informs their Transferability", ICCV 2023
(https://openaccess.thecvf.com/content/ICCV2023/html/Wang_How_Far_Pre-trained_Models_Are_from_Neural_Collapse_on_the_ICCV_2023_paper.html);
released code BUserName/NCTI ``metrics.py`` and ``evaluate_metric_group1_cpu.py``. Definition
as computed here: ``docs/metrics.md``.

On the features PCA-reduced to ``n_dims`` (default 64, as released), a linear discriminant with
shrinkage ``s = max(exp(-sum of the 32 largest PCA variances), 1e-10)`` (variances with
``1 / (n - 1)``, scikit-learn's ``explained_variance_``) is fitted (scikit-learn's eigen
solver: ``S_w`` and ``S_t`` both shrunk, ``S_b = S_t - S_w``, generalised eigenvectors ``W``
with ``W^T S_w W = I``, the top ``C - 1`` kept). Parts, each higher = better:

* ``ncti_seli``: nuclear norm of the centred projections ``(X - mean) W`` (within-class
  variability collapse, the paper's S_seli);
* ``ncti_ncc``: mean true-class posterior of the discriminant (nearest class centre, S_ncc);
* ``ncti_vc``: ``-log sum_c ||P_c||_*``, minus the log of the summed nuclear norms of each
  class's rows of the posterior matrix (the released code returns the positive log and
  subtracts its normalised value; the sign is flipped here so that every column is
  higher = better).

The combined score ``ncti`` is computed over a set of models, never per model: see
:func:`ncti_combine` (the published min-max normalisation over the models scored together).
The released code switches to scikit-learn's SVD solver when ``s`` hits its floor; the eigen
solver is kept throughout here (the SVD solver's unbiased within-class scaling would change
``ncti_seli`` by ``sqrt((n - C) / n)`` at one point of an otherwise continuous score).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import (
    class_scatter,
    class_sums,
    lda_log_probs,
    prepare_features,
    shrunk_eigh,
    true_class_mean,
)

__all__ = [
    "NCTI_N_DIMS",
    "NCTI_PARTS",
    "ncti_combine",
    "ncti_ncc",
    "ncti_ncc_core",
    "ncti_seli",
    "ncti_seli_core",
    "ncti_vc",
    "ncti_vc_core",
]

#: Default PCA width of the NCTI parts (the released code's 64 components).
NCTI_N_DIMS = 64
#: How many leading PCA variances set the shrinkage (the released code's 32).
NCTI_SHRINK_COMPONENTS = 32
#: The per-model parts whose bank-level combination is ``ncti``.
NCTI_PARTS = ("ncti_seli", "ncti_ncc", "ncti_vc")


def _ncti_parts(features, labels, num_classes, n_dims, feature_mask):
    x, valid = numerics.reduce_features(features, feature_mask, n_dims)
    n, f = x.shape
    dtype = x.dtype
    onehot, counts = class_sums(labels, num_classes, dtype)
    xc = x - jnp.mean(x, axis=0)
    total = numerics.matmul(xc.T, xc)
    variances = jnp.linalg.eigvalsh(total / (n - 1.0))[::-1]
    s = jnp.maximum(jnp.exp(-jnp.sum(variances[:NCTI_SHRINK_COMPONENTS])), 1e-10)
    means, sw = class_scatter(x, onehot, counts)
    eig = shrunk_eigh(numerics.sequenced(sw, variances), valid)
    g, vecs, mu_w = eig
    d_valid = jnp.sum(valid.astype(dtype))
    st = total / n
    both = valid[:, None] & valid[None, :]
    eye = jnp.eye(f, dtype=dtype)
    sb = jnp.where(
        both,
        (1.0 - s) * (st - sw) + s * (jnp.trace(st) / d_valid - mu_w) * eye,
        0.0,
    )
    whiten = vecs / jnp.sqrt((1.0 - s) * g + s * mu_w)  # [F, F], whiten^T S_w,s whiten = I
    ev, u = jnp.linalg.eigh(numerics.matmul(whiten.T, numerics.matmul(sb, whiten)))
    m = min(num_classes - 1, f)
    w = numerics.matmul(whiten, u[:, ::-1][:, :m])  # top m generalised eigenvectors
    keep = jnp.arange(m) < jnp.sum(counts > 0) - 1
    proj = jnp.where(keep, numerics.matmul(xc, w), 0.0)
    sv2 = jnp.linalg.eigvalsh(numerics.matmul(proj.T, proj))
    seli = jnp.sum(jnp.sqrt(jnp.maximum(sv2, 0.0)))
    log_p = lda_log_probs(x, means, eig, s, counts)
    ncc = true_class_mean(log_p, onehot)
    nuc = _class_nuclear_norms(jnp.exp(log_p), onehot, counts)
    return seli, ncc, -jnp.log(nuc)


def _class_nuclear_norms(p: jax.Array, onehot: jax.Array, counts: jax.Array) -> jax.Array:
    """``sum_c ||P_c||_*`` for ``p: [n, K]`` (rows of the probe images), ``P_c`` the rows of
    class ``c`` (``onehot: [n, K]``, ``counts: [K]``).

    Each ``||P_c||_*`` is the sum of the square roots of the eigenvalues of ``P_c^T P_c``
    (``K x K``) or, equally, of ``P_c P_c^T`` (``n_c x n_c``). Which side is computed is chosen
    from the static shapes, by cost: ``K`` eigen-decompositions of ``K x K`` (``~K^4``), or one
    of the ``n x n`` Gram ``P P^T`` restricted to same-class pairs (``~n^3``), whose eigenvalues
    are those of every ``P_c P_c^T`` together (it is block-diagonal up to a permutation of the
    rows). With many classes and few images per class (``K = 100``, ``n = 200``) the Gram side
    is ~10x cheaper. ``P_c`` has rank at most ``min(n_c, classes present)`` (the columns of
    absent classes are 0), so the smallest eigenvalues beyond that bound are zero by
    construction and are set so, rather than left at float32 rounding noise, whose square roots
    (``~sqrt(eps)``) would otherwise add up over many eigenvalues.

    Each matrix is scaled by its trace and entries below ``_FLUSH`` of it are set to 0 before
    ``eigh``: confident posteriors put entries at the edge of float32's normal range
    (``~1e-38``) next to entries ``~n_c``, and LAPACK's float32 ``syevd`` returned NaN for
    every eigenvalue of such a matrix (a model of the shipped example bank). The change to
    any eigenvalue is at most ``K * _FLUSH`` of the trace, far below float32 rounding.
    """
    n, k = p.shape
    rank = jnp.minimum(counts, jnp.sum(counts > 0))  # [K] rank bound of each P_c
    if n**3 <= k**4:
        same = numerics.matmul(onehot, onehot.T)  # [n, n], 1 for pairs of one class
        ev = _scaled_eigvalsh(numerics.matmul(p, p.T) * same)  # [n] ascending
        zero = jnp.arange(n) < n - jnp.sum(rank)
    else:
        per_class = jnp.einsum("nc,ni,nj->cij", onehot, p, p, precision=jax.lax.Precision.HIGHEST)
        ev = _scaled_eigvalsh(per_class)  # [K, K] ascending per class
        zero = jnp.arange(k)[None, :] < (k - rank)[:, None]
    return jnp.sum(jnp.sqrt(jnp.where(zero, 0.0, jnp.maximum(ev, 0.0))))


#: Entries of a Gram matrix below this fraction of its trace are set to 0 before ``eigh``.
_FLUSH = 1e-15


def _scaled_eigvalsh(a: jax.Array) -> jax.Array:
    """Eigenvalues (ascending) of PSD ``a: [..., m, m]``, computed on ``a / trace`` with the
    entries below ``_FLUSH`` set to 0 (see :func:`_class_nuclear_norms`)."""
    trace = jnp.trace(a, axis1=-2, axis2=-1)[..., None, None]
    scale = jnp.where(trace > 0, trace, 1.0)
    a = a / scale
    return jnp.linalg.eigvalsh(jnp.where(jnp.abs(a) < _FLUSH, 0.0, a)) * scale[..., 0]


def ncti_seli_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = NCTI_N_DIMS,
    feature_mask: jax.Array | None = None,
) -> jax.Array:
    """NCTI's S_seli for one model (pure; jit/vmap-able, no checks)."""
    return _ncti_parts(features, labels, num_classes, n_dims, feature_mask)[0]


def ncti_ncc_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = NCTI_N_DIMS,
    feature_mask: jax.Array | None = None,
) -> jax.Array:
    """NCTI's S_ncc for one model (pure; jit/vmap-able, no checks)."""
    return _ncti_parts(features, labels, num_classes, n_dims, feature_mask)[1]


def ncti_vc_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = NCTI_N_DIMS,
    feature_mask: jax.Array | None = None,
) -> jax.Array:
    """Minus NCTI's S_vc for one model (pure; jit/vmap-able, no checks)."""
    return _ncti_parts(features, labels, num_classes, n_dims, feature_mask)[2]


_STATIC = ("num_classes", "n_dims")
_JITS = {
    "ncti_seli": numerics.jit_per_pca_mode(ncti_seli_core, static_argnames=_STATIC),
    "ncti_ncc": numerics.jit_per_pca_mode(ncti_ncc_core, static_argnames=_STATIC),
    "ncti_vc": numerics.jit_per_pca_mode(ncti_vc_core, static_argnames=_STATIC),
}


def _public(name, features, labels, num_classes, n_dims, feature_mask):
    x, y, mask, k, _ = prepare_features(features, labels, feature_mask, num_classes, n_dims, name)
    return _JITS[name](x, y, num_classes=k, n_dims=n_dims, feature_mask=mask)


def ncti_seli(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = NCTI_N_DIMS,
    feature_mask: ArrayLike | None = None,
) -> jax.Array:
    """NCTI's S_seli: nuclear norm of the centred discriminant projections.

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image.
      labels: int ``[n]`` class indices in ``0..K-1`` (single-label only).
      num_classes: ``K``. Default: ``max(labels) + 1``; required when labels are traced.
      n_dims: PCA width (default ``NCTI_N_DIMS``); None: the raw features.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.

    Returns:
      float32 scalar ``>= 0``, higher = predicted to transfer better.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.ncti import ncti_seli
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 20)
      >>> good = rng.normal(size=(60, 8)) + 3.0 * np.eye(3, 8)[labels]
      >>> bool(ncti_seli(good, labels) > ncti_seli(rng.normal(size=(60, 8)), labels))
      True

    References:
      Wang, Zhao, Li, Wang, Lin. "How Far Pre-trained Models Are from Neural Collapse on the
      Target Dataset Informs their Transferability". ICCV 2023.
      https://openaccess.thecvf.com/content/ICCV2023/html/Wang_How_Far_Pre-trained_Models_Are_from_Neural_Collapse_on_the_ICCV_2023_paper.html
    """
    return _public("ncti_seli", features, labels, num_classes, n_dims, feature_mask)


def ncti_ncc(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = NCTI_N_DIMS,
    feature_mask: ArrayLike | None = None,
) -> jax.Array:
    """NCTI's S_ncc: mean true-class posterior of the shrunk discriminant.

    Args: as :func:`ncti_seli`.

    Returns:
      float32 scalar in ``(0, 1]``, higher = predicted to transfer better.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.ncti import ncti_ncc
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 20)
      >>> good = rng.normal(size=(60, 8)) + 3.0 * np.eye(3, 8)[labels]
      >>> bool(ncti_ncc(good, labels) > ncti_ncc(rng.normal(size=(60, 8)), labels))
      True

    References: as :func:`ncti_seli`.
    """
    return _public("ncti_ncc", features, labels, num_classes, n_dims, feature_mask)


def ncti_vc(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = NCTI_N_DIMS,
    feature_mask: ArrayLike | None = None,
) -> jax.Array:
    """Minus NCTI's S_vc: ``-log`` of the summed per-class nuclear norms of the posteriors.

    Args: as :func:`ncti_seli`.

    Returns:
      float32 scalar, higher = predicted to transfer better.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.ncti import ncti_vc
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 20)
      >>> good = rng.normal(size=(60, 8)) + 3.0 * np.eye(3, 8)[labels]
      >>> bool(np.isfinite(ncti_vc(good, labels)))
      True

    References: as :func:`ncti_seli`.
    """
    return _public("ncti_vc", features, labels, num_classes, n_dims, feature_mask)


def ncti_combine(seli: Sequence[float], ncc: Sequence[float], vc: Sequence[float]) -> np.ndarray:
    """The published NCTI of each model of a set: ``mm(seli) + mm(ncc) - mm(S_vc)``.

    ``mm`` is the min-max normalisation over the models given, ``(v - min) / (max - min)``;
    with ``vc = -S_vc`` this is ``mm(seli) + mm(ncc) + mm(vc) - 1``. A part equal for every
    model (one model alone) has no range and contributes 0 (the released code divides 0 by
    0). NaN parts (a model that could not be scored) stay NaN and are left out of the range.
    The score of a model depends on which other models are in the set: the one score here
    that does (docs/metrics.md).

    Example:
      >>> ncti_combine([1.0, 3.0], [0.5, 0.9], [-2.0, -1.0]).tolist()
      [-1.0, 2.0]
    """
    out = np.zeros(len(seli))
    for part, offset in ((seli, 0.0), (ncc, 0.0), (vc, 1.0)):
        v = np.asarray(part, dtype=np.float64)
        if not np.any(np.isfinite(v)):
            return np.full(v.shape, np.nan)
        lo, hi = np.nanmin(v), np.nanmax(v)
        out += (v - lo) / (hi - lo) - offset if hi > lo else np.where(np.isnan(v), np.nan, 0.0)
    return out
