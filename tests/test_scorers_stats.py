"""JAX statistical scorers (LEEP, NCE, H-Score, shrinkage H-Score, LogME, TransRate, GBC)
against the float64 NumPy reference, plus padding, vmap, known values and input checks.

Shapes are reused across tests (module-level cases) to keep the number of compilations low.
Tolerance: rtol 1e-4 on float32 inputs (see ``RTOL``); every case uses class means + noise
with a decaying spectrum (variance ``1 / (1 + j)`` in dimension ``j``) so that PCA and the
eigen-decompositions are well conditioned.
"""

from __future__ import annotations

import importlib
import inspect
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import backend_rtol

import parc_jax
from parc_jax import numerics
from parc_jax import reference as ref
from parc_jax.scorers import _common
from parc_jax.scorers.gbc import gbc, gbc_core, gbc_spherical, gbc_spherical_core
from parc_jax.scorers.hscore import (
    DegenerateScoreWarning,
    hscore,
    hscore_core,
    hscore_is_degenerate,
    hscore_shrink,
    hscore_shrink_core,
)
from parc_jax.scorers.logme import logme, logme_core
from parc_jax.scorers.probability import leep, leep_core, nce, nce_core
from parc_jax.scorers.registry import SCORERS
from parc_jax.scorers.transrate import transrate, transrate_core

# The package re-exports the scorer functions under the module names (parc_jax.scorers.gbc is
# the function), so the modules themselves are fetched by their full names.
gbc_mod = importlib.import_module("parc_jax.scorers.gbc")
hscore_mod = importlib.import_module("parc_jax.scorers.hscore")
logme_mod = importlib.import_module("parc_jax.scorers.logme")
prob_mod = importlib.import_module("parc_jax.scorers.probability")
transrate_mod = importlib.import_module("parc_jax.scorers.transrate")

RTOL = 1e-4
# Scores near 0 (GBC of well-separated classes, LEEP of an almost perfect source) are compared
# with a small absolute floor as well.
ATOL = 1e-6
# Batched/padded vs alone: a few ulps on CPU; off CPU other shapes pick other GPU kernels.
SAME_RTOL = backend_rtol(1e-6, 1e-5)

# name -> (public fn, core, reference fn, default n_dims)
FEATURE_SCORERS = {
    "hscore": (hscore, hscore_core, ref.hscore, 32),
    "hscore_shrink": (hscore_shrink, hscore_shrink_core, ref.hscore_shrink, 32),
    "logme": (logme, logme_core, ref.logme, None),
    "transrate": (transrate, transrate_core, ref.transrate, None),
    "gbc": (gbc, gbc_core, ref.gbc, 64),
    "gbc_spherical": (gbc_spherical, gbc_spherical_core, ref.gbc_spherical, 64),
}
PROB_SCORERS = {
    "leep": (leep, leep_core, ref.leep),
    "nce": (nce, nce_core, ref.nce),
}


def _labels(rng: np.random.Generator, n: int, k: int, *, two_sample_class: bool) -> np.ndarray:
    """Labels ``[n]`` with every class present at least twice; class 0 exactly twice if asked."""
    if two_sample_class:
        rest = np.concatenate([np.repeat(np.arange(1, k), 2), rng.integers(1, k, n - 2 * k)])
        y = np.concatenate([[0, 0], rest])
    else:
        y = np.concatenate([np.repeat(np.arange(k), 2), rng.integers(0, k, n - 2 * k)])
    return rng.permutation(y).astype(np.int32)


def _model(y: np.ndarray, d: int, rng: np.random.Generator, *, sep: float = 1.0) -> np.ndarray:
    """Features ``[n, d]`` of one model for labels ``y``: class means + noise, variance
    ``1 / (1 + j)`` in dimension ``j`` (a decaying spectrum), float64."""
    scale = 1.0 / np.sqrt(1.0 + np.arange(d))
    means = rng.normal(size=(int(y.max()) + 1, d)) * scale * sep
    return means[y] + rng.normal(size=(y.shape[0], d)) * scale


def _features(
    n: int,
    d: int,
    k: int,
    seed: int,
    *,
    two_sample_class: bool = False,
    constant_column: bool = False,
    sep: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Class means + noise with a decaying spectrum, float32 ``[n, d]``, labels ``[n]``."""
    rng = np.random.default_rng(seed)
    y = _labels(rng, n, k, two_sample_class=two_sample_class)
    x = _model(y, d, rng, sep=sep)
    if constant_column:
        x[:, 3] = 0.5  # zero variance, but not zero (LogME uses raw features)
        x[:, 5] = 0.0  # a dead unit
    return x.astype(np.float32), y


def _case(n: int, d: int, k: int, seed: int, num_classes: int | None = None, **kwargs):
    x, y = _features(n, d, k, seed, **kwargs)
    return x, y, k if num_classes is None else num_classes


# (n, d, K): n in 20..500, d in 8..2048, K in 2..100; d > n; a zero-variance column and a
# zero column ("tiny", "d_gt_n"); a class of exactly 2 samples (and K = 100 with n = 500 makes
# classes of ~5). "d_gt_n" declares num_classes = 12 with 10 classes present: absent classes
# must not change any score (the reference sums and averages over present classes only).
# "tiny_b" shares the shape of "tiny" (no extra compilation).
CASES = {
    "tiny": _case(20, 8, 2, 0, constant_column=True),
    "tiny_b": _case(20, 8, 2, 5, sep=2.0),
    "wide": _case(100, 2048, 4, 1, two_sample_class=True),
    "many_classes": _case(500, 400, 100, 2),
    "d_gt_n": _case(60, 96, 10, 4, num_classes=12, sep=0.5, constant_column=True),
}


def _close(a: float, b: float, rtol: float = RTOL, atol: float = ATOL) -> bool:
    return abs(a - b) <= atol + rtol * abs(b)


# ---------------------------------------------------------------------------------------------
# Against the reference


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", list(FEATURE_SCORERS))
def test_feature_scorers_match_reference(name: str, case: str) -> None:
    fn, _, ref_fn, n_dims = FEATURE_SCORERS[name]
    x, y, k = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateScoreWarning)
        got = fn(x, y, num_classes=k, n_dims=n_dims)
    assert got.dtype == jnp.float32 and got.shape == ()
    want = ref_fn(x.astype(np.float64), y, num_classes=k, n_dims=n_dims)
    assert np.isfinite(float(got))
    assert _close(float(got), want), (name, case, float(got), want)


@pytest.mark.parametrize(
    ("name", "case", "n_dims"),
    [
        ("logme", "d_gt_n", 16),  # LogME after PCA
        ("transrate", "many_classes", 16),  # class terms on the feature side after PCA
    ],
)
def test_other_reductions_match_reference(name: str, case: str, n_dims: int | None) -> None:
    fn, _, ref_fn, _ = FEATURE_SCORERS[name]
    x, y, k = CASES[case]
    got = float(fn(x, y, num_classes=k, n_dims=n_dims))
    want = ref_fn(x.astype(np.float64), y, num_classes=k, n_dims=n_dims)
    assert _close(got, want), (name, case, got, want)


def _probs(
    n: int, z: int, k: int, seed: int, *, zero_column: bool, ties: bool, num_classes: int = 0
):
    """A source model's softmax ``[n, z]`` correlated with the target labels, labels, K."""
    rng = np.random.default_rng(seed)
    y = _labels(rng, n, k, two_sample_class=True)
    weights = rng.normal(size=(k, z)) * 2.0
    logits = weights[y] + rng.normal(size=(n, z))
    if zero_column:
        logits[:, 1] = -np.inf  # a source class no image selects: a zero column
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    if ties:
        p[0] = 0.0
        p[0, 2:5] = 1.0  # an exact three-way tie: argmax must take the first
    p /= p.sum(axis=1, keepdims=True)
    return p.astype(np.float32), y, num_classes or k


PROB_CASES = {
    "tiny": _probs(20, 5, 2, 0, zero_column=False, ties=True),
    "zero_col": _probs(100, 50, 4, 1, zero_column=True, ties=False),
    "many": _probs(500, 1000, 100, 2, zero_column=True, ties=True),
    "mid": _probs(150, 20, 6, 3, zero_column=False, ties=False, num_classes=8),  # 2 absent
    "wide": _probs(60, 300, 10, 4, zero_column=False, ties=True),
}


@pytest.mark.parametrize("case", list(PROB_CASES))
@pytest.mark.parametrize("name", list(PROB_SCORERS))
def test_prob_scorers_match_reference(name: str, case: str) -> None:
    fn, _, ref_fn = PROB_SCORERS[name]
    p, y, k = PROB_CASES[case]
    got = fn(p, y, num_classes=k)
    assert got.dtype == jnp.float32 and got.shape == ()
    want = ref_fn(p.astype(np.float64), y, num_classes=k)
    assert float(got) <= 0.0
    assert _close(float(got), want), (name, case, float(got), want)


# ---------------------------------------------------------------------------------------------
# Padding (zero columns + mask) equals the unpadded result


def _pad(x: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((x.shape[0], width), x.dtype)
    out[:, : x.shape[1]] = x
    mask = np.zeros(width, bool)
    mask[: x.shape[1]] = True
    return out, mask


@pytest.mark.parametrize("name", list(PROB_SCORERS))
def test_prob_padding_equals_unpadded(name: str) -> None:
    fn, _, _ = PROB_SCORERS[name]
    p, y, k = PROB_CASES["mid"]
    padded, mask = _pad(p, 32)
    plain = float(fn(p, y, num_classes=k))
    masked = float(fn(padded, y, num_classes=k, prob_mask=mask))
    assert _close(masked, plain, rtol=SAME_RTOL), (name, masked, plain)


def test_logme_zero_columns_without_mask_do_not_change_the_score() -> None:
    # The docs/metrics.md trap: with n < d an SVD lists n singular values; the evidence must count
    # the d - n zero eigenvalues too. Appending zero columns (no mask) adds only zeros to the
    # spectrum, so the score must not move (a dropped d/2 log(alpha) would shift it).
    x, y, k = CASES["d_gt_n"]
    wide = np.concatenate([x, np.zeros((x.shape[0], 64), np.float32)], axis=1)  # 160 columns
    a = float(logme(x, y, num_classes=k))
    b = float(logme(wide, y, num_classes=k))
    assert _close(b, a, rtol=2e-5)


# ---------------------------------------------------------------------------------------------
# jit(vmap(core)) over a stack of models equals a loop


@pytest.mark.parametrize("name", list(FEATURE_SCORERS))
def test_vmap_of_padded_models_equals_loop(name: str) -> None:
    # jit(vmap(core)) over a bucket of 3 models of width 24, as the engine runs it: two models
    # with 8 valid columns (zero padding + mask; the first is "tiny", with a constant and a
    # zero column) and one with all 24 columns valid.
    # Each must equal the model scored alone, unpadded (a Python loop of public calls, which
    # reuse the compilations above; the third against the reference). Padding to 24 > n = 20
    # moves LogME and TransRate to the Gram side and gives PCA 19 components (8 valid), so
    # the padded results go through other code paths than the unpadded ones.
    fn, core, ref_fn, n_dims = FEATURE_SCORERS[name]
    x0, y, k = CASES["tiny"]
    rng = np.random.default_rng(7)
    x1 = _model(y, 8, rng, sep=2.0).astype(np.float32)
    x2 = _model(y, 24, rng).astype(np.float32)
    p0, m0 = _pad(x0, 24)
    p1, m1 = _pad(x1, 24)
    xs = np.stack([p0, p1, x2])
    masks = np.stack([m0, m1, np.ones(24, bool)])
    batched = jax.jit(
        jax.vmap(lambda f, m: core(f, jnp.asarray(y), feature_mask=m, num_classes=k, n_dims=n_dims))
    )(jnp.asarray(xs), jnp.asarray(masks))
    assert batched.shape == (3,)
    # TransRate's padded models take the Gram side and the unpadded ones the covariance side:
    # float32 log-determinants by two routes (measured 4.7e-5 relative on an AMD EPYC)
    rtol = 1e-4 if name == "transrate" else 2e-5
    for i, x in enumerate([x0, x1]):
        one = float(fn(x, y, num_classes=k, n_dims=n_dims))
        assert _close(float(batched[i]), one, rtol=rtol), (name, i, float(batched[i]), one)
    want = ref_fn(x2.astype(np.float64), y, num_classes=k, n_dims=n_dims)
    assert _close(float(batched[2]), want), (name, float(batched[2]), want)


@pytest.mark.parametrize("name", list(PROB_SCORERS))
def test_prob_vmap_equals_loop(name: str) -> None:
    fn, core, _ = PROB_SCORERS[name]
    p, y, _ = PROB_CASES["tiny"]
    rng = np.random.default_rng(5)
    stack = np.stack([p, p[rng.permutation(20)], np.roll(p, 1, axis=1)])
    masks = np.ones((3, 5), bool)
    batched = jax.jit(jax.vmap(lambda q, m: core(q, jnp.asarray(y), prob_mask=m, num_classes=2)))(
        jnp.asarray(stack), jnp.asarray(masks)
    )
    for i in range(3):
        one = float(fn(stack[i], y, num_classes=2))
        assert _close(float(batched[i]), one, rtol=SAME_RTOL)


# ---------------------------------------------------------------------------------------------
# Bounds, internal paths


@pytest.mark.parametrize("case", list(CASES))
def test_gbc_bounds(case: str) -> None:
    x, y, k = CASES[case]
    for fn in (gbc, gbc_spherical):
        value = float(fn(x, y, num_classes=k))
        assert -k * (k - 1) <= value <= 0.0


def test_gbc_blocked_pairs_equal_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y, k = CASES["d_gt_n"]
    direct = float(gbc(x, y, num_classes=k))
    monkeypatch.setattr(gbc_mod, "_PAIR_BLOCK_ELEMENTS", 100)  # forces lax.map, 1 row a step
    blocked = float(
        jax.jit(gbc_core, static_argnames=("num_classes", "n_dims"))(
            jnp.asarray(x), jnp.asarray(y), num_classes=k
        )
    )
    assert _close(blocked, direct, rtol=SAME_RTOL)  # [1, K, F] vs [K, K, F] reductions


def test_transrate_cases_cover_every_class_term_form() -> None:
    # The reference comparison above checks TransRate (public function: class blocks when
    # cheapest) through every form of the class terms and both forms of the global term;
    # make sure the cases keep exercising them all.
    forms = set()
    for x, y, k in CASES.values():
        n, d = x.shape
        block = transrate_mod.class_block_size(y, k)
        forms.add((d < n, transrate_mod._class_term_form(n, d, k, block)))
    assert forms == {(True, "features"), (True, "blocks"), (False, "blocks"), (False, "gram")}


@pytest.mark.parametrize("case", ["d_gt_n", "many_classes"])
def test_transrate_class_blocks_equal_the_block_diagonal_gram(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-class blocks (the engine's form) against one n x n block-diagonal eigenproblem
    (the form without a static block size), padded models included."""
    x, y, k = CASES[case]
    xp, mask = _pad(x, x.shape[1] + 5)
    block = transrate_mod.class_block_size(y, k)
    n, d = xp.shape
    assert transrate_mod._class_term_form(n, d, k, block) == "blocks"
    assert transrate_mod._class_term_form(n, d, k, None) != "blocks"
    core = jax.jit(transrate_core, static_argnames=("num_classes", "class_block"))
    args = (jnp.asarray(xp, jnp.float32), jnp.asarray(y))
    kw = {"feature_mask": jnp.asarray(mask), "num_classes": k}
    blocks = float(core(*args, **kw, class_block=block))
    # the n x n Gram form, even where the feature side would be cheaper
    monkeypatch.setattr(transrate_mod, "_class_term_form", lambda *a: "gram")
    gram = float(core(*args, **kw, class_block=None))
    assert _close(blocks, gram, rtol=1e-5), (blocks, gram)
    want = ref.transrate(x.astype(np.float64), y, num_classes=k)
    assert _close(blocks, want), (blocks, want)


def test_transrate_class_blocks_zero_the_null_eigenvalues(monkeypatch: pytest.MonkeyPatch) -> None:
    """Classes larger than the feature rank (20 images, 3 live columns): each block's null
    eigenvalues, rounding noise scaled by 1 / (n_c eps), must be set to 0 as on the Gram side.
    Both forms are forced (the cost model would take the feature side here)."""
    rng = np.random.default_rng(21)
    y = np.repeat(np.arange(3), 20)
    x = np.zeros((60, 6), np.float32)
    x[:, :3] = rng.normal(size=(60, 3)) + y[:, None]  # 3 live columns, 3 dead units
    core = jax.jit(transrate_core, static_argnames=("num_classes", "class_block"))
    args = (jnp.asarray(x), jnp.asarray(y))
    kw = {"feature_mask": jnp.ones(6, bool), "num_classes": 3, "class_block": 32}
    got = {}
    for form in ("blocks", "gram"):
        monkeypatch.setattr(transrate_mod, "_class_term_form", lambda *a, f=form: f)
        got[form] = float(core(*args, **kw))
    want = ref.transrate(x.astype(np.float64), y, num_classes=3)
    assert _close(got["blocks"], want), got
    assert _close(got["blocks"], got["gram"], rtol=1e-5), got


@pytest.mark.parametrize("case", ["d_gt_n", "many_classes", "wide"])
def test_transrate_from_the_pca_spectrum_equals_its_own(case: str) -> None:
    """The engine hands TransRate the spectrum its shared PCA computed (Gram side for d >= n,
    covariance side otherwise, where TransRate alone takes a Cholesky): same score."""
    x, y, k = CASES[case]
    xp, mask = _pad(x, x.shape[1] + 5)
    args = (jnp.asarray(xp), jnp.asarray(y))
    block = transrate_mod.class_block_size(y, k)
    kw = {"feature_mask": jnp.asarray(mask), "num_classes": k, "class_block": block}
    core = jax.jit(transrate_core, static_argnames=("num_classes", "class_block"))
    own = float(core(*args, **kw))
    for mode in numerics.PCA_MODES:
        with numerics.pca_mode(mode):
            _, spectrum = jax.jit(
                lambda f, m: numerics.reduce_features_many(f, m, (8,), spectrum=True)
            )(args[0], kw["feature_mask"])
        got = float(core(*args, **kw, spectrum=tuple(spectrum)))
        assert _close(got, own, rtol=1e-5), (mode, got, own)


def test_class_block_size_is_a_power_of_two_covering_the_largest_class() -> None:
    y = np.array([0] * 5 + [1] * 3 + [2])
    assert transrate_mod.class_block_size(y, 4) == 8
    assert transrate_mod.class_block_size(np.zeros(6, int), 1) == 6  # at most n
    assert transrate_mod.class_block_size(np.arange(4), 4) == 1


def test_ledoit_wolf_shrinkage_matches_reference() -> None:
    x, _, _ = CASES["many_classes"]

    @jax.jit
    def shrinkage(features):
        z = numerics.center(features)
        d_valid = jnp.float32(features.shape[1])
        _, g, _ = _common.spectrum(z, d_valid)
        return hscore_mod._ledoit_wolf_shrinkage(z, g, d_valid, d_valid)

    alpha, mu = shrinkage(jnp.asarray(x))
    xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    _, want = ref.ledoit_wolf(xc)
    assert 0.0 < want < 1.0  # the case shrinks: the test can fail
    assert _close(float(alpha), want, rtol=2e-5)
    assert _close(float(mu), np.trace(xc.T @ xc) / xc.shape[0] / x.shape[1], rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Known values (float64 where exactness matters)


def test_leep_nce_known_values() -> None:
    # All examples share one shape ([4, 2], K = 2): one compilation per scorer.
    y = np.array([0, 1, 1, 1], np.int32)
    # A perfect source (probability 1 on source class = target class): both are 0 exactly.
    perfect = np.eye(2, dtype=np.float32)[y]
    assert float(leep(perfect, y, num_classes=2)) == pytest.approx(0.0, abs=1e-7)
    assert float(nce(perfect, y, num_classes=2)) == pytest.approx(0.0, abs=1e-7)
    # An uninformative source (uniform rows): both equal -H(Y) of the label frequencies.
    uniform = np.full((4, 2), 0.5, np.float32)
    neg_entropy = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    assert float(leep(uniform, y, num_classes=2)) == pytest.approx(neg_entropy, rel=1e-6)
    assert float(nce(uniform, y, num_classes=2)) == pytest.approx(neg_entropy, rel=1e-6)
    # By hand: z_hat = [0, 0, 1, 1]; cells (y, z): (0,0), (1,0), (1,1), (1,1).
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]], np.float32)
    want_nce = 0.25 * (math.log(0.5) + math.log(0.5) + 2 * math.log(1.0))
    assert float(nce(p, y, num_classes=2)) == pytest.approx(want_nce, rel=1e-6)
    # LEEP by hand: column sums [2.0, 2.0]; P(y=0|z) = [0.45, 0.05], P(y=1|z) = [0.55, 0.95].
    eep = [0.45 * 0.9 + 0.05 * 0.1, 0.55 * 0.6 + 0.95 * 0.4, 0.55 * 0.2 + 0.95 * 0.8,
           0.55 * 0.3 + 0.95 * 0.7]  # fmt: skip
    want_leep = float(np.mean(np.log(eep)))
    assert float(leep(p, y, num_classes=2)) == pytest.approx(want_leep, rel=1e-6)


def test_hscore_known_values() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)
    y = np.array([0, 0, 1, 1], np.int32)
    # Standardised z = (x - 1.5) / sqrt(1.25); class means -+1/sqrt(1.25); Cov F = 4/3,
    # Cov G = 4 * 0.8 / 3: H = 0.8.
    assert float(hscore(x, y, num_classes=2, n_dims=None)) == pytest.approx(0.8, rel=1e-6)
    # Shrinkage with d = 1: a = 0, Sigma = S = 5/4, Cov G = 4/3: H = 16/15.
    assert float(hscore_shrink(x, y, num_classes=2, n_dims=None)) == pytest.approx(
        16 / 15, rel=1e-6
    )
    # Features equal to the one-hot labels: Cov G = Cov F of rank K - 1, so H = K - 1.
    labels = np.arange(60, dtype=np.int32) % 5
    onehot = np.eye(5, dtype=np.float32)[labels]
    assert float(hscore(onehot, labels, num_classes=5, n_dims=None)) == pytest.approx(4.0, rel=1e-5)


def test_hscore_degenerate_is_k_minus_1_and_warns() -> None:
    x, y, k = CASES["d_gt_n"]  # n = 60, d = 96: width >= n - 1 without reduction
    assert hscore_is_degenerate(60, 96)
    assert hscore_is_degenerate(60, 59)
    assert not hscore_is_degenerate(60, 58)
    assert hscore_is_degenerate(60, 96, n_dims=64)
    assert not hscore_is_degenerate(60, 96, n_dims=32)
    with pytest.warns(DegenerateScoreWarning, match="n - 1"):
        value = float(hscore(x, y, num_classes=k, n_dims=None))
    assert value == pytest.approx(9.0, rel=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateScoreWarning)
        hscore(x, y, num_classes=k, n_dims=32)  # reduced: no warning
    with jax.enable_x64(True), pytest.warns(DegenerateScoreWarning):
        value64 = hscore(x.astype(np.float64), y, num_classes=k, n_dims=None)
        assert value64.dtype == jnp.float64
    assert float(value64) == pytest.approx(9.0, abs=1e-9)
    assert ref.hscore(x.astype(np.float64), y, num_classes=k, n_dims=None) == pytest.approx(
        9.0, abs=1e-6
    )


def test_transrate_known_value() -> None:
    # Centred features [-1.5, -0.5, 0.5, 1.5]; classes {x0} and {x1, x2, x3}.
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 1, 1, 1], np.int32)
    eps = 1e-4
    whole = 0.5 * math.log(1 + 5.0 / (4 * eps))
    c0 = 0.5 * math.log(1 + 2.25 / (1 * eps))
    c1 = 0.5 * math.log(1 + 2.75 / (3 * eps))
    with jax.enable_x64(True):
        got = float(transrate(x, y, num_classes=2))
    assert got == pytest.approx(whole - (c0 + c1) / 2, rel=1e-10)


def test_gbc_known_values() -> None:
    # 1-D: N(1, 1) and N(5, 1): D_B = 16 / 8 = 2 for both ordered pairs.
    x = np.array([[0.0], [2.0], [4.0], [6.0]])
    y = np.array([0, 0, 1, 1], np.int32)
    with jax.enable_x64(True):
        for fn in (gbc, gbc_spherical):
            assert float(fn(x, y, num_classes=2, n_dims=None)) == pytest.approx(
                -2 * math.exp(-2.0), rel=1e-12
            )
        # 2-D, equal means, variances 1 and 4 in both dimensions: D_B = (f/2)(ln 2.5 - ln 2)
        # with f = 2, so exp(-D_B) = 0.8. Without the dimension factor it would be ~0.894.
        corners = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
        x2 = np.concatenate([corners, 2.0 * corners])
        y2 = np.repeat(np.array([0, 1], np.int32), 4)
        for fn in (gbc, gbc_spherical):
            assert float(fn(x2, y2, num_classes=2, n_dims=None)) == pytest.approx(-1.6, rel=1e-12)
        # Identical classes: D_B = 0, the lower bound -K(K-1).
        same = np.array([[0.0], [2.0], [0.0], [2.0]])
        assert float(gbc(same, y, num_classes=2, n_dims=None)) == pytest.approx(-2.0, rel=1e-12)


def test_logme_float64_matches_reference_tightly() -> None:
    # In float64 the only differences left are rounding: checks the algebra (evidence form,
    # stopping rule, padded spectrum) far below the float32 tolerance.
    for case in ("tiny", "d_gt_n"):
        x, y, k = CASES[case]
        with jax.enable_x64(True):
            got = float(logme(x.astype(np.float64), y, num_classes=k))
        want = ref.logme(x.astype(np.float64), y, num_classes=k)
        assert got == pytest.approx(want, rel=1e-9)


def test_logme_of_zero_features_is_the_noise_evidence() -> None:
    # F = 0: gamma = alpha = 0 and the model is pure noise, beta = n / (n_c + 1e-5) and the
    # evidence per sample is (n/2 log beta - beta n_c / 2 - n/2 log 2 pi) / n, finite.
    _, y, k = CASES["tiny"]
    n = y.shape[0]
    want = []
    for c in range(k):
        n_c = float(np.sum(y == c))
        beta = n / (n_c + 1e-5)
        want.append(
            (0.5 * n * math.log(beta) - 0.5 * beta * n_c - 0.5 * n * math.log(2 * math.pi)) / n
        )
    got = float(logme(np.zeros((n, 8), np.float32), y, num_classes=k))
    assert got == pytest.approx(float(np.mean(want)), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Bad input: ValueError from Python, before anything is traced


@pytest.fixture
def no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace every jitted core so that reaching it fails the test."""

    def boom(*args, **kwargs):
        raise AssertionError("the jitted core was reached: validation must come first")

    for module, attr in [
        (prob_mod, "_leep_jit"),
        (prob_mod, "_nce_jit"),
        (hscore_mod, "_hscore_jit"),
        (hscore_mod, "_hscore_shrink_jit"),
        (logme_mod, "_logme_jit"),
        (transrate_mod, "_transrate_jit"),
        (gbc_mod, "_gbc_jit"),
        (gbc_mod, "_gbc_spherical_jit"),
    ]:
        monkeypatch.setattr(module, attr, boom)


@pytest.mark.usefixtures("no_tracing")
@pytest.mark.parametrize("name", list(FEATURE_SCORERS))
def test_feature_scorers_reject_bad_input(name: str) -> None:
    fn = FEATURE_SCORERS[name][0]
    x, y, _ = CASES["tiny"]
    multi = np.eye(2, dtype=np.float32)[y]
    bad = [
        (dict(features=x, labels=multi, num_classes=2), "single-label"),
        (dict(features=x[:, 0], labels=y, num_classes=2), "features"),
        (dict(features=np.where(np.eye(20, 8) > 0, np.nan, x), labels=y), "NaN"),
        (dict(features=x, labels=y[:-1], num_classes=2), "labels"),
        (dict(features=x, labels=y + 5, num_classes=2), "out of range"),
        (dict(features=x, labels=y, num_classes=2.0), "num_classes"),
        (dict(features=x, labels=np.zeros(20, np.int32), num_classes=2), "single class"),
        (dict(features=x, labels=y, num_classes=2, n_dims=0), "n_dims"),
        (dict(features=x, labels=y, num_classes=2, feature_mask=np.ones(7, bool)), "feature_mask"),
        (dict(features=x, labels=y, num_classes=2, feature_mask=np.zeros(8, bool)), "feature_mask"),
        (dict(features=x, labels=y, num_classes=2, feature_mask=np.ones(8)), "feature_mask"),
        (dict(features=x.astype(np.int32), labels=y, num_classes=2), "floating"),
    ]
    for kwargs, match in bad:
        features = kwargs.pop("features")
        labels = kwargs.pop("labels")
        with pytest.raises(ValueError, match=match):
            fn(features, labels, **kwargs)


@pytest.mark.usefixtures("no_tracing")
def test_transrate_rejects_bad_eps() -> None:
    x, y, _ = CASES["tiny"]
    for eps in (0.0, -1e-4, float("nan"), "x"):
        with pytest.raises(ValueError, match="eps"):
            transrate(x, y, num_classes=2, eps=eps)


@pytest.mark.usefixtures("no_tracing")
@pytest.mark.parametrize("name", list(PROB_SCORERS))
def test_prob_scorers_reject_bad_input(name: str) -> None:
    fn = PROB_SCORERS[name][0]
    p, y, _ = PROB_CASES["tiny"]
    padded, mask = _pad(p, 8)
    dirty = padded.copy()
    dirty[:, 6] = 0.1
    dirty /= dirty.sum(axis=1, keepdims=True)
    bad = [
        (dict(probs=p, labels=np.eye(2)[y], num_classes=2), "single-label"),
        (dict(probs=p * 2.0, labels=y, num_classes=2), "sums to"),
        (dict(probs=np.log(p + 1e-9), labels=y, num_classes=2), "probs"),
        (dict(probs=p, labels=y[:-1], num_classes=2), "labels"),
        (dict(probs=p, labels=y, num_classes=1), "num_classes"),
        (dict(probs=padded, labels=y, num_classes=2, prob_mask=mask[:-1]), "prob_mask"),
        (dict(probs=dirty, labels=y, num_classes=2, prob_mask=mask), "zero padding"),
    ]
    for kwargs, match in bad:
        probs = kwargs.pop("probs")
        labels = kwargs.pop("labels")
        with pytest.raises(ValueError, match=match):
            fn(probs, labels, **kwargs)


# ---------------------------------------------------------------------------------------------
# One signature per scorer family

FAMILIES = {
    "features": (
        ("features", "labels"),
        ("num_classes", "n_dims", "feature_mask"),
        ["parc", "knn", "logistic", "logme", "transrate", "hscore", "hscore_shrink", "gbc",
         "gbc_spherical"],
    ),
    "reference": (
        ("features", "reference_features"),
        ("n_dims", "feature_mask", "reference_mask"),
        ["rsa", "dds"],
    ),
    "probs": (("probs", "labels"), ("num_classes", "prob_mask"), ["leep", "nce"]),
}  # fmt: skip


@pytest.mark.parametrize("family", list(FAMILIES))
def test_scorer_signatures_per_family(family: str) -> None:
    """Two positional arrays, then keyword-only options in the family's order (extras such as
    transrate's ``eps`` after them); the public default ``n_dims`` is the registry's, and
    the cores take the same keyword-only options."""
    arrays, options, names = FAMILIES[family]
    for name in names:
        spec = SCORERS[name]
        for fn in (spec.fn, spec.core):
            params = list(inspect.signature(fn).parameters.values())
            assert tuple(p.name for p in params[:2]) == arrays, (name, fn)
            assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:2]), (name, fn)
            assert all(p.kind is p.KEYWORD_ONLY for p in params[2:]), (name, fn)
            keywords = [p.name for p in params[2:]]
            assert keywords[: len(options)] == list(options), (name, fn, keywords)
            defaults = {p.name: p.default for p in params[2:]}
            if "n_dims" in options:
                assert defaults["n_dims"] == spec.default_dims, name
        defaults = {p.name: p.default for p in inspect.signature(spec.fn).parameters.values()}
        assert all(defaults[o] is None for o in options if o != "n_dims"), (name, defaults)


def test_feature_scorers_infer_num_classes() -> None:
    """``name(features, labels)`` alone: K is read from concrete labels (``max + 1``, or the
    columns of a multi-label matrix), the same score as with ``num_classes`` given."""
    x, y, k = CASES["tiny_b"]
    for name in FAMILIES["features"][2]:
        fn = getattr(parc_jax, name)
        assert float(fn(x, y)) == float(fn(x, y, num_classes=k)), name
    multi = np.eye(3, dtype=np.float32)[np.arange(20) % 3]
    multi[:, 0] = 1.0
    for fn in (parc_jax.parc, parc_jax.knn):
        assert float(fn(x, multi)) == float(fn(x, multi, num_classes=3))
    # logistic's default split is stratified_half(labels, seed=0)
    train = parc_jax.stratified_half(y, seed=0)
    assert float(parc_jax.logistic(x, y)) == float(parc_jax.logistic(x, y, train_mask=train))


def test_num_classes_is_required_with_traced_labels() -> None:
    """Inside jit/vmap the labels have no values: one ValueError naming num_classes."""
    x, y, k = CASES["tiny_b"]
    p, py, _ = PROB_CASES["tiny"]
    cases = [(getattr(parc_jax, n), x, y) for n in FAMILIES["features"][2]]
    cases += [(getattr(parc_jax, n), p, py) for n in FAMILIES["probs"][2]]
    for fn, a, labels in cases:
        with pytest.raises(ValueError, match=r"num_classes: .* jit/vmap"):
            jax.jit(lambda a, labels, fn=fn: fn(a, labels))(a, labels)
    # concrete labels with traced features still give K
    got = jax.jit(lambda f: parc_jax.knn(f, y))(x)
    assert float(got) == float(parc_jax.knn(x, y, num_classes=k))
