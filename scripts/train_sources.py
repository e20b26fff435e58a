"""Ground truth, stage 1: train every (architecture, source) model of a preset.

python scripts/train_sources.py --preset mini   # resumable; see --help, benchmarks/groundtruth
"""

from parc_jax.groundtruth.main import stage_main

if __name__ == "__main__":
    raise SystemExit(stage_main("sources"))
