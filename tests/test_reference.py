"""Checks of the NumPy/SciPy reference against hand-derivable or independent facts.

The reference is what the JAX scorers are tested against, so these tests pin it to values
that follow from the definitions (exact limits, identities, brute-force sums) rather than to
numbers it produced itself.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from parc_jax import reference as ref


def _clusters(rng, *, n_per: int, k: int, d: int, sep: float, noise: float = 1.0):
    """Balanced Gaussian clusters: features ``[n_per*k, d]``, labels ``[n_per*k]``."""
    y = np.repeat(np.arange(k), n_per)
    centres = sep * rng.normal(size=(k, d))
    return centres[y] + noise * rng.normal(size=(y.size, d)), y


# ------------------------------------------------------------------------------ shared steps


def test_pca_sign_rule_eigenvalues_and_width():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12)) @ rng.normal(size=(12, 12)) + 5.0
    scores = ref.pca(x, 5)
    assert scores.shape == (40, 5)
    # Variances of the scores are the top eigenvalues of the sample covariance.
    eig = np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1]
    np.testing.assert_allclose(scores.var(axis=0, ddof=1), eig[:5], rtol=1e-10)
    # Loadings recovered by least squares: the largest-|.| entry of each is positive.
    xc = x - x.mean(axis=0)
    loadings = np.linalg.lstsq(xc, scores, rcond=None)[0]  # [d, f] = V
    pivot = np.argmax(np.abs(loadings), axis=0)
    assert np.all(loadings[pivot, np.arange(5)] > 0)
    np.testing.assert_allclose(loadings.T @ loadings, np.eye(5), atol=1e-10)
    # Flipping the input's sign does not flip the (sign-fixed) scores' loadings.
    np.testing.assert_allclose(ref.pca(-x, 5), -ref.pca(x, 5), atol=1e-10)
    # f = min(n_dims, n - 1, d).
    assert ref.pca(x, 100).shape == (40, 12)
    assert ref.pca(x[:6], 100).shape == (6, 5)


def test_standardize_population_std_and_constant_columns():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 4))
    x[:, 2] = 0.1  # constant: float mean of equal numbers need not equal them
    z = ref.standardize(x)
    assert np.all(z[:, 2] == 0.0)
    keep = [0, 1, 3]
    np.testing.assert_allclose(z[:, keep].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z[:, keep].std(axis=0, ddof=0), 1.0, rtol=1e-12)


# ------------------------------------------------------------------------------ PARC / RSA / DDS


def test_parc_of_one_hot_features_is_100():
    # Balanced classes: standardised one-hot rows have distance 0 within a class and one
    # common positive distance across classes, exactly the two-valued label distance.
    y = np.repeat(np.arange(5), 8)
    features = np.eye(5)[y]
    assert ref.parc(features, y, num_classes=5, n_dims=None) == pytest.approx(100.0, abs=1e-9)


def test_parc_literal_label_distance_trap():
    rng = np.random.default_rng(2)
    k = 37
    x, y = _clusters(rng, n_per=6, k=k, d=48, sep=0.4)
    literal = 1.0 - np.corrcoef(np.eye(k)[y])
    assert np.unique(ref._common._upper(literal)).size > 2  # rounding noise: more than two values
    exact = ref.parc(x, y, num_classes=k)
    trap = ref.parc(x, y, num_classes=k, literal_label_distance=True)
    assert abs(exact - trap) > 1.0
    # The one-hot rows as a multi-label matrix: its distances are built from exact counts, so
    # they tie exactly and give the exact two-valued result, not the literal trap.
    multi = ref.parc(x, np.eye(k)[y], num_classes=k)
    assert multi == pytest.approx(exact, abs=1e-9)
    # K = 2: the literal distance is exactly two-valued, no difference.
    x2, y2 = _clusters(rng, n_per=20, k=2, d=10, sep=0.5)
    assert ref.parc(x2, y2, num_classes=2, literal_label_distance=True) == pytest.approx(
        ref.parc(x2, y2, num_classes=2), abs=1e-9
    )


def test_parc_equals_point_biserial_of_ranks():
    # Independent route: Spearman with a two-valued variable is the Pearson correlation of the
    # average ranks of the feature distances with the 0/1 indicator y_i != y_j.
    rng = np.random.default_rng(3)
    x, y = _clusters(rng, n_per=10, k=4, d=6, sep=0.7)
    z = ref.standardize(x)
    zc = z - z.mean(axis=1, keepdims=True)
    zc /= np.linalg.norm(zc, axis=1, keepdims=True)
    iu = np.triu_indices(y.size, 1)
    ranks = scipy.stats.rankdata((1.0 - zc @ zc.T)[iu])
    differ = (y[:, None] != y[None, :])[iu].astype(float)
    expected = 100.0 * np.corrcoef(ranks, differ)[0, 1]
    assert ref.parc(x, y, num_classes=4, n_dims=None) == pytest.approx(expected, rel=1e-10)


def test_rsa_and_dds_of_a_model_with_itself_are_100():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 20))
    assert ref.rsa(x, x) == pytest.approx(100.0, abs=1e-9)
    assert ref.dds(x, x) == pytest.approx(100.0, abs=1e-9)
    assert ref.dds(x, 3.0 * x + 1.0) == pytest.approx(100.0, abs=1e-9)  # standardised first
    other = rng.normal(size=(30, 20))
    assert abs(ref.dds(x, other)) < 50.0


def test_hsic_unbiased_equals_brute_force_u_statistic():
    # Song et al. 2012: HSIC_u is the U-statistic over ordered 4-tuples of distinct indices of
    # K_ij L_ij + K_ij L_qr - 2 K_ij L_iq.
    rng = np.random.default_rng(5)
    n = 7
    a, b = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    k = np.exp(-((a[:, None] - a[None]) ** 2).sum(-1))
    l = (b @ b.T) ** 2  # noqa: E741
    total = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2.0 * k[i, j] * l[i, q]
    brute = total / (n * (n - 1) * (n - 2) * (n - 3))
    assert ref.hsic_unbiased(k, l) == pytest.approx(brute, rel=1e-10)


# ------------------------------------------------------------------------------ LEEP / NCE


def _deterministic_probs(y, z_of_class, z):
    """One-hot source probabilities: every image of target class c picks source z_of_class[c]."""
    return np.eye(z)[np.asarray(z_of_class)[y]]


def test_leep_and_nce_are_zero_for_a_deterministic_mapping():
    y = np.array([0, 0, 1, 1, 1, 2, 2, 0, 1, 2])
    # Each source class (of 6; three unused -> zero columns) is chosen by one target class.
    probs = _deterministic_probs(y, [4, 0, 2], 6)
    assert ref.leep(probs, y, num_classes=3) == pytest.approx(0.0, abs=1e-12)
    assert ref.nce(probs, y, num_classes=3) == pytest.approx(0.0, abs=1e-12)
    # Two target classes share a source class: NCE = -H(Y|Z) = -(5/10) ln 2 ... by hand:
    probs = _deterministic_probs(y, [0, 0, 1], 2)
    # z=0 holds 3 of class 0 and 4 of class 1 (7 images); z=1 holds 3 of class 2.
    expected_nce = (3 * math.log(3 / 7) + 4 * math.log(4 / 7)) / 10
    assert ref.nce(probs, y, num_classes=3) == pytest.approx(expected_nce, rel=1e-12)
    # LEEP with hard probabilities: log P(y_i | z_i) averaged = the same value.
    assert ref.leep(probs, y, num_classes=3) == pytest.approx(expected_nce, rel=1e-12)


def test_nce_equals_mutual_information_minus_entropy():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 4, size=60)
    probs = rng.dirichlet(np.ones(7), size=60)
    z = probs.argmax(axis=1)
    joint = np.histogram2d(y, z, bins=[np.arange(5), np.arange(8)])[0] / 60
    h_y = scipy.stats.entropy(joint.sum(axis=1))
    h_z = scipy.stats.entropy(joint.sum(axis=0))
    h_yz = scipy.stats.entropy(joint.ravel())
    # -H(Y|Z) = H(Z) - H(Y, Z)
    assert ref.nce(probs, y, num_classes=4) == pytest.approx(h_z - h_yz, rel=1e-12)
    assert ref.nce(probs, y, num_classes=4) <= 0.0
    assert h_z - h_yz >= -h_y - 1e-12


def test_leep_by_hand_on_soft_probabilities():
    y = np.array([0, 1, 1])
    probs = np.array([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]])
    joint = np.array([[0.5, 0.5], [1.25, 0.75]]) / 3
    cond = joint / joint.sum(axis=0)
    expected = np.mean(
        [np.log(cond[yi] @ probs[i]) for i, yi in enumerate(y)],
    )
    assert ref.leep(probs, y, num_classes=2) == pytest.approx(expected, rel=1e-12)
    assert ref.leep(probs, y, num_classes=2) < 0.0


# ------------------------------------------------------------------------------ H-Score


def test_hscore_is_k_minus_1_when_degenerate():
    rng = np.random.default_rng(7)
    k, n = 4, 24
    y = np.arange(n) % k
    for d in (n - 1, 40):
        x = rng.normal(size=(n, d))
        assert ref.hscore_is_degenerate(n, d)
        assert ref.hscore(x, y, num_classes=k, n_dims=None) == pytest.approx(k - 1, rel=1e-8)
    # Default reduction to 32 >= n - 1 = 23 components: degenerate too.
    assert ref.hscore_is_degenerate(n, 40, n_dims=32)
    assert not ref.hscore_is_degenerate(100, 40, n_dims=32)


def test_hscore_is_invariant_to_invertible_linear_maps():
    # tr((A^T C A)^-1 A^T G A) = tr(C^-1 G); an element-wise product inside the trace (a
    # published bug) would not be invariant.
    rng = np.random.default_rng(8)
    x, y = _clusters(rng, n_per=15, k=3, d=5, sep=1.0)
    a = rng.normal(size=(5, 5)) + 3.0 * np.eye(5)
    h = ref.hscore(x, y, num_classes=3, n_dims=None)
    assert ref.hscore(x @ a, y, num_classes=3, n_dims=None) == pytest.approx(h, rel=1e-9)
    # H-Score is tr(P_F P_Y) for two orthogonal projections, P_Y of rank K - 1.
    assert 0.0 < h < 3.0 - 1.0


# ------------------------------------------------------------------------------ Ledoit-Wolf


@pytest.mark.parametrize("shape", [(50, 5), (12, 30)])
def test_ledoit_wolf_matches_brute_force_and_sklearn_form(shape):
    rng = np.random.default_rng(9)
    n, d = shape
    x = rng.normal(size=(n, d)) * np.linspace(0.2, 3.0, d)
    x -= x.mean(axis=0)
    sigma, alpha = ref.ledoit_wolf(x)
    s = x.T @ x / n
    mu = np.trace(s) / d
    delta = np.sum((s - mu * np.eye(d)) ** 2)
    beta_bar = sum(np.sum((np.outer(xk, xk) - s) ** 2) for xk in x) / n**2
    # scikit-learn's expanded form (ledoit_wolf_shrinkage), both divided by d.
    beta_sk = (np.sum(np.sum(x**2, axis=1) ** 2) / n - np.sum(s**2)) / (n * d)
    delta_sk = delta / d
    alpha_sk = min(beta_sk, delta_sk) / delta_sk
    assert 0.0 <= alpha <= 1.0
    assert alpha == pytest.approx(min(beta_bar, delta) / delta, rel=1e-12)
    assert alpha == pytest.approx(alpha_sk, rel=1e-10)
    np.testing.assert_allclose(sigma, (1 - alpha) * s + alpha * mu * np.eye(d), rtol=1e-12)


def test_ledoit_wolf_of_isotropic_sample_has_no_shrinkage_target_gap():
    # S already a multiple of I: delta = 0, beta = min(beta_bar, 0) = 0, alpha defined as 0.
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    sigma, alpha = ref.ledoit_wolf(x)
    assert alpha == 0.0
    np.testing.assert_allclose(sigma, 0.5 * np.eye(2))


def test_hscore_shrink_is_non_negative_and_finite():
    rng = np.random.default_rng(10)
    x, y = _clusters(rng, n_per=6, k=3, d=40, sep=0.5)  # d > n: shrinkage makes it usable
    value = ref.hscore_shrink(x, y, num_classes=3, n_dims=None)
    assert math.isfinite(value) and value >= 0.0


# ------------------------------------------------------------------------------ LogME


def _log_marginal(x, y, alpha, beta):
    """log N(y | 0, I / beta + X X^T / alpha), brute force."""
    cov = np.eye(x.shape[0]) / beta + x @ x.T / alpha
    return scipy.stats.multivariate_normal(mean=np.zeros(x.shape[0]), cov=cov).logpdf(y)


@pytest.mark.parametrize("shape", [(30, 50), (60, 8)])
def test_logme_evidence_is_the_marginal_likelihood(shape):
    rng = np.random.default_rng(11)
    n, d = shape
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=d) + 0.5 * rng.normal(size=n) > 0).astype(float)
    evidence, alpha, beta = ref.logme_fit(x, y)
    # For n < d this holds only with the spectrum padded to d entries (docs/metrics.md trap).
    assert evidence == pytest.approx(_log_marginal(x, y, alpha, beta), rel=1e-9)


def test_logme_fixed_point_maximises_the_evidence():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(80, 6))
    y = x @ rng.normal(size=6) + 0.3 * rng.normal(size=80)
    evidence, alpha, beta = ref.logme_fit(x, y)
    for fa, fb in [(1.3, 1.0), (1 / 1.3, 1.0), (1.0, 1.3), (1.0, 1 / 1.3)]:
        assert _log_marginal(x, y, alpha * fa, beta * fb) < evidence


def test_logme_is_mean_of_one_vs_rest_evidence_per_sample():
    rng = np.random.default_rng(13)
    x, y = _clusters(rng, n_per=10, k=2, d=15, sep=1.0)
    per_class = [ref.logme_fit(x, (y == c).astype(float))[0] / y.size for c in (0, 1)]
    assert ref.logme(x, y, num_classes=2) == pytest.approx(np.mean(per_class), rel=1e-12)


# ------------------------------------------------------------------------------ TransRate


def test_transrate_equals_the_sylvester_n_by_n_form():
    rng = np.random.default_rng(14)
    y = np.repeat(np.arange(3), [3, 5, 9])  # unbalanced: the 1/K weighting matters
    x = rng.normal(size=(3, 25))[y] + rng.normal(size=(y.size, 25))
    eps = 1e-4
    xc = x - x.mean(axis=0)

    def rate_small(z):  # logdet(I_m + Z Z^T / c), m = rows
        return 0.5 * np.linalg.slogdet(np.eye(z.shape[0]) + z @ z.T / (z.shape[0] * eps))[1]

    expected = rate_small(xc) - np.mean([rate_small(xc[y == c]) for c in range(3)])
    assert ref.transrate(x, y, num_classes=3) == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------------ GBC


def test_gbc_limits():
    rng = np.random.default_rng(15)
    k = 4
    # Identical class distributions: D_B = 0 for every pair, score -K(K-1).
    block = rng.normal(size=(6, 5))
    x = np.tile(block, (k, 1))
    y = np.repeat(np.arange(k), 6)
    for fn in (ref.gbc, ref.gbc_spherical):
        assert fn(x, y, num_classes=k) == pytest.approx(-k * (k - 1), rel=1e-12)
    # Well-separated classes: near 0, and always within [-K(K-1), 0].
    x, y = _clusters(rng, n_per=10, k=k, d=5, sep=30.0)
    for fn in (ref.gbc, ref.gbc_spherical):
        value = fn(x, y, num_classes=k)
        assert -1e-6 < value <= 0.0
    x, y = _clusters(rng, n_per=10, k=k, d=5, sep=0.5)
    for fn in (ref.gbc, ref.gbc_spherical):
        assert -k * (k - 1) <= fn(x, y, num_classes=k) <= 0.0


def test_gbc_bhattacharyya_by_hand_and_spherical_dimension_factor():
    # Two classes in 3 dims, each sample at mean +- s in every coordinate, so every
    # per-dimension variance of a class is s^2: diagonal and spherical models coincide.
    s1, s2, f = 0.5, 1.5, 3
    m1, m2 = np.zeros(f), np.array([1.0, 2.0, 0.0])
    x = np.stack([m1 + s1, m1 - s1, m2 + s2, m2 - s2])
    y = np.array([0, 0, 1, 1])
    v = (s1**2 + s2**2) / 2
    d_b = np.sum((m1 - m2) ** 2) / (8 * v) + 0.5 * f * (np.log(v) - np.log(s1 * s2))
    expected = -2.0 * np.exp(-d_b)
    assert ref.gbc(x, y, num_classes=2, n_dims=None) == pytest.approx(expected, rel=1e-12)
    assert ref.gbc_spherical(x, y, num_classes=2, n_dims=None) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------------ kNN


def test_knn_on_separated_clusters_and_by_hand():
    rng = np.random.default_rng(16)
    x, y = _clusters(rng, n_per=8, k=3, d=4, sep=50.0)
    assert ref.knn(x, y, num_classes=3) == 100.0
    # 1-D by hand: neighbours of 0, 1, 3, 10 are 1, 0, 1, 3.
    x = np.array([[0.0], [1.0], [3.0], [10.0]])
    y = np.array([0, 0, 1, 1])
    assert ref.knn(x, y, num_classes=2) == 75.0
    # Tie: point 1 is equidistant from 0 and 2, takes index 0.
    x = np.array([[0.0], [1.0], [2.0]])
    assert ref.knn(x, np.array([0, 1, 1]), num_classes=2) == pytest.approx(100.0 / 3)


def test_knn_multilabel():
    x = np.array([[0.0], [0.1], [5.0], [5.2]])
    y = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 0], [0, 1, 1]])
    # L1 distances to the neighbour: 2, 2, 1, 1 over K = 3.
    expected = 100.0 * np.mean([1 - 2 / 3, 1 - 2 / 3, 1 - 1 / 3, 1 - 1 / 3])
    assert ref.knn(x, y, num_classes=3) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------------ logistic


def test_stratified_half_is_balanced_and_seeded():
    y = np.repeat(np.arange(3), [4, 5, 2])
    mask = ref.stratified_half(y, seed=0)
    assert mask.dtype == np.bool_ and mask.shape == y.shape
    for c, n_c in enumerate([4, 5, 2]):
        assert int(mask[y == c].sum()) in (n_c // 2, (n_c + 1) // 2)
        assert mask[y == c].any() and not mask[y == c].all()
    np.testing.assert_array_equal(mask, ref.stratified_half(y, seed=0))


def test_logistic_gradient_is_correct_and_vanishes_at_the_fit():
    rng = np.random.default_rng(17)
    x = rng.normal(size=(30, 4))
    y = rng.integers(0, 3, size=30)
    theta = rng.normal(size=4 * 3 + 3)

    def value(th):
        return ref.logistic_objective(th, x, y, num_classes=3, C=0.7)[0]

    def grad(th):
        return ref.logistic_objective(th, x, y, num_classes=3, C=0.7)[1]

    assert scipy.optimize.check_grad(value, grad, theta) < 1e-5
    w, b, result = ref.logistic_fit(x, y, num_classes=3, C=0.7)
    _, g = ref.logistic_objective(np.concatenate([w.ravel(), b]), x, y, num_classes=3, C=0.7)
    assert np.max(np.abs(g)) < 1e-6
    assert not np.allclose(b, 0.0)  # intercept fitted and (unpenalised) free


def test_logistic_recovers_separable_data():
    rng = np.random.default_rng(18)
    x, y = _clusters(rng, n_per=12, k=3, d=6, sep=10.0)
    mask = ref.stratified_half(y, seed=0)
    assert ref.logistic(x, y, num_classes=3, train_mask=mask) == 100.0
    # A constant column on the training half is dropped, not divided by zero.
    x[:, 0] = 2.0
    assert ref.logistic(x, y, num_classes=3, train_mask=mask) == 100.0


# ------------------------------------------------------------------------------ meta scores


def test_heuristic_and_depth_prior():
    assert ref.heuristic(18, 1000, 500) == pytest.approx(18 + math.log(1500), rel=1e-15)
    scores = np.array([0.2, 0.5, 0.1, 0.9])
    depths = np.array([18.0, 50.0, 101.0, 34.0])
    expected = scipy.stats.zscore(scores, ddof=1) + depths / 50.0
    np.testing.assert_allclose(ref.depth_prior(scores, depths), expected, rtol=1e-12)
    np.testing.assert_allclose(ref.depth_prior(np.ones(3), np.ones(3), l_max=10.0), 0.1)


# ------------------------------------------------------------------------------ refusals


def test_bad_inputs_raise_value_errors_naming_the_argument():
    rng = np.random.default_rng(19)
    x = rng.normal(size=(12, 3))
    y = np.arange(12) % 3
    multi = np.eye(3)[y]
    probs = np.full((12, 2), 0.5)
    for fn in (ref.hscore, ref.hscore_shrink, ref.logme, ref.transrate, ref.gbc):
        with pytest.raises(ValueError, match="labels"):
            fn(x, multi, num_classes=3)
    for fn in (ref.leep, ref.nce):
        with pytest.raises(ValueError, match="labels"):
            fn(probs, multi, num_classes=3)
    with pytest.raises(ValueError, match="n_dims"):
        ref.parc(x, y, num_classes=3, n_dims=0)
    with pytest.raises(ValueError, match="labels"):
        ref.parc(x, np.zeros(12, dtype=int), num_classes=3)
    with pytest.raises(ValueError, match="labels"):
        ref.parc(x, np.ones((12, 3)), num_classes=3)  # all-1 rows: no correlation
    with pytest.raises(ValueError, match="features"):
        ref.knn(np.where(x > 0, np.nan, x), y, num_classes=3)
    with pytest.raises(ValueError, match="features"):
        ref.parc(x, y, num_classes=3, n_dims=1)  # one dimension: rows have no correlation
    with pytest.raises(ValueError, match="probs"):
        ref.leep(np.full((12, 2), 0.7), y, num_classes=3)
    with pytest.raises(ValueError, match="train_mask"):
        ref.logistic(x, y, num_classes=3, train_mask=np.ones(12, dtype=bool))
    with pytest.raises(ValueError, match="source_images"):
        ref.heuristic(10, 0, 5)
