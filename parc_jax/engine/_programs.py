"""The compiled programs: one per width bucket that reduces a chunk's features to every PCA width
its methods use, one per method on the reduced features, and the target's reference tables."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from parc_jax import numerics
from parc_jax.engine._assembly import _masks, _stack_padded
from parc_jax.engine._devices import _placement
from parc_jax.engine._types import EngineOptions, TargetInfo, bucket_width
from parc_jax.scorers.registry import FEATURES, META, PROBS, REFERENCE, SCORERS
from parc_jax.scorers.transrate import class_block_size
from parc_jax.validation import check_labels, check_regression_targets

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


def _reduction_fn(
    dims: tuple[int | None, ...], pca: str, spectrum: bool = False, certified: bool = False
) -> Callable:
    """``jit(vmap(features, mask -> ([(reduced, valid) per n_dims], spectrum or None)))``,
    cached per (dims, pca, spectrum, certified).

    The scorers that reduce all start with ``numerics.reduce_features``; the engine does that
    step once per chunk and hands every scorer the reduction at its ``n_dims`` (one
    ``eigh`` serves every width, :func:`numerics.pca_many`). A scorer given reduced features
    and ``n_dims=None`` computes exactly what it computes from the raw ones. With ``spectrum``
    the centred features' ``numerics.Spectrum`` (the PCA's own Gram and eigenvalues) comes
    too, for the scorers that take it (TransRate's global term). With ``certified`` the exact
    PCA is :func:`numerics.reduce_features_certified`'s and the program returns a third
    output, ``certified: bool [B]``; the models it marks False are reduced again by
    :func:`_fallback_fn`."""
    key = ("reduce", dims, pca, spectrum, certified)
    if key in _COMPILED:
        return _COMPILED[key]
    reduce = numerics.reduce_features_certified if certified else numerics.reduce_features_many

    def one_model(features: jax.Array, mask: jax.Array):
        _count_trace(key, features, mask)
        # float16 banks are upcast on the device
        return reduce(features.astype(jnp.float32), mask, dims, spectrum=spectrum)

    batched = jax.vmap(one_model)

    def run(features, mask):
        with numerics.pca_mode(pca):
            return batched(features, mask)

    _COMPILED[key] = fn = jax.jit(run)
    return fn


def _fallback_fn(dims: tuple[int | None, ...]) -> Callable:
    """``jit((features, mask, reduced, index [U]) -> reduced)``: the models ``index`` of a
    chunk reduced again with the exact mode's ``eigh`` and written over their rows of
    ``reduced`` (the output of a certified :func:`_reduction_fn`). Indices may repeat (the
    engine pads ``U`` to a power of two so that few shapes compile): a repeated model writes
    the same values."""
    key = ("fallback", dims)
    if key in _COMPILED:
        return _COMPILED[key]
    batched = jax.vmap(
        lambda f, m: numerics.reduce_features_many(f.astype(jnp.float32), m, dims)[0]
    )

    def run(features, mask, reduced, index):
        with numerics.pca_mode("exact"):
            again = batched(features[index], mask[index])
        return jax.tree_util.tree_map(lambda old, new: old.at[index].set(new), reduced, again)

    _COMPILED[key] = fn = jax.jit(run)
    return fn


def _method_fn(
    method: str, num_classes: int, class_block: int | None = None, regression: bool = False
) -> Callable:
    """``jit(vmap(one method for one model))``, cached per (method, class count (outputs for a
    regression target), whether the target is a regression, and the class block size for the
    methods that take one: :func:`transrate.class_block_size`); jit itself
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
    key = (method, num_classes, class_block) + (("regression",) if regression else ())
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
            "regression": regression,
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
    if target.regression:
        labels = check_regression_targets(labels, method="scoring").astype(np.float32)
        k = 1 if labels.ndim == 1 else labels.shape[1]
    else:
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


# Compiled executables of every program, by the jitted program and its input signature (shapes,
# dtypes, shardings): a second chunk of the same shape, or a second pass in the same process, reuses
# them; the persistent compilation cache serves them to later processes.
_EXECUTABLES: dict[tuple, Any] = {}


@dataclasses.dataclass(frozen=True)
class CompileRecord:
    """One program compiled ahead of a bucket's first chunk: its name (``pca`` or a method),
    seconds spent tracing, lowering and compiling (XLA, or loading from the persistent cache),
    and the lowered program (``lowered.as_text()`` is its StableHLO)."""

    name: str
    trace_s: float
    lower_s: float
    compile_s: float
    lowered: Any

    @property
    def seconds(self) -> float:
        return self.trace_s + self.lower_s + self.compile_s


def _signature(tree: Any) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(
        (tuple(np.shape(a)), str(getattr(a, "dtype", type(a).__name__)),
         getattr(a, "sharding", None))
        for a in leaves
    )  # fmt: skip


def _abstract(tree: Any, shardings: Any) -> Any:
    """``tree``'s arrays as ``ShapeDtypeStruct`` with the given shardings (what a compiled
    program returns), to compile the programs that read them before any of them runs."""
    return jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings
    )


class ChunkScorer:
    """Scores one chunk (the padded arrays of ``_chunks``, on the host or the device) with every
    method of ``options`` on the probe, or on its rows ``index``; calling it returns ``{method:
    scores [B]}`` as device arrays (dispatch is asynchronous).

    Per chunk: one program reduces the features to every ``n_dims`` the methods use (one PCA
    shared by all of them; it also hands TransRate the spectrum it would compute again), then
    one program per method. The target's reference features (rsa, dds) are reduced here,
    once for the whole stream, not once per model.

    :meth:`compile` compiles every program for a chunk's shapes ahead of running any
    (``jit(...).trace(...).lower().compile()``), so that compilation is a phase of its own
    that can be reported; :meth:`__call__` compiles what is missing itself. With ``timings``,
    every program is waited for and its seconds are added to ``timings["pca"]`` or
    ``timings[method]`` (a profile; it serialises the programs).
    """

    def __init__(
        self,
        options: EngineOptions,
        target: TargetInfo,
        index: np.ndarray | None = None,
        *,
        mesh: Mesh | None = None,
        timings: dict[str, float] | None = None,
    ) -> None:
        self.options, self.timings = options, timings
        self.labels, self.split, k = _probe_inputs(target, index, options)
        self.t_images = np.float32(target.num_images or 0)
        self.dims = dims = dict(options.dims)
        self.widths = _shared_dims(options)
        # methods given the spectrum of the unreduced features, made by the shared PCA
        self.spectral = {m for m in options.methods if SCORERS[m].spectrum and dims[m] is None}
        self.reduce = None
        # exact PCA by certified iteration, its uncertified models by eigh (numerics)
        self.certified = (
            options.pca == "exact" and not self.spectral and numerics.certified_exact_pca()
        )
        if self.widths or self.spectral:
            self.reduce = _reduction_fn(
                self.widths, options.pca, bool(self.spectral), self.certified
            )
        block = None
        if any(SCORERS[m].class_block for m in options.methods) and np.ndim(self.labels) == 1:
            block = class_block_size(np.asarray(self.labels), k)
        self.fns = {m: _method_fn(m, k, block, target.regression) for m in options.methods}
        self.wanted = {
            m: sorted({a for i in SCORERS[m].inputs for a in _INPUT_ARRAYS[i]}) for m in self.fns
        }
        self.tables = _reference_tables(options, target, index, mesh)
        # On the CPU, one program at a time: two programs running at once could each hold a
        # thread of XLA's intra-op pool inside a batched LAPACK kernel that waits on that pool
        # (see numerics.sequenced); the cores are busy within one program anyway.
        self.serial = jax.default_backend() == "cpu"

    def _method_args(self, m: str, x: Mapping[str, Any], reduced: Mapping, spectrum: Any):
        xm = {a: x[a] for a in self.wanted[m]}
        if self.dims[m] is not None:
            xm["features"], xm["feature_mask"] = reduced[self.dims[m]]
        if m in self.spectral:
            xm["centred_matrix"], xm["centred_eigenvalues"] = spectrum
        shared = self.tables.get(self.dims[m], {}) if REFERENCE in SCORERS[m].inputs else {}
        # the logistic split only where it is read: its row count (n_t, a shape) varies between
        # probe samples, and in every program it would recompile every method per probe
        split = self.split if m == "logistic" else None
        return xm, shared, self.labels, split, self.t_images

    @staticmethod
    def _executable(name: str, fn: Callable, args: tuple, report, starting=None):
        sig = (fn, _signature(args))  # the dict keeps fn alive: no reuse of its identity
        exe = _EXECUTABLES.get(sig)
        if exe is None:
            if starting is not None:
                starting(name)
            t0 = time.perf_counter()
            traced = fn.trace(*args)
            t1 = time.perf_counter()
            lowered = traced.lower()
            t2 = time.perf_counter()
            exe = _EXECUTABLES[sig] = lowered.compile()
            if report is not None:
                report(CompileRecord(name, t1 - t0, t2 - t1, time.perf_counter() - t2, lowered))
        return exe

    def _reduce_exe(self, x: Mapping[str, Any], report=None, starting=None) -> Any:
        args = (x["features"], x["feature_mask"])
        return self._executable("pca", self.reduce, args, report, starting)

    def _fall_back(self, x: Mapping[str, Any], outs: Any, certified: Any) -> Any:
        """``outs`` with the models the certified iteration did not certify reduced again by
        ``eigh`` (:func:`_fallback_fn`). Waits for the flags: the methods' programs read the
        reduction, so they could not start earlier anyway."""
        missing = np.flatnonzero(~np.asarray(certified))
        if missing.size == 0:
            return outs
        size = min(1 << int(missing.size - 1).bit_length(), int(np.shape(certified)[0]))
        index = np.full(size, missing[0], np.int32)
        index[: missing.size] = missing
        args = (x["features"], x["feature_mask"], outs, index)
        fn = _fallback_fn(self.widths)
        return self._executable(f"pca (eigh for {size} models)", fn, args, None)(*args)

    def compile(
        self,
        x: Mapping[str, Any],
        report: Callable[[CompileRecord], None] | None = None,
        starting: Callable[[str], None] | None = None,
    ) -> None:
        """Compile every program for the shapes of chunk ``x`` before any of them runs.

        ``starting(name)`` is called before each program is compiled and ``report`` with its
        :class:`CompileRecord` after; programs already compiled in this process are skipped.
        """
        reduced, spectrum = {}, None
        if self.reduce is not None:
            exe = self._reduce_exe(x, report, starting)
            outs, spectrum = _abstract(exe.out_info, exe.output_shardings)[:2]
            reduced = dict(zip(self.widths, outs, strict=True))
        for m, fn in self.fns.items():
            args = self._method_args(m, x, reduced, spectrum)
            self._executable(m, fn, args, report, starting)

    def __call__(self, x: Mapping[str, Any]) -> dict[str, Any]:
        timings = self.timings
        clock = [time.perf_counter()]

        def done(name: str, value: Any) -> None:
            if self.serial or timings is not None:
                jax.block_until_ready(value)
            if timings is not None:
                now = time.perf_counter()
                timings[name] = timings.get(name, 0.0) + now - clock[0]
                clock[0] = now

        reduced, spectrum = {}, None
        if self.reduce is not None:
            outs, spectrum, *certified = self._reduce_exe(x)(x["features"], x["feature_mask"])
            if certified:
                outs = self._fall_back(x, outs, certified[0])
            reduced = dict(zip(self.widths, outs, strict=True))
            done("pca", (outs, spectrum))
        out = {}
        for m, fn in self.fns.items():
            args = self._method_args(m, x, reduced, spectrum)
            out[m] = self._executable(m, fn, args, None)(*args)
            done(m, out[m])
        return out


def chunk_scorer(
    options: EngineOptions,
    target: TargetInfo,
    index: np.ndarray | None = None,
    *,
    mesh: Mesh | None = None,
    timings: dict[str, float] | None = None,
) -> ChunkScorer:
    """A :class:`ChunkScorer` (see there)."""
    return ChunkScorer(options, target, index, mesh=mesh, timings=timings)


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
