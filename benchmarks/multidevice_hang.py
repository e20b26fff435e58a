"""Reproducer: score a 37-model bank on 8 forced XLA:CPU devices under a timeout.

The bank: n = 200 probe images, K = 20 classes, widths 64 and 128, float16 features,
source-class probabilities and per-architecture reference features, so ``--methods all``
runs every scorer. Each run is a fresh ``python -m parc_jax.score`` process with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``; a run that does not finish within
``--timeout`` seconds counts as a hang. Exit status 0 when every run finished and printed the
table, 1 otherwise.

    python benchmarks/multidevice_hang.py --runs 5 --timeout 300
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def build_bank(path: Path) -> None:
    """The 37-model bank described in the module docstring."""
    from parc_jax.bank import write_bank
    from parc_jax.synthetic import synthetic_bank

    bank = synthetic_bank(n=200, num_classes=20, num_models=37, widths=(64, 128), z=50, seed=3,
                          dtype="float16", reference_width=48)  # fmt: skip
    write_bank(path, bank)


def run_once(bank: Path, devices: int, timeout: float) -> tuple[bool, float, str]:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PARC_JAX_CACHE_DIR="")  # fmt: skip
    cmd = [sys.executable, "-m", "parc_jax.score", "--bank", str(bank), "--methods", "all",
           "--no-progress", "--chunk-size", "64"]  # fmt: skip
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - start, f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - start
    ok = done.returncode == 0 and "target " in done.stdout
    return ok, seconds, "" if ok else (done.stderr.strip().splitlines() or ["no output"])[-1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=_positive_int, default=5, help="fresh processes (default 5)")
    p.add_argument("--timeout", type=_positive_float, default=300.0,
                   help="seconds before a run counts as hung (default 300)")  # fmt: skip
    p.add_argument("--devices", type=_positive_int, default=8,
                   help="forced XLA:CPU devices (default 8)")  # fmt: skip
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        bank = Path(tmp) / "bank.msgpack"
        build_bank(bank)
        failures = 0
        for r in range(args.runs):
            ok, seconds, why = run_once(bank, args.devices, args.timeout)
            failures += not ok
            status = "ok" if ok else f"FAILED: {why}"
            print(f"run {r + 1}/{args.runs}: {seconds:.1f} s, {status}", flush=True)
    print(f"{args.runs - failures} of {args.runs} runs finished")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
