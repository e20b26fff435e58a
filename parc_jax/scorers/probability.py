"""Probability-based scores on source-class probabilities: LEEP and NCE.

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

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from parc_jax import numerics
from parc_jax.validation import check_labels, check_mask, check_probs, is_traced

__all__ = ["leep", "leep_core", "nce", "nce_core"]


def leep_core(
    probs: jax.Array,
    labels: jax.Array,
    prob_mask: jax.Array | None = None,
    *,
    num_classes: int,
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
    prob_mask: jax.Array | None = None,
    *,
    num_classes: int,
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


_leep_jit = jax.jit(leep_core, static_argnames=("num_classes",))
_nce_jit = jax.jit(nce_core, static_argnames=("num_classes",))


def _prepare(
    probs: Any, labels: Any, prob_mask: Any, num_classes: int | None, method: str
) -> tuple[Any, Any, Any, int]:
    """Validate concrete inputs (tracers pass through) and convert them for the jitted core."""
    if is_traced(probs, labels, prob_mask):
        if num_classes is None:
            raise ValueError(f"num_classes: {method} needs it as a static int inside jit/vmap")
        return probs, labels, prob_mask, num_classes
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
    p = jnp.asarray(p, dtype=jnp.result_type(p.dtype, jnp.float32))
    return p, jnp.asarray(y), prob_mask, k


def leep(
    probs: Any,
    labels: Any,
    *,
    num_classes: int | None = None,
    prob_mask: Any = None,
) -> jax.Array:
    """LEEP (Nguyen et al. 2020), nats per sample, <= 0; higher = better transfer.

    ``probs: [n, z]`` source-class probabilities (rows sum to 1), ``labels: int [n]``,
    ``num_classes``: K (default: ``max(labels) + 1``), ``prob_mask: bool [z]`` valid columns.
    Raises ``ValueError`` for malformed input, including multi-label targets.
    """
    p, y, mask, k = _prepare(probs, labels, prob_mask, num_classes, "leep")
    return _leep_jit(p, y, mask, num_classes=k)


def nce(
    probs: Any,
    labels: Any,
    *,
    num_classes: int | None = None,
    prob_mask: Any = None,
) -> jax.Array:
    """NCE = ``-H(Y | argmax source class)`` (Tran et al. 2019), nats, <= 0, no smoothing.

    ``probs: [n, z]`` source-class probabilities (rows sum to 1), ``labels: int [n]``,
    ``num_classes``: K (default: ``max(labels) + 1``), ``prob_mask: bool [z]`` valid columns.
    Raises ``ValueError`` for malformed input, including multi-label targets.
    """
    p, y, mask, k = _prepare(probs, labels, prob_mask, num_classes, "nce")
    return _nce_jit(p, y, mask, num_classes=k)
