"""Probability-based scores on source-class probabilities: LEEP and NCE.

Papers: LEEP, Nguyen, Hassner, Seeger, Archambeau, "LEEP: A New Measure to Evaluate
Transferability of Learned Representations", ICML 2020 (https://arxiv.org/abs/2002.12462);
NCE, Tran, Nguyen, Hassner, "Transferability and Hardness of Supervised Classification
Tasks", ICCV 2019 (https://arxiv.org/abs/1908.08142). Definitions as computed here:
``docs/metrics.md``.

Both read ``probs: [n, z]`` (a source model's softmax over its ``z`` classes on the probe
images, rows summing to 1) and the target labels ``[n]`` in ``0..K-1``; neither looks at
features. Padded probability columns (``prob_mask`` False) are zero and are ignored.

* ``leep`` (Nguyen et al. 2020): ``J = onehot(y)^T P / n``, ``P(y|z) = J / colsum(J)``,
  score ``mean_i log(sum_z P(y_i|z) P_iz)``, nats, <= 0. A source class that no probe image
  gives any probability has a zero column in ``J``; its conditional is defined as 0 (it
  multiplies only zero probabilities, so the value is unchanged), never 0/0.
* ``nce`` (Tran et al. 2019): hard source labels ``z_hat = argmax P`` (lowest index on ties),
  empirical joint of ``(y, z_hat)``, ``-H(Y|Z_hat) = sum p(y,z) log(p(y,z) / p(z))`` over the
  cells with ``p(y,z) > 0``, nats, <= 0. No epsilon smoothing of the joint or the marginal.

Single-label targets only: multi-label labels are refused with a ``ValueError``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import prepare_probs

__all__ = ["leep", "leep_core", "nce", "nce_core"]


def leep_core(
    probs: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    prob_mask: jax.Array | None = None,
) -> jax.Array:
    """LEEP for one model (pure; jit/vmap-able, no checks).

    ``probs: [n, z]``, ``labels: int [n]`` in ``0..num_classes-1``, ``prob_mask: bool [z]``.
    """
    p = probs * numerics.column_mask(probs, prob_mask)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=p.dtype)  # [n, K]
    joint = numerics.matmul(onehot.T, p)  # [K, z], n * J
    col = jnp.sum(joint, axis=0)  # n * P(z)
    cond = joint / jnp.where(col > 0, col, 1.0)  # P(y|z); a zero column stays 0
    eep = jnp.sum(cond[labels] * p, axis=1)  # [n], > 0 for every row that sums to 1
    return jnp.mean(jnp.log(eep))


def nce_core(
    probs: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    prob_mask: jax.Array | None = None,
) -> jax.Array:
    """NCE for one model (pure; jit/vmap-able, no checks).

    ``probs: [n, z]``, ``labels: int [n]`` in ``0..num_classes-1``, ``prob_mask: bool [z]``.
    Computed as ``(1/n) sum_i log(c(y_i, z_i) / c(z_i))`` from integer cell counts ``c``,
    which equals the sum over cells of ``p(y,z) log(p(y,z)/p(z))`` and never touches an
    empty cell.
    """
    n, z = probs.shape
    valid = jnp.ones(z, bool) if prob_mask is None else jnp.asarray(prob_mask).astype(bool)
    z_hat = jnp.argmax(jnp.where(valid[None, :], probs, -jnp.inf), axis=1)  # first max
    cell = labels.astype(jnp.int32) * z + z_hat.astype(jnp.int32)
    counts = jnp.zeros(num_classes * z, probs.dtype).at[cell].add(1.0)  # [K * z]
    per_source = jnp.sum(counts.reshape(num_classes, z), axis=0)  # [z]
    return jnp.sum(jnp.log(counts[cell] / per_source[z_hat])) / n


_leep_jit = numerics.jit_per_pca_mode(leep_core, static_argnames=("num_classes",))
_nce_jit = numerics.jit_per_pca_mode(nce_core, static_argnames=("num_classes",))


def leep(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    prob_mask: ArrayLike | None = None,
) -> jax.Array:
    """LEEP: mean log-likelihood of the labels under the source model's empirical predictor.

    With ``J = onehot(y)^T P / n`` and ``P(y|z) = J / colsum(J)``, the score is
    ``mean_i log(sum_z P(y_i|z) P_iz)`` (docs/metrics.md).

    Args:
      probs: float ``[n, z]``, the source model's softmax over its ``z`` classes on the probe
        images (rows sum to 1; float16 is widened to float32, float64 kept only under x64).
      labels: int ``[n]`` target class indices in ``0..K-1`` (single-label only).
      num_classes: ``K``. Default: ``max(labels) + 1`` from concrete labels; required when
        the labels are traced (inside jit/vmap).
      prob_mask: bool ``[z]``, True for valid (unpadded) columns; padded columns must be 0.

    Returns:
      float32 scalar (float64 under x64 with float64 probabilities), LEEP in nats per probe
      image, ``<= 0``, higher = predicted to transfer better. Raises ``ValueError`` on
      invalid input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.probability import leep
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 10)
      >>> logits = rng.normal(size=(30, 5)) + 3.0 * np.eye(3, 5)[labels]
      >>> probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
      >>> bool(np.log(1 / 3) < leep(probs, labels) <= 0)
      True

    References:
      Nguyen, Hassner, Seeger, Archambeau. "LEEP: A New Measure to Evaluate Transferability
      of Learned Representations". ICML 2020. https://arxiv.org/abs/2002.12462
    """
    p, y, mask, k = prepare_probs(probs, labels, prob_mask, num_classes, "leep")
    return _leep_jit(p, y, num_classes=k, prob_mask=mask)


def nce(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    prob_mask: ArrayLike | None = None,
) -> jax.Array:
    """NCE: minus the conditional entropy of the labels given the source model's argmax class.

    ``-H(Y | Z_hat) = sum p(y, z) log(p(y, z) / p(z))`` over the empirical joint of the target
    labels and ``z_hat = argmax P`` (lowest index on ties), without smoothing
    (docs/metrics.md).

    Args:
      probs: float ``[n, z]``, the source model's softmax over its ``z`` classes on the probe
        images (rows sum to 1; float16 is widened to float32, float64 kept only under x64).
      labels: int ``[n]`` target class indices in ``0..K-1`` (single-label only).
      num_classes: ``K``. Default: ``max(labels) + 1`` from concrete labels; required when
        the labels are traced (inside jit/vmap).
      prob_mask: bool ``[z]``, True for valid (unpadded) columns; padded columns must be 0.

    Returns:
      float32 scalar (float64 under x64 with float64 probabilities), NCE in nats, ``<= 0``,
      higher = predicted to transfer better. Raises ``ValueError`` on invalid input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.probability import nce
      >>> labels = np.repeat(np.arange(3), 10)
      >>> probs = np.eye(3)[labels]  # the source classes determine the target classes
      >>> round(float(nce(probs, labels)), 6)
      0.0

    References:
      Tran, Nguyen, Hassner. "Transferability and Hardness of Supervised Classification
      Tasks". ICCV 2019. https://arxiv.org/abs/1908.08142
    """
    p, y, mask, k = prepare_probs(probs, labels, prob_mask, num_classes, "nce")
    return _nce_jit(p, y, num_classes=k, prob_mask=mask)
