"""The batched scoring engine: width buckets, padding, fixed-size chunks, streaming, sharding.

A chunk of ``B`` models is scored by ``jax.jit(jax.vmap(...))`` programs: one per width bucket
that reduces the features once to every PCA width the methods use (one ``eigh`` for all), then
one per method on the reduced features; the target's reference features (rsa, dds) are reduced
once per probe set, not per model. Full chunks share one shape; a bucket's last, partial
chunk is padded (with copies of a real model whose results are dropped) to the next power of
two, so over banks of any sizes a bucket compiles at most ``1 + log2(B)`` programs, each once
(a second full chunk never recompiles). A model's scores are bitwise the same for the same
chunk shape; across shapes XLA may round differently (measured up to 1.2e-5 relative, ranks
unchanged). Models stream in shard by shard from a reader thread that pads the next chunk while
the device scores the current one; host memory holds a few chunks, never the whole bank. When
several accelerators are visible the model axis of each chunk is sharded over a ``Mesh`` of
them; several XLA:CPU devices share the same cores, and a chunk runs on one of them
(:func:`sharding_mesh`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from parc_jax import numerics
from parc_jax.bank import Target
from parc_jax.scorers.registry import FEATURES, META, PROBS, REFERENCE, SCORERS, ScorerSpec
from parc_jax.scorers.transrate import class_block_size
from parc_jax.validation import check_labels

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "EngineOptions",
    "ModelBatch",
    "ModelFacts",
    "bucket_width",
    "chunk_scorer",
    "make_mesh",
    "sharding_mesh",
    "method_dims",
    "method_names",
    "resolve_methods",
    "score_stream",
    "TargetInfo",
]

DEFAULT_CHUNK_SIZE = 64
# Geometric (~1.5x) ladder of padded widths: padding wastes at most a third of the work, and a
# bank of mixed architectures compiles a handful of shapes.
_WIDTH_LADDER = (8, 16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


def bucket_width(d: int) -> int:
    """Padded width for a model with ``d`` columns: the next rung of a ~1.5x ladder."""
    for w in _WIDTH_LADDER:
        if d <= w:
            return w
    top = _WIDTH_LADDER[-1]
    return top * 2 ** math.ceil(math.log2(d / top))


# What every model of a bank shares (probe labels, the target's facts): the bank's own Target.
TargetInfo = Target


@dataclasses.dataclass
class ModelBatch:
    """Host-side record of one model as the engine needs it (a bank entry, narrowed)."""

    name: str
    features: np.ndarray
    architecture: str | None = None
    probs: np.ndarray | None = None
    depth: float | None = None
    source: str | None = None
    source_images: float | None = None
    position: int = -1  # order in the stream (set by the engine)


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """Which optional fields one model has: all that method resolution needs (no arrays)."""

    name: str
    architecture: str | None
    probs: bool
    depth: bool
    source_images: bool

    @classmethod
    def of(cls, model: Any) -> ModelFacts:
        """From a :class:`ModelBatch` or a bank ``ModelEntry``."""
        return cls(
            name=model.name,
            architecture=model.architecture,
            probs=model.probs is not None,
            depth=model.depth is not None,
            source_images=model.source_images is not None,
        )


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """Parameters of one scoring pass (hashable: it keys the compiled-function cache)."""

    methods: tuple[str, ...]
    dims: tuple[tuple[str, int | None], ...]
    pca: str = "exact"
    chunk_size: int = DEFAULT_CHUNK_SIZE
    logistic_seed: int = 0


def method_dims(
    methods: Sequence[str], n_dims: int | None | str = "default"
) -> dict[str, int | None]:
    """Per-method reduction: ``"default"`` = METRICS.md defaults, None = off, int = everywhere."""
    out: dict[str, int | None] = {}
    for m in methods:
        spec = SCORERS[m]
        if not spec.reduces:
            out[m] = None
        elif n_dims == "default":
            out[m] = spec.default_dims
        else:
            out[m] = n_dims  # type: ignore[assignment]
    return out


def _needs(spec: ScorerSpec, target: TargetInfo) -> str | None:
    """Why ``spec`` cannot run on this target (None if it can), judged from the target alone."""
    if target.multilabel and not spec.multilabel:
        return "single-label targets only"
    if REFERENCE in spec.inputs and target.reference_features is None:
        return "the bank has no target reference_features"
    if META in spec.inputs and target.num_images is None:
        return "the bank's target has no num_images"
    if spec.min_per_class > 0 and not target.multilabel:
        counts = np.bincount(target.labels, minlength=target.num_classes)
        present = counts[counts > 0]
        if present.min() < spec.min_per_class:
            return f"needs >= {spec.min_per_class} probe samples per class"
    return None


def method_names(requested: Sequence[str] | str) -> tuple[list[str], bool]:
    """``(names, is_all)`` from ``"all"``, one name, a comma-separated string or a sequence of
    names; duplicates are dropped, first occurrence kept (a repeated method would otherwise be
    scored twice into one result slot)."""
    if isinstance(requested, str):
        parts = requested.split(",")
    elif isinstance(requested, Sequence) and all(isinstance(m, str) for m in requested):
        parts = list(requested)
    else:
        raise ValueError(
            f"methods: expected 'all', a name, 'a,b' or a list of names, got {requested!r:.60}"
        )
    names = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not names:
        raise ValueError("methods: name at least one scorer, or 'all'")
    if "all" in names:
        if len(names) > 1:
            raise ValueError("methods: 'all' cannot be combined with other names")
        return list(SCORERS), True
    unknown = [m for m in names if m not in SCORERS]
    if unknown:
        raise ValueError(
            f"methods: unknown scorer(s) {', '.join(unknown)}; choose from {', '.join(SCORERS)}"
        )
    return names, False


def _lacking(
    spec: ScorerSpec, target: TargetInfo, facts: Sequence[ModelFacts]
) -> tuple[list[ModelFacts], str]:
    """The models that lack a per-model input of ``spec``, and what they lack."""
    if PROBS in spec.inputs:
        return [f for f in facts if not f.probs], "no probs"
    if META in spec.inputs:
        return [f for f in facts if not (f.depth and f.source_images)], "no depth/source_images"
    if REFERENCE in spec.inputs:
        return [
            f for f in facts if target.reference_for(f.architecture) is None
        ], "no reference_features for their architecture"
    return [], ""


def resolve_methods(
    requested: Sequence[str] | str,
    target: TargetInfo,
    models: Sequence[ModelFacts | ModelBatch] | ModelBatch | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Methods to run and those skipped with why. ``"all"`` skips quietly; names are strict.

    ``requested``: see :func:`method_names`. Model-level needs (probs, depth, source_images, a
    reference for the architecture) are judged on every model of ``models`` (their
    :class:`ModelFacts`; one model is taken as the whole bank): under ``"all"`` a method that
    some model cannot take is skipped, saying how many lack what; asked for by name, it is an
    error naming such a model. Later models are checked again as they stream in.
    """
    names, is_all = method_names(requested)
    if isinstance(models, ModelBatch):
        models = [models]
    facts = [m if isinstance(m, ModelFacts) else ModelFacts.of(m) for m in models or ()]
    run, skipped = [], {}
    for m in names:
        spec = SCORERS[m]
        why = _needs(spec, target)
        if why is None and facts:
            lacking, what = _lacking(spec, target, facts)
            if lacking and is_all:
                why = (
                    f"{len(lacking)} of {len(facts)} models have {what} (e.g. {lacking[0].name!r})"
                )
            elif lacking:
                arch = f" {lacking[0].architecture!r}" if REFERENCE in spec.inputs else ""
                why = (
                    f"model {lacking[0].name!r} has {what.replace('their', 'its')}{arch} "
                    f"({len(lacking)} of {len(facts)} models lack it)"
                )
        if why is None:
            run.append(m)
        elif is_all:
            skipped[m] = why
        else:
            raise ValueError(f"methods: {m} cannot run on this bank: {why}")
    if not run:
        raise ValueError("methods: none of the requested scorers can run on this bank")
    return run, skipped


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all local devices) with the axis ``"models"``."""
    devs = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.array(devs), ("models",))


def sharding_mesh(mesh: Mesh | None) -> Mesh | None:
    """The mesh a chunk's model axis is sharded over: ``mesh`` on accelerators, None on
    XLA:CPU.

    XLA:CPU devices are one process's threads on the same cores, and their programs share one
    intra-op thread pool. Sharded programs run on every device at once, and jaxlib's batched
    LAPACK kernels (``eigh``, ``qr``, ``cholesky`` under ``vmap``) can each hold a pool thread
    while waiting for work that only the pool can run: with 8 forced devices a 37-model bank
    (n = 200) waited forever (``benchmarks/multidevice_hang.py``). On the CPU a whole chunk
    therefore runs on the mesh's first device, one program at a time, with the same cores
    busy inside it."""
    if mesh is not None and all(d.platform == "cpu" for d in mesh.devices.flat):
        return None
    return mesh


def _placement(mesh: Mesh | None, spec: PartitionSpec) -> Any:
    """Where chunk arrays go: sharded by ``spec`` over an accelerator mesh, else on the mesh's
    first device (None: JAX's default device)."""
    if mesh is None:
        return None
    if sharding_mesh(mesh) is None:
        return mesh.devices.flat[0]
    return NamedSharding(mesh, spec)


# ---------------------------------------------------------------------------------------------
# Chunk assembly (host side)


def _bucket_key(model: ModelBatch, target: TargetInfo, needs: set[str]) -> tuple:
    d = model.features.shape[1]
    z = model.probs.shape[1] if (PROBS in needs and model.probs is not None) else 0
    dtype = np.dtype(model.features.dtype).name
    return (dtype, bucket_width(d), bucket_width(z) if z else 0)


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
    dtype, w, z = key
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
) -> Iterator[tuple[tuple, list[ModelBatch], dict[str, np.ndarray]]]:
    """Group streamed models by bucket; yield full chunks as they fill, then the remainders
    (padded to :func:`remainder_size`)."""
    needs = {i for m in methods for i in SCORERS[m].inputs}
    pending: dict[tuple, list[ModelBatch]] = {}
    for model in models:
        _check_model(model, target, needs, methods)
        key = _bucket_key(model, target, needs)
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
    """Run ``it`` in a thread, ``depth`` items ahead: reading and padding overlap compute."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def work() -> None:
        try:
            for item in it:
                q.put((True, item))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer thread
            q.put((False, exc))
        q.put((True, done))

    threading.Thread(target=work, daemon=True).start()
    while True:
        ok, item = q.get()
        if not ok:
            raise item
        if item is done:
            return
        yield item


# ---------------------------------------------------------------------------------------------
# Compiled scoring functions

_COMPILED: dict[tuple, Callable[..., Any]] = {}
TRACE_COUNT: dict[tuple, int] = {}

# The per-model arrays each kind of bank input needs inside the compiled function.
_INPUT_ARRAYS = {
    FEATURES: ("features", "feature_mask"),
    PROBS: ("probs", "prob_mask"),
    REFERENCE: ("features", "feature_mask", "reference_index"),
    META: ("depth", "source_images"),
}


def _count_trace(key: tuple, *trees: Any) -> None:
    shapes = tuple(jax.tree_util.tree_map(lambda a: tuple(a.shape), trees))
    TRACE_COUNT[(key, str(shapes))] = TRACE_COUNT.get((key, str(shapes)), 0) + 1


def _reduction_fn(dims: tuple[int | None, ...], pca: str, spectrum: bool = False) -> Callable:
    """``jit(vmap(features, mask -> ([(reduced, valid) per n_dims], spectrum or None)))``,
    cached per (dims, pca, spectrum).

    The scorers that reduce all start with ``numerics.reduce_features``; the engine does that
    step once per chunk and hands every scorer the reduction at its ``n_dims`` (one
    ``eigh`` serves every width, :func:`numerics.pca_many`). A scorer given reduced features
    and ``n_dims=None`` computes exactly what it computes from the raw ones. With ``spectrum``
    the centred features' ``numerics.Spectrum`` (the PCA's own Gram and eigenvalues) comes
    too, for the scorers that take it (TransRate's global term)."""
    key = ("reduce", dims, pca, spectrum)
    if key in _COMPILED:
        return _COMPILED[key]

    def one_model(features: jax.Array, mask: jax.Array):
        _count_trace(key, features, mask)
        # float16 banks are upcast on the device
        return numerics.reduce_features_many(
            features.astype(jnp.float32), mask, dims, spectrum=spectrum
        )

    batched = jax.vmap(one_model)

    def run(features, mask):
        with numerics.pca_mode(pca):
            return batched(features, mask)

    _COMPILED[key] = fn = jax.jit(run)
    return fn


def _method_fn(method: str, num_classes: int, class_block: int | None = None) -> Callable:
    """``jit(vmap(one method for one model))``, cached per (method, class count, and the class
    block size for the methods that take one: :func:`transrate.class_block_size`); jit itself
    keys on input shapes, and every chunk of a bucket has the same shapes, so a bucket
    compiles once. One program per method, not one for the whole method set: XLA's compile
    time grows faster than linearly with program size (all 14 scorers fused took minutes
    to compile on 2 CPU cores, one by one about a minute in total). The features it gets are
    already reduced (:func:`_reduction_fn`), so it runs with ``n_dims=None`` and no PCA.

    The program takes per-model arrays ``x`` and arrays every model shares: a reference table
    ``[A, n, F]`` of the target's distinct references (rsa, dds) is indexed by the models'
    ``reference_index``, or, when there is only one, passed to every model unbatched, so that
    its side of the score is computed once per chunk rather than once per model."""
    spec = SCORERS[method]
    class_block = class_block if spec.class_block else None
    key = (method, num_classes, class_block)
    if key in _COMPILED:
        return _COMPILED[key]

    def one_model(x: dict[str, jax.Array], shared: dict[str, jax.Array], labels, split,
                  t_images):  # fmt: skip
        t = {
            "labels": labels,
            "num_classes": num_classes,
            "train_mask": None if split is None else split[0],
            "train_rows": None if split is None else split[1],
            "target_images": t_images,
            "class_block": class_block,
        }
        x = {**x, **shared}
        if "features" in x:
            x["features"] = x["features"].astype(jnp.float32)  # float16 banks upcast on device
        return spec.call(x, t, n_dims=None)

    batched = jax.vmap(one_model, in_axes=(0, None, None, None, None))

    def run(x, shared, labels, split, t_images):
        _count_trace(key, x, shared)
        x, shared = dict(x), dict(shared)
        if "reference_index" in x:
            index = x.pop("reference_index")
            table, valid = shared.pop("reference_table"), shared.pop("reference_valid")
            if table.shape[0] == 1:
                shared["reference_features"], shared["reference_mask"] = table[0], valid[0]
            else:
                x["reference_features"], x["reference_mask"] = table[index], valid[index]
        return batched(x, shared, labels, split, t_images)

    _COMPILED[key] = fn = jax.jit(run)
    return fn


def _probe_inputs(target: TargetInfo, index: np.ndarray | None, options: EngineOptions):
    """Labels, logistic split (the training half as a mask and as row indices) and class count
    for the probe (or a subset of it)."""
    labels = target.labels if index is None else target.labels[index]
    labels, k = check_labels(
        labels, num_classes=target.num_classes, allow_multilabel=True, method="scoring"
    )
    train_mask = np.zeros(labels.shape[0], bool)
    if "logistic" in options.methods:
        from parc_jax.scorers.logistic import stratified_half

        train_mask = stratified_half(labels, seed=options.logistic_seed)
    split = (jnp.asarray(train_mask), jnp.asarray(np.flatnonzero(train_mask), jnp.int32))
    return jnp.asarray(labels), split, k


def _shared_dims(options: EngineOptions) -> tuple[int, ...]:
    """The PCA widths the engine computes once per chunk for the reducing methods."""
    dims = dict(options.dims)
    return tuple(sorted({dims[m] for m in options.methods if dims[m] is not None}))


def chunk_scorer(
    options: EngineOptions,
    target: TargetInfo,
    index: np.ndarray | None = None,
    *,
    mesh: Mesh | None = None,
    timings: dict[str, float] | None = None,
) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """A function scoring one chunk (the padded arrays of ``_chunks``, on the host or the
    device) with every method of ``options`` on the probe, or on its rows ``index``; returns
    ``{method: scores [B]}`` as device arrays (dispatch is asynchronous).

    Per chunk: one program reduces the features to every ``n_dims`` the methods use (one PCA
    shared by all of them; it also hands TransRate the spectrum it would compute again), then
    one program per method. The target's reference features (rsa, dds) are reduced here,
    once for the whole stream, not once per model. With ``timings``, every program is waited
    for and its seconds are added to ``timings["pca"]`` or ``timings[method]`` (a profile; it
    serialises the programs).
    """
    labels, split, k = _probe_inputs(target, index, options)
    t_images = np.float32(target.num_images or 0)
    dims = dict(options.dims)
    widths = _shared_dims(options)
    # methods given the spectrum of the unreduced features, made by the shared PCA
    spectral = {m for m in options.methods if SCORERS[m].spectrum and dims[m] is None}
    reduce = None
    if widths or spectral:
        reduce = _reduction_fn(widths, options.pca, bool(spectral))
    block = None
    if any(SCORERS[m].class_block for m in options.methods) and np.ndim(labels) == 1:
        block = class_block_size(np.asarray(labels), k)
    fns = {m: _method_fn(m, k, block) for m in options.methods}
    wanted = {m: sorted({a for i in SCORERS[m].inputs for a in _INPUT_ARRAYS[i]}) for m in fns}
    tables = _reference_tables(options, target, index, mesh)
    # On the CPU, one program at a time: two programs running at once could each hold a
    # thread of XLA's intra-op pool inside a batched LAPACK kernel that waits on that pool
    # (see numerics.sequenced); the cores are busy within one program anyway.
    serial = jax.default_backend() == "cpu"

    def run(x: Mapping[str, Any]) -> dict[str, Any]:
        clock = [time.perf_counter()]

        def done(name: str, value: Any) -> None:
            if serial or timings is not None:
                jax.block_until_ready(value)
            if timings is not None:
                now = time.perf_counter()
                timings[name] = timings.get(name, 0.0) + now - clock[0]
                clock[0] = now

        reduced, spectrum = {}, None
        if reduce is not None:
            outs, spectrum = reduce(x["features"], x["feature_mask"])
            reduced = dict(zip(widths, outs, strict=True))
            done("pca", (outs, spectrum))
        out = {}
        for m, fn in fns.items():
            xm = {a: x[a] for a in wanted[m]}
            if dims[m] is not None:
                xm["features"], xm["feature_mask"] = reduced[dims[m]]
            if m in spectral:
                xm["centred_matrix"], xm["centred_eigenvalues"] = spectrum
            # the logistic split only where it is read: its row count (n_t, a shape) varies
            # between probe samples, and in every program it recompiled every method per probe
            out[m] = fn(xm, tables.get(dims[m], {}) if REFERENCE in SCORERS[m].inputs else {},
                        labels, split if m == "logistic" else None, t_images)  # fmt: skip
            done(m, out[m])
        return out

    return run


def _reference_tables(
    options: EngineOptions, target: TargetInfo, index: np.ndarray | None, mesh: Mesh | None
) -> dict[int | None, dict[str, jax.Array]]:
    """``{n_dims: {"reference_table": [A, n, F], "reference_valid": bool [A, F]}}``: the
    target's ``A`` distinct references, on the probe rows ``index``, reduced as the methods
    that read them reduce the models (``n_dims=None``: padded to a common width)."""
    dims = dict(options.dims)
    wanted = tuple(sorted({dims[m] for m in options.methods if REFERENCE in SCORERS[m].inputs},
                          key=lambda k: -1 if k is None else k))  # fmt: skip
    refs = target.references()
    if not wanted or not refs:
        return {}
    rows = [np.asarray(r if index is None else r[index], np.float32) for r in refs]
    width = bucket_width(max(r.shape[1] for r in rows))
    stack = _stack_padded(rows, width, np.float32)
    masks = _masks([r.shape[1] for r in rows], width)
    outs, _ = _reduction_fn(wanted, options.pca)(stack, masks)
    place = _placement(mesh, PartitionSpec())
    tables = {}
    for k, (table, valid) in zip(wanted, outs, strict=True):
        tables[k] = {"reference_table": table, "reference_valid": valid}
    return jax.device_put(tables, place)


def score_stream(
    models: Iterable[ModelBatch],
    target: TargetInfo,
    options: EngineOptions,
    *,
    mesh: Mesh | None = None,
    probe_sets: Sequence[np.ndarray | None] = (None,),
    progress: Callable[[int], None] | None = None,
    stage: Callable[[str], None] | None = None,
) -> tuple[list[ModelBatch], dict[str, np.ndarray]]:
    """Score every model of a stream; returns ``(models, {method: scores [S, M]})`` in stream
    order.

    Each chunk is scored once per entry of ``probe_sets``: None = the whole probe, an int
    array ``[n']`` = that subset or resample of it (the score spread and successive halving
    use these; one more compile per distinct ``n'``). The stream is read once. Model features
    are dropped after scoring: only names and facts are kept. ``progress(count)`` is called as
    each chunk's scores come back, ``stage(text)`` with what runs next (a bucket's chunk).
    """
    chunk = options.chunk_size
    sharded = sharding_mesh(mesh)
    if sharded is not None and chunk % sharded.size:
        raise ValueError(
            f"chunk_size: {chunk} is not a multiple of the {sharded.size} devices it is "
            "sharded over"
        )
    scorers = [chunk_scorer(options, target, idx, mesh=mesh) for idx in probe_sets]
    shard = _placement(mesh, PartitionSpec("models"))

    kept: list[ModelBatch] = []
    results: dict[str, list[np.ndarray]] = {m: [] for m in options.methods}
    in_flight: list[tuple[int, list[Any], dict[str, np.ndarray], str]] = []
    buffers = HostBuffers()

    def collect(entry: tuple[int, list[Any], dict[str, np.ndarray], str]) -> None:
        count, outs, arrays, what = entry
        if stage is not None:
            stage(f"waiting for {what}")
        for m in options.methods:
            results[m].append(np.stack([np.asarray(o[m])[:count] for o in outs]))
        buffers.give_back(arrays)  # every program that read them has finished
        if progress is not None:
            progress(count)

    numbered = (dataclasses.replace(m, position=i) for i, m in enumerate(models))
    multiple = sharded.size if sharded is not None else 1
    chunks = _chunks(numbered, target, options.methods, chunk, multiple, buffers)
    for key, group, arrays in _prefetch(chunks):
        what = f"a chunk of {len(group)} models, bucket {key[0]} width {key[1]}"
        if stage is not None:
            stage(f"scoring {what} ({', '.join(options.methods)})")
        outs = []
        for idx, scorer in zip(probe_sets, scorers, strict=True):
            x = arrays
            if idx is not None:
                x = dict(arrays)
                for name in ("features", "probs"):
                    if name in x:
                        x[name] = x[name][:, idx]
            # on the device once per chunk; every method's program reads the same arrays
            x = {n: jax.device_put(a, shard) for n, a in x.items()}
            outs.append(scorer(x))  # async
        # features dropped; the empty array keeps the model's width for later checks
        kept.extend(
            dataclasses.replace(m, features=np.empty((0, m.features.shape[1]), np.float32),
                                probs=None)
            for m in group
        )  # fmt: skip
        in_flight.append((len(group), outs, arrays, what))
        if len(in_flight) > 1:  # keep one chunk in flight while the next is prepared
            collect(in_flight.pop(0))
    for entry in in_flight:
        collect(entry)
    # Buckets interleave chunks: put everything back in stream order.
    order = np.argsort([m.position for m in kept], kind="stable")
    scores = {
        m: (
            np.concatenate(v, axis=1)[:, order] if v else np.zeros((len(probe_sets), 0), np.float32)
        )
        for m, v in results.items()
    }
    return [kept[i] for i in order], scores
