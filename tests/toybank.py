"""A small bank with every field, shared by the engine and CLI tests (and their subprocesses)."""

from __future__ import annotations

import numpy as np

from parc_jax.bank import Bank, ModelEntry, Target
from parc_jax.synthetic import balanced_labels, synthetic_features

N, K = 60, 4
WIDTHS = (12, 20, 40, 40, 12)  # three width buckets: 16, 32 and 64 (engine.bucket_width)


def toy_bank(
    num_models: int = 5,
    *,
    widths=WIDTHS,
    seed: int = 0,
    dtype=np.float32,
    latent: int = 8,
    noise: float = 0.05,
) -> Bank:
    """``num_models`` models with probs, depth, sources and per-architecture references.

    ``latent``/``noise``: see ``synthetic_features``; ``noise=0`` with ``latent >= width``
    gives a well-separated spectrum, so PCA is well conditioned in float32 (needed where a
    test compares runs whose rounding differs, not against a float64 reference).
    """
    rng = np.random.default_rng(seed)
    labels = balanced_labels(N, K, rng)
    models = []
    for i in range(num_models):
        d = widths[i % len(widths)]
        x = synthetic_features(labels, d, rng, signal=0.4 + 0.3 * i, latent=latent, noise=noise)
        z = 6 + i % 3
        logits = rng.normal(size=(N, z)) + 2.0 * np.eye(z)[labels % z]
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        models.append(
            ModelEntry(
                name=f"m{i}",
                features=x.astype(dtype),
                architecture=("a", "b")[i % 2],
                probs=p.astype(np.float32),
                depth=8 + 6 * (i % 3),
                source=f"s{i}",
                source_images=1000 * (i + 1),
            )
        )
    refs = {a: synthetic_features(labels, 10, rng, signal=2.0, latent=8) for a in ("a", "b")}
    return Bank(Target("toy", labels, K, num_images=600, reference_features=refs), models)
