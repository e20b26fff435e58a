"""The bank's msgpack encoding of trees with NumPy array leaves, without Flax.

Bank files use the layout of ``flax.serialization.msgpack_serialize``, so that files written
by either side read on the other (a test checks the bytes both ways). Here it is written with
``msgpack`` alone, so that scoring never imports Flax:

* a NumPy array is the msgpack extension type 1 holding the msgpack array
  ``[shape (array of ints), dtype name (str), C-order bytes (bin)]``;
* a NumPy scalar is extension type 3 with the same payload for its 0-d array, decoded back to
  a scalar; a Python ``complex`` is extension type 2 holding ``[real, imag]``;
* maps are written with their keys sorted (as JAX's tree utilities leave them);
* an array larger than ``MAX_CHUNK_BYTES`` (msgpack's objects stop at 2**31 - 1 bytes) that is
  a value of a map is split into a map ``{"__msgpack_chunked_array__": true, "shape":
  {"0": d0, ...}, "chunks": {"0": flat piece, ...}}`` (maps are descended, lists are not).

Decoding never executes anything from the file (no pickle); object and structured dtypes are
refused when writing.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

__all__ = ["MAX_CHUNK_BYTES", "decode", "encode"]

MAX_CHUNK_BYTES = 2**30
_NDARRAY, _COMPLEX, _SCALAR = 1, 2, 3
_CHUNKED = "__msgpack_chunked_array__"


def _array_payload(arr: np.ndarray) -> bytes:
    if arr.dtype.hasobject or arr.dtype.names is not None:
        raise ValueError(f"cannot encode an array of dtype {arr.dtype}: numbers only")
    return msgpack.packb(
        (list(arr.shape), arr.dtype.name, np.ascontiguousarray(arr).tobytes()), use_bin_type=True
    )


def _ext(value: Any) -> msgpack.ExtType:
    """``msgpack.packb``'s ``default`` hook for what msgpack cannot encode by itself."""
    if isinstance(value, np.ndarray):
        return msgpack.ExtType(_NDARRAY, _array_payload(value))
    if isinstance(value, np.generic):
        return msgpack.ExtType(_SCALAR, _array_payload(np.asarray(value)))
    if isinstance(value, complex):
        return msgpack.ExtType(_COMPLEX, msgpack.packb((value.real, value.imag)))
    raise TypeError(f"cannot encode a {type(value).__name__} in a bank")


def _array_from(payload: bytes) -> np.ndarray:
    shape, dtype, data = msgpack.unpackb(payload, raw=True)
    name = dtype.decode("ascii") if isinstance(dtype, bytes) else dtype
    return np.frombuffer(data, dtype=np.dtype(name)).reshape(shape)


def _unext(code: int, payload: bytes) -> Any:
    """``msgpack.unpackb``'s ``ext_hook``: the inverse of :func:`_ext`."""
    if code == _NDARRAY:
        return _array_from(payload)
    if code == _SCALAR:
        return _array_from(payload)[()]
    if code == _COMPLEX:
        real, imag = msgpack.unpackb(payload)
        return complex(real, imag)
    return msgpack.ExtType(code, payload)


def _chunk(arr: np.ndarray) -> dict[str, Any]:
    step = max(1, MAX_CHUNK_BYTES // arr.dtype.itemsize)
    flat = arr.reshape(-1)
    return {
        _CHUNKED: True,
        "shape": {str(i): s for i, s in enumerate(arr.shape)},
        "chunks": {str(i): flat[lo : lo + step] for i, lo in enumerate(range(0, flat.size, step))},
    }


def _sorted_keys(d: dict) -> list:
    try:
        return sorted(d)
    except TypeError:  # keys of mixed types: JAX would refuse them; keep their order
        return list(d)


def _prepared(tree: Any, *, chunk: bool = True) -> Any:
    """``tree`` as it is written: maps with sorted keys, and every array over
    ``MAX_CHUNK_BYTES`` that is the tree or a map's value chunked (maps are copied on the way,
    arrays are not). Lists are copied with their maps sorted but their arrays never chunked."""
    if isinstance(tree, np.ndarray):
        return _chunk(tree) if chunk and tree.nbytes > MAX_CHUNK_BYTES else tree
    if isinstance(tree, dict):
        return {k: _prepared(tree[k]) for k in _sorted_keys(tree)}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_prepared(v, chunk=False) for v in tree)
    return tree


def _unchunked(tree: Any) -> Any:
    if isinstance(tree, dict):
        if _CHUNKED in tree:
            shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
            chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
            return np.concatenate(chunks).reshape(shape)
        for k, v in tree.items():
            if isinstance(v, dict):
                tree[k] = _unchunked(v)
    return tree


def encode(tree: Any) -> bytes:
    """msgpack bytes of ``tree`` (maps, lists, str, numbers, bool, None, NumPy arrays)."""
    return msgpack.packb(_prepared(tree), default=_ext, strict_types=True)


def decode(data: bytes) -> Any:
    """The tree :func:`encode` wrote (arrays come back read-only, as views of ``data``)."""
    tree = msgpack.unpackb(data, ext_hook=_unext, raw=False, strict_map_key=False)
    return _unchunked(tree)
