"""Exact PCA by eigh against the certified iterative route, in the engine's PCA program.

    python benchmarks/exact_pca.py                     # B = 64, widths {512, 2048, 4096}
    python benchmarks/exact_pca.py --models 16 --repeats 2 --no-banks

Exact PCA reduces each model through the top ``f`` eigenpairs of its ``n x n`` Gram (or
``d x d`` covariance). Two routes (``parc_jax.engine._programs.EXACT_PCA_SOLVER``):

* ``eigh``: one dense eigendecomposition per model (one LAPACK / cuSOLVER call each under
  ``vmap``);
* ``iterative``: ``numerics.exact_top_eigenvectors`` (Chebyshev-filtered subspace iteration,
  matrix products and ``p x p`` eigh, stopped when every top-``f`` Ritz residual is at an
  eigh's backward error), the models it does not certify reduced again by eigh in a second
  program over just those.

On a synthetic bank of B models (n = 500, K = 100, float16 features, widths cycling over
``--widths``), in one run, with chunks of ``--chunk-size`` per width bucket as the engine forms
them: device ms per model of the PCA program (both routes, the fallback included), of PARC
with it, compile seconds, the models that fell back; PARC of both routes against each other
and against the float64 pipeline (SVD PCA + ``spearmanr``) on the distinct pool models; and
the largest |iterative - eigh| PARC difference on every bank under ``--banks`` (default: the
committed real banks). ``--also`` times other scorers' programs (LogME and H-Score by
default: their cost is their own full-spectrum eigendecomposition, not the shared PCA).
Writes ``benchmarks/results/exact_pca-<device>.{json,md}``.
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

from parc_jax.api import _target_info, score_bank
from parc_jax.atomic import write_text
from parc_jax.bank import read_bank
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.engine import _programs
from parc_jax.scorers.registry import SCORERS
from parc_jax.synthetic import synthetic_bank

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import int_at_least, output_file, positive_int  # noqa: E402
from throughput import (  # noqa: E402
    device_name,
    engine_scorer,
    reference_call,
    tiled_bank,
    time_device_only,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SOLVERS = ("eigh", "iterative")


def fallback_count(bank, chunk: int) -> int:
    """Models of ``bank`` the iterative route hands to eigh (one pass over its chunks)."""
    from parc_jax.api import _narrow
    from parc_jax.engine import _assembly

    target = _target_info(bank.target)
    fn = engine_scorer(["parc"], target, chunk, "exact")
    for _, _, arrays in _assembly._chunks((_narrow(m) for m in bank.models), target, ["parc"],
                                          chunk):  # fmt: skip
        jax.block_until_ready(fn(jax.device_put(arrays)))
    return fn.fallback_models


def run(args: argparse.Namespace) -> dict:
    pool = synthetic_bank(n=args.n, num_classes=args.num_classes, num_models=args.pool,
                          widths=tuple(args.widths), z=args.z, seed=0)  # fmt: skip
    bank = tiled_bank(pool, args.models)
    doc: dict = {
        "device": device_name(),
        "host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/exact_pca.py", *sys.argv[1:]]),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "note": args.note,
        "auto": _programs.exact_pca_solver(),
    }
    chunk = min(args.models, args.chunk_size)
    scores = {}
    saved = _programs.EXACT_PCA_SOLVER
    try:
        for solver in SOLVERS:
            _programs.EXACT_PCA_SOLVER = solver
            t0 = time.perf_counter()
            time_device_only(["parc"], bank, chunk, 1)  # compiles every bucket
            first = time.perf_counter() - t0
            parts: list[dict[str, float]] = []
            totals = []
            for _ in range(args.repeats):
                breakdown: dict[str, float] = {}
                totals.append(time_device_only(["parc"], bank, chunk, 1, breakdown=breakdown))
                parts.append(breakdown)
            pca_s = statistics.median(p["pca"] for p in parts)
            total = statistics.median(totals)
            scores[solver] = np.asarray(score_bank(pool, methods=["parc"], pca="exact",
                                                   progress=False).scores["parc"])  # fmt: skip
            doc[solver] = {
                "pca_ms_per_model": 1e3 * pca_s / args.models,
                "parc_ms_per_model": 1e3 * total / args.models,
                "first_pass_s": first,
                "fallback_models": fallback_count(bank, chunk) if solver == "iterative" else 0,
            }
            print(f"{solver}: {doc[solver]}", file=sys.stderr, flush=True)
        want = np.array([reference_call("parc", m, pool) for m in pool.models])
        for solver in SOLVERS:
            doc[solver]["parc_vs_float64_max_abs"] = float(np.max(np.abs(scores[solver] - want)))
        doc["synthetic_max_abs_diff"] = float(np.max(np.abs(scores["iterative"] - scores["eigh"])))
        doc["banks"] = []
        for path in sorted(Path(args.banks).glob("*.msgpack")) if args.banks else []:
            real = read_bank(path)
            got = {}
            for solver in SOLVERS:
                _programs.EXACT_PCA_SOLVER = solver
                got[solver] = np.asarray(score_bank(real, methods=["parc"], pca="exact",
                                                    progress=False).scores["parc"])  # fmt: skip
            diff = np.abs(got["iterative"] - got["eigh"])
            same = np.array_equal(np.argsort(-got["eigh"]), np.argsort(-got["iterative"]))
            doc["banks"].append({"bank": path.stem, "models": len(real.models),
                                 "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                                 "same_order": bool(same)})  # fmt: skip
            print(f"  {doc['banks'][-1]}", file=sys.stderr, flush=True)
    finally:
        _programs.EXACT_PCA_SOLVER = saved
    doc["also"] = {}
    for m in args.also:
        breakdown = {}
        time_device_only([m], bank, chunk, 1)
        total = statistics.median(time_device_only([m], bank, chunk, 1, breakdown=breakdown)
                                  for _ in range(args.repeats))  # fmt: skip
        doc["also"][m] = {"ms_per_model": 1e3 * total / args.models,
                          "parts_ms_per_model": {k: 1e3 * v / args.models
                                                 for k, v in breakdown.items()}}  # fmt: skip
        print(f"  {m}: {doc['also'][m]}", file=sys.stderr, flush=True)
    return doc


def markdown(doc: dict) -> str:
    c = doc["config"]
    lines = [
        f"Device: {doc['device']}, host {doc['host']['cores']} cores, jax {doc['jax']}, "
        f"{doc['date']}. B = {c['models']} models, n = {c['n']}, widths {c['widths']}, "
        f"chunks of {c['chunk_size']} per width bucket. Command: `{doc['command']}`",
        "",
    ]
    if doc.get("note"):
        lines += [f"Note: {doc['note']}", ""]
    lines += [
        "| exact PCA route | PCA ms/model (one profiled pass) | PARC ms/model (median) | "
        "first pass s (compile) | models to eigh | PARC max abs vs float64 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for s in SOLVERS:
        r = doc[s]
        lines.append(
            f"| {s} | {r['pca_ms_per_model']:.2f} | {r['parc_ms_per_model']:.2f} | "
            f"{r['first_pass_s']:.1f} | {r['fallback_models']} | "
            f"{r['parc_vs_float64_max_abs']:.5f} |"
        )
    diff = doc["synthetic_max_abs_diff"]
    lines += ["", f"Largest |iterative - eigh| PARC on the synthetic pool: {diff:.2e}. "
              f"Default (`auto`): {doc['auto']}.", ""]  # fmt: skip
    if doc["banks"]:
        lines += ["| bank | models | max abs | mean abs | same order |", "|---|---:|---:|---:|---|"]
        lines += [f"| {b['bank']} | {b['models']} | {b['max_abs']:.2e} | {b['mean_abs']:.2e} | "
                  f"{b['same_order']} |" for b in doc["banks"]]  # fmt: skip
        lines.append("")
    for m, r in doc["also"].items():
        parts = ", ".join(f"{k} {v:.2f}" for k, v in r["parts_ms_per_model"].items())
        lines.append(f"{m}: {r['ms_per_model']:.2f} ms/model ({parts}).")
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
    p.add_argument("--pool", type=positive_int, default=6, help="distinct synthetic models")
    p.add_argument("--chunk-size", type=positive_int, default=64)
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--banks", default=str(ROOT / "benchmarks/groundtruth/banks"),
                   help="directory of real banks to compare on ('' for none)")  # fmt: skip
    p.add_argument("--no-banks", dest="banks", action="store_const", const="")
    p.add_argument("--also", nargs="*", choices=list(SCORERS), default=["logme", "hscore"])
    p.add_argument("--note", default="")
    p.add_argument("--out", type=output_file, default=None)
    args = p.parse_args(argv)
    enable_persistent_cache()
    doc = run(args)
    out = Path(args.out or RESULTS / f"exact_pca-{doc['device']}.json")
    write_text(out, json.dumps(doc, indent=2) + "\n", parents=True)
    write_text(out.with_suffix(".md"), markdown(doc), parents=True)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
