"""Model bank files: format, validation, streaming reader, writer and CLI.

A bank holds one target (probe labels, optional reference features) and the probe features of
many source models. ``bank.msgpack`` is one msgpack map; NumPy arrays are Flax's ndarray
extension, so ``flax.serialization.msgpack_restore`` gives nested dicts of NumPy arrays::

    {"format": "parc-bank", "version": 1,
     "target": {"name": str, "labels": int [n] or 0/1 float [n, K], "num_classes": int,
                "num_images": int (optional),
                "reference_features": float [n, d_r] or {architecture: float [n, d_r]}
                                      (optional)},
     "models": [{"name": str, "features": float16|float32 [n, d], "architecture": str,
                 "probs": float [n, z] (optional), "depth": int (optional),
                 "source": str (optional), "source_images": int (optional),
                 "meta": map of msgpack-native values (optional)}, ...]}

Readers accept ``models`` as a list or as a map ``{"0": ..., "1": ...}`` (what
``flax.serialization.to_state_dict`` makes of a list); writers emit a list, which round-trips.
Unknown keys are rejected (a misspelt ``"prob"`` would otherwise silently drop LEEP/NCE);
free-form information belongs in ``meta``.

A bank may also be a directory of such files (shards, ``*.msgpack`` sorted by name, hidden
files ignored) describing the same target. Shards are read one at a time.

Reading goes through a small structural msgpack scanner: it walks the headers of a shard,
seeking over string, binary and extension payloads, and records where each top-level value and
each model starts and ends. Each piece is then decoded on its own with ``msgpack_restore``.
That makes ``open_bank`` cheap (headers, targets and model names only; array payloads are
never read) and also un-chunks Flax's chunked arrays (>1 GiB) inside model entries, which a
whole-file ``msgpack_restore`` would leave chunked because Flax does not descend into lists.
Nothing here uses pickle.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import unicodedata
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
import numpy as np
from flax import serialization

from parc_jax.atomic import atomic_file
from parc_jax.validation import check_class_coverage

__all__ = [
    "FORMAT",
    "VERSION",
    "Bank",
    "BankError",
    "BankReader",
    "ModelEntry",
    "Target",
    "bank_from_arrays",
    "bank_info",
    "bank_to_tree",
    "iter_models",
    "main",
    "merge_banks",
    "npz_folder_to_bank",
    "open_bank",
    "read_bank",
    "validate_bank",
    "validate_tree",
    "write_bank",
]

FORMAT = "parc-bank"
VERSION = 1
PROB_SUM_TOL = 1e-3
_MEMORY = "<memory>"

_TOP_KEYS = ("format", "version", "target", "models")
_TARGET_REQUIRED = ("name", "labels", "num_classes")
_TARGET_OPTIONAL = ("num_images", "reference_features")
_MODEL_REQUIRED = ("name", "features", "architecture")
_MODEL_OPTIONAL = ("probs", "depth", "source", "source_images", "meta")
_FEATURE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_HASH_BLOCK = 1 << 20
# what np.load and reading an .npz member raise on a corrupt or unreadable file
_LOAD_ERRORS = (
    OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
    KeyError, RuntimeError,
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Errors


class BankError(ValueError):
    """A bank file or in-memory bank breaks the format.

    The message names the shard (file, or ``<memory>``), the model (name, or ``#index`` when
    the name itself is unusable) or the target, the field, and what to do. The same pieces are
    kept as attributes ``shard``, ``model`` and ``field`` (``None`` where not applicable).
    """

    def __init__(
        self,
        message: str,
        *,
        shard: str | None = None,
        model: str | int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(" ".join(str(message).splitlines()))
        self.shard = shard
        self.model = model
        self.field = field


@dataclass(frozen=True)
class _Loc:
    """Where a value sits, for error messages: shard, and model (name/index) or target."""

    shard: str
    scope: str = "bank"  # "bank" | "target" | "model"
    model: str | int | None = None

    def error(self, fld: str | None, msg: str) -> BankError:
        parts = [self.shard]
        if self.scope == "model":
            who = f"model '{self.model}'" if isinstance(self.model, str) else f"model #{self.model}"
            parts.append(f"{who} field '{fld}'" if fld else who)
        elif self.scope == "target":
            parts.append(f"target field '{fld}'" if fld else "target")
        elif fld:
            parts.append(f"field '{fld}'")
        text = ": ".join(parts) + ": " + msg
        return BankError(
            text.replace("\n", " "),
            shard=self.shard,
            model=self.model if self.scope == "model" else None,
            field=fld,
        )


def _corrupt(shard: str, detail: str) -> BankError:
    return BankError(
        f"{shard}: not a valid parc bank (truncated or corrupt msgpack: {detail}); "
        "rewrite the file with parc_jax.bank.write_bank",
        shard=shard,
    )


# --------------------------------------------------------------------------------------------
# Data classes


@dataclass(eq=False)
class Target:
    """The target task of a bank.

    labels: int ``[n]`` in ``0..K-1`` (single-label) or 0/1 float ``[n, K]`` (multi-label).
    reference_features: ``[n, d_r]`` features of a model trained on the target (used by rsa and
    dds for every model), or ``{architecture: [n, d_r]}`` to pick the scored model's own
    architecture, or None.
    """

    name: str
    labels: np.ndarray
    num_classes: int
    num_images: int | None = None
    reference_features: np.ndarray | dict[str, np.ndarray] | None = None

    @property
    def multilabel(self) -> bool:
        return np.ndim(self.labels) == 2

    @property
    def n(self) -> int:
        """Number of probe images."""
        return int(np.shape(self.labels)[0])

    def reference_for(self, architecture: str | None) -> np.ndarray | None:
        """Reference features ``[n, d_r]`` for a model of ``architecture``, or None."""
        index = self.reference_index(architecture)
        return None if index is None else self.references()[index]

    def references(self) -> list[np.ndarray]:
        """The distinct reference feature arrays, in a fixed order (see reference_index)."""
        ref = self.reference_features
        if ref is None:
            return []
        return [ref] if isinstance(ref, np.ndarray) else list(ref.values())

    def reference_index(self, architecture: str | None) -> int | None:
        """Position in :meth:`references` of the reference a model of ``architecture`` is
        compared with (None: there is none)."""
        ref = self.reference_features
        if ref is None:
            return None
        if isinstance(ref, np.ndarray):
            return 0
        keys = list(ref)
        return keys.index(architecture) if architecture in keys else None


@dataclass(eq=False)
class ModelEntry:
    """One source model: probe features ``[n, d]`` (float16/float32) and optional extras.

    probs: ``[n, z]`` source-class probabilities (rows sum to 1). depth and source_images are
    positive ints (heuristic, depth prior). meta: free-form msgpack-native values.
    """

    name: str
    features: np.ndarray
    architecture: str
    probs: np.ndarray | None = None
    depth: int | None = None
    source: str | None = None
    source_images: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        """Feature width d."""
        return int(np.shape(self.features)[1])


@dataclass(eq=False)
class Bank:
    """A target and its source models, in memory."""

    target: Target
    models: list[ModelEntry]

    def __len__(self) -> int:
        return len(self.models)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]


# --------------------------------------------------------------------------------------------
# Field checks (host side, NumPy)


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
            f"must be an array (a NumPy array written with flax.serialization.msgpack_serialize), "
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


def _check_top(tree: Any, shard: str) -> None:
    """format, version, and the set of top-level keys."""
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
    if version != VERSION:
        raise loc.error(
            "version",
            f"version {version} is not supported (this parc_jax reads version {VERSION}); "
            "upgrade parc_jax or rewrite the bank in version 1",
        )
    _check_keys(tree, loc, _TOP_KEYS, ())


def _parse_target(tree: Any, shard: str) -> Target:
    loc = _Loc(shard, "target")
    tree = _mapping(tree, _Loc(shard), "target")
    _check_keys(tree, loc, _TARGET_REQUIRED, _TARGET_OPTIONAL)
    name = _str(tree["name"], loc, "name")
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
    return Target(name, labels, num_classes, num_images, ref)


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
    _check_top(tree, shard)
    target = _parse_target(tree["target"], shard)
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
    tree: dict[str, Any] = {
        "name": target.name,
        "labels": np.asarray(target.labels),
        "num_classes": _tree_int(target.num_classes),
    }
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


# --------------------------------------------------------------------------------------------
# Structural msgpack scanner

# type byte -> payload bytes that follow (fixed-size scalars and fixext: type byte + data)
_FIXED = {
    0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,
    0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,
}  # fmt: skip
# type byte -> (kind, bytes of the length field, extra payload bytes after it: ext type byte)
_SIZED = {
    0xC4: ("raw", 1, 0), 0xC5: ("raw", 2, 0), 0xC6: ("raw", 4, 0),
    0xC7: ("raw", 1, 1), 0xC8: ("raw", 2, 1), 0xC9: ("raw", 4, 1),
    0xD9: ("str", 1, 0), 0xDA: ("str", 2, 0), 0xDB: ("str", 4, 0),
    0xDC: ("array", 2, 0), 0xDD: ("array", 4, 0), 0xDE: ("map", 2, 0), 0xDF: ("map", 4, 0),
}  # fmt: skip


class _Scanner:
    """Walks msgpack headers in a file, seeking over payloads (memory: O(1))."""

    def __init__(self, f: BinaryIO, size: int, shard: str) -> None:
        self.f, self.size, self.shard = f, size, shard

    def tell(self) -> int:
        return self.f.tell()

    def _read(self, k: int) -> bytes:
        data = self.f.read(k)
        if len(data) < k:
            raise _corrupt(self.shard, f"unexpected end of file at byte {self.size}")
        return data

    def header(self) -> tuple[str, int]:
        """(kind, n): map/array with n entries, str with n bytes, raw with n bytes to skip."""
        pos = self.f.tell()
        t = self._read(1)[0]
        if t <= 0x7F or t >= 0xE0 or t in (0xC0, 0xC2, 0xC3):
            return "raw", 0
        if t <= 0x8F:
            return "map", t & 0x0F
        if t <= 0x9F:
            return "array", t & 0x0F
        if t <= 0xBF:
            return "str", t & 0x1F
        if t in _FIXED:
            return "raw", _FIXED[t]
        if t in _SIZED:
            kind, width, extra = _SIZED[t]
            return kind, int.from_bytes(self._read(width), "big") + extra
        raise _corrupt(self.shard, f"byte 0x{t:02x} at offset {pos} is not a msgpack type")

    def seek_over(self, n: int) -> None:
        if self.f.seek(n, os.SEEK_CUR) > self.size:
            raise _corrupt(self.shard, f"unexpected end of file at byte {self.size}")

    def skip(self) -> None:
        pending = 1  # iterative, so hostile nesting cannot exhaust the Python stack
        while pending:
            kind, n = self.header()
            pending -= 1
            if kind == "map":
                pending += 2 * n
            elif kind == "array":
                pending += n
            else:
                self.seek_over(n)

    def key(self) -> str | None:
        """A str map key, or None (after skipping it) when the key is not a string."""
        start = self.tell()
        kind, n = self.header()
        if kind != "str":
            self.f.seek(start)
            self.skip()
            return None
        try:
            return self._read(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _corrupt(self.shard, f"bad UTF-8 in a key at offset {start}: {exc}") from None

    def small_value(self, limit: int = 256) -> Any:
        """Decode one short value (a map key of the models map); None when it is long."""
        start = self.tell()
        self.skip()
        end = self.tell()
        if end - start > limit:
            return None
        self.f.seek(start)
        data = self._read(end - start)
        try:
            return msgpack.unpackb(data, raw=False)
        except Exception:  # noqa: BLE001 - undecodable key: reported as a bad models map
            return None

    def model(self) -> tuple[int, int, str | None]:
        """Skip one model value; return its span and its name when readable."""
        start = self.tell()
        kind, n = self.header()
        name = None
        if kind != "map":
            self.f.seek(start)
            self.skip()
            return start, self.tell(), None
        for _ in range(n):
            key = self.key()
            if key == "name":
                value_start = self.tell()
                vkind, vlen = self.header()
                if vkind == "str":
                    try:
                        name = self._read(vlen).decode("utf-8")
                    except UnicodeDecodeError:
                        name = None
                    continue
                self.f.seek(value_start)
            self.skip()
        return start, self.tell(), name


@dataclass
class _ShardIndex:
    path: Path
    size: int
    spans: dict[str, tuple[int, int]]  # top-level key -> byte span (models excluded if indexed)
    model_spans: list[tuple[int, int]] | None  # None when 'models' is not a list or map
    names: list[str | None]


def _index_shard(path: Path) -> _ShardIndex:
    shard = str(path)
    try:
        size = path.stat().st_size
        f = open(path, "rb")  # closed by the with block below
    except OSError as exc:
        raise BankError(
            f"{shard}: cannot open the bank file ({exc.strerror})", shard=shard
        ) from None
    with f:
        if size == 0:
            raise _corrupt(shard, "the file is empty")
        sc = _Scanner(f, size, shard)
        kind, n = sc.header()
        if kind != "map":
            raise BankError(
                f"{shard}: not a valid parc bank (corrupt msgpack or not a bank file: it does not "
                "start with a msgpack map)",
                shard=shard,
            )
        spans: dict[str, tuple[int, int]] = {}
        model_spans: list[tuple[int, int]] | None = None
        names: list[str | None] = []
        for _ in range(n):
            key = sc.key()
            if key is None:
                raise BankError(
                    f"{shard}: not a valid parc bank (corrupt msgpack or not a bank file: "
                    "a top-level key is not a string)",
                    shard=shard,
                )
            start = sc.tell()
            kind, m = sc.header()
            if key == "models" and kind in ("array", "map"):
                found = []
                for i in range(m):
                    # the map form's keys come in any order (Flax sorts them as strings)
                    k = sc.small_value() if kind == "map" else i
                    s, e, name = sc.model()
                    found.append((k, s, e, name))
                if kind == "map":
                    try:  # keys '0', '1', ... (or ints), as _model_list accepts
                        found = sorted((int(k), s, e, nm) for k, s, e, nm in found)
                    except (TypeError, ValueError):
                        found = []
                    if [item[0] for item in found] != list(range(m)):
                        raise _Loc(shard).error(
                            "models", "a map of models must have keys '0', '1', ... in sequence"
                        )
                model_spans = [(s, e) for _, s, e, _ in found]
                names = [name for *_, name in found]
            else:
                f.seek(start)
                sc.skip()
                spans[key] = (start, sc.tell())
        if sc.tell() != size:
            raise _corrupt(shard, f"{size - sc.tell()} bytes of trailing data after the bank map")
    return _ShardIndex(path, size, spans, model_spans, names)


def _decode(f: BinaryIO, span: tuple[int, int], shard: str) -> Any:
    f.seek(span[0])
    data = f.read(span[1] - span[0])
    try:
        return serialization.msgpack_restore(data)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means the bytes are bad
        raise _corrupt(shard, f"{type(exc).__name__}: {exc}") from None


def _header_tree(index: _ShardIndex) -> dict[str, Any]:
    """format/version/target decoded; models left as a placeholder."""
    shard = str(index.path)
    tree: dict[str, Any] = {}
    with open(index.path, "rb") as f:
        for key, span in index.spans.items():
            tree[key] = _decode(f, span, shard) if key in ("format", "version", "target") else ...
    if index.model_spans is not None:
        tree["models"] = ...
    return tree


def _load_shard(index: _ShardIndex) -> Bank:
    shard = str(index.path)
    tree: dict[str, Any] = {}
    with open(index.path, "rb") as f:
        for key, span in index.spans.items():
            tree[key] = _decode(f, span, shard)
        if index.model_spans is not None:
            _check_top({**tree, "models": []}, shard)  # fail on a bad header before big reads
            tree["models"] = [_decode(f, span, shard) for span in index.model_spans]
    return validate_tree(tree, shard=shard)


# --------------------------------------------------------------------------------------------
# Reading


def _same_target(a: Target, b: Target, shard_a: str, shard_b: str) -> Target:
    """Combine the targets of two shards; name, labels and num_classes must agree.

    num_images and reference_features may be given by either shard; where both give them they
    must agree; per-architecture reference maps are united.
    """
    loc = _Loc(shard_b, "target")
    tail = (
        f"differs from the target of {shard_a}; every shard of a bank must describe the same target"
    )
    if a.name != b.name:
        raise loc.error("name", f"'{b.name}' {tail} ('{a.name}')")
    if a.num_classes != b.num_classes:
        raise loc.error("num_classes", f"{b.num_classes} {tail} ({a.num_classes})")
    if a.labels.shape != b.labels.shape or not np.array_equal(a.labels, b.labels):
        raise loc.error("labels", f"{tail} (same probe images, same order)")
    if a.num_images is not None and b.num_images is not None and a.num_images != b.num_images:
        raise loc.error("num_images", f"{b.num_images} {tail} ({a.num_images})")
    ra, rb = a.reference_features, b.reference_features
    if ra is None or rb is None:
        ref = rb if ra is None else ra
    elif isinstance(ra, np.ndarray) != isinstance(rb, np.ndarray):
        raise loc.error(
            "reference_features",
            f"{tail}: one gives a single array, the other a per-architecture map",
        )
    elif isinstance(ra, np.ndarray):
        if ra.shape != rb.shape or not np.array_equal(ra, rb):
            raise loc.error("reference_features", tail)
        ref = ra
    else:
        ref = dict(ra)
        for arch, arr in rb.items():
            if arch in ref and (ref[arch].shape != arr.shape or not np.array_equal(ref[arch], arr)):
                raise loc.error(f"reference_features[{arch!r}]", tail)
            ref.setdefault(arch, arr)
    num_images = a.num_images if a.num_images is not None else b.num_images
    return Target(a.name, a.labels, a.num_classes, num_images, ref)


def _shard_paths(path: Path) -> list[Path]:
    if path.is_dir():
        shards = sorted(
            p for p in path.glob("*.msgpack") if p.is_file() and not p.name.startswith(".")
        )
        if not shards:
            raise BankError(
                f"{path}: the directory holds no *.msgpack bank shards", shard=str(path)
            )
        return shards
    if path.is_file():
        return [path]
    raise BankError(f"{path}: no such bank file or directory", shard=str(path))


def _scan_model_fields(scanner: _Scanner, f: BinaryIO) -> dict[str, Any]:
    """One model record's name, architecture and optional-field presence (see
    :meth:`BankReader.model_fields`); ``f`` is positioned at the record's msgpack map."""
    kind, count = scanner.header()
    if kind != "map":
        raise ValueError("a model record is not a map")
    found: dict[str, Any] = dict.fromkeys(("probs", "depth", "source_images"), False)
    for _ in range(count):
        key = scanner.key()
        start = f.tell()
        if key in ("name", "architecture"):
            kind, size = scanner.header()
            if kind != "str":
                raise ValueError(f"{key} is not a string")
            found[key] = f.read(size).decode("utf-8")
            continue
        if key in ("probs", "depth", "source_images"):
            found[key] = f.read(1) != b"\xc0"  # msgpack nil: absent
            f.seek(start)
        scanner.skip()
    if "name" not in found:
        raise ValueError("a model record has no name")
    found.setdefault("architecture", None)
    return found


class BankReader:
    """Streaming view of a bank file or a directory of shards (see :func:`open_bank`).

    Attributes: ``path``, ``shards`` (list of shard paths, in order), ``target`` (the combined
    target of all shards), ``num_models``, ``names`` (model names from the index; validated
    only when the shards are read).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.shards = _shard_paths(self.path)
        self._index: list[_ShardIndex] = []
        target: Target | None = None
        first = ""
        for shard_path in self.shards:
            index = _index_shard(shard_path)
            shard = str(shard_path)
            tree = _header_tree(index)
            _check_top(tree, shard)
            if index.model_spans is None:
                _model_list(_decode_one(index, "models"), shard)  # raises: wrong type
            if not index.model_spans:
                raise _Loc(shard).error("models", "is empty; a bank needs at least one model")
            shard_target = _parse_target(tree["target"], shard)
            if target is None:
                target, first = shard_target, shard
            else:
                target = _same_target(target, shard_target, first, shard)
            self._index.append(index)
        _check_unique(
            (name, str(ix.path)) for ix in self._index for name in ix.names if name is not None
        )
        assert target is not None
        self.target = target

    @property
    def num_models(self) -> int:
        """Total number of models. Free: counted when the shards were indexed at open time
        (one pass over each shard's msgpack headers, seeking over array payloads)."""
        return sum(len(ix.model_spans or ()) for ix in self._index)

    @property
    def names(self) -> list[str | None]:
        return [name for ix in self._index for name in ix.names]

    def __len__(self) -> int:
        return self.num_models

    def iter_models(self) -> Iterator[ModelEntry]:
        """Yield every model, shard by shard, in order.

        Each shard is read and fully validated before any of its models is yielded; a bad shard
        raises :class:`BankError` naming it. At most one shard is held at a time.
        """
        seen: dict[str, str] = {}
        for index in self._index:
            shard = str(index.path)
            bank = _load_shard(index)
            # the file may have changed since open_bank: recheck the target it describes
            _same_target(self.target, bank.target, str(self._index[0].path), shard)
            models = bank.models
            del bank
            for m in models:  # within the shard, validate_tree has checked already
                if m.name in seen:
                    raise _Loc(shard, "model", m.name).error(
                        "name",
                        f"duplicate model name (already in {seen[m.name]}); model names must be "
                        "unique across the bank: rename one",
                    )
            seen.update((m.name, shard) for m in models)
            models.reverse()
            while models:
                yield models.pop()

    __iter__ = iter_models

    def model_fields(self) -> list[dict[str, Any]]:
        """Per model, in order: ``{"name", "architecture", "probs", "depth",
        "source_images"}``, the last three bools (the optional field is present), read from the
        shards' msgpack headers: a few bytes per model, seeking over the arrays. A record the
        scan does not expect is left to the full read (:meth:`iter_models`), which validates
        it and names what is wrong."""
        fields = []
        try:
            for index in self._index:
                with open(index.path, "rb") as f:
                    scanner = _Scanner(f, index.size, str(index.path))
                    for start, _end in index.model_spans or ():
                        f.seek(start)
                        fields.append(_scan_model_fields(scanner, f))
        except (ValueError, OSError, KeyError):  # ValueError: BankError, bad UTF-8, unexpected
            return [
                {
                    "name": m.name,
                    "architecture": m.architecture,
                    "probs": m.probs is not None,
                    "depth": m.depth is not None,
                    "source_images": m.source_images is not None,
                }
                for m in self.iter_models()
            ]
        return fields

    def read(self) -> Bank:
        """The whole bank in memory."""
        return Bank(self.target, list(self.iter_models()))

    def sha256(self) -> str:
        """Hex SHA-256 of the shard files' bytes concatenated in order (read in 1 MiB blocks).

        For a single-file bank it equals ``sha256sum bank.msgpack``.
        """
        digest = hashlib.sha256()
        for shard in self.shards:
            with open(shard, "rb") as f:
                while block := f.read(_HASH_BLOCK):
                    digest.update(block)
        return digest.hexdigest()


def _decode_one(index: _ShardIndex, key: str) -> Any:
    with open(index.path, "rb") as f:
        return _decode(f, index.spans[key], str(index.path))


def open_bank(path: str | os.PathLike) -> BankReader:
    """Open a bank file or directory of shards for streaming.

    Cost: one pass over each shard's msgpack headers (array payloads are skipped by seeking,
    not read), decoding only format, version, the target and the model names. Checks the
    headers and targets of every shard, that all shards describe the same target and that model
    names are unique across shards. Models are validated as :meth:`BankReader.iter_models`
    reads their shard.
    """
    return BankReader(path)


def iter_models(path: str | os.PathLike) -> Iterator[ModelEntry]:
    """Shorthand for ``open_bank(path).iter_models()``."""
    return open_bank(path).iter_models()


def read_bank(path: str | os.PathLike) -> Bank:
    """Read and validate a whole bank (file or directory of shards) into memory."""
    return open_bank(path).read()


# --------------------------------------------------------------------------------------------
# Writing


def _features_dtype(value: Any) -> np.dtype | None:
    if value is None:
        return None
    try:
        dtype = np.dtype(value)
    except TypeError:
        dtype = None
    if dtype not in _FEATURE_DTYPES:
        raise ValueError(f"features_dtype: must be None, 'float16' or 'float32', got {value!r}")
    return dtype


def _write_stream(
    path: str | os.PathLike,
    target: Target,
    count: int,
    models: Iterable[ModelEntry],
    *,
    features_dtype: np.dtype | None = None,
    validate: bool = True,
) -> None:
    """Write one bank file atomically, one model serialised at a time.

    Layout: a 4-entry map in the order format, version, target, models (target first, so a
    streaming reader meets it before the models); every value is packed by
    ``flax.serialization.msgpack_serialize`` on its own, so the file decodes to the same tree
    as ``msgpack_serialize(bank_to_tree(bank))`` would (only the top-level key order differs).
    """
    out = Path(path)
    shard = str(out)
    if out.is_dir():
        raise ValueError(f"path: {out} is a directory; give the path of a .msgpack file")
    if not out.parent.is_dir():
        raise ValueError(f"path: the directory {out.parent} does not exist; create it first")
    packer = msgpack.Packer()
    with atomic_file(out) as f:
        f.write(packer.pack_map_header(4))
        f.write(packer.pack("format") + packer.pack(FORMAT))
        f.write(packer.pack("version") + packer.pack(VERSION))
        f.write(packer.pack("target") + serialization.msgpack_serialize(_target_to_tree(target)))
        f.write(packer.pack("models") + packer.pack_array_header(count))
        written = 0
        for i, model in enumerate(models):
            tree = _model_to_tree(model, features_dtype)
            if validate:
                # checks the cast (float16 overflow) and normalises meta (tuples -> lists)
                tree = _model_to_tree(_parse_model(tree, i, target, shard))
            f.write(serialization.msgpack_serialize(tree))
            written += 1
        if written != count:
            raise BankError(
                f"{shard}: expected {count} models but the inputs gave {written}; did an "
                "input change while writing?",
                shard=shard,
            )


def write_bank(
    path: str | os.PathLike, bank: Bank, *, features_dtype: str | np.dtype | None = None
) -> None:
    """Validate ``bank`` and write it atomically to the file ``path``.

    features_dtype: None keeps each model's float16/float32 features as they are; 'float16' or
    'float32' converts all of them (checked again after conversion: float16 overflow to inf is
    an error). The file is written to a temporary file in the same directory, fsynced and moved
    into place with ``os.replace``: on any failure the destination is untouched and the
    temporary file removed. Memory: one serialised model at a time beyond the bank itself.
    """
    _require_bank(bank)
    dtype = _features_dtype(features_dtype)
    shard = str(path)
    target = _parse_target(_target_to_tree(bank.target), shard)
    if not bank.models:
        raise _Loc(shard).error("models", "is empty; a bank needs at least one model")
    for m in bank.models:
        if not isinstance(m, ModelEntry):
            raise ValueError(f"bank.models: expected ModelEntry items, got {_type_name(m)}")
    _check_unique((m.name, shard) for m in bank.models)
    _write_stream(path, target, len(bank.models), bank.models, features_dtype=dtype)


def merge_banks(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike) -> None:
    """Merge bank files/directories describing the same target into the single file ``out_path``.

    Inputs are streamed shard by shard (never all in memory) and validated as they are read;
    the output is written atomically. Returns None; open the result with :func:`open_bank`.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("paths: give at least one bank file or directory to merge")
    out = Path(out_path)
    for p in paths:
        p = Path(p)
        if p.is_dir() and out.suffix == ".msgpack" and out.resolve().parent == p.resolve():
            raise ValueError(
                f"out_path: {out} lies inside the input directory {p} and would become one of "
                "its shards; write the merged bank elsewhere"
            )
    readers = [open_bank(p) for p in paths]
    target = readers[0].target
    first = str(readers[0].shards[0])
    for r in readers[1:]:
        target = _same_target(target, r.target, first, str(r.shards[0]))
    _check_unique(
        (name, str(ix.path))
        for r in readers
        for ix in r._index
        for name in ix.names
        if name is not None
    )
    count = sum(r.num_models for r in readers)

    def models() -> Iterator[ModelEntry]:
        for r in readers:
            yield from r.iter_models()

    # models were validated by iter_models against their own shard's target
    _write_stream(out, target, count, models(), validate=False)


# --------------------------------------------------------------------------------------------
# Builders


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


def _as_labels(labels: Any) -> np.ndarray:
    try:
        arr = np.asarray(labels)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"labels: cannot be read as an array ({exc})") from None
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
    architectures: str | Mapping[str, str] | Sequence[str] = "unknown",
    probs: Mapping[str, Any] | Sequence[Any] | None = None,
    depths: Mapping[str, int] | Sequence[int | None] | None = None,
    sources: Mapping[str, str] | Sequence[str | None] | None = None,
    source_images: Mapping[str, int] | Sequence[int | None] | None = None,
    num_images: int | None = None,
    reference_features: Any = None,
    meta: Mapping[str, Mapping] | Sequence[Mapping | None] | None = None,
) -> Bank:
    """Build and validate a :class:`Bank` from in-memory arrays.

    labels: int ``[n]`` (float arrays of whole numbers are accepted) or 0/1 ``[n, K]``.
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
) -> Bank:
    """The :class:`Bank` of :func:`bank_from_arrays`, not yet validated."""
    lab = _as_labels(labels)
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
    if num_classes is None:
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
    target = Target(str(target_name), lab, _scalar(num_classes), _scalar(num_images), ref)
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
    architecture: str | None = None,
    num_images: int | None = None,
    reference_features: Any = None,
    labels_source: str | os.PathLike | None = None,
) -> Bank:
    """Build a bank from a folder of per-model ``*.npz`` files (sorted by name).

    Each file holds ``features`` ``[n, d]`` and optionally ``probs`` ``[n, z]`` and the scalars
    (0-d arrays) ``architecture``, ``depth``, ``source``, ``source_images``; the model name is
    the file stem. ``architecture`` is the default for files without one. Files are loaded with
    ``allow_pickle=False``; other keys are rejected; a corrupt file raises :class:`BankError`
    naming it. Errors in a model's values name its ``.npz`` file; errors in the target name
    ``labels_source`` (where the labels came from, e.g. their file; default ``<memory>``).
    """
    labels_shard = _MEMORY if labels_source is None else str(labels_source)
    try:
        labels = _as_labels(labels)
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
            if architecture is None:
                raise loc.error(
                    "architecture",
                    "is missing; store it in the .npz or pass architecture= (--architecture)",
                )
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


# --------------------------------------------------------------------------------------------
# Summary and CLI

_SINGLE_LABEL_FEATURE_SCORERS = (
    "parc", "hscore", "hscore_shrink", "logme", "transrate", "gbc", "gbc_spherical", "knn",
    "logistic",
)  # fmt: skip
_MULTILABEL_FEATURE_SCORERS = ("parc", "knn")


def bank_info(path: str | os.PathLike) -> dict[str, Any]:
    """Read (and so validate) a bank and summarise it as a JSON-ready dict.

    Keys: path, shards, sha256, target, n, num_classes, multilabel, num_images, num_models,
    widths ({d: count}), feature_dtypes, architectures ({name: count}), fields (how many models
    carry each optional field), reference ({'kind', 'architectures', 'models_covered'}),
    scorers ({name: models it can score}) and notes (why some scorers are unavailable).
    """
    reader = open_bank(path)
    t = reader.target
    widths: Counter = Counter()
    dtypes: Counter = Counter()
    archs: Counter = Counter()
    fields = dict.fromkeys(_MODEL_OPTIONAL, 0)
    covered = heuristic_ok = 0
    m = 0
    for model in reader.iter_models():
        m += 1
        widths[model.width] += 1
        dtypes[str(model.features.dtype)] += 1
        archs[model.architecture] += 1
        for key in _MODEL_OPTIONAL:
            value = getattr(model, key)
            fields[key] += bool(value) if key == "meta" else value is not None
        covered += t.reference_for(model.architecture) is not None
        heuristic_ok += model.depth is not None and model.source_images is not None
    ref = t.reference_features
    scorers: dict[str, int] = {}
    notes: list[str] = []
    feature_scorers = _MULTILABEL_FEATURE_SCORERS if t.multilabel else _SINGLE_LABEL_FEATURE_SCORERS
    for name in feature_scorers:
        scorers[name] = m
    if t.multilabel:
        notes.append("multi-label target: only parc, rsa, dds and knn apply")
    elif fields["probs"]:
        scorers["leep"] = scorers["nce"] = fields["probs"]
    else:
        notes.append("no probs: leep and nce unavailable")
    if covered:
        scorers["rsa"] = scorers["dds"] = covered
    else:
        notes.append("no reference_features for these architectures: rsa and dds unavailable")
    if fields["depth"] == m:
        scorers["+l depth prior"] = m
    else:
        notes.append(f"depth on {fields['depth']}/{m} models: the +l depth prior needs all")
    if t.num_images is not None and heuristic_ok:
        scorers["heuristic"] = heuristic_ok
    else:
        notes.append(
            "heuristic needs depth and source_images per model and num_images on the target"
        )
    return {
        "path": str(reader.path),
        "shards": [str(s) for s in reader.shards],
        "sha256": reader.sha256(),
        "target": t.name,
        "n": t.n,
        "num_classes": t.num_classes,
        "multilabel": t.multilabel,
        "num_images": t.num_images,
        "num_models": m,
        "widths": {int(k): v for k, v in sorted(widths.items())},
        "feature_dtypes": dict(sorted(dtypes.items())),
        "architectures": dict(sorted(archs.items())),
        "fields": fields,
        "reference": {
            "kind": None if ref is None else ("array" if isinstance(ref, np.ndarray) else "map"),
            "architectures": sorted(ref) if isinstance(ref, dict) else [],
            "models_covered": covered,
        },
        "scorers": scorers,
        "notes": notes,
    }


def _format_info(info: dict[str, Any]) -> str:
    def counts(d: Mapping) -> str:
        return ", ".join(f"{k} x{v}" for k, v in d.items())

    m = info["num_models"]
    ref = info["reference"]
    ref_text = "none"
    if ref["kind"] == "array":
        ref_text = f"one array for all models ({ref['models_covered']}/{m} models)"
    elif ref["kind"] == "map":
        ref_text = f"per architecture {ref['architectures']} ({ref['models_covered']}/{m} models)"
    lines = [
        f"bank:          {info['path']} ({len(info['shards'])} shard(s))",
        f"sha256:        {info['sha256']}",
        f"target:        {info['target']}",
        f"n:             {info['n']}",
        f"K:             {info['num_classes']}",
        f"multilabel:    {'yes' if info['multilabel'] else 'no'}",
        f"num_images:    {info['num_images'] if info['num_images'] is not None else 'absent'}",
        f"models:        {m}",
        f"widths:        {counts(info['widths'])}",
        f"dtypes:        {counts(info['feature_dtypes'])}",
        f"architectures: {counts(info['architectures'])}",
        "fields:        " + ", ".join(f"{k} {v}/{m}" for k, v in info["fields"].items()),
        f"reference:     {ref_text}",
        "scorers:       " + ", ".join(f"{k} ({v}/{m})" for k, v in info["scorers"].items()),
    ]
    lines += [f"note:          {note}" for note in info["notes"]]
    return "\n".join(lines)


def _load_labels(path: str, key: str | None) -> np.ndarray:
    p = Path(path)

    def cannot(exc: BaseException) -> ValueError:
        return ValueError(f"--labels: cannot read {p} ({type(exc).__name__}: {exc})")

    try:
        loaded = np.load(p, allow_pickle=False)
    except _LOAD_ERRORS as exc:
        raise cannot(exc) from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded as npz:
        keys = list(npz.files)
        if key is None:
            key = "labels" if "labels" in keys else (keys[0] if len(keys) == 1 else None)
        if key is None or key not in keys:
            raise ValueError(f"--labels: {p} holds {keys}; choose one with --labels-key")
        try:
            return npz[key]
        except _LOAD_ERRORS as exc:
            raise cannot(exc) from None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m parc_jax.bank", description="Check, inspect, merge and build model banks."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate bank files or directories")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = sub.add_parser("info", help="summarise a bank and the scorers it supports")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p = sub.add_parser("merge", help="merge banks with the same target into one file")
    p.add_argument("out", metavar="OUT")
    p.add_argument("inputs", nargs="+", metavar="IN")
    p = sub.add_parser("from-npz", help="build a bank from a folder of per-model .npz files")
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--labels", required=True, help=".npy, or .npz (key 'labels' or --labels-key)")
    p.add_argument("--labels-key", default=None)
    p.add_argument("--target-name", required=True)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--num-images", type=int, default=None)
    p.add_argument("--architecture", default=None, help="for .npz files without one")
    p.add_argument("--features-dtype", choices=("float16", "float32"), default=None)
    p.add_argument("-o", "--out", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 2 invalid bank or usage)."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    try:
        if args.command == "validate":
            status = 0
            for path in args.paths:
                try:
                    reader = open_bank(path)
                    count = sum(1 for _ in reader.iter_models())
                except (ValueError, OSError) as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    status = 2
                    continue
                t = reader.target
                print(f"OK: {count} models, n={t.n}, K={t.num_classes} ({path})")
            return status
        if args.command == "info":
            info = bank_info(args.path)
            print(json.dumps(info, indent=2) if args.json else _format_info(info))
            return 0
        if args.command == "merge":
            merge_banks(args.inputs, args.out)
            reader = open_bank(args.out)
            print(f"OK: merged {reader.num_models} models into {args.out}")
            return 0
        if args.command == "from-npz":
            bank = npz_folder_to_bank(
                args.folder,
                labels=_load_labels(args.labels, args.labels_key),
                target_name=args.target_name,
                num_classes=args.num_classes,
                architecture=args.architecture,
                num_images=args.num_images,
                labels_source=args.labels,
            )
            write_bank(args.out, bank, features_dtype=args.features_dtype)
            print(
                f"OK: wrote {len(bank)} models, n={bank.target.n}, K={bank.target.num_classes} "
                f"to {args.out}"
            )
            return 0
    except (ValueError, OSError) as exc:
        print(
            f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            file=sys.stderr,
        )
        return 2
    return 2  # unreachable: argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
