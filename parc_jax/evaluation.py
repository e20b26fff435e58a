"""Selection quality: how well a scorer's scores predict fine-tuned accuracy.

The PARC paper's protocol (Sec. 3.1, Tab. 2; ``docs/metrics.md``, last section): for each target,
correlate the scores of the source models with their fine-tuned test accuracies (Pearson, x100),
average over targets, and report mean +- std (population) over independently sampled probe
sets. The ablation modes correlate over one factor at a time, and the field's ranking metrics
(Kendall's tau, weighted tau, top-k relative accuracy) are offered beside it.

Inputs are plain tables: score rows ``{run, target, architecture, source, method, score}``
(:func:`rows_from_result` turns a :class:`parc_jax.ScoreResult` into such rows) and the
oracle, ``{(architecture, source, target): accuracy}`` (:func:`read_oracle`). A model is the
pair (architecture, source), the join key of banks and oracle.

These functions run on tables of tens of numbers, in float64 NumPy at the reporting boundary:
nothing here is traced or batched, and the results are compared against SciPy in the tests.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "METRICS",
    "MODES",
    "BootstrapTable",
    "Interval",
    "Summary",
    "UndefinedGroupsWarning",
    "bootstrap_interval",
    "bootstrap_table",
    "evaluate",
    "group_values",
    "kendall_tau",
    "paired_bootstrap_interval",
    "partial_pearson",
    "pearson",
    "read_oracle",
    "read_score_rows",
    "rows_from_result",
    "top_k_relative",
    "weighted_tau",
    "write_score_rows",
]

SCORE_COLUMNS = ("run", "target", "architecture", "source", "method", "score")

# mode -> (the key that fixes a group, the factor that varies inside it)
MODES: dict[str, tuple[tuple[str, ...], str]] = {
    "models": (("target",), "model"),  # paper Eq. 2: every source model of one target
    "architecture": (("target", "source"), "architecture"),  # same source data, vary arch
    "source": (("target", "architecture"), "source"),  # same architecture, vary source data
    "target": (("architecture", "source"), "target"),  # paper Eq. 5: one model, vary target
}


# ---------------------------------------------------------------------------------------------
# Correlations and ranking metrics on one group (x: scores, y: fine-tuned accuracies)


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(
            f"scores and accuracies must be 1-D of one length, got {x.shape}, {y.shape}"
        )
    return x, y


def _undefined(x: np.ndarray, y: np.ndarray) -> bool:
    """A correlation needs two finite points and variation on both sides."""
    return (
        x.size < 2
        or not (np.isfinite(x).all() and np.isfinite(y).all())
        or np.ptp(x) == 0
        or np.ptp(y) == 0
    )


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of two 1-D sequences, x100. NaN when undefined (fewer than two
    points, a non-finite value, or a constant side)."""
    x, y = _pair(x, y)
    if _undefined(x, y):
        return math.nan
    xc = x - x.mean()
    yc = y - y.mean()
    # normalise first: the product of two sums of squares can under/overflow
    r = float(np.dot(xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)))
    return 100.0 * max(-1.0, min(1.0, r))


def partial_pearson(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> float:
    """Pearson correlation of ``x`` and ``y`` once the linear effect of ``z`` is removed from
    both (the residuals of least squares on ``[1, z]``), x100; NaN when undefined. With ``z``
    a source model's own accuracy, this is how much a score says about fine-tuned accuracy
    beyond how good the source model is."""
    x, y = _pair(x, y)
    z = np.asarray(z, np.float64)
    if z.shape != x.shape or not np.isfinite(z).all() or _undefined(x, y) or np.ptp(z) == 0:
        return math.nan
    design = np.stack([np.ones_like(z), z], axis=1)

    def residual(v: np.ndarray) -> np.ndarray:
        coef, *_ = np.linalg.lstsq(design, v, rcond=None)
        return v - design @ coef

    rx, ry = residual(x), residual(y)
    if np.allclose(rx, 0.0, atol=1e-12 * max(1.0, np.abs(x).max())) or np.allclose(
        ry, 0.0, atol=1e-12 * max(1.0, np.abs(y).max())
    ):
        return math.nan  # a side is a linear function of z: nothing is left to correlate
    return pearson(rx, ry)


@dataclasses.dataclass(frozen=True)
class Interval:
    """A figure with its percentile bootstrap interval: ``estimate`` (on the data as they
    are), ``low``..``high`` at ``level``, from ``resamples`` draws (``used``: the draws in which
    the figure was defined)."""

    estimate: float
    low: float
    high: float
    level: float
    resamples: int
    used: int

    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def _draws(groups: Sequence, resamples: int, seed: int):
    """Two-level draws: per resample, the groups with replacement, and within each drawn
    group its members (models) with replacement. Seeded, so a table is reproducible."""
    rng = np.random.default_rng(seed)
    sizes = [len(g[-1]) for g in groups]
    for _ in range(resamples):
        picked = rng.integers(len(groups), size=len(groups))
        yield [(int(g), rng.integers(sizes[g], size=sizes[g])) for g in picked]


def _mean_over_groups(values: Iterable[float]) -> float:
    v = np.array(list(values), np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def _interval(estimate: float, draws: list[float], level: float, resamples: int) -> Interval:
    finite = np.array([d for d in draws if math.isfinite(d)], np.float64)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = (np.percentile(finite, [tail, 100.0 - tail]) if finite.size
                 else (math.nan, math.nan))  # fmt: skip
    return Interval(estimate, float(low), float(high), level, resamples, int(finite.size))


def _check_bootstrap(resamples: int, level: float) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples: expected a positive int, got {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")


def bootstrap_interval(
    groups: Mapping[Any, tuple[Sequence[float], Sequence[float]]],
    *,
    metric: Callable[[Sequence[float], Sequence[float]], float] = pearson,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """The mean over groups (targets) of ``metric(scores, accuracies)`` within each group
    (Mean PC with the default metric), with a two-level percentile bootstrap interval: each
    draw resamples the groups and, within each, the models (both with replacement), so the
    interval covers the sampling of models and of targets. Groups where the metric is
    undefined are left out of a mean, as in :func:`evaluate`."""
    _check_bootstrap(resamples, level)
    items = [tuple(np.asarray(v, np.float64) for v in g) for g in groups.values()]
    if not items:
        raise ValueError("groups: empty")
    estimate = _mean_over_groups(metric(x, y) for x, y in items)
    draws = [
        _mean_over_groups(metric(items[g][0][i], items[g][1][i]) for g, i in draw)
        for draw in _draws(items, resamples, seed)
    ]
    return _interval(estimate, draws, level, resamples)


def paired_bootstrap_interval(
    groups: Mapping[Any, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    *,
    metric: Callable[[Sequence[float], Sequence[float]], float] = pearson,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """The difference of two scorers' mean metric, ``a - b``, with a paired two-level
    bootstrap interval: ``groups[target] = (scores_a, scores_b, accuracies)`` on the same
    models, and every draw uses the same targets and models for both, so what they share
    (which targets are hard, which models are good) cancels. A difference is supported
    when the interval excludes zero (:meth:`Interval.excludes_zero`)."""
    _check_bootstrap(resamples, level)
    items = [tuple(np.asarray(v, np.float64) for v in g) for g in groups.values()]
    if not items:
        raise ValueError("groups: empty")
    for a, b, y in items:  # one length per target, on both sides
        _pair(a, y)
        _pair(b, y)

    def diff(pick: Iterable[tuple[int, np.ndarray | slice]]) -> float:
        pick = list(pick)
        mean_a = _mean_over_groups(metric(items[g][0][i], items[g][2][i]) for g, i in pick)
        mean_b = _mean_over_groups(metric(items[g][1][i], items[g][2][i]) for g, i in pick)
        return mean_a - mean_b

    estimate = diff((g, slice(None)) for g in range(len(items)))
    draws = [diff(draw) for draw in _draws(items, resamples, seed)]
    return _interval(estimate, draws, level, resamples)


def _sign_matrix(v: np.ndarray) -> np.ndarray:
    return np.sign(v[:, None] - v[None, :])


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties corrected on both sides, as ``scipy.stats.kendalltau``), x100.

    tau_b = sum_{i<j} sgn(x_i-x_j) sgn(y_i-y_j) / sqrt(P_x P_y), P_x the pairs not tied in x.
    NaN when undefined."""
    x, y = _pair(x, y)
    if _undefined(x, y):
        return math.nan
    sx, sy = _sign_matrix(x), _sign_matrix(y)
    iu = np.triu_indices(x.size, 1)
    num = float(np.sum(sx[iu] * sy[iu]))
    den = math.sqrt(float(np.sum(sx[iu] != 0)) * float(np.sum(sy[iu] != 0)))
    return 100.0 * num / den


def _weighted_tau_ranked(x: np.ndarray, y: np.ndarray) -> float:
    # importance rank: position in decreasing lexicographic order of (x, y); 0 = most important
    order = np.lexsort((y, x))[::-1]
    rank = np.empty(x.size, np.int64)
    rank[order] = np.arange(x.size)
    w = 1.0 / (rank + 1.0)  # hyperbolic weigher
    pair_w = w[:, None] + w[None, :]  # additive pair weight
    iu = np.triu_indices(x.size, 1)
    sx, sy, pw = _sign_matrix(x)[iu], _sign_matrix(y)[iu], pair_w[iu]
    num = float(np.sum(pw * sx * sy))
    den = math.sqrt(float(np.sum(pw * (sx != 0))) * float(np.sum(pw * (sy != 0))))
    return num / den


def weighted_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Vigna's weighted tau with the hyperbolic weigher ``1/(r+1)`` and additive pair weights,
    the importance ranks taken from both orders and averaged (the defaults of
    ``scipy.stats.weightedtau``): agreement at the top counts more than further down. x100."""
    x, y = _pair(x, y)
    if _undefined(x, y):
        return math.nan
    return 100.0 * 0.5 * (_weighted_tau_ranked(x, y) + _weighted_tau_ranked(y, x))


def top_k_relative(scores: Sequence[float], accuracy: Sequence[float], k: int) -> float:
    """Best fine-tuned accuracy among the ``k`` best-scored models over the best overall, in %.

    Ties in the scores at the cut are broken pessimistically (the lower accuracy is taken),
    so a scorer that ties everything cannot look good; NaN scores rank last."""
    x, y = _pair(scores, accuracy)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if x.size == 0 or not np.isfinite(y).all() or y.max() <= 0:
        return math.nan
    if not np.isfinite(x).any():
        return math.nan
    s = np.where(np.isfinite(x), x, -np.inf)
    order = np.lexsort((y, -s))  # by score descending, then accuracy ascending
    return 100.0 * float(y[order[:k]].max()) / float(y.max())


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "pearson": pearson,
    "kendall": kendall_tau,
    "weighted_tau": weighted_tau,
    "top1": lambda x, y: top_k_relative(x, y, 1),
    "top3": lambda x, y: top_k_relative(x, y, 3),
}


# ---------------------------------------------------------------------------------------------
# Tables


def read_oracle(path: str | os.PathLike) -> dict[tuple[str, str, str], float]:
    """The oracle CSV (``architecture, source, target, accuracy, ...``) as
    ``{(architecture, source, target): accuracy}``."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"oracle: no such file {p}")
    with p.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"architecture", "source", "target", "accuracy"} - set(rows[0] if rows else {})
    if not rows or missing:
        raise ValueError(f"oracle {p}: empty or missing columns {sorted(missing)}")
    out: dict[tuple[str, str, str], float] = {}
    for i, r in enumerate(rows, start=2):
        key = (r["architecture"], r["source"], r["target"])
        if key in out:
            raise ValueError(f"oracle {p} line {i}: duplicate transfer {key}")
        acc = float(r["accuracy"])
        if not math.isfinite(acc):
            raise ValueError(f"oracle {p} line {i}: accuracy {r['accuracy']!r} is not finite")
        out[key] = acc
    return out


def rows_from_result(result: Any, *, run: int, suffix: str = "") -> list[dict[str, Any]]:
    """Score rows of one bank's :class:`parc_jax.ScoreResult` (probe run ``run``); a model's
    (architecture, source) comes from the bank. ``suffix`` is appended to method names (for
    example ``"@none"`` for scores without feature reduction)."""
    target = result.target["name"]
    rows = []
    for i, model in enumerate(result.models):
        if model.get("source") is None:
            raise ValueError(f"model {model['name']!r} has no source: cannot join the oracle")
        for method in result.methods:
            rows.append(
                {
                    "run": int(run),
                    "target": target,
                    "architecture": model["architecture"],
                    "source": model["source"],
                    "method": method + suffix,
                    "score": float(result.scores[method][i]),
                }
            )
    return rows


def write_score_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write score rows as CSV, atomically (a temporary file renamed into place)."""
    import io

    from parc_jax.atomic import write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SCORE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: (repr(r[c]) if c == "score" else r[c]) for c in SCORE_COLUMNS})
    write_text(path, buf.getvalue(), parents=True)


def read_score_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Score rows written by :func:`write_score_rows`."""
    with Path(path).open(newline="") as f:
        return [{**r, "run": int(r["run"]), "score": float(r["score"])} for r in csv.DictReader(f)]


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclasses.dataclass(frozen=True)
class Summary:
    """One method's selection quality: ``mean`` and ``std`` (population) over probe runs of
    the per-run average over groups; ``per_run`` those averages; ``groups`` the fewest groups
    with a defined value in any run and ``undefined`` the most without (constant or NaN
    scores: a degenerate scorer has ``groups == 0`` and ``mean`` NaN); ``per_group`` each
    group's values, one per run."""

    mean: float
    std: float
    per_run: tuple[float, ...]
    groups: int
    undefined: int
    per_group: Mapping[tuple[str, ...], tuple[float, ...]]


class UndefinedGroupsWarning(UserWarning):
    """:func:`evaluate` left groups (targets, in the default mode) out of a method's mean
    because the metric is undefined there (a NaN score, constant scores or accuracies)."""


def _why_undefined(pairs: np.ndarray) -> str:
    x, y = pairs[:, 0], pairs[:, 1]
    if x.size < 2:
        return "fewer than 2 models"
    if not np.isfinite(x).all():
        return "NaN score" if np.isnan(x).any() else "non-finite score"
    if np.ptp(x) == 0:
        return "constant scores"
    if np.ptp(y) == 0:
        return "constant accuracies"
    return "undefined metric"


def _check_rows(rows: Sequence[Mapping[str, Any]]) -> None:
    seen = set()
    for r in rows:
        missing = set(SCORE_COLUMNS) - set(r)
        if missing:
            raise ValueError(f"score row {dict(r)} lacks {sorted(missing)}")
        key = (r["run"], r["target"], r["architecture"], r["source"], r["method"])
        if key in seen:
            raise ValueError(f"duplicate score row for {key}")
        seen.add(key)


def group_values(
    rows: Sequence[Mapping[str, Any]],
    oracle: Mapping[tuple[str, str, str], float],
    *,
    method: str,
    metric: str = "pearson",
    mode: str = "models",
) -> dict[int, dict[tuple[str, ...], float]]:
    """``{run: {group key: metric value}}`` for one method. Rows whose transfer is missing
    from the oracle (self-transfers, for example) are left out here; :func:`evaluate`
    refuses them."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    fn = METRICS[metric]
    return {
        run: {key: fn(*pairs.T) for key, pairs in by_group.items()}
        for run, by_group in _group_pairs(rows, oracle, method=method, mode=mode).items()
    }


def _group_pairs(
    rows: Sequence[Mapping[str, Any]],
    oracle: Mapping[tuple[str, str, str], float],
    *,
    method: str,
    mode: str,
) -> dict[int, dict[tuple[str, ...], np.ndarray]]:
    """``{run: {group key: (score, accuracy) pairs [m, 2]}}``, runs and groups sorted."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    fixed, _ = MODES[mode]
    groups: dict[int, dict[tuple[str, ...], list[tuple[float, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in rows:
        if r["method"] != method:
            continue
        acc = oracle.get((r["architecture"], r["source"], r["target"]))
        if acc is None:
            continue
        groups[int(r["run"])][tuple(r[k] for k in fixed)].append((float(r["score"]), acc))
    if not groups:
        raise ValueError(f"no score rows of method {method!r} join the oracle")
    return {
        run: {key: np.asarray(pairs) for key, pairs in sorted(by_group.items())}
        for run, by_group in sorted(groups.items())
    }


def _unjoined(
    rows: Sequence[Mapping[str, Any]], oracle: Mapping[tuple[str, str, str], float]
) -> None:
    bad = [r for r in rows if (r["architecture"], r["source"], r["target"]) not in oracle]
    if bad:
        shown = ", ".join(
            f"(run {r['run']}, {r['method']!r}: {r['architecture']!r}, {r['source']!r}, "
            f"{r['target']!r})"
            for r in bad[:3]
        )
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ValueError(
            f"{len(bad)} score row{'s' if len(bad) != 1 else ''} of {len(rows)} do not join the "
            f"oracle (no fine-tuned accuracy for (architecture, source, target)): {shown}{more}"
        )


def _warn_undefined(
    method: str,
    mode: str,
    metric: str,
    pairs: Mapping[int, Mapping[tuple[str, ...], np.ndarray]],
    values: Mapping[int, Mapping[tuple[str, ...], float]],
) -> None:
    fixed, _ = MODES[mode]
    left: dict[tuple[str, ...], tuple[list[int], str]] = {}
    for run, by_group in values.items():
        for key, v in by_group.items():
            if not math.isfinite(v):
                runs, _ = left.setdefault(key, ([], _why_undefined(pairs[run][key])))
                runs.append(run)
    if not left:
        return
    n_groups = len({k for by_group in values.values() for k in by_group})
    names = [
        ", ".join(f"{f}={k!r}" for f, k in zip(fixed, key, strict=True))
        + f" ({why}; run{'s' if len(runs) > 1 else ''} {', '.join(map(str, runs))})"
        for key, (runs, why) in left.items()
    ]
    shown = "; ".join(names[:5]) + (f"; and {len(names) - 5} more" if len(names) > 5 else "")
    warnings.warn(
        f"evaluate: method {method!r}, {metric} ({mode} mode): {len(left)} of {n_groups} "
        f"groups left out of the mean, the metric being undefined there: {shown}",
        UndefinedGroupsWarning,
        stacklevel=3,
    )


def evaluate(
    rows: Sequence[Mapping[str, Any]],
    oracle: Mapping[tuple[str, str, str], float],
    *,
    methods: Sequence[str] | None = None,
    metric: str = "pearson",
    mode: str = "models",
    targets: Sequence[str] | None = None,
) -> dict[str, Summary]:
    """Selection quality of every method in ``rows`` (or ``methods``) as a :class:`Summary`.

    With ``metric="pearson"`` and ``mode="models"`` this is the paper's Mean PC (Eq. 2): per
    target, Pearson correlation over all source models x100, averaged over targets; mean +-
    population std over the probe runs. ``targets`` restricts the targets (for example the six
    main ones, with the extra targets reported separately).

    Every score row of the evaluated methods and targets must join the oracle: rows without a
    fine-tuned accuracy (a misspelt architecture, a self-transfer, an incomplete oracle) raise
    ``ValueError``, naming a few and how many; so do ``targets`` with no score rows. A group
    (a target, in the default mode) whose metric is undefined in a run - a NaN score, constant
    scores or constant accuracies - is left out of that run's average, as the benchmark tables
    do, and counted in ``Summary.undefined``; an :class:`UndefinedGroupsWarning` names the
    method, the groups left out and why. All groups undefined gives ``mean`` NaN."""
    rows = list(rows)
    _check_rows(rows)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    if targets is not None:
        if isinstance(targets, str):
            raise ValueError(f"targets must be a sequence of target names, got {targets!r}")
        keep = set(targets)
        unknown = sorted(keep - {r["target"] for r in rows})
        if not keep or unknown:
            raise ValueError(
                f"targets: {unknown or 'empty'} have no score rows "
                f"(targets present: {sorted({r['target'] for r in rows})})"
            )
        rows = [r for r in rows if r["target"] in keep]
    if methods is None:
        methods = list(dict.fromkeys(r["method"] for r in rows))
    wanted = set(methods)
    _unjoined([r for r in rows if r["method"] in wanted], oracle)
    fn = METRICS[metric]
    out = {}
    for method in methods:
        pairs = _group_pairs(rows, oracle, method=method, mode=mode)
        per = {
            run: {key: fn(*p.T) for key, p in by_group.items()} for run, by_group in pairs.items()
        }
        _warn_undefined(method, mode, metric, pairs, per)
        run_means, defined, undefined = [], [], []
        per_group: dict[tuple[str, ...], list[float]] = defaultdict(list)
        for by_group in per.values():
            vals = np.array(list(by_group.values()), np.float64)
            ok = np.isfinite(vals)
            defined.append(int(ok.sum()))
            undefined.append(int((~ok).sum()))
            run_means.append(float(vals[ok].mean()) if ok.any() else math.nan)
            for key, v in by_group.items():
                per_group[key].append(v)
        arr = np.array(run_means)
        out[method] = Summary(
            mean=float(arr.mean()),
            std=float(arr.std()),
            per_run=tuple(run_means),
            groups=min(defined),
            undefined=max(undefined),
            per_group={k: tuple(v) for k, v in per_group.items()},
        )
    return out


# ---------------------------------------------------------------------------------------------
# Bootstrap tables: every method on the same draws (vectorised over draws)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson x100 along the last axis of broadcastable ``x`` and ``y``; NaN where a side
    is constant."""
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)
    den = np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))
    num = (xc * yc).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 100.0 * num / den
    scale = np.sqrt((xc * xc).sum(-1)) / np.maximum(np.abs(x).max(-1), 1e-300)
    return np.where((den > 0) & (scale > 1e-12), out, np.nan)


def _residual_rows(v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``v`` minus its least-squares fit on ``[1, z]`` along the last axis."""
    zc = z - z.mean(-1, keepdims=True)
    vc = v - v.mean(-1, keepdims=True)
    zz = (zc * zc).sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = np.where(zz > 0, (vc * zc).sum(-1, keepdims=True) / zz, np.nan)
    return vc - beta * zc


def _metric_rows(x: np.ndarray, y: np.ndarray, z: np.ndarray | None) -> np.ndarray:
    if z is None:
        return _pearson_rows(x, y)
    return _pearson_rows(_residual_rows(x, z), _residual_rows(y, z))


@dataclasses.dataclass(frozen=True)
class BootstrapTable:
    """Figures of several methods from ONE set of bootstrap draws, so that any two can be
    compared pairwise (:meth:`difference`). ``estimate[m]``: the figure on the data as they
    are; ``draws[m]``: ``[resamples]`` values, NaN where undefined."""

    estimate: dict[str, float]
    draws: dict[str, np.ndarray]
    level: float
    resamples: int

    def interval(self, method: str) -> Interval:
        return _interval(
            self.estimate[method], list(self.draws[method]), self.level, self.resamples
        )

    def difference(self, a: str, b: str) -> Interval:
        """``a - b`` with its paired interval (both figures on the same draws)."""
        return _interval(
            self.estimate[a] - self.estimate[b],
            list(self.draws[a] - self.draws[b]),
            self.level,
            self.resamples,
        )


def bootstrap_table(
    rows: Sequence[Mapping[str, Any]],
    oracle: Mapping[tuple[str, str, str], float],
    *,
    methods: Sequence[str],
    targets: Sequence[str] | None = None,
    mode: str = "models",
    covariate: Mapping[tuple[str, str], float] | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapTable:
    """Mean PC (or, with ``covariate``, the mean partial correlation given it) of every method,
    with seeded two-level percentile bootstrap draws shared by all methods.

    A group is a target in the default mode (every group of ``mode`` otherwise, see
    :data:`MODES`). The figure: per probe run, the metric within each group, averaged over
    groups (undefined groups left out), then averaged over runs - :func:`evaluate`'s mean.
    Each draw resamples the groups and, within each drawn group, its models (with
    replacement), and applies the same models to every run and every method.
    ``covariate``: ``{(architecture, source): value}`` (such as the source model's own
    accuracy); the metric is then :func:`partial_pearson`. Methods must score the same models
    of each group."""
    _check_bootstrap(resamples, level)
    rows = [r for r in rows if targets is None or r["target"] in set(targets)]
    fixed, _ = MODES[mode] if mode in MODES else (None, None)
    if fixed is None:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    # group -> model key -> method -> run -> score
    table: dict[tuple, dict[tuple, dict[str, dict[int, float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(dict))
    )
    runs: set[int] = set()
    wanted = set(methods)
    for r in rows:
        if r["method"] not in wanted:
            continue
        key = (r["architecture"], r["source"], r["target"])
        if key not in oracle:
            continue
        group = tuple(r[k] for k in fixed)
        table[group][key][r["method"]][int(r["run"])] = float(r["score"])
        runs.add(int(r["run"]))
    if not table:
        raise ValueError("bootstrap_table: no score rows of these methods join the oracle")
    run_list = sorted(runs)
    groups = []
    for g in sorted(table):
        keys = sorted(table[g])
        if len(keys) < 3:
            continue  # no correlation over fewer than three models
        x = {}
        for m in methods:
            try:
                x[m] = np.array(
                    [[table[g][k][m][run] for k in keys] for run in run_list], np.float64
                )
            except KeyError:
                raise ValueError(
                    f"bootstrap_table: method {m!r} lacks scores of some models or runs in "
                    f"group {g}"
                ) from None
        y = np.array([oracle[k] for k in keys], np.float64)
        z = (
            None
            if covariate is None
            else np.array([covariate[(k[0], k[1])] for k in keys], np.float64)
        )
        groups.append((x, y, z))
    n_groups = len(groups)
    rng = np.random.default_rng(seed)
    picked = rng.integers(n_groups, size=(resamples, n_groups))
    per_slot = {m: np.full((resamples, n_groups), np.nan) for m in methods}
    estimate_groups = {m: [] for m in methods}
    for g, (x, y, z) in enumerate(groups):
        for m in methods:
            estimate_groups[m].append(_metric_rows(x[m], y, z))  # [runs]
        where = picked == g
        count = int(where.sum())
        if not count:
            continue
        idx = rng.integers(y.size, size=(count, y.size))
        ys, zs = y[idx], (None if z is None else z[idx])
        for m in methods:
            vals = _metric_rows(x[m][:, idx], ys[None], None if zs is None else zs[None])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                per_slot[m][where] = np.nanmean(vals, axis=0)  # over runs
    estimate, draws = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for m in methods:
            per_run = np.nanmean(np.stack(estimate_groups[m]), axis=0)  # [runs]
            estimate[m] = float(np.nanmean(per_run)) if per_run.size else math.nan
            draws[m] = np.nanmean(per_slot[m], axis=1)
    return BootstrapTable(estimate, draws, level, resamples)
