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
    lines += ["", "### Flags", ""] + ([f"- {f}" for f in flags] or ["- none"])
    return {"targets": targets, "flags": flags, "markdown": "\n".join(lines) + "\n"}
