"""The ground truth's protocol without training: the learning-rate grid's extension rule,
preset overrides and the pool's disjointness, run dirs that grow targets, and the sanity
checks' arithmetic."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("flax")

from parc_jax.groundtruth import pipeline, report  # noqa: E402
from parc_jax.groundtruth.data import Dataset, Split, concat_datasets  # noqa: E402
from parc_jax.groundtruth.presets import get_preset, with_overrides  # noqa: E402
from parc_jax.groundtruth.train import (  # noqa: E402
    class_weights,
    majority_rate,
    mean_class_accuracy,
    next_learning_rate,
)

BASE = (0.01, 0.03, 0.1)


def _next(vals, status=None, extend=2):
    status = status or {r: "ok" for r in vals}
    return next_learning_rate(vals, status, base=BASE, extend=extend)


UP, DOWN = 0.1 / 0.03, 0.03 / 0.01  # spaced like the grid's outermost pairs


def test_grid_extends_up_while_best_is_largest():
    assert _next({0.01: 50, 0.03: 60, 0.1: 70}) == pytest.approx(0.1 * UP, rel=1e-3)
    # one extension done and still best at the top: one more, then the cap
    r1, r2 = 0.1 * UP, 0.1 * UP * UP
    assert _next({0.01: 50, 0.03: 60, 0.1: 70, r1: 80}) == pytest.approx(r2, rel=1e-3)
    assert _next({0.01: 50, 0.03: 60, 0.1: 70, r1: 80, r2: 90}) is None


def test_grid_extends_down_while_best_is_smallest_or_all_failed():
    assert _next({0.01: 70, 0.03: 60, 0.1: 50}) == pytest.approx(0.01 / DOWN, rel=1e-3)
    failed = {0.01: "collapsed", 0.03: "collapsed", 0.1: "diverged"}
    assert _next({0.01: 10, 0.03: 10, 0.1: 10}, failed) == pytest.approx(0.01 / DOWN, rel=1e-3)
    assert _next({0.01: 10, 0.03: 10, 0.1: 10}, failed, extend=0) is None


def test_grid_stops_when_best_is_interior_and_skips_failed_rates():
    assert _next({0.01: 50, 0.03: 70, 0.1: 60}) is None
    # the top rate looks best but collapsed: the best that trained is interior
    status = {0.01: "ok", 0.03: "ok", 0.1: "collapsed"}
    assert _next({0.01: 50, 0.03: 70, 0.1: 90}, status) is None
    # ties go to the smaller rate: best is the smallest, so extend down
    assert _next({0.01: 70, 0.03: 70, 0.1: 60}) == pytest.approx(0.01 / DOWN, rel=1e-3)


def test_majority_rate():
    assert majority_rate(np.array([0, 0, 0, 1])) == 75.0


def test_class_weights_make_every_class_weigh_the_same():
    labels = np.array([0] * 6 + [1] * 2 + [3] * 4)  # class 2 absent
    w = class_weights(labels, 5, balanced=True)
    np.testing.assert_allclose(w, [12 / 18, 12 / 6, 0.0, 12 / 12, 0.0], rtol=1e-6)
    per_class = np.bincount(labels, minlength=5) * w
    np.testing.assert_allclose(per_class[[0, 1, 3]], 4.0, rtol=1e-6)  # n / K each
    np.testing.assert_allclose(w[labels].mean(), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(class_weights(np.repeat([0, 1, 2], 3), 4, balanced=True)[:3], 1)
    np.testing.assert_array_equal(class_weights(labels, 5, balanced=False), np.ones(5))


def test_mean_class_accuracy_scores_a_constant_predictor_at_one_over_k():
    labels = np.array([1] * 88 + [0] * 12)
    assert mean_class_accuracy(np.ones(100, int), labels) == 50.0  # plain accuracy: 88
    pred = labels.copy()
    pred[:8] = 0  # 8 of class 1 wrong
    assert mean_class_accuracy(pred, labels) == pytest.approx(100 * (80 / 88 + 1) / 2)
    balanced = np.repeat([0, 1, 2], 4)
    pred = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 0, 0])
    assert mean_class_accuracy(pred, balanced) == pytest.approx(100 * np.mean(pred == balanced))


def test_pool_must_be_disjoint_from_targets():
    mini = get_preset("mini")
    assert set(mini.pool).isdisjoint(mini.targets)
    with pytest.raises(ValueError, match="disjoint"):
        dataclasses.replace(mini, pool=("mnist", "usps"))


def test_overrides_from_flags_and_json(tmp_path):
    tiny = get_preset("tiny")
    out = with_overrides(tiny, targets=["orl", "usps"], flip_invariant=["usps"])
    assert out.targets == ("orl", "usps") and out.flips("usps") and out.flips("coil20")
    assert not tiny.flips("usps")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"targets": ["orl"], "finetune": {"epochs": 2},
                               "finetune_lrs": [0.1, 0.3]}))  # fmt: skip
    out = with_overrides(tiny, config=cfg)
    assert out.targets == ("orl",) and out.finetune.epochs == 2
    assert out.finetune.batch_size == tiny.finetune.batch_size
    assert out.finetune_lrs == (0.1, 0.3)
    cfg.write_text(json.dumps({"targetz": ["orl"]}))
    with pytest.raises(ValueError, match="unknown preset fields"):
        with_overrides(tiny, config=cfg)
    with pytest.raises(ValueError, match="disjoint"):
        with_overrides(tiny, targets=["notmnist"])  # tiny's pool


def test_run_dir_grows_targets_but_refuses_another_recipe(tmp_path):
    tiny = get_preset("tiny")
    pipeline.check_run_dir(tiny, tmp_path)
    grown = with_overrides(tiny, targets=["orl"])
    pipeline.check_run_dir(grown, tmp_path)
    record = json.loads((tmp_path / "preset.json").read_text())
    assert record["recipe"]["targets"] == ["coil20", "orl"]
    with pytest.raises(ValueError, match="finetune_lrs"):
        pipeline.check_run_dir(dataclasses.replace(tiny, finetune_lrs=(0.1,)), tmp_path)


def test_concat_datasets_keeps_classes_apart():
    def ds(name, k, n):
        x = np.zeros((n, 8, 8, 3), np.float32)
        y = (np.arange(n) % k).astype(np.int32)
        one = np.ones(3, np.float32)
        return Dataset(name, k, 8, Split(x, y), Split(x[:k], y[:k]), Split(x[:k], y[:k]),
                       one, one, flip=False)  # fmt: skip

    pool = concat_datasets("a+b", [ds("a", 3, 12), ds("b", 4, 8)])
    assert pool.num_classes == 7 and len(pool.train) == 20
    assert set(pool.train.labels[12:]) == {3, 4, 5, 6}
    assert not pool.flip


def test_interior_check_reads_the_grid():
    rows = [{"lr": "0.01", "status": "ok"}, {"lr": "0.03", "status": "ok"},
            {"lr": "0.1", "status": "collapsed"}]  # fmt: skip
    assert report._interior(rows, 0.03) == (True, False)  # a neighbour collapsed
    assert report._interior(rows, 0.01) == (False, False)
    rows[2]["status"] = "ok"
    assert report._interior(rows, 0.03) == (True, True)
