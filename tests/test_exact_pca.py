"""The engine's batched exact PCA: certified subspace iteration, and ``eigh`` for the models it
does not certify (numerics.reduce_features_certified, engine._programs._fallback_fn).

Small shapes (n = 120, d <= 256): the iteration runs on the n x n Gram (or the d x d
covariance) exactly as at bank scale; only the sizes differ.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from parc_jax import numerics
from parc_jax import reference as ref
from parc_jax.api import score_bank
from parc_jax.bank import Bank, ModelEntry, Target
from parc_jax.engine import _programs
from parc_jax.scorers.parc import parc_core
from parc_jax.synthetic import balanced_labels, synthetic_features

N, K, WIDTH = 120, 6, 32


def _models(seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Labels and feature matrices: three with class structure and a decaying spectrum (Gram
    side, d > n), one rank-deficient on the covariance side (d = 48 < n, 18 dead columns),
    and one without structure (isotropic noise: a flat spectrum, slow to converge).
    The engine test takes the d = 256 ones: one width bucket whatever the chunk size."""
    rng = np.random.default_rng(seed)
    labels = balanced_labels(N, K, rng)
    feats = [synthetic_features(labels, d, rng, signal=s) for d, s in ((256, 1.5), (256, 0.6),
                                                                       (200, 1.0))]  # fmt: skip
    low = synthetic_features(labels, 48, rng)
    low[:, 30:] = 0.0
    feats.append(low)
    feats.append(rng.normal(size=(N, 256)).astype(np.float32))
    return labels, feats


def _padded(feats: list[np.ndarray]) -> tuple[jax.Array, jax.Array]:
    width = max(f.shape[1] for f in feats)
    x = np.zeros((len(feats), N, width), np.float32)
    mask = np.zeros((len(feats), width), bool)
    for i, f in enumerate(feats):
        x[i, :, : f.shape[1]], mask[i, : f.shape[1]] = f, True
    return jnp.asarray(x), jnp.asarray(mask)


def _batched_parc(labels: np.ndarray, certified: bool):
    reduce = numerics.reduce_features_certified if certified else numerics.reduce_features_many

    def one(f, m):
        out = reduce(f, m, (WIDTH,))
        (x, valid), ok = out[0][0], out[2] if certified else jnp.array(True)
        return x, parc_core(x, jnp.asarray(labels), num_classes=K, n_dims=None,
                            feature_mask=valid), ok  # fmt: skip

    return jax.jit(jax.vmap(one))


@pytest.fixture
def fresh_programs():
    """The engine's programs read the solver settings when traced: trace them again."""
    _programs._COMPILED.clear()
    _programs._EXECUTABLES.clear()
    yield
    _programs._COMPILED.clear()
    _programs._EXECUTABLES.clear()


def _spectrum_pair(rng: np.random.Generator) -> list[np.ndarray]:
    """Features ``[N, 256]`` with the PCA spectrum 0.9^j (fast to converge), and the same with
    pairs 10 and 11 a relative 1e-6 apart: closer than float32 residuals can separate."""
    u = np.linalg.qr(rng.normal(size=(N, 60)))[0]
    u = np.linalg.qr(u - u.mean(axis=0))[0]  # centred columns: the spectrum PCA sees
    v = np.linalg.qr(rng.normal(size=(256, 60)))[0]
    lam = 0.9 ** np.arange(60)
    close = lam.copy()
    close[11] = close[10] * (1 - 1e-6)
    return [((u * np.sqrt(spectrum)) @ v.T).astype(np.float32) for spectrum in (lam, close)]


def test_certified_pca_matches_eigh_and_float64():
    """Certified models: the eigh route's components and PARC to float32 resolution. A
    converged model with two pairs too close for its residuals is flagged."""
    labels, feats = _models(0)
    feats = feats[:4] + _spectrum_pair(np.random.default_rng(3))
    x, mask = _padded(feats)
    scores_e, parc_e, _ = _batched_parc(labels, False)(x, mask)
    scores_c, parc_c, ok = _batched_parc(labels, True)(x, mask)
    assert np.asarray(ok).tolist() == [True] * 5 + [False]
    scores_e, scores_c = np.asarray(scores_e), np.asarray(scores_c)
    for i in range(5):  # the same components, signs included, to float32 resolution
        top = np.abs(scores_e[i]).max()
        np.testing.assert_allclose(scores_c[i], scores_e[i], atol=2e-4 * top)
    np.testing.assert_allclose(parc_c[:5], parc_e[:5], atol=2e-3)
    want = [ref.parc(f.astype(np.float64), labels, num_classes=K) for f in feats[:5]]
    np.testing.assert_allclose(parc_c[:5], want, atol=1e-2)


def test_uncertified_models_are_flagged(monkeypatch):
    """A flat spectrum does not converge in 16 steps: flagged, not passed off as exact; the
    structured models certify within the same budget."""
    monkeypatch.setattr(numerics, "CERTIFIED_MAX_STEPS", 16)
    labels, feats = _models(1)
    x, mask = _padded([feats[0], feats[4]])
    ok = np.asarray(_batched_parc(labels, True)(x, mask)[2])
    assert ok.tolist() == [True, False]


def _bank(labels: np.ndarray, feats: list[np.ndarray]) -> Bank:
    target = Target(name="t", labels=labels, num_classes=K)
    return Bank(
        target,
        [
            ModelEntry(name=f"m{i}", features=np.ascontiguousarray(f), architecture="resnet14")
            for i, f in enumerate(feats)
        ],
    )


def test_engine_certified_route_with_eigh_fallback(monkeypatch, fresh_programs):
    """The engine's exact mode on the certified route: certified models match the eigh route
    to float32 resolution, the uncertified ones are reduced again by eigh (the same values as
    the eigh route), and a model's scores do not depend on which models share its chunk or
    where it sits in it (at the same padded width: padding is tested elsewhere)."""
    labels, feats = _models(2)
    bank = _bank(labels, [feats[0], feats[4], feats[1], feats[4][:, ::-1] * 2, feats[0] * 3])
    # PARC alone: a second reducing scorer (hscore, gbc) makes every program of this test
    # several times slower to compile on the CPU; the fallback writes back every width alike
    methods = ["parc"]
    monkeypatch.setattr(numerics, "EXACT_PCA_SOLVER", "eigh")
    eigh = score_bank(bank, methods=methods, progress=False).scores

    monkeypatch.setattr(numerics, "EXACT_PCA_SOLVER", "certified")
    monkeypatch.setattr(numerics, "CERTIFIED_MAX_STEPS", 16)  # the noise models need ~48
    _programs._COMPILED.clear()
    _programs._EXECUTABLES.clear()
    missing: list[int] = []
    fall_back = _programs.ChunkScorer._fall_back

    def spy(self, x, outs, certified):
        missing.append(int((~np.asarray(certified)).sum()))
        return fall_back(self, x, outs, certified)

    monkeypatch.setattr(_programs.ChunkScorer, "_fall_back", spy)
    one = score_bank(bank, methods=methods, progress=False).scores
    assert sum(missing) == 2  # the two noise models
    for m in methods:
        np.testing.assert_allclose(one[m], eigh[m], atol=2e-3, err_msg=m)
        np.testing.assert_allclose(one[m][[1, 3]], eigh[m][[1, 3]], rtol=1e-6, err_msg=m)

    # another order in the same chunk shape (one chunk with padding rows): the same values,
    # to the bit (another chunk size rounds differently in XLA:CPU's batched products, the
    # eigh route's too: ~5e-5 PARC points; not tested here, each size is a compilation)
    order = [4, 1, 0, 3, 2]
    shuffled = dataclasses.replace(bank, models=[bank.models[i] for i in order])
    again = score_bank(shuffled, methods=methods, chunk_size=8, progress=False).scores
    for m in methods:
        np.testing.assert_array_equal(again[m], one[m][order], err_msg=m)
