"""The newer scorers (SFDA, NLEEP, PACTran, NCTI parts, ETran, LFC) against their float64
references, plus vmap == loop, padding, order/bank independence, class structure beating
noise, the bank-level NCTI step, and pinned differences from the released code.

Small shapes, shared across tests, keep compilation (the dominant cost) low.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from conftest import backend_rtol

from parc_jax import reference as ref
from parc_jax.engine import add_bank_level, engine_methods
from parc_jax.scorers.etran import etran
from parc_jax.scorers.lfc import lfc
from parc_jax.scorers.logistic import pactran_gauss
from parc_jax.scorers.ncti import ncti_combine, ncti_ncc, ncti_seli, ncti_vc
from parc_jax.scorers.nleep import nleep
from parc_jax.scorers.pactran import pactran_dir, pactran_gamma
from parc_jax.scorers.registry import SCORERS
from parc_jax.scorers.sfda import sfda

SAME_RTOL = backend_rtol(2e-5, 1e-4)


def _case(n, d, k, seed, *, sep=1.0, two_sample=False, constant=False):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.repeat(np.arange(k), 2), rng.integers(0, k, n - 2 * k)])
    if two_sample:
        y = np.concatenate([[0, 0], np.repeat(np.arange(1, k), 2), rng.integers(1, k, n - 2 * k)])
    y = rng.permutation(y).astype(np.int32)
    scale = 1.0 / np.sqrt(1.0 + np.arange(d))
    x = (rng.normal(size=(k, d)) * sep)[y] * scale + rng.normal(size=(n, d)) * scale
    if constant:
        x[:, 3] = 0.5
        x[:, 5] = 0.0
    return x.astype(np.float32), y, k


CASES = {
    "small": _case(40, 12, 3, 0, sep=1.5, constant=True),
    "d_gt_n": _case(30, 48, 4, 1, sep=1.0, two_sample=True),
}

# name -> (public fn, reference fn, rtol, atol)
FEATURES = {
    "sfda": (sfda, ref.sfda, 2e-3, 1e-4),
    "etran": (etran, ref.etran, 1e-3, 1e-4),
    "nleep": (nleep, ref.nleep, 2e-3, 1e-4),
    "lfc": (lfc, ref.lfc, 1e-4, 1e-6),
    "pactran_gauss": (pactran_gauss, ref.pactran_gauss, 2e-3, 1e-4),
    "ncti_seli": (ncti_seli, lambda *a, **k: ref.ncti_parts(*a, **k)[0], 2e-3, 1e-4),
    "ncti_ncc": (ncti_ncc, lambda *a, **k: ref.ncti_parts(*a, **k)[1], 2e-3, 1e-4),
    "ncti_vc": (ncti_vc, lambda *a, **k: ref.ncti_parts(*a, **k)[2], 2e-3, 1e-4),
}


def _close(a, b, rtol, atol):
    return abs(a - b) <= atol + rtol * abs(b)


def _dims(name):
    return SCORERS[name].default_dims if name != "etran" else 64


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", list(FEATURES))
def test_feature_scorers_match_reference(name, case):
    fn, ref_fn, rtol, atol = FEATURES[name]
    x, y, k = CASES[case]
    got = float(fn(x, y, num_classes=k))
    want = ref_fn(x.astype(np.float64), y, num_classes=k, n_dims=_dims(name))
    assert np.isfinite(got) and _close(got, want, rtol, atol), (name, case, got, want)


@pytest.mark.parametrize("name", list(FEATURES))
def test_padding_vmap_and_order(name):
    """vmap over padded models == each alone; zero padding + mask changes nothing; a model's
    score does not depend on the other models in the batch or their order."""
    fn = FEATURES[name][0]
    core = SCORERS[name].core
    x, y, k = CASES["small"]
    rng = np.random.default_rng(3)
    x1 = (x + rng.normal(size=x.shape).astype(np.float32)) * 0.7
    width = 20
    pad = np.zeros((x.shape[0], width), np.float32)
    xs = np.stack([pad.copy(), pad.copy()])
    xs[0, :, :12], xs[1, :, :12] = x, x1
    masks = np.zeros((2, width), bool)
    masks[:, :12] = True
    run = jax.jit(
        jax.vmap(lambda f, m: core(f, jnp.asarray(y), num_classes=k, n_dims=_dims(name),
                                   feature_mask=m))
    )  # fmt: skip
    both = np.asarray(run(jnp.asarray(xs), jnp.asarray(masks)))
    swapped = np.asarray(run(jnp.asarray(xs[::-1]), jnp.asarray(masks[::-1])))
    for i, alone in enumerate([x, x1]):
        one = float(fn(alone, y, num_classes=k))
        assert _close(float(both[i]), one, SAME_RTOL * 10, 1e-5), (name, i, both[i], one)
    np.testing.assert_allclose(both, swapped[::-1], rtol=SAME_RTOL, atol=1e-6)


@pytest.mark.parametrize("name", list(FEATURES))
def test_class_structure_outscores_noise(name):
    fn = FEATURES[name][0]
    x, y, k = CASES["small"]
    rng = np.random.default_rng(9)
    noise = rng.normal(size=x.shape).astype(np.float32) * x.std(axis=0)
    assert float(fn(x, y, num_classes=k)) > float(fn(noise, y, num_classes=k)), name


def _probs(n, z, k, seed, sharp):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.concatenate([np.repeat(np.arange(k), 2), rng.integers(0, k, n - 2 * k)]))
    logits = sharp * rng.normal(size=(k, z))[y] + rng.normal(size=(n, z))
    return scipy.special.softmax(logits, axis=1).astype(np.float32), y.astype(np.int32), k


PROB = {
    "pactran_dir": (pactran_dir, ref.pactran_dir),
    "pactran_gamma": (pactran_gamma, ref.pactran_gamma),
}


@pytest.mark.parametrize("name", list(PROB))
def test_prob_scorers_reference_padding_and_structure(name):
    fn, ref_fn = PROB[name]
    p, y, k = _probs(60, 7, 4, 0, 2.0)
    got = float(fn(p, y, num_classes=k))
    want = ref_fn(p.astype(np.float64), y, num_classes=k)
    assert _close(got, want, 1e-4, 1e-5), (name, got, want)
    # absent declared classes and padded source columns change nothing
    padded = np.zeros((60, 16), np.float32)
    padded[:, :7] = p
    mask = np.arange(16) < 7
    assert _close(float(fn(padded, y, num_classes=k + 2, prob_mask=mask)), got, SAME_RTOL, 1e-6)
    # a source whose classes carry the target's beats one that does not
    flat, _, _ = _probs(60, 7, 4, 0, 0.0)
    assert got > float(fn(flat, y, num_classes=k))


def test_ncti_bank_level_step():
    """The combined ncti is the published min-max sum over the models scored together, per
    probe set; a part equal for every model (one model) contributes 0."""
    raw = {
        "ncti_seli": np.array([[1.0, 3.0, 2.0], [2.0, 2.0, 2.0]]),
        "ncti_ncc": np.array([[0.5, 0.9, 0.7], [0.1, 0.3, 0.2]]),
        "ncti_vc": np.array([[-2.0, -1.0, -3.0], [-1.0, -1.0, -1.0]]),
    }
    out = add_bank_level(raw, ["ncti"])["ncti"]
    seli, ncc, s_vc = (np.array([1.0, 3.0, 2.0]), np.array([0.5, 0.9, 0.7]),
                       np.array([2.0, 1.0, 3.0]))  # fmt: skip

    def mm(v):
        return (v - v.min()) / (v.max() - v.min())

    # evaluate_metric_group1_cpu.py (BUserName/NCTI): mascore + mcscore - cpscore
    np.testing.assert_allclose(out[0], mm(seli) + mm(ncc) - mm(s_vc))
    np.testing.assert_allclose(out[1], mm(np.array([0.1, 0.3, 0.2])) - 1.0 + 1.0)
    assert engine_methods(["sfda", "ncti"]) == ["sfda", "ncti_seli", "ncti_ncc", "ncti_vc"]
    assert ncti_combine([1.0], [0.5], [-1.0]).tolist() == [0.0]


def test_ncti_class_nuclear_norms_both_sides():
    """The summed per-class nuclear norms are the same from the ``K x K`` side and from the
    same-class ``n x n`` Gram (each side chosen by shape), against NumPy's SVD, with an
    absent class, one-row classes and classes with more rows than columns."""
    from parc_jax.scorers.ncti import _class_nuclear_norms

    rng = np.random.default_rng(5)
    for n, k in ((14, 8), (40, 3)):  # n^3 <= k^4 (Gram side), n^3 > k^4 (K x K side)
        y = np.concatenate(
            [[0], np.repeat(np.arange(1, k - 1), 2), rng.integers(1, k - 1, n - 2 * k + 3)]
        )
        p = scipy.special.softmax(rng.normal(size=(n, k)) * 2.0, axis=1)
        p[:, k - 1] = 0.0  # class k - 1 is absent: its posterior column is 0
        p /= p.sum(axis=1, keepdims=True)
        onehot = np.eye(k)[y]
        got = float(_class_nuclear_norms(jnp.asarray(p, jnp.float32),
                                         jnp.asarray(onehot, jnp.float32),
                                         jnp.asarray(onehot.sum(axis=0), jnp.float32)))  # fmt: skip
        want = sum(np.linalg.norm(p[y == c], ord="nuc") for c in range(k) if np.any(y == c))
        assert _close(got, want, 1e-5, 1e-6), (n, k, got, want)


def test_ncti_vc_many_classes_matches_reference():
    """Two images per class and more classes than PCA components' worth of rows: the Gram
    side of the per-class nuclear norms, through the public scorer."""
    x, y, k = _case(24, 16, 12, 4, sep=1.5)
    got = float(ncti_vc(x, y, num_classes=k))
    want = ref.ncti_parts(x.astype(np.float64), y, num_classes=k, n_dims=64)[2]
    assert _close(got, want, 2e-3, 1e-4), (got, want)


def test_ncti_vc_confident_posteriors_stay_finite():
    """A model of the shipped example bank whose LDA posteriors are confident enough to put
    class Gram entries at float32's smallest normal numbers next to entries ~n_c: LAPACK's
    float32 eigh returned NaN there until the matrices were scaled and tiny entries flushed."""
    from pathlib import Path

    from parc_jax.bank import read_bank

    bank = read_bank(Path(__file__).resolve().parents[1] / "parc_jax/data/example_bank.msgpack")
    model = next(m for m in bank.models if m.name == "resnet26/usps")
    x, y = np.asarray(model.features, np.float32), bank.target.labels
    got = float(ncti_vc(x, y, num_classes=bank.target.num_classes))
    want = ref.ncti_parts(x.astype(np.float64), y, num_classes=bank.target.num_classes,
                          n_dims=64)[2]  # fmt: skip
    assert _close(got, want, 2e-3, 1e-4), (got, want)


def test_sfda_pins_the_released_double_softmax():
    """TencentARC/SFDA metrics.py ``SFDA_Score`` mixes with ``softmax(predict_proba(X))``
    (a second softmax over probabilities); ours mixes with the posterior itself (the paper).
    The two differ on class-structured data; ours equals the reference."""
    x, y, k = CASES["small"]
    xr = ref._common._reduce(x.astype(np.float64), 64)
    classes = np.unique(y)
    from parc_jax.reference import lda

    _, sw = lda._scatter(xr, y, classes)
    s = max(np.exp(-5.0 * np.linalg.eigvalsh(sw)[-1]), 1e-10)
    probs, means = lda._sfda_stage(xr, y, classes, s)
    released = np.exp(probs) / np.exp(probs).sum(axis=1, keepdims=True)  # the second softmax
    p = released[np.arange(len(y)), y][:, None]
    outer = (means.sum(axis=0) - means) / (len(classes) - 1)
    mixed = p * xr + (1 - p) * outer[y]
    published = lda._true(lda._sfda_stage(mixed, y, classes, s)[0], y, classes)
    ours = float(sfda(x, y, num_classes=k))
    assert _close(ours, ref.sfda(x.astype(np.float64), y, num_classes=k), 2e-3, 1e-4)
    assert abs(ours - published) > 1e-4, (ours, published)


def test_lfc_matches_the_released_formula():
    """Model-Spider mptms/LFC.py: y = onehot @ onehot.T, 0 -> -1, both kernels minus their
    scalar mean, sum(x * y) / sqrt(sum(x^2) sum(y^2))."""
    x, y, k = CASES["small"]
    g = x.astype(np.float64) @ x.astype(np.float64).T
    lab = np.eye(k)[y] @ np.eye(k)[y].T
    lab[lab == 0] = -1
    g, lab = g - g.mean(), lab - lab.mean()
    published = np.sum(g * lab) / (np.sqrt(np.sum(g * g)) * np.sqrt(np.sum(lab * lab)))
    assert _close(float(lfc(x, y, num_classes=k)), published, 1e-4, 1e-6)


def test_all_skips_prob_scorers_without_probs_and_names_fail():
    from parc_jax.engine import resolve_methods
    from parc_jax.engine._types import ModelFacts, TargetInfo

    x, y, k = CASES["small"]
    target = TargetInfo(name="t", labels=y, num_classes=k)
    facts = [ModelFacts(name="m", architecture="a", probs=False, depth=None,
                        source_images=None)]  # fmt: skip
    run, skipped = resolve_methods("all", target, facts)
    assert "ncti" in run and "pactran_dir" in skipped and "pactran_gamma" in skipped
    with pytest.raises(ValueError, match="pactran_dir cannot run"):
        resolve_methods("pactran_dir", target, facts)
