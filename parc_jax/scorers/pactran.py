"""PACTran on source-class probabilities: the Dirichlet and Gamma variants.

Paper: Ding, Chen, Levinboim, Goodman, Soricut, "PACTran: PAC-Bayesian Metrics for Estimating
the Transferability of Pretrained Models to Classification Tasks", ECCV 2022
(https://arxiv.org/abs/2203.05126); released code google-research/pactran_metrics
``compute_metrics.py`` (``calculate_pac_dir``, ``calculate_pac_gamma``). Definitions as computed
here: ``docs/metrics.md``. The Gaussian variant on features is
``parc_jax.scorers.logistic.pactran_gauss`` (an L2 logistic fit).

Both read ``probs: [n, z]`` (rows sum to 1) and the labels; prior ``a0_y = alpha n_y / n +
1e-10`` (``alpha = PACTRAN_ALPHA``), ``PACTRAN_STEPS`` (10) fixed mean-field steps from
``q = probs``, as released. The released functions return a bound (lower = better) divided by
``n K``; the scores here are its negative (higher = better), divided by ``n`` times the number
of classes present. Padded probability columns (``prob_mask`` False) carry no mass; classes
listed but absent add nothing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import class_sums, mask_or_ones, prepare_probs

__all__ = ["PACTRAN_ALPHA", "PACTRAN_STEPS", "pactran_dir", "pactran_dir_core",
           "pactran_gamma", "pactran_gamma_core"]  # fmt: skip

PACTRAN_ALPHA = 1.0
PACTRAN_STEPS = 10
_EPS = 1e-10


def _setup(probs, labels, num_classes, prob_mask):
    valid = mask_or_ones(prob_mask, probs.shape[1])
    onehot, counts = class_sums(labels, num_classes, probs.dtype)
    present = counts > 0
    n = probs.shape[0]
    a0 = jnp.where(present, PACTRAN_ALPHA * counts / n + _EPS, 0.0)  # [K]
    log_s = jnp.where(valid, jnp.log(probs + _EPS), -jnp.inf)
    return valid, onehot, present, a0, log_s


def _posterior(logits):
    log_q = jax.nn.log_softmax(logits, axis=1)
    return jnp.exp(log_q), log_q


def _kl_rows(q, log_q, log_s, valid):
    return jnp.sum(jnp.where(valid & (q > 0), q * (log_q - log_s), 0.0))


def _mean_field(probs, log_s, valid, onehot, a0, digamma_total: bool):
    """``PACTRAN_STEPS`` mean-field steps; returns ``(q, log q, aw)`` with ``aw`` from the ``q``
    before the last step, as in the released loops."""

    def step(_, carry):
        q, _, _ = carry
        aw = a0[:, None] + numerics.matmul(onehot.T, q)  # [K, z]
        logits = log_s + numerics.matmul(onehot, digamma(jnp.where(aw > 0, aw, 1.0)))
        if digamma_total:
            logits = logits - digamma(jnp.sum(aw, axis=0))
        log_q = jax.nn.log_softmax(logits, axis=1)
        return jnp.exp(log_q), log_q, aw

    q0 = jnp.where(valid, probs, 0.0)
    aw0 = jnp.zeros((a0.shape[0], probs.shape[1]), probs.dtype)
    return jax.lax.fori_loop(0, PACTRAN_STEPS, step, (q0, jnp.zeros_like(q0), aw0))


def _kl(q, log_q, log_s, valid):
    """``sum_z q (log q - log s)`` per row ``[n]`` over the valid columns."""
    return jnp.sum(jnp.where(valid & (q > 0), q * (log_q - log_s), 0.0), axis=1)


def pactran_dir_core(
    probs: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    prob_mask: jax.Array | None = None,
) -> jax.Array:
    """PACTran-Dirichlet for one model (pure; jit/vmap-able, no checks).

    ``probs: [n, z]``, ``labels: int [n]``, ``prob_mask: bool [z]``.
    """
    valid, onehot, present, a0, log_s = _setup(probs, labels, num_classes, prob_mask)
    q, log_q, aw = _mean_field(probs, log_s, valid, onehot, a0, True)
    log_gamma_a0 = jnp.sum(jnp.where(present, gammaln(jnp.where(present, a0, 1.0)), 0.0))
    log_c0 = gammaln(jnp.sum(a0)) - log_gamma_a0
    log_gamma_aw = jnp.where(present[:, None], gammaln(jnp.where(present[:, None], aw, 1.0)), 0.0)
    log_c = gammaln(jnp.sum(aw, axis=0)) - jnp.sum(log_gamma_aw, axis=0)  # [z]
    elbo = jnp.sum(jnp.where(valid, log_c0 - log_c, 0.0)) - jnp.sum(_kl(q, log_q, log_s, valid))
    return elbo / (probs.shape[0] * jnp.sum(present))


def pactran_gamma_core(
    probs: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    prob_mask: jax.Array | None = None,
) -> jax.Array:
    """PACTran-Gamma for one model (pure; jit/vmap-able, no checks).

    ``probs: [n, z]``, ``labels: int [n]``, ``prob_mask: bool [z]``.
    """
    valid, onehot, present, a0, log_s = _setup(probs, labels, num_classes, prob_mask)
    q, log_q, aw = _mean_field(probs, log_s, valid, onehot, a0, False)
    s = jnp.where(valid, probs, 0.0)
    lw = numerics.matmul(s, jnp.sum(aw, axis=0))  # [n], rate 1
    pres = present[:, None] & valid[None, :]
    prior = jnp.sum(
        jnp.where(
            pres,
            gammaln(jnp.where(pres, a0[:, None], 1.0)) - gammaln(jnp.where(pres, aw, 1.0)),
            0.0,
        )
    )
    bound = prior + jnp.sum(_kl(q, log_q, log_s, valid) + jnp.log(lw) - 1.0)
    return -(bound / (probs.shape[0] * jnp.sum(present)) + 1.0)


_dir_jit = numerics.jit_per_pca_mode(pactran_dir_core, static_argnames=("num_classes",))
_gamma_jit = numerics.jit_per_pca_mode(pactran_gamma_core, static_argnames=("num_classes",))


def pactran_dir(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    prob_mask: ArrayLike | None = None,
) -> jax.Array:
    """PACTran-Dirichlet: minus the mean-field PAC-Bayes bound of a Dirichlet label model.

    Args:
      probs: float ``[n, z]``, the source model's softmax over its ``z`` classes on the probe
        images (rows sum to 1).
      labels: int ``[n]`` target class indices in ``0..K-1`` (single-label only).
      num_classes: ``K``. Default: ``max(labels) + 1``; required when labels are traced.
      prob_mask: bool ``[z]``, True for valid (unpadded) columns; padded columns must be 0.

    Returns:
      float32 scalar, nats per probe image and class, higher = predicted to transfer better.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.pactran import pactran_dir
      >>> labels = np.repeat(np.arange(3), 10)
      >>> sharp = np.eye(3)[labels] * 0.97 + 0.01
      >>> flat = np.full((30, 3), 1 / 3)
      >>> bool(pactran_dir(sharp, labels) > pactran_dir(flat, labels))
      True

    References:
      Ding, Chen, Levinboim, Goodman, Soricut. "PACTran: PAC-Bayesian Metrics for Estimating
      the Transferability of Pretrained Models to Classification Tasks". ECCV 2022.
      https://arxiv.org/abs/2203.05126
    """
    p, y, mask, k = prepare_probs(probs, labels, prob_mask, num_classes, "pactran_dir")
    return _dir_jit(p, y, num_classes=k, prob_mask=mask)


def pactran_gamma(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    prob_mask: ArrayLike | None = None,
) -> jax.Array:
    """PACTran-Gamma: minus the mean-field PAC-Bayes bound of a Gamma label model.

    Args: as :func:`pactran_dir`.

    Returns:
      float32 scalar, higher = predicted to transfer better.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.pactran import pactran_gamma
      >>> labels = np.repeat(np.arange(3), 10)
      >>> sharp = np.eye(3)[labels] * 0.97 + 0.01
      >>> flat = np.full((30, 3), 1 / 3)
      >>> bool(pactran_gamma(sharp, labels) > pactran_gamma(flat, labels))
      True

    References: as :func:`pactran_dir`.
    """
    p, y, mask, k = prepare_probs(probs, labels, prob_mask, num_classes, "pactran_gamma")
    return _gamma_jit(p, y, num_classes=k, prob_mask=mask)
