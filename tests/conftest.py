"""Test-session settings shared by every test file and the subprocesses they start."""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The benchmarks' shared modules (``_selection``, ``_args``) are imported by some tests.
sys.path.insert(0, str(ROOT / "benchmarks"))
# The datasets of the ground-truth tests: $PARC_JAX_DATA, else the checkout's neighbour
# ../shared/data where this repository's CI and developers keep them.
if not os.environ.get("PARC_JAX_DATA") and (ROOT.parent / "shared" / "data").is_dir():
    os.environ["PARC_JAX_DATA"] = str(ROOT.parent / "shared" / "data")

# One BLAS thread: on 2 shared cores, OpenBLAS's default threading made a float64 SVD of
# 100 x 2048 take 2.5 s instead of 0.045 s in the reference scorers.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Compiled XLA programs persist for the session, so the CLI and multi-process tests'
# subprocesses reuse what the first compile of the same program produced.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="parc_jax_xla_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


def backend_rtol(cpu: float, elsewhere: float) -> float:
    """``cpu`` on JAX's CPU backend, ``elsewhere`` on any other (GPU, TPU).

    For vmap-vs-loop and padded-vs-unpadded comparisons: batched and unbatched (or differently
    shaped) cuBLAS/cuSOLVER calls pick different kernels and round differently, so checks that
    hold bitwise or to a few ulps on the CPU need a tolerance elsewhere.
    """
    import jax  # imported here so that the environment above is set before JAX loads

    return cpu if jax.default_backend() == "cpu" else elsewhere
