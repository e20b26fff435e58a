"""The CPU target of PARC: fast and exact PARC per model against the published pipeline.

    python benchmarks/cpu_target.py                  # B = 64, widths {512, 2048, 4096}
    python benchmarks/cpu_target.py --models 16 --repeats 2

The published pipeline is the float64 NumPy/SciPy reference (``parc_jax.reference.parc``: SVD
PCA and ``scipy.stats.spearmanr``, BLAS on every core). On one synthetic bank of B models
(n = 500, K = 100, z = 1000, float16 features, widths cycling over ``--widths``; the
``parc_jax.synthetic`` bank with class structure), in one run:

* the reference loop, each distinct pool model timed after a warm-up call (median of
  ``--ref-repeats``), ms per model over the bank's width mix (its cost depends on the width
  only);
* ``score_bank(methods=["parc"], pca=...)`` end to end (padding, transfer, compute) for
  ``pca="fast"`` and ``pca="exact"``: warm-up first (compilation reported apart), median of
  repeats, ms per model;
* the same chunks' compiled programs alone on resident arrays (device ms per model);
* each ratio = reference ms per model / engine ms per model, from this one run;
* the largest |fast - exact| and |engine - reference| PARC difference on the pool models.

Target (issue 19): fast PARC >= 10x per model at B = 64 over the width mix, exact beside it.
Writes ``benchmarks/results/cpu_target-<device>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

from parc_jax.api import score_bank
from parc_jax.atomic import write_text
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.synthetic import synthetic_bank

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import int_at_least, output_file, positive_int  # noqa: E402
from throughput import (  # noqa: E402
    device_name,
    reference_call,
    reference_per_model,
    tiled_bank,
    time_device_only,
    time_reference,
)

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 10.0


def run(args: argparse.Namespace) -> dict:
    pool = synthetic_bank(n=args.n, num_classes=args.num_classes, num_models=args.pool,
                          widths=tuple(args.widths), z=args.z, seed=0)  # fmt: skip
    bank = tiled_bank(pool, args.models)
    doc: dict = {
        "device": device_name(),
        "host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/cpu_target.py", *sys.argv[1:]]),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "note": args.note,
    }
    # each pool model: the median of repeated calls (after time_reference's warm-up call)
    runs = [time_reference("parc", pool, len(pool.models)) for _ in range(args.ref_repeats)]
    ref_times = [statistics.median(t) for t in zip(*runs, strict=True)]
    ref_s = reference_per_model(ref_times, args.models)
    doc["reference_ms_per_model"] = 1e3 * ref_s
    doc["reference_ms_by_pool_model"] = [1e3 * t for t in ref_times]
    print(f"reference: {1e3 * ref_s:.1f} ms per model", file=sys.stderr, flush=True)
    ref_scores = np.array([reference_call("parc", m, pool) for m in pool.models])
    chunk = min(args.models, args.chunk_size)
    scores = {}
    for pca in ("fast", "exact"):
        call = dict(methods=["parc"], chunk_size=chunk, pca=pca, progress=False)
        t0 = time.perf_counter()
        score_bank(bank, **call)
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            score_bank(bank, **call)
            times.append(time.perf_counter() - t0)
        warm = statistics.median(times)
        device_s = time_device_only(["parc"], bank, chunk, args.repeats, pca)
        scores[pca] = np.asarray(score_bank(pool, **call).scores["parc"])
        doc[pca] = {
            "engine_ms_per_model": 1e3 * warm / args.models,
            "device_ms_per_model": 1e3 * device_s / args.models,
            "compile_s": max(0.0, first - warm),
            "ratio": ref_s * args.models / warm,
            "device_ratio": ref_s * args.models / device_s,
            "max_abs_vs_reference": float(np.max(np.abs(scores[pca] - ref_scores))),
        }
        print(f"{pca}: {doc[pca]}", file=sys.stderr, flush=True)
    doc["fast_vs_exact_max_abs"] = float(np.max(np.abs(scores["fast"] - scores["exact"])))
    doc["target_met"] = doc["fast"]["ratio"] >= TARGET_RATIO
    return doc


def markdown(doc: dict) -> str:
    c = doc["config"]
    lines = [
        f"Device: {doc['device']}, host {doc['host']['cores']} cores, jax {doc['jax']}, "
        f"{doc['date']}. B = {c['models']} models, n = {c['n']}, K = {c['num_classes']}, "
        f"widths {c['widths']}, float16 features. Command: `{doc['command']}`",
        "",
    ]
    if doc.get("note"):
        lines += [f"Note: {doc['note']}", ""]
    lines += [
        "| PARC | engine ms/model | device ms/model | reference ms/model | ratio (engine) | "
        "ratio (device) | compile s | max abs vs float64 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ref = doc["reference_ms_per_model"]
    for pca in ("fast", "exact"):
        r = doc[pca]
        lines.append(
            f"| {pca} PCA | {r['engine_ms_per_model']:.1f} | {r['device_ms_per_model']:.1f} | "
            f"{ref:.1f} | **{r['ratio']:.1f}x** | {r['device_ratio']:.1f}x | "
            f"{r['compile_s']:.1f} | {r['max_abs_vs_reference']:.4f} |"
        )
    met = "met" if doc["target_met"] else "NOT met"
    lines += [
        "",
        f"Target fast PARC >= {TARGET_RATIO:.0f}x per model (engine end to end): **{met}** "
        f"({doc['fast']['ratio']:.1f}x). Largest |fast - exact|: "
        f"{doc['fast_vs_exact_max_abs']:.4f} PARC points.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", type=positive_int, default=64)
    p.add_argument("--widths", nargs="+", type=positive_int, default=[512, 2048, 4096])
    p.add_argument("--n", type=int_at_least(3), default=500)
    p.add_argument("--num-classes", type=int_at_least(2), default=100)
    p.add_argument("--z", type=positive_int, default=1000)
    p.add_argument("--pool", type=positive_int, default=6, help="distinct models, tiled to B")
    p.add_argument("--chunk-size", type=positive_int, default=64)
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--ref-repeats", type=positive_int, default=3)
    p.add_argument("--note", default="", help="conditions of the run, kept in the result")
    p.add_argument("--out", type=output_file, help="default results/cpu_target-<device>.json")
    args = p.parse_args(argv)
    enable_persistent_cache()  # compiled programs persist across runs
    doc = run(args)
    out = Path(args.out or RESULTS / f"cpu_target-{doc['device']}.json")
    write_text(out, json.dumps(doc, indent=2) + "\n", parents=True)
    write_text(out.with_suffix(".md"), markdown(doc), parents=True)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
