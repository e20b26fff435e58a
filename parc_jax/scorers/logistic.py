"""Logistic-regression probe: held-out accuracy of an L2 multinomial model fit on half the probe.

A baseline of the PARC paper's comparison (Table 1): Bolya, Mittapalli, Hoffman, "Scalable
Diverse Model Selection for Accessible Transfer Learning", NeurIPS 2021
(https://arxiv.org/abs/2111.06977). Definition as computed here: ``docs/metrics.md``.

Definition (docs/architecture.md, shared with the reference): features, after optional PCA
over all ``n`` probe rows, are standardised with the mean and population std of the training
half (columns constant on it -> 0); a multinomial model with intercept minimises
``sum_i CE_i + ||W||^2 / (2 C)`` (intercept unpenalised, the scikit-learn convention) over
the classes present in the training half; the score is the accuracy x100 on the other half,
argmax ties to the lowest class.

Why standardise (docs/metrics.md names only "L2, C = 1"): an L2 penalty is not scale-invariant, so
with one ``C`` for every model, raw features would put models under different regularisation
by the arbitrary scale of their activations (features 10x larger meet a penalty effectively
100x weaker); the training half's standardisation, scikit-learn's usual ``StandardScaler``
before ``LogisticRegression``, makes ``C`` mean the same for every model.

Implementation notes:

* The fit is a compact L-BFGS (Armijo backtracking, written-out gradient) inside one
  ``lax.while_loop`` (see :func:`fit_logistic`), so it vmaps over models (the batch runs until
  its slowest model stops; its own batching rule keeps finished models from costing a copy
  of the L-BFGS memory per step, and the directions come from the compact matrix form, two
  passes over the memory as matrix products). optax's L-BFGS with its zoom line search
  reached the same optima but took 1.7 times as long to compile (4.7 s against 2.8 s of CPU
  for one 200 x 64, K = 10 probe), and compilation dominates a bank's first bucket on CPU.
* Wide features (``d > n_t``, the training half's size, decided statically from the shapes)
  are first mapped into the row span of the training rows: with ``X_train^T = Q R`` (thin
  QR, ``Q: [d, n_t]`` orthonormal), the optimal ``W`` lies in ``span(Q)`` (representer
  theorem: the gradient of the loss is ``X_train^T (P - Y)`` and the penalty's is
  ``W / C``), so ``W = Q B`` with ``||W|| = ||B||`` gives the same optimum over ``[n_t, K]``
  coefficients on the features ``X Q: [n, n_t]``. Unlike a plain dual ``W = X_train^T A``
  this keeps the primal's conditioning (the dual's Hessian carries the Gram matrix twice),
  and QR avoids forming ``X X^T``. ``n_t`` is a static shape only through ``train_rows``
  (the engine and :func:`logistic` pass it; 1.6x faster than the fallback on 500-row probes
  with 300 training rows); given only the traced mask, ``d > n`` features take the QR of
  the ``[d, n]`` matrix with the test rows zeroed: the same optimum, with ``n - n_t`` idle
  coordinates in every step.
* Classes absent from the training half get logits of ``-inf``: scikit-learn never sees
  them, and it is the limit of the K-class fit, whose unpenalised intercept would diverge.
* Needs >= 2 samples of every class present (one per half); ``stratified_half`` makes the
  split. Single-label targets only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap
from jax.typing import ArrayLike

from parc_jax import numerics
from parc_jax.scorers._common import mask_or_ones, prepare_features, require_num_classes
from parc_jax.validation import is_traced

__all__ = [
    "GTOL",
    "LOGISTIC_C",
    "LOGISTIC_N_DIMS",
    "MAX_EVALUATIONS",
    "MEMORY",
    "PACTRAN_GAUSS_N_DIMS",
    "PATIENCE",
    "fit_logistic",
    "logistic",
    "logistic_core",
    "pactran_gauss",
    "pactran_gauss_core",
    "standardize_rows",
    "stratified_half",
]

#: Default PCA width of ``logistic``: none, the raw features.
LOGISTIC_N_DIMS = None
#: Default inverse L2 strength of ``logistic`` (scikit-learn's ``C``).
LOGISTIC_C = 1.0
MAX_EVALUATIONS = 2000
PATIENCE = 50
MEMORY = 10  # curvature pairs, SciPy's L-BFGS-B default (the reference's)
MAX_BACKTRACKS = 40
# Gradient-norm tolerance of the objective divided by the training-set size, per dtype.
GTOL = {"float32": 1e-7, "float64": 1e-10}


def stratified_half(labels: ArrayLike, seed: int = 0) -> np.ndarray:
    """Seeded stratified split of a single-label probe: ``labels int [n] -> bool [n]``.

    True marks the training half. Classes are visited in ascending order; for each, a
    permutation drawn from ``np.random.default_rng(seed)`` puts the first ``ceil(n_c / 2)`` of
    its samples in training and the other ``floor(n_c / 2)`` on the held-out side, so every
    class with >= 2 samples has at least one on each side (a class with one sample has it in
    training only). Host-side NumPy; the same ``seed`` always gives the same split.
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(
            f"labels: stratified_half needs single-label class indices [n], got shape {y.shape} "
            "(logistic regression is single-label only)"
        )
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels: expected integer class indices, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        raise ValueError(f"labels: class indices must be >= 0, found {y.min()}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    mask = np.zeros(y.shape[0], dtype=bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        mask[idx[: idx.size - idx.size // 2]] = True
    return mask


def standardize_rows(x: jax.Array, rows: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Standardise ``x: [n, p]`` with the mean and population std of the rows ``rows: bool [n]``.

    A column constant on those rows (tested exactly, ``max == min``) or masked out becomes 0
    for every row.
    """
    w = rows.astype(x.dtype)
    count = jnp.sum(w)
    mean = jnp.sum(x * w[:, None], axis=0) / count
    xc = x - mean
    std = jnp.sqrt(jnp.sum(xc * xc * w[:, None], axis=0) / count)
    hi = jnp.max(jnp.where(rows[:, None], x, -jnp.inf), axis=0)
    lo = jnp.min(jnp.where(rows[:, None], x, jnp.inf), axis=0)
    keep = (hi != lo) & (numerics.column_mask(x, mask) > 0)
    return jnp.where(keep, xc / jnp.where(keep, std, 1.0), 0.0)


class _LbfgsState(NamedTuple):
    x: jax.Array  # accepted iterate [N]
    f: jax.Array  # objective at x
    g: jax.Array  # gradient at x [N]
    d: jax.Array  # search direction [N]
    gd: jax.Array  # g . d (< 0)
    t: jax.Array  # step length of the next trial point x + t d
    memory: jax.Array  # [2M, N]: past steps s in rows 0..M-1, gradient changes y in M..2M-1
    sy: jax.Array  # [M, M] s_i . y_j by slot (column j written with pair j)
    yy: jax.Array  # [M, M] y_i . y_j by slot
    valid: jax.Array  # bool [M]: slot holds a pair
    newest: jax.Array  # slot of the newest pair
    gamma: jax.Array  # initial inverse-Hessian scale s.y / y.y of the newest pair
    evals: jax.Array  # objective evaluations so far
    backtracks: jax.Array  # consecutive rejected trial points
    best_x: jax.Array
    best_norm: jax.Array
    stale: jax.Array  # evaluations since best_norm last improved


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
    # A dot product, not jnp.sum(a * b): under vmap XLA:CPU reduced the [B, N] product row by
    # row ~3x slower than its batched dot (2.4x on a whole fit at B = 1). HIGHEST: no TF32.
    return jnp.dot(a, b, precision=lax.Precision.HIGHEST)


def _lbfgs_direction(g, proj, memory, sy, yy, valid, gamma, newest):
    """``-H g`` by the compact L-BFGS form over a circular memory (Byrd, Nocedal & Schnabel
    1994, Eq. 2.6; the inverse Hessian of the two-loop recursion, in exact arithmetic).

    ``H = gamma I + [S, gamma Y] [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]]
    [S^T; gamma Y^T]`` with the pairs ordered oldest first, ``R`` the upper triangle of
    ``S^T Y`` and ``D`` its diagonal. Two passes over the ``[2M, N]`` memory as matrix
    products, where the two-loop recursion makes ``4M`` dependent vector operations, which
    take 14 of the 22 ms of one step of 8 vmapped fits (M = 20, N = 30,100) on XLA:CPU (a
    scratch profile; the reproducible A/B: ``benchmarks/engine_ab.py``,
    ``benchmarks/README.md``).
    Empty slots get a unit diagonal and zero coupling, so they add exactly nothing.
    ``proj = memory @ g`` ``[2M]`` is the caller's (one product with the memory update's).
    """
    m = valid.shape[0]
    order = (newest + 1 + jnp.arange(m)) % m  # oldest first
    v = valid[order]
    both = v[:, None] & v[None, :]
    a = jnp.where(v, proj[:m][order], 0.0)
    b = jnp.where(v, proj[m:][order], 0.0)
    sy_o = jnp.where(both, sy[order][:, order], 0.0)
    r = jnp.triu(sy_o) + jnp.diag(jnp.where(v, 0.0, 1.0))
    p = jax.scipy.linalg.solve_triangular(r, a, lower=False)
    yy_o = jnp.where(both, yy[order][:, order], 0.0)
    rhs = jnp.diagonal(sy_o) * p + gamma * (numerics.matmul(yy_o, p) - b)
    top = jax.scipy.linalg.solve_triangular(r, rhs, trans="T", lower=False)
    coef = jnp.zeros(2 * m, g.dtype).at[order].set(top).at[m + order].set(-gamma * p)
    return -(gamma * g + numerics.matmul(coef, memory))


def fit_logistic(
    x: jax.Array,
    labels: jax.Array,
    train: jax.Array,
    *,
    num_classes: int,
    C: float | jax.Array = LOGISTIC_C,
    max_evaluations: int = MAX_EVALUATIONS,
    gtol: float | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Fit ``sum_{train} CE + ||W||^2 / (2C)`` by L-BFGS; returns ``(W [p, K], b [K], evals)``.

    ``x: [n, p]`` (already standardised), ``labels: int [n]``, ``train: bool [n]``;
    ``gtol=None`` takes ``GTOL`` for the dtype of ``x``. Classes without a training sample
    keep ``W = 0, b = 0`` and must be excluded from predictions.

    The objective is divided by the training-set size (same optimum; one tolerance for all
    sizes) and its gradient is written out (``X^T (P - Y)`` and ``W / C``), which keeps the
    compiled program small. L-BFGS (memory ``MEMORY``, directions by the compact form of
    :func:`_lbfgs_direction`; a batching rule of its own, see :func:`_lbfgs_program`) with a
    backtracking line search
    (halving from step 1) that accepts a trial point by the Armijo condition or by a
    non-positive slope along the direction; the objective is convex, so ``s . y >= 0`` and
    curvature pairs are safe (pairs with ``s . y`` at rounding level are skipped). Each loop
    step evaluates one trial point.

    Stopping: in float32 the gradient norm bottoms out between ~1e-7 (small problems) and a
    few 1e-6 (~1.5e-6 for 300 rows, 300 features, 100 classes), rounding in ``X^T (P - Y)``,
    and near the optimum the objective changes below its resolution, so neither a tight
    tolerance nor a value test can always end the loop. The loop keeps the iterate with the
    smallest gradient norm and stops when that norm is below ``gtol``, has not improved for
    ``PATIENCE`` evaluations, a line search fails, or after ``max_evaluations``.
    """
    dtype = x.dtype
    if gtol is None:
        gtol = GTOL.get(jnp.dtype(dtype).name, GTOL["float32"])
    fit = _lbfgs_program(num_classes, int(max_evaluations), float(gtol))
    theta, evals = fit(x, labels, train, jnp.asarray(C, dtype))
    p, k = x.shape[1], num_classes
    return theta[: p * k].reshape(p, k), theta[p * k :], evals


class _Problem(NamedTuple):
    x: jax.Array  # [n, p]
    onehot: jax.Array  # [n, K]
    w: jax.Array  # [n] 1 for training rows
    present: jax.Array  # bool [K]: class has a training row
    count: jax.Array  # training rows
    C: jax.Array


def _problem(x, labels, train, C, num_classes: int) -> _Problem:
    w = train.astype(x.dtype)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=x.dtype)
    present = jnp.sum(onehot * w[:, None], axis=0) > 0
    return _Problem(x, onehot, w, present, jnp.sum(w), C)


def _value_and_grad(prob: _Problem, theta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Objective / count and its gradient, written out (``X^T (P - Y)`` and ``W / C``)."""
    p, k = prob.x.shape[1], prob.onehot.shape[1]
    weights, bias = theta[: p * k].reshape(p, k), theta[p * k :]
    logits = jnp.where(prob.present, numerics.matmul(prob.x, weights) + bias, -jnp.inf)
    log_z = jax.nn.logsumexp(logits, axis=1)
    label_logit = jnp.sum(jnp.where(prob.onehot > 0, logits, 0.0), axis=1)
    # where, not a product: a held-out row of an untrained class has an infinite CE.
    ce = numerics.accurate_sum(jnp.where(prob.w > 0, log_z - label_logit, 0.0))
    value = (ce + numerics.accurate_sum(weights * weights) / (2.0 * prob.C)) / prob.count
    resid = (jnp.exp(logits - log_z[:, None]) - prob.onehot) * prob.w[:, None]  # [n, K]
    grad_w = (numerics.matmul(prob.x.T, resid) + weights / prob.C) / prob.count
    grad_b = jnp.sum(resid, axis=0) / prob.count
    return value, jnp.concatenate([grad_w.ravel(), grad_b])


def _initial_state(size: int, dtype) -> _LbfgsState:
    zeros = jnp.zeros(size, dtype)
    scalar = partial(jnp.asarray, dtype=dtype)
    pairs = jnp.zeros((MEMORY, MEMORY), dtype)
    return _LbfgsState(
        x=zeros, f=scalar(jnp.inf), g=zeros, d=zeros, gd=scalar(-1.0), t=scalar(0.0),
        memory=jnp.zeros((2 * MEMORY, size), dtype), sy=pairs, yy=pairs,
        valid=jnp.zeros(MEMORY, bool), newest=jnp.int32(MEMORY - 1), gamma=scalar(1.0),
        evals=jnp.int32(0), backtracks=jnp.int32(0), best_x=zeros, best_norm=scalar(jnp.inf),
        stale=jnp.int32(0),
    )  # fmt: skip


def _step(c: _LbfgsState, active: jax.Array, prob: _Problem) -> _LbfgsState:
    """One trial point; a model with ``active`` False keeps its state (memory untouched)."""
    eps = jnp.finfo(c.x.dtype).eps
    trial = c.x + c.t * c.d
    f, g = _value_and_grad(prob, trial)
    first = c.evals == 0  # the starting point itself
    # Armijo, or a slope test that rounding cannot fool: on a convex objective a trial
    # point where the slope along d is still <= 0 lies below the start (phi(t) < phi(0)
    # for phi convex with phi'(0) < 0, phi'(t) <= 0). Near the optimum float32 values
    # differ by less than their resolution and Armijo alone would stall.
    armijo = f <= c.f + 1e-4 * c.t * c.gd
    accept = first | armijo | (_dot(g, c.d) <= 0)
    # Curvature pair of the accepted step.
    s, y = trial - c.x, g - c.g
    sy, yy = _dot(s, y), _dot(y, y)
    keep = active & accept & ~first & (sy > eps * jnp.sqrt(_dot(s, s) * yy))
    slot = (c.newest + 1) % MEMORY
    # two rows written in place, not a select over the whole [2M, N] memory
    memory = c.memory.at[slot].set(jnp.where(keep, s, c.memory[slot]))
    memory = memory.at[MEMORY + slot].set(jnp.where(keep, y, memory[MEMORY + slot]))
    x_new = jnp.where(accept, trial, c.x)
    f_new = jnp.where(accept, f, c.f)
    g_new = jnp.where(accept, g, c.g)
    # One pass over the memory: the new pair's column of S^T Y and Y^T Y, and [S; Y] g.
    proj = numerics.matmul(memory, jnp.stack([y, g_new], axis=1))  # [2M, 2]
    col_sy, col_yy = proj[:MEMORY, 0], proj[MEMORY:, 0]
    sy_mat = jnp.where(keep, c.sy.at[:, slot].set(col_sy), c.sy)
    yy_mat = jnp.where(keep, c.yy.at[:, slot].set(col_yy).at[slot, :].set(col_yy), c.yy)
    valid = jnp.where(keep, c.valid.at[slot].set(True), c.valid)
    newest = jnp.where(keep, slot, c.newest)
    gamma = jnp.where(keep, sy / jnp.where(keep, yy, 1.0), c.gamma)
    # Next direction from the accepted point; steepest descent (memory cleared) if the
    # quasi-Newton one is not a descent direction (rounding only: the problem is convex).
    g_norm = jnp.sqrt(_dot(g_new, g_new))
    start_scale = jnp.minimum(1.0, 1.0 / jnp.maximum(g_norm, eps))
    has_memory = jnp.any(valid)
    d = _lbfgs_direction(g_new, proj[:, 1], memory, sy_mat, yy_mat, valid,
                         jnp.where(has_memory, gamma, start_scale), newest)  # fmt: skip
    gd = _dot(g_new, d)
    descent = gd < 0
    d = jnp.where(descent, d, -start_scale * g_new)
    gd = jnp.where(descent, gd, -start_scale * g_norm * g_norm)
    valid = valid & descent
    better = accept & (g_norm < c.best_norm)
    new = _LbfgsState(
        x=x_new, f=f_new, g=g_new,
        d=jnp.where(accept, d, c.d), gd=jnp.where(accept, gd, c.gd),
        t=jnp.where(accept, 1.0, 0.5 * c.t),
        memory=memory, sy=sy_mat, yy=yy_mat, valid=valid, newest=newest, gamma=gamma,
        evals=c.evals + 1, backtracks=jnp.where(accept, 0, c.backtracks + 1),
        best_x=jnp.where(better, x_new, c.best_x),
        best_norm=jnp.where(better, g_norm, c.best_norm),
        stale=jnp.where(better, 0, c.stale + 1),
    )  # fmt: skip
    # An inactive model keeps its state; the memory's rows were written only where ``keep``
    # (so only for active models), which spares a select over the whole [2M, N] memory.
    held = jax.tree.map(
        partial(jnp.where, active), new._replace(memory=None), c._replace(memory=None)
    )
    return held._replace(memory=memory)


@cache
def _lbfgs_program(num_classes: int, max_evaluations: int, gtol: float) -> Callable:
    """``(x, labels, train, C) -> (theta, evals)``, with its own batching rule.

    Under a plain ``vmap`` a ``while_loop`` whose condition differs per model selects every
    loop variable between its old and new value at every step, so the ``[B, 2M, N]`` memory
    is copied each step and its in-place row writes are lost (a scratch profile on XLA:CPU:
    a loop carrying an array of that size, [8, 40, 30,100], takes 8.6 ms per step with a
    per-model condition and 0.25 ms with a shared one; one step of 8 fits takes ~22 ms).
    The rule runs one loop while any model is active and freezes the finished ones inside
    the step (their memory writes are masked instead).
    """

    def keep_going(c: _LbfgsState) -> jax.Array:
        return (
            (c.evals < max_evaluations)
            & (c.best_norm >= gtol)
            & (c.stale < PATIENCE)
            & (c.backtracks < MAX_BACKTRACKS)
        )

    @custom_vmap
    def fit(x, labels, train, C):
        prob = _problem(x, labels, train, C, num_classes)
        state = _initial_state(x.shape[1] * num_classes + num_classes, x.dtype)
        final = lax.while_loop(keep_going, lambda c: _step(c, jnp.bool_(True), prob), state)
        return final.best_x, final.evals

    @fit.def_vmap
    def fit_batched(axis_size, in_batched, x, labels, train, C):
        if not any(in_batched):
            return fit(x, labels, train, C), (False, False)
        axes = tuple(0 if b else None for b in in_batched)
        prob = jax.vmap(partial(_problem, num_classes=num_classes), in_axes=axes)(
            x, labels, train, C
        )
        size = x.shape[-1] * num_classes + num_classes
        state = jax.vmap(lambda _: _initial_state(size, x.dtype))(jnp.arange(axis_size))
        active = jax.vmap(keep_going)

        def body(c):
            return jax.vmap(_step)(c, active(c), prob)

        final = lax.while_loop(lambda c: jnp.any(active(c)), body, state)
        return (final.best_x, final.evals), (True, True)

    return fit


def logistic_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = LOGISTIC_N_DIMS,
    feature_mask: jax.Array | None = None,
    train_mask: jax.Array,
    C: float | jax.Array = LOGISTIC_C,
    train_rows: jax.Array | None = None,
) -> jax.Array:
    """Held-out accuracy x100 for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]``, ``feature_mask: bool [d]``,
    ``train_mask: bool [n]`` (True = training half), ``train_rows: int [n_t]`` (optional):
    the positions of ``train_mask``'s True entries, an array so that ``n_t`` is a static
    shape. With it, features wider than ``n_t`` are reduced to the span of exactly those rows
    (``[n, n_t]``); without it, those wider than ``n`` to the span of the masked ``[n, d]``
    matrix (``[n, n]``: the same optimum, with ``n - n_t`` idle coordinates in every step).
    """
    x, m = numerics.reduce_features(features, feature_mask, n_dims)
    train = jnp.asarray(train_mask, bool)
    x = standardize_rows(x, train, m)
    n, p = x.shape
    # Exact reduction to the training rows' span (see the module docstring).
    if train_rows is None:
        if p > n:
            q, _ = jnp.linalg.qr(jnp.where(train[:, None], x, 0.0).T)  # [p, n]
            x = numerics.matmul(x, q)
        weights, bias, _ = fit_logistic(x, labels, train, num_classes=num_classes, C=C)
    else:
        if p > train_rows.shape[0]:
            q, _ = jnp.linalg.qr(x[train_rows].T)  # [p, n_t]
            x = numerics.matmul(x, q)
        # the fit sees only the training rows: the same sums, without the n - n_t zeros
        rows_all = jnp.ones(train_rows.shape, bool)
        weights, bias, _ = fit_logistic(
            x[train_rows], labels[train_rows], rows_all, num_classes=num_classes, C=C
        )
    onehot = jax.nn.one_hot(labels, num_classes, dtype=x.dtype)
    present = jnp.sum(onehot * train[:, None], axis=0) > 0
    logits = jnp.where(present, numerics.matmul(x, weights) + bias, -jnp.inf)
    pred = jnp.argmax(logits, axis=1)  # lowest class on ties
    held_out = (~train).astype(x.dtype)
    hits = jnp.sum(held_out * (pred == labels).astype(x.dtype))
    return 100.0 * hits / jnp.sum(held_out)


_logistic_jit = numerics.jit_per_pca_mode(logistic_core, static_argnames=("num_classes", "n_dims"))


def logistic(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = LOGISTIC_N_DIMS,
    feature_mask: ArrayLike | None = None,
    train_mask: ArrayLike | None = None,
    C: float = LOGISTIC_C,
) -> jax.Array:
    """Held-out accuracy of L2 multinomial logistic regression fit on half of the probe.

    The features (after optional PCA over all rows) are standardised with the training
    half's statistics; the model with intercept minimises ``sum CE + ||W||^2 / (2 C)`` over
    the training half, and the score is its accuracy on the other half (argmax ties to the
    lowest class; docs/metrics.md).

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image (float16 is
        widened to float32; float64 is kept only under JAX's x64 mode).
      labels: int ``[n]`` class indices in ``0..K-1`` (single-label only, >= 2 samples per
        class present).
      num_classes: ``K``. Default: ``max(labels) + 1`` from concrete labels; required when
        the labels are traced (inside jit/vmap).
      n_dims: exact PCA width first; None (default): the raw features.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.
      train_mask: bool ``[n]``, True for the training half; every class present needs a
        training sample and both halves must be non-empty. Default:
        ``stratified_half(labels)``, the split seeded with ``seed=0`` (it needs concrete
        labels).
      C: inverse L2 strength (scikit-learn's convention), a finite positive float.

    Returns:
      float32 scalar (float64 under x64 with float64 features), held-out accuracy x100 in
      ``[0, 100]``, higher = predicted to transfer better. Raises ``ValueError`` on invalid
      input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.logistic import logistic
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 10)
      >>> features = rng.normal(size=(30, 6)) + 4.0 * np.eye(3, 6)[labels]
      >>> bool(logistic(features, labels) > 80)
      True

    References:
      Bolya, Mittapalli, Hoffman. "Scalable Diverse Model Selection for Accessible Transfer
      Learning". NeurIPS 2021 (Table 1 baselines). https://arxiv.org/abs/2111.06977
    """
    if is_traced(features, labels, feature_mask, train_mask, C):
        num_classes = require_num_classes(num_classes, labels, "logistic")
        if train_mask is None:
            if is_traced(labels):
                raise ValueError(
                    "train_mask: logistic cannot draw its default split from traced labels "
                    "inside jit/vmap; pass train_mask=stratified_half(labels)"
                )
            train_mask = stratified_half(labels)
        return _logistic_jit(
            features, labels, num_classes=num_classes, train_mask=train_mask, n_dims=n_dims,
            feature_mask=feature_mask, C=C,
        )  # fmt: skip
    x, y, mask, k, _ = prepare_features(
        features, labels, feature_mask, num_classes, n_dims, "logistic", min_per_class=2
    )
    y_host = np.asarray(y)
    t = stratified_half(y_host) if train_mask is None else np.asarray(train_mask)
    if t.dtype != np.bool_ or t.shape != y_host.shape:
        raise ValueError(
            f"train_mask: expected a bool array of shape {y_host.shape} (use stratified_half), "
            f"got {t.dtype} {t.shape}"
        )
    if t.all() or not t.any():
        raise ValueError("train_mask: both the training and the held-out half must be non-empty")
    untrained = np.setdiff1d(np.unique(y_host), np.unique(y_host[t]))
    if untrained.size:
        raise ValueError(
            f"train_mask: class {int(untrained[0])} has no training sample; use "
            "stratified_half(labels, seed) for a split with every class on both sides"
        )
    if isinstance(C, bool) or not np.isscalar(C) or not np.isfinite(C) or not C > 0:
        raise ValueError(f"C: expected a finite positive number, got {C!r}")
    # train_rows makes n_t a static shape: the wide-feature reduction to the training span
    return _logistic_jit(
        x, y, num_classes=k, train_mask=jnp.asarray(t), n_dims=n_dims,
        feature_mask=mask_or_ones(mask, x.shape[1]), C=C,
        train_rows=jnp.asarray(np.flatnonzero(t), jnp.int32),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# PACTran-Gauss: a PAC-Bayes bound of the same L2 multinomial fit

#: Default PCA width of ``pactran_gauss``: none, the raw features (as released).
PACTRAN_GAUSS_N_DIMS = None
#: ``lda_factor`` (lambda) of the released code: the L2 weight is ``1 / (2 lambda n)``.
PACTRAN_LDA_FACTOR = 1.0
#: Prior variance ``s2 = PACTRAN_S2_FACTOR / d`` (the released middle setting).
PACTRAN_S2_FACTOR = 1.0


def pactran_gauss_core(
    features: jax.Array,
    labels: jax.Array,
    *,
    num_classes: int,
    n_dims: int | None = PACTRAN_GAUSS_N_DIMS,
    feature_mask: jax.Array | None = None,
) -> jax.Array:
    """PACTran-Gauss for one model (pure; jit/vmap-able, no checks).

    ``features: [n, d]``, ``labels: int [n]``, ``feature_mask: bool [d]``. The fit
    ``L = mean CE + ||W||^2 / (2 lambda n)`` (intercept unpenalised) is :func:`fit_logistic`
    with ``C = lambda`` from ``W = 0`` (deterministic); features wider than ``n`` are first
    mapped onto their row span (the same optimum, see the module docstring). Then
    ``h = sum_i ||x_i||^2 sum_k p_ik (1 - p_ik) + d K / (lambda n) + sum_ik p_ik (1 - p_ik)``,
    ``sigma2_inv = h lambda n / (d K) + 1e-10`` and the bound
    ``L + d K s2 / (2 lambda n) log(sigma2_inv)``; the score is minus the bound.
    """
    x, valid = numerics.reduce_features(features, feature_mask, n_dims)
    n, p = x.shape
    dtype = x.dtype
    onehot = jax.nn.one_hot(labels, num_classes, dtype=dtype)
    present = jnp.sum(onehot, axis=0) > 0
    d = jnp.sum(valid.astype(dtype))
    kd = d * jnp.sum(present.astype(dtype))
    lam_n = PACTRAN_LDA_FACTOR * n
    row_norm2 = jnp.sum(x * x, axis=1)
    if p > n:
        q, _ = jnp.linalg.qr(x.T)  # [p, n]
        x = numerics.matmul(x, q)
    rows = jnp.ones(n, bool)
    weights, bias, _ = fit_logistic(x, labels, rows, num_classes=num_classes, C=PACTRAN_LDA_FACTOR)
    logits = jnp.where(present, numerics.matmul(x, weights) + bias, -jnp.inf)
    log_p = jax.nn.log_softmax(logits, axis=1)
    ce = -jnp.sum(jnp.where(onehot > 0, log_p, 0.0)) / n
    loss = ce + 0.5 * jnp.sum(weights * weights) / lam_n
    prob = jnp.exp(log_p)
    curv = jnp.sum(prob - prob * prob, axis=1)  # [n]
    h = jnp.sum(row_norm2 * curv) + kd / lam_n + jnp.sum(curv)
    sigma2_inv = h * lam_n / kd + 1e-10
    bound = loss + 0.5 * kd / lam_n * (PACTRAN_S2_FACTOR / d) * jnp.log(sigma2_inv)
    return -bound


_pactran_gauss_jit = numerics.jit_per_pca_mode(
    pactran_gauss_core, static_argnames=("num_classes", "n_dims")
)


def pactran_gauss(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    num_classes: int | None = None,
    n_dims: int | None = PACTRAN_GAUSS_N_DIMS,
    feature_mask: ArrayLike | None = None,
) -> jax.Array:
    """PACTran-Gauss: minus the PAC-Bayes bound of an L2 logistic model with a Gaussian prior.

    Args:
      features: float ``[n, d]``, one row of a model's features per probe image (raw).
      labels: int ``[n]`` class indices in ``0..K-1`` (single-label only).
      num_classes: ``K``. Default: ``max(labels) + 1``; required when labels are traced.
      n_dims: PCA width; None (default): the raw features, as released.
      feature_mask: bool ``[d]``, True for valid (unpadded) columns; None: all valid.

    Returns:
      float32 scalar, nats per probe image (minus a bound), higher = predicted to transfer
      better. Raises ``ValueError`` on invalid input.

    Example:
      >>> import numpy as np
      >>> from parc_jax.scorers.logistic import pactran_gauss
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(3), 20)
      >>> good = rng.normal(size=(60, 8)) + 3.0 * np.eye(3, 8)[labels]
      >>> noise = rng.normal(size=(60, 8))
      >>> bool(pactran_gauss(good, labels) > pactran_gauss(noise, labels))
      True

    References:
      Ding, Chen, Levinboim, Goodman, Soricut. "PACTran: PAC-Bayesian Metrics for Estimating
      the Transferability of Pretrained Models to Classification Tasks". ECCV 2022.
      https://arxiv.org/abs/2203.05126
    """
    x, y, mask, k, _ = prepare_features(
        features, labels, feature_mask, num_classes, n_dims, "pactran_gauss"
    )
    return _pactran_gauss_jit(x, y, num_classes=k, n_dims=n_dims, feature_mask=mask)
