"""Shared numerics for the scorers: PCA, standardisation, ranks and correlations.

Everything here is a pure, jittable function of arrays for ONE model. Arrays may carry padded
feature columns (zeros) described by a boolean ``mask`` of valid columns; every function gives
the unpadded result for them. Matrix products use ``precision=HIGHEST`` so that GPUs do not
silently fall back to TF32 (about 1e-3 relative error, see docs/metrics.md).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from parc_jax.compilation_cache import enable_persistent_cache

__all__ = [
    "accurate_sum",
    "average_ranks",
    "center",
    "certified_exact_pca",
    "column_mask",
    "matmul",
    "pca",
    "pca_many",
    "pca_mode",
    "reduce_features",
    "reduce_features_certified",
    "reduce_features_many",
    "pearson",
    "row_correlation_distance",
    "sequenced",
    "Spectrum",
    "spearman",
    "spearman_two_valued",
    "truncate_low_bit",
    "standardize",
    "upper_triangle",
]

HIGHEST = lax.Precision.HIGHEST


def sequenced(x: Any, after: Any) -> Any:
    """``x``, made to depend on ``after``: whatever consumes the result starts only once
    ``after`` has been computed.

    Why: XLA:CPU runs independent operations of one program concurrently on its intra-op
    thread pool, and jaxlib's batched LAPACK kernels (``eigh``, ``cholesky``, ``svd`` under
    ``vmap``) each block a pool thread while waiting for their batch tasks on that same pool.
    Two such factorisations at once can take every thread of a small pool and wait forever
    (measured: RSA on a vmapped batch of 4 hung in 3 of 4 runs on 2 cores; the stacks sat in
    ``jax::ParallelBatchMap``). Scorers with two independent factorisations chain them.

    The dependency is arithmetic (``x + 0 * a finite element of after``), exact for finite
    ``x``: ``lax.optimization_barrier`` alone did not stop the overlap, as XLA:CPU lowers it
    to a control dependency that its concurrent executor does not wait for.
    """
    leaf = jnp.ravel(jax.tree_util.tree_leaves(after)[0])[0]
    zero = jnp.where(jnp.isfinite(leaf), leaf, 0).astype(x.dtype) * 0
    return x + zero


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` at full float32 precision on every backend."""
    return jnp.matmul(a, b, precision=HIGHEST)


def column_mask(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Valid-column mask ``[d]`` of ``x: [n, d]`` as ``x.dtype`` (ones when ``mask`` is None)."""
    if mask is None:
        return jnp.ones(x.shape[-1], x.dtype)
    return jnp.asarray(mask).astype(x.dtype)


def accurate_sum(x: jax.Array, *, block: int = 256) -> jax.Array:
    """Sum of all entries of ``x`` by two-level (blocked) summation.

    A flat float32 reduction over ~10^5 rank products loses several digits; summing blocks of
    ``block`` first keeps the error near ``(block + size / block) * eps`` of the magnitudes.
    """
    flat = jnp.ravel(x)
    size = flat.shape[0]
    if size <= block:
        return jnp.sum(flat)
    pad = (-size) % block
    flat = jnp.pad(flat, (0, pad))
    return jnp.sum(jnp.sum(flat.reshape(-1, block), axis=1))


def center(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Subtract column means of ``x: [n, d]``; padded (masked-out) columns stay zero."""
    m = column_mask(x, mask)
    return (x - jnp.mean(x, axis=0)) * m


def standardize(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Per column zero mean and unit population std, for ``x: [n, d]``.

    A column whose entries are all equal (zero variance) is left at zero. Constancy is tested
    exactly (``max == min``) rather than by a variance threshold: the float mean of identical
    numbers need not equal them, which would otherwise turn a constant column into +-1 noise.
    """
    m = column_mask(x, mask)
    xc = x - jnp.mean(x, axis=0)
    std = jnp.sqrt(jnp.mean(xc * xc, axis=0))
    constant = jnp.max(x, axis=0) == jnp.min(x, axis=0)
    keep = jnp.logical_and(~constant, m > 0)
    safe = jnp.where(keep, std, 1.0)
    return jnp.where(keep, xc / safe, 0.0)


def _sign_fix(loadings: jax.Array) -> jax.Array:
    """Signs ``[f]`` making the largest-|.| entry of each loading column positive.

    ``loadings: [d, f]``. ``argmax`` returns the lowest index on ties, as docs/metrics.md asks.
    """
    idx = jnp.argmax(jnp.abs(loadings), axis=0)
    pivot = jnp.take_along_axis(loadings, idx[None, :], axis=0)[0]
    return jnp.where(pivot < 0, -1.0, 1.0).astype(loadings.dtype)


_PCA_MODE: contextvars.ContextVar[str] = contextvars.ContextVar(
    "parc_jax_pca_mode", default="exact"
)
PCA_MODES = ("exact", "fast")
# Fast mode's subspace iteration steps. Its accuracy against PARC with a float64 PCA
# (benchmarks/fast_parc_accuracy.py, results/fast_parc_accuracy.md): with the Rayleigh-Ritz
# step on the data that follows (_pca_finish), 4 steps were within 0.075 PARC points on a
# synthetic width mix (512-4096) and within 0.17 on every committed real bank (orl, where
# exact float32 PCA itself is 0.18 from float64); 2 steps reached 0.30, 3 0.16, 6 0.19. The
# bound fast mode is held to is 0.2. Each step costs two thin products with the data (or one
# with the formed Gram), so 4 steps halve the iteration's cost of 8.
FAST_PCA_ITERATIONS = 4
# Precision of the fast mode's subspace-iteration products (not of its final Rayleigh-Ritz
# step on the data, which stays at HIGHEST): HIGH is about float32 accuracy at half the cost
# of HIGHEST on GPUs (three bfloat16 passes instead of six), enough to find the subspace,
# whose directions the final step resolves at full float32 precision. Exact mode uses HIGHEST
# throughout. XLA:CPU computes every float32 product at full precision whatever this says.
FAST_PCA_PRECISION = lax.Precision.HIGH
# Variance ratio (to the first component) at or below which a principal component is taken
# as beyond the numerical rank: 16 float32 epsilons (~1.9e-6). A float32 Gram or covariance
# eigendecomposition puts the eigenvalues of exactly rank-deficient features at up to ~3 eps
# of the largest (measured: 1.2e-7 to 3.3e-7 for n = 500-2000, d = 64-4096, spectra spanning
# 1e6), so 16 eps leaves a 6x margin; weaker real components cannot be resolved by it. The
# float64 reference applies the same rule. A much higher cut drops real components: at 1e-5,
# features with a few dominant directions (1000x "massive activations") keep one component
# of 32, and PARC gives 3.2 where the float64 PCA gives 22.9.
NULL_COMPONENT_RTOL = 16 * float(jnp.finfo(jnp.float32).eps)
_FAST_PCA_OVERSAMPLE = 8


@contextlib.contextmanager
def pca_mode(mode: str) -> Iterator[None]:
    """Select the PCA solver used by :func:`pca` while functions are *traced*.

    ``"exact"`` (default): dense symmetric eigendecomposition. ``"fast"``: block subspace
    iteration with Householder QR and a Rayleigh-Ritz step on the smaller of the Gram and the
    covariance matrix. The mode is read at trace time: it applies to functions traced inside
    the context; the public scorer functions keep one compiled program per mode
    (:func:`jit_per_pca_mode`) and the engine builds one per mode, so both follow the mode of
    each call.
    """
    if mode not in PCA_MODES:
        raise ValueError(f"pca mode: expected one of {PCA_MODES}, got {mode!r}")
    token = _PCA_MODE.set(mode)
    try:
        yield
    finally:
        _PCA_MODE.reset(token)


def jit_per_pca_mode(fn: Callable, **jit_kwargs: Any) -> Callable:
    """``jax.jit(fn, **jit_kwargs)`` that compiles once per PCA mode: each call runs the
    program traced under the mode current at the call (see :func:`pca_mode`).

    A plain module-level ``jax.jit`` reads the mode only when it traces, so after one call
    the cached program answered every later call of the same shapes in whatever mode it was
    traced (a default call after one inside ``pca_mode("fast")`` returned the fast PCA's
    result). For the public scorer functions; the engine builds one program per mode itself.
    The first call turns on the persistent compilation cache
    (:func:`parc_jax.compilation_cache.enable_persistent_cache`), as every entry point does.
    """

    def traced_in(mode: str) -> Callable:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with pca_mode(mode):
                return fn(*args, **kwargs)

        return jax.jit(run, **jit_kwargs)

    compiled = {mode: traced_in(mode) for mode in PCA_MODES}

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        enable_persistent_cache()
        return compiled[_PCA_MODE.get()](*args, **kwargs)

    return call


# How the fast PCA's subspace iteration orthonormalises its block: "householder" (one LAPACK /
# cuSOLVER QR per model) or "cholesky" (shifted Cholesky QR: matrix products, a batched p x p
# Cholesky and a batched triangular solve). Read at trace time.
FAST_PCA_QR = "cholesky"
# Fast mode's products: "auto" (whichever costs fewer flops, :func:`_implicit_is_cheaper`),
# "gram" (form the Gram / covariance matrix, iterate on it) or "implicit" (multiply by the
# data twice per step). Read at trace time; for benchmarks.
FAST_PCA_ROUTE = "auto"
_FAST_QR_SHIFTS = (1e-3, 1e-5, 1e-7)  # relative to unit column norms, times p


def _orthonormal_basis(y: jax.Array) -> jax.Array:
    """Orthonormal columns spanning ``y: [s, p]`` (see ``FAST_PCA_QR``).

    Householder QR stays orthonormal for any rank. Plain CholeskyQR does not: when the
    features have lower rank than the block ``p`` (dead ReLU units make this common; 36 of 64
    columns in a ground-truth bank), ``Y^T Y`` is singular and its Cholesky factor NaN. The
    "cholesky" variant scales columns to unit norm and shifts every pass (by ``_FAST_QR_SHIFTS``
    times ``p``, above float32 rounding of ``Y^T Y``), so it stays finite; directions of ``y``
    far below its largest one come out shrunk rather than unit, which only loses components
    of (numerically) no variance.
    """
    if FAST_PCA_QR == "householder":
        return jnp.linalg.qr(y)[0]
    p = y.shape[1]
    norms = jnp.sqrt(jnp.sum(y * y, axis=0))
    dead = norms <= 1e-30
    q = y / jnp.where(dead, 1.0, norms)[None, :]
    return _cholesky_qr_passes(q, dead, [shift * p for shift in _FAST_QR_SHIFTS])[0]


def _cholesky_qr_passes(
    q: jax.Array, dead: jax.Array, shifts: Sequence[float]
) -> tuple[jax.Array, jax.Array]:
    """Cholesky QR passes over ``q: [s, p]``, one per diagonal shift: ``(q', r)`` with
    ``q = q' r``, ``r`` upper triangular. A dead (zero) column gets a unit pivot so every
    factorisation exists and that column stays zero."""
    r = jnp.eye(q.shape[1], dtype=q.dtype)
    for shift in shifts:
        g = matmul(q.T, q) + jnp.diag(jnp.where(dead, 1.0, shift).astype(q.dtype))
        c = jnp.linalg.cholesky(g, symmetrize_input=True)
        q = lax.linalg.triangular_solve(c, q, left_side=False, lower=True, transpose_a=True)
        r = matmul(c.T, r)
    return q, r


def qr_near_orthogonal(y: jax.Array, *, negligible: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """``y = q r`` for ``y: [s, p]`` whose nonzero columns are close to orthogonal, by
    Cholesky QR on unit-scaled columns: ``q: [s, p]``, ``r: [p, p]`` upper triangular.

    Why not ``jnp.linalg.qr``: on GPUs a batch of tall Householder QRs (and SVDs) runs as one
    solver call per model, while this is matrix products, a batched Cholesky of ``p x p`` and
    a batched triangular solve. It is exact to float32 rounding when the scaled columns are
    well conditioned, which holds where it is used: PCA loadings and the data projected on
    them are orthogonal in exact arithmetic. One shifted pass then two plain ones (shifted
    CholeskyQR3): the shift keeps the first factorisation finite if rounding noise makes two
    columns nearly parallel. Columns below ``negligible`` times the largest norm are treated
    as exactly zero: ``q`` and ``r`` get zero there, and ``y = q r`` still holds.
    """
    p = y.shape[1]
    norms = jnp.sqrt(jnp.sum(y * y, axis=0))
    dead = norms <= negligible * jnp.max(norms)
    scale = jnp.where(dead, 1.0, norms)
    q = jnp.where(dead[None, :], 0.0, y / scale[None, :])
    q, r = _cholesky_qr_passes(q, dead, (1e-5 * p, 0.0, 0.0))
    keep = (~dead).astype(y.dtype)
    return q * keep[None, :], r * scale[None, :] * keep[:, None]


def _top_eigenvectors(a: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """Top-``width`` eigenpairs of a symmetric PSD ``a: [s, s]``, descending:
    ``(values [width], vectors [s, width])``."""
    if _PCA_MODE.get() == "exact" or width + _FAST_PCA_OVERSAMPLE >= a.shape[0]:
        vals, vecs = jnp.linalg.eigh(a, symmetrize_input=True)
        return vals[::-1][:width], vecs[:, ::-1][:, :width]
    p = width + _FAST_PCA_OVERSAMPLE
    # A fixed start block: deterministic results, no key to thread through the scorers.
    omega = jax.random.normal(jax.random.key(0), (a.shape[0], p), a.dtype)
    return _subspace_iteration(
        lambda q: _fast_matmul(a, q),
        _fast_matmul(a, omega),
        width,
        core=lambda q: matmul(q.T, _fast_matmul(a, q)),
    )


def _fast_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` at fast mode's precision (``FAST_PCA_PRECISION``)."""
    return jnp.matmul(a, b, precision=FAST_PCA_PRECISION)


def _subspace_iteration(
    apply: Callable[[jax.Array], jax.Array],
    start: jax.Array,
    width: int,
    *,
    core: Callable[[jax.Array], jax.Array],
) -> tuple[jax.Array, jax.Array]:
    """Approximate top-``width`` eigenpairs of a symmetric PSD operator ``A`` (``apply: q [s,
    p] -> A q``), descending: orthonormalise ``start: [s, p]`` (a random block already
    multiplied by ``A`` or a factor of it), run ``FAST_PCA_ITERATIONS`` steps ``q <- orth(A
    q)``, then Rayleigh-Ritz on ``core(q) = q^T A q [p, p]``."""
    q = _orthonormal_basis(start)
    # a loop in the program, not unrolled by Python: one body to compile, whatever the count
    q = lax.fori_loop(0, FAST_PCA_ITERATIONS, lambda _, q: _orthonormal_basis(apply(q)), q)
    vals, w = jnp.linalg.eigh(core(q), symmetrize_input=True)
    return vals[::-1][:width], matmul(q, w[:, ::-1][:, :width])


def _implicit_top_eigenvectors(
    xc: jax.Array, gram_side: bool, width: int
) -> tuple[jax.Array, jax.Array]:
    """:func:`_top_eigenvectors` of ``Xc Xc^T`` (``gram_side``) or ``Xc^T Xc`` without forming
    it: ``B = Xc^T`` (or ``Xc``) and each step multiplies by ``B`` and ``B^T``. The start block
    is one product with a random ``[d, p]`` (or ``[n, p]``) block, and the Rayleigh-Ritz core
    ``q^T B^T B q`` the Gram of ``B q``: one thin product each, not two."""
    b = xc.T if gram_side else xc  # A = B^T B, B: [r, s]
    p = width + _FAST_PCA_OVERSAMPLE
    omega = jax.random.normal(jax.random.key(0), (b.shape[0], p), xc.dtype)

    def core(q: jax.Array) -> jax.Array:
        bq = _fast_matmul(b, q)
        return _fast_matmul(bq.T, bq)

    return _subspace_iteration(
        lambda q: _fast_matmul(b.T, _fast_matmul(b, q)), _fast_matmul(b.T, omega), width,
        core=core,
    )  # fmt: skip


# The engine's exact PCA of a batch (:func:`reduce_features_certified`): block
# subspace iteration on the formed Gram / covariance matrix at full float32 precision, with a
# block of the width plus ``CERTIFIED_OVERSAMPLE`` columns, checked every ``CERTIFIED_CHECK``
# steps by a Rayleigh-Ritz step; converged once every one of the top ``width`` Ritz pairs has
# a residual ``|A v - theta v| <= CERTIFIED_RTOL * theta_1`` (each pair is then an exact
# eigenpair of a matrix that close to ``A``; the residual is a backward error). A
# vector's angle to the true eigenvector is at most about its residual over its gap to the
# neighbouring eigenvalues, and float32 products leave residuals near ``1e-7 * theta_1``
# however long the iteration runs, where ``eigh`` resolves close pairs better; so the pairs
# are certified only when every kept pair's residual is at most ``CERTIFIED_GAP_RTOL`` times
# its gap (the gap less the residuals, each Ritz value being within its residual of an
# eigenvalue; pair ``width + 1`` bounds the last gap). The loop stops once certified, or
# converged with pair ``width + 1`` converged too. A model not certified within
# ``CERTIFIED_MAX_STEPS``, or with a pair too close to its neighbours, is flagged, and the
# engine computes its PCA again with
# ``eigh`` (under ``vmap`` a ``lax.cond`` would run both branches for every model).
# ``CERTIFIED_GAP_RTOL = 0.03``: at 0.1 one real bank's PARC moved by 7.5e-3 points from the
# eigh route (a pair 2e-6 * theta_1 apart), at 0.03 every committed bank stays within 7e-4,
# below eigh's own distance from float64 (benchmarks/exact_pca.py).
# Why: on GPUs a batch of ``eigh`` of 500 x 500 runs as one solver call per model, while the
# iteration is batched matrix products, a batched small Cholesky and batched ``p x p``
# ``eigh`` calls. Accuracy and certification rates: benchmarks/exact_pca.py.
# Which solver the engine's exact mode uses: "auto" (certified iteration on accelerators, where
# it replaces a per-model solver loop; ``eigh`` on CPUs, where LAPACK's per-model ``eigh`` is
# faster than the iteration: benchmarks/exact_pca.py), "certified" or "eigh". Read when the
# engine builds its programs.
EXACT_PCA_SOLVER = "auto"
CERTIFIED_OVERSAMPLE = 16
CERTIFIED_CHECK = 4
CERTIFIED_MAX_STEPS = 48
CERTIFIED_RTOL = 64 * float(jnp.finfo(jnp.float32).eps)
CERTIFIED_GAP_RTOL = 0.03


def certified_exact_pca() -> bool:
    """Whether the engine's exact PCA runs the certified iteration (see ``EXACT_PCA_SOLVER``)."""
    if EXACT_PCA_SOLVER not in ("auto", "certified", "eigh"):
        raise ValueError(f"EXACT_PCA_SOLVER: unknown solver {EXACT_PCA_SOLVER!r}")
    if EXACT_PCA_SOLVER == "auto":
        return jax.default_backend() != "cpu"
    return EXACT_PCA_SOLVER == "certified"


def _certified_top_eigenvectors(a: jax.Array, width: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Top-``width`` eigenpairs of a symmetric PSD ``a: [s, s]`` by certified subspace
    iteration (see ``CERTIFIED_RTOL``): ``(values [width] descending, vectors [s, width],
    certified bool [])``; ``eigh`` itself (certified) when the block would not be smaller
    than ``a``."""
    s = a.shape[0]
    p = width + CERTIFIED_OVERSAMPLE
    if p >= s:
        vals, vecs = jnp.linalg.eigh(a, symmetrize_input=True)
        return vals[::-1][:width], vecs[:, ::-1][:, :width], jnp.array(True)
    a = (a + a.T) / 2
    omega = jax.random.normal(jax.random.key(0), (s, p), a.dtype)

    def ritz(q: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """Rayleigh-Ritz on the block's span: top-``width`` values, vectors, whether the
        iteration is done, whether the pairs are certified (every residual small, and each
        kept vector determined by its gaps), and ``A`` times the block (the next step's
        product)."""
        q = _ritz_basis(q)
        aq = matmul(a, q)
        values, w = jnp.linalg.eigh(matmul(q.T, aq), symmetrize_input=True)
        # the top width + 1 pairs: the one below the last bounds the last one's gap
        values, w = values[::-1][: width + 1], w[:, ::-1][:, : width + 1]
        vecs = matmul(q, w)
        residual = matmul(aq, w) - vecs * values[None, :]
        norms = jnp.sqrt(jnp.sum(residual * residual, axis=0))
        scale = jnp.maximum(values[0], jnp.finfo(a.dtype).tiny)
        # each kept vector is determined to an angle of about residual / gap, the gap to its
        # neighbours in the spectrum (a Ritz value is within its residual of an eigenvalue)
        theta, r = values[:width], norms[:width]
        gap_below = theta - values[1:] - r - norms[1:]
        gap_above = jnp.concatenate([jnp.full((1,), jnp.inf, theta.dtype), gap_below[:-1]])
        gap = jnp.minimum(gap_above, gap_below)
        kept = theta > NULL_COMPONENT_RTOL * scale
        separated = jnp.all(jnp.logical_or(~kept, r <= CERTIFIED_GAP_RTOL * gap))
        # a block whose span lost columns to rounding (features of rank below the block) can
        # miss weak real components among the top ``width``: not certified, eigh decides
        spans = jnp.sum(jnp.any(q != 0, axis=0)) >= width
        small = norms <= CERTIFIED_RTOL * scale
        converged = jnp.logical_and(jnp.all(small[:width]), spans)
        certified = jnp.logical_and(converged, separated)
        # done: certified, or converged with the next pair converged too (then the gaps are
        # as well known as they will be)
        done = jnp.logical_or(certified, jnp.logical_and(converged, small[width]))
        return theta, vecs[:, :width], done, certified, aq

    def steps(state):
        count, q, _ = state
        q = lax.fori_loop(0, CERTIFIED_CHECK - 1, lambda _, q: _orthonormal_basis(matmul(a, q)), q)
        _, _, done, _, aq = ritz(q)
        # after the check's eigh: two batched LAPACK calls at once can deadlock XLA:CPU's
        # pool (see `sequenced`)
        return count + CERTIFIED_CHECK, _orthonormal_basis(sequenced(aq, done)), done

    def going(state):
        # a converged model whose pairs are too close to be certified stops too once the
        # next pair has converged: more steps would not separate them (eigh decides)
        count, _, done = state
        return jnp.logical_and(~done, count < CERTIFIED_MAX_STEPS)

    start = (jnp.int32(0), _orthonormal_basis(matmul(a, omega)), jnp.array(False))
    _, q, _ = lax.while_loop(going, steps, start)
    # the returned pairs come from the final block, checked again (one step past the check
    # that stopped the loop)
    theta, vecs, _, certified, _ = ritz(q)
    return theta, vecs, certified


def _ritz_basis(q: jax.Array) -> jax.Array:
    """An orthonormal basis (to float32 rounding) of the well-represented span of ``q: [s,
    p]``, as ``p`` columns of which those beyond it are zero.

    The subspace iteration's shifted Cholesky QR leaves ``q^T q`` a few ``p * 1e-7`` from the
    identity and, when the block is numerically rank deficient, some columns shrunk and nearly
    dependent; a Rayleigh-Ritz step needs an exactly orthonormal basis. So: the eigenvectors
    of ``q^T q`` with eigenvalues above ``1e-6`` of the largest (the span, with a condition
    number below 1e3), scaled to unit length, then one plain Cholesky QR pass (exact to
    rounding on columns that close to orthonormal)."""
    mu, v = jnp.linalg.eigh(matmul(q.T, q), symmetrize_input=True)
    keep = mu > 1e-6 * jnp.maximum(mu[-1], jnp.finfo(q.dtype).tiny)
    basis = matmul(q, v * jnp.where(keep, lax.rsqrt(jnp.where(keep, mu, 1.0)), 0.0)[None, :])
    return _cholesky_qr_passes(basis, ~keep, (0.0,))[0]


def _pca_width(n_dims: int, n: int, d: int) -> int:
    """Static number of components :func:`pca` returns for ``x: [n, d]``."""
    return max(1, min(n_dims, n - 1, d))


def pca(x: jax.Array, n_dims: int, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """PCA of ``x: [n, d]`` to ``f = min(n_dims, n - 1, d_valid)`` components.

    Exact mode (default) uses the eigendecomposition of the smaller of the ``n x n`` Gram
    matrix and the ``d x d`` covariance; see :func:`pca_mode` for the fast solver. Component
    signs follow docs/metrics.md (largest-magnitude loading positive). ``n_dims`` must be static.
    Components whose variance is at most ``NULL_COMPONENT_RTOL`` times the first one's lie
    beyond the numerical rank and are returned as zero columns (exactly what they are in
    exact arithmetic; the reference applies the same rule).

    Returns ``(scores, component_mask)``: ``scores: [n, F]`` with the static width
    ``F = min(n_dims, n - 1, d)``, and ``component_mask: bool [F]`` marking the model's own ``f``
    components; columns beyond ``f`` (only possible when ``x`` has padded columns) are zero.
    """
    return pca_many(x, (n_dims,), mask)[0]


class Spectrum(NamedTuple):
    """The centred features' matrix of the smaller side and its eigenvalues (one model).

    ``matrix: [s, s]``: ``Xc Xc^T`` (``s = n``, when ``n <= d``) or ``Xc^T Xc`` (``s = d``);
    ``eigenvalues: [s]`` ascending. PCA computes both; TransRate's global term needs exactly
    them, so the engine hands them over instead of computing them twice.
    """

    matrix: jax.Array
    eigenvalues: jax.Array


def pca_many(
    x: jax.Array, n_dims: Sequence[int], mask: jax.Array | None = None
) -> list[tuple[jax.Array, jax.Array]]:
    """:func:`pca` of ``x: [n, d]`` at several widths, in the order of ``n_dims`` (static).

    One Gram (or covariance) product for all widths and, in exact mode, one eigendecomposition:
    the top ``F`` eigenpairs are the first ``F`` of the top ``F' > F``, so each width costs only
    its thin finishing steps (the exact mode's ``eigh`` is most of a PCA). Every width goes
    through the same operations as :func:`pca` alone (which is this with one width). In fast
    mode the subspace iteration depends on the width, so each width runs its own.
    """
    return _pca_many(x, n_dims, mask, spectrum=False)[0]


def _pca_many(
    x: jax.Array,
    n_dims: Sequence[int],
    mask: jax.Array | None,
    *,
    spectrum: bool,
    certified: bool = False,
) -> tuple[list[tuple[jax.Array, jax.Array]], Spectrum | None, jax.Array]:
    """:func:`pca_many`, with ``spectrum`` the :class:`Spectrum` it is computed from (in fast
    mode, an extra eigenvalue decomposition of the same matrix), and whether the exact mode's
    solver certified every width (a bool scalar; always True but for ``certified``, which in
    exact mode replaces ``eigh`` by :func:`_certified_top_eigenvectors` unless ``spectrum``
    asks for every eigenvalue anyway)."""
    ok = jnp.array(True)
    if not n_dims and not spectrum:
        return [], None, ok
    n, d = x.shape
    m = column_mask(x, mask)
    d_valid = jnp.sum(m).astype(jnp.int32)
    xc = center(x, mask)
    gram_side = n <= d
    widths = sorted({_pca_width(k, n, d) for k in n_dims}, reverse=True)
    exact = _PCA_MODE.get() == "exact"
    if exact or spectrum or not _implicit_is_cheaper(n, d, widths):
        a = matmul(xc, xc.T) if gram_side else matmul(xc.T, xc)
    else:
        a = None  # fast mode multiplies by Xc and Xc^T instead of forming A (see below)
    spec, after = None, None
    iterate = exact and certified and not spectrum
    if iterate:
        # certified for the widest width = every residual among its top pairs is small, so
        # the narrower widths' pairs (its leading ones) are certified too
        top_vals, top_vecs, ok = _certified_top_eigenvectors(a, widths[0])
        after = top_vals
    elif exact or spectrum:
        vals, vecs = jnp.linalg.eigh(a, symmetrize_input=True)
        spec = Spectrum(a, vals) if spectrum else None
        top_vals, top_vecs = vals[::-1], vecs[:, ::-1]  # descending
        if not exact:
            after = vals  # the widths run their own subspace iterations, after this eigh
    done: dict[int, tuple[jax.Array, jax.Array]] = {}
    for width in widths:
        # One factorisation after the other: batched ones must not overlap on XLA:CPU's pool
        # (see `sequenced`).
        xw = xc if after is None else sequenced(xc, after)
        if exact:
            lam, vec = top_vals[:width], top_vecs[:, :width]
        elif a is None:
            lam, vec = _implicit_top_eigenvectors(xw, gram_side, width)
        else:
            lam, vec = _top_eigenvectors(a if after is None else sequenced(a, after), width)
        done[width] = _pca_finish(xw, lam, vec, gram_side, jnp.minimum(width, d_valid))
        after = done[width][0]
    return [done[_pca_width(k, n, d)] for k in n_dims], spec, ok


def _implicit_is_cheaper(n: int, d: int, widths: Sequence[int]) -> bool:
    """Whether fast mode's subspace iterations cost fewer flops through the data (two thin
    products per step, ``4 n d p``) than forming the ``s x s`` matrix (``2 n d s``, ``s =
    min(n, d)``) and iterating on it (``2 s^2 p`` per step); static shapes only. Each width
    runs ``FAST_PCA_ITERATIONS`` steps plus a start and a Rayleigh-Ritz core."""
    if FAST_PCA_ROUTE != "auto":
        return FAST_PCA_ROUTE == "implicit"
    s = min(n, d)
    steps = FAST_PCA_ITERATIONS
    blocks = [w + _FAST_PCA_OVERSAMPLE for w in widths if w + _FAST_PCA_OVERSAMPLE < s]
    if not blocks or len(blocks) < len(widths):
        return False  # a width solved by eigh needs the matrix anyway
    implicit = sum((steps + 1) * 4 * n * d * p for p in blocks)
    formed = 2 * n * d * s + sum((steps + 2) * 2 * s * s * p for p in blocks)
    return implicit < formed


def _pca_finish(
    xc: jax.Array, lam: jax.Array, vec: jax.Array, gram_side: bool, f_eff: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """PCA scores from the top eigenpairs ``(lam [F], vec)`` of the centred ``xc``'s Gram
    (``vec: [n, F]``, ``gram_side``) or covariance (``vec: [d, F]``); see :func:`pca`."""
    width = lam.shape[0]
    if gram_side:
        v = matmul(xc.T, vec)  # loadings up to scale: V = Xc^T U / s, |V_i|^2 = lambda_i
        # Null eigenvectors of the Gram give no loading (V = 0 in exact arithmetic); left in,
        # their normalised rounding noise would overlap the real directions. QR then makes the
        # basis orthonormal; the dropped directions stay zero columns with no variance.
        keep = lam > NULL_COMPONENT_RTOL * jnp.maximum(lam[0], 0.0)
        v = v * keep[None, :] / jnp.sqrt(jnp.where(keep, lam, 1.0))[None, :]
        v = qr_near_orthogonal(v)[0]
    else:
        v = vec
    # Rayleigh-Ritz on the data itself: the SVD of the thin [n, F] projection re-resolves the
    # directions inside the subspace at the accuracy of singular values, not of their squares.
    # Weak components of a float32 Gram/covariance eigendecomposition carry errors of order
    # eps * lambda_max / gap; this step brings them to eps * sigma_max / gap.
    # The SVD of the thin projection goes through its QR: the [F, F] SVD is one batched
    # solver call on GPUs, a tall one is one call per model. On the Gram side the projected
    # columns are the kept components, near-orthogonal: a Cholesky QR (batched on GPUs). On
    # the covariance side (n > d) every eigenvector is kept, so that with F >= rank the
    # Rayleigh-Ritz step spans the whole feature space and recovers even weak components
    # exactly; beyond the rank the projected columns are rounding noise, linearly dependent on
    # the others, which a Cholesky QR cannot factor (NaN: 64 components of AlexNet features of
    # rank 36-59 on the shipped example bank), so Householder QR there (n > d: small d).
    y = matmul(xc, v)
    q, r = qr_near_orthogonal(y) if gram_side else jnp.linalg.qr(y)
    ur, sing, wt = jnp.linalg.svd(r)
    u_small = matmul(q, ur)
    v = matmul(v, wt.T)
    vals = sing * sing
    signs = _sign_fix(v)
    scores = u_small * sing[None, :]
    comp_mask = jnp.arange(width) < f_eff
    # Beyond the numerical rank a component is zero in exact arithmetic (Xc v = 0); computed,
    # it is rounding noise that standardisation would blow up to unit variance. Such columns
    # are returned as exact zeros (still valid columns, as in the reference).
    live = vals > NULL_COMPONENT_RTOL * jnp.maximum(vals[0], 0.0)
    scores = scores * (signs * live)[None, :] * comp_mask[None, :].astype(xc.dtype)
    return scores, comp_mask


def reduce_features(
    features: jax.Array, mask: jax.Array | None, n_dims: int | None
) -> tuple[jax.Array, jax.Array]:
    """Optional PCA before scoring: ``features: [n, d] -> (x [n, F], valid bool [F])``.

    With ``n_dims=None`` the features pass through with padded columns forced to zero and
    ``valid`` the column mask (all True when ``mask`` is None); otherwise :func:`pca`'s scores
    and component mask. Reducing its output again with ``n_dims=None`` changes nothing, so a
    scorer given already-reduced features (the engine shares one PCA between scorers, see
    :func:`reduce_features_many`) computes exactly what it would from the raw ones.
    """
    return reduce_features_many(features, mask, (n_dims,))[0][0]


def reduce_features_many(
    features: jax.Array,
    mask: jax.Array | None,
    n_dims: Sequence[int | None],
    *,
    spectrum: bool = False,
) -> tuple[list[tuple[jax.Array, jax.Array]], Spectrum | None]:
    """:func:`reduce_features` at several ``n_dims`` (static; None = pass through), in order,
    with one PCA eigendecomposition for all the widths (:func:`pca_many`); with ``spectrum``
    also the :class:`Spectrum` of the (unreduced) centred features, else None."""
    out, spec, _ = _reduce_many(features, mask, n_dims, spectrum=spectrum, certified=False)
    return out, spec


def reduce_features_certified(
    features: jax.Array,
    mask: jax.Array | None,
    n_dims: Sequence[int | None],
    *,
    spectrum: bool = False,
) -> tuple[list[tuple[jax.Array, jax.Array]], Spectrum | None, jax.Array]:
    """:func:`reduce_features_many` for a batch under ``vmap``: in exact mode (without
    ``spectrum``) the top eigenpairs come from certified subspace iteration instead of a full
    ``eigh`` (see ``CERTIFIED_RTOL``), and a third output, ``certified: bool []``, says
    whether they passed the check. A model that did not must be reduced again with
    :func:`reduce_features_many` (what the engine does); one that did gets the same reduction
    to float32 resolution. In fast mode, or with ``spectrum``, it is
    :func:`reduce_features_many` with ``certified`` always True."""
    return _reduce_many(features, mask, n_dims, spectrum=spectrum, certified=True)


def _reduce_many(
    features: jax.Array,
    mask: jax.Array | None,
    n_dims: Sequence[int | None],
    *,
    spectrum: bool,
    certified: bool,
) -> tuple[list[tuple[jax.Array, jax.Array]], Spectrum | None, jax.Array]:
    widths = [k for k in n_dims if k is not None]
    pcas, spec, ok = _pca_many(features, widths, mask, spectrum=spectrum, certified=certified)
    reduced = dict(zip(widths, pcas, strict=True))
    out = []
    for k in n_dims:
        if k is None:
            d = features.shape[1]
            valid = jnp.ones(d, bool) if mask is None else jnp.asarray(mask).astype(bool)
            out.append((jnp.where(valid[None, :], features, 0.0), valid))
        else:
            out.append(reduced[k])
    return out, spec, ok


def row_correlation_distance(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """``1 - corrcoef(rows of x)`` for ``x: [n, d]``, over the valid columns.

    Rows are centred over their valid entries and L2-normalised, then ``D = 1 - Z Z^T``. A
    constant row has no correlation; it is given correlation 0 (distance 1) with every other
    row, rather than NaN (np.corrcoef's answer). Scorers validate such rows away where they
    can (constant label rows) and document this choice where they cannot (features).
    """
    m = column_mask(x, mask)
    count = jnp.maximum(jnp.sum(m), 1.0)
    mean = jnp.sum(x * m, axis=1, keepdims=True) / count
    z = (x - mean) * m
    norm = jnp.linalg.norm(z, axis=1, keepdims=True)
    z = z / jnp.where(norm > 0, norm, 1.0)
    corr = matmul(z, z.T)
    # The diagonal is exactly 0 in exact arithmetic (1 for a constant row by the rule above).
    n = x.shape[0]
    eye = jnp.eye(n, dtype=bool)
    diag = jnp.where(norm[:, 0] > 0, 0.0, 1.0).astype(x.dtype)
    return jnp.where(eye, diag[:, None], 1.0 - corr)


def upper_triangle(m: jax.Array) -> jax.Array:
    """Entries ``i < j`` of a square ``m: [n, n]`` in row-major order, ``[n (n - 1) / 2]``."""
    n = m.shape[0]
    rows, cols = jnp.triu_indices(n, k=1)
    return m[rows, cols]


def _order_keys(v: jax.Array) -> jax.Array:
    """int32 keys that sort like the float32 values ``v`` (a sign-aware total order).

    Non-negative floats sort like their bit patterns; negative ones need their magnitude bits
    reversed. -0.0 (bit pattern ``INT32_MIN``) becomes +0.0's key 0, so that the two compare,
    and tie, as equal (``v + 0.0`` would do it in IEEE arithmetic, but XLA simplifies
    ``x + 0`` away under jit: -0.0 then ranked below +0.0).
    """
    bits = lax.bitcast_convert_type(v.astype(jnp.float32), jnp.int32)
    int_min = jnp.int32(-(2**31))
    bits = jnp.where(bits == int_min, 0, bits)
    return jnp.where(bits < 0, int_min - bits - 1, bits)


def _group_last(sorted_keys: jax.Array) -> jax.Array:
    """Last position (0-based) of each element's tie group in a sorted ``[m]``: one scan."""
    m = sorted_keys.shape[0]
    pos = jnp.arange(m, dtype=jnp.int32)
    ends = jnp.concatenate([sorted_keys[1:] != sorted_keys[:-1], jnp.array([True])])
    return lax.cummin(jnp.where(ends, pos, m - 1), axis=0, reverse=True)


def _tie_groups(sorted_keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """First and last position (0-based) of each element's tie group in a sorted ``[m]``."""
    m = sorted_keys.shape[0]
    pos = jnp.arange(m, dtype=jnp.int32)
    starts = jnp.concatenate([jnp.array([True]), sorted_keys[1:] != sorted_keys[:-1]])
    first = lax.cummax(jnp.where(starts, pos, 0), axis=0)
    return first, _group_last(sorted_keys)


def _tie_bounds_by_search(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """First and last position (0-based) of each key's tie group among the sorted ``keys``,
    in the keys' own order: one sort of the bare keys, one binary search (the first
    position), and the group's last position read from one scan over the sorted keys (on
    XLA:CPU 17.4 against 24.7 ms per model of 124,750 keys, B = 16, for a second, right-side
    search: ``benchmarks/rank_bounds.py``)."""
    sorted_keys = jnp.sort(keys)
    left = jnp.searchsorted(sorted_keys, keys, side="left")
    return left, _group_last(sorted_keys)[left]


def _ranks_from_bounds(first: jax.Array, last: jax.Array, m: int) -> tuple[jax.Array, jax.Array]:
    """``(c, t)`` from each element's tie group ``[first, last]`` (0-based positions in sorted
    order) among ``m``: ``c = 2 r - (m + 1)`` with ``r`` the 1-based average rank (exact
    integers, ties included), and ``t`` the size of the element's tie group."""
    return (first + last + 1 - m).astype(jnp.int32), last - first + 1


def _tie_term(t: jax.Array) -> jax.Array:
    """``sum over tie groups of (t^3 - t)`` from every element's group size ``t``: each of a
    group's ``t`` members adds ``t^2 - 1``."""
    t = t.astype(jnp.float32)
    return jnp.sum(t * t - 1.0)


def _centred_ranks(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Average ranks of ``v: [m]`` as exact integers ``c = 2 r - (m + 1)`` in ``v``'s order,
    and ``tie_term = sum over tie groups of (t^3 - t)``.

    Two ways to the same integers, chosen per platform: on the CPU, a sort of the bare keys
    and a binary search (XLA:CPU sorted 124,750 (key, index) pairs in 34 ms, the bare keys
    in 5.5 ms; :func:`_tie_bounds_by_search`); elsewhere, one sort of (key, index) pairs, tie
    groups by scans, and a scatter back to ``v``'s order (on an H100 two binary searches took
    70 ms for 1,000 models where a sort took 5; ``benchmarks/profile_parc.py``).
    """
    keys = _order_keys(v)
    c, t = lax.platform_dependent(
        keys, cpu=_centred_ranks_by_search, default=_centred_ranks_by_sort
    )
    return c, _tie_term(t)


def _centred_ranks_by_search(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(c, t)`` of int32 ``keys: [m]`` in their order: ``c = 2 r - (m + 1)`` and the size of
    each key's tie group, by a binary search and a scan (see :func:`_centred_ranks`)."""
    return _ranks_from_bounds(*_tie_bounds_by_search(keys), keys.shape[0])


def _centred_ranks_by_sort(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """:func:`_centred_ranks_by_search`'s integers through a sort of (key, index) pairs."""
    order = jnp.arange(keys.shape[0], dtype=jnp.int32)
    c, order, t = _twice_centred_ranks_sorted(keys, order, stable=True)
    back = jnp.zeros(keys.shape[0], jnp.int32)
    return back.at[order].set(c), back.at[order].set(t)


def _twice_centred_ranks_sorted(
    keys: jax.Array, payload: jax.Array, *, stable: bool = False
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(c_sorted, payload_sorted, t_sorted)`` for int32 ``keys: [m]`` sorted together with
    ``payload: [m]``: ``c = 2 r - (m + 1)`` and the tie group size ``t`` of each key, in sorted
    order."""
    sorted_keys, payload = lax.sort((keys, payload), num_keys=1, is_stable=stable)
    c, t = _ranks_from_bounds(*_tie_groups(sorted_keys), keys.shape[0])
    return c, payload, t


def average_ranks(v: jax.Array) -> jax.Array:
    """1-based average ranks of ``v: [m]`` (ties share their mean rank), as float32.

    Equal to ``scipy.stats.rankdata(v, method="average")`` for float32 inputs.
    """
    c, _ = _centred_ranks(v)
    return (c + (v.shape[0] + 1)).astype(jnp.float32) / 2.0


def _centred_sum_squares(m: int, tie_term: jax.Array) -> jax.Array:
    """``sum (r - mean r)^2`` of average ranks of ``m`` items with the given tie term."""
    mf = jnp.float32(m)
    return (mf * mf * mf - mf - tie_term) / 12.0


def _int_block_sum(c: jax.Array, *, block: int = 4096) -> jax.Array:
    """Exact int32 sums of blocks of ``c`` (|c| < 2^19), then a float32 sum of the blocks."""
    size = c.shape[0]
    pad = (-size) % block
    blocks = jnp.sum(jnp.pad(c, (0, pad)).reshape(-1, block), axis=1)
    return jnp.sum(blocks.astype(jnp.float32))


SPEARMAN_TWO_VALUED_METHODS = ("auto", "flagbit", "search", "pairs")


def spearman_two_valued(values: jax.Array, high: jax.Array, *, method: str = "auto") -> jax.Array:
    """Spearman correlation between ``values: [m]`` and a two-valued variable.

    ``high: bool [m]`` marks entries of the two-valued variable's larger value. With average
    ranks, the two-valued variable's ranks are constants per group, so only ``values`` needs
    ranking and the correlation is a point-biserial one:
    ``sum_high (r - rbar) * (m / 2) / sqrt(SS_r * m0 m1 m / 4)``; NaN when ``values`` or
    ``high`` is constant (undefined).

    ``method="flagbit"`` (``"auto"``, the default, on every platform): ONE sort of bare int32
    keys, no payload and no search. Each key is the value's order key
    (:func:`_order_keys`) with its lowest bit replaced by the low-group flag (``~high``, e.g.
    "same class" for PARC's label distance); in sorted order the tie groups are runs of equal
    ``key >> 1`` (found by two scans), and the flag comes back as ``key & 1``, so the low
    group's rank sum needs no gather. **Which values tie**: two float32 values tie exactly
    when they are equal after clearing the lowest bit of their significands (truncating the
    24-bit significand to 23 bits toward zero; ``-0.0`` is ``+0.0``), i.e. equal values and
    the pairs of neighbouring floats whose bit patterns differ only in bit 0. Such neighbours
    are one float32 ulp apart (~1.2e-7 relative), below the rounding of the distances
    themselves; the result equals SciPy's ``spearmanr`` of the values so truncated. On
    XLA:CPU this is 2-3x faster than the search method (``benchmarks/rank_step.py``).

    ``method="search"``: one sort of the bare keys (all 32 bits), each value's tie group
    ``[left, right)`` from a binary search and a scan (:func:`_tie_bounds_by_search`), so
    ``2 r - (m + 1) = left + right - m`` exactly: ties are exactly equal values.
    ``method="pairs"``: one sort of (key, high) pairs, tie groups by two scans; the same
    integers as ``"search"``. Both are kept as references for the benchmarks and tests. Static.
    """
    if method not in SPEARMAN_TWO_VALUED_METHODS:
        raise ValueError(f"method: expected one of {SPEARMAN_TWO_VALUED_METHODS}, got {method!r}")
    m = values.shape[0]
    keys = _order_keys(values)
    if method in ("auto", "flagbit"):
        c, t, low = _two_valued_by_flag_bit(keys, (~high).astype(jnp.int32))
        s_high = -_int_block_sum(c * low) / 2.0  # the c sum to 0: high's sum is minus low's
    else:
        by = _two_valued_by_search if method == "search" else _two_valued_by_pairs
        c, t, flags = by(keys, high.astype(jnp.int32))
        s_high = _int_block_sum(c * flags) / 2.0  # sum over high of (r - rbar)
    tie_term = _tie_term(t)
    m1 = jnp.sum(high.astype(jnp.float32))
    m0 = jnp.float32(m) - m1
    ss_r = _centred_sum_squares(m, tie_term)
    ss_label = m0 * m1 * jnp.float32(m) / 4.0
    rho = (jnp.float32(m) / 2.0) * s_high / jnp.sqrt(ss_r * ss_label)
    # Undefined when either side is constant; tested exactly (every c is 0 when all values
    # tie), since the float32 sum of squares of one m-sized tie group rounds to a small
    # nonzero number and gave 0.
    return jnp.where(jnp.all(c == 0) | (m0 == 0) | (m1 == 0), jnp.nan, rho)


def truncate_low_bit(values: jax.Array) -> jax.Array:
    """float32 ``values`` with the lowest significand bit cleared (``-0.0`` as ``+0.0``): the
    values :func:`spearman_two_valued`'s default method ranks (equal results tie)."""
    bits = lax.bitcast_convert_type(values.astype(jnp.float32), jnp.int32)
    bits = jnp.where(bits == jnp.int32(-(2**31)), 0, bits)
    return lax.bitcast_convert_type(bits & ~1, jnp.float32)


def _two_valued_by_flag_bit(keys: jax.Array, flags: jax.Array) -> tuple[jax.Array, ...]:
    """``(c, t, flags)`` in sorted order from one sort of ``keys`` with ``flags`` (0/1) in
    their lowest bit: ``c = 2 r - (m + 1)`` of the tie group ``keys >> 1`` (see
    :func:`spearman_two_valued`), ``t`` its size."""
    packed = jnp.sort((keys & ~1) | flags)
    c, t = _ranks_from_bounds(*_tie_groups(packed >> 1), keys.shape[0])
    return c, t, packed & 1


def _two_valued_by_search(keys: jax.Array, flags: jax.Array) -> tuple[jax.Array, ...]:
    """``(c, t, flags)`` of int32 ``keys, flags: [m]`` in their own order (a binary search)."""
    return (*_centred_ranks_by_search(keys), flags)


def _two_valued_by_pairs(keys: jax.Array, flags: jax.Array) -> tuple[jax.Array, ...]:
    """:func:`_two_valued_by_search`'s integers in sorted order, the flags sorted with them."""
    c, flags, t = _twice_centred_ranks_sorted(keys, flags)
    return c, t, flags


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
    """Spearman correlation of ``a, b: [m]`` with average ranks for ties (as SciPy); NaN
    when either is constant (undefined, as SciPy)."""
    m = a.shape[0]
    ca, ta = _centred_ranks(a)
    cb, tb = _centred_ranks(b)
    # c values are exact integers, products in float32 are rounded once each, and the sum
    # is blocked.
    cross = accurate_sum(ca.astype(jnp.float32) * cb.astype(jnp.float32)) / 4.0
    rho = cross / jnp.sqrt(_centred_sum_squares(m, ta) * _centred_sum_squares(m, tb))
    return jnp.where(jnp.all(ca == 0) | jnp.all(cb == 0), jnp.nan, rho)  # constant: undefined


def pearson(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pearson correlation of ``a, b: [m]`` (two-pass, blocked sums)."""
    ac = a - accurate_sum(a) / a.shape[0]
    bc = b - accurate_sum(b) / b.shape[0]
    return accurate_sum(ac * bc) / jnp.sqrt(accurate_sum(ac * ac) * accurate_sum(bc * bc))
