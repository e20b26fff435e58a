"""The engine's exact PCA by ``eigh`` and by certified subspace iteration: time, certification
rate and accuracy.

    python benchmarks/exact_pca.py                        # B = 64 per width, committed banks
    python benchmarks/exact_pca.py --models 1000 --widths 2048 --no-banks   # on a GPU

Time: the engine's reduction program (one chunk of ``--models`` models, n = 500, f = 32, the
features made on the device: no transfer), once with ``eigh`` and once with the certified
iteration (``numerics.EXACT_PCA_SOLVER``), compile and warm median of ``--repeats``, and how
many models the iteration certified (the rest go to ``eigh`` again; their cost is the eigh
route's per model). Accuracy: PARC through ``score_bank`` with each solver (the fallback
included) against the float64 NumPy/SciPy reference, on a synthetic pool and every committed
real bank.

Writes ``benchmarks/results/exact_pca-<device>.{json,md}`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from parc_jax import numerics
from parc_jax.api import score_bank
from parc_jax.atomic import write_text
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.engine import _programs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import existing_dir, output_file, positive_int  # noqa: E402
from fast_parc_accuracy import banks, compare, float64_parc  # noqa: E402
from profile_parc import features  # noqa: E402
from throughput import device_name, timed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SOLVERS = ("eigh", "certified")


def with_solver(solver: str):
    """Set ``numerics.EXACT_PCA_SOLVER`` and drop the engine's programs (traced per solver)."""
    numerics.EXACT_PCA_SOLVER = solver
    _programs._COMPILED.clear()
    _programs._EXECUTABLES.clear()


def time_reduction(args: argparse.Namespace) -> dict:
    out = {}
    for d in args.widths:
        x = features(jax.random.key(d), args.models, args.n, d).astype(np.float16)
        mask = jax.numpy.ones((args.models, d), bool)
        row: dict = {}
        for solver in SOLVERS:
            with_solver(solver)
            fn = _programs._reduction_fn((32,), "exact", False, solver == "certified")
            first, warm = timed(lambda fn=fn, x=x, mask=mask: fn(x, mask), args.repeats)
            row[solver] = {"first_s": first, "warm_s": warm,
                           "ms_per_model": 1e3 * warm / args.models}  # fmt: skip
            if solver == "certified":
                row["certified_models"] = int(np.asarray(fn(x, mask)[2]).sum())
            per_model = 1e3 * warm / args.models
            print(f"  d={d} {solver}: first {first:.2f} s, warm {warm * 1e3:.1f} ms "
                  f"({per_model:.2f} ms/model)", file=sys.stderr, flush=True)  # fmt: skip
        out[str(d)] = row
    return out


def accuracy(args: argparse.Namespace) -> dict:
    out = {}
    for name, bank in banks(None if args.no_banks else args.banks, args).items():
        want = float64_parc(bank)
        row: dict = {"models": len(bank.models),
                     "widths": "/".join(str(w) for w in sorted({m.features.shape[1]
                                                               for m in bank.models}))}  # fmt: skip
        got = {}
        for solver in SOLVERS:
            with_solver(solver)
            fell_back: list[int] = []
            original = _programs.ChunkScorer._fall_back

            def counting(self, x, outs, certified, original=original, fell_back=fell_back):
                fell_back.append(int((~np.asarray(certified)).sum()))
                return original(self, x, outs, certified)

            _programs.ChunkScorer._fall_back = counting
            try:
                res = score_bank(bank, methods=["parc"], progress=False)
            finally:
                _programs.ChunkScorer._fall_back = original
            got[solver] = np.asarray(res.scores["parc"], np.float64)
            row[solver] = compare(got[solver], want)
            if solver == "certified":
                row["fell_back"] = sum(fell_back)
        row["certified_vs_eigh"] = float(np.max(np.abs(got["certified"] - got["eigh"])))
        print(f"  {name}: |certified - eigh| {row['certified_vs_eigh']:.2e}, "
              f"fell back {row['fell_back']}", file=sys.stderr, flush=True)  # fmt: skip
        out[name] = row
    return out


def markdown(doc: dict) -> str:
    lines = [
        f"Device: {doc['device']}, jax {doc['jax']}, {doc['date']}. Certified iteration: block "
        f"f + {doc['settings']['oversample']}, checked every {doc['settings']['check']} steps, "
        f"at most {doc['settings']['max_steps']}, residual <= {doc['settings']['rtol']:.2e} x "
        f"theta_1. Command: `{doc['command']}`",
        "",
        f"Reduction program, {doc['config']['models']} models, n = {doc['config']['n']}, f = 32, "
        "float16 features made on the device; warm median (first call = compile + run):",
        "",
        "| d | eigh ms/model | certified ms/model | ratio | certified models | eigh first s | "
        "certified first s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d, r in doc["time"].items():
        e, c = r["eigh"], r["certified"]
        lines.append(
            f"| {d} | {e['ms_per_model']:.2f} | {c['ms_per_model']:.2f} | "
            f"{e['warm_s'] / c['warm_s']:.2f}x | {r['certified_models']}/{doc['config']['models']}"
            f" | {e['first_s']:.2f} | {c['first_s']:.2f} |"
        )
    if doc["accuracy"]:
        lines += [
            "",
            "PARC through `score_bank` (uncertified models fall back to eigh) against float64; "
            "|difference| in PARC points:",
            "",
            "| bank | models | widths | eigh max / mean | certified max / mean | "
            "max abs certified - eigh | fell back | top-1 same |",
            "|---|---:|---|---|---|---:|---:|---|",
        ]
        for name, r in doc["accuracy"].items():
            e, c = r["eigh"], r["certified"]
            lines.append(
                f"| {name} | {r['models']} | {r['widths']} | {e['max_abs']:.4f} / "
                f"{e['mean_abs']:.4f} | {c['max_abs']:.4f} / {c['mean_abs']:.4f} | "
                f"{r['certified_vs_eigh']:.1e} | {r['fell_back']} | "
                f"{'yes' if c['same_top1'] else 'NO'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", type=positive_int, default=64, help="chunk size timed")
    p.add_argument("--n", type=positive_int, default=500)
    p.add_argument("--widths", nargs="+", type=positive_int, default=[512, 2048, 4096])
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--banks", type=existing_dir,
                   default=str(ROOT / "benchmarks/groundtruth/banks"),
                   help="folder of *.msgpack banks, searched recursively")  # fmt: skip
    p.add_argument("--no-banks", action="store_true", help="accuracy on the synthetic pool only")
    p.add_argument("--no-accuracy", action="store_true", help="time only")
    p.add_argument("--synthetic-models", type=positive_int, default=12)
    p.add_argument("--out", type=output_file, default=None)
    args = p.parse_args(argv)
    enable_persistent_cache()
    out = Path(args.out or RESULTS / f"exact_pca-{device_name()}.json")
    default = numerics.EXACT_PCA_SOLVER
    doc: dict = {
        "device": device_name(),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/exact_pca.py", *sys.argv[1:]]),
        "config": {
            "models": args.models,
            "n": args.n,
            "widths": args.widths,
            "repeats": args.repeats,
        },  # fmt: skip
        "settings": {
            "oversample": numerics.CERTIFIED_OVERSAMPLE,
            "check": numerics.CERTIFIED_CHECK,
            "max_steps": numerics.CERTIFIED_MAX_STEPS,
            "rtol": numerics.CERTIFIED_RTOL,
            "default_solver_here": "certified" if numerics.certified_exact_pca() else "eigh",
        },  # fmt: skip
    }
    try:
        doc["time"] = time_reduction(args)
        doc["accuracy"] = {} if args.no_accuracy else accuracy(args)
    finally:
        with_solver(default)
    write_text(out, json.dumps(doc, indent=2) + "\n", parents=True)
    write_text(out.with_suffix(".md"), markdown(doc), parents=True)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
