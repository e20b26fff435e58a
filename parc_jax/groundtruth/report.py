"""The ground truth's summary report: per-target transfer tables, chance rates and sanity checks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from parc_jax.groundtruth.pipeline import read_csv, stage_datasets
from parc_jax.groundtruth.presets import Preset


def chance_rates(preset: Preset, *, data_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """Per target, the accuracy (%) of always predicting the test split's majority class."""
    data = stage_datasets(preset, preset.targets, role="target", data_dir=data_dir)
    return {
        t: float(100.0 * np.bincount(d.test.labels).max() / len(d.test)) for t, d in data.items()
    }


def summarize(
    preset: Preset,
    run_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    flat_spread: float = 1.0,
) -> dict[str, Any]:
    """Sanity checks of a finished run, as numbers and a markdown note.

    Per target: the majority-class rate, each architecture's fine-tuned accuracies over
    sources (min / mean / max), the from-scratch accuracy, how many transfers beat scratch,
    the spread (max - min) of all its transfers, and flags: a transfer not above the majority
    rate, or a spread under ``flat_spread`` points (little signal for correlations).
    Returns ``{"targets": {...}, "flags": [...], "markdown": str}``.
    """
    import json

    run_dir = Path(run_dir)
    oracle = read_csv(run_dir / "oracle.csv")
    scratch = {(r["architecture"], r["target"]): float(r["accuracy"])
               for r in read_csv(run_dir / "scratch.csv")}  # fmt: skip
    sources = read_csv(run_dir / "sources.csv")
    majority = chance_rates(preset, data_dir=data_dir)
    timings_path = run_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    flags: list[str] = []
    targets: dict[str, Any] = {}
    lines = [
        f"## Ground truth, preset `{preset.name}`",
        "",
        f"{len(oracle)} transfers ({len(preset.transfers())} planned), "
        f"{len(sources)} source models, {len(scratch)} from-scratch baselines.",
        "",
        "Wall time per stage (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(timings.items()))
        + (f"; total {sum(timings.values()):.0f}" if timings else ""),
        "",
        "### Fine-tuned test accuracy per target (%)",
        "",
        "Per architecture: min / mean / max over sources, then from scratch (s). "
        "`beats scratch`: transfers above the same architecture trained from scratch.",
        "",
        "| target | majority | " + " | ".join(preset.architectures)
        + " | spread | beats scratch |",
        "|---|---|" + "---|" * len(preset.architectures) + "---|---|",
    ]  # fmt: skip
    for target in preset.targets:
        rows = [r for r in oracle if r["target"] == target]
        if not rows:
            continue
        accs = np.array([float(r["accuracy"]) for r in rows])
        wins = sum(
            float(r["accuracy"]) > scratch.get((r["architecture"], target), np.inf) for r in rows
        )
        spread = float(accs.max() - accs.min())
        cells = []
        per_arch = {}
        for arch in preset.architectures:
            a = np.array([float(r["accuracy"]) for r in rows if r["architecture"] == arch])
            s = scratch.get((arch, target))
            per_arch[arch] = {
                "min": float(a.min()) if a.size else None,
                "mean": float(a.mean()) if a.size else None,
                "max": float(a.max()) if a.size else None,
                "scratch": s,
            }
            cell = f"{a.min():.1f} / {a.mean():.1f} / {a.max():.1f}" if a.size else "-"
            cells.append(cell + (f" (s {s:.1f})" if s is not None else ""))
        below = [r for r in rows if float(r["accuracy"]) <= majority[target]]
        if below:
            flags.append(
                f"{target}: {len(below)} transfers not above the majority rate "
                f"{majority[target]:.1f}%"
            )
        if spread < flat_spread:
            flags.append(
                f"{target}: all transfers within {spread:.2f} points; little signal for correlation"
            )
        targets[target] = {
            "majority": majority[target], "transfers": len(rows), "spread": spread,
            "beats_scratch": int(wins), "per_architecture": per_arch,
        }  # fmt: skip
        lines.append(
            f"| {target} | {majority[target]:.1f} | " + " | ".join(cells)
            + f" | {spread:.1f} | {wins}/{len(rows)} |"
        )  # fmt: skip
    total_wins = sum(t["beats_scratch"] for t in targets.values())
    most = sum(t["beats_scratch"] > t["transfers"] / 2 for t in targets.values())
    best = 0
    for t in targets.values():
        pa = [v for v in t["per_architecture"].values() if v["scratch"] is not None and v["max"]]
        t["best_beats_scratch"] = sum(v["max"] > v["scratch"] for v in pa)
        best += t["best_beats_scratch"] > len(pa) / 2
    lines += [
        "",
        f"Fine-tuning beats training from scratch in {total_wins}/{len(oracle)} transfers; "
        f"on {most}/{len(targets)} targets for the majority of their transfers; with the best "
        f"source per architecture, on {best}/{len(targets)} targets for most architectures.",
        "",
        "### Source models (test accuracy %, on their own test split)",
        "",
        "| architecture | " + " | ".join(preset.sources) + " |",
        "|---|" + "---|" * len(preset.sources),
    ]
    for arch in preset.architectures:
        acc = {r["source"]: float(r["test_accuracy"]) for r in sources
               if r["architecture"] == arch}  # fmt: skip
        lines.append(
            f"| {arch} | " + " | ".join(f"{acc[s]:.1f}" if s in acc else "-"
                                        for s in preset.sources) + " |"
        )  # fmt: skip
    checks = sanity_checks(preset, run_dir, data_dir=data_dir)
    flags += [c["name"] + ": " + c["detail"] for c in checks["checks"] if not c["passed"]]
    lines += ["", *checks["markdown"]]
    lines += ["", "### Flags", ""] + ([f"- {f}" for f in flags] or ["- none"])
    return {
        "targets": targets,
        "flags": flags,
        "sanity": checks,
        "markdown": "\n".join(lines) + "\n",
    }


#: Thresholds of :func:`sanity_checks` (percentage points unless said otherwise).
MIN_MARGIN_OVER_CHANCE = 5.0
COLLAPSE_MARGIN = 1.0
MIN_INTERIOR_FRACTION = 0.8
MIN_SOURCE_MARGIN = 10.0


def _interior(rows: list[dict[str, str]], chosen: float) -> tuple[bool, bool]:
    """Whether ``chosen`` is interior to the rates tried, and whether both its neighbours
    trained without collapsing or diverging."""
    rates = sorted(float(r["lr"]) for r in rows)
    status = {float(r["lr"]): r.get("status", "ok") for r in rows}
    i = min(range(len(rates)), key=lambda j: abs(rates[j] - chosen))
    interior = 0 < i < len(rates) - 1
    return interior, interior and status[rates[i - 1]] == status[rates[i + 1]] == "ok"


def sanity_checks(
    preset: Preset, run_dir: str | os.PathLike, *, data_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The ground truth's acceptance checks, each with its numbers and pass/fail.

    1. Every source model learns: test accuracy >= its own test split's majority rate +
       ``MIN_SOURCE_MARGIN``; the spread of source accuracies is reported per source.
    2. Every target has signal: its worst transfer >= the majority rate of its test split
       + ``MIN_MARGIN_OVER_CHANCE`` (1/K reported beside it).
    3. No transfer collapsed: none within ``COLLAPSE_MARGIN`` of the majority rate, and no
       grid whose every rate collapsed or diverged.
    4. The learning-rate grid was wide enough: the chosen rate is interior to the rates tried,
       with both neighbours training without collapse or divergence, for >=
       ``MIN_INTERIOR_FRACTION`` of the transfers.
    5. References (rsa/dds) trained to the convergence rule: accuracy beside the scratch
       baseline and the mean transfer; how many stopped by the rule rather than the cap.
    Returns ``{"checks": [{"name", "passed", "detail"}], "tables": {...}, "markdown": [...]}``.
    """
    from parc_jax.groundtruth.pipeline import SCRATCH_SOURCE

    run_dir = Path(run_dir)
    oracle = read_csv(run_dir / "oracle.csv")
    grid = read_csv(run_dir / "grid.csv")
    sources = read_csv(run_dir / "sources.csv")
    refs = read_csv(run_dir / "references.csv")
    scratch = {(r["architecture"], r["target"]): float(r["accuracy"])
               for r in read_csv(run_dir / "scratch.csv")}  # fmt: skip
    pretrain = read_csv(run_dir / "pretrain.csv")
    tdata = stage_datasets(preset, preset.targets, role="target", data_dir=data_dir)
    sdata = stage_datasets(preset, preset.sources, role="source", data_dir=data_dir)

    def majority(d) -> float:
        return float(100.0 * np.bincount(d.test.labels).max() / len(d.test))

    checks: list[dict[str, Any]] = []
    md = ["### Sanity checks", ""]
    if pretrain:
        md += [
            f"Pretraining pool: {', '.join(preset.pool)} (never a target); test accuracy on the "
            "pool per architecture: "
            + ", ".join(f"{r['architecture']} {float(r['test_accuracy']):.1f}%" for r in pretrain)
            + ".",
            "",
        ]
    # 1. sources
    md += ["| source | majority % | min | mean | max | spread |", "|---|---|---|---|---|---|"]
    weak = []
    for name in preset.sources:
        acc = np.array([float(r["test_accuracy"]) for r in sources if r["source"] == name])
        if not acc.size:
            continue
        chance = majority(sdata[name])
        weak += [
            f"{r['architecture']}/{name} {float(r['test_accuracy']):.1f}%"
            for r in sources
            if r["source"] == name and float(r["test_accuracy"]) < chance + MIN_SOURCE_MARGIN
        ]
        md.append(
            f"| {name} | {chance:.1f} | {acc.min():.1f} | {acc.mean():.1f} | {acc.max():.1f} "
            f"| {acc.max() - acc.min():.1f} |"
        )
    checks.append({
        "name": "every source model learns",
        "passed": not weak,
        "detail": (f"{len(weak)} below majority + {MIN_SOURCE_MARGIN:g}: {', '.join(weak)}"
                   if weak else f"all {len(sources)} >= majority + {MIN_SOURCE_MARGIN:g} points"),
    })  # fmt: skip
    # 2-3. targets
    md += [
        "",
        "| target | majority % | 1/K % | worst | mean | best | std | worst - majority "
        "| collapsed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    no_signal, collapsed = [], []
    for t in preset.targets:
        acc = np.array([float(r["accuracy"]) for r in oracle if r["target"] == t])
        if not acc.size:
            continue
        chance, k = majority(tdata[t]), tdata[t].num_classes
        n_col = int(np.sum(acc <= chance + COLLAPSE_MARGIN))
        collapsed += [t] * n_col
        margin = float(acc.min() - chance)
        if margin < MIN_MARGIN_OVER_CHANCE:
            no_signal.append(f"{t} ({margin:+.1f})")
        md.append(
            f"| {t} | {chance:.1f} | {100.0 / k:.1f} | {acc.min():.1f} | {acc.mean():.1f} "
            f"| {acc.max():.1f} | {acc.std():.1f} | {margin:+.1f} | {n_col} |"
        )
    checks.append({
        "name": "every target's worst transfer >= majority + 5",
        "passed": not no_signal,
        "detail": ", ".join(no_signal) if no_signal else f"all {len(preset.targets)} targets",
    })  # fmt: skip
    by_run: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for r in grid:
        by_run.setdefault((r["architecture"], r["source"], r["target"]), []).append(r)
    all_failed = [
        "/".join(key) for key, rows in by_run.items()
        if key[1] != SCRATCH_SOURCE and all(r.get("status", "ok") != "ok" for r in rows)
    ]  # fmt: skip
    scratch_failed = [
        f"{key[0]}->{key[2]}" for key, rows in by_run.items()
        if key[1] == SCRATCH_SOURCE and all(r.get("status", "ok") != "ok" for r in rows)
    ]  # fmt: skip
    checks.append({
        "name": "no transfer collapsed",
        "passed": not collapsed and not all_failed,
        "detail": (f"{len(collapsed)} transfers within {COLLAPSE_MARGIN:g} point of the "
                   f"majority rate; {len(all_failed)} transfer grids where every rate failed"
                   + (f" ({', '.join(all_failed)})" if all_failed else "")
                   + (f"; from-scratch baselines whose every rate collapsed (reported, not "
                      f"transfers): {', '.join(scratch_failed)}" if scratch_failed else "")),
    })  # fmt: skip
    # 4. learning-rate grid
    interior = both_ok = 0
    chosen_counts: dict[str, int] = {}
    for r in oracle:
        rows = by_run.get((r["architecture"], r["source"], r["target"]), [])
        if not rows:
            continue
        inside, ok = _interior(rows, float(r["lr"]))
        interior += inside
        both_ok += ok
        chosen_counts[r["lr"]] = chosen_counts.get(r["lr"], 0) + 1
    frac = both_ok / max(len(oracle), 1)
    failed_rates = sum(r.get("status", "ok") != "ok" for r in grid if r["source"] != SCRATCH_SOURCE)
    checks.append({
        "name": "learning rate interior",
        "passed": frac >= MIN_INTERIOR_FRACTION,
        "detail": (f"chosen rate interior in {interior}/{len(oracle)} transfers, with both "
                   f"neighbours training in {both_ok}/{len(oracle)} ({100 * frac:.0f}%; "
                   f"needs {100 * MIN_INTERIOR_FRACTION:.0f}%); {failed_rates} grid runs "
                   "collapsed or diverged; chosen: "
                   + ", ".join(f"{k} x{v}" for k, v in sorted(chosen_counts.items(),
                                                              key=lambda kv: float(kv[0])))),
    })  # fmt: skip
    # 5. references
    if refs:
        md += [
            "",
            "rsa/dds references (from scratch, trained to the convergence rule: validation "
            f"accuracy gains < {preset.reference_tolerance:g} point when the epochs double, "
            f"up to x{max(preset.reference_epochs)}):",
            "",
            "| architecture | target | reference % | epochs | converged | scratch % "
            "| mean transfer % |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in refs:
            a, t = r["architecture"], r["target"]
            accs = [
                float(o["accuracy"]) for o in oracle if (o["architecture"], o["target"]) == (a, t)
            ]
            mean_t = np.mean(accs) if accs else np.nan
            md.append(
                f"| {a} | {t} | {float(r['accuracy']):.1f} | {r['epochs']} "
                f"| {'yes' if r['converged'] in ('1', 'True') else 'cap'} "
                f"| {scratch.get((a, t), float('nan')):.1f} | {mean_t:.1f} |"
            )
        conv = sum(r["converged"] in ("1", "True") for r in refs)
        checks.append({
            "name": "references trained to the convergence rule",
            "passed": True,
            "detail": f"{conv}/{len(refs)} stopped by the rule, the rest at the epoch cap",
        })  # fmt: skip
    md += ["", "| check | result | numbers |", "|---|---|---|"]
    md += [f"| {c['name']} | {'pass' if c['passed'] else 'FAIL'} | {c['detail']} |" for c in checks]
    return {"checks": checks, "markdown": md}
