"""TensorFlow Datasets path (the ``tfds`` extra): datasets as ``tfds.data_source`` readers.

Two uses, neither needing TensorFlow (``tensorflow-datasets`` reads and writes ``array_record``
files without it):

* :func:`tfds_arrays` reads any prepared TFDS image-classification dataset (for users with
  network access, a catalogue name such as ``"mnist"`` with ``download=True``) into the raw
  arrays that :func:`parc_jax.data.load_dataset` takes through ``arrays=``, so resizing,
  normalisation and splits are the same as for the offline files.
* :class:`ParcNpzImages` is a builder with a *manual directory*: it turns local
  ``<manual_dir>/<config>.npz`` files (the format of ``../shared/data``) into an
  ``array_record`` TFDS dataset, one builder config per dataset name. :func:`build_npz_tfds`
  runs it; the tests use it to exercise the whole TFDS path offline.

Imports of ``tensorflow_datasets`` are lazy: this module imports without the extra, and the
functions raise an ImportError naming it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from parc_jax.data import DATASETS

BUILDER_NAME = "parc_npz_images"


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the TFDS path needs the 'tfds' extra: pip install 'parc-jax[tfds]' "
            "(tensorflow-datasets and array-record; TensorFlow itself is not needed)"
        ) from err
    return tfds


@functools.cache
def _builder_class() -> type:
    """Define (once) and register the manual-directory builder with TFDS."""
    tfds = _tfds()

    class ParcNpzImages(tfds.core.GeneratorBasedBuilder):
        """Image classification from ``<manual_dir>/<config name>.npz`` (uint8 images)."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "Local .npz files with x_train, y_train, x_test, y_test."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = (
            "Place <name>.npz (keys x_train, y_train, x_test, y_test: uint8 [N, H, W, C] "
            "images and int labels) in the manual directory."
        )
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in DATASETS]

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description="Local image-classification arrays for parc_jax.",
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Tensor(
                            shape=(None, None, None), dtype=np.uint8, encoding="zlib"
                        ),
                        "label": tfds.features.Tensor(shape=(), dtype=np.int64),
                    }
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            path = Path(dl_manager.manual_dir) / f"{self.builder_config.name}.npz"
            if not path.is_file():
                raise FileNotFoundError(f"manual_dir: expected {path}")
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: np.asarray(f[k]) for k in ("x_train", "y_train", "x_test", "y_test")}
            return {
                "train": self._generate_examples(arrays["x_train"], arrays["y_train"]),
                "test": self._generate_examples(arrays["x_test"], arrays["y_test"]),
            }

        def _generate_examples(self, images, labels):
            for i in range(labels.shape[0]):
                yield i, {"image": images[i], "label": np.int64(labels[i])}

    return ParcNpzImages


def __getattr__(name: str) -> Any:
    if name == "ParcNpzImages":
        return _builder_class()
    raise AttributeError(name)


def build_npz_tfds(
    name: str,
    *,
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
) -> Path:
    """Build ``parc_npz_images/<name>`` as ``array_record`` from ``<manual_dir>/<name>.npz``.

    Returns the dataset's version directory under ``data_dir``. Rebuilding an existing one is
    a no-op (TFDS reuses prepared data).
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS} (a builder config), got {name!r}")
    tfds = _tfds()
    builder = _builder_class()(config=name, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    )
    return Path(builder.data_dir)


def tfds_arrays(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    train_split: str = "train",
    test_split: str = "test",
    image_key: str = "image",
    label_key: str = "label",
    download: bool = False,
) -> dict[str, np.ndarray]:
    """Read a prepared TFDS dataset with ``tfds.data_source`` into raw arrays.

    Returns ``{"x_train", "y_train", "x_test", "y_test"}``: uint8 ``[N, H, W, C]`` and int32
    ``[N]``, in record order, ready for ``parc_jax.data.load_dataset(name, arrays=...)``.
    name: a TFDS name (``"mnist"``, or ``"parc_npz_images/mnist"`` for a local build).
    download: let TFDS download and prepare it first (needs network access).
    """
    tfds = _tfds()
    if name.split("/")[0] == BUILDER_NAME:
        _builder_class()  # registers the builder so TFDS can find it by name
    sources = tfds.data_source(
        name, data_dir=None if data_dir is None else str(data_dir), download=download
    )
    out: dict[str, np.ndarray] = {}
    for split, tag in ((train_split, "train"), (test_split, "test")):
        if split not in sources:
            raise ValueError(
                f"{tag}_split: {name!r} has no split {split!r}; it has {sorted(sources)}"
            )
        source = sources[split]
        records = [source[i] for i in range(len(source))]
        if not records:
            raise ValueError(f"{tag}_split: split {split!r} of {name!r} is empty")
        for key in (image_key, label_key):
            if key not in records[0]:
                raise ValueError(
                    f"{key!r} is not a feature of {name!r}; it has {sorted(records[0])} "
                    "(set image_key / label_key)"
                )
        images = np.stack([np.asarray(r[image_key]) for r in records])
        if images.ndim == 3:
            images = images[..., None]
        out[f"x_{tag}"] = images.astype(np.uint8)
        out[f"y_{tag}"] = np.asarray([r[label_key] for r in records]).astype(np.int32)
    return out
