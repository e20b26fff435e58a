"""NLEEP: LEEP on the posteriors of a Gaussian mixture fitted to the features.

Paper: Li, Jia, Zhu, Wang, Gong, Heo, Li, Wang, Liu, "Ranking Neural Checkpoints", CVPR 2021
(https://arxiv.org/abs/2011.11200); released code google-research stable_transfer
``transferability/nleep.py``. Definition as computed here: ``docs/metrics.md``.

1. PCA to ``n_dims`` components (default ``NLEEP_N_DIMS``; the released code keeps 80 % of the
   variance, a data-dependent width that a batched program cannot have).
2. A Gaussian mixture of ``NLEEP_COMPONENTS_PER_CLASS`` (5, as released) components per class
   present, diagonal covariances (variance floor ``NLEEP_REG`` times the mean column
   variance), fitted by ``NLEEP_EM_STEPS`` EM steps from a data-derived start: the samples of
   each class split into 5 equal groups by rank on the first principal component, the groups
   as initial responsibilities (a group left empty, in a class of fewer than 5 samples, is no
   component). The released code fits full covariances from a random k-means start until
   convergence (no seed: a different score each run).
3. LEEP (Nguyen et al. 2020) on the mixture posteriors: ``mean_i log sum_z P(y_i|z) P(z|x_i)``,
   nats, ``<= 0``.
Deterministic: no RNG.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import class_sums, prepare_features

__all__ = [
    "NLEEP_COMPONENTS_PER_CLASS",
    "NLEEP_EM_STEPS",
    "NLEEP_N_DIMS",
    "NLEEP_REG",
    "nleep",
    "nleep_core",
]

#: Default PCA width of ``nleep``.
NLEEP_N_DIMS = 32
NLEEP_COMPONENTS_PER_CLASS = 5
NLEEP_EM_STEPS = 20
#: Variance floor of every component, relative to the mean variance of the valid columns.
NLEEP_REG = 1e-3


def _initial_groups(x0: jax.Array, labels: jax.Array, onehot: jax.Array, m: int) -> jax.Array:
    """Component index ``y * m + g`` of each sample: ``g`` its rank group within its class by
    ``x0`` (ties by row index)."""
    n = x0.shape[0]
    idx = jnp.arange(n)
    same = labels[:, None] == labels[None, :]
    before = (x0[None, :] < x0[:, None]) | (
        (x0[None, :] == x0[:, None]) & (idx[None, :] < idx[:, None])
    )
    rank = jnp.sum(same & before, axis=1)
    size = jnp.sum(onehot, axis=0)[labels]
    group = jnp.floor(rank.astype(x0.dtype) * m / size).astype(jnp.int32)
    return labels.astype(jnp.int32) * m + group


def nleep_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = NLEEP_N_DIMS,
    feature_mask: jax.Array | None = None,
) -> jax.Array:
    """NLEEP for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]``, ``feature_mask: bool [d]``.
    """
    x, valid = numerics.reduce_features(features, feature_mask, n_dims)
    n, f = x.shape
    dtype = x.dtype
    m = NLEEP_COMPONENTS_PER_CLASS
    onehot, _ = class_sums(labels, num_classes, dtype)
    vmask = valid.astype(dtype)
    xc = x - jnp.mean(x, axis=0)
    reg = NLEEP_REG * jnp.sum(jnp.mean(xc * xc, axis=0) * vmask) / jnp.sum(vmask)
    resp = jax.nn.one_hot(_initial_groups(x[:, 0], labels, onehot, m), num_classes * m, dtype=dtype)
    alive = jnp.sum(resp, axis=0) > 0  # components with samples at the start

    def m_step(r):
        nk = jnp.sum(r, axis=0)
        safe = jnp.where(alive, nk, 1.0)
        means = numerics.matmul(r.T, x) / safe[:, None]
        var = numerics.matmul(r.T, x * x) / safe[:, None] - means * means
        var = jnp.maximum(var, 0.0) + reg
        log_w = jnp.where(alive, jnp.log(jnp.where(alive, nk, 1.0) / n), -jnp.inf)
        return means, var, log_w

    def e_step(params):
        means, var, log_w = params
        prec = vmask / var  # [M, F], padded columns left out
        quad = (
            numerics.matmul(x * x, prec.T)
            - 2.0 * numerics.matmul(x, (means * prec).T)
            + jnp.sum(means * means * prec, axis=1)
        )
        log_det = jnp.sum(jnp.log(var) * vmask, axis=1)
        log_pdf = -0.5 * (quad + log_det + jnp.sum(vmask) * math.log(2.0 * math.pi))
        return jax.nn.softmax(jnp.where(alive, log_pdf + log_w, -jnp.inf), axis=1)

    resp = jax.lax.fori_loop(0, NLEEP_EM_STEPS, lambda _, r: e_step(m_step(r)), resp)
    joint = numerics.matmul(onehot.T, resp)  # [K, M]
    col = jnp.sum(joint, axis=0)
    cond = joint / jnp.where(col > 0, col, 1.0)
    eep = jnp.sum(numerics.matmul(onehot, cond) * resp, axis=1)
    return jnp.mean(jnp.log(eep))


_nleep_jit = numerics.jit_per_pca_mode(nleep_core, static_argnames=("num_classes", "n_dims"))


def nleep(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = NLEEP_N_DIMS,
    feature_mask: ArrayLike | None = None,
) -> jax.Array:
    """NLEEP: LEEP on the posteriors of a class-initialised diagonal Gaussian mixture.

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image.
      labels: int ``[n]`` class indices in ``0..K-1`` (single-label only).
      num_classes: ``K``. Default: ``max(labels) + 1`` from concrete labels; required when
        the labels are traced (inside jit/vmap).
      n_dims: PCA width (default ``NLEEP_N_DIMS``); None: the raw features.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.

    Returns:
      float32 scalar (float64 under x64 with float64 features), nats per probe image,
      ``<= 0``, higher = predicted to transfer better. Raises ``ValueError`` on invalid input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.nleep import nleep
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 20)
      >>> good = rng.normal(size=(60, 8)) + 3.0 * np.eye(3, 8)[labels]
      >>> noise = rng.normal(size=(60, 8))
      >>> bool(nleep(good, labels) > nleep(noise, labels))
      True

    References:
      Li, Jia, Zhu, Wang, Gong, Heo, Li, Wang, Liu. "Ranking Neural Checkpoints". CVPR 2021.
      https://arxiv.org/abs/2011.11200
    """
    x, y, mask, k, _ = prepare_features(
        features, labels, feature_mask, num_classes, n_dims, "nleep"
    )
    return _nleep_jit(x, y, num_classes=k, n_dims=n_dims, feature_mask=mask)
