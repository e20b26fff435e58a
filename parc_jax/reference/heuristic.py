"""The float64 NumPy/SciPy reference of the depth/size heuristic and the depth prior.

Written from the equations in docs/metrics.md; see :mod:`parc_jax.reference`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from parc_jax.reference._common import _scalar

# The logistic train/test split is shared with the JAX side on purpose: it is not under test.


def heuristic(depth: Any, source_images: Any, target_images: Any) -> float:
    """PARC paper Eq. 4: ``depth + ln(source_images + target_images)``."""
    depth = _scalar(depth, "depth")
    source = _scalar(source_images, "source_images")
    target = _scalar(target_images, "target_images")
    return depth + math.log(source + target)


def depth_prior(scores: Any, depths: Any, *, l_max: float = 50.0) -> np.ndarray:
    """PARC paper Eq. 6 for one target: ``zscore(scores) + depths / l_max``, float64 ``[m]``.

    ``scores, depths: [m]`` over m >= 2 models; z-score with the mean and the sample std
    (ddof=1). Scores that are all equal carry no ranking; their z-scores are taken as 0.
    """
    s = np.asarray(scores, dtype=np.float64)
    dep = np.asarray(depths, dtype=np.float64)
    if s.ndim != 1 or s.size < 2:
        raise ValueError(f"scores: expected a 1-D array over >= 2 models, got shape {s.shape}")
    if dep.shape != s.shape:
        raise ValueError(f"depths: expected shape {s.shape} to match scores, got {dep.shape}")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(dep))):
        raise ValueError("scores: scores and depths must be finite")
    l_max = _scalar(l_max, "l_max")
    std = np.std(s, ddof=1)
    z = np.zeros_like(s) if std == 0 else (s - s.mean()) / std
    return z + dep / l_max
