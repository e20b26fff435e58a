"""Ground truth, stage 2: from-scratch baselines and every fine-tuning transfer -> oracle.csv.

python scripts/run_transfers.py --preset mini   # resumable; see --help, benchmarks/groundtruth
"""

import argparse
import sys
from pathlib import Path

from parc_jax.groundtruth.main import stage_main
from parc_jax.groundtruth.pipeline import read_csv
from parc_jax.groundtruth.presets import PRESETS


def missing_sources(preset, run_dir: Path) -> list[Path]:
    """Source models that the transfers still to run (not yet in oracle.csv) need but lack."""
    done = {(r["architecture"], r["source"], r["target"]) for r in read_csv(run_dir / "oracle.csv")}
    need = dict.fromkeys(
        run_dir / "sources" / arch / f"{source}.msgpack"
        for arch, source, target in preset.transfers()
        if (arch, source, target) not in done
    )
    return [p for p in need if not p.is_file()]


def main(argv=None) -> int:
    """Check that the sources stage is done (seconds), then run the stage (hours)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(prog=Path(sys.argv[0]).name, add_help=False)
    pre.add_argument("--preset", default="mini")
    pre.add_argument("--run-dir", default=None)
    known, _ = pre.parse_known_args(argv)
    if known.preset in PRESETS and "-h" not in argv and "--help" not in argv:
        preset = PRESETS[known.preset]
        run_dir = Path(known.run_dir or Path("runs") / "groundtruth" / preset.name)
        missing = missing_sources(preset, run_dir)
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            pre.exit(
                2,
                f"{pre.prog}: error: --run-dir: missing source model {missing[0]}{more}; run "
                f"the sources stage first (scripts/train_sources.py --preset {preset.name})\n",
            )
    return stage_main("transfers", argv)  # bad arguments: its own argparse error


if __name__ == "__main__":
    raise SystemExit(main())
