"""Scoring a stream of models chunk by chunk: assembly, transfer, compiled programs, results in
stream order."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from parc_jax.engine._assembly import HostBuffers, _chunks, _prefetch
from parc_jax.engine._devices import _placement, sharding_mesh
from parc_jax.engine._programs import CompileRecord, chunk_scorer
from parc_jax.engine._types import EngineOptions, ModelBatch, TargetInfo


def _staged(chunks: Iterable[tuple], shard: Any) -> Iterator[tuple]:
    """``(key, group, arrays, arrays on the device)`` for each chunk of ``_chunks``: the copy
    to the device starts here, in the thread that runs this generator (``_prefetch``)."""
    for key, group, arrays in chunks:
        yield key, group, arrays, {n: jax.device_put(a, shard) for n, a in arrays.items()}


def score_stream(
    models: Iterable[ModelBatch],
    target: TargetInfo,
    options: EngineOptions,
    *,
    mesh: Mesh | None = None,
    probe_sets: Sequence[np.ndarray | None] = (None,),
    progress: Callable[[int], None] | None = None,
    stage: Callable[[str], None] | None = None,
    compiled: Callable[[str, list[CompileRecord]], None] | None = None,
    num_models: int | None = None,
) -> tuple[list[ModelBatch], dict[str, np.ndarray]]:
    """Score every model of a stream; returns ``(models, {method: scores [S, M]})`` in stream
    order.

    Each chunk is scored once per entry of ``probe_sets``: None = the whole probe, an int
    array ``[n']`` = that subset or resample of it (the score spread and successive halving
    use these; one more compile per distinct ``n'``). The stream is read once. Model features
    are dropped after scoring: only names and facts are kept. ``progress(count)`` is called as
    each chunk's scores come back, ``stage(text)`` with what runs next (a program compiling, a
    bucket's chunk scoring).

    Compilation is a phase of its own: before the first chunk of each shape runs, every program
    it needs is compiled (:meth:`ChunkScorer.compile`) and ``compiled(bucket, records)`` gets
    one :class:`CompileRecord` per program. ``num_models`` (the stream's length, when known):
    a stream of at most one chunk is one width bucket, padded to its widest model
    (:func:`_assembly._chunks`), which compiles one set of programs instead of one per width.
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
    shapes: set[tuple] = set()  # chunk shapes whose programs are compiled

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
    one_bucket = num_models is not None and num_models <= chunk
    chunks = _chunks(numbered, target, options.methods, chunk, multiple, buffers,
                     one_bucket=one_bucket)  # fmt: skip
    # Two threads ahead of this one: the reader assembles chunk i + 2 on the host while the
    # stager copies chunk i + 1 to the device, both while the device computes chunk i, so
    # that end to end approaches the slowest of assembly, transfer and compute, not their sum.
    for key, group, arrays, on_device in _prefetch(_staged(_prefetch(chunks, 1), shard), 1):
        bucket = f"bucket {key[0]} width {arrays['features'].shape[2]}"
        what = f"a chunk of {len(group)} models, {bucket}"
        outs = []
        for idx, scorer in zip(probe_sets, scorers, strict=True):
            # every method's program reads the same device arrays; a subset of the probe is
            # taken on the device
            x = on_device
            if idx is not None:
                x = dict(on_device)
                for name in ("features", "probs"):
                    if name in x:
                        x[name] = jax.device_put(x[name][:, idx], shard)
            shape = (id(scorer), *((n, a.shape, a.dtype) for n, a in x.items()))
            if shape not in shapes:  # the compile phase, once per chunk shape
                shapes.add(shape)
                records: list[CompileRecord] = []

                def starting(name: str, bucket: str = bucket) -> None:
                    if stage is not None:
                        stage(f"compiling {name} for {bucket}")

                scorer.compile(x, records.append, starting)
                if records and compiled is not None:
                    compiled(bucket, records)
            if stage is not None:
                stage(f"scoring {what} ({', '.join(options.methods)})")
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
