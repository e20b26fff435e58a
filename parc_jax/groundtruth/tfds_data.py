"""TensorFlow Datasets path (the ``tfds`` extra): datasets as ``tfds.data_source`` readers.

Two uses, neither needing TensorFlow (``tensorflow-datasets`` reads and writes ``array_record``
files without it):

* :func:`tfds_arrays` reads any prepared TFDS image-classification dataset (for users with
  network access, a catalogue name such as ``"mnist"`` with ``download=True``) into the raw
  arrays that :func:`parc_jax.groundtruth.data.load_dataset` takes through ``arrays=``, so resizing,
  normalisation and splits are the same as for the offline files. TFDS stores examples in a
  shuffled order; the builder below therefore records each example's position in the file
  (feature ``"index"``) and :func:`tfds_arrays` restores that order, so a local build gives
  the very arrays (and hence splits) of its ``.npz`` file. Catalogue datasets have no such
  feature and come in TFDS's record order.
* :class:`ParcNpzImages` is a builder with a *manual directory*: it turns local
  ``<manual_dir>/<config>.npz`` files (the format of :mod:`parc_jax.groundtruth.data`) into an
  ``array_record`` TFDS dataset, one builder config per dataset name. :func:`build_npz_tfds`
  runs it; the tests use it to exercise the whole TFDS path offline.

Imports of ``tensorflow_datasets`` are lazy: this module imports without the extra, and the
functions raise an ImportError naming it.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np

from parc_jax.groundtruth.data import DATASETS

BUILDER_NAME = "parc_npz_images"
INDEX_KEY = "index"  # position of an example in its .npz split (restores the file order)


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

        VERSION = tfds.core.Version("1.1.0")
        RELEASE_NOTES = {
            "1.0.0": "Local .npz files with x_train, y_train, x_test, y_test.",
            "1.1.0": f"Feature {INDEX_KEY!r}: position in the file (its order on read).",
        }
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
                        INDEX_KEY: tfds.features.Tensor(shape=(), dtype=np.int64),
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
                yield i, {"image": images[i], "label": np.int64(labels[i]), INDEX_KEY: np.int64(i)}

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


def _file_order(records: list) -> list:
    """``records`` sorted by their ``INDEX_KEY`` feature (their position in the source file).

    Records without that feature (catalogue datasets) keep their order. The indices must be
    ``0 .. n-1`` exactly once each, else ValueError.
    """
    if not records or INDEX_KEY not in records[0]:
        return list(records)
    index = np.asarray([int(r[INDEX_KEY]) for r in records])
    order = np.argsort(index, kind="stable")
    if not np.array_equal(index[order], np.arange(index.size)):
        raise ValueError(
            f"feature {INDEX_KEY!r} is not a permutation of 0..{index.size - 1}: "
            "the prepared data are damaged; delete and rebuild them"
        )
    return [records[i] for i in order]


_PROXY_VARS = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")


def _check_online(host: str = "storage.googleapis.com", timeout: float = 5.0) -> None:
    """Raise ConnectionError within ~``timeout`` s if ``host:443`` cannot be reached.

    Saves TFDS's long download retries when there is no network. Skipped behind a proxy
    (the direct connection says nothing there).
    """
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return
    result: list[BaseException | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(None)
        except OSError as err:
            result.append(err)

    thread = threading.Thread(target=probe, daemon=True)  # bounds a hanging DNS lookup too
    thread.start()
    thread.join(timeout + 1.0)
    if not result or result[0] is not None:
        why = "timed out" if not result else f"{type(result[0]).__name__}: {result[0]}"
        raise ConnectionError(
            f"download: cannot reach {host} ({why}); no network? Prepare the data elsewhere "
            "and pass data_dir"
        )


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
    ``[N]``, ready for ``parc_jax.groundtruth.data.load_dataset(name, arrays=...)``: in the order
    of the
    source file for a local build (feature ``"index"``), else in record order.
    name: a TFDS name (``"mnist"``, or ``"parc_npz_images/mnist"`` for a local build).
    download: let TFDS download and prepare it first (needs network access).
    Not prepared and ``download=False``: FileNotFoundError ``not prepared at <dir>: ...``.
    """
    tfds = _tfds()
    if name.split("/")[0] == BUILDER_NAME:
        _builder_class()  # registers the builder so TFDS can find it by name
    data_dir = None if data_dir is None else str(data_dir)
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if not download:
            raise FileNotFoundError(
                f"not prepared at {builder.data_dir}: {name!r} has no prepared data there; "
                "pass the data_dir it was prepared in, or download=True (needs network), or "
                "build_npz_tfds for a local .npz"
            )
        _check_online()
    sources = tfds.data_source(name, data_dir=data_dir, download=download)
    out: dict[str, np.ndarray] = {}
    for split, tag in ((train_split, "train"), (test_split, "test")):
        if split not in sources:
            raise ValueError(
                f"{tag}_split: {name!r} has no split {split!r}; it has {sorted(sources)}"
            )
        source = sources[split]
        records = _file_order([source[i] for i in range(len(source))])
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
