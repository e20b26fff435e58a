"""Audit: every matrix product of every scorer runs at full float32 precision on every backend.

On GPUs a float32 ``dot_general`` at the default precision may run in TF32 (about 1e-3
relative error, see docs/metrics.md), so the scorers pass ``precision=HIGHEST``
(``numerics.matmul``). Each scorer's one-model core (through ``ScorerSpec.call``, as the engine
calls it) is traced with ``jax.make_jaxpr`` in the configurations that select different code
(PCA or not, exact or fast PCA, n > d and n < d, single model and ``vmap``), and every
``dot_general`` in the jaxpr, sub-jaxprs (jit, scan, while, cond, custom_jvp, ...) included,
must carry HIGHEST for both operands. The one documented exception: in fast PCA mode, the
subspace iteration's products (``numerics._fast_matmul``, and only those) run at
``numerics.FAST_PCA_PRECISION``; the final Rayleigh-Ritz step on the data stays at HIGHEST.
A second check lowers a few configurations for CUDA and
reads the StableHLO, which also sees products that a primitive's lowering rule adds.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jaxprs import equations

from parc_jax import numerics
from parc_jax.scorers.registry import SCORERS
from parc_jax.scorers.transrate import class_block_size

HIGHEST = lax.Precision.HIGHEST
K, Z, N_DIMS = 4, 10, 8
SHAPES = [(40, 24), (20, 48)]  # (n, d): covariance side and Gram side (PCA, LogME, logistic QR)


# ---------------------------------------------------------------------------------------------
# The walker


def _precisions(precision: Any) -> tuple[Any, Any]:
    """``dot_general``'s ``precision`` param (None, one value, or a pair) as a pair."""
    if isinstance(precision, (tuple, list)):
        return tuple(precision)
    return (precision, precision)


def _where(eqn: Any) -> str:
    try:
        from jax._src import source_info_util

        # The innermost user frames, outermost first (the innermost is often numerics.py).
        return source_info_util.summarize(eqn.source_info, num_frames=4).replace("\n", " -> ")
    except Exception:  # noqa: BLE001 - private API; the equation itself is still shown
        return "<source unknown>"


def _fast_matmul_line() -> str:
    """``numerics.py:<line>`` of the product in ``numerics._fast_matmul``."""
    lines, start = inspect.getsourcelines(numerics._fast_matmul)
    offset = next(i for i, line in enumerate(lines) if "jnp.matmul" in line)
    return f"numerics.py:{start + offset}"


def _fast_exempt(precisions: tuple, where: str, fast_ok: bool) -> bool:
    """A fast-mode subspace-iteration product at ``FAST_PCA_PRECISION`` (see the docstring)."""
    fast = numerics.FAST_PCA_PRECISION
    return fast_ok and all(p == fast for p in precisions) and where.endswith("(_fast_matmul)")


def low_precision_dots(fn: Any, *args: Any, fast_ok: bool = False) -> tuple[list[str], int]:
    """``(offenders, checked)``: floating-point ``dot_general``s of ``jax.make_jaxpr(fn)(*args)``
    without HIGHEST on both operands (one description each), and how many were checked. With
    ``fast_ok`` (fast PCA mode) the subspace iteration's own products may carry
    ``FAST_PCA_PRECISION``."""
    closed = jax.make_jaxpr(fn)(*args)
    offenders, checked = [], 0
    for eqn, path in equations(closed.jaxpr):
        if eqn.primitive.name != "dot_general":
            continue
        dtypes = [v.aval.dtype for v in eqn.invars]
        # Integer and bool products are exact at any precision setting (no TF32 for them).
        if not any(jnp.issubdtype(dt, jnp.floating) for dt in dtypes):
            continue
        checked += 1
        precisions = _precisions(eqn.params.get("precision"))
        if any(p != HIGHEST for p in precisions) and not _fast_exempt(
            precisions, _where(eqn), fast_ok
        ):
            offenders.append(
                f"{_where(eqn)} in {'/'.join(path) or 'top level'}: {eqn} "
                f"[precision={eqn.params.get('precision')}, operands {[str(d) for d in dtypes]}]"
            )
    return offenders, checked


# ---------------------------------------------------------------------------------------------
# Inputs and configurations


def _inputs(n: int, d: int, batch: int | None, seed: int = 0) -> dict[str, jax.Array]:
    """Every bank input any scorer reads, float32, with a leading model axis if ``batch``."""
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    mask = np.arange(d) < d - 3  # a few padded columns
    x = {
        "features": rng.normal(size=(*lead, n, d)) * mask,
        "feature_mask": np.broadcast_to(mask, (*lead, d)),
        "reference_features": rng.normal(size=(*lead, n, d)),
        "reference_mask": np.ones((*lead, d), bool),
        "probs": rng.dirichlet(np.ones(Z), size=(*lead, n)),
        "prob_mask": np.ones((*lead, Z), bool),
        "depth": np.full(lead, 8.0),
        "source_images": np.full(lead, 1e3),
    }
    return {
        k: jnp.asarray(v, jnp.float32 if v.dtype == np.float64 else v.dtype) for k, v in x.items()
    }


def _targets(n: int, multilabel: bool) -> dict[str, Any]:
    if multilabel:
        labels = (np.arange(n)[:, None] + np.arange(K)[None, :]) % 3 == 0  # no all-0/all-1 rows
        labels = jnp.asarray(labels, jnp.int32)
    else:
        labels = jnp.asarray(np.arange(n) % K, jnp.int32)
    return {
        "labels": labels,
        "num_classes": K,
        "train_mask": jnp.asarray(np.arange(n) % 4 < 2),  # two of every class train
        "target_images": jnp.float32(300.0),
        # transrate's per-class blocks (the engine passes the block size per probe)
        "class_block": None if multilabel else class_block_size(np.asarray(labels), K),
    }


def _configs(name: str) -> list[tuple[str, int | None, bool]]:
    """(pca mode, n_dims, multilabel) for a scorer; fast mode only changes scorers that reduce."""
    spec = SCORERS[name]
    out = [("exact", None, False)]
    if spec.reduces:
        out += [("exact", N_DIMS, False), ("fast", N_DIMS, False)]
    if spec.multilabel and spec.uses_labels:
        out += [(mode, dims, True) for mode, dims, _ in list(out)]
    return out


def _scorer_fn(name: str, n_dims: int | None, t: dict[str, Any], batched: bool) -> Any:
    spec = SCORERS[name]

    def one_model(x: dict[str, jax.Array]) -> jax.Array:
        return spec.call(x, t, n_dims=n_dims)

    return jax.vmap(one_model) if batched else one_model  # models batched, targets shared


@pytest.mark.parametrize("name", list(SCORERS))
def test_every_float_matmul_uses_highest_precision(name: str) -> None:
    offenders, checked = [], 0
    for n, d in SHAPES:
        for mode, n_dims, multilabel in _configs(name):
            for batch in (None, 2):
                t = _targets(n, multilabel)
                with numerics.pca_mode(mode):
                    found, count = low_precision_dots(
                        _scorer_fn(name, n_dims, t, batch is not None),
                        _inputs(n, d, batch),
                        fast_ok=mode == "fast",
                    )
                checked += count
                config = f"n={n} d={d} pca={mode} n_dims={n_dims} multilabel={multilabel}"
                offenders += [f"[{config} vmap={batch is not None}] {o}" for o in found]
    assert not offenders, (
        f"scorer {name!r}: {len(offenders)} of {checked} float matrix products lack "
        "precision=HIGHEST (use numerics.matmul):\n" + "\n".join(offenders)
    )


@pytest.mark.parametrize("mode", numerics.PCA_MODES)
def test_engine_feature_reduction_uses_highest_precision(mode: str) -> None:
    """The engine's shared PCA (one program reduces a chunk to every width the methods use)."""
    offenders = []
    for n, d in SHAPES:
        for batch in (None, 2):
            x = _inputs(n, d, batch)

            def reduce(f, m):
                return numerics.reduce_features_many(
                    f, m, (N_DIMS, 2 * N_DIMS, None), spectrum=True
                )

            fn = jax.vmap(reduce) if batch else reduce
            with numerics.pca_mode(mode):
                found, _ = low_precision_dots(
                    fn, x["features"], x["feature_mask"], fast_ok=mode == "fast"
                )
            offenders += [f"[n={n} d={d} vmap={batch is not None}] {o}" for o in found]
    assert not offenders, "\n".join(offenders)


def test_certified_exact_pca_uses_highest_precision() -> None:
    """The engine's exact PCA by certified subspace iteration (accelerators' default) keeps
    every product at full float32 precision, like the ``eigh`` route."""
    offenders = []
    for n, d in SHAPES:
        x = _inputs(n, d, 2)

        def reduce(f, m):
            return numerics.reduce_features_certified(f, m, (N_DIMS, 2 * N_DIMS, None))

        found, _ = low_precision_dots(jax.vmap(reduce), x["features"], x["feature_mask"])
        offenders += [f"[n={n} d={d}] {o}" for o in found]
    assert not offenders, "\n".join(offenders)


# ---------------------------------------------------------------------------------------------
# The walker finds what it must


def _ab() -> tuple[jax.Array, jax.Array]:
    return jnp.ones((3, 4), jnp.float32), jnp.ones((4, 3), jnp.float32)


def test_walker_reports_plain_dot_inside_scan_and_jit() -> None:
    def in_scan(a, b):
        def step(carry, _):
            return carry + jnp.dot(a, b), None

        return lax.scan(step, jnp.zeros((3, 3)), None, length=2)[0]

    @jax.jit
    def in_jit(a, b):
        return jnp.dot(a, b)

    a, b = _ab()
    for fn, args in [(in_scan, (a, b)), (in_jit, (a, b)), (jax.vmap(in_jit), (a[None], b[None]))]:
        offenders, checked = low_precision_dots(fn, *args)
        assert checked == 1 and len(offenders) == 1, offenders
        assert "dot_general" in offenders[0]
        assert "test_precision.py" in offenders[0] or "<source unknown>" in offenders[0]


def test_walker_descends_into_cond_while_and_custom_derivatives() -> None:
    @jax.custom_jvp
    def custom(a, b):
        return jnp.dot(a, b)

    custom.defjvp(lambda primals, tangents: (custom(*primals), jnp.zeros((3, 3))))

    @jax.custom_vjp
    def custom_v(a, b):
        return jnp.tensordot(a, b, axes=1)

    custom_v.defvjp(lambda a, b: (custom_v(a, b), (a, b)), lambda r, g: (g @ r[1].T, r[0].T @ g))

    def nested(a, b):
        def body(carry):
            i, acc = carry
            branch = lax.cond(i > 0, lambda: custom(a, b), lambda: jnp.matmul(a, b))
            return i + 1, acc + branch + custom_v(a, b)

        return lax.while_loop(lambda c: c[0] < 2, body, (0, jnp.zeros((3, 3))))[1]

    offenders, checked = low_precision_dots(nested, *_ab())
    assert checked == 3 and len(offenders) == 3, offenders


def test_walker_accepts_highest_and_rejects_half_highest() -> None:
    a, b = _ab()
    assert low_precision_dots(numerics.matmul, a, b) == ([], 1)
    half = (HIGHEST, lax.Precision.DEFAULT)
    offenders, _ = low_precision_dots(lambda a, b: jnp.dot(a, b, precision=half), a, b)
    assert len(offenders) == 1
    # The fast-mode exemption covers numerics._fast_matmul only, never another product.
    fast = numerics.FAST_PCA_PRECISION
    assert low_precision_dots(numerics._fast_matmul, a, b, fast_ok=True) == ([], 1)
    assert len(low_precision_dots(numerics._fast_matmul, a, b)[0]) == 1
    elsewhere = lambda a, b: jnp.dot(a, b, precision=fast)  # noqa: E731
    assert len(low_precision_dots(elsewhere, a, b, fast_ok=True)[0]) == 1
    # Integer products are exact whatever the precision: not checked.
    ints = lambda a, b: jnp.dot(a.astype(jnp.int32), b.astype(jnp.int32))  # noqa: E731
    assert low_precision_dots(ints, a, b) == ([], 0)


# ---------------------------------------------------------------------------------------------
# The same on the StableHLO that a GPU would compile (lowering rules may add products)

_LOC_DEF = re.compile(r"^(#loc\d+) = loc\((.*)\)\s*$", re.M)


def _cuda_stablehlo(fn: Any, *args: Any) -> str | None:
    """StableHLO text of ``jit(fn)`` lowered for CUDA, or None where this JAX cannot."""
    try:
        from jax import export
    except ImportError:
        return None
    try:
        return export.export(jax.jit(fn), platforms=["cuda"])(*args).mlir_module()
    except NotImplementedError:  # no CUDA lowering rules in this jaxlib
        return None


def _hlo_location(text: str, loc: str) -> str:
    """The parc_jax source lines a StableHLO location reference leads to (callee before caller)."""
    defs = dict(_LOC_DEF.findall(text))
    lines: list[str] = []

    def expand(ref: str, depth: int = 0) -> None:
        # In order: a callsite(callee at caller) names the callee first.
        for token in re.findall(r'#loc\d+|"[^"]+\.py":\d+', defs.get(ref, ""))[: 64 - depth]:
            if token.startswith("#loc"):
                expand(token, depth + 1)
            elif "parc_jax" in token:
                lines.append(token.replace('"', ""))

    expand(loc)
    return " <- ".join(dict.fromkeys(lines)) or loc


def low_precision_hlo_dots(text: str, fast_ok: bool = False) -> list[str]:
    """Floating-point ``stablehlo.dot_general`` ops without HIGHEST on both operands (with
    ``fast_ok``: except ``numerics._fast_matmul``'s at ``FAST_PCA_PRECISION``)."""
    fast = f"precision = [{numerics.FAST_PCA_PRECISION.name}, {numerics.FAST_PCA_PRECISION.name}]"
    out = []
    for line in text.splitlines():
        if "stablehlo.dot_general" not in line:
            continue
        operands = line.split(" : (", 1)[-1].split(") ->", 1)[0]
        if not re.search(r"x(f16|bf16|f32|f64)>|<(f16|bf16|f32|f64)>", operands):
            continue  # integer products are exact
        if "precision = [HIGHEST, HIGHEST]" not in line:
            loc = re.search(r"loc\((#loc\d+)\)\s*$", line)
            where = _hlo_location(text, loc.group(1)) if loc else "<source unknown>"
            if fast_ok and fast in line and where.split(" <- ")[0].endswith(_fast_matmul_line()):
                continue
            out.append(f"{where}: {line.strip()}")
    return out


def test_hlo_check_reports_plain_dot() -> None:
    text = _cuda_stablehlo(lambda a, b: jnp.dot(a, b) + numerics.matmul(a, b), *_ab())
    if text is None:
        pytest.skip("this JAX cannot lower for CUDA")
    offenders = low_precision_hlo_dots(text)
    assert len(offenders) == 1 and "HIGHEST" not in offenders[0], offenders


@pytest.mark.parametrize("name", list(SCORERS))
def test_cuda_lowering_uses_highest_precision(name: str) -> None:
    spec = SCORERS[name]
    n, d = SHAPES[1]
    mode, n_dims = ("fast", N_DIMS) if spec.reduces else ("exact", None)
    with numerics.pca_mode(mode):
        text = _cuda_stablehlo(_scorer_fn(name, n_dims, _targets(n, False), True), _inputs(n, d, 2))
    if text is None:
        pytest.skip("this JAX cannot lower for CUDA")
    offenders = low_precision_hlo_dots(text, fast_ok=mode == "fast")
    assert not offenders, (
        f"scorer {name!r} lowered for CUDA (vmap, n={n} d={d} pca={mode} n_dims={n_dims}): "
        f"{len(offenders)} float matrix products lack HIGHEST:\n" + "\n".join(offenders)
    )
