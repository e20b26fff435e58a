"""Host-side chunk assembly: width buckets, zero-padded blocks written by a few threads into
reused buffers, fixed-size chunks, and a reader thread that prepares the next chunk while the
device scores the current one."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from parc_jax.engine._types import ModelBatch, TargetInfo, bucket_width
from parc_jax.scorers.registry import META, PROBS, REFERENCE, SCORERS


def _bucket_key(model: ModelBatch, one_bucket: bool = False) -> tuple:
    """``(features dtype, padded width)``: models of one key share a chunk. The width is None
    in ``one_bucket`` mode: the chunk is padded to its widest model. Probabilities do not
    split buckets: a chunk pads them to its widest model's rung (only the probability
    scorers see them)."""
    dtype = np.dtype(model.features.dtype).name
    return (dtype, None if one_bucket else bucket_width(model.features.shape[1]))


class HostBuffers:
    """Host arrays for chunk assembly, reused once a chunk's scores are back.

    Writing a chunk into freshly allocated memory ran at ~0.4-0.8 GB/s here and on the GPU
    host (first-touch page faults of the VM), into reused memory at ~4.7 GB/s; with a chunk
    of a few hundred wide models, assembly, not the device, bounded the scoring. Buffers are
    taken in the reader thread and given back by the consumer after it has read a chunk's
    results, so no buffer is rewritten while a computation (or, on the CPU, a zero-copy
    device array) still reads it.
    """

    def __init__(self) -> None:
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        key = (tuple(shape), np.dtype(dtype).str)
        with self._lock:
            free = self._free.get(key)
            if free:
                return free.pop()
        return np.empty(shape, dtype)

    def give_back(self, arrays: Mapping[str, np.ndarray]) -> None:
        with self._lock:
            for name in _POOLED:
                if name in arrays:
                    a = arrays[name]
                    self._free.setdefault((a.shape, a.dtype.str), []).append(a)


_POOLED = ("features", "probs")  # the large arrays of a chunk


def _stack_padded(
    arrays: Sequence[np.ndarray], width: int, dtype: Any, buffers: HostBuffers | None = None
) -> np.ndarray:
    """``[len(arrays), rows, width]``: each ``[rows, d_i]`` array zero-padded to ``width``
    columns, written straight into one (possibly reused) block: every element is written, so
    a reused buffer keeps nothing of its last chunk.

    A large block is written by a few threads, each a contiguous run of models: NumPy copies
    release the GIL, and writing fresh memory is bound by the kernel's page faults, which run
    on the faulting thread (``benchmarks/assembly.py``).
    """
    shape = (len(arrays), arrays[0].shape[0], width)
    out = buffers.empty(shape, dtype) if buffers is not None else np.empty(shape, dtype)

    def fill(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            x = arrays[i]
            out[i, :, : x.shape[1]] = x
            out[i, :, x.shape[1] :] = 0

    workers = min(_assembly_workers(), len(arrays), max(1, out.nbytes // _BYTES_PER_WORKER))
    if workers == 1:
        fill(0, len(arrays))
    else:
        bounds = np.linspace(0, len(arrays), workers + 1).astype(int)
        # list() re-raises a worker's exception here
        list(_ASSEMBLY_POOL.map(fill, bounds[:-1], bounds[1:]))
    return out


_BYTES_PER_WORKER = 32 << 20  # below this a thread costs more than it saves
_MAX_ASSEMBLY_THREADS = 8  # memory bandwidth, not cores, bounds the copies beyond a few
# Threads per large block: None = one per available core, at most _MAX_ASSEMBLY_THREADS.
ASSEMBLY_THREADS: int | None = None
# Threads are started on first use, not here; idle ones do not keep the interpreter alive.
_ASSEMBLY_POOL = ThreadPoolExecutor(_MAX_ASSEMBLY_THREADS, thread_name_prefix="parc-jax-assembly")


def _assembly_workers() -> int:
    if ASSEMBLY_THREADS is not None:
        return max(1, min(_MAX_ASSEMBLY_THREADS, ASSEMBLY_THREADS))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(_MAX_ASSEMBLY_THREADS, cores or 1))


def _masks(widths: Sequence[int], width: int) -> np.ndarray:
    """``bool [len(widths), width]``: True on each model's own columns."""
    return np.arange(width)[None, :] < np.asarray(widths)[:, None]


def _assemble(
    models: list[ModelBatch],
    key: tuple,
    target: TargetInfo,
    chunk: int,
    needs: set[str],
    buffers: HostBuffers | None = None,
) -> dict[str, np.ndarray]:
    """Stack ``models`` (<= chunk) into padded arrays; rows past ``len(models)`` repeat model 0."""
    dtype, w = key
    if w is None:
        w = bucket_width(max(m.features.shape[1] for m in models))
    z = 0
    if PROBS in needs and all(m.probs is not None for m in models):
        z = bucket_width(max(m.probs.shape[1] for m in models))
    rows = models + [models[0]] * (chunk - len(models))
    out: dict[str, np.ndarray] = {
        "features": _stack_padded([m.features for m in rows], w, dtype, buffers),
        "feature_mask": _masks([m.features.shape[1] for m in rows], w),
    }
    if z:
        out["probs"] = _stack_padded([m.probs for m in rows], z, np.float32, buffers)
        out["prob_mask"] = _masks([m.probs.shape[1] for m in rows], z)
    if REFERENCE in needs:  # the references themselves are reduced once: _reference_tables
        out["reference_index"] = np.array(
            [target.reference_index(m.architecture) for m in rows], np.int32
        )
    if META in needs:
        out["depth"] = np.array([m.depth for m in rows], np.float32)
        out["source_images"] = np.array([m.source_images for m in rows], np.float32)
    return out


def _check_model(model: ModelBatch, target: TargetInfo, needs: set[str], methods: Sequence[str]):
    """Per-model needs the bank validator cannot know (they depend on the chosen methods)."""

    def missing(what: str, users: list[str]) -> ValueError:
        return ValueError(
            f"model {model.name!r}: has no {what}, needed by {', '.join(users)}; fix the bank "
            "or leave those methods out"
        )

    if model.features.shape[0] != target.n:
        raise ValueError(
            f"model {model.name!r} field 'features': {model.features.shape[0]} rows but the "
            f"target has {target.n} labels"
        )
    if PROBS in needs and model.probs is None:
        raise missing("probs", [m for m in methods if PROBS in SCORERS[m].inputs])
    if META in needs and (model.depth is None or model.source_images is None):
        raise missing("depth/source_images", [m for m in methods if META in SCORERS[m].inputs])
    if REFERENCE in needs and target.reference_for(model.architecture) is None:
        raise ValueError(
            f"model {model.name!r}: no target reference_features for architecture "
            f"{model.architecture!r} (needed by rsa/dds)"
        )


def remainder_size(count: int, chunk: int, multiple: int = 1) -> int:
    """Padded size of a bucket's last, partial chunk of ``count`` models: the next power of two
    (a multiple of ``multiple``, the device count), at most ``chunk``.

    Full chunks all share one shape, so a bank of any size compiles once per bucket for them;
    the remainder adds at most one more shape per bucket while wasting under half of its
    work (padding every remainder to the full chunk wasted up to 2/3 of a mixed-width bank's
    compute in the throughput benchmark: three buckets of ~5 models in chunks of 16).
    """
    size = 1 << max(0, (count - 1).bit_length())
    size = -(-size // multiple) * multiple
    return min(chunk, size)


def _chunks(
    models: Iterable[ModelBatch],
    target: TargetInfo,
    methods: Sequence[str],
    chunk: int,
    multiple: int = 1,
    buffers: HostBuffers | None = None,
    *,
    one_bucket: bool = False,
) -> Iterator[tuple[tuple, list[ModelBatch], dict[str, np.ndarray]]]:
    """Group streamed models by bucket; yield full chunks as they fill, then the remainders
    (padded to :func:`remainder_size`). ``one_bucket``: every width in one bucket (for a
    stream of at most one chunk: one set of compiled programs instead of one per width)."""
    needs = {i for m in methods for i in SCORERS[m].inputs}
    pending: dict[tuple, list[ModelBatch]] = {}
    for model in models:
        _check_model(model, target, needs, methods)
        key = _bucket_key(model, one_bucket)
        group = pending.setdefault(key, [])
        group.append(model)
        if len(group) == chunk:
            yield key, group, _assemble(group, key, target, chunk, needs, buffers)
            pending[key] = []
    for key, group in pending.items():
        if group:
            size = remainder_size(len(group), chunk, multiple)
            yield key, group, _assemble(group, key, target, size, needs, buffers)


def _prefetch(it: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Run ``it`` in a thread, ``depth`` items ahead: reading and padding overlap compute.

    A consumer that stops early (an error downstream, a closed generator) stops the thread
    too, at its next item: it does not stay blocked on a full queue holding chunks."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def work() -> None:
        try:
            for item in it:
                if not put((True, item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer thread
            put((False, exc))
            return
        put((True, done))

    threading.Thread(target=work, daemon=True, name="parc-jax-prefetch").start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
