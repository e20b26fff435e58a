"""Image datasets for the ground truth: loading, resizing, normalisation, splits, augmentation.

The offline datasets live in ``<data dir>/<name>.npz`` (:func:`default_data_dir`; keys
``x_train``, ``y_train``, ``x_test``, ``y_test``, ``classes``; uint8 pixels ``[N, H, W, C]``,
C = 1 or 3). A loaded
:class:`Dataset` has every split resized to one square input size (antialiased bilinear),
grey images repeated to 3 channels, and pixels normalised by the per-channel mean and std of
that dataset's training split. A validation split is carved from the training split
(stratified, seeded) *before* any cap on the training set, so the validation images are never
trained on. All randomness comes from ``numpy.random.Generator`` seeded by ``(seed, name)``.

This module is the I/O boundary of the ground truth: it works in NumPy and hands float32
arrays to the (JAX) training code.
"""

from __future__ import annotations

import functools
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

#: The ten offline datasets this project is built on (``<name>.npz`` in the data folder).
DATASETS: tuple[str, ...] = (
    "mnist",
    "usps",
    "notmnist",
    "omniglot1",
    "omniglot2",
    "cifar10",
    "coil20",
    "orl",
    "animal_silhouettes",
    "pneumonia",
)

#: Datasets whose labels survive a horizontal flip (objects, faces, animals). Digits, letters,
#: characters and chest X-rays (the heart is on one side) are not flipped.
FLIP_INVARIANT: frozenset[str] = frozenset({"cifar10", "coil20", "orl", "animal_silhouettes"})

_KEYS = ("x_train", "y_train", "x_test", "y_test")


DATA_ENV = "PARC_JAX_DATA"


def default_data_dir() -> Path:
    """Where the datasets' ``.npz`` files are: ``$PARC_JAX_DATA`` if set, else ``data/`` in the
    working directory. Every entry point also takes the folder as an option (``--data-dir``,
    ``data_dir=``)."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path("data")


@dataclass(frozen=True)
class Split:
    """One split: ``images`` float32 ``[n, s, s, 3]`` (normalised), ``labels`` int32 ``[n]``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Dataset:
    """A dataset ready for training: three splits at one input size, and how it was made.

    ``mean``/``std``: ``[3]`` per-channel statistics of the (full, resized) training split on
    the 0..1 pixel scale, already applied to every split. ``train_images``: the number of
    training images actually used (after carving validation and capping).
    """

    name: str
    num_classes: int
    image_size: int
    train: Split
    val: Split
    test: Split
    mean: np.ndarray
    std: np.ndarray
    flip: bool
    info: dict = field(default_factory=dict)

    @property
    def train_images(self) -> int:
        return len(self.train)


def seeded_rng(seed: int, *names: str) -> np.random.Generator:
    """A Generator seeded by ``seed`` and the names (stable across processes, unlike hash)."""
    words = [int(seed)] + [zlib.crc32(n.encode()) for n in names]
    return np.random.default_rng(words)


def load_npz(name: str, *, data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The raw arrays of ``<data_dir>/<name>.npz``: uint8 images ``[N, H, W, C]``, int32 labels."""
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    path = directory / f"{name}.npz"
    if not path.is_file():
        raise ValueError(
            f"name: no dataset file {path}; expected one of {DATASETS} in {directory} "
            "(set data_dir or $PARC_JAX_DATA)"
        )
    with np.load(path, allow_pickle=False) as archive:
        missing = [k for k in _KEYS if k not in archive.files]
        if missing:
            raise ValueError(f"name: {path} lacks keys {missing}; expected {_KEYS}")
        raw = {k: np.asarray(archive[k]) for k in _KEYS}
    return check_arrays(raw, where=str(path))


def check_arrays(raw: Mapping[str, np.ndarray], *, where: str = "arrays") -> dict[str, np.ndarray]:
    """Validate raw dataset arrays (``x_train``, ``y_train``, ``x_test``, ``y_test``).

    Images: uint8 ``[N, H, W, 1|3]``; labels: integers ``[N]`` in ``0..K-1``, returned int32.
    """
    missing = [k for k in _KEYS if k not in raw]
    if missing:
        raise ValueError(f"{where}: lacks keys {missing}; expected {_KEYS}")
    out = {}
    for split in ("train", "test"):
        x, y = np.asarray(raw[f"x_{split}"]), np.asarray(raw[f"y_{split}"])
        if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.dtype != np.uint8:
            raise ValueError(
                f"{where}: x_{split} must be uint8 [N, H, W, 1|3], got {x.dtype} {x.shape}"
            )
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer) or y.size == 0:
            raise ValueError(f"{where}: y_{split} must be non-empty int [N] matching x_{split}")
        if y.min() < 0:
            raise ValueError(f"{where}: y_{split} has negative labels; use 0..K-1")
        out[f"x_{split}"] = x
        out[f"y_{split}"] = y.astype(np.int32)
    return out


def resize_images(images: np.ndarray, image_size: int, *, chunk: int = 1024) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` -> float32 ``[N, s, s, 3]`` in 0..1, antialiased bilinear.

    Grey images (C = 1) are repeated to 3 channels. Chunks keep the compiled shapes few.
    """
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images: expected [N, H, W, 1|3], got shape {images.shape}")
    x = images.astype(np.float32) / 255.0
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if x.shape[1:3] == (image_size, image_size):
        return x
    out = np.empty((x.shape[0], image_size, image_size, 3), np.float32)
    resize = _resizer((chunk,) + x.shape[1:], image_size)
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk]
        n = part.shape[0]
        if n < chunk:  # pad the last chunk so one program serves every chunk
            part = np.concatenate([part, np.zeros((chunk - n,) + part.shape[1:], part.dtype)])
        out[start : start + n] = np.asarray(resize(jnp.asarray(part)))[:n]
    return np.clip(out, 0.0, 1.0)


@functools.lru_cache(maxsize=32)
def _resizer(in_shape: tuple[int, ...], image_size: int):
    out_shape = (in_shape[0], image_size, image_size, in_shape[3])
    return jax.jit(lambda a: jax.image.resize(a, out_shape, "linear", antialias=True))


def stratified_subset(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``size`` items drawn per class in proportion to the class counts.

    Every class keeps at least one item while ``size`` allows it (largest remainders get the
    leftover slots; ties broken at random). ``size >= len(labels)`` returns everything.
    """
    n = labels.shape[0]
    if size >= n:
        return np.arange(n)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (size / n)
    take = np.minimum(np.maximum(np.floor(quota).astype(int), 1), counts)
    if take.sum() > size and len(classes) > size:
        # more classes than slots: keep one from randomly chosen classes
        take = np.zeros_like(counts)
        take[rng.choice(len(classes), size, replace=False)] = 1
    elif take.sum() > size:
        # long tail: the 1-per-class floors overshoot; give every class one item and share
        # the other ``size - K`` slots in proportion to what each class has left
        k = len(classes)
        quota = 1 + (counts - 1) * ((size - k) / (n - k))
        take = np.floor(quota).astype(int)
    spare = size - int(take.sum())
    if spare > 0:
        order = np.lexsort((rng.random(len(classes)), -(quota - np.floor(quota))))
        for i in np.concatenate([order] * (spare // len(classes) + 2)):
            if spare == 0:
                break
            if take[i] < counts[i]:
                take[i] += 1
                spare -= 1
    chosen = [
        rng.choice(np.flatnonzero(labels == c), t, replace=False)
        for c, t in zip(classes, take, strict=True)
        if t
    ]
    return np.sort(np.concatenate(chosen))


def carve_validation(
    labels: np.ndarray, *, fraction: float, max_size: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices into ``(train, val)``, stratified.

    Per class ``round(fraction * n_c)`` images (at least 1 for classes with >= 2 images, none
    for singletons) go to validation; ``max_size`` then caps validation with a stratified
    subset, the rest going back to training.
    """
    train_idx, val_idx = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = max(1, int(round(fraction * idx.size))) if idx.size >= 2 else 0
        k = min(k, idx.size - 1)
        val_idx.append(idx[:k])
        train_idx.append(idx[k:])
    val = np.sort(np.concatenate(val_idx))
    train = np.concatenate(train_idx)
    if max_size is not None and val.size > max_size:
        keep = stratified_subset(labels[val], max_size, rng)
        back = np.setdiff1d(np.arange(val.size), keep)
        train = np.concatenate([train, val[back]])
        val = val[keep]
    return np.sort(train), val


def load_dataset(
    name: str,
    *,
    image_size: int = 16,
    data_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    max_val: int | None = 500,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    arrays: Mapping[str, np.ndarray] | None = None,
    flip: bool | None = None,
) -> Dataset:
    """Load ``<data_dir>/<name>.npz`` as a :class:`Dataset` at ``image_size`` x ``image_size``.

    val_fraction: share of each class's training images carved out for validation (capped at
    ``max_val`` images). max_train / max_test: stratified caps on the remaining training split
    and on the test split (None = all). seed: drives every random choice (with ``name``).
    arrays: raw ``x_train``/``y_train``/``x_test``/``y_test`` to use instead of the file (for
    example from :func:`parc_jax.groundtruth.tfds_data.tfds_arrays`); ``name`` then only names it.
    flip: whether labels survive a horizontal flip (None: ``name in FLIP_INVARIANT``).
    """
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    for arg, value in (("max_val", max_val), ("max_train", max_train), ("max_test", max_test)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{arg} must be None or a positive int, got {value!r}")
    raw = load_npz(name, data_dir=data_dir) if arrays is None else check_arrays(arrays)
    rng = seeded_rng(seed, name, "splits")
    y_train, y_test = raw["y_train"], raw["y_test"]
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    train_idx, val_idx = carve_validation(y_train, fraction=val_fraction, max_size=max_val, rng=rng)
    if max_train is not None and train_idx.size > max_train:
        train_idx = train_idx[stratified_subset(y_train[train_idx], max_train, rng)]
    test_idx = np.arange(y_test.size)
    if max_test is not None and test_idx.size > max_test:
        test_idx = stratified_subset(y_test, max_test, rng)

    x_all = resize_images(raw["x_train"], image_size)
    # float64: float32 multi-axis reductions over millions of pixels drift by ~1%.
    mean = x_all.mean(axis=(0, 1, 2), dtype=np.float64)
    std = np.maximum(np.sqrt(((x_all - mean) ** 2).mean(axis=(0, 1, 2), dtype=np.float64)), 1e-3)
    x_test = resize_images(raw["x_test"][test_idx], image_size)

    def norm(x: np.ndarray) -> np.ndarray:
        return ((x - mean.astype(np.float32)) / std.astype(np.float32)).astype(np.float32)

    info = {
        "source_file_train": int(y_train.size),
        "source_file_test": int(y_test.size),
        "original_shape": list(raw["x_train"].shape[1:]),
        "seed": int(seed),
    }
    return Dataset(
        name=name,
        num_classes=num_classes,
        image_size=image_size,
        train=Split(norm(x_all[train_idx]), y_train[train_idx]),
        val=Split(norm(x_all[val_idx]), y_train[val_idx]),
        test=Split(norm(x_test), y_test[test_idx]),
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        flip=(name in FLIP_INVARIANT) if flip is None else bool(flip),
        info=info,
    )


def augment(images: np.ndarray, rng: np.random.Generator, *, pad: int, flip: bool) -> np.ndarray:
    """Standard augmentation of a batch ``[b, s, s, c]``: random translation, optional flip.

    Each image is edge-padded by ``pad`` pixels and cropped back to ``s x s`` at a random
    offset (a shift of up to ``pad`` pixels each way); with ``flip`` half the images are
    mirrored left-right.
    """
    b, h, w, _ = images.shape
    out = images
    if pad > 0:
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
        oy = rng.integers(0, 2 * pad + 1, size=b)
        ox = rng.integers(0, 2 * pad + 1, size=b)
        rows = (oy[:, None] + np.arange(h))[:, :, None]
        cols = (ox[:, None] + np.arange(w))[:, None, :]
        out = padded[np.arange(b)[:, None, None], rows, cols]
    if flip:
        mirror = rng.random(b) < 0.5
        out = np.where(mirror[:, None, None, None], out[:, :, ::-1], out)
    return out


def concat_datasets(name: str, parts: Sequence[Dataset]) -> Dataset:
    """One labelled pool from several datasets: splits concatenated, each part's labels
    offset past the previous parts' classes (no class is shared), each part kept in its own
    normalisation. ``mean``/``std`` are the parts' image-weighted averages (recorded only);
    flips are off unless every part flips."""
    if not parts:
        raise ValueError("concat_datasets needs at least one dataset")
    sizes = {d.image_size for d in parts}
    if len(sizes) != 1:
        raise ValueError(f"datasets differ in image size: {sorted(sizes)}")
    offsets = np.cumsum([0] + [d.num_classes for d in parts])

    def cat(split: str) -> Split:
        return Split(
            np.concatenate([getattr(d, split).images for d in parts]),
            np.concatenate(
                [getattr(d, split).labels + o for d, o in zip(parts, offsets, strict=False)]
            ).astype(np.int32),
        )

    weights = np.asarray([len(d.train) for d in parts], np.float64)
    weights /= weights.sum()
    return Dataset(
        name=name,
        num_classes=int(offsets[-1]),
        image_size=parts[0].image_size,
        train=cat("train"),
        val=cat("val"),
        test=cat("test"),
        mean=np.sum([w * d.mean for w, d in zip(weights, parts, strict=True)], 0).astype(
            np.float32
        ),
        std=np.sum([w * d.std for w, d in zip(weights, parts, strict=True)], 0).astype(np.float32),
        flip=all(d.flip for d in parts),
        info={"parts": [d.name for d in parts]},
    )


def load_datasets(names: Sequence[str], **kwargs) -> dict[str, Dataset]:
    """:func:`load_dataset` for each name, with the same keyword arguments."""
    return {n: load_dataset(n, **kwargs) for n in names}
