"""Validation of a decoded bank tree (and of in-memory banks): every field, with errors that name
the shard, the model and the field; and the tree a bank is written as."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from parc_jax.bank._format import (
    _FEATURE_DTYPES,
    _FLOAT_DTYPES,
    _MEMORY,
    _MODEL_OPTIONAL,
    _MODEL_REQUIRED,
    _TARGET_OPTIONAL,
    _TARGET_OPTIONAL_V2,
    _TARGET_REQUIRED,
    _TARGET_REQUIRED_V2,
    _TOP_KEYS,
    CLASSIFICATION,
    FORMAT,
    MULTILABEL,
    PROB_SUM_TOL,
    READ_VERSIONS,
    REGRESSION,
    TASKS,
    VERSION,
    Bank,
    BankError,
    ModelEntry,
    Target,
    _Loc,
)
from parc_jax.validation import check_class_coverage


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _str(value: Any, loc: _Loc, fld: str) -> str:
    if not isinstance(value, str) or not value:
        raise loc.error(fld, f"must be a non-empty string, got {_type_name(value)} {value!r:.40}")
    return str(value)


def _name_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a model name, or None when it can."""
    if not isinstance(value, str) or not value:
        return f"must be a non-empty string, got {_type_name(value)} {value!r:.40}"
    if not value.strip():
        return f"must not be blank (whitespace only), got {value!r:.40}"
    for ch in value:
        if unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029":
            return (
                f"must not contain control characters such as newlines or tabs "
                f"({ch!r} found), got {value!r:.60}"
            )
    return None


def _int(value: Any, loc: _Loc, fld: str, *, minimum: int) -> int:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise loc.error(fld, f"must be an integer, got {_type_name(value)} {value!r:.40}")
    out = int(value)
    if out < minimum:
        raise loc.error(fld, f"must be >= {minimum}, got {out}")
    return out


def _array(value: Any, loc: _Loc, fld: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise loc.error(
            fld,
            f"must be an array (a NumPy array in the bank's msgpack array extension), "
            f"got {_type_name(value)}",
        )
    return value


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _check_float_matrix(
    value: Any, loc: _Loc, fld: str, *, n: int, dtypes: tuple[np.dtype, ...], hint: str
) -> np.ndarray:
    arr = _array(value, loc, fld)
    if arr.dtype not in dtypes:
        allowed = " or ".join(d.name for d in dtypes)
        raise loc.error(fld, f"dtype {arr.dtype} is not allowed; store {allowed}{hint}")
    if arr.ndim != 2:
        raise loc.error(fld, f"must be 2-D [n, d], got shape {arr.shape}")
    if arr.shape[0] != n:
        raise loc.error(
            fld,
            f"{arr.shape[0]} rows but the target has {n} labels; features, probabilities and "
            "labels must come from the same probe images in the same order",
        )
    if arr.shape[1] < 1:
        raise loc.error(fld, f"has no columns (shape {arr.shape})")
    finite = np.isfinite(arr)
    if not finite.all():
        r, c = _first_bad(~finite)
        overflow = (
            " (float16 overflows beyond 65504: store float32)" if arr.dtype == np.float16 else ""
        )
        raise loc.error(
            fld,
            f"non-finite value {arr[r, c]} at row {r}, column {c}; re-extract or clean the "
            f"values{overflow}",
        )
    return arr


def _check_features(value: Any, loc: _Loc, n: int) -> np.ndarray:
    return _check_float_matrix(
        value,
        loc,
        "features",
        n=n,
        dtypes=_FEATURE_DTYPES,
        hint=" (write_bank(..., features_dtype='float32') converts)",
    )


def _check_probs(value: Any, loc: _Loc, n: int) -> np.ndarray:
    arr = _check_float_matrix(value, loc, "probs", n=n, dtypes=_FLOAT_DTYPES, hint="")
    neg = arr < 0
    if neg.any():
        r, c = _first_bad(neg)
        raise loc.error("probs", f"negative probability {arr[r, c]} at row {r}, column {c}")
    # float16 sums are taken after upcasting, as the contract says
    sums = arr.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1.0) > PROB_SUM_TOL
    if off.any():
        r = int(np.argmax(off))
        raise loc.error(
            "probs",
            f"row {r} sums to {sums[r]:.6g}, not 1 (tolerance {PROB_SUM_TOL}); store softmax "
            "probabilities, not logits",
        )
    return arr


def _check_labels(value: Any, num_classes: int, loc: _Loc) -> np.ndarray:
    arr = _array(value, loc, "labels")
    if arr.ndim == 1:
        if not np.issubdtype(arr.dtype, np.integer):
            raise loc.error(
                "labels",
                f"single-label labels must be integers, got dtype {arr.dtype}; multi-label "
                "targets use a 0/1 matrix [n, K]",
            )
        if arr.shape[0] < 2:
            raise loc.error("labels", f"needs at least 2 probe images, got {arr.shape[0]}")
        bad = (arr < 0) | (arr >= num_classes)
        if bad.any():
            (i,) = _first_bad(bad)
            raise loc.error(
                "labels",
                f"label {int(arr[i])} at row {i} is outside 0..{num_classes - 1}; fix the labels "
                "or num_classes",
            )
        try:
            check_class_coverage(arr, num_classes, where=f"{loc.shard}: target field 'labels'")
        except ValueError as exc:
            raise BankError(str(exc), shard=loc.shard, field="labels") from None
        return arr.astype(np.int32)
    if arr.ndim == 2:
        if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.number)):
            raise loc.error("labels", f"multi-label matrix has dtype {arr.dtype}; use 0/1 floats")
        if arr.shape[0] < 2:
            raise loc.error("labels", f"needs at least 2 probe images, got {arr.shape[0]}")
        if arr.shape[1] != num_classes:
            raise loc.error(
                "labels",
                f"multi-label matrix has {arr.shape[1]} columns but num_classes is {num_classes}; "
                "they must be equal",
            )
        bad = ~((arr == 0) | (arr == 1))
        if bad.any():
            r, c = _first_bad(bad)
            raise loc.error(
                "labels", f"multi-label value {arr[r, c]} at row {r}, column {c} is not 0 or 1"
            )
        out = arr.astype(np.float32)
        sums = out.sum(axis=1)
        flat = (sums == 0) | (sums == num_classes)
        if flat.any():
            r = int(np.argmax(flat))
            kind = "all 0" if sums[r] == 0 else "all 1"
            raise loc.error(
                "labels",
                f"multi-label row {r} is {kind}: such a row has no correlation with the others; "
                "drop that image from the probe set",
            )
        return out
    raise loc.error(
        "labels", f"must be [n] class indices or an [n, K] 0/1 matrix, got shape {arr.shape}"
    )


def _check_regression_labels(value: Any, loc: _Loc) -> np.ndarray:
    """Regression targets: finite real values ``[n]`` or ``[n, C]``, each output varying over
    the probe; returned as float64 in the shape given."""
    arr = _array(value, loc, "labels")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise loc.error("labels", f"regression targets must be real numbers, got dtype {arr.dtype}")
    if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] < 1):
        raise loc.error(
            "labels", f"regression targets must be [n] or [n, C] real values, got shape {arr.shape}"
        )
    if arr.shape[0] < 2:
        raise loc.error("labels", f"needs at least 2 probe images, got {arr.shape[0]}")
    out = arr.astype(np.float64)
    finite = np.isfinite(out)
    if not finite.all():
        where = _first_bad(~finite)
        raise loc.error(
            "labels", f"non-finite regression target {arr[where]} at {where}; clean or drop it"
        )
    cols = out.reshape(out.shape[0], -1)
    flat = np.flatnonzero(np.all(cols == cols[:1], axis=0))
    if flat.size:
        raise loc.error(
            "labels",
            f"regression output {int(flat[0])} is the same for every probe image: it has "
            "nothing to predict; drop that output",
        )
    return out


def _check_task(value: Any, labels: Any, loc: _Loc) -> str:
    """The declared task, and that the labels' shape fits it."""
    task = _str(value, loc, "task")
    if task not in TASKS:
        raise loc.error("task", f"is {task!r:.40}; expected one of {', '.join(TASKS)}")
    ndim = np.ndim(labels) if isinstance(labels, np.ndarray) else None
    if task == CLASSIFICATION and ndim == 2:
        raise loc.error(
            "labels",
            f"task 'classification' takes [n] class indices, got shape {labels.shape}; a "
            "[n, K] 0/1 matrix is task 'multilabel', real-valued outputs task 'regression'",
        )
    if task == MULTILABEL and ndim == 1:
        raise loc.error(
            "labels",
            f"task 'multilabel' takes an [n, K] 0/1 matrix, got shape {labels.shape}; [n] class "
            "indices are task 'classification'",
        )
    return task


def _check_meta(value: Any, loc: _Loc, path: str, depth: int = 0) -> Any:
    """Return ``value`` as msgpack-native Python (NumPy scalars become Python scalars)."""
    if depth > 64:
        raise loc.error(path, "nested more than 64 levels deep")
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, float, str, bytes)):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise loc.error(path, f"integer {value} does not fit in 64 bits; store it as a string")
        return value
    if isinstance(value, (list, tuple)):
        return [_check_meta(v, loc, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise loc.error(path, f"key {k!r} is not a string; meta keys must be strings")
            out[str(k)] = _check_meta(v, loc, f"{path}[{k!r}]", depth + 1)
        return out
    hint = " (use array.tolist(), or a bank field)" if isinstance(value, np.ndarray) else ""
    raise loc.error(path, f"{_type_name(value)} is not a msgpack-native value{hint}")


def _mapping(value: Any, loc: _Loc, fld: str | None) -> Mapping:
    if not isinstance(value, Mapping):
        raise loc.error(fld, f"must be a map, got {_type_name(value)}")
    return value


def _check_keys(
    tree: Mapping, loc: _Loc, required: tuple[str, ...], optional: tuple[str, ...]
) -> None:
    for key in required:
        if tree.get(key) is None:
            raise loc.error(key, "is missing (required)")
    unknown = sorted(str(k) for k in tree if k not in required and k not in optional)
    if unknown:
        allowed = ", ".join(required + optional)
        raise loc.error(
            unknown[0],
            f"unknown field (allowed: {allowed}); put free-form information in 'meta'"
            if "meta" in optional
            else f"unknown field (allowed: {allowed})",
        )


def _check_top(tree: Any, shard: str) -> int:
    """format, version, and the set of top-level keys; returns the version."""
    loc = _Loc(shard)
    if not isinstance(tree, Mapping):
        raise BankError(
            f"{shard}: not a parc bank: the top level is a {_type_name(tree)}, expected a map "
            f"with format '{FORMAT}'",
            shard=shard,
        )
    fmt = tree.get("format")
    if fmt is None:
        raise loc.error("format", f"is missing: this is not a parc bank (expected '{FORMAT}')")
    if fmt != FORMAT:
        raise loc.error("format", f"is {fmt!r:.60}, expected '{FORMAT}': not a parc bank")
    version = tree.get("version")
    if version is None:
        raise loc.error("version", f"is missing; parc banks have version {VERSION}")
    version = _int(version, loc, "version", minimum=0)
    if version not in READ_VERSIONS:
        readable = " and ".join(map(str, READ_VERSIONS))
        raise loc.error(
            "version",
            f"version {version} is not supported (this parc_jax reads versions {readable}); "
            f"upgrade parc_jax or rewrite the bank in version {VERSION}",
        )
    _check_keys(tree, loc, _TOP_KEYS, ())
    return version


def _parse_target(tree: Any, shard: str, version: int = VERSION) -> Target:
    """The target of a bank of ``version``: version 1 has no ``task`` (inferred from the
    labels' shape, as version-1 readers did); version 2 requires it, and a regression target
    has no ``num_classes`` (the number of outputs takes its place in memory)."""
    loc = _Loc(shard, "target")
    tree = _mapping(tree, _Loc(shard), "target")
    if version == 1:
        if tree.get("task") is not None:
            raise loc.error(
                "task", "is a version-2 field; a bank that declares its task must say version 2"
            )
        _check_keys(tree, loc, _TARGET_REQUIRED, _TARGET_OPTIONAL)
        task = None
    else:
        _check_keys(tree, loc, _TARGET_REQUIRED_V2, _TARGET_OPTIONAL_V2)
        task = _check_task(tree["task"], tree["labels"], loc)
    name = _str(tree["name"], loc, "name")
    if task == REGRESSION:
        if tree.get("num_classes") is not None:
            raise loc.error("num_classes", "a regression target has no classes; drop num_classes")
        labels = _check_regression_labels(tree["labels"], loc)
        num_classes = 1 if labels.ndim == 1 else labels.shape[1]
    else:
        if tree.get("num_classes") is None:
            raise loc.error("num_classes", "is missing (required for a classification target)")
        num_classes = _int(tree["num_classes"], loc, "num_classes", minimum=2)
        labels = _check_labels(tree["labels"], num_classes, loc)
    n = labels.shape[0]
    num_images = tree.get("num_images")
    if num_images is not None:
        num_images = _int(num_images, loc, "num_images", minimum=1)
    ref = tree.get("reference_features")
    if isinstance(ref, Mapping):
        checked = {}
        for arch, arr in ref.items():
            arch = _str(arch, loc, "reference_features")
            fld = f"reference_features[{arch!r}]"
            checked[arch] = _check_float_matrix(arr, loc, fld, n=n, dtypes=_FLOAT_DTYPES, hint="")
        ref = checked or None
    elif ref is not None:
        ref = _check_float_matrix(
            ref, loc, "reference_features", n=n, dtypes=_FLOAT_DTYPES, hint=""
        )
    return Target(name, labels, num_classes, num_images, ref, task)


def _parse_model(tree: Any, index: int, target: Target, shard: str) -> ModelEntry:
    loc = _Loc(shard, "model", index)
    tree = _mapping(tree, loc, None)
    name = tree.get("name")
    problem = _name_problem(name)
    if problem is None:
        loc = _Loc(shard, "model", str(name))
    _check_keys(tree, loc, _MODEL_REQUIRED, _MODEL_OPTIONAL)
    if problem is not None:
        raise loc.error("name", problem)
    features = _check_features(tree["features"], loc, target.n)
    architecture = _str(tree["architecture"], loc, "architecture")
    probs = tree.get("probs")
    if probs is not None:
        probs = _check_probs(probs, loc, target.n)
    depth = tree.get("depth")
    if depth is not None:
        depth = _int(depth, loc, "depth", minimum=1)
    source = tree.get("source")
    if source is not None:
        source = _str(source, loc, "source")
    source_images = tree.get("source_images")
    if source_images is not None:
        source_images = _int(source_images, loc, "source_images", minimum=1)
    meta = tree.get("meta")
    meta = {} if meta is None else _check_meta(_mapping(meta, loc, "meta"), loc, "meta")
    return ModelEntry(name, features, architecture, probs, depth, source, source_images, meta)


def _model_list(value: Any, shard: str) -> list:
    """Models as a list; also accepts the ``{"0": ..., "1": ...}`` map form."""
    loc = _Loc(shard)
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, Mapping):
        try:
            keyed = sorted((int(k), v) for k, v in value.items())
        except (TypeError, ValueError):
            keyed = None
        if keyed is None or [k for k, _ in keyed] != list(range(len(keyed))):
            raise loc.error("models", "a map of models must have keys '0', '1', ... in sequence")
        return [v for _, v in keyed]
    raise loc.error("models", f"must be a list of model maps, got {_type_name(value)}")


def _check_unique(names: Iterable[tuple[str, str]]) -> None:
    """names: (name, shard) pairs; raise on the first repeat, naming both shards."""
    seen: dict[str, str] = {}
    for name, shard in names:
        if name in seen:
            where = "this shard" if seen[name] == shard else seen[name]
            raise _Loc(shard, "model", name).error(
                "name",
                f"duplicate model name (already in {where}); model names must be unique "
                "across the bank: rename one",
            )
        seen[name] = shard


def validate_tree(tree: Any, *, shard: str = _MEMORY) -> Bank:
    """Check a restored bank tree against the format and return it as a :class:`Bank`.

    tree: the nested dicts ``msgpack_restore`` gives (``models`` as a list or a ``{"0": ...}``
    map). Raises :class:`BankError` naming ``shard``, the model and the field on the first
    problem. Arrays are not copied except labels (normalised to int32 / float32).
    """
    shard = str(shard)
    version = _check_top(tree, shard)
    target = _parse_target(tree["target"], shard, version)
    raw = _model_list(tree["models"], shard)
    if not raw:
        raise _Loc(shard).error("models", "is empty; a bank needs at least one model")
    models = [_parse_model(m, i, target, shard) for i, m in enumerate(raw)]
    _check_unique((m.name, shard) for m in models)
    return Bank(target, models)


def validate_bank(obj: Bank | Mapping, *, shard: str | None = None) -> Bank:
    """Validate a :class:`Bank` or a restored tree; returns the checked :class:`Bank`."""
    if isinstance(obj, Bank):
        obj = bank_to_tree(obj)
    return validate_tree(obj, shard=_MEMORY if shard is None else shard)


# --------------------------------------------------------------------------------------------
# Trees (what gets serialised)


def _tree_int(value: Any) -> Any:
    """Integers (not bools) as Python int; anything else unchanged, for validation to reject."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return value


def _target_to_tree(target: Target) -> dict[str, Any]:
    tree: dict[str, Any] = {"name": target.name, "task": target.task}
    tree["labels"] = np.asarray(target.labels)
    if target.task != REGRESSION:
        tree["num_classes"] = _tree_int(target.num_classes)
    if target.num_images is not None:
        tree["num_images"] = _tree_int(target.num_images)
    ref = target.reference_features
    if isinstance(ref, Mapping):
        tree["reference_features"] = {str(k): np.asarray(v) for k, v in ref.items()}
    elif ref is not None:
        tree["reference_features"] = np.asarray(ref)
    return tree


def _model_to_tree(model: ModelEntry, features_dtype: np.dtype | None = None) -> dict[str, Any]:
    features = np.asarray(model.features)
    if features_dtype is not None and features.dtype != features_dtype:
        with np.errstate(over="ignore"):  # float16 overflow is reported by validation
            features = features.astype(features_dtype)
    tree: dict[str, Any] = {
        "name": model.name,
        "features": features,
        "architecture": model.architecture,
    }
    if model.probs is not None:
        tree["probs"] = np.asarray(model.probs)
    for key in ("depth", "source_images"):
        value = getattr(model, key)
        if value is not None:
            tree[key] = _tree_int(value)
    if model.source is not None:
        tree["source"] = model.source
    if model.meta:
        tree["meta"] = model.meta
    return tree


def bank_to_tree(bank: Bank) -> dict[str, Any]:
    """The dict that gets serialised: format, version, target and a list of model maps."""
    _require_bank(bank)
    return {
        "format": FORMAT,
        "version": VERSION,
        "target": _target_to_tree(bank.target),
        "models": [_model_to_tree(m) for m in bank.models],
    }


def _require_bank(bank: Any) -> None:
    if not isinstance(bank, Bank) or not isinstance(bank.target, Target):
        raise ValueError(
            f"bank: expected a parc_jax.bank.Bank, got {_type_name(bank)}; build one with "
            "bank_from_arrays or read_bank"
        )
