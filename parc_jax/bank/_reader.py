"""Reading banks: a structural msgpack scanner that indexes a shard without reading its arrays,
and :class:`BankReader`, which streams models shard by shard.

The scanner walks the headers of a shard, seeking over string, binary and extension
payloads, and records where each top-level value and each model starts and ends. Each piece
is then decoded on its own (:func:`parc_jax.bank._codec.decode`). That makes ``open_bank``
cheap (headers, targets and model names only; array payloads are never read), and it also
un-chunks arrays over 1 GiB inside model entries. Nothing here uses pickle."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
import numpy as np

from parc_jax.bank import _codec
from parc_jax.bank._format import _HASH_BLOCK, Bank, BankError, ModelEntry, Target, _corrupt, _Loc
from parc_jax.bank._validate import (
    _check_top,
    _check_unique,
    _model_list,
    _parse_target,
    validate_tree,
)

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
        return _codec.decode(data)
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
    """Combine the targets of two shards; name, task, labels and num_classes must agree.

    num_images and reference_features may be given by either shard; where both give them they
    must agree; per-architecture reference maps are united.
    """
    loc = _Loc(shard_b, "target")
    tail = (
        f"differs from the target of {shard_a}; every shard of a bank must describe the same target"
    )
    if a.name != b.name:
        raise loc.error("name", f"'{b.name}' {tail} ('{a.name}')")
    if a.task != b.task:
        raise loc.error("task", f"'{b.task}' {tail} ('{a.task}')")
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
    return Target(a.name, a.labels, a.num_classes, num_images, ref, a.task)


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
            version = _check_top(tree, shard)
            if index.model_spans is None:
                _model_list(_decode_one(index, "models"), shard)  # raises: wrong type
            if not index.model_spans:
                raise _Loc(shard).error("models", "is empty; a bank needs at least one model")
            shard_target = _parse_target(tree["target"], shard, version)
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
