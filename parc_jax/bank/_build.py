"""Building banks from arrays (:func:`bank_from_arrays`) and from a folder of per-model ``.npz``
files (:func:`npz_folder_to_bank`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parc_jax.bank._format import (
    _FEATURE_DTYPES,
    _FLOAT_DTYPES,
    _LOAD_ERRORS,
    _MEMORY,
    REGRESSION,
    TASKS,
    Bank,
    BankError,
    ModelEntry,
    Target,
    _Loc,
)
from parc_jax.bank._validate import (
    _check_unique,
    _parse_model,
    _parse_target,
    bank_to_tree,
    validate_tree,
)

#: The architecture of a model whose inputs name none (grouped as one for rsa/dds references).
DEFAULT_ARCHITECTURE = "unknown"


def _per_model(value: Any, names: list[str], what: str) -> list[Any]:
    """Broadcast a per-model argument: None, a Mapping name->value, or a sequence in order."""
    if value is None:
        return [None] * len(names)
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(f"{what}: names {unknown[:3]} are not among the models' names")
        return [value.get(n) for n in names]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | np.ndarray):
        raise ValueError(
            f"{what}: give a mapping from model name, or a sequence with one entry per model"
        )
    if len(value) != len(names):
        raise ValueError(f"{what}: has {len(value)} entries but there are {len(names)} models")
    return list(value)


def _as_float_array(value: Any, what: str, *, keep: tuple[np.dtype, ...]) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is the caller's input
        raise ValueError(f"{what}: cannot be read as an array ({exc})") from None
    if arr.dtype in keep:
        return arr
    if arr.dtype.name == "bfloat16" or arr.dtype.kind in "iuf":  # bfloat16: JAX's ml_dtypes
        return arr.astype(np.float32)
    raise ValueError(f"{what}: expected real numbers, got dtype {arr.dtype}")


def _check_task_name(task: Any) -> str | None:
    if task is not None and task not in TASKS:
        raise ValueError(f"task: expected one of {', '.join(TASKS)} or None, got {task!r:.40}")
    return task


def _as_labels(labels: Any, task: str | None = None) -> np.ndarray:
    try:
        arr = np.asarray(labels)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"labels: cannot be read as an array ({exc})") from None
    if task == REGRESSION:
        if arr.ndim not in (1, 2):
            raise ValueError(
                f"labels: regression targets must be [n] or [n, C] real values, got shape "
                f"{arr.shape}"
            )
        return arr  # real values as given; validation checks them
    if arr.ndim == 1 and np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError("labels: single-label labels must be whole numbers (class indices)")
        arr = arr.astype(np.int64)
    if arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer):
        return arr
    if arr.ndim == 2 and (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.number)):
        return arr.astype(np.float32)
    raise ValueError(
        f"labels: expected [n] class indices or an [n, K] 0/1 matrix, got shape {arr.shape} "
        f"dtype {arr.dtype}"
    )


def _scalar(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic):
        value = value.item()
    return value


def bank_from_arrays(
    *,
    target_name: str,
    labels: Any,
    features: Mapping[str, Any] | Sequence[Any],
    num_classes: int | None = None,
    names: Sequence[str] | None = None,
    architectures: str | Mapping[str, str] | Sequence[str] = DEFAULT_ARCHITECTURE,
    probs: Mapping[str, Any] | Sequence[Any] | None = None,
    depths: Mapping[str, int] | Sequence[int | None] | None = None,
    sources: Mapping[str, str] | Sequence[str | None] | None = None,
    source_images: Mapping[str, int] | Sequence[int | None] | None = None,
    num_images: int | None = None,
    reference_features: Any = None,
    meta: Mapping[str, Mapping] | Sequence[Mapping | None] | None = None,
    task: str | None = None,
) -> Bank:
    """Build and validate a :class:`Bank` from in-memory arrays.

    task: ``"classification"``, ``"multilabel"`` or ``"regression"``; None (default) infers
    classification from ``[n]`` labels and multi-label from ``[n, K]`` labels.
    labels: int ``[n]`` (float arrays of whole numbers are accepted) or 0/1 ``[n, K]``; for
    regression, finite real values ``[n]`` or ``[n, C]`` (C outputs, each varying over the
    probe; num_classes must then be None).
    features: ``{name: [n, d]}`` or a sequence of ``[n, d]`` (then ``names``, default
    ``model000``, ``model001``, ...). float16/float32 are kept, other real dtypes become
    float32. num_classes: default ``max(labels) + 1`` or ``K``. architectures: one string for
    all models (default ``"unknown"``), or per model. probs, depths, sources, source_images,
    meta: per model, as a mapping from name (models may be left out) or a sequence in model
    order. reference_features: ``[n, d_r]`` or ``{architecture: [n, d_r]}``.
    Raises :class:`BankError` (a ValueError) on anything the file format would reject.
    """
    bank = _assemble_bank(
        target_name=target_name,
        labels=labels,
        features=features,
        num_classes=num_classes,
        names=names,
        architectures=architectures,
        probs=probs,
        depths=depths,
        sources=sources,
        source_images=source_images,
        num_images=num_images,
        reference_features=reference_features,
        meta=meta,
        task=task,
    )
    return validate_tree(bank_to_tree(bank), shard=_MEMORY)


def _assemble_bank(
    *,
    target_name: str,
    labels: Any,
    features: Mapping[str, Any] | Sequence[Any],
    num_classes: Any,
    names: Sequence[str] | None,
    architectures: Any,
    probs: Any,
    depths: Any,
    sources: Any,
    source_images: Any,
    num_images: Any,
    reference_features: Any,
    meta: Any,
    task: str | None = None,
) -> Bank:
    """The :class:`Bank` of :func:`bank_from_arrays`, not yet validated."""
    task = _check_task_name(task)
    lab = _as_labels(labels, task)
    if isinstance(features, Mapping):
        if names is not None:
            raise ValueError("names: give names only when features is a sequence")
        model_names = [str(k) for k in features]
        feats = list(features.values())
    else:
        if isinstance(features, np.ndarray) and features.ndim != 3:
            raise ValueError(
                "features: expected a mapping name -> [n, d] array or a sequence of them"
            )
        feats = list(features)
        if names is None:
            model_names = [f"model{i:03d}" for i in range(len(feats))]
        else:
            model_names = [str(n) for n in names]
            if len(model_names) != len(feats):
                raise ValueError(f"names: {len(model_names)} names for {len(feats)} models")
    if not feats:
        raise ValueError("features: no models given")
    if task == REGRESSION:
        if num_classes is not None:
            raise ValueError("num_classes: a regression target has no classes; leave it None")
        num_classes = 1 if lab.ndim < 2 else lab.shape[1]
    elif num_classes is None:
        if lab.ndim == 2:
            num_classes = lab.shape[1]
        else:
            num_classes = int(lab.max()) + 1 if lab.size else 0
    if isinstance(architectures, str):
        archs = [architectures] * len(feats)
    else:
        archs = _per_model(architectures, model_names, "architectures")
    prob_list = _per_model(probs, model_names, "probs")
    depth_list = _per_model(depths, model_names, "depths")
    source_list = _per_model(sources, model_names, "sources")
    images_list = _per_model(source_images, model_names, "source_images")
    meta_list = _per_model(meta, model_names, "meta")
    if isinstance(reference_features, Mapping):
        ref: Any = {
            str(k): _as_float_array(v, f"reference_features[{k!r}]", keep=_FLOAT_DTYPES)
            for k, v in reference_features.items()
        }
    elif reference_features is not None:
        ref = _as_float_array(reference_features, "reference_features", keep=_FLOAT_DTYPES)
    else:
        ref = None
    target = Target(str(target_name), lab, _scalar(num_classes), _scalar(num_images), ref, task)
    models = []
    for i, name in enumerate(model_names):
        p = prob_list[i]
        models.append(
            ModelEntry(
                name=name,
                features=_as_float_array(feats[i], f"features[{name!r}]", keep=_FEATURE_DTYPES),
                architecture=archs[i],
                probs=None
                if p is None
                else _as_float_array(p, f"probs[{name!r}]", keep=_FLOAT_DTYPES),
                depth=_scalar(depth_list[i]),
                source=_scalar(source_list[i]),
                source_images=_scalar(images_list[i]),
                meta={} if meta_list[i] is None else meta_list[i],
            )
        )
    return Bank(target, models)


_NPZ_KEYS = ("features", "probs", "architecture", "depth", "source", "source_images")


def npz_folder_to_bank(
    folder: str | os.PathLike,
    *,
    labels: Any,
    target_name: str,
    num_classes: int | None = None,
    architecture: str = DEFAULT_ARCHITECTURE,
    num_images: int | None = None,
    reference_features: Any = None,
    labels_source: str | os.PathLike | None = None,
    task: str | None = None,
) -> Bank:
    """Build a bank from a folder of per-model ``*.npz`` files (sorted by name).

    Each file holds ``features`` ``[n, d]`` and optionally ``probs`` ``[n, z]`` and the scalars
    (0-d arrays) ``architecture``, ``depth``, ``source``, ``source_images``; the model name is
    the file stem. ``architecture`` is the default for files without one (as in
    :func:`bank_from_arrays`). Files are loaded with
    ``allow_pickle=False``; other keys are rejected; a corrupt file raises :class:`BankError`
    naming it. Errors in a model's values name its ``.npz`` file; errors in the target name
    ``labels_source`` (where the labels came from, e.g. their file; default ``<memory>``).
    ``task``: as in :func:`bank_from_arrays` (None infers classification or multi-label).
    """
    labels_shard = _MEMORY if labels_source is None else str(labels_source)
    try:
        task = _check_task_name(task)
        labels = _as_labels(labels, task)
    except BankError:
        raise
    except ValueError as exc:
        raise BankError(f"{labels_shard}: {exc}", shard=labels_shard, field="labels") from None
    n = labels.shape[0]
    labels_what = "the labels" if labels_source is None else f"the labels ({labels_source})"
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"folder: {root} is not a directory")
    files = sorted(p for p in root.glob("*.npz") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"folder: {root} holds no *.npz files")
    feats: dict[str, np.ndarray] = {}
    extras: dict[str, dict[str, Any]] = {k: {} for k in _NPZ_KEYS[1:]}
    for path in files:
        loc = _Loc(str(path), "model", path.stem)
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):  # np.load goes by content
                raise ValueError("it is a single .npy array, not a zip of named arrays")
            with loaded as npz:
                data = {k: npz[k] for k in npz.files}
        except _LOAD_ERRORS as exc:
            raise loc.error(
                None, f"cannot read the .npz file ({type(exc).__name__}: {exc})"
            ) from None
        unknown = sorted(set(data) - set(_NPZ_KEYS))
        if unknown:
            raise loc.error(unknown[0], f"unknown key (allowed: {', '.join(_NPZ_KEYS)})")
        if "features" not in data:
            raise loc.error("features", "is missing from the .npz file")
        feats[path.stem] = data["features"]
        for key in ("features", "probs"):
            rows = np.shape(data[key])[0] if np.ndim(data.get(key)) == 2 else n
            if rows != n:
                raise loc.error(
                    key,
                    f"{rows} rows but {labels_what} have {n} entries; features, "
                    "probabilities and labels must come from the same probe images in the same "
                    "order",
                )
        for key in _NPZ_KEYS[1:]:
            if key in data:
                value = data[key] if key == "probs" else _scalar(data[key])
                if key != "probs" and isinstance(value, np.ndarray):
                    raise loc.error(key, f"must be a scalar (0-d array), got shape {value.shape}")
                extras[key][path.stem] = value
        if "architecture" not in data:
            extras["architecture"][path.stem] = architecture
    shards = {path.stem: str(path) for path in files}
    try:
        bank = _assemble_bank(
            target_name=target_name,
            labels=labels,
            features=feats,
            num_classes=num_classes,
            names=None,
            architectures=extras["architecture"],
            probs=extras["probs"] or None,
            depths=extras["depth"] or None,
            sources=extras["source"] or None,
            source_images=extras["source_images"] or None,
            num_images=num_images,
            reference_features=reference_features,
            meta=None,
            task=task,
        )
    except BankError:
        raise
    except ValueError as exc:  # e.g. "features['alpha']: expected real numbers, ..."
        raise BankError(f"{root}: {exc}", shard=str(root)) from None
    # validate_tree with each model checked against its own .npz file
    tree = bank_to_tree(bank)
    target = _parse_target(tree["target"], labels_shard)
    models = [_parse_model(m, i, target, shards[m["name"]]) for i, m in enumerate(tree["models"])]
    _check_unique((m.name, shards[m.name]) for m in models)
    return Bank(target, models)
