"""Probe sets and feature extraction into model banks (PARC paper Sec. 3.1).

A probe set is ``n = min(500, training images)`` images of the target's training split with at
least 2 per class; when the classes need more than ``n`` images at 2 each, ``n // 2`` classes
are sampled at random and relabelled ``0..k-1``. Each probe run has its own seed.

Extraction works for any Flax model: an ``apply_fn(variables, x) -> (features, logits)`` and its
variables give penultimate features and softmax source-class probabilities on the probe, which
:func:`probe_bank` writes into the bank format of :mod:`parc_jax.bank` with ``architecture``,
``depth``, ``source`` and ``source_images`` filled in.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from parc_jax.bank import Bank, bank_from_arrays
from parc_jax.groundtruth.data import seeded_rng
from parc_jax.groundtruth.train import extract

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Probe:
    """A probe set: ``indices [n]`` into the training split, ``labels [n]`` in
    ``0..num_classes-1`` (renumbered when classes were sampled), and ``classes [k]`` the
    original class of each probe label."""

    indices: np.ndarray
    labels: np.ndarray
    num_classes: int
    classes: np.ndarray


def sample_probe(
    labels: np.ndarray,
    *,
    num_classes: int | None = None,
    size: int = 500,
    min_per_class: int = 2,
    seed: int = 0,
) -> Probe:
    """Draw a probe set from training ``labels [N]`` (ints in ``0..num_classes-1``).

    n = min(size, N). Every class gives ``min_per_class`` images (all it has if fewer), the
    rest of the ``n`` are drawn uniformly from the remaining images, so class shares follow
    the data. If the classes need more than ``n`` images, ``n // min_per_class`` classes are
    chosen at random and the labels renumbered ``0..k-1`` in class order (``num_classes`` of
    the probe is then k). Indices are sorted.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected a non-empty int [N] array, got {labels.shape}")
    k_all = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.min() < 0 or labels.max() >= k_all:
        raise ValueError(f"labels must lie in 0..{k_all - 1} (num_classes)")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if not isinstance(min_per_class, int) or min_per_class < 1:
        raise ValueError(f"min_per_class must be a positive int, got {min_per_class!r}")
    rng = seeded_rng(seed, "probe")
    n = min(size, labels.size)
    present = np.unique(labels)
    relabel = present.size * min_per_class > n
    classes = present
    if relabel:
        classes = np.sort(rng.choice(present, max(n // min_per_class, 1), replace=False))
    pool = np.flatnonzero(np.isin(labels, classes))
    n = min(n, pool.size)
    chosen = [
        rng.choice(idx, min(min_per_class, idx.size), replace=False)
        for idx in (np.flatnonzero(labels == c) for c in classes)
    ]
    base = np.concatenate(chosen)
    rest = np.setdiff1d(pool, base)
    extra = rng.choice(rest, n - base.size, replace=False) if n > base.size else rest[:0]
    idx = np.sort(np.concatenate([base, extra]))
    if relabel:
        return Probe(
            idx, np.searchsorted(classes, labels[idx]).astype(np.int32), classes.size, classes
        )
    return Probe(idx, labels[idx].astype(np.int32), k_all, np.arange(k_all))


def softmax_probs(logits: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Row softmax of ``logits [n, w]`` over the first ``num_classes`` columns, float32."""
    z = np.asarray(logits, np.float64)
    if num_classes is not None:
        z = z[:, :num_classes]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def extract_probe(
    apply_fn: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]],
    variables: Any,
    images: np.ndarray,
    *,
    num_classes: int | None = None,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``[n, d]`` and source probabilities ``[n, z]`` of one model on probe images.

    apply_fn: ``apply_fn(variables, x [b, ...]) -> (features [b, d], logits [b, w])`` in
    inference mode, ideally jitted (for a zoo model: :func:`parc_jax.training.eval_fn`).
    num_classes: the source's class count when the head is wider (masked classes); default w.
    """
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be None or a positive int, got {num_classes!r}")
    features, logits = extract(apply_fn, variables, images, batch_size=batch_size)
    if num_classes is not None and num_classes > logits.shape[1]:
        raise ValueError(
            f"num_classes ({num_classes}) exceeds the model's {logits.shape[1]} logits"
        )
    if features.ndim != 2:
        raise ValueError(f"apply_fn must return features [b, d], got {features.shape[1:]}")
    return features, softmax_probs(logits, num_classes)


@dataclasses.dataclass(frozen=True)
class ProbeModel:
    """One source model's extraction on a probe: what a bank entry needs."""

    features: np.ndarray
    architecture: str
    probs: np.ndarray | None = None
    depth: int | None = None
    source: str | None = None
    source_images: int | None = None
    meta: Mapping[str, Any] | None = None


def probe_bank(
    *,
    target_name: str,
    labels: np.ndarray,
    num_classes: int,
    models: Mapping[str, ProbeModel],
    num_images: int | None = None,
    reference_features: np.ndarray | Mapping[str, np.ndarray] | None = None,
) -> Bank:
    """A validated :class:`parc_jax.bank.Bank` from per-model extractions (names ``arch/src``)."""
    return bank_from_arrays(
        target_name=target_name,
        labels=labels,
        num_classes=num_classes,
        features={k: m.features for k, m in models.items()},
        architectures={k: m.architecture for k, m in models.items()},
        probs={k: m.probs for k, m in models.items() if m.probs is not None},
        depths={k: m.depth for k, m in models.items() if m.depth is not None},
        sources={k: m.source for k, m in models.items() if m.source is not None},
        source_images={k: m.source_images for k, m in models.items() if m.source_images},
        meta={k: dict(m.meta) for k, m in models.items() if m.meta},
        num_images=num_images,
        reference_features=(
            dict(reference_features)
            if isinstance(reference_features, Mapping)
            else reference_features
        ),
    )


# ---------------------------------------------------------------------------------------------
# Pipeline stage: probe banks of a preset


def preset_probe(preset: Any, dataset: Any, run: int) -> Probe:
    """Probe run ``run`` of a preset's target ``dataset`` (seeded by preset seed, name, run)."""
    seed = int(seeded_rng(preset.seed, "probe", dataset.name, str(run)).integers(2**31))
    return sample_probe(
        dataset.train.labels, num_classes=dataset.num_classes, size=preset.probe_size, seed=seed
    )
