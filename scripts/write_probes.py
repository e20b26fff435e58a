"""Ground truth, stage 3: probe sets and feature extraction -> one bank per target and run.

python scripts/write_probes.py --preset mini    # resumable; see --help, benchmarks/groundtruth
"""

from parc_jax.groundtruth.main import stage_main

if __name__ == "__main__":
    raise SystemExit(stage_main("probes"))
