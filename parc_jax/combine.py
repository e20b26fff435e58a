"""A learned predictor of fine-tuned accuracy, evaluated leave-one-target-out.

The PARC paper ends on depth being a crude proxy for a model's "capacity to change": ``+l``
adds ``l / l_max`` to a z-scored score with a weight fixed by hand. Here the weights are
learned instead: a ridge regression from per-model *inputs* - scores of several scorers and
facts about the model (depth, the source model's own test accuracy, log source-set size) -
to the fine-tuned accuracy, both z-scored within each (probe run, target), so that only the
ordering of models inside a target is fitted, which is what Mean PC measures.

Leave-one-target-out: the prediction for target ``t`` comes from a model fitted on the other
targets only, and its ridge strength is chosen by an inner leave-one-target-out on those same
other targets. The predictor never sees the target it predicts (not even through the choice
of its ridge strength).

Tables of a few hundred rows, solved in closed form in float64 NumPy at the reporting boundary.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["RIDGE_GRID", "design", "loto_predictions", "ridge_fit", "zscore"]

RIDGE_GRID = (0.1, 1.0, 10.0, 100.0)

Key = tuple[int, str, str, str]  # (run, target, architecture, source)


def zscore(v: np.ndarray) -> np.ndarray:
    """Within-group z-score (sample std); a constant column becomes zeros."""
    sd = v.std(ddof=1) if v.size > 1 else 0.0
    return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)


def design(
    rows: Sequence[Mapping[str, Any]],
    oracle: Mapping[tuple[str, str, str], float],
    *,
    methods: Sequence[str],
    facts: Mapping[tuple[str, str], Mapping[str, float]] | None = None,
    fact_names: Sequence[str] = (),
) -> tuple[list[Key], np.ndarray, np.ndarray]:
    """Inputs ``X [N, len(methods) + len(fact_names)]`` and z-scored accuracies ``y [N]``,
    one row per (run, target, model) that has every method's score and an oracle accuracy.

    Every column and ``y`` is z-scored within its (run, target). ``facts[(architecture,
    source)][name]`` gives model facts (for example ``depth``)."""
    if not methods and not fact_names:
        raise ValueError("design: give at least one method or fact")
    facts = facts or {}
    table: dict[Key, dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r["method"] in methods:
            key = (int(r["run"]), r["target"], r["architecture"], r["source"])
            table[key][r["method"]] = float(r["score"])
    by_group: dict[tuple[int, str], list[Key]] = defaultdict(list)
    for key, scores in sorted(table.items()):
        model = (key[2], key[3])
        if (model[0], model[1], key[1]) not in oracle or len(scores) < len(methods):
            continue
        if any(not math.isfinite(s) for s in scores.values()):
            continue
        missing = [f for f in fact_names if f not in facts.get(model, {})]
        if missing:
            raise ValueError(f"design: model {model} lacks facts {missing}")
        by_group[key[:2]].append(key)
    keys: list[Key] = []
    xs, ys = [], []
    for group in by_group.values():
        cols = [np.array([table[k][m] for k in group]) for m in methods]
        cols += [np.array([facts[(k[2], k[3])][f] for k in group], float) for f in fact_names]
        xs.append(np.stack([zscore(c) for c in cols], axis=1))
        ys.append(zscore(np.array([oracle[(k[2], k[3], k[1])] for k in group])))
        keys.extend(group)
    if not keys:
        raise ValueError("design: no (run, target, model) has every input and an accuracy")
    return keys, np.concatenate(xs), np.concatenate(ys)


def ridge_fit(x: np.ndarray, y: np.ndarray, *, ridge: float) -> np.ndarray:
    """Weights ``w [p]`` minimising ``|x w - y|^2 + ridge |w|^2`` (no intercept: the columns
    and ``y`` are z-scored within groups, so their means are zero)."""
    p = x.shape[1]
    return np.linalg.solve(x.T @ x + ridge * np.eye(p), x.T @ y)


def _group_pc(keys: Sequence[Key], pred: np.ndarray, y: np.ndarray) -> float:
    groups: dict[tuple[int, str], list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k[:2]].append(i)
    pcs = []
    for idx in groups.values():
        a, b = pred[idx], y[idx]
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            pcs.append(np.corrcoef(a, b)[0, 1])
    return float(np.mean(pcs)) if pcs else -math.inf


def _choose_ridge(keys: Sequence[Key], x: np.ndarray, y: np.ndarray, grid: Sequence[float]):
    targets = sorted({k[1] for k in keys})
    if len(targets) < 2:
        return grid[len(grid) // 2]
    best, best_pc = grid[0], -math.inf
    for ridge in grid:
        pred = np.empty_like(y)
        for t in targets:
            test = np.array([k[1] == t for k in keys])
            pred[test] = x[test] @ ridge_fit(x[~test], y[~test], ridge=ridge)
        pc = _group_pc(keys, pred, y)
        if pc > best_pc:
            best, best_pc = ridge, pc
    return best


def loto_predictions(
    keys: Sequence[Key],
    x: np.ndarray,
    y: np.ndarray,
    *,
    method: str = "learned",
    ridge_grid: Sequence[float] = RIDGE_GRID,
    train_targets: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Leave-one-target-out predictions as score rows (``method``), and per held-out target
    the chosen ridge strength and weights (to report what the predictor learned).

    Every target in ``keys`` is predicted by a fit on the other targets among
    ``train_targets`` (default: all), so targets outside ``train_targets`` (extra targets
    reported separately) are predicted from the training targets alone."""
    targets = sorted({k[1] for k in keys})
    pool = set(targets if train_targets is None else train_targets)
    if len(pool & set(targets)) < 2:
        raise ValueError("loto_predictions: needs at least two training targets")
    rows, fitted = [], {}
    for t in targets:
        test = np.array([k[1] == t for k in keys])
        train = np.array([k[1] != t and k[1] in pool for k in keys])
        train_keys = [k for k, use in zip(keys, train, strict=True) if use]
        ridge = _choose_ridge(train_keys, x[train], y[train], ridge_grid)
        w = ridge_fit(x[train], y[train], ridge=ridge)
        fitted[t] = {"ridge": ridge, "weights": w.tolist()}
        for k, p in zip([k for k in keys if k[1] == t], x[test] @ w, strict=True):
            rows.append(
                {
                    "run": k[0],
                    "target": k[1],
                    "architecture": k[2],
                    "source": k[3],
                    "method": method,
                    "score": float(p),
                }  # fmt: skip
            )
    return rows, fitted
