"""How far is fast PARC (``pca="fast"``) from PARC with a float64 PCA, on synthetic and real
banks? The accuracy half of fast mode's bound (docs/metrics.md: within 0.2 PARC points).

    python benchmarks/fast_parc_accuracy.py                          # committed real banks
    python benchmarks/fast_parc_accuracy.py --banks DIR --iterations 2 4 8

For every bank (each ``*.msgpack`` under ``--banks``, searched recursively) and a synthetic
pool (n = 500, K = 100, widths cycling over ``--widths``, float16; ``parc_jax.synthetic``), it
scores PARC with the float64 NumPy/SciPy reference (``parc_jax.reference.parc``: SVD PCA,
``scipy.stats.spearmanr``), with the engine's exact PCA and with its fast PCA at each
``--iterations`` count (``numerics.FAST_PCA_ITERATIONS``; the compiled programs are rebuilt
for each), and reports per bank the largest and mean |engine - float64| in PARC points and the
rank changes: how many models sit at a different position of the bank's ranking than under
float64, and whether the top-ranked model is the same.

Writes ``benchmarks/results/fast_parc_accuracy.{json,md}`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from parc_jax import numerics, reference
from parc_jax.api import score_bank
from parc_jax.atomic import write_text
from parc_jax.bank import Bank, read_bank
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.engine import _programs
from parc_jax.synthetic import synthetic_bank

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import existing_dir, output_file, positive_int  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BOUND = 0.2  # PARC points, fast against float64


def float64_parc(bank: Bank) -> np.ndarray:
    t = bank.target
    return np.array([
        reference.parc(np.asarray(m.features, np.float64), t.labels, num_classes=t.num_classes)
        for m in bank.models
    ])  # fmt: skip


def engine_parc(bank: Bank, pca: str, iterations: int | None = None) -> np.ndarray:
    """PARC scores of the engine, with ``FAST_PCA_ITERATIONS = iterations`` while tracing."""
    default = numerics.FAST_PCA_ITERATIONS
    numerics.FAST_PCA_ITERATIONS = default if iterations is None else iterations
    _programs._COMPILED.clear()  # programs are cached per (dims, mode): trace them again
    try:
        return np.asarray(score_bank(bank, methods=["parc"], pca=pca, progress=False)
                          .scores["parc"], np.float64)  # fmt: skip
    finally:
        numerics.FAST_PCA_ITERATIONS = default
        _programs._COMPILED.clear()


def compare(got: np.ndarray, want: np.ndarray) -> dict:
    """|got - want| and the ranking's changes (descending score = rank 1)."""
    diff = np.abs(got - want)
    rank_got = np.argsort(np.argsort(-got, kind="stable"), kind="stable")
    rank_want = np.argsort(np.argsort(-want, kind="stable"), kind="stable")
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "models_moved": int(np.sum(rank_got != rank_want)),
        "same_top1": bool(np.argmax(got) == np.argmax(want)),
    }


def banks(folder: str | None, args: argparse.Namespace) -> dict[str, Bank]:
    out = {}
    pool = synthetic_bank(n=500, num_classes=100, num_models=args.synthetic_models,
                          widths=tuple(args.widths), z=1000, seed=0, with_probs=False)  # fmt: skip
    out[f"synthetic (widths {'/'.join(map(str, args.widths))})"] = pool
    if folder is not None:
        for path in sorted(Path(folder).rglob("*.msgpack")):
            out[str(path.relative_to(folder))] = read_bank(path)
    return out


def markdown(doc: dict) -> str:
    its = doc["iterations"]
    lines = [
        f"Device: {doc['device']}, jax {doc['jax']}, {doc['date']}. PARC (f = 32) against a "
        f"float64 SVD PCA + `scipy.stats.spearmanr`; |difference| in PARC points; moved = "
        f"models at another position of the bank's ranking; top-1 = same best model. "
        f"Command: `{doc['command']}`",
        "",
        "| bank | models | widths | exact max / mean | "
        + " | ".join(f"fast {i} it. max / mean, moved, top-1" for i in its)
        + " |",
        "|---|---:|---|---|" + "---|" * len(its),
    ]
    for name, r in doc["banks"].items():
        e = r["exact"]
        cells = [f"{e['max_abs']:.4f} / {e['mean_abs']:.4f}"]
        for i in its:
            f = r[f"fast_{i}"]
            cells.append(f"{f['max_abs']:.4f} / {f['mean_abs']:.4f}, {f['models_moved']}, "
                         f"{'yes' if f['same_top1'] else 'NO'}")  # fmt: skip
        lines.append(f"| {name} | {r['models']} | {r['widths']} | " + " | ".join(cells) + " |")
    lines += ["", "Largest |fast - float64| over every bank:"]
    for i in its:
        w = doc["worst"][f"fast_{i}"]
        lines.append(f"* {i} iterations: {w:.4f} PARC points "
                     f"({'within' if w <= BOUND else 'NOT within'} {BOUND})")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--banks", type=existing_dir,
                   default=str(ROOT / "benchmarks/groundtruth/banks"),
                   help="folder of *.msgpack banks, searched recursively")  # fmt: skip
    p.add_argument("--no-banks", action="store_true", help="the synthetic pool only")
    p.add_argument("--iterations", nargs="+", type=positive_int,
                   default=[numerics.FAST_PCA_ITERATIONS])  # fmt: skip
    p.add_argument("--synthetic-models", type=positive_int, default=12)
    p.add_argument("--widths", nargs="+", type=positive_int, default=[512, 2048, 4096])
    p.add_argument("--out", type=output_file, default=str(RESULTS / "fast_parc_accuracy.json"))
    args = p.parse_args(argv)
    enable_persistent_cache()  # compiled programs persist across runs
    dev = jax.devices()[0]
    doc: dict = {
        "device": f"{dev.platform}-{getattr(dev, 'device_kind', dev.platform)}".replace(" ", "_"),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/fast_parc_accuracy.py", *sys.argv[1:]]),
        "iterations": args.iterations,
        "default_iterations": numerics.FAST_PCA_ITERATIONS,
        "banks": {},
    }
    for name, bank in banks(None if args.no_banks else args.banks, args).items():
        want = float64_parc(bank)
        widths = sorted({int(np.shape(m.features)[1]) for m in bank.models})
        row = {"models": len(bank.models), "widths": widths}
        row["exact"] = compare(engine_parc(bank, "exact"), want)
        for i in args.iterations:
            row[f"fast_{i}"] = compare(engine_parc(bank, "fast", i), want)
        doc["banks"][name] = row
        print(f"{name}: {row}", file=sys.stderr, flush=True)
        doc["worst"] = {k: max(r[k]["max_abs"] for r in doc["banks"].values())
                        for k in ["exact", *(f"fast_{i}" for i in args.iterations)]}  # fmt: skip
        write_text(args.out, json.dumps(doc, indent=1) + "\n", parents=True)
        write_text(Path(args.out).with_suffix(".md"), markdown(doc), parents=True)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
