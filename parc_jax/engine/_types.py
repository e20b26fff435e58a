"""The engine's records: a model as the engine sees it, what it has, the options of a pass, and
the width buckets that group models into compiled shapes."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from parc_jax import defaults
from parc_jax.bank import Target

DEFAULT_CHUNK_SIZE = defaults.CHUNK_SIZE
# Geometric (~1.5x) ladder of padded widths: padding wastes at most a third of the work, and a
# bank of mixed architectures compiles a handful of shapes.
_WIDTH_LADDER = (8, 16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


def bucket_width(d: int) -> int:
    """Padded width for a model with ``d`` columns: the next rung of a ~1.5x ladder."""
    for w in _WIDTH_LADDER:
        if d <= w:
            return w
    top = _WIDTH_LADDER[-1]
    return top * 2 ** math.ceil(math.log2(d / top))


# What every model of a bank shares (probe labels, the target's facts): the bank's own Target.
TargetInfo = Target


@dataclasses.dataclass
class ModelBatch:
    """Host-side record of one model as the engine needs it (a bank entry, narrowed)."""

    name: str
    features: np.ndarray
    architecture: str | None = None
    probs: np.ndarray | None = None
    depth: float | None = None
    source: str | None = None
    source_images: float | None = None
    oracle: float | None = None  # fine-tuned accuracy, when the bank records it (not scored)
    position: int = -1  # order in the stream (set by the engine)


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """Which optional fields one model has: all that method resolution needs (no arrays)."""

    name: str
    architecture: str | None
    probs: bool
    depth: bool
    source_images: bool

    @classmethod
    def of(cls, model: Any) -> ModelFacts:
        """From a :class:`ModelBatch` or a bank ``ModelEntry``."""
        return cls(
            name=model.name,
            architecture=model.architecture,
            probs=model.probs is not None,
            depth=model.depth is not None,
            source_images=model.source_images is not None,
        )


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """Parameters of one scoring pass (hashable: it keys the compiled-function cache)."""

    methods: tuple[str, ...]
    dims: tuple[tuple[str, int | None], ...]
    pca: str = "exact"
    chunk_size: int = DEFAULT_CHUNK_SIZE
    logistic_seed: int = 0
