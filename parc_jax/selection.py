"""The selection benchmark: score every probe bank of a ground-truth run with every scorer and
report how well each predicts fine-tuned accuracy (PARC paper Tab. 1, 2 and 4 in miniature).

``benchmarks/selection.py`` is the command; this module holds the pieces so that they can be
imported and tested: finding the banks, scoring them, the literal-label-distance PARC of the
published code, timing, the leave-one-target-out predictor, the tables and the plots.
"""

from __future__ import annotations

import math
import re
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parc_jax.api import PRIOR_SUFFIX, score_bank
from parc_jax.bank import Bank, read_bank
from parc_jax.combine import design, loto_predictions
from parc_jax.evaluation import METRICS, MODES, Summary, evaluate, rows_from_result

__all__ = [
    "LEARNED_FACTS",
    "LEARNED_METHODS",
    "PAPER_MEAN_PC",
    "find_banks",
    "learned_rows",
    "literal_parc_rows",
    "model_facts",
    "score_banks",
    "time_methods",
]

NONE_SUFFIX = "@none"  # scores without feature reduction
LITERAL = "parc_literal"  # PARC with the published code's float64 corrcoef label distance

# PARC paper Tab. 1 (Mean PC, %, controlled benchmark) as quoted in the issue.
PAPER_MEAN_PC: dict[str, str] = {
    "parc+l": "70.3 ± 0.5",
    "logistic+l": "69.2 ± 1.1",
    "rsa+l": "68.2",
    "knn+l": "68.0 ± 0.7",
    "parc": "59.3 ± 0.7",
    "hscore": "55.9 ± 0.6",
    "heuristic": "51.0",
    "leep": "10.8",
    "nce": "2.1",
}

# Inputs of the learned predictor, fixed before looking at any result: the scorers that the
# paper found strongest plus one of each family, and the model facts every bank carries.
LEARNED_METHODS = ("parc", "logistic", "knn", "logme", "leep")
LEARNED_FACTS = ("depth", "source_accuracy", "log_source_images")

_RUN = re.compile(r"run(\d+)\.msgpack$")


def find_banks(root: str | Path) -> dict[str, dict[int, Path]]:
    """Probe banks under ``root``: ``<target>/run<r>.msgpack`` (every probe run) or
    ``<target>.msgpack`` (run 0 only, the layout of the committed export)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"banks: no such directory {root}")
    found: dict[str, dict[int, Path]] = {}
    for path in sorted(root.glob("*/run*.msgpack")):
        match = _RUN.search(path.name)
        if match:
            found.setdefault(path.parent.name, {})[int(match.group(1))] = path
    for path in sorted(root.glob("*.msgpack")):
        found.setdefault(path.stem, {}).setdefault(0, path)
    if not found:
        raise ValueError(f"banks: no probe banks under {root}")
    return found


def _paper_setting(result: Any, rsa: Any) -> None:
    """Replace ``rsa``/``rsa+l`` in ``result`` by those of ``rsa`` (f = 32 as in the paper)."""
    for m in rsa.methods:
        result.scores[m] = rsa.scores[m]


def score_banks(
    banks: Mapping[str, Mapping[int, Path]],
    *,
    l_max: float = 50.0,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Score every bank with every scorer it supports, with the depth prior: at the paper's
    setting (METRICS defaults, RSA at f = 32 like the paper's table) and, for the scorers
    that reduce, without reduction (method names suffixed ``@none``). Adds the literal-label
    PARC (:func:`literal_parc_rows`). Returns score rows and the engine's degeneracy flags
    (``{method@setting: note}``)."""
    from tqdm.auto import tqdm

    from parc_jax.scorers.registry import SCORERS

    jobs = [(t, r, p) for t, runs in sorted(banks.items()) for r, p in sorted(runs.items())]
    rows: list[dict[str, Any]] = []
    flags: dict[str, str] = {}
    bar = tqdm(jobs, desc="scoring probe banks", unit="bank", file=sys.stderr,
               disable=not progress)  # fmt: skip
    for _, run, path in bar:
        bank = read_bank(path)
        result = score_bank(bank, methods="all", depth_prior=True, l_max=l_max, progress=False)
        if "rsa" in result.methods:
            rsa = score_bank(bank, methods=["rsa"], n_dims=32, depth_prior=True, l_max=l_max,
                             progress=False)  # fmt: skip
            _paper_setting(result, rsa)
        rows += rows_from_result(result, run=run)
        reducing = [m for m in result.methods if m in SCORERS and SCORERS[m].reduces]
        none = score_bank(bank, methods=reducing, n_dims=None, depth_prior=True, l_max=l_max,
                          progress=False)  # fmt: skip
        rows += rows_from_result(none, run=run, suffix=NONE_SUFFIX)
        rows += literal_parc_rows(bank, run=run, l_max=l_max)
        for m, note in result.flags.items():
            flags[m] = note
        for m, note in none.flags.items():
            flags[m + NONE_SUFFIX] = note
    return rows, flags


def literal_parc_rows(
    bank: Bank, *, run: int, n_dims: int = 32, l_max: float = 50.0
) -> list[dict[str, Any]]:
    """PARC with the published code's label distance ``1 - np.corrcoef(one_hot)`` (float64,
    NumPy reference; METRICS.md's first trap), and its depth prior, as score rows
    (``parc_literal``, ``parc_literal+l``)."""
    from parc_jax.reference import parc as reference_parc

    target = bank.target
    scores = np.array(
        [
            reference_parc(
                np.asarray(m.features, np.float64),
                target.labels,
                num_classes=target.num_classes,
                n_dims=n_dims,
                literal_label_distance=True,
            )  # fmt: skip
            for m in bank.models
        ]
    )
    depths = np.array([m.depth for m in bank.models], np.float64)
    z = (scores - scores.mean()) / scores.std(ddof=1) if np.ptp(scores) > 0 else 0 * scores
    prior = z + depths / l_max
    rows = []
    for method, values in ((LITERAL, scores), (LITERAL + PRIOR_SUFFIX, prior)):
        for m, v in zip(bank.models, values, strict=True):
            rows.append(
                {
                    "run": run,
                    "target": target.name,
                    "architecture": m.architecture,
                    "source": m.source,
                    "method": method,
                    "score": float(v),
                }  # fmt: skip
            )
    return rows


def model_facts(banks: Mapping[str, Mapping[int, Path]]) -> dict[tuple[str, str], dict[str, float]]:
    """Facts about each source model from the banks: ``depth``, ``source_accuracy`` (the
    source model's own test accuracy, ``meta["source_test_accuracy"]``) and
    ``log_source_images``."""
    facts: dict[tuple[str, str], dict[str, float]] = {}
    for runs in banks.values():
        bank = read_bank(next(iter(runs.values())))
        for m in bank.models:
            acc = m.meta.get("source_test_accuracy") if m.meta else None
            if m.depth is None or m.source_images is None or acc is None:
                raise ValueError(
                    f"model {m.name!r}: the learned predictor needs depth, source_images and "
                    "meta.source_test_accuracy"
                )
            facts[(m.architecture, m.source)] = {
                "depth": float(m.depth),
                "source_accuracy": float(acc),
                "log_source_images": math.log(float(m.source_images)),
            }
    return facts


def learned_rows(
    rows: Sequence[Mapping[str, Any]],
    oracle: Mapping[tuple[str, str, str], float],
    facts: Mapping[tuple[str, str], Mapping[str, float]],
    *,
    train_targets: Sequence[str],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Leave-one-target-out predictions (:mod:`parc_jax.combine`), fitted on
    ``train_targets`` only, as score rows of three methods: ``learned`` (ridge combination of
    :data:`LEARNED_METHODS` and :data:`LEARNED_FACTS`) and two ablations that tell where its
    signal comes from - ``learned_scores`` (the scorers alone) and ``source_accuracy`` (the
    source model's own test accuracy used directly as the score, nothing fitted)."""
    out: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    for name, methods, fact_names in (
        ("learned", LEARNED_METHODS, LEARNED_FACTS),
        ("learned_scores", LEARNED_METHODS, ()),
    ):
        keys, x, y = design(rows, oracle, methods=methods, facts=facts, fact_names=fact_names)
        pred, fitted = loto_predictions(keys, x, y, method=name, train_targets=train_targets)
        out += pred
        info[name] = {"inputs": [*methods, *fact_names], "per_target": fitted}
    seen = {(r["run"], r["target"], r["architecture"], r["source"]) for r in out}
    for run, target, arch, source in sorted(seen):
        out.append({"run": run, "target": target, "architecture": arch, "source": source,
                    "method": "source_accuracy",
                    "score": facts[(arch, source)]["source_accuracy"]})  # fmt: skip
    return out, info


def time_methods(
    bank: Bank, methods: Sequence[str], *, repeats: int = 3, n_dims: Any = "default"
) -> dict[str, float]:
    """Milliseconds per transfer (one model scored on the probe) of each method through
    :func:`parc_jax.score_bank`: one warm-up call (compilation excluded), then the median of
    ``repeats`` timed calls (their results are on the host, so the work has finished)."""
    out = {}
    for m in methods:
        score_bank(bank, methods=[m], n_dims=n_dims, progress=False)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            score_bank(bank, methods=[m], n_dims=n_dims, progress=False)
            times.append(time.perf_counter() - start)
        out[m] = 1000.0 * statistics.median(times) / len(bank.models)
    return out


# ---------------------------------------------------------------------------------------------
# Reporting


def _fmt(s: Summary | None, *, flag: str | None = None) -> str:
    if flag:
        return "degenerate"
    if s is None or math.isnan(s.mean):
        return "—"
    return f"{s.mean:.1f} ± {s.std:.1f}"


def summarize(
    rows: Sequence[Mapping[str, Any]],
    oracle: Mapping[tuple[str, str, str], float],
    *,
    targets: Sequence[str],
) -> list[dict[str, Any]]:
    """Every (method, mode, metric) summary over ``targets`` as flat records for a CSV."""
    records = []
    for mode in MODES:
        for metric in METRICS:
            if mode != "models" and metric != "pearson":
                continue  # the ablation modes are reported with Pearson, as in the paper
            for method, s in evaluate(rows, oracle, metric=metric, mode=mode,
                                      targets=targets).items():  # fmt: skip
                records.append(
                    {
                        "method": method,
                        "mode": mode,
                        "metric": metric,
                        "mean": s.mean,
                        "std": s.std,
                        "groups": s.groups,
                        "undefined": s.undefined,
                        "per_run": " ".join(f"{v:.4f}" for v in s.per_run),
                    }  # fmt: skip
                )
    return records


# Row order of the tables: the paper's scorers first, then the rest, then our additions.
TABLE_ORDER = (
    "parc", "rsa", "logistic", "knn", "hscore", "heuristic", "leep", "nce",
    "dds", "hscore_shrink", "logme", "transrate", "gbc", "gbc_spherical",
    LITERAL, "source_accuracy", "learned_scores", "learned",
)  # fmt: skip


def _base_methods(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    present = {r["method"] for r in rows}
    bases = {m.removesuffix(NONE_SUFFIX).removesuffix(PRIOR_SUFFIX) for m in present}
    ordered = [m for m in TABLE_ORDER if m in bases]
    return ordered + sorted(bases - set(ordered))


def markdown_report(
    rows: Sequence[Mapping[str, Any]],
    oracle: Mapping[tuple[str, str, str], float],
    *,
    main_targets: Sequence[str],
    extra_targets: Sequence[str] = (),
    flags: Mapping[str, str] | None = None,
    ms_per_transfer: Mapping[str, float] | None = None,
    dims: Mapping[str, Any] | None = None,
    header: str = "",
) -> str:
    """The Markdown tables: Mean PC (paper Tab. 1/4 layout), the ablation modes (Tab. 2),
    the ranking metrics, per-target values and the extra targets."""
    flags = flags or {}
    ms = ms_per_transfer or {}
    dims = dims or {}
    bases = _base_methods(rows)
    present = {r["method"] for r in rows}
    runs = sorted({int(r["run"]) for r in rows})

    def ev(metric="pearson", mode="models", targets=main_targets):
        methods = [m for m in present]
        return evaluate(rows, oracle, methods=methods, metric=metric, mode=mode, targets=targets)

    pc = ev()
    out = [header] if header else []
    out += [
        f"### Mean PC over the {len(main_targets)} main targets "
        f"({', '.join(main_targets)}), mean ± std over {len(runs)} probe runs",
        "",
        "Pearson correlation ×100 between scores and fine-tuned accuracy over every source "
        "model of a target, averaged over targets (PARC paper Eq. 2). `+ℓ`: depth prior "
        "(Eq. 6, ℓ_max = 50). `f`: PCA dimensions at the paper's setting; `none`: no reduction.",
        "",
        "| method | f | Mean PC | Mean PC +ℓ | none | none +ℓ | paper | paper +ℓ | ms / transfer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in bases:
        cells = [
            b,
            str(dims.get(b, "—")),
            _fmt(pc.get(b), flag=flags.get(b)),
            _fmt(pc.get(b + PRIOR_SUFFIX), flag=flags.get(b)),
            _fmt(pc.get(b + NONE_SUFFIX), flag=flags.get(b + NONE_SUFFIX)),
            _fmt(pc.get(b + PRIOR_SUFFIX + NONE_SUFFIX), flag=flags.get(b + NONE_SUFFIX)),
            PAPER_MEAN_PC.get(b, ""),
            PAPER_MEAN_PC.get(b + PRIOR_SUFFIX, ""),
            f"{ms[b]:.2f}" if b in ms else "",
        ]
        out.append("| " + " | ".join(cells) + " |")

    out += [
        "",
        "### One factor at a time (PARC paper Tab. 2), Mean PC ± std, main targets",
        "",
        "`models`: all source models of a target (Eq. 2). `architecture`: same source data, "
        "architectures vary. `source`: same architecture, source data varies. `target`: one "
        "source model, targets vary (Eq. 5).",
        "",
        "| method | " + " | ".join(MODES) + " |",
        "|---|" + "---|" * len(MODES),
    ]
    by_mode = {mode: ev(mode=mode) for mode in MODES}
    for b in bases:
        for m in (b, b + PRIOR_SUFFIX):
            if m in present:
                cells = [_fmt(by_mode[mode].get(m), flag=flags.get(b)) for mode in MODES]
                out.append(f"| {m} | " + " | ".join(cells) + " |")

    metrics = [k for k in METRICS if k != "pearson"]
    by_metric = {k: ev(metric=k) for k in metrics}
    out += [
        "",
        "### Ranking metrics, main targets, ×100, mean ± std over probe runs",
        "",
        "Kendall's τ-b, weighted τ (hyperbolic, as `scipy.stats.weightedtau`), top-k "
        "relative accuracy (best fine-tuned accuracy among the k best-scored models over the "
        "best overall; ties at the cut count against the scorer).",
        "",
        "| method | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for b in bases:
        for m in (b, b + PRIOR_SUFFIX):
            if m in present:
                cells = [_fmt(by_metric[k].get(m), flag=flags.get(b)) for k in metrics]
                out.append(f"| {m} | " + " | ".join(cells) + " |")

    shown = [m for b in bases for m in (b, b + PRIOR_SUFFIX) if m in present]
    for title, targets in (("main", main_targets), ("extra", extra_targets)):
        if not targets:
            continue
        per_t = {t: ev(targets=[t]) for t in targets}
        out += [
            "",
            f"### Pearson ×100 per {title} target, mean ± std over probe runs",
            "",
            "| method | " + " | ".join(targets) + " |",
            "|---|" + "---|" * len(targets),
        ]
        for m in shown:
            cells = [_fmt(per_t[t].get(m)) for t in targets]
            out.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def plot_bars(summary: Mapping[str, Summary], path: str | Path, *, title: str) -> None:
    """Bar chart of Mean PC ± std per method (and its ``+ℓ``), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in summary if not math.isnan(summary[m].mean)]
    names.sort(key=lambda m: summary[m].mean, reverse=True)
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(names) + 1.5))
    y = np.arange(len(names))
    colours = ["tab:orange" if m.endswith(PRIOR_SUFFIX) else "tab:blue" for m in names]
    means = [summary[m].mean for m in names]
    ax.barh(y, means, xerr=[summary[m].std for m in names], color=colours)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("Mean PC (Pearson ×100), mean ± std over probe runs")
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)


def plot_scatter(
    rows: Sequence[Mapping[str, Any]],
    oracle: Mapping[tuple[str, str, str], float],
    *,
    methods: Sequence[str],
    targets: Sequence[str],
    path: str | Path,
    run: int = 0,
) -> None:
    """Score vs fine-tuned accuracy, one panel per (target, method), probe run ``run``;
    markers by architecture. Saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = sorted({r["architecture"] for r in rows})
    markers = dict(zip(archs, "osD^v<>p*h", strict=False))
    fig, axes = plt.subplots(len(targets), len(methods), squeeze=False,
                             figsize=(3.2 * len(methods), 2.6 * len(targets)))  # fmt: skip
    for i, t in enumerate(targets):
        for j, m in enumerate(methods):
            ax = axes[i][j]
            pts = [(r["architecture"], r["score"], oracle[(r["architecture"], r["source"], t)])
                   for r in rows if r["target"] == t and r["method"] == m and int(r["run"]) == run
                   and (r["architecture"], r["source"], t) in oracle]  # fmt: skip
            for a in archs:
                xs = [p[1] for p in pts if p[0] == a]
                ys = [p[2] for p in pts if p[0] == a]
                ax.scatter(xs, ys, marker=markers[a], s=18, label=a)
            from parc_jax.evaluation import pearson

            r_val = pearson([p[1] for p in pts], [p[2] for p in pts]) if pts else math.nan
            ax.set_title(f"{t}: {m} (PC {r_val:.0f})", fontsize=8)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel("fine-tuned acc. %", fontsize=7)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Any, path: str | Path) -> None:
    """Save a figure atomically (temporary file, then rename)."""
    import os
    import tempfile

    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Successive halving against scoring everything (issue 6)


def halving_tradeoff(
    banks: Mapping[str, Mapping[int, Path]],
    oracle: Mapping[tuple[str, str, str], float],
    *,
    method: str = "parc",
    settings: Sequence[tuple[int, float]] = ((2, 0.125), (2, 0.25), (3, 0.125)),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """For every bank (target, run): select with successive halving at each ``(eta,
    min_fraction)`` and by scoring every model on the full probe; per selection record the
    top-1 / top-3 relative accuracy of its ranking, the Pearson x100 between the ranking
    (score = minus the position) and fine-tuned accuracy over all models, the Pearson of the
    final survivors' full-probe scores, the fraction of full-scoring compute
    (``(n_r/n)^2`` per model-round) and the wall time (compile excluded: a warm-up pass per
    shape runs first)."""
    from tqdm.auto import tqdm

    from parc_jax.evaluation import pearson, top_k_relative

    records = []
    jobs = [(t, r, p) for t, runs in sorted(banks.items()) for r, p in sorted(runs.items())]
    warmed: set[tuple[Any, ...]] = set()
    for target, run, path in tqdm(jobs, desc="halving", unit="bank", file=sys.stderr,
                                  disable=not progress):  # fmt: skip
        bank = read_bank(path)
        acc = {m.name: oracle.get((m.architecture, m.source, target)) for m in bank.models}
        if any(a is None for a in acc.values()):
            continue
        shape = (bank.target.labels.shape, bank.target.num_classes)
        for label, setting in [("full", None), *[(s, s) for s in settings]]:
            if (shape, label) not in warmed:
                _select(bank, method, setting)
                warmed.add((shape, label))
            start = time.perf_counter()
            ranking, final_scores, survivors, cost = _select(bank, method, setting)
            wall = time.perf_counter() - start
            m = len(ranking)
            rank_score = [float(m - i) for i in range(m)]
            accs = [acc[n] for n in ranking]
            fin = list(final_scores)
            records.append({
                "target": target, "run": run, "method": method,
                "selection": "full" if label == "full" else f"eta={label[0]} min={label[1]:g}",
                "top1": top_k_relative(rank_score, accs, 1),
                "top3": top_k_relative(rank_score, accs, 3),
                "pc_ranking": pearson(rank_score, accs),
                "pc_survivors": pearson([final_scores[n] for n in fin], [acc[n] for n in fin]),
                "survivors": survivors, "cost_fraction": cost, "seconds": wall,
            })  # fmt: skip
    return records


def _select(bank: Bank, method: str, setting: tuple[int, float] | None):
    """(ranking best first, final-round scores, final survivors, compute fraction) of full
    scoring (``setting`` None) or successive halving at ``(eta, min_fraction)``."""
    from parc_jax.halving import successive_halving

    if setting is None:
        res = score_bank(bank, methods=[method], progress=False)
        names = [res.names[i] for i in res.order(method)]
        scores = {n: float(v) for n, v in zip(res.names, res.scores[method], strict=True)}
        return names, scores, len(names), 1.0
    eta, frac = setting
    h = successive_halving(bank, method=method, eta=eta, min_fraction=frac)
    final = h.survivors_per_round[-1]
    return h.ranking, {n: h.scores[n] for n in h.ranking[:final]}, final, h.cost_fraction


def halving_markdown(records: Sequence[Mapping[str, Any]], *, command: str) -> str:
    """Mean ± std over targets and runs of each selection's metrics."""
    out = [
        f"Command: `{command}`",
        "",
        "| selection | top-1 rel. acc. % | top-3 rel. acc. % | PC of ranking | "
        "PC among survivors | survivors | compute fraction | wall s / bank |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for sel in dict.fromkeys(r["selection"] for r in records):
        rs = [r for r in records if r["selection"] == sel]

        def ms(key, digits=1, rs=rs):
            v = np.array([r[key] for r in rs], float)
            v = v[np.isfinite(v)]
            return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}" if v.size else "—"

        out.append(
            f"| {sel} | {ms('top1')} | {ms('top3')} | {ms('pc_ranking')} | "
            f"{ms('pc_survivors')} | {ms('survivors', 0)} | {ms('cost_fraction', 3)} | "
            f"{ms('seconds', 2)} |"
        )
    return "\n".join(out) + "\n"
