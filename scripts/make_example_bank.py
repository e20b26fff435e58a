"""Regenerate the packaged example bank ``parc_jax/data/example_bank.msgpack``.

Runs the ``tiny`` preset (3 sources x 4 architectures, target coil20; resumable, in
``runs/groundtruth/tiny``), then writes its probe bank (n = 300, float16 features, probabilities,
depth, source, source and target sizes, from-scratch reference features per architecture, and
each model's fine-tuned coil20 accuracy in ``meta["oracle_accuracy"]``).

    python scripts/make_example_bank.py

Deterministic on one machine: every seed is fixed; a different CPU may round differently.
"""

import argparse
from pathlib import Path

from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.groundtruth.export import export_bank
from parc_jax.groundtruth.main import stage_main

OUT = Path(__file__).resolve().parents[1] / "parc_jax" / "data" / "example_bank.msgpack"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/groundtruth/tiny")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    enable_persistent_cache()  # compiled programs persist across runs
    argv = ["--preset", "tiny", "--run-dir", args.run_dir]
    if args.no_progress:
        argv.append("--no-progress")
    rc = stage_main("all", argv)
    if rc:  # a stage failed; it has said why on stderr
        return rc
    bank = export_bank(args.run_dir, "coil20", args.out)
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out}: {len(bank.models)} models, n={bank.target.n}, {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
