"""Synthetic model banks with real class structure, for tests and throughput benchmarks.

Each synthetic model sees the probe through its own random linear "backbone": features are
class means (of model-specific strength, so models differ in transferability) plus noise, mixed
through a decaying spectrum so PCA is well conditioned, as real penultimate features are.
Probabilities come from a random source head, so LEEP/NCE see a genuine class-to-source
mapping. NumPy only: these are inputs, not library numerics.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from parc_jax.bank import Bank, ModelEntry, Target, write_bank

__all__ = [
    "balanced_labels",
    "synthetic_bank",
    "synthetic_features",
    "synthetic_models",
    "write_sharded_bank",
]

ARCHITECTURES = ("alexnet", "resnet14", "resnet26", "mixer")
DEPTHS = {"alexnet": 8, "resnet14": 14, "resnet26": 26, "mixer": 12}


def balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``[n]`` int32 labels, every class at least ``n // K`` times, shuffled."""
    labels = np.arange(n) % num_classes
    return rng.permutation(labels).astype(np.int32)


def synthetic_features(
    labels: np.ndarray,
    d: int,
    rng: np.random.Generator,
    *,
    signal: float = 1.0,
    latent: int = 64,
    decay: float = 0.9,
    noise: float = 0.05,
) -> np.ndarray:
    """``[n, d]`` float32 features with class structure of strength ``signal``."""
    n = labels.shape[0]
    k = int(labels.max()) + 1
    latent = min(latent, d)
    means = rng.normal(size=(k, latent)) * signal
    z = means[labels] + rng.normal(size=(n, latent))
    # decaying spectrum: well-separated principal directions
    z *= decay ** np.arange(latent)[None, :] * 3.0 + 0.1
    mix = rng.normal(size=(latent, d)) / np.sqrt(latent)
    x = z @ mix + noise * rng.normal(size=(n, d))
    return np.maximum(x, 0.0).astype(np.float32) if d > 4 else x.astype(np.float32)


def synthetic_models(
    labels: np.ndarray,
    *,
    num_models: int,
    widths: Sequence[int] = (512, 2048, 4096),
    z: int = 1000,
    seed: int = 0,
    dtype: np.dtype | str = np.float16,
    with_probs: bool = True,
    start: int = 0,
) -> Iterator[ModelEntry]:
    """Yield ``num_models`` synthetic models (names ``model000123``), one at a time."""
    for i in range(start, start + num_models):
        rng = np.random.default_rng([seed, i])
        d = int(widths[i % len(widths)])
        arch = ARCHITECTURES[i % len(ARCHITECTURES)]
        signal = float(rng.uniform(0.2, 2.0))
        feats = synthetic_features(labels, d, rng, signal=signal)
        probs = None
        if with_probs:
            head = rng.normal(size=(d, z)).astype(np.float32) / np.sqrt(d)
            logits = (feats - feats.mean(0)) @ head * 4.0
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            probs = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
        yield ModelEntry(
            name=f"model{i:06d}",
            features=feats.astype(dtype),
            architecture=arch,
            probs=probs,
            depth=DEPTHS[arch],
            source=f"source{i % 8}",
            source_images=int(rng.integers(1000, 50000)),
            meta={"signal": signal},
        )


def synthetic_bank(
    *,
    n: int = 500,
    num_classes: int = 100,
    num_models: int = 16,
    widths: Sequence[int] = (512, 2048, 4096),
    z: int = 1000,
    seed: int = 0,
    dtype: np.dtype | str = np.float16,
    with_probs: bool = True,
    reference_width: int | None = 64,
) -> Bank:
    """An in-memory bank (see :func:`synthetic_models`), with per-architecture references."""
    rng = np.random.default_rng(seed)
    labels = balanced_labels(n, num_classes, rng)
    reference = None
    if reference_width:
        reference = {
            a: synthetic_features(labels, reference_width, rng, signal=2.0) for a in ARCHITECTURES
        }
    target = Target(
        name=f"synthetic{seed}",
        labels=labels,
        num_classes=num_classes,
        num_images=10 * n,
        reference_features=reference,
    )
    models = list(
        synthetic_models(
            labels, num_models=num_models, widths=widths, z=z, seed=seed, dtype=dtype,
            with_probs=with_probs,
        )
    )  # fmt: skip
    return Bank(target, models)


def write_sharded_bank(
    directory: str | os.PathLike,
    *,
    num_models: int,
    models_per_shard: int = 250,
    n: int = 500,
    num_classes: int = 100,
    widths: Sequence[int] = (256,),
    z: int = 1000,
    seed: int = 0,
    with_probs: bool = False,
) -> list[Path]:
    """Write a bank directory shard by shard; memory holds one shard, not the bank."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = balanced_labels(n, num_classes, rng)
    target = Target(name=f"synthetic{seed}", labels=labels, num_classes=num_classes,
                    num_images=10 * n)  # fmt: skip
    paths = []
    for s, start in enumerate(range(0, num_models, models_per_shard)):
        count = min(models_per_shard, num_models - start)
        models = list(
            synthetic_models(labels, num_models=count, widths=widths, z=z, seed=seed,
                             with_probs=with_probs, start=start)
        )  # fmt: skip
        path = out / f"shard{s:05d}.msgpack"
        write_bank(path, Bank(target, models))
        paths.append(path)
    return paths
