"""Selection-quality metrics (parc_jax.evaluation) against SciPy and hand-checked tables, and
the leave-one-target-out predictor (parc_jax.combine)."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.stats as st

from parc_jax import combine
from parc_jax import evaluation as ev
from parc_jax.api import ScoreResult

ROOT = Path(__file__).resolve().parents[1]


def _cases(rng, ties):
    for _ in range(6):
        m = int(rng.integers(3, 30))
        x = rng.normal(size=m)
        y = x * rng.uniform(-1, 1) + rng.normal(size=m)
        if ties:
            x, y = np.round(x), np.round(2 * y) / 2
        yield x, y


@pytest.mark.parametrize("ties", [False, True])
def test_correlations_match_scipy(ties):
    rng = np.random.default_rng(3 + ties)
    for x, y in _cases(rng, ties):
        assert ev.pearson(x, y) == pytest.approx(100 * st.pearsonr(x, y).statistic, rel=1e-12)
        assert ev.kendall_tau(x, y) == pytest.approx(100 * st.kendalltau(x, y).statistic, rel=1e-12)
        assert ev.weighted_tau(x, y) == pytest.approx(
            100 * st.weightedtau(x, y).statistic, rel=1e-12
        )


def test_correlations_undefined_and_perfect():
    for fn in (ev.pearson, ev.kendall_tau, ev.weighted_tau):
        assert math.isnan(fn([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
        assert math.isnan(fn([1.0, np.nan, 2.0], [1.0, 2.0, 3.0]))
        assert math.isnan(fn([1.0], [2.0]))
        assert fn([1.0, 2.0, 5.0], [10.0, 20.0, 30.0]) == pytest.approx(
            100.0 if fn is not ev.pearson else 100 * st.pearsonr([1, 2, 5], [10, 20, 30]).statistic
        )
        assert fn([3.0, 2.0, 1.0], [10.0, 20.0, 30.0]) == pytest.approx(-100.0)
    with pytest.raises(ValueError, match="one length"):
        ev.pearson([1.0, 2.0], [1.0, 2.0, 3.0])


def test_top_k_relative_hand_checked():
    # best-scored model reaches 50 of the best 80
    assert ev.top_k_relative([3, 2, 1], [50, 80, 70], 1) == pytest.approx(62.5)
    assert ev.top_k_relative([3, 2, 1], [50, 80, 70], 2) == pytest.approx(100.0)
    assert ev.top_k_relative([3, 2, 1], [50, 70, 80], 2) == pytest.approx(87.5)
    # a tie at the cut takes the worse model: tying everything cannot look good
    assert ev.top_k_relative([1, 1, 0], [80, 50, 60], 1) == pytest.approx(62.5)
    # NaN scores rank last
    assert ev.top_k_relative([np.nan, 1, 0], [80, 50, 60], 1) == pytest.approx(62.5)
    assert math.isnan(ev.top_k_relative([np.nan, np.nan], [80, 50], 1))
    with pytest.raises(ValueError, match="k must"):
        ev.top_k_relative([1, 2], [1, 2], 0)


# A hand-made benchmark: 2 targets x (2 architectures x 3 sources), 2 probe runs.
ARCHS = ("a", "b")
SOURCES = ("s1", "s2", "s3")
ACC = {
    "t1": {("a", "s1"): 60, ("a", "s2"): 70, ("a", "s3"): 65,
           ("b", "s1"): 80, ("b", "s2"): 75, ("b", "s3"): 90},
    "t2": {("a", "s1"): 40, ("a", "s2"): 42, ("a", "s3"): 50,
           ("b", "s1"): 41, ("b", "s2"): 55, ("b", "s3"): 45},
}  # fmt: skip
ORACLE = {(a, s, t): float(v) for t, by in ACC.items() for (a, s), v in by.items()}


def _rows(score_fn, method="m", runs=(0, 1)):
    return [
        {"run": r, "target": t, "architecture": a, "source": s, "method": method,
         "score": float(score_fn(r, t, a, s))}
        for r in runs for t in ACC for a in ARCHS for s in SOURCES
    ]  # fmt: skip


def test_mean_pc_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    noise = {(r, t, a, s): rng.normal() for r in (0, 1) for t in ACC for a in ARCHS
             for s in SOURCES}  # fmt: skip
    rows = _rows(lambda r, t, a, s: ACC[t][(a, s)] + 8 * noise[(r, t, a, s)])
    got = ev.evaluate(rows, ORACLE)["m"]
    per_run = []
    for r in (0, 1):
        pcs = []
        for t in ACC:
            keys = [(a, s) for a in ARCHS for s in SOURCES]
            x = [ACC[t][k] + 8 * noise[(r, t, *k)] for k in keys]
            pcs.append(100 * st.pearsonr(x, [ACC[t][k] for k in keys]).statistic)
        per_run.append(np.mean(pcs))
    assert got.per_run == pytest.approx(per_run, rel=1e-12)
    assert got.mean == pytest.approx(np.mean(per_run), rel=1e-12)
    assert got.std == pytest.approx(np.std(per_run), rel=1e-12)  # population std
    assert got.groups == 2 and got.undefined == 0
    # perfect scores give 100 +- 0 in every mode and metric
    perfect = _rows(lambda r, t, a, s: ACC[t][(a, s)])
    for mode in ev.MODES:
        for metric in ev.METRICS:
            res = ev.evaluate(perfect, ORACLE, mode=mode, metric=metric)["m"]
            assert res.mean == pytest.approx(100.0) and res.std == pytest.approx(0.0), (
                mode,
                metric,
            )


def test_modes_group_by_the_fixed_factors():
    # scores = source index: constant within each 'architecture' group -> undefined there
    idx = {s: i for i, s in enumerate(SOURCES)}
    rows = _rows(lambda r, t, a, s: idx[s])
    arch = ev.evaluate(rows, ORACLE, mode="architecture")["m"]
    assert arch.groups == 0 and arch.undefined == 6 and math.isnan(arch.mean)
    src = ev.evaluate(rows, ORACLE, mode="source")["m"]
    expected = np.mean([100 * st.pearsonr([0, 1, 2], [ACC[t][(a, s)] for s in SOURCES]).statistic
                        for t in ACC for a in ARCHS])  # fmt: skip
    assert src.mean == pytest.approx(expected, rel=1e-12) and src.groups == 4
    # mode "target" (paper Eq. 5): one model, its scores across targets
    rows_t = _rows(lambda r, t, a, s: {"t1": 1.0, "t2": 0.0}[t])
    tgt = ev.evaluate(rows_t, ORACLE, mode="target")["m"]
    signs = [np.sign(ACC["t1"][(a, s)] - ACC["t2"][(a, s)]) for a in ARCHS for s in SOURCES]
    assert tgt.mean == pytest.approx(100 * np.mean(signs)) and tgt.groups == 6


def test_evaluate_skips_unjoined_rows_and_rejects_bad_tables():
    rows = _rows(lambda r, t, a, s: ACC[t][(a, s)])
    extra = dict(rows[0], source="self")  # a self-transfer the oracle does not have
    with pytest.raises(ValueError, match="1 score row .*do not join"):
        ev.evaluate([*rows, extra], ORACLE)
    with pytest.raises(ValueError, match="duplicate"):
        ev.evaluate([*rows, rows[0]], ORACLE)
    with pytest.raises(ValueError, match="mode"):
        ev.evaluate(rows, ORACLE, mode="nope")
    with pytest.raises(ValueError, match="join"):
        ev.evaluate(rows, {("x", "y", "z"): 1.0})
    with pytest.warns(ev.UndefinedGroupsWarning, match="'deg'"):
        nan = ev.evaluate(_rows(lambda *k: np.nan, method="deg"), ORACLE)["deg"]
    assert math.isnan(nan.mean) and nan.groups == 0
    only_t1 = ev.evaluate(rows, ORACLE, targets=["t1"])["m"]
    assert only_t1.groups == 1


def test_score_rows_round_trip_and_oracle(tmp_path):
    rows = _rows(lambda r, t, a, s: ACC[t][(a, s)] / 7)
    ev.write_score_rows(tmp_path / "s.csv", rows)
    assert ev.read_score_rows(tmp_path / "s.csv") == rows  # repr() keeps every float bit
    lines = ["architecture,source,target,accuracy,lr"]
    lines += [f"{a},{s},{t},{v},0.1" for (a, s, t), v in ORACLE.items()]
    (tmp_path / "o.csv").write_text("\n".join(lines) + "\n")
    assert ev.read_oracle(tmp_path / "o.csv") == ORACLE
    (tmp_path / "bad.csv").write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(ValueError, match="duplicate"):
        ev.read_oracle(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="no such file"):
        ev.read_oracle(tmp_path / "missing.csv")


def test_rows_from_result():
    result = ScoreResult(
        target={"name": "t1"},
        methods=["parc", "parc+l"],
        models=[
            {"name": "a/s1", "architecture": "a", "source": "s1"},
            {"name": "b/s2", "architecture": "b", "source": "s2"},
        ],  # fmt: skip
        scores={"parc": np.array([1.0, 2.0]), "parc+l": np.array([0.5, -0.5])},
        provenance={},
    )
    rows = ev.rows_from_result(result, run=3, suffix="@none")
    assert rows[1] == {"run": 3, "target": "t1", "architecture": "a", "source": "s1",
                       "method": "parc+l@none", "score": 0.5}  # fmt: skip
    result.models[0]["source"] = None
    with pytest.raises(ValueError, match="no source"):
        ev.rows_from_result(result, run=0)


def _synthetic_benchmark(seed=0, targets=6, models=12, runs=2):
    """accuracy = u - v + noise per target; method 'u' sees u, 'v' sees v, fact 'w' = v."""
    rng = np.random.default_rng(seed)
    oracle, rows, facts = {}, [], {}
    for m in range(models):
        facts[("arch", f"s{m}")] = {"w": float(rng.normal())}
    for t in range(targets):
        u = rng.normal(size=models)
        v = np.array([facts[("arch", f"s{m}")]["w"] for m in range(models)])
        acc = 50 + 5 * (u - v) + rng.normal(scale=1.0, size=models)
        for m in range(models):
            oracle[("arch", f"s{m}", f"t{t}")] = float(acc[m])
        for r in range(runs):
            noisy = u + rng.normal(scale=0.2, size=models)
            for m in range(models):
                row = {"run": r, "target": f"t{t}", "architecture": "arch", "source": f"s{m}"}
                rows.append({**row, "method": "u", "score": float(noisy[m])})
    return rows, oracle, facts


def test_loto_predictor_learns_the_combination_and_never_sees_its_target():
    rows, oracle, facts = _synthetic_benchmark()
    keys, x, y = combine.design(rows, oracle, methods=["u"], facts=facts, fact_names=["w"])
    assert x.shape == (len(keys), 2) and len(keys) == 6 * 12 * 2
    # within every (run, target) the columns and y are z-scored
    group = [i for i, k in enumerate(keys) if k[:2] == (0, "t0")]
    assert x[group].mean(0) == pytest.approx([0, 0], abs=1e-12)
    assert x[group].std(0, ddof=1) == pytest.approx([1, 1])
    pred_rows, fitted = combine.loto_predictions(keys, x, y)
    for info in fitted.values():
        w_u, w_v = info["weights"]
        assert w_u > 0 > w_v  # the sign of the hidden combination is recovered
    learned = ev.evaluate(pred_rows, oracle)["learned"].mean
    alone = ev.evaluate(rows, oracle)["u"].mean
    assert learned > alone + 15
    # changing the held-out target's accuracies cannot change its predictions
    oracle2 = dict(oracle)
    for m in range(12):
        oracle2[("arch", f"s{m}", "t0")] = -oracle[("arch", f"s{m}", "t0")]
    keys2, x2, y2 = combine.design(rows, oracle2, methods=["u"], facts=facts, fact_names=["w"])
    rows2, _ = combine.loto_predictions(keys2, x2, y2)
    held = [r["score"] for r in pred_rows if r["target"] == "t0"]
    held2 = [r["score"] for r in rows2 if r["target"] == "t0"]
    assert held2 == pytest.approx(held, rel=1e-12)


def test_design_rejects_missing_inputs():
    rows, oracle, facts = _synthetic_benchmark(targets=2, models=4, runs=1)
    with pytest.raises(ValueError, match="lacks facts"):
        combine.design(rows, oracle, methods=["u"], facts={}, fact_names=["w"])
    with pytest.raises(ValueError, match="no \\(run"):
        combine.design(rows, oracle, methods=["absent"])
    keys, x, y = combine.design(rows, oracle, methods=["u"])
    with pytest.raises(ValueError, match="two training targets"):
        combine.loto_predictions(keys[:4], x[:4], y[:4])


def test_extra_targets_are_predicted_from_training_targets_only():
    rows, oracle, facts = _synthetic_benchmark(targets=4, models=8, runs=1)
    keys, x, y = combine.design(rows, oracle, methods=["u"], facts=facts, fact_names=["w"])
    _, fitted = combine.loto_predictions(keys, x, y, train_targets=["t0", "t1", "t2"])
    # t3 is never trained on: every fit equals the fit without t3's rows at all
    keep = np.array([k[1] != "t3" for k in keys])
    sub_keys = [k for k, use in zip(keys, keep) if use]
    _, fitted_sub = combine.loto_predictions(sub_keys, x[keep], y[keep])
    for t in ("t0", "t1", "t2"):
        assert fitted[t]["weights"] == pytest.approx(fitted_sub[t]["weights"], rel=1e-12)
    train = np.array([k[1] != "t3" for k in keys])
    w = combine.ridge_fit(x[train], y[train], ridge=fitted["t3"]["ridge"])
    assert fitted["t3"]["weights"] == pytest.approx(w.tolist(), rel=1e-12)


def test_find_banks_layouts_and_report(tmp_path):
    from _selection import find_banks, markdown_report

    (tmp_path / "a").mkdir()
    for r in (0, 1):
        (tmp_path / "a" / f"run{r}.msgpack").write_bytes(b"")
    (tmp_path / "b.msgpack").write_bytes(b"")
    found = find_banks(tmp_path)
    assert sorted(found) == ["a", "b"] and sorted(found["a"]) == [0, 1] and list(found["b"]) == [0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no probe banks"):
        find_banks(tmp_path / "empty")
    with pytest.raises(ValueError, match="no such directory"):
        find_banks(tmp_path / "missing")

    rows = _rows(lambda r, t, a, s: ACC[t][(a, s)]) + _rows(lambda *k: np.nan, method="hscore")
    md = markdown_report(rows, ORACLE, main_targets=["t1", "t2"], flags={"hscore": "d >= n-1"})
    line = next(x for x in md.splitlines() if x.startswith("| hscore |"))
    assert "degenerate" in line  # a flagged scorer is shown as such, not as a number
    line = next(x for x in md.splitlines() if x.startswith("| m |"))
    assert "100.0 ± 0.0" in line


def _three_models():
    # 3 models per target; t1 PC 100, t3 PC -40: mean 30 (the walkthrough's table)
    acc = {"t1": [10.0, 20.0, 30.0], "t3": [10.0, 20.0, 30.0]}
    score = {"t1": [1.0, 2.0, 3.0], "t3": [2.0, 1.0 + 0.6, 1.0]}
    oracle, rows = {}, []
    for t in acc:
        for i, s in enumerate(("s1", "s2", "s3")):
            oracle[("a", s, t)] = acc[t][i]
            rows.append({"run": 0, "target": t, "architecture": "a", "source": s,
                         "method": "m", "score": score[t][i]})  # fmt: skip
    return rows, oracle


def test_evaluate_rejects_rows_that_do_not_join_the_oracle():
    rows, oracle = _three_models()
    bad = [dict(r, architecture="A") if r["target"] == "t3" else r for r in rows]
    with pytest.raises(ValueError, match=r"3 score rows .*do not join the oracle.*'A'"):
        ev.evaluate(bad, oracle)
    # rows of methods not evaluated, or of targets left out, are not checked
    other = [dict(r, method="skipped") for r in bad]
    assert "m" in ev.evaluate([*rows, *other], oracle, methods=["m"])
    assert ev.evaluate(bad, oracle, targets=["t1"])["m"].mean == pytest.approx(100.0)


def test_evaluate_rejects_unknown_targets():
    rows, oracle = _three_models()
    with pytest.raises(ValueError, match="nope"):
        ev.evaluate(rows, oracle, targets=["nope"])
    with pytest.raises(ValueError, match="nope"):
        ev.evaluate(rows, oracle, targets=["t1", "nope"])


def test_evaluate_warns_when_a_target_is_left_out():
    rows, oracle = _three_models()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = ev.evaluate(rows, oracle)["m"]
    nan = [dict(r, score=math.nan) if (r["target"], r["source"]) == ("t3", "s2") else r
           for r in rows]  # fmt: skip
    with pytest.warns(ev.UndefinedGroupsWarning, match=r"'m'.*t3.*NaN score"):
        got = ev.evaluate(nan, oracle)["m"]
    assert got.mean == pytest.approx(100.0) and got.undefined == 1  # still left out of the mean
    flat = [dict(r, score=1.0) if r["target"] == "t3" else r for r in rows]
    with pytest.warns(ev.UndefinedGroupsWarning, match="constant scores"):
        ev.evaluate(flat, oracle)
    assert full.mean == pytest.approx(np.mean([100.0, ev.pearson([2.0, 1.6, 1.0], [10, 20, 30])]))


# --------------------------------------------------------------------------------------------
# partial correlation and bootstrap intervals


def test_partial_pearson_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    z = rng.normal(size=40)  # source accuracy
    y = 2.0 * z + rng.normal(size=40)  # fine-tuned accuracy
    x = z + 0.5 * (y - 2.0 * z) + rng.normal(size=40) * 0.3  # a score: z plus what y adds
    r = lambda a, b: np.corrcoef(a, b)[0, 1]  # noqa: E731
    want = (r(x, y) - r(x, z) * r(y, z)) / np.sqrt((1 - r(x, z) ** 2) * (1 - r(y, z) ** 2))
    assert ev.partial_pearson(x, y, z) == pytest.approx(100 * want, rel=1e-10)
    # a score that is source accuracy alone says nothing beyond it
    assert math.isnan(ev.partial_pearson(3 * z + 1, y, z))
    assert math.isnan(ev.partial_pearson(x, y, np.ones(40)))


def _targets(rng, strength, n_targets=6, n_models=25):
    out = {}
    for t in range(n_targets):
        acc = rng.normal(size=n_models)
        out[f"t{t}"] = (strength * acc + rng.normal(size=n_models), acc)
    return out


def test_bootstrap_interval_covers_the_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    groups = _targets(rng, strength=1.0)
    a = ev.bootstrap_interval(groups, resamples=300, seed=3)
    b = ev.bootstrap_interval(groups, resamples=300, seed=3)
    assert a == b and a.used == 300 and a.level == 0.95
    want = np.mean([ev.pearson(x, y) for x, y in groups.values()])
    assert a.estimate == pytest.approx(want)
    assert a.low < a.estimate < a.high and 20 < a.high - a.low < 60
    assert ev.bootstrap_interval(groups, resamples=300, seed=4) != a
    # a perfect scorer on every target: no spread at all
    perfect = {k: (y, y) for k, (_, y) in groups.items()}
    p = ev.bootstrap_interval(perfect, resamples=50)
    assert [p.estimate, p.low, p.high] == pytest.approx([100.0] * 3, abs=1e-9)
    with pytest.raises(ValueError, match="resamples"):
        ev.bootstrap_interval(groups, resamples=0)
    with pytest.raises(ValueError, match="level"):
        ev.bootstrap_interval(groups, level=1.0)


def test_paired_bootstrap_separates_a_better_scorer_and_not_itself():
    rng = np.random.default_rng(2)
    good = _targets(rng, strength=2.0)
    paired = {k: (x, rng.normal(size=x.size), y) for k, (x, y) in good.items()}  # vs noise
    d = ev.paired_bootstrap_interval(paired, resamples=300)
    assert d.excludes_zero() and d.low > 0
    same = {k: (x, x, y) for k, (x, y) in good.items()}
    s = ev.paired_bootstrap_interval(same, resamples=100)
    assert (s.estimate, s.low, s.high) == (0.0, 0.0, 0.0) and not s.excludes_zero()
    # pairing cancels what both share: the difference is tighter than either interval
    close = {k: (x, x + 0.3 * rng.normal(size=x.size), y) for k, (x, y) in good.items()}
    diff = ev.paired_bootstrap_interval(close, resamples=300)
    one = ev.bootstrap_interval({k: (x, y) for k, (x, _, y) in close.items()}, resamples=300)
    assert diff.high - diff.low < one.high - one.low


def test_bootstrap_table_estimates_equal_evaluate_and_partial_pearson():
    rows, oracle, facts = _synthetic_benchmark(targets=5, models=10, runs=2)
    rows += [dict(r, method="noise", score=float(np.sin(7 * i)))
             for i, r in enumerate(rows)]  # fmt: skip
    table = ev.bootstrap_table(rows, oracle, methods=["u", "noise"], resamples=200, seed=1)
    full = ev.evaluate(rows, oracle)
    for m in ("u", "noise"):
        assert table.estimate[m] == pytest.approx(full[m].mean, rel=1e-9)
        assert table.draws[m].shape == (200,)
    again = ev.bootstrap_table(rows, oracle, methods=["u", "noise"], resamples=200, seed=1)
    assert np.array_equal(again.draws["u"], table.draws["u"])  # seeded
    good, diff = table.interval("u"), table.difference("u", "noise")
    assert good.low > 0 and diff.low > 0 and diff.excludes_zero()
    assert diff.estimate == pytest.approx(table.estimate["u"] - table.estimate["noise"])
    assert table.difference("u", "u").high == 0.0  # same draws: no spread
    cov = {k: v["w"] for k, v in facts.items()}
    part = ev.bootstrap_table(rows, oracle, methods=["u"], covariate=cov, resamples=50)
    want = np.mean([
        np.mean([
            ev.partial_pearson(
                [r["score"] for r in rows if r["run"] == run and r["target"] == t
                 and r["method"] == "u"],
                [oracle[("arch", r["source"], t)] for r in rows if r["run"] == run
                 and r["target"] == t and r["method"] == "u"],
                [cov[("arch", r["source"])] for r in rows if r["run"] == run
                 and r["target"] == t and r["method"] == "u"],
            )
            for t in sorted({r["target"] for r in rows})
        ])
        for run in (0, 1)
    ])  # fmt: skip
    assert part.estimate["u"] == pytest.approx(want, rel=1e-9)
    # u is (part of) what accuracy is beyond w: partial PC exceeds plain PC
    assert part.estimate["u"] > table.estimate["u"]


def test_bootstrap_table_interval_matches_the_per_figure_bootstrap():
    rng = np.random.default_rng(1)
    groups = _targets(rng, strength=1.0)
    rows, oracle = [], {}
    for t, (x, y) in groups.items():
        for i, (s, a) in enumerate(zip(x, y, strict=True)):
            oracle[("a", f"s{i}", t)] = float(a)
            rows.append({"run": 0, "target": t, "architecture": "a", "source": f"s{i}",
                         "method": "m", "score": float(s)})  # fmt: skip
    one = ev.bootstrap_interval(groups, resamples=2000, seed=0)
    tab = ev.bootstrap_table(rows, oracle, methods=["m"], resamples=2000, seed=0).interval("m")
    assert tab.estimate == pytest.approx(one.estimate)
    # different draws, same distribution: the bounds agree to a few PC points
    assert abs(tab.low - one.low) < 5 and abs(tab.high - one.high) < 5


def test_baselines_and_training_free_combination():
    from _selection import baseline_rows, zmean_rows

    rows, oracle, facts = _synthetic_benchmark(targets=3, models=6, runs=1)
    facts = {k: {"source_accuracy": v["w"], "depth": 3.0} for k, v in facts.items()}
    base = baseline_rows(rows, facts)
    assert {r["method"] for r in base} == {"source_accuracy", "depth"}
    assert len(base) == 2 * 3 * 6
    rows2 = rows + [dict(r, method="v", score=2 * r["score"] + 1) for r in rows]
    z = zmean_rows(rows2, methods=["u", "v"])
    assert len(z) == 3 * 6
    # u and 2u+1 have the same z-scores: their mean is u's z-score
    t0 = [r for r in rows if r["target"] == "t0"]
    u = np.array([r["score"] for r in t0])
    got = {r["source"]: r["score"] for r in z if r["target"] == "t0"}
    want = (u - u.mean()) / u.std(ddof=1)
    assert [got[r["source"]] for r in t0] == pytest.approx(want.tolist())


def _record(**mean_pc):
    def iv(est, low, high):
        return {"estimate": est, "low": low, "high": high}

    return {"methods": {m: {"mean_pc": iv(*v), "vs_source_accuracy": iv(0, -1, 1)}
                        for m, v in mean_pc.items()}}  # fmt: skip


def test_recommended_default_sort_follows_the_stated_rule():
    from _selection import recommend

    # the largest Mean PC among single scorers whose interval lies above zero; +l and
    # baselines are not candidates, nor a larger estimate whose interval crosses zero
    rec = _record(parc=(30, -5, 60), gbc=(20, 2, 40), leep=(15, 1, 30),
                  **{"gbc+l": (25, 5, 45), "source_accuracy": (40, 20, 60)})  # fmt: skip
    assert recommend(rec)["sort_by"] == "gbc" and not recommend(rec)["learned_ships"]
    # zmean takes over only when its paired interval against that scorer lies above zero
    rec["zmean_vs"] = {"gbc": {"estimate": 5, "low": -1, "high": 9}}
    assert recommend(rec)["sort_by"] == "gbc"
    rec["zmean_vs"] = {"gbc": {"estimate": 5, "low": 1, "high": 9}}
    assert recommend(rec)["sort_by"] == "zmean"
    # learned ships (and sorts) only when it beats source accuracy alone
    rec["methods"]["learned"] = {"vs_source_accuracy": {"estimate": 8, "low": 0.3, "high": 15}}
    assert recommend(rec) == dict(recommend(rec), sort_by="learned", learned_ships=True)
    assert recommend(_record(parc=(10, -5, 20), knn=(5, -1, 9)))["sort_by"] == "parc"


def test_cli_default_sort_is_the_committed_evidence():
    import json

    from parc_jax.defaults import SORT_BY

    record = json.loads((ROOT / "benchmarks/results/selection_intervals.json").read_text())
    assert record["all"]["recommended"]["sort_by"] == SORT_BY
