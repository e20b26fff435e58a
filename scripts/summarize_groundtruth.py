"""Sanity report of a ground-truth run, and export of what the repository commits.

    python scripts/summarize_groundtruth.py --preset mini                 # print the report
    python scripts/summarize_groundtruth.py --preset mini --export benchmarks/groundtruth

The report: wall time per stage, fine-tuned accuracy per target and architecture (min / mean /
max over sources) beside the majority-class rate and training from scratch, the spread per
target, and flags (transfers not above chance, targets whose transfers all land within a point).
"""

import argparse
from pathlib import Path

from parc_jax.probes import export_benchmark
from parc_jax.training import get_preset, summarize


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--export", default=None, help="copy CSVs, run-0 banks and summary.md here")
    args = parser.parse_args()
    preset = get_preset(args.preset)
    run_dir = Path(args.run_dir or Path("runs") / "groundtruth" / preset.name)
    if args.export:
        for path in export_benchmark(preset, run_dir, args.export, data_dir=args.data_dir):
            print(f"wrote {path}")
    print(summarize(preset, run_dir, data_dir=args.data_dir)["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
