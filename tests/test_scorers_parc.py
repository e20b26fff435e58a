"""PARC, RSA, DDS, kNN, logistic, heuristic and depth prior: JAX against the NumPy reference.

Data have real class structure (class means plus noise) and a decaying spectrum, so that PCA
is well conditioned in float32 (a near-flat spectrum makes the PCA itself, not the scorer,
the thing under test).

Compilation dominates the run time on CPU, so the four feature-geometry scores (parc, rsa,
dds, knn) are computed together by one jitted program per shape (:func:`geometry`, built from
the *public* functions, which pass tracers through unchecked), and the padding tests pad one
case to the width of another so that both programs are reused.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from conftest import backend_rtol
from jaxprs import equations

from parc_jax import numerics
from parc_jax import reference as ref
from parc_jax.scorers import dds as dds_mod
from parc_jax.scorers import heuristic as heur_mod
from parc_jax.scorers import knn as knn_mod
from parc_jax.scorers import logistic as logi_mod
from parc_jax.scorers import parc as parc_mod
from parc_jax.scorers.dds import cosine_distance, dds, u_centre
from parc_jax.scorers.heuristic import depth_prior, heuristic, heuristic_core
from parc_jax.scorers.knn import knn
from parc_jax.scorers.logistic import (
    fit_logistic,
    logistic,
    logistic_core,
    standardize_rows,
    stratified_half,
)
from parc_jax.scorers.parc import multilabel_distance_key, parc, rsa

RTOL = 1e-4  # float32 against the float64 reference


def make_probe(seed, n, d, k, *, zero_column=False, two_sample_class=False, sep=1.0):
    """Features ``float32 [n, d]`` = (class mean + noise) * decaying spectrum; labels ``[n]``.

    Every class has >= 2 samples; with ``two_sample_class`` class 0 has exactly 2.
    """
    rng = np.random.default_rng(seed)
    if two_sample_class:
        rest = rng.integers(1, k, n - 2 * k)
    else:
        rest = rng.integers(0, k, n - 2 * k)
    labels = rng.permutation(np.concatenate([np.repeat(np.arange(k), 2), rest]))
    means = rng.normal(size=(k, d)) * sep
    spectrum = 3.0 / (1.0 + np.arange(d)) ** 0.75
    x = (means[labels] + rng.normal(size=(n, d))) * spectrum[rng.permutation(d)]
    if zero_column:
        x[:, 3] = 1.5
    return x.astype(np.float32), labels.astype(np.int32)


def make_reference_features(seed, features, labels, d_r):
    """A second 'model' of the same probe: a noisy random map of the features plus class means."""
    rng = np.random.default_rng(seed + 1000)
    k = int(labels.max()) + 1
    mix = rng.normal(size=(features.shape[1], d_r)) / np.sqrt(features.shape[1])
    r = features @ mix + rng.normal(size=(k, d_r))[labels] * 0.5
    r = r + rng.normal(size=r.shape) * 0.3
    return (r / (1.0 + np.arange(d_r)) ** 0.5).astype(np.float32)


# (seed, n, d, K, options): n 20..500, d 8..2048, K 2..100; one d > n, one zero-variance
# column, one class of exactly 2 samples (with K = 100 at n = 200 every class has 2). C and D
# share n so that D padded to C's width reuses C's compiled programs.
CASES = {
    "n20-d8-k2": (0, 20, 8, 2, {}),
    "n120-d2048-k5": (1, 120, 2048, 5, {}),
    "n200-d64-k10-zero-col-two-sample": (2, 200, 64, 10, {"zero_column": True,
                                                          "two_sample_class": True}),
    "n200-d48-k100": (3, 200, 48, 100, {}),
    "n500-d256-k37": (4, 500, 256, 37, {}),
}  # fmt: skip
WIDE = "n200-d64-k10-zero-col-two-sample"  # the padded width
NARROW = "n200-d48-k100"  # padded to WIDE's width in the padding tests


@pytest.fixture(scope="module")
def probes():
    out = {}
    for name, (seed, n, d, k, opts) in CASES.items():
        x, y = make_probe(seed, n, d, k, **opts)
        r = make_reference_features(seed, x, y, max(8, d // 3))
        out[name] = (x, y, k, r)
    return out


def close(actual, expected, rtol=RTOL, atol=1e-6):
    np.testing.assert_allclose(float(actual), expected, rtol=rtol, atol=atol)


def geometry(x, y, r, xm, rm, *, n_dims="default", knn_dims=None):
    """parc, rsa, dds and knn of one model through the public functions (traced: no checks).

    ``n_dims="default"`` keeps each scorer's default reduction (parc 32, rsa/dds 64).
    """
    dims = {} if n_dims == "default" else {"n_dims": n_dims}
    multi = y.ndim == 2
    k = y.shape[1] if multi else 2  # num_classes does not enter parc/knn's arithmetic
    return {
        "parc": parc(x, y, num_classes=k, feature_mask=xm, **dims),
        "rsa": rsa(x, r, feature_mask=xm, reference_mask=rm, **dims),
        "dds": dds(x, r, feature_mask=xm, reference_mask=rm, **dims),
        "knn": knn(x, y, num_classes=k, n_dims=knn_dims, feature_mask=xm),
    }


_geometry = jax.jit(geometry, static_argnames=("n_dims", "knn_dims"))


def run_geometry(x, y, r, xm=None, rm=None, **kw):
    xm = np.ones(x.shape[1], bool) if xm is None else xm
    rm = np.ones(r.shape[1], bool) if rm is None else rm
    return {key: float(v) for key, v in _geometry(x, y, r, xm, rm, **kw).items()}


def reference_geometry(x, y, k, r, *, n_dims="default", knn_dims=None):
    dims = {} if n_dims == "default" else {"n_dims": n_dims}
    return {
        "parc": ref.parc(x, y, num_classes=k, **dims),
        "rsa": ref.rsa(x, r, **dims),
        "dds": ref.dds(x, r, **dims),
        "knn": ref.knn(x, y, num_classes=k, n_dims=knn_dims),
    }


def close_all(got, want, rtol=RTOL, atol=1e-6):
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=atol, err_msg=key)


# ------------------------------------------------------------------------------------------
# JAX against the reference
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_geometry_scores_match_reference(probes, case):
    """parc, rsa, dds, knn with default reductions: 5 cases."""
    x, y, k, r = probes[case]
    close_all(run_geometry(x, y, r), reference_geometry(x, y, k, r))


def test_no_reduction_matches_reference(probes):
    """n_dims=None for parc, rsa, dds; knn with PCA to 16 dims."""
    x, y, k, r = probes[NARROW]
    got = run_geometry(x, y, r, n_dims=None, knn_dims=16)
    close_all(got, reference_geometry(x, y, k, r, n_dims=None, knn_dims=16))


def make_multilabel(seed, n, k, p, classes=None):
    """0/1 ``[n, k]``, no row all 0 or all 1; tied to ``classes`` when given (a 0/1 pattern per
    class, each bit flipped with probability ``p``), else independent bits with P(1) = p."""
    rng = np.random.default_rng(seed)
    if classes is None:
        y = (rng.random((n, k)) < p).astype(np.float32)
    else:
        pattern = rng.random((int(classes.max()) + 1, k)) < 0.4
        y = (pattern[classes] ^ (rng.random((n, k)) < p)).astype(np.float32)
    sums = y.sum(axis=1)
    y[sums == 0, rng.integers(0, k)] = 1.0
    y[sums == k, 0] = 0.0
    return y


def exact_label_order(y):
    """Exact ``-corr`` of 0/1 rows as Fractions, upper triangle (independent of the JAX key)."""
    y = np.asarray(y, dtype=np.int64)
    k = y.shape[1]
    a = y.sum(axis=1)
    shared = y @ y.T
    rows, cols = np.triu_indices(y.shape[0], 1)
    out = []
    for i, j in zip(rows, cols, strict=True):
        num = int(shared[i, j]) * k - int(a[i]) * int(a[j])
        den = int(a[i] * (k - a[i]) * a[j] * (k - a[j]))
        out.append(-(1 if num > 0 else -1 if num < 0 else 0) * Fraction(num * num, den))
    return out


def exact_multilabel_parc(x, y, n_dims=32):
    """Reference feature side; label side with exact ties (Fractions -> float64 is monotone and
    maps equal fractions to equal floats). ``reference.parc`` itself splits those ties."""
    dist_f = ref._common._upper(ref._common._row_corr_distance(ref.standardize(ref.pca(x, n_dims))))
    dist_y = np.array([float(v) for v in exact_label_order(y)])
    return 100.0 * scipy.stats.spearmanr(dist_f, dist_y).statistic


def test_multilabel_key_has_exact_ties():
    y = make_multilabel(7, 60, 12, 0.25)
    exact = exact_label_order(y)
    ranks_exact = scipy.stats.rankdata(np.array([float(v) for v in exact]))
    key = jax.jit(lambda v: numerics.upper_triangle(multilabel_distance_key(v)))(y)
    assert np.unique(np.asarray(key)).size == len(set(exact))
    np.testing.assert_array_equal(scipy.stats.rankdata(np.asarray(key)), ranks_exact)
    # float64 1 - corrcoef splits these exact ties by rounding (the reference's multi-label
    # label distance does this): more distinct values than exist.
    noisy = ref._common._upper(1.0 - np.corrcoef(y.astype(np.float64)))
    assert np.unique(noisy).size > len(set(exact))


# K = 100 at n = 200: every class has exactly 2 samples, one on each side of the split.
# L_NARROW padded to L_WIDE's width reuses L_WIDE's compiled program.
LOGISTIC_CASES = {
    "n20-d8-k2": (0, 20, 8, 2, {"sep": 1.0}),
    "n120-d300-k5": (1, 120, 300, 5, {"sep": 0.15}),
    "n200-d64-k100-zero-col": (2, 200, 64, 100, {"zero_column": True, "sep": 0.7}),
    "n200-d40-k100": (6, 200, 40, 100, {"sep": 0.7}),
    "n500-d2048-k3": (5, 500, 2048, 3, {"sep": 0.05}),
    "n120-d90-k5": (7, 120, 90, 5, {"sep": 0.15}),  # n_t = 60 < d < n
}
L_WIDE, L_NARROW = "n200-d64-k100-zero-col", "n200-d40-k100"


@pytest.fixture(scope="module")
def logistic_probes():
    out = {}
    for name, (seed, n, d, k, opts) in LOGISTIC_CASES.items():
        x, y = make_probe(seed, n, d, k, **opts)
        out[name] = (x, y, k, stratified_half(y, seed=seed))
    return out


def assert_same_accuracy(got, want, train):
    """Equal held-out accuracy, up to one held-out sample.

    float32 fits agree with the float64 optimum to 1e-3 or better in the logits (the float32
    gradient bottoms out near 1e-7, the smallest curvature is 1 / (C n_train)); a held-out
    sample whose two best logits are closer than that may flip. These cases have no such
    sample today, but the tolerance keeps the test about the scorer, not about rounding luck.
    """
    assert abs(float(got) - want) <= 100.0 / np.count_nonzero(~train) + 1e-4, (float(got), want)


def assert_same_fit(got, want, train):
    """The same fit computed batched or padded: bitwise on the CPU; elsewhere other GPU kernels
    may round the L-BFGS iterates apart, so as :func:`assert_same_accuracy`."""
    if jax.default_backend() == "cpu":
        assert float(got) == float(want)
    else:
        assert_same_accuracy(got, want, train)


@pytest.mark.parametrize("case", list(LOGISTIC_CASES))
def test_logistic_matches_reference(logistic_probes, case):
    x, y, k, train = logistic_probes[case]
    want = ref.logistic(x, y, num_classes=k, train_mask=train)
    assert_same_accuracy(logistic(x, y, num_classes=k, train_mask=train), want, train)
    assert 0.0 < want < 100.0  # not trivial: a wrong fit would show


def _qr_operand_shapes(fn, *args) -> list[tuple[int, ...]]:
    """Shapes of every QR operand in ``fn``'s jaxpr, nested programs included."""
    from jax.extend import core as jcore

    def walk(jaxpr, out):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "qr":
                out.append(tuple(eqn.invars[0].aval.shape))
            for param in eqn.params.values():
                if isinstance(param, jcore.ClosedJaxpr):
                    walk(param.jaxpr, out)
        return out

    return walk(jax.make_jaxpr(fn)(*args).jaxpr, [])


@pytest.mark.parametrize("case", ["n120-d90-k5", "n120-d300-k5"])
def test_logistic_reduces_to_the_training_rows_span(logistic_probes, case):
    """With ``train_rows`` (as the engine and ``logistic`` pass it) features wider than the
    training half are reduced to its ``n_t`` rows' span; without, those wider than ``n`` to
    the masked matrix's ``n`` columns. The same optimum either way: both match the reference."""
    x, y, k, train = logistic_probes[case]
    rows = jnp.asarray(np.flatnonzero(train), jnp.int32)
    n_t, (n, d) = rows.shape[0], x.shape
    args = (jnp.asarray(x), jnp.asarray(y))

    def core(f, labels, train_rows=None):
        return logistic_core(f, labels, num_classes=k, train_mask=jnp.asarray(train),
                             train_rows=train_rows)  # fmt: skip

    assert _qr_operand_shapes(lambda f, lab: core(f, lab, rows), *args) == [(d, n_t)]
    assert _qr_operand_shapes(core, *args) == ([(d, n)] if d > n else [])
    want = ref.logistic(x, y, num_classes=k, train_mask=train)
    assert_same_accuracy(jax.jit(core)(*args, rows), want, train)
    assert_same_accuracy(jax.jit(core)(*args), want, train)


def test_logistic_with_pca_matches_reference(logistic_probes):
    x, y, k, train = logistic_probes["n120-d300-k5"]
    want = ref.logistic(x, y, num_classes=k, train_mask=train, n_dims=24)
    assert_same_accuracy(logistic(x, y, num_classes=k, train_mask=train, n_dims=24), want, train)


def test_logistic_fit_matches_reference_optimum(logistic_probes):
    """The L-BFGS optimum itself: logits within 1e-3 of the float64 reference fit."""
    x, y, k, train = logistic_probes[L_NARROW]
    xs = np.asarray(jax.jit(standardize_rows)(x, train))
    w_ref, b_ref, result = ref.logistic_fit(xs[train].astype(np.float64), y[train], num_classes=k)
    assert result.success
    w, b, iters = jax.jit(fit_logistic, static_argnames="num_classes")(
        jnp.asarray(xs), jnp.asarray(y), jnp.asarray(train), num_classes=k
    )
    assert int(iters) < logi_mod.MAX_EVALUATIONS
    logits = xs @ np.asarray(w) + np.asarray(b)
    np.testing.assert_allclose(logits, xs @ w_ref + b_ref, atol=1e-3)


# ------------------------------------------------------------------------------------------
# vmap over a bank of models == a Python loop (public functions, traced inside vmap)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bank(probes):
    """Three models of the same probe: [3, n, d] features and [3, n, d_r] reference features."""
    x, y, k, r = probes[WIDE]
    xs = np.stack([x, make_probe(21, *x.shape, k)[0], make_probe(22, *x.shape, k)[0]])
    rs = np.stack([r, r[:, ::-1].copy(), r * 2.0 + 1.0])
    return xs, y, k, rs


def test_vmap_equals_loop_geometry(bank):
    """jit(vmap) over 3 models == a loop; the loop reuses the WIDE case's compiled program."""
    xs, y, _, rs = bank
    ones_x, ones_r = np.ones(xs.shape[2], bool), np.ones(rs.shape[2], bool)
    batched = jax.jit(jax.vmap(geometry, in_axes=(0, None, 0, None, None)))(
        jnp.asarray(xs), jnp.asarray(y), jnp.asarray(rs), ones_x, ones_r
    )
    for i, (x, r) in enumerate(zip(xs, rs, strict=True)):
        close_all({key: float(v[i]) for key, v in batched.items()}, run_geometry(x, y, r))
    assert len({float(v) for v in batched["parc"]}) == 3  # three different models


def test_vmap_equals_loop_logistic(logistic_probes):
    x, y, k, train = logistic_probes["n20-d8-k2"]
    xs = np.stack([x, make_probe(31, *x.shape, k, sep=0.3)[0], x[:, ::-1] * 0.5])
    fn = jax.vmap(lambda f: logistic_core(
        f, jnp.asarray(y), num_classes=k, train_mask=jnp.asarray(train)))  # fmt: skip
    batched = jax.jit(fn)(jnp.asarray(xs))
    loop = [float(logistic(f, y, num_classes=k, train_mask=train)) for f in xs]
    for got, want in zip(np.asarray(batched), loop, strict=True):
        assert_same_fit(got, want, train)


def _fit_problems(logistic_probes):
    """Three standardised models of one probe (shared labels and split) for fit_logistic."""
    x, y, k, train = logistic_probes["n20-d8-k2"]
    xs = np.stack([x, make_probe(31, *x.shape, k, sep=0.3)[0], x[:, ::-1] * 0.5])
    xs = np.stack([np.asarray(standardize_rows(jnp.asarray(f), jnp.asarray(train))) for f in xs])
    return jnp.asarray(xs), jnp.asarray(y), k, jnp.asarray(train)


def test_fit_logistic_batching_rule_equals_loop(logistic_probes):
    """fit_logistic's own vmap rule, whatever is batched (features; C alone; nested), gives
    each model the fit it gets alone (the weights; where the float32 gradient noise lets the
    loop stop may move by a few steps)."""
    xs, y, k, train = _fit_problems(logistic_probes)
    fit = jax.jit(lambda f, c: fit_logistic(f, y, train, num_classes=k, C=c))
    cs = jnp.asarray([0.5, 1.0, 4.0])
    alone = [fit(f, c) for f, c in zip(xs, cs, strict=True)]
    by_model = jax.jit(jax.vmap(fit))(xs, cs)
    by_c = jax.jit(jax.vmap(fit, in_axes=(None, 0)))(xs[0], cs)
    nested = jax.jit(jax.vmap(jax.vmap(fit, in_axes=(0, None)), in_axes=(None, 0)))(xs, cs)
    # off the CPU the iterates may round apart and stop elsewhere in the float32 noise
    tol = backend_rtol(1e-6, 1e-3)
    for i, (w, b, _) in enumerate(alone):
        np.testing.assert_allclose(by_model[0][i], w, rtol=tol, atol=tol)
        np.testing.assert_allclose(by_model[1][i], b, rtol=tol, atol=tol)
        np.testing.assert_allclose(nested[0][i, i], w, rtol=tol, atol=tol)
    w0 = [fit(xs[0], c)[0] for c in cs]
    np.testing.assert_allclose(by_c[0], np.stack(w0), rtol=tol, atol=tol)
    assert len({int(e) for e in by_model[2]}) > 1  # the models stop at different steps
    assert int(jnp.max(by_model[2])) < logi_mod.MAX_EVALUATIONS


def _two_loop_direction(g, pairs, gamma):
    """-H g by the textbook L-BFGS two-loop recursion, pairs (s, y) oldest first (NumPy)."""
    q, alphas = g.copy(), []
    for s, y in reversed(pairs):
        a = (s @ q) / (s @ y)
        q -= a * y
        alphas.append(a)
    r = gamma * q
    for (s, y), a in zip(pairs, reversed(alphas), strict=True):
        r += s * (a - (y @ r) / (s @ y))
    return -r


def test_lbfgs_compact_direction_equals_two_loop(x64):
    """The compact-form direction over a circular memory with empty slots holding stale
    vectors equals the two-loop recursion over the valid pairs in age order."""
    rng = np.random.default_rng(3)
    m, n = 6, 30
    a = rng.normal(size=(n, n))
    hess = a @ a.T + n * np.eye(n)
    for newest, valid in [
        (0, [1, 1, 1, 1, 1, 1]),
        (3, [1, 0, 1, 1, 0, 1]),
        (5, [0, 0, 0, 0, 1, 1]),
    ]:
        valid = np.asarray(valid, bool)
        s_mem = rng.normal(size=(m, n))
        y_mem = s_mem @ hess
        y_mem[~valid] = rng.normal(size=((~valid).sum(), n))  # stale rows: must not count
        g, gamma = rng.normal(size=n), 0.37
        memory = np.concatenate([s_mem, y_mem])
        got = logi_mod._lbfgs_direction(
            jnp.asarray(g), jnp.asarray(memory @ g), jnp.asarray(memory),
            jnp.asarray(s_mem @ y_mem.T), jnp.asarray(y_mem @ y_mem.T), jnp.asarray(valid),
            gamma, newest,
        )  # fmt: skip
        ages = [(newest + 1 + j) % m for j in range(m)]
        pairs = [(s_mem[i], y_mem[i]) for i in ages if valid[i]]
        np.testing.assert_allclose(np.asarray(got), _two_loop_direction(g, pairs, gamma),
                                   rtol=1e-10, atol=1e-12)  # fmt: skip


def test_fit_logistic_batched_loop_has_one_condition(logistic_probes):
    """Under a plain vmap, a while loop whose condition differs per model gets a [B]
    condition, which XLA lowers to a select of every loop variable between old and new at
    each step (a copy of the [B, 2M, N] L-BFGS memory per step). fit_logistic's batching
    rule runs one loop on a scalar condition (any model active) and masks the memory's row
    writes instead."""
    xs, y, k, train = _fit_problems(logistic_probes)
    fit = jax.vmap(lambda f: fit_logistic(f, y, train, num_classes=k))
    memory_shape = (xs.shape[0], 2 * logi_mod.MEMORY, xs.shape[2] * k + k)
    loops = [e for e, _ in equations(jax.make_jaxpr(fit)(xs).jaxpr) if e.primitive.name == "while"]
    assert len(loops) == 1
    assert memory_shape in [tuple(v.aval.shape) for v in loops[0].outvars]
    assert [a.shape for a in loops[0].params["cond_jaxpr"].out_avals] == [()]


def test_vmap_equals_loop_heuristic():
    depth = jnp.array([8.0, 14.0, 26.0])
    source = jnp.array([1000.0, 5e4, 2e6])
    batched = jax.jit(jax.vmap(heuristic_core, in_axes=(0, 0, None)))(depth, source, 300.0)
    loop = [float(heuristic(float(a), float(b), 300.0)) for a, b in zip(depth, source)]
    np.testing.assert_allclose(np.asarray(batched), loop, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# Padded (zero columns + mask) == unpadded
# ------------------------------------------------------------------------------------------


def pad_to(x, width):
    padded = np.concatenate([x, np.zeros((x.shape[0], width - x.shape[1]), x.dtype)], axis=1)
    return padded, np.arange(width) < x.shape[1]


# Same numbers, different shapes: only rounding differs (more off CPU: other GPU kernels).
PAD_RTOL = backend_rtol(2e-6, 1e-5)


@pytest.fixture(scope="module")
def padded(probes):
    """NARROW's features padded to WIDE's widths (so WIDE's compiled programs are reused)."""
    x, y, k, r = probes[NARROW]
    wide_x, _, _, wide_r = probes[WIDE]
    xp, xm = pad_to(x, wide_x.shape[1])
    rp, rm = pad_to(r, wide_r.shape[1])
    return x, y, k, r, xp, xm, rp, rm


@pytest.mark.parametrize(
    "kw", [{}, {"n_dims": None, "knn_dims": 16}], ids=["default-dims", "no-reduction"]
)
def test_padded_equals_unpadded(padded, kw):
    """Zero columns + masks give the unpadded scores (reference features have 16 of 21 valid
    columns, so rsa/dds's PCA-64 also masks components)."""
    x, y, _, r, xp, xm, rp, rm = padded
    close_all(run_geometry(xp, y, rp, xm, rm, **kw), run_geometry(x, y, r, **kw), rtol=PAD_RTOL)


@jax.jit
def _multilabel_scores(x, y, mask):
    k = y.shape[1]
    return (
        parc(x, y, num_classes=k, feature_mask=mask),
        knn(x, y, num_classes=k, feature_mask=mask),
    )


def test_padded_multilabel_matches_reference(padded):
    """Multi-label parc (exact ties) and knn, on padded features."""
    x, classes, _, _, xp, xm, _, _ = padded
    y = make_multilabel(13, x.shape[0], 8, 0.1, classes)
    got_parc, got_knn = _multilabel_scores(xp, y, xm)
    # PARC is ~0.45 here (x100 scale): a float32 wobble of near-tied distances moves it by
    # ~5e-5 points (1.2e-4 relative on an AMD EPYC), so the bound is absolute, in points
    close(got_parc, exact_multilabel_parc(x, y), atol=1e-4)
    close(got_knn, ref.knn(x, y, num_classes=8))


def test_padded_equals_unpadded_logistic(logistic_probes):
    x, y, k, train = logistic_probes[L_NARROW]
    wide = logistic_probes[L_WIDE][0]
    xp, xm = pad_to(x, wide.shape[1])
    want = float(logistic(x, y, num_classes=k, train_mask=train))
    assert_same_fit(logistic(xp, y, feature_mask=xm, train_mask=train), want, train)


# ------------------------------------------------------------------------------------------
# Known values (float64)
# ------------------------------------------------------------------------------------------


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def test_known_parc_rsa_dds(x64):
    """Hand-computed values in float64, all at one shape (one compiled program)."""
    # Rows of +-1 with zero row sums and balanced columns: standardisation leaves them as they
    # are and every row correlation is exact (0, +-1), so no rounding can split a tie.
    a, b = np.array([1.0, 1.0, -1.0, -1.0]), np.array([1.0, -1.0, 1.0, -1.0])
    groups = np.repeat(np.arange(4), 3)
    x = np.stack([a, -a, b, -b])[groups]
    # A per-column affine map and a column permutation vanish under standardisation.
    scale = np.array([2.0, 0.5, 3.0, 7.0])

    def scores(f, labels):
        out = run_geometry(f, labels, f[:, ::-1] * scale - 4.0, n_dims=None)
        assert out["rsa"] == pytest.approx(100.0, abs=1e-4)
        assert out["dds"] == pytest.approx(100.0, abs=1e-9)
        return out

    # numerics' rank sums are float32 even under x64 (~1e-7 relative), hence abs=1e-4 for
    # parc and rsa; dds is float64 throughout.
    # Two classes {a, b} x 6: distance 0 within a class, 1 between: a perfect match.
    two = np.repeat([0, 1], 6)
    assert scores(np.stack([a, b])[two], two)["parc"] == pytest.approx(100.0, abs=1e-4)
    # Four groups: distance 0 (same group, 12 pairs), 1 (a/b-type pairs, 36), 2 (a/-a and b/-b,
    # 18); average ranks 6.5, 30.5, 57.5 (mean 33.5, sum of squares 19440). Labels "other
    # group" (54 pairs): sum over them of (r - 33.5) = 36 (-3) + 18 (24) = 324, and the binary
    # variable's sum of squares is 66 (9/11)(2/11); rho = 324 / sqrt(19440 * 1188/121).
    out = scores(x, groups)
    assert out["parc"] == pytest.approx(100.0 * np.sqrt(11.0 / 20.0), abs=1e-4)
    assert out["knn"] == pytest.approx(100.0, rel=1e-15)  # duplicates in every group
    # Merging {a, -a} and {b, -b}: only the 36 distance-1 pairs differ in class:
    # rho = 36 (-3) / sqrt(19440 * 66 (6/11)(5/11)) = -sqrt(11/300).
    out = scores(x, groups // 2)
    assert out["parc"] == pytest.approx(-100.0 * np.sqrt(11.0 / 300.0), abs=1e-4)
    # Generic features for the invariance of rsa and dds.
    scores(np.random.default_rng(0).normal(size=(12, 4)) * (1.0 + np.arange(4)), groups)


def test_known_knn(x64):
    x = np.array([[0.0], [1.0], [2.0]])
    # Image 1 is equidistant from 0 and 2: ties go to the lowest index (image 0).
    assert float(knn(x, np.array([0, 0, 1]), num_classes=2)) == pytest.approx(200.0 / 3.0)
    assert float(knn(x, np.array([1, 0, 0]), num_classes=2)) == pytest.approx(100.0 / 3.0)
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float64)
    # nn: 0->1 (L1 1), 1->0 (L1 1), 2->1 (L1 3): mean(1 - L1/3) = (2/3 + 2/3 + 0) / 3.
    assert float(knn(x, y, num_classes=3)) == pytest.approx(100.0 * 4.0 / 9.0)


def test_known_logistic(x64):
    y = np.repeat(np.arange(3), 4)
    train = stratified_half(y, seed=0)
    # num_classes=5 with classes 3 and 4 absent: they get no logit (no NaN, never predicted).
    # Near-one-hot features: each class owns a column, every held-out sample is right.
    x = np.eye(3)[y] + 0.01 * np.cos(np.arange(36.0)).reshape(12, 3)
    score = logistic(x, y, num_classes=5, train_mask=train)
    assert score.dtype == jnp.float64
    assert float(score) == 100.0
    # Train-constant features carry nothing (standardised to 0); with two training samples
    # per class the intercepts tie and argmax picks one class for all 6 held-out samples.
    flat = np.ones((12, 3))
    assert float(logistic(flat, y, num_classes=5, train_mask=train)) == pytest.approx(100.0 / 3)


def test_known_heuristic_and_depth_prior(x64):
    assert float(heuristic(8, 1000, 500)) == pytest.approx(8.0 + np.log(1500.0), rel=1e-12)
    assert heuristic(8.0, 1e3, 5e2).dtype == jnp.float64
    out = depth_prior(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0]))
    np.testing.assert_allclose(out, [-0.8, 0.4, 1.6], rtol=1e-12)
    out = depth_prior(np.array([5.0, 5.0, 5.0]), np.array([10.0, 20.0, 30.0]), l_max=10.0)
    np.testing.assert_allclose(out, [1.0, 2.0, 3.0], rtol=1e-12)
    rng = np.random.default_rng(3)
    s, dep = rng.normal(size=7), rng.integers(5, 50, 7).astype(np.float64)
    np.testing.assert_allclose(depth_prior(s, dep, l_max=30.0),
                               ref.depth_prior(s, dep, l_max=30.0), rtol=1e-12)  # fmt: skip


def test_known_heuristic_float32():
    np.testing.assert_allclose(float(heuristic(26, 2e6, 300)), ref.heuristic(26, 2e6, 300),
                               rtol=1e-6)  # fmt: skip


def test_u_centred_hsic_equals_song_formula(x64):
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(9, 3)), rng.normal(size=(9, 4))

    @jax.jit
    def hsic(a, b, diag):
        k, l = cosine_distance(a), cosine_distance(b)
        # Song's estimator needs only zero diagonals: U-centring ignores the diagonal.
        return k, l, jnp.sum(u_centre(k + diag * jnp.eye(9)) * u_centre(l)) / (9 * 6)

    k, l, got = hsic(a, b, 0.0)
    assert float(got) == pytest.approx(ref.hsic_unbiased(k, l), rel=1e-10)
    assert float(hsic(a, b, 5.0)[2]) == pytest.approx(float(got), rel=1e-10)


def test_cosine_distance_zero_row():
    d = np.asarray(jax.jit(cosine_distance)(np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])))
    np.testing.assert_array_equal(d[1], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(d[0, 2], 1.0)
    assert np.all(np.isfinite(d))


# ------------------------------------------------------------------------------------------
# Bad input: ValueError naming the argument, before anything is traced
# ------------------------------------------------------------------------------------------


@pytest.fixture
def no_tracing(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the jitted core was reached with bad input")

    for mod, name in ((parc_mod, "_parc_jit"), (parc_mod, "_rsa_jit"), (dds_mod, "_dds_jit"),
                      (knn_mod, "_knn_jit"), (logi_mod, "_logistic_jit"),
                      (heur_mod, "_heuristic_jit"), (heur_mod, "_depth_prior_jit")):  # fmt: skip
        monkeypatch.setattr(mod, name, boom)


def _features(n=12, d=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


Y12 = np.repeat(np.arange(3), 4)
BAD_CALLS = [
    ("features", lambda: parc(np.full((12, 4), np.nan, np.float32), Y12, num_classes=3)),
    ("features", lambda: parc(_features()[:, 0], Y12, num_classes=3)),
    ("features", lambda: parc(np.ones((12, 4), np.float32), Y12, num_classes=3)),
    ("labels", lambda: parc(_features(), Y12[:-1], num_classes=3)),
    ("labels", lambda: parc(_features(), np.zeros(12, int), num_classes=3)),
    ("labels", lambda: parc(_features(), Y12, num_classes=2)),
    ("labels", lambda: parc(_features(n=3), np.arange(3), num_classes=3)),
    ("labels", lambda: parc(_features(), np.eye(3)[Y12] * 0, num_classes=3)),
    ("labels", lambda: parc(_features(), np.tile([[1.0, 0.0, 1.0]], (12, 1)), num_classes=3)),
    ("feature_mask", lambda: parc(_features(), Y12, feature_mask=np.ones(3, bool))),
    ("feature_mask", lambda: parc(_features(), Y12, feature_mask=np.zeros(4, bool))),
    ("n_dims", lambda: parc(_features(), Y12, num_classes=3, n_dims=0)),
    ("num_classes", lambda: parc(_features(), Y12, num_classes=3.0)),
    ("reference_features", lambda: rsa(_features(), _features(n=11))),
    ("reference_features", lambda: dds(_features(), np.ones((12, 2), np.float32))),
    ("reference_mask", lambda: rsa(_features(), _features(), reference_mask=np.ones(5, bool))),
    ("features", lambda: dds(_features(n=3), _features(n=3))),
    ("features", lambda: knn(_features(n=1), np.array([0]), num_classes=2)),
    ("labels", lambda: knn(_features(), Y12 + 5, num_classes=3)),
    ("labels", lambda: logistic(_features(), np.eye(3)[Y12], num_classes=3,
                                train_mask=stratified_half(Y12))),
    ("labels", lambda: logistic(_features(), np.r_[Y12[:-1], 3], num_classes=4,
                                train_mask=np.arange(12) % 2 == 0)),
    ("train_mask", lambda: logistic(_features(), Y12, num_classes=3,
                                    train_mask=np.arange(12) % 2)),
    ("train_mask", lambda: logistic(_features(), Y12, num_classes=3,
                                    train_mask=np.ones(12, bool))),
    ("train_mask", lambda: logistic(_features(), Y12, num_classes=3,
                                    train_mask=Y12 != 0)),
    ("C", lambda: logistic(_features(), Y12, num_classes=3,
                           train_mask=stratified_half(Y12), C=0.0)),
    ("depth", lambda: heuristic(-1.0, 10, 10)),
    ("source_images", lambda: heuristic(8, np.nan, 10)),
    ("target_images", lambda: heuristic(8, 10, [1, 2])),
    ("scores", lambda: depth_prior(np.array([1.0]), np.array([3.0]))),
    ("scores", lambda: depth_prior(np.array([1.0, np.inf]), np.array([3.0, 4.0]))),
    ("depths", lambda: depth_prior(np.array([1.0, 2.0]), np.array([3.0, np.nan]))),
    ("depths", lambda: depth_prior(np.array([1.0, 2.0]), np.array([3.0]))),
    ("l_max", lambda: depth_prior(np.array([1.0, 2.0]), np.array([3.0, 4.0]), l_max=0.0)),
    ("l_max", lambda: depth_prior(np.array([1.0, 2.0]), np.array([3.0, 4.0]), l_max="x")),
]  # fmt: skip


@pytest.mark.parametrize(("argument", "call"), BAD_CALLS)
def test_bad_input_raises_before_tracing(no_tracing, argument, call):
    with pytest.raises(ValueError, match=argument):
        call()


# ------------------------------------------------------------------------------------------
# stratified_half
# ------------------------------------------------------------------------------------------


def test_stratified_half():
    y = np.array([0] * 5 + [1] * 2 + [2] * 1 + [3] * 8)
    a = stratified_half(y, seed=3)
    assert a.dtype == np.bool_ and a.shape == y.shape
    np.testing.assert_array_equal(a, stratified_half(y, seed=3))  # deterministic
    counts = {c: (int(a[y == c].sum()), int((~a[y == c]).sum())) for c in range(4)}
    assert counts == {0: (3, 2), 1: (1, 1), 2: (1, 0), 3: (4, 4)}  # ceil(n_c / 2) trains
    splits = {tuple(stratified_half(y, seed=s)) for s in range(10)}
    assert len(splits) > 1  # the seed matters
    assert ref.stratified_half is stratified_half  # the reference shares the split


@pytest.mark.parametrize(
    ("labels", "seed"),
    [(np.eye(3)[[0, 1, 2, 0]], 0), (np.array([0.5, 1.0]), 0), (np.array([-1, 0]), 0),
     (np.array([0, 1]), -1), (np.array([0, 1]), 1.5)],
)  # fmt: skip
def test_stratified_half_rejects(labels, seed):
    with pytest.raises(ValueError, match="labels|seed"):
        stratified_half(labels, seed=seed)


def _fast_vs_exact_parc(features: np.ndarray, labels: np.ndarray, k: int) -> tuple[float, float]:
    x = jnp.asarray(features, jnp.float32)
    y = jnp.asarray(labels)
    exact = float(parc_mod.parc_core(x, y, num_classes=k, n_dims=32))
    with numerics.pca_mode("fast"):
        fast = float(jax.jit(lambda a, b: parc_mod.parc_core(a, b, num_classes=k, n_dims=32))(x, y))
    return exact, fast


def test_fast_pca_parc_within_two_tenths_of_exact():
    """docs/metrics.md: the subspace-iteration PCA must stay within 0.2 PARC points of exact."""
    from parc_jax.synthetic import synthetic_features

    rng = np.random.default_rng(11)
    labels = np.repeat(np.arange(10), 20)
    x = synthetic_features(labels, 256, rng)
    exact, fast = _fast_vs_exact_parc(x, labels, 10)
    assert abs(fast - exact) < 0.2, (fast, exact)


def test_fast_pca_rank_deficient_features_are_finite():
    """Regression: on the committed coil20 probe bank, AlexNet features with dead ReLU columns
    (rank 36-59 of 64) made the CholeskyQR of the fast PCA return NaN for 4 of 7 sources."""
    from pathlib import Path

    from parc_jax.bank import read_bank

    bank = read_bank(Path(__file__).parents[1] / "benchmarks/groundtruth/banks/coil20.msgpack")
    labels = bank.target.labels
    for m in bank.models:
        if m.architecture != "alexnet":
            continue
        exact, fast = _fast_vs_exact_parc(np.asarray(m.features, np.float32), labels, 20)
        assert np.isfinite(fast) and abs(fast - exact) < 0.2, (m.name, fast, exact)


def test_pca_to_more_components_than_the_rank_is_finite_and_exact():
    """Regression: 64 components of 64 AlexNet features of rank 36-59 (covariance side,
    n > d). A Cholesky QR of the projected data (columns beyond the rank: rounding noise,
    linearly dependent) gave NaN PCA scores, so rsa, dds, gbc and gbc_spherical printed nan
    on the shipped example bank. Both PCA modes are finite, and GBC (64 components, each
    standardised: weak ones count fully) matches the float64 reference."""
    from pathlib import Path

    from parc_jax.bank import read_bank
    from parc_jax.scorers.gbc import gbc

    bank = read_bank(Path(__file__).parents[1] / "benchmarks/groundtruth/banks/coil20.msgpack")
    labels, k = bank.target.labels, bank.target.num_classes
    pca64 = jax.jit(lambda a: numerics.pca(a, 64))
    for m in bank.models:
        if m.architecture != "alexnet":
            continue
        x = np.asarray(m.features, np.float32)
        for mode in numerics.PCA_MODES:
            with numerics.pca_mode(mode):
                scores, _ = pca64(jnp.asarray(x))
            assert np.isfinite(np.asarray(scores)).all(), (m.name, mode)
        got = float(gbc(x, labels, num_classes=k))
        want = ref.gbc(x.astype(np.float64), labels, num_classes=k, n_dims=64)
        assert got == pytest.approx(want, rel=RTOL), (m.name, got, want)


def test_parc_and_rsa_are_undefined_when_every_distance_ties():
    """Regression: one dimension (n_dims=1, or a single column) makes every row-correlation
    distance equal, so Spearman is 0/0; the float32 sum of squares of one tie group of all
    m = 1,770 pairs rounded to a small number and PARC and RSA returned 0. The Spearman
    functions return NaN (the engine flags it per model) and the public scorers raise, as the
    reference does."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    y = np.repeat(np.arange(4), 15)
    calls = [
        lambda: parc(x, y, num_classes=4, n_dims=1),
        lambda: parc(x[:, :1], y, num_classes=4, n_dims=None),
        lambda: rsa(x, x, n_dims=1),
        lambda: ref.parc(x.astype(np.float64), y, num_classes=4, n_dims=1),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="all equal"):
            call()
    m = 60 * 59 // 2
    flat, ramp = jnp.ones(m), jnp.arange(m, dtype=jnp.float32)
    for method in numerics.SPEARMAN_TWO_VALUED_METHODS:
        assert np.isnan(float(numerics.spearman_two_valued(flat, ramp % 3 == 0, method=method)))
        assert np.isnan(float(numerics.spearman_two_valued(ramp, ramp < 0, method=method)))
    assert np.isnan(float(numerics.spearman(flat, ramp)))
    assert np.isnan(float(numerics.spearman(ramp, flat)))
    assert float(numerics.spearman(ramp, ramp)) == pytest.approx(1.0)


def test_dds_core_is_nan_when_a_distance_matrix_is_constant():
    """Constant features give equal distances everywhere: CKA is 0/0, but U-centring left
    rounding noise and dds_core returned 8.9e-6 (n = 30). The engine flags the NaN."""
    r = np.random.default_rng(0).normal(size=(30, 10)).astype(np.float32)
    flat = jnp.ones((30, 10), jnp.float32)
    assert np.isnan(float(dds_mod.dds_core(flat, jnp.asarray(r), n_dims=None)))
    assert np.isnan(float(dds_mod.dds_core(jnp.asarray(r), flat, n_dims=None)))
    assert np.isfinite(float(dds_mod.dds_core(jnp.asarray(r), jnp.asarray(r[::-1]), n_dims=None)))


def test_dds_warns_when_pca_whitens_the_probe():
    """PCA to >= n - 1 dims then standardisation makes every pair of probe images equally far
    apart: the public dds() warns, as hscore() does in its degenerate case (the engine sets
    such scores to NaN with a note)."""
    from parc_jax.scorers.hscore import DegenerateScoreWarning

    rng = np.random.default_rng(1)
    x = rng.normal(size=(24, 40)).astype(np.float32)
    r = rng.normal(size=(24, 30)).astype(np.float32)
    with pytest.warns(DegenerateScoreWarning, match="whitens"):
        dds(x, r, n_dims=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateScoreWarning)
        dds(x, r, n_dims=8)
        dds(x, r, n_dims=None)


def test_pca_keeps_weak_components_of_features_with_massive_activations():
    """Regression: three feature columns 1000x the others ("massive activations"; the 32nd
    component's variance is 2e-6 of the first's) lost all but the first components to the
    numerical-rank cut at 1e-5 (PARC 5.0 instead of 34.2). Now the cut sits at 16 float32
    epsilons, above the rounding of a float32 Gram eigendecomposition. Against PARC on a
    float64 SVD PCA with no cut at all (written here: the reference shares the cut)."""
    rng = np.random.default_rng(5)
    n, d, k, f = 200, 256, 20, 32
    labels = np.repeat(np.arange(k), n // k)
    x = rng.normal(size=(k, d))[labels] * 0.5 + rng.normal(size=(n, d))
    x[:, :3] *= 1000.0
    x = x.astype(np.float32)
    xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    assert 1e-6 < s[f - 1] ** 2 / s[0] ** 2 < 1e-5
    pivot = np.argmax(np.abs(vt[:f]), axis=1)
    signs = np.where(vt[np.arange(f), pivot] < 0, -1.0, 1.0)
    want = ref.parc(u[:, :f] * s[:f] * signs, labels, num_classes=k, n_dims=None)
    got = float(parc(x, labels, num_classes=k, n_dims=f))
    # near float32's resolution the weakest components are approximate: 0.04 points here
    assert got == pytest.approx(want, abs=0.1)
    assert ref.parc(x.astype(np.float64), labels, num_classes=k) == pytest.approx(want, rel=1e-9)


def test_public_scorers_follow_the_pca_mode_of_each_call():
    """The public functions compile once per PCA mode: a call inside ``pca_mode("fast")``
    after a default call with the same shapes is not answered by the exact program (nor the
    other way round), as it was with one module-level jit that read the mode when tracing."""
    from parc_jax.synthetic import synthetic_features

    rng = np.random.default_rng(11)
    labels = np.repeat(np.arange(10), 20)
    x = synthetic_features(labels, 256, rng)
    exact, fast = _fast_vs_exact_parc(x, labels, 10)  # 30.3469 and 30.3559
    assert abs(exact - fast) > 5e-3
    first = float(parc(x, labels, num_classes=10))
    with numerics.pca_mode("fast"):
        assert float(parc(x, labels, num_classes=10)) == pytest.approx(fast, abs=1e-4)
    assert first == pytest.approx(exact, abs=1e-4)
    assert float(parc(x, labels, num_classes=10)) == first


@pytest.mark.parametrize(
    "variant, route",
    [("householder", "gram"), ("cholesky", "gram"), ("cholesky", "implicit"),
     ("householder", "implicit")],
)  # fmt: skip
def test_fast_pca_orthonormalisations_agree_with_exact(monkeypatch, variant, route):
    """Both ways of orthonormalising the subspace block, iterating on the formed Gram or
    through the data, stay within 0.2 PARC points, and the batched Cholesky variant (the
    GPU-friendly one) stays finite on rank-deficient features."""
    from parc_jax.synthetic import synthetic_features

    monkeypatch.setattr(numerics, "FAST_PCA_QR", variant)
    monkeypatch.setattr(numerics, "FAST_PCA_ROUTE", route)
    rng = np.random.default_rng(12)
    labels = np.repeat(np.arange(10), 20)
    x = synthetic_features(labels, 256, rng)
    x[:, 60:] = 0.0  # dead columns, and weak ones that depend on the first 20: the rank,
    x[:, 20:60] = x[:, :20] @ rng.normal(size=(20, 40)) * 1e-3  # 20, is below the block's 40
    exact, fast = _fast_vs_exact_parc(x, labels, 10)
    assert np.isfinite(fast) and abs(fast - exact) < 0.2, (fast, exact)


def test_qr_near_orthogonal_factorises_and_keeps_zero_columns():
    rng = np.random.default_rng(13)
    basis = np.linalg.qr(rng.normal(size=(300, 12)))[0]
    y = basis * np.logspace(0, -3, 12)[None, :]  # orthogonal, norms over 3 decades
    y += 1e-4 * rng.normal(size=y.shape) * np.abs(y).max()  # not exactly orthogonal
    y[:, 5] = 0.0  # a dropped component
    noise = 1e-9 * rng.normal(size=300)
    y[:, 10], y[:, 11] = noise, noise * (1 + 1e-7)  # negligible and nearly parallel
    q, r = jax.jit(numerics.qr_near_orthogonal)(jnp.asarray(y, jnp.float32))
    q, r = np.asarray(q, np.float64), np.asarray(r, np.float64)
    assert np.isfinite(q).all() and np.isfinite(r).all()
    np.testing.assert_allclose(q @ r, y, atol=2e-6 * np.abs(y).max())
    assert np.allclose(np.tril(r, -1), 0.0)
    live = [i for i in range(12) if i not in (5, 10, 11)]
    np.testing.assert_allclose(q[:, live].T @ q[:, live], np.eye(len(live)), atol=1e-5)
    assert not q[:, [5, 10, 11]].any() and not r[[5, 10, 11]].any()


def test_spearman_two_valued_methods_match_scipy_with_ties():
    rng = np.random.default_rng(14)
    values = np.round(rng.normal(size=4000), 1).astype(np.float32)  # many ties
    values[:7] = -0.0  # signed zeros tie with +0.0
    high = values + rng.normal(size=4000) > 0.5  # correlated, as label distances are
    want = scipy.stats.spearmanr(values.astype(np.float64), high).statistic
    got = {
        method: float(jax.jit(lambda v, h, m=method: numerics.spearman_two_valued(v, h, method=m))(
            jnp.asarray(values), jnp.asarray(high)))
        for method in numerics.SPEARMAN_TWO_VALUED_METHODS
    }  # fmt: skip
    assert got["search"] == got["pairs"]  # the same integers, summed in the same order
    for method in numerics.SPEARMAN_TWO_VALUED_METHODS:
        np.testing.assert_allclose(got[method], want, rtol=1e-5)
    with pytest.raises(ValueError, match="method"):
        numerics.spearman_two_valued(jnp.asarray(values), jnp.asarray(high), method="bogus")


def test_flagbit_rank_step_ties_values_equal_but_for_the_lowest_significand_bit():
    """The default rank step (one sort of keys carrying the flag in bit 0) ties exactly the
    values equal after clearing bit 0 of their float32 bit patterns (-0.0 as +0.0): its
    low-group rank sum and tie term are SciPy's average ranks of the values so truncated, and
    differ from those of the untruncated values (neighbours 1 apart in bit 0 tie, neighbours
    apart in bit 1 do not)."""
    rng = np.random.default_rng(15)
    bits = (rng.random(2000).astype(np.float32) + 0.5).view(np.int32) & ~3
    values = np.concatenate([bits, bits | 1, bits | 2]).view(np.float32)
    values = np.concatenate([values, -values[:400], np.float32([0.0, -0.0, 0.0])])
    values = values[rng.permutation(values.size)]
    low = rng.random(values.size) < 0.4
    keys = numerics._order_keys(jnp.asarray(values))
    c, t, low_sorted = jax.jit(numerics._two_valued_by_flag_bit)(keys, jnp.asarray(low, jnp.int32))
    got_sum = int(np.sum(np.asarray(c, np.int64) * np.asarray(low_sorted)))
    got_ties = float(numerics._tie_term(t))

    def expected(v: np.ndarray) -> tuple[int, float]:
        r2 = (2 * scipy.stats.rankdata(v.astype(np.float64))).astype(np.int64)
        counts = np.unique(v.astype(np.float64), return_counts=True)[1].astype(np.float64)
        return int(np.sum((r2 - (v.size + 1))[low])), float(np.sum(counts**3 - counts))

    truncated = np.asarray(numerics.truncate_low_bit(jnp.asarray(values)))
    assert (got_sum, got_ties) == expected(truncated)
    assert expected(truncated) != expected(values)  # the rule matters on these values
    high = ~low
    want = scipy.stats.spearmanr(truncated.astype(np.float64), high).statistic
    np.testing.assert_allclose(float(numerics.spearman_two_valued(values, high)), want, rtol=1e-6)


def test_centred_ranks_by_search_and_by_sort_are_the_same_integers():
    """The CPU (binary searches) and the GPU/TPU (sorted pairs + scatter) ways to average
    ranks: equal integers, equal to SciPy's ranks, ties and signed zeros included. Both run
    here, whatever the backend; ``spearman`` matches SciPy too."""
    rng = np.random.default_rng(15)
    values = np.round(rng.normal(size=3000), 1).astype(np.float32)  # many ties
    values[:5] = -0.0
    values[5:9] = 0.0
    keys = jax.jit(numerics._order_keys)(jnp.asarray(values))
    c_search, t_search = jax.jit(numerics._centred_ranks_by_search)(keys)
    c_sort, t_sort = jax.jit(numerics._centred_ranks_by_sort)(keys)
    np.testing.assert_array_equal(c_search, c_sort)
    np.testing.assert_array_equal(t_search, t_sort)
    ranks = scipy.stats.rankdata(values)
    np.testing.assert_array_equal(np.asarray(c_search), 2 * ranks - (values.size + 1))
    np.testing.assert_array_equal(jax.jit(numerics.average_ranks)(jnp.asarray(values)), ranks)
    other = (values + rng.normal(size=values.size)).astype(np.float32)
    want = scipy.stats.spearmanr(values.astype(np.float64), other).statistic
    got = float(jax.jit(numerics.spearman)(jnp.asarray(values), jnp.asarray(other)))
    np.testing.assert_allclose(got, want, rtol=1e-5)
