"""LogME: Bayesian linear-model evidence of the labels given the features.

Paper: You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning", ICML 2021 (https://arxiv.org/abs/2102.11005). Definition as computed here:
``docs/metrics.md``.

For each one-vs-rest target column ``y_c = [labels == c]`` (``[n]``), the model
``y = F w + noise`` with prior ``w ~ N(0, I / alpha)`` and noise precision ``beta`` has the log
evidence ``log N(y | 0, I / beta + F F^T / alpha)``; alpha and beta are set by the
fixed-point iteration of You et al. (``alpha = beta = 1`` at start; at most 11 updates of
``gamma = sum_j g_j / (g_j + t)``, ``alpha = gamma / (m^T m + 1e-5)``,
``beta = (n - gamma) / (||F m - y||^2 + 1e-5)`` with ``t = alpha / beta`` and ``m`` the
posterior mean; a column stops once ``t`` changes by less than 1e-3 relative). The score is the
mean over the classes present in the probe of ``evidence / n`` (nats per sample). Classes
listed by ``num_classes`` but absent from the probe have an all-zero target column whose
"evidence" is meaningless, so they are left out (as the NumPy reference does).

Regression and multi-output targets (``regression=True``; the paper's formulation, and
``LogME(regression=True)`` of the authors' code): labels ``[n]`` or ``[n, C]`` of real
values, each output column ``y_c`` taken as it is (no centring or scaling, as the features)
in place of a class indicator; the score is the mean over the ``C`` outputs of
``evidence / n``. Scaling an output by ``s`` shifts its evidence by ``-log |s|`` for every
model alike, so rankings within a bank do not depend on the targets' units.

As in ``parc_jax.reference.logme`` the evidence is evaluated at the final ``(alpha, beta)``
with ``m`` recomputed there (the exact marginal likelihood); You et al.'s code reuses the
``m`` from before the last update, a difference within the stopping tolerance. Features are
used raw (no centring or standardisation), after PCA when ``n_dims`` is set.

Everything is expressed through the spectrum of ``F^T F`` (eigenvalues ``g_j``) and the
projections ``x_j = u_j^T y`` on the left singular vectors, taken from the smaller of the
``F x F`` matrix and the ``n x n`` Gram (static choice):

* ``gamma = sum_j g_j / (g_j + t)``, ``m^T m = sum_j g_j x_j^2 / (g_j + t)^2``,
  ``||F m - y||^2 = sum_j x_j^2 t^2 / (g_j + t)^2 + (||y||^2 - sum_j x_j^2)``;
* ``log det(alpha I_d + beta F^T F)`` over all ``d_valid`` eigenvalues, zeros included (the
  docs/metrics.md trap: an SVD lists only ``min(n, d)`` of them) equals
  ``d_valid log alpha + sum_j log1p(g_j / t)``, so the ``d/2 log alpha`` terms of the evidence
  cancel and ``evidence = n/2 log beta - 1/2 sum_j log1p(g_j / t) - beta/2 ||F m - y||^2
  - alpha/2 m^T m - n/2 log 2 pi``. Zero eigenvalues, however many, contribute exactly 0.

On the ``F x F`` side ``x_j = v_j^T F^T y / sqrt(g_j)``; eigenvalues at or below
``eps * g_max`` (``eps`` of the float dtype) are pure rounding noise there and are treated as
zero, their projection falling into the residual. The cutoff is deliberately that small:
real spectra of raw features span many decades (a large common mean dominates ``g_max``)
and eigenvalues far below ``g_max`` still matter when ``t`` is small; a matrix-rank style
``max(n, d) * eps`` cutoff changed one such score by 9%. On the Gram side ``x_j`` is read
directly from the orthonormal eigenvectors and the residual term is zero.

Accuracy in float32: eigenvalues from ``eigh`` carry an absolute error of about
``eps * g_max``, and the evidence is sensitive to it where ``t = alpha / beta`` approaches
that level. For probe features without a dominant common mean, and for ReLU features and
raw pixels, the score agrees with the float64 reference to ~1e-5 relative or better; for
features whose mean is ~20x the spread of most directions, ~1e-4 to 4e-4 (measured; it grows
with the offset: 7e-5 at 5x, in float64 the same code agrees to 1e-8). A thin SVD of
``F`` would be more accurate but is several times slower than ``eigh`` of the Gram.

The iteration runs all ``K`` columns at once in a fixed 11-step ``fori_loop``; a column that
has met the stopping rule is frozen (its alpha and beta no longer change), which reproduces
the per-column ``break`` exactly.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import class_sums, live_columns, prepare_features, spectrum

__all__ = ["LOGME_MAX_ITER", "LOGME_N_DIMS", "LOGME_TOL", "logme", "logme_core"]

#: Default PCA width of ``logme``: none, the raw features.
LOGME_N_DIMS = None
LOGME_MAX_ITER = 11
LOGME_TOL = 1e-3
LOGME_GUARD = 1e-5


def _fixed_point_stats(
    g: jax.Array, x2: jax.Array, res_x2: jax.Array, t: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(gamma, m^T m, ||F m - y||^2)`` per column at ``t = alpha / beta``.

    ``g: [E]`` spectrum, ``x2: [E, K]`` squared projections, ``res_x2: [K]`` the part of
    ``||y||^2`` outside the listed directions, ``t: [K]``.
    """
    gk = g[:, None]
    ratio = t[None, :] / (gk + t[None, :])  # t / (g + t), in (0, 1]
    gamma = jnp.sum(gk / (gk + t[None, :]), axis=0)
    m2 = jnp.sum(gk * x2 / (gk + t[None, :]) ** 2, axis=0)
    res2 = jnp.sum(x2 * ratio * ratio, axis=0) + res_x2
    return gamma, m2, res2


def logme_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = LOGME_N_DIMS,
    feature_mask: jax.Array | None = None,
    regression: bool = False,
) -> jax.Array:
    """LogME, nats per sample, for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]`` (or with the static ``regression=True`` real
    targets ``[n]`` / ``[n, C]``), ``feature_mask: bool [d]``.
    """
    x, valid = numerics.reduce_features(features, feature_mask, n_dims)
    n = x.shape[0]
    dtype = x.dtype
    if regression:
        y = labels.astype(dtype).reshape(n, -1)  # [n, C], the outputs as they are
        counts = jnp.sum(y * y, axis=0)  # ||y_c||^2, as n_c is for an indicator column
    else:
        y, counts = class_sums(labels, num_classes, dtype)  # [n, K], [K]
    feature_side, g, vecs = spectrum(x, live_columns(x, valid, centred=False))
    if feature_side:
        keep = g > jnp.finfo(dtype).eps * jnp.max(g)
        p = numerics.matmul(vecs.T, numerics.matmul(x.T, y))  # [F, K] = V^T F^T y
        g = jnp.where(keep, g, 0.0)
        x2 = jnp.where(keep[:, None], p * p / jnp.where(keep, g, 1.0)[:, None], 0.0)
        res_x2 = jnp.maximum(counts - jnp.sum(x2, axis=0), 0.0)  # ||y_c||^2 = n_c
    else:
        proj = numerics.matmul(vecs.T, y)  # [n, K]
        x2 = proj * proj
        res_x2 = jnp.zeros_like(counts)  # the n eigenvectors span R^n

    # t is floored at sqrt(smallest normal float) (so that (g + t)^2 stays normal): with
    # all-zero features gamma = alpha = 0 and 0 / 0 would follow; with the floor the iteration
    # gives the alpha -> 0 limit, the evidence of pure noise log N(y | 0, I / beta), which is
    # the right value there. Real features have t many orders of magnitude above it.
    tiny = jnp.sqrt(jnp.finfo(dtype).tiny)

    def step(_, state):
        alpha, beta, done = state
        t = jnp.maximum(alpha / beta, tiny)
        gamma, m2, res2 = _fixed_point_stats(g, x2, res_x2, t)
        new_alpha = gamma / (m2 + LOGME_GUARD)
        new_beta = (n - gamma) / (res2 + LOGME_GUARD)
        converged = jnp.abs(new_alpha / new_beta - t) / t < LOGME_TOL
        alpha = jnp.where(done, alpha, new_alpha)
        beta = jnp.where(done, beta, new_beta)
        return alpha, beta, jnp.logical_or(done, converged)

    ones = jnp.ones_like(counts)
    alpha, beta, _ = jax.lax.fori_loop(
        0, LOGME_MAX_ITER, step, (ones, ones, jnp.zeros(counts.shape, bool))
    )
    t = jnp.maximum(alpha / beta, tiny)
    _, m2, res2 = _fixed_point_stats(g, x2, res_x2, t)
    # log det(alpha I + beta F^T F) - d_valid log alpha, over the padded spectrum
    log_det = jnp.sum(jnp.log1p(g[:, None] / t[None, :]), axis=0)
    evidence = (
        0.5 * n * jnp.log(beta)
        - 0.5 * log_det
        - 0.5 * beta * res2
        - 0.5 * alpha * m2
        - 0.5 * n * math.log(2.0 * math.pi)
    ) / n
    if regression:
        return jnp.mean(evidence)  # every output counts (validation refuses constant ones)
    present = counts > 0
    return jnp.sum(jnp.where(present, evidence, 0.0)) / jnp.sum(present)


_logme_jit = numerics.jit_per_pca_mode(
    logme_core, static_argnames=("num_classes", "n_dims", "regression")
)


def logme(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = LOGME_N_DIMS,
    feature_mask: ArrayLike | None = None,
    regression: bool = False,
) -> jax.Array:
    """LogME: mean one-vs-rest log marginal evidence of a Bayesian linear model, per sample.

    For each class present, the evidence of its 0/1 indicator column under
    ``y = F w + noise`` with the prior and noise precisions set by You et al.'s fixed-point
    iteration; the score is the mean over those classes of ``evidence / n``. Features are
    used raw, after PCA when ``n_dims`` is set (docs/metrics.md). With ``regression=True``
    (the LogME paper's regression formulation) each output column of real-valued targets
    takes the place of a class indicator, as given (not centred or scaled), and the score is
    the mean over the outputs of ``evidence / n``.

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image (float16 is
        widened to float32; float64 is kept only under JAX's x64 mode).
      labels: int ``[n]`` class indices in ``0..K-1`` (single-label only); with
        ``regression=True`` finite real targets ``[n]`` or ``[n, C]`` (C outputs, each
        varying over the probe).
      num_classes: ``K``. Default: ``max(labels) + 1`` from concrete labels; required when
        classification labels are traced (inside jit/vmap). Unused for regression.
      n_dims: PCA width; None (default): the raw features.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.
      regression: the labels are real-valued targets (default False).

    Returns:
      float32 scalar (float64 under x64 with float64 features), LogME in nats per probe
      image (either sign), higher = predicted to transfer better. Raises ``ValueError`` on
      invalid input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.logme import logme
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 20)
      >>> good = rng.normal(size=(60, 8)) + 3.0 * np.eye(3, 8)[labels]
      >>> noise = rng.normal(size=(60, 8))
      >>> bool(logme(good, labels) > logme(noise, labels))
      True
      >>> latent = rng.normal(size=60)
      >>> targets = np.c_[2.0 * latent, latent**2] + 0.1 * rng.normal(size=(60, 2))
      >>> carries = np.c_[latent, latent**2, rng.normal(size=(60, 6))]
      >>> bool(logme(carries, targets, regression=True) > logme(noise, targets, regression=True))
      True

    References:
      You, Liu, Wang, Long. "LogME: Practical Assessment of Pre-trained Models for Transfer
      Learning". ICML 2021. https://arxiv.org/abs/2102.11005
    """
    x, y, mask, k, _ = prepare_features(
        features, labels, feature_mask, num_classes, n_dims, "logme", regression=regression
    )
    return _logme_jit(
        x, y, num_classes=k, n_dims=n_dims, feature_mask=mask, regression=bool(regression)
    )
