"""Is ``--pca fast`` (block subspace iteration) within 0.2 PARC points of exact PCA on real
banks? docs/metrics.md makes that the condition for it to become the default.

    python benchmarks/pca_fast.py                       # ground-truth probe banks
    python benchmarks/pca_fast.py --banks DIR --methods parc hscore

Scores every bank with each method under ``pca="exact"`` and ``pca="fast"`` and reports the
largest and mean absolute difference per target; writes ``benchmarks/results/pca_fast.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _selection import default_banks, find_banks

from parc_jax.api import score_bank
from parc_jax.atomic import write_text
from parc_jax.bank import read_bank
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.scorers.registry import SCORERS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import existing_dir, output_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--banks", type=existing_dir, default=None, help="default: "
                   "runs/groundtruth/mini/probes if present, else "
                   "benchmarks/groundtruth/banks")  # fmt: skip
    p.add_argument("--methods", nargs="+", choices=list(SCORERS), default=["parc"])
    p.add_argument("--out", type=output_file,
                   default=str(ROOT / "benchmarks/results/pca_fast.json"))  # fmt: skip
    args = p.parse_args(argv)
    enable_persistent_cache()  # compiled programs persist across runs
    if args.banks is None:
        args.banks = str(default_banks(ROOT))
    banks = find_banks(args.banks)
    rows = []
    for target, runs in sorted(banks.items()):
        for run, path in sorted(runs.items()):
            bank = read_bank(path)
            exact = score_bank(bank, methods=args.methods, pca="exact", progress=False)
            fast = score_bank(bank, methods=args.methods, pca="fast", progress=False)
            widths = sorted({int(np.shape(m.features)[1]) for m in bank.models})
            for m in args.methods:
                diff = np.abs(exact.scores[m] - fast.scores[m])
                row = {"target": target, "run": run, "method": m, "widths": widths}
                rows.append({**row, "max_abs": float(diff.max()), "mean_abs": float(diff.mean())})
    worst = {m: max(r["max_abs"] for r in rows if r["method"] == m) for m in args.methods}
    report = {"banks": args.banks, "rows": rows, "worst_max_abs": worst,
              "within_0.2": {m: w <= 0.2 for m, w in worst.items()}}  # fmt: skip
    write_text(args.out, json.dumps(report, indent=1), parents=True)
    for m in args.methods:
        print(
            f"{m}: largest |fast - exact| over {len(banks)} targets x runs = {worst[m]:.4f} "
            f"points ({'within' if worst[m] <= 0.2 else 'NOT within'} 0.2)"
        )
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
