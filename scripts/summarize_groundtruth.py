"""Sanity report of a ground-truth run, and export of what the repository commits.

    python scripts/summarize_groundtruth.py --preset mini                 # print the report
    python scripts/summarize_groundtruth.py --preset mini --export benchmarks/groundtruth

The report: wall time per stage, fine-tuned accuracy per target and architecture (min / mean /
max over sources) beside the majority-class rate and training from scratch, the spread per
target, and flags (transfers not above chance, targets whose transfers all land within a point).

A missing run dir or one without transfers is an error (exit 2); an oracle short of the
preset's planned transfers is reported with a warning on stderr. ``--export`` checks every
input first (the CSVs, ``timings.json``, the run-0 probe bank of every target) and writes
nothing if one is missing; each output is then written atomically.
"""

import argparse
import sys
from pathlib import Path

from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.groundtruth.export import export_benchmark
from parc_jax.groundtruth.pipeline import read_csv
from parc_jax.groundtruth.presets import get_preset
from parc_jax.groundtruth.report import summarize


def check_run(preset, run_dir: Path) -> list[str]:
    """Refuse a missing run dir or one without transfers; the warnings to print."""
    if not run_dir.is_dir():
        raise ValueError(f"run dir {run_dir} does not exist; pass --run-dir of a finished run")
    oracle = read_csv(run_dir / "oracle.csv")
    planned = len(preset.transfers())
    if not oracle:
        raise ValueError(
            f"run dir {run_dir}: no transfers in oracle.csv ({planned} planned); run the "
            "transfers stage first"
        )
    done = {(r["architecture"], r["source"], r["target"]) for r in oracle}
    missing = [t for t in preset.transfers() if t not in done]
    if missing:
        eg = ", ".join("/".join(t) for t in missing[:3])
        return [
            f"warning: oracle incomplete: {planned - len(missing)} of {planned} planned transfers "
            f"have a fine-tuned accuracy (missing e.g. {eg})"
        ]
    return []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--export", default=None, help="copy CSVs, run-0 banks and summary.md here")
    args = parser.parse_args(argv)
    enable_persistent_cache()  # compiled programs persist across runs
    try:
        preset = get_preset(args.preset)
        run_dir = Path(args.run_dir or Path("runs") / "groundtruth" / preset.name)
        for line in check_run(preset, run_dir):
            print(line, file=sys.stderr)
        report = summarize(preset, run_dir, data_dir=args.data_dir)
        if args.export:
            written = export_benchmark(
                preset, run_dir, args.export, data_dir=args.data_dir, markdown=report["markdown"]
            )
            for path in written:
                print(f"wrote {path}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
