"""Logistic-regression probe: held-out accuracy of an L2 multinomial model fit on half the probe.

Definition (docs/architecture.md, shared with the reference): features, after optional PCA
over all ``n`` probe rows, are standardised with the mean and population std of the training
half (columns constant on it -> 0); a multinomial model with intercept minimises
``sum_i CE_i + ||W||^2 / (2 C)`` (intercept unpenalised, the scikit-learn convention) over
the classes present in the training half; the score is the accuracy x100 on the other half,
argmax ties to the lowest class.

Implementation notes:

* The fit is a compact L-BFGS (Armijo backtracking, written-out gradient) inside one
  ``lax.while_loop`` (see :func:`fit_logistic`), so it vmaps over models (the batch runs until
  its slowest model stops). optax's L-BFGS with its zoom line search reached the same optima
  but took 1.7 times as long to compile (4.7 s against 2.8 s of CPU for one 200 x 64, K = 10
  probe), and compilation dominates a bank's first bucket on CPU.
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

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from parc_jax import numerics
from parc_jax.scorers.parc import _float_array, _mask_or_ones, _reduce
from parc_jax.validation import check_features, check_labels, check_mask, check_n_dims, is_traced

__all__ = [
    "GTOL",
    "MAX_EVALUATIONS",
    "MEMORY",
    "PATIENCE",
    "fit_logistic",
    "logistic",
    "logistic_core",
    "standardize_rows",
    "stratified_half",
]

MAX_EVALUATIONS = 2000
PATIENCE = 50
MEMORY = 20
MAX_BACKTRACKS = 40
# Gradient-norm tolerance of the objective divided by the training-set size, per dtype.
GTOL = {"float32": 1e-7, "float64": 1e-10}


def stratified_half(labels: Any, seed: int = 0) -> np.ndarray:
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
    s_mem: jax.Array  # [M, N] past steps
    y_mem: jax.Array  # [M, N] past gradient changes
    rho: jax.Array  # [M] 1 / (s . y), 0 for empty slots
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


def _lbfgs_direction(g, s_mem, y_mem, rho, gamma, newest):
    """``-H g`` by the L-BFGS two-loop recursion over a circular memory (empty slots: rho 0)."""
    m = rho.shape[0]

    def newest_first(j, carry):
        q, alpha = carry
        i = (newest - j) % m
        a = rho[i] * _dot(s_mem[i], q)
        return q - a * y_mem[i], alpha.at[i].set(a)

    q, alpha = lax.fori_loop(0, m, newest_first, (g, jnp.zeros(m, g.dtype)))

    def oldest_first(j, r):
        i = (newest + 1 + j) % m
        beta = rho[i] * _dot(y_mem[i], r)
        return r + s_mem[i] * (alpha[i] - beta)

    return -lax.fori_loop(0, m, oldest_first, gamma * q)


def fit_logistic(
    x: jax.Array,
    labels: jax.Array,
    train: jax.Array,
    *,
    num_classes: int,
    C: float | jax.Array = 1.0,
    max_evaluations: int = MAX_EVALUATIONS,
    gtol: float | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Fit ``sum_{train} CE + ||W||^2 / (2C)`` by L-BFGS; returns ``(W [p, K], b [K], evals)``.

    ``x: [n, p]`` (already standardised), ``labels: int [n]``, ``train: bool [n]``;
    ``gtol=None`` takes ``GTOL`` for the dtype of ``x``. Classes without a training sample
    keep ``W = 0, b = 0`` and must be excluded from predictions.

    The objective is divided by the training-set size (same optimum; one tolerance for all
    sizes) and its gradient is written out (``X^T (P - Y)`` and ``W / C``), which keeps the
    compiled program small. L-BFGS (memory ``MEMORY``) with a backtracking line search
    (halving from step 1) that accepts a trial point by the Armijo condition or by a
    non-positive slope along the direction; the objective is convex, so ``s . y >= 0`` and
    curvature pairs are safe (pairs with ``s . y`` at rounding level are skipped). Each loop
    step evaluates one trial point.

    Stopping: in float32 the gradient norm bottoms out near 1e-7 (rounding in ``X^T (P - Y)``)
    and near the optimum the objective changes below its resolution, so neither a tight
    tolerance nor a value test can always end the loop. The loop keeps the iterate with the
    smallest gradient norm and stops when that norm is below ``gtol``, has not improved for
    ``PATIENCE`` evaluations, a line search fails, or after ``max_evaluations``.
    """
    n, p = x.shape
    k = num_classes
    dtype = x.dtype
    w = train.astype(dtype)
    count = jnp.sum(w)
    onehot = jax.nn.one_hot(labels, k, dtype=dtype)
    present = jnp.sum(onehot * w[:, None], axis=0) > 0
    if gtol is None:
        gtol = GTOL.get(jnp.dtype(dtype).name, GTOL["float32"])
    eps = jnp.finfo(dtype).eps

    def value_and_grad(theta):
        weights, bias = theta[: p * k].reshape(p, k), theta[p * k :]
        logits = jnp.where(present, numerics.matmul(x, weights) + bias, -jnp.inf)
        log_z = jax.nn.logsumexp(logits, axis=1)
        label_logit = jnp.sum(jnp.where(onehot > 0, logits, 0.0), axis=1)
        # where, not a product: a held-out row of an untrained class has an infinite CE.
        ce = numerics.accurate_sum(jnp.where(train, log_z - label_logit, 0.0))
        value = (ce + numerics.accurate_sum(weights * weights) / (2.0 * C)) / count
        resid = (jnp.exp(logits - log_z[:, None]) - onehot) * w[:, None]  # [n, K]
        grad_w = (numerics.matmul(x.T, resid) + weights / C) / count
        grad_b = jnp.sum(resid, axis=0) / count
        return value, jnp.concatenate([grad_w.ravel(), grad_b])

    size = p * k + k
    zeros = jnp.zeros(size, dtype)
    mem = jnp.zeros((MEMORY, size), dtype)
    scalar = partial(jnp.asarray, dtype=dtype)
    state = _LbfgsState(
        x=zeros, f=scalar(jnp.inf), g=zeros, d=zeros, gd=scalar(-1.0), t=scalar(0.0),
        s_mem=mem, y_mem=mem, rho=jnp.zeros(MEMORY, dtype), newest=jnp.int32(MEMORY - 1),
        gamma=scalar(1.0), evals=jnp.int32(0), backtracks=jnp.int32(0), best_x=zeros,
        best_norm=scalar(jnp.inf), stale=jnp.int32(0),
    )  # fmt: skip

    def step(c: _LbfgsState) -> _LbfgsState:
        trial = c.x + c.t * c.d
        f, g = value_and_grad(trial)
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
        keep = accept & ~first & (sy > eps * jnp.sqrt(_dot(s, s) * yy))
        slot = (c.newest + 1) % MEMORY
        # one row written in place, not a select over the whole [M, N] memory
        s_mem = c.s_mem.at[slot].set(jnp.where(keep, s, c.s_mem[slot]))
        y_mem = c.y_mem.at[slot].set(jnp.where(keep, y, c.y_mem[slot]))
        rho = jnp.where(keep, c.rho.at[slot].set(1.0 / jnp.where(keep, sy, 1.0)), c.rho)
        newest = jnp.where(keep, slot, c.newest)
        gamma = jnp.where(keep, sy / jnp.where(keep, yy, 1.0), c.gamma)
        x_new = jnp.where(accept, trial, c.x)
        f_new = jnp.where(accept, f, c.f)
        g_new = jnp.where(accept, g, c.g)
        # Next direction from the accepted point; steepest descent (memory cleared) if the
        # quasi-Newton one is not a descent direction (rounding only: the problem is convex).
        g_norm = jnp.sqrt(_dot(g_new, g_new))
        start_scale = jnp.minimum(1.0, 1.0 / jnp.maximum(g_norm, eps))
        has_memory = jnp.any(rho != 0)
        d = _lbfgs_direction(g_new, s_mem, y_mem, rho, jnp.where(has_memory, gamma, start_scale),
                             newest)  # fmt: skip
        gd = _dot(g_new, d)
        descent = gd < 0
        d = jnp.where(descent, d, -start_scale * g_new)
        gd = jnp.where(descent, gd, -start_scale * g_norm * g_norm)
        rho = jnp.where(descent, rho, 0.0)
        better = accept & (g_norm < c.best_norm)
        return _LbfgsState(
            x=x_new, f=f_new, g=g_new,
            d=jnp.where(accept, d, c.d), gd=jnp.where(accept, gd, c.gd),
            t=jnp.where(accept, 1.0, 0.5 * c.t),
            s_mem=s_mem, y_mem=y_mem, rho=rho, newest=newest, gamma=gamma,
            evals=c.evals + 1, backtracks=jnp.where(accept, 0, c.backtracks + 1),
            best_x=jnp.where(better, x_new, c.best_x),
            best_norm=jnp.where(better, g_norm, c.best_norm),
            stale=jnp.where(better, 0, c.stale + 1),
        )  # fmt: skip

    def keep_going(c: _LbfgsState) -> jax.Array:
        return (
            (c.evals < max_evaluations)
            & (c.best_norm >= gtol)
            & (c.stale < PATIENCE)
            & (c.backtracks < MAX_BACKTRACKS)
        )

    final = lax.while_loop(keep_going, step, state)
    theta = final.best_x
    return theta[: p * k].reshape(p, k), theta[p * k :], final.evals


def logistic_core(
    features: jax.Array,
    labels: jax.Array,
    feature_mask: jax.Array | None = None,
    *,
    num_classes: int,
    train_mask: jax.Array,
    n_dims: int | None = None,
    C: float | jax.Array = 1.0,
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
    x, m = _reduce(features, feature_mask, n_dims)
    train = jnp.asarray(train_mask, bool)
    x = standardize_rows(x, train, m)
    n, p = x.shape
    # Exact reduction to the training rows' span (see the module docstring).
    if train_rows is not None and p > train_rows.shape[0]:
        q, _ = jnp.linalg.qr(x[train_rows].T)  # [p, n_t]
        x = numerics.matmul(x, q)
    elif train_rows is None and p > n:
        q, _ = jnp.linalg.qr(jnp.where(train[:, None], x, 0.0).T)  # [p, n]
        x = numerics.matmul(x, q)
    weights, bias, _ = fit_logistic(x, labels, train, num_classes=num_classes, C=C)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=x.dtype)
    present = jnp.sum(onehot * train[:, None], axis=0) > 0
    logits = jnp.where(present, numerics.matmul(x, weights) + bias, -jnp.inf)
    pred = jnp.argmax(logits, axis=1)  # lowest class on ties
    held_out = (~train).astype(x.dtype)
    hits = jnp.sum(held_out * (pred == labels).astype(x.dtype))
    return 100.0 * hits / jnp.sum(held_out)


_logistic_jit = jax.jit(logistic_core, static_argnames=("num_classes", "n_dims"))


def logistic(
    features: Any,
    labels: Any,
    feature_mask: Any = None,
    *,
    num_classes: int,
    train_mask: Any,
    n_dims: int | None = None,
    C: float = 1.0,
) -> jax.Array:
    """Held-out accuracy x100 (%) of L2 multinomial logistic regression on a probe half.

    ``features: [n, d]``, ``labels: int [n]`` in ``0..K-1`` (single-label only, >= 2 samples
    per class present), ``feature_mask: bool [d]``, ``train_mask: bool [n]`` from
    :func:`stratified_half` (every class present must have a training sample and both halves
    must be non-empty), ``n_dims``: optional exact PCA over all rows first, ``C``: inverse L2
    strength (scikit-learn's convention).
    """
    if not is_traced(features, labels, feature_mask, train_mask, C):
        f = check_features(features)
        check_mask(feature_mask, f.shape[1], "feature_mask")
        check_n_dims(n_dims)
        y, num_classes = check_labels(
            labels,
            num_classes=num_classes,
            n=f.shape[0],
            min_per_class=2,
            method="logistic",
        )
        t = np.asarray(train_mask)
        if t.dtype != np.bool_ or t.shape != y.shape:
            raise ValueError(
                f"train_mask: expected a bool array of shape {y.shape} (use stratified_half), "
                f"got {t.dtype} {t.shape}"
            )
        if t.all() or not t.any():
            raise ValueError(
                "train_mask: both the training and the held-out half must be non-empty"
            )
        untrained = np.setdiff1d(np.unique(y), np.unique(y[t]))
        if untrained.size:
            raise ValueError(
                f"train_mask: class {int(untrained[0])} has no training sample; use "
                "stratified_half(labels, seed) for a split with every class on both sides"
            )
        if isinstance(C, bool) or not np.isscalar(C) or not np.isfinite(C) or not C > 0:
            raise ValueError(f"C: expected a finite positive number, got {C!r}")
        features, labels, train_mask = _float_array(f), jnp.asarray(y), jnp.asarray(t)
        feature_mask = _mask_or_ones(feature_mask, f.shape[1])
        train_rows = jnp.asarray(np.flatnonzero(t), jnp.int32)
    else:
        train_rows = None  # traced: n_t is not known, reduce to the masked matrix's span
    return _logistic_jit(
        features, labels, feature_mask, num_classes=num_classes, train_mask=train_mask,
        n_dims=n_dims, C=C, train_rows=train_rows,
    )  # fmt: skip
