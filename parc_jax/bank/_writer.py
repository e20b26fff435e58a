"""Writing banks: one model serialised at a time, atomically; merging shards."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from parc_jax.atomic import atomic_file
from parc_jax.bank import _codec
from parc_jax.bank._format import (
    _FEATURE_DTYPES,
    FORMAT,
    VERSION,
    Bank,
    BankError,
    ModelEntry,
    Target,
    _Loc,
)
from parc_jax.bank._reader import _same_target, open_bank
from parc_jax.bank._validate import (
    _check_unique,
    _model_to_tree,
    _parse_model,
    _parse_target,
    _require_bank,
    _target_to_tree,
    _type_name,
)


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
    ``_codec.encode`` on its own, so the file decodes to the same tree
    as ``_codec.encode(bank_to_tree(bank))`` would (only the top-level key order differs).
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
        f.write(packer.pack("target") + _codec.encode(_target_to_tree(target)))
        f.write(packer.pack("models") + packer.pack_array_header(count))
        written = 0
        for i, model in enumerate(models):
            tree = _model_to_tree(model, features_dtype)
            if validate:
                # checks the cast (float16 overflow) and normalises meta (tuples -> lists)
                tree = _model_to_tree(_parse_model(tree, i, target, shard))
            f.write(_codec.encode(tree))
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
