"""Regression / multi-output targets: the bank's task (format version 2, version 1 still read),
LogME and k-NN for real-valued targets against the float64 NumPy reference, padding, vmap, the
engine and the CLI, and every other scorer refusing the task by name.

Targets have real structure: a latent ``z`` per probe image; the outputs are a noisy linear and
a noisy nonlinear function of it; a model's features carry ``z`` (through a few nonlinear
views mixed into ``d`` dimensions) with a strength, plus noise. Shapes are shared across
tests to keep the number of compilations low.
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import pytest
from conftest import backend_rtol

import parc_jax
from parc_jax import bank as B
from parc_jax import reference as ref
from parc_jax import score
from parc_jax.scorers.knn import knn, knn_core
from parc_jax.scorers.logme import logme, logme_core
from parc_jax.scorers.registry import BANK_LEVEL, SCORERS

RTOL = 1e-4
SAME_RTOL = backend_rtol(1e-6, 1e-5)
N = 48
SHAPES = [(N, 20), (N, 72)]  # n > d and d > n


def latent_case(seed: int, n: int = N, d: int = 20, strengths=(2.0, 0.7, 0.0), outputs: int = 2):
    """``(targets [n, outputs], [features [n, d] per strength])``: outputs are noisy functions
    of a latent z (2 z, sin(2 z) + z^2 / 2, ...); features carry z with the given strengths
    (0: random features) through the views (z, z^2, tanh z, sin z) mixed into d dims."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    fns = [2.0 * z, np.sin(2.0 * z) + 0.5 * z**2, np.tanh(z) - z]
    y = np.stack(fns[:outputs], axis=1) + 0.2 * rng.normal(size=(n, outputs))
    views = np.stack([z, z**2 - 1.0, np.tanh(z), np.sin(z)], axis=1)  # [n, 4]
    feats = []
    for s in strengths:
        mix = rng.normal(size=(4, d)) / 2.0
        decay = 1.0 / np.sqrt(1.0 + np.arange(d))  # a decaying noise spectrum
        feats.append((s * views @ mix + rng.normal(size=(n, d)) * decay).astype(np.float32))
    return y, feats


def _pad(x: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((x.shape[0], width), x.dtype)
    out[:, : x.shape[1]] = x
    mask = np.zeros(width, bool)
    mask[: x.shape[1]] = True
    return out, mask


# --------------------------------------------------------------------------------------------
# Scorers against the reference


@pytest.mark.parametrize("shape", SHAPES)
def test_logme_regression_matches_reference(shape):
    n, d = shape
    y, feats = latent_case(1, n, d)
    for f in feats:
        for target in (y, y[:, 1]):  # multi-output and one output [n]
            got = float(logme(f, target, regression=True))
            want = ref.logme(f, target, regression=True)
            assert math.isclose(got, want, rel_tol=RTOL), (got, want)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 4])
def test_knn_regression_matches_reference(shape, k):
    n, d = shape
    y, feats = latent_case(2, n, d)
    for f in feats:
        for target in (y, y[:, 0]):
            got = float(knn(f, target, k=k, regression=True))
            want = ref.knn(f, target, k=k, regression=True)
            assert math.isclose(got, want, rel_tol=RTOL, abs_tol=1e-3), (got, want)


def test_knn_classification_k_and_default():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 12)
    f = (rng.normal(size=(N, 20)) + 1.2 * np.eye(4, 20)[labels]).astype(np.float32)
    for k in (1, 2, 5):  # k = 2 exercises vote ties (nearest class wins)
        assert float(knn(f, labels, k=k)) == pytest.approx(
            ref.knn(f, labels, num_classes=4, k=k), abs=1e-4
        )
    # k = 1 is the default and the 1-NN accuracy: hits of the single nearest neighbour
    dist = np.linalg.norm(f[:, None].astype(np.float64) - f[None], axis=2)
    np.fill_diagonal(dist, np.inf)
    want = 100.0 * np.mean(labels[np.argmin(dist, axis=1)] == labels)
    assert float(knn(f, labels)) == pytest.approx(want, abs=1e-4)
    multi = np.eye(4)[labels] + np.eye(4)[(labels + 1) % 4]  # two positives per row
    assert float(knn(f, multi, k=3)) == pytest.approx(
        ref.knn(f, multi, num_classes=4, k=3), abs=1e-4
    )


def test_reference_regression_known_values():
    y, (good, _, noise) = latent_case(4)
    # one output: the per-output mean is that output's evidence / n
    evidence, _, _ = ref.logme_fit(good, y[:, 0])
    assert ref.logme(good, y[:, 0], regression=True) == pytest.approx(evidence / N, rel=1e-12)
    # scaling an output by s shifts its evidence per sample by -log s, for every model alike
    scaled = ref.logme(good, 10.0 * y[:, 0], regression=True)
    assert scaled == pytest.approx(evidence / N - math.log(10.0), rel=1e-6)
    # k-NN: features that are the target itself predict it from the nearest other target
    assert ref.knn(y[:, :1], y[:, 0], regression=True) > 95.0
    assert float(knn(y[:, :1], y[:, 0], regression=True)) > 95.0


@pytest.mark.parametrize("shape", SHAPES)
def test_features_carrying_the_latent_outscore_random_ones(shape):
    n, d = shape
    y, (strong, weak, noise) = latent_case(5, n, d)
    for fn in (lambda f: logme(f, y, regression=True), lambda f: knn(f, y, k=3, regression=True)):
        s, w, r = (float(fn(f)) for f in (strong, weak, noise))
        assert s > w > r, (s, w, r)
    assert float(knn(noise, y, k=3, regression=True)) < 30.0  # near 0 for random features


def _padded_cases(y: np.ndarray):
    yj = jnp.asarray(y)
    return {
        "logme": (lambda f, m: logme_core(f, yj, num_classes=2, feature_mask=m, regression=True),
                  lambda f: logme(f, y, regression=True)),
        "knn": (lambda f, m: knn_core(f, yj, num_classes=2, feature_mask=m, k=3, regression=True),
                lambda f: knn(f, y, k=3, regression=True)),
    }  # fmt: skip


def _padded_stack(feats, widths, width=24):
    stack, masks = zip(*(_pad(f[:, :w], width) for f, w in zip(feats, widths, strict=True)))
    return jnp.asarray(np.stack(stack)), jnp.asarray(np.stack(masks))


WIDTHS = [24, 13, 13]  # three models of a bucket of width 24, two of them padded


def test_padded_equals_unpadded_and_vmap_equals_loop():
    y, feats = latent_case(6, N, 24)
    stack, masks = _padded_stack(feats, WIDTHS)
    for name, (core, public) in _padded_cases(y.astype(np.float32)).items():
        batched = np.asarray(jax.jit(jax.vmap(core))(stack, masks))
        one = jax.jit(core)
        loop = [float(one(stack[i], masks[i])) for i in range(3)]
        # batched and single eigh round differently; LogME's residual ||y||^2 - sum x_j^2
        # magnifies that where the fit is good (measured 4.6e-6 relative; the classification
        # tests allow 2e-5 for the same reason)
        rtol = 2e-5 if name == "logme" else SAME_RTOL
        np.testing.assert_allclose(batched, loop, rtol=rtol, atol=1e-6, err_msg=name)
        # deterministic: the same call twice gives the same bits
        np.testing.assert_array_equal(batched, np.asarray(jax.jit(jax.vmap(core))(stack, masks)))
        # padded (a 24 x 24 eigh) vs unpadded (13 x 13): float32 LogME agrees to the
        # rounding of two eigen-decompositions of different sizes (measured 1.7e-5 relative),
        # k-NN's distances are the same sums
        alone = [float(public(f[:, :w])) for f, w in zip(feats, WIDTHS, strict=True)]
        rtol = 5e-5 if name == "logme" else SAME_RTOL
        np.testing.assert_allclose(batched, alone, rtol=rtol, atol=1e-5, err_msg=name)


def test_padded_equals_unpadded_in_float64():
    y, feats = latent_case(6, N, 24)
    with jax.enable_x64(True):
        feats = [f.astype(np.float64) for f in feats]
        stack, masks = _padded_stack(feats, WIDTHS)
        core, public = _padded_cases(y)["logme"]  # k-NN's padded distances are the same sums
        for name in ["logme"]:
            batched = np.asarray(jax.jit(jax.vmap(core))(stack, masks))
            alone = [float(public(f[:, :w])) for f, w in zip(feats, WIDTHS, strict=True)]
            np.testing.assert_allclose(batched, alone, rtol=1e-9, err_msg=name)


def test_scorer_input_checks():
    y, (good, *_) = latent_case(7)
    flat = y.copy()
    flat[:, 1] = 3.0
    for fn in (logme, knn):
        with pytest.raises(ValueError, match="output 1 is the same for every probe image"):
            fn(good, flat, regression=True)
        bad = y.copy()
        bad[3, 0] = np.nan
        with pytest.raises(ValueError, match="NaN or infinite"):
            fn(good, bad, regression=True)
        with pytest.raises(ValueError, match="regression target has no classes"):
            fn(good, y, regression=True, num_classes=5)
    with pytest.raises(ValueError, match="k: 48 neighbours"):
        knn(good, y, k=N, regression=True)


# --------------------------------------------------------------------------------------------
# The bank's task


def regression_bank(outputs: int = 2, **kw) -> B.Bank:
    y, feats = latent_case(8, outputs=outputs)
    if outputs == 1:
        y = y[:, 0]
    names = ["strong", "weak", "random"]
    return B.bank_from_arrays(
        target_name="reg", labels=y, features=dict(zip(names, feats, strict=True)),
        task="regression", depths=[10, 20, 30], **kw,
    )  # fmt: skip


def test_regression_bank_round_trips(tmp_path):
    bank = regression_bank()
    t = bank.target
    assert (t.task, t.regression, t.multilabel, t.num_classes) == ("regression", True, False, 2)
    assert t.labels.dtype == np.float64 and t.labels.shape == (N, 2)
    path = tmp_path / "reg.msgpack"
    B.write_bank(path, bank)
    raw = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    assert raw["version"] == 2 and raw["target"]["task"] == "regression"
    assert "num_classes" not in raw["target"]
    back = B.read_bank(path)
    assert back.target.task == "regression" and back.target.num_classes == 2
    np.testing.assert_array_equal(back.target.labels, t.labels)
    one = regression_bank(outputs=1)
    assert one.target.labels.shape == (N,) and one.target.num_classes == 1
    info = B.bank_info(path)
    assert info["task"] == "regression" and set(info["scorers"]) == {
        "logme", "knn", "+l depth prior"
    }  # fmt: skip
    assert B.main(["info", str(path)]) == 0
    assert B.main(["validate", str(path)]) == 0


def test_regression_bank_errors():
    y, feats = latent_case(9)
    base = dict(target_name="r", features={"a": feats[0]})
    with pytest.raises(ValueError, match="regression target has no classes"):
        B.bank_from_arrays(labels=y, task="regression", num_classes=2, **base)
    flat = y.copy()
    flat[:, 0] = 1.0
    with pytest.raises(B.BankError, match="target field 'labels'.*output 0 is the same"):
        B.bank_from_arrays(labels=flat, task="regression", **base)
    with pytest.raises(B.BankError, match="task 'classification' takes \\[n\\] class indices"):
        B.bank_from_arrays(labels=y, task="classification", **base)
    with pytest.raises(ValueError, match="task: expected one of"):
        B.bank_from_arrays(labels=y, task="ranking", **base)
    # without task, a float [n, C] array is read as multi-label and refused as such
    with pytest.raises(B.BankError, match="multi-label value"):
        B.bank_from_arrays(labels=y, **base)


def _v1_tree(labels, num_classes):
    """A bank tree as version-1 writers made it: no task."""
    rng = np.random.default_rng(0)
    return {
        "format": "parc-bank",
        "version": 1,
        "target": {"name": "old", "labels": labels, "num_classes": num_classes},
        "models": [{"name": "m", "features": rng.normal(size=(6, 3)).astype(np.float32),
                    "architecture": "a"}],
    }  # fmt: skip


def test_version_1_banks_still_read(tmp_path):
    from parc_jax.bank import _codec

    single = _v1_tree(np.array([0, 1, 2, 0, 1, 2]), 3)
    two_hot = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]] + np.eye(3)[[1, 2, 0, 2, 0, 1]]
    multi = _v1_tree(two_hot, 3)
    for tree, task in ((single, "classification"), (multi, "multilabel")):
        path = tmp_path / f"{task}.msgpack"
        path.write_bytes(_codec.encode(tree))
        bank = B.read_bank(path)
        assert bank.target.task == task and bank.target.num_classes == 3
        assert B.open_bank(path).target.task == task
    # a version-1 file cannot declare a task; a version-2 file must
    path = tmp_path / "bad.msgpack"
    declared = {**single["target"], "task": "regression"}
    path.write_bytes(_codec.encode({**single, "target": declared}))
    with pytest.raises(B.BankError, match="field 'task'.*version-2 field"):
        B.read_bank(path)
    path.write_bytes(_codec.encode({**single, "version": 2}))
    with pytest.raises(B.BankError, match="target field 'task': is missing"):
        B.read_bank(path)
    # the packaged example bank is written by this version and declares its task
    example = score.example_bank_path()
    raw = msgpack.unpackb(open(example, "rb").read(), raw=False, strict_map_key=False)
    assert raw["version"] == 2 and raw["target"]["task"] == "classification"
    assert B.open_bank(example).target.task == "classification"


def test_from_npz_takes_the_task(tmp_path, capsys):
    y, feats = latent_case(10)
    folder = tmp_path / "models"
    folder.mkdir()
    for name, f in zip(["a", "b"], feats, strict=False):
        np.savez(folder / f"{name}.npz", features=f)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "bank.msgpack"
    argv = ["from-npz", str(folder), "--labels", str(tmp_path / "y.npy"), "--target-name", "r",
            "-o", str(out)]  # fmt: skip
    assert B.main([*argv, "--task", "regression"]) == 0
    assert "task=regression" in capsys.readouterr().out
    assert B.read_bank(out).target.task == "regression"
    # inferred (multi-label) the float targets are refused: exit 2, one line
    assert B.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "multi-label value" in err[0]


# --------------------------------------------------------------------------------------------
# Engine, API and CLI


def test_registry_declares_regression_only_for_logme_and_knn():
    takes = {name for name, spec in SCORERS.items() if "regression" in spec.tasks}
    assert takes == {"logme", "knn"}
    assert SCORERS["parc"].tasks == ("classification", "multilabel")
    assert SCORERS["hscore"].tasks == ("classification",)


def test_score_bank_on_a_regression_bank_equals_the_public_scorers():
    bank = regression_bank()
    result = parc_jax.score_bank(bank, methods="all", progress=False)
    assert result.methods == ["logme", "knn"]
    assert set(result.skipped) == (set(SCORERS) | set(BANK_LEVEL)) - {"logme", "knn"}
    assert all("regression targets" in why for why in result.skipped.values())
    assert result.target["task"] == "regression"
    y = bank.target.labels
    for i, m in enumerate(bank.models):
        # the engine pads to its width ladder (20 -> 32): LogME within float32 eigh rounding
        assert result.scores["logme"][i] == pytest.approx(
            float(logme(m.features, y, regression=True)), rel=1e-4
        )
        assert result.scores["knn"][i] == pytest.approx(
            float(knn(m.features, y, regression=True)), rel=1e-5, abs=1e-4
        )
    assert result.best("logme") == "strong" and result.best("knn") == "strong"


def test_cli_scores_a_regression_bank_and_refuses_other_scorers(tmp_path, capsys):
    path = tmp_path / "reg.msgpack"
    B.write_bank(path, regression_bank())
    code = score.main(["--bank", str(path), "--methods", "parc", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "parc cannot run on this bank: does not take regression targets" in err[0]
    code = score.main(["--bank", str(path), "--format", "json", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    assert doc["methods"] == ["logme", "knn"] and doc["target"]["task"] == "regression"
    assert "hscore" in doc["skipped"] and "skipped:" in captured.err
    code = score.main(["--bank", str(path), "--methods", "logme,knn", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "regression, 2 output(s), 3 models" in out.splitlines()[0]
