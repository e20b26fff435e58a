"""The depth heuristic (PARC paper Eq. 4) and the depth prior "+l" (PARC paper Eq. 6).

Paper: Bolya, Mittapalli, Hoffman, "Scalable Diverse Model Selection for Accessible Transfer
Learning", NeurIPS 2021 (https://arxiv.org/abs/2111.06977). Definitions as computed here:
``docs/metrics.md``.

``heuristic = depth + ln(source_images + target_images)``: bigger, deeper source models trained
on more data transfer better. The authors' code used ``depth + ln|D_s| - ln|D_t|``, which ranks
the source models of one target the same way (docs/metrics.md).

``depth_prior`` adds that prior to any method: within one target, z-score the method's scores
over the models (mean and sample std) and add ``depth / l_max``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from parc_jax import defaults, numerics
from parc_jax.scorers._common import float_dtype
from parc_jax.validation import check_positive_scalar, is_traced

__all__ = ["check_l_max", "depth_prior", "depth_prior_core", "heuristic", "heuristic_core"]


def heuristic_core(
    depth: jax.Array, source_images: jax.Array, target_images: jax.Array
) -> jax.Array:
    """``depth + ln(source_images + target_images)`` for scalars (pure; jit/vmap-able)."""
    depth, source, target = (jnp.asarray(v) for v in (depth, source_images, target_images))
    dtype = jnp.promote_types(jnp.promote_types(depth.dtype, source.dtype), target.dtype)
    dtype = jnp.promote_types(dtype, jnp.float32)  # integer sizes and depths -> float
    return depth.astype(dtype) + jnp.log(source.astype(dtype) + target.astype(dtype))


_heuristic_jit = numerics.jit_per_pca_mode(heuristic_core)


def heuristic(depth: ArrayLike, source_images: ArrayLike, target_images: ArrayLike) -> jax.Array:
    """The depth heuristic: ``depth + ln(source_images + target_images)`` (PARC paper Eq. 4).

    Deeper source models trained on more data are predicted to transfer better. No features
    or labels are read.

    Args:
      depth: positive scalar, the source model's layer count.
      source_images: positive scalar, the size of the source model's training set.
      target_images: positive scalar, the size of the target's training set.

    Returns:
      float32 scalar (float64 under x64 with float64 inputs), the heuristic (layers plus
      nats), higher = predicted to transfer better. Raises ``ValueError`` on invalid input.

    Example:
      >>> from parc_jax.scorers.heuristic import heuristic
      >>> round(float(heuristic(50, 1_281_167, 5_000)), 2)
      64.07

    References:
      Bolya, Mittapalli, Hoffman. "Scalable Diverse Model Selection for Accessible Transfer
      Learning". NeurIPS 2021. https://arxiv.org/abs/2111.06977
    """
    if not is_traced(depth, source_images, target_images):
        args = []
        for value, name in (
            (depth, "depth"),
            (source_images, "source_images"),
            (target_images, "target_images"),
        ):
            if np.ndim(value) != 0 or np.asarray(value).dtype == np.bool_:
                raise ValueError(f"{name}: expected a single positive number, got {value!r}")
            check_positive_scalar(value, name)
            arr = np.asarray(value)
            args.append(jnp.asarray(arr.astype(float_dtype(arr.dtype))))
        depth, source_images, target_images = args
    return _heuristic_jit(depth, source_images, target_images)


def depth_prior_core(
    scores: jax.Array, depths: jax.Array, *, l_max: float = defaults.L_MAX
) -> jax.Array:
    """``z(scores) + depths / l_max`` over the models of one target (pure; jit-able).

    ``scores, depths: [m]`` with ``m >= 2``. The z-score uses the mean and the sample std
    (``ddof=1``); when every score is equal the z-scores carry no information and are 0
    (instead of 0/0), as in the reference.
    """
    s = jnp.asarray(scores)
    s = s.astype(jnp.promote_types(s.dtype, jnp.float32))
    centred = s - jnp.mean(s)
    std = jnp.sqrt(jnp.sum(centred * centred) / (s.shape[0] - 1))
    # The mean of equal floats need not equal them exactly, and 0/0-sized rounding would then
    # become +-1 z-scores: test the scores themselves for equality.
    constant = jnp.max(s) == jnp.min(s)
    z = jnp.where(constant, 0.0, centred / jnp.where(constant, 1.0, std))
    return z + jnp.asarray(depths).astype(s.dtype) / l_max


_depth_prior_jit = numerics.jit_per_pca_mode(depth_prior_core)


def check_l_max(l_max: Any) -> float:
    """The depth prior's ``l_max`` as a float: a finite positive number, else ValueError."""
    try:
        ok = not isinstance(l_max, bool) and bool(np.isfinite(l_max)) and l_max > 0
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"l_max: expected a finite positive number, got {l_max!r}")
    return float(l_max)


def depth_prior(
    scores: ArrayLike, depths: ArrayLike, *, l_max: float = defaults.L_MAX
) -> jax.Array:
    """The depth prior "+l" within one target: z-scored scores plus ``depth / l_max``.

    Each model's score becomes ``(score - mean) / std(ddof=1) + depth / l_max`` (PARC paper
    Eq. 6); when every score is equal the z-scores are 0. A bank without depths cannot take
    it.

    Args:
      scores: float ``[m]``, one method's scores of ``m >= 2`` models on one target (finite).
      depths: float or int ``[m]``, the models' layer counts (finite).
      l_max: the depth normaliser, a finite positive float; 50 as in the paper (shallow zoos
        weaken the prior).

    Returns:
      float32 ``[m]`` (float64 under x64 with float64 scores), the combined scores (z-score
      units), higher = predicted to transfer better. Raises ``ValueError`` on invalid input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.heuristic import depth_prior
      >>> out = depth_prior(np.array([1.0, 2.0, 3.0]), np.array([0, 50, 50]))
      >>> np.round(np.asarray(out), 2).tolist()
      [-1.0, 1.0, 2.0]

    References:
      Bolya, Mittapalli, Hoffman. "Scalable Diverse Model Selection for Accessible Transfer
      Learning". NeurIPS 2021. https://arxiv.org/abs/2111.06977
    """
    if not is_traced(scores, depths):
        s = np.asarray(scores)
        dep = np.asarray(depths)
        if s.ndim != 1 or s.shape[0] < 2 or not np.issubdtype(s.dtype, np.number):
            raise ValueError(
                f"scores: expected a 1-D numeric array over >= 2 models, got {s.dtype} {s.shape}"
            )
        if dep.shape != s.shape or not np.issubdtype(dep.dtype, np.number):
            raise ValueError(
                f"depths: expected one number per model, shape {s.shape}, got {dep.dtype} "
                f"{dep.shape}"
            )
        if not np.all(np.isfinite(s)):
            raise ValueError("scores: contain NaN or inf; drop the models that failed to score")
        if not np.all(np.isfinite(dep)):
            raise ValueError(
                "depths: contain NaN or inf; a model without a depth cannot take the depth prior"
            )
        check_l_max(l_max)
        dtype = float_dtype(s.dtype)
        scores, depths = jnp.asarray(s.astype(dtype)), jnp.asarray(dep.astype(dtype))
    return _depth_prior_jit(scores, depths, l_max=l_max)
