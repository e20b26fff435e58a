"""Ground truth, stage 2: from-scratch baselines and every fine-tuning transfer -> oracle.csv.

python scripts/run_transfers.py --preset mini   # resumable; see --help, benchmarks/groundtruth
"""

from parc_jax.training import stage_main

if __name__ == "__main__":
    raise SystemExit(stage_main("transfers"))
