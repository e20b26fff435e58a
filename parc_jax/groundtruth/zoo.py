"""Flax model zoo for the ground-truth benchmark: four architecture families in depth tiers.

Every model maps images ``x: [b, s, s, 3]`` to ``(features [b, d], logits [b, num_classes])``
through ``model.apply(variables, x, train=...)`` and records its depth ``l`` (conv + dense
layers on the longest input-output path, classifier included, as the PARC paper counts:
AlexNet = 8). Convolutional models use BatchNorm, so their variables hold a ``batch_stats``
collection next to ``params``; call ``apply`` with ``mutable=["batch_stats"]`` when
``train=True``. The mixer uses LayerNorm and has ``params`` only.

| name | family | depth | features |
|---|---|---|---|
| ``alexnet`` | plain CNN, 5 conv + 3 dense | 8 | ``8 * width`` |
| ``resnet14`` | CIFAR-style ResNet (6n+2, n=2), basic blocks | 14 | ``4 * width`` |
| ``resnet26`` | CIFAR-style ResNet (6n+2, n=4), basic blocks | 26 | ``4 * width`` |
| ``mixer`` | MLP-Mixer, patch embedding + 4 blocks | 18 | ``4 * width`` |

``width`` is the base channel count (default 16). The classifier is always the top-level
``params["head"]`` (a Dense layer), which fine-tuning replaces.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ARCHITECTURES: tuple[str, ...] = ("alexnet", "resnet14", "resnet26", "mixer")

_BN = {"momentum": 0.9, "epsilon": 1e-5}


class AlexNet(nn.Module):
    """AlexNet-style plain CNN: 5 conv (BN + ReLU) with 3 max-pools, then 3 dense layers.

    Depth 8. Features are the output of the second dense layer ``[b, 8 * width]``.
    """

    num_classes: int
    width: int = 16

    depth = 8

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        w = self.width
        channels = (w, 2 * w, 3 * w, 3 * w, 2 * w)
        kernels = (5, 3, 3, 3, 3)
        pool_after = (0, 1, 4)
        for i, (c, k) in enumerate(zip(channels, kernels, strict=True)):
            x = nn.Conv(c, (k, k), padding="SAME", use_bias=False)(x)
            x = nn.BatchNorm(use_running_average=not train, **_BN)(x)
            x = nn.relu(x)
            if i in pool_after and x.shape[1] >= 2:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(8 * w)(x))
        features = nn.relu(nn.Dense(8 * w)(x))
        logits = nn.Dense(self.num_classes, name="head")(features)
        return features, logits


class _BasicBlock(nn.Module):
    channels: int
    stride: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = nn.Conv(self.channels, (3, 3), (self.stride, self.stride), use_bias=False)(x)
        y = nn.BatchNorm(use_running_average=not train, **_BN)(y)
        y = nn.relu(y)
        y = nn.Conv(self.channels, (3, 3), use_bias=False)(y)
        # Zero-init the last BN scale: each block starts as the identity (Goyal et al. 2017).
        y = nn.BatchNorm(use_running_average=not train, scale_init=nn.initializers.zeros, **_BN)(y)
        if x.shape[-1] != self.channels or self.stride != 1:
            x = nn.Conv(self.channels, (1, 1), (self.stride, self.stride), use_bias=False)(x)
            x = nn.BatchNorm(use_running_average=not train, **_BN)(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """CIFAR-style ResNet (He et al. 2016, Sec. 4.2): depth ``6 * blocks + 2``.

    Stem conv, three stages of ``blocks`` basic blocks with widths ``(w, 2w, 4w)`` (stride 2
    between stages), global average pooling -> features ``[b, 4 * width]``, dense classifier.
    The 1x1 projection shortcuts are off the longest path and are not counted.
    """

    num_classes: int
    blocks: int = 2
    width: int = 16

    @property
    def depth(self) -> int:
        return 6 * self.blocks + 2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        w = self.width
        x = nn.Conv(w, (3, 3), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, **_BN)(x))
        for stage, c in enumerate((w, 2 * w, 4 * w)):
            for b in range(self.blocks):
                stride = 2 if stage > 0 and b == 0 else 1
                x = _BasicBlock(c, stride)(x, train)
        features = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes, name="head")(features)
        return features, logits


class _MixerBlock(nn.Module):
    tokens_hidden: int
    channels_hidden: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # Token mixing: two dense layers across the patch axis.
        y = nn.LayerNorm()(x).swapaxes(1, 2)
        y = nn.Dense(x.shape[1])(nn.gelu(nn.Dense(self.tokens_hidden)(y)))
        x = x + y.swapaxes(1, 2)
        # Channel mixing: two dense layers across the channel axis.
        y = nn.LayerNorm()(x)
        y = nn.Dense(x.shape[2])(nn.gelu(nn.Dense(self.channels_hidden)(y)))
        return x + y


class Mixer(nn.Module):
    """MLP-Mixer (Tolstikhin et al. 2021): patch embedding, ``blocks`` mixer blocks, mean pool.

    Depth ``4 * blocks + 2`` (patch embedding, 4 dense layers per block, classifier). Hidden
    size ``4 * width``, token MLP ``2 * width``, channel MLP ``8 * width``; features are the
    layer-normalised mean over patches ``[b, 4 * width]``. ``train`` is accepted for a uniform
    interface; the model has no train/eval difference.
    """

    num_classes: int
    blocks: int = 4
    width: int = 16
    patch: int = 4

    @property
    def depth(self) -> int:
        return 4 * self.blocks + 2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        del train
        w = self.width
        p = self.patch
        x = nn.Conv(4 * w, (p, p), strides=(p, p), padding="VALID")(x)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        for _ in range(self.blocks):
            x = _MixerBlock(2 * w, 8 * w)(x)
        features = nn.LayerNorm()(jnp.mean(x, axis=1))
        logits = nn.Dense(self.num_classes, name="head")(features)
        return features, logits


def make_model(architecture: str, *, num_classes: int, width: int = 16) -> nn.Module:
    """The zoo model ``architecture`` (one of ``ARCHITECTURES``) with a ``num_classes`` head.

    ``width`` scales every layer (base channel count). The returned module has a ``depth``
    attribute and maps ``x: [b, s, s, 3]`` to ``(features [b, d], logits [b, num_classes])``.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"architecture must be one of {ARCHITECTURES}, got {architecture!r}; "
            "pick a zoo architecture name"
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    if architecture == "alexnet":
        return AlexNet(num_classes=num_classes, width=width)
    if architecture == "resnet14":
        return ResNet(num_classes=num_classes, blocks=2, width=width)
    if architecture == "resnet26":
        return ResNet(num_classes=num_classes, blocks=4, width=width)
    return Mixer(num_classes=num_classes, blocks=4, width=width)


def model_depth(architecture: str) -> int:
    """Depth ``l`` of a zoo architecture (conv + dense layers on the longest path)."""
    return int(make_model(architecture, num_classes=1).depth)


def init_variables(model: nn.Module, key: int | jax.Array, *, image_size: int) -> dict[str, Any]:
    """Initial variables of ``model`` for inputs ``[b, image_size, image_size, 3]``.

    key: a JAX PRNG key, or an int seed, which becomes an ``rbg`` key: XLA compiles the
    default threefry initialisers of a 26-layer ResNet in ~30 s on 2 CPU cores, ``rbg`` in ~4.
    (``rbg`` bits are deterministic on one backend but may differ between CPU and GPU.)
    Returns a plain dict with ``params`` and, for BatchNorm models, ``batch_stats``.
    """
    if not isinstance(image_size, int) or image_size < 4:
        raise ValueError(f"image_size must be an int >= 4, got {image_size!r}")
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(int(key), impl="rbg")
    return unfreeze(_initializer(model, image_size)(key))


@functools.lru_cache(maxsize=64)
def _initializer(model: nn.Module, image_size: int):
    # One compiled init per (model, input size): re-jitting a fresh lambda every call would
    # recompile the whole network each time.
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    return jax.jit(lambda k: model.init(k, x, train=False))


def unfreeze(tree: Any) -> Any:
    """Nested plain dicts from any (possibly frozen) mapping tree of arrays."""
    if isinstance(tree, Mapping):
        return {k: unfreeze(v) for k, v in tree.items()}
    return tree


def count_params(variables: Mapping[str, Any]) -> int:
    """Number of trainable parameters (the ``params`` collection)."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(variables["params"])))
