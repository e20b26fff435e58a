"""Successive halving against scoring every model (issue 6), on the ground-truth probe banks.

    python benchmarks/halving.py                 # committed banks + oracle, PARC
    python benchmarks/halving.py --method knn

Writes ``benchmarks/results/halving-<method>.csv`` (one row per target, probe run and
selection) and ``halving-<method>.md`` (mean ± std over targets and runs).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from _selection import default_banks, find_banks, halving_markdown, halving_tradeoff

from parc_jax.atomic import write_text
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.evaluation import read_oracle
from parc_jax.scorers.registry import SCORERS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import existing_dir, existing_file, output_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--banks", type=existing_dir, default=None, help="default: "
                   "runs/groundtruth/mini/probes (5 runs) if present, else the committed run-0 "
                   "banks")  # fmt: skip
    p.add_argument("--oracle", type=existing_file,
                   default=str(ROOT / "benchmarks/groundtruth/oracle.csv"))  # fmt: skip
    p.add_argument("--out", type=output_dir, default=str(ROOT / "benchmarks/results"))
    p.add_argument("--method", default="parc", choices=list(SCORERS))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    enable_persistent_cache()  # compiled programs persist across runs
    if args.banks is None:
        args.banks = str(default_banks(ROOT))
    records = halving_tradeoff(find_banks(args.banks), read_oracle(args.oracle),
                               method=args.method, progress=not args.no_progress)  # fmt: skip
    if not records:
        print("no bank joins the oracle", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(records)
    write_text(out / f"halving-{args.method}.csv", buf.getvalue(), parents=True)
    cmd = "python benchmarks/halving.py" + (
        f" --method {args.method}" if args.method != "parc" else ""
    )
    md = halving_markdown(records, command=cmd)
    write_text(out / f"halving-{args.method}.md", md, parents=True)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
