"""PARC's rank step, batched over B models: one sort of flag-carrying int32 keys against the
earlier ways to the same Spearman correlation.

``numerics.spearman_two_valued`` ranks the ``m = n (n - 1) / 2`` feature distances of a model
against its two-valued label distance. This times, batched over ``B`` models as the engine
runs it (warm-up call excluded, ``block_until_ready``, calls interleaved round-robin, median
of repeats):

* ``flagbit``: one sort of bare int32 keys carrying the low-group flag in their lowest bit,
  tie groups by scans over the sorted keys with that bit dropped (the default now);
* ``search``: one sort of the bare keys, a binary search and a scan (the CPU's way before);
* ``pairs``: one sort of (key, flag) pairs, tie groups by scans (the GPU's way before);
* ``sort alone``: a sort of the bare keys, the floor of all three.

It checks that the three give the same correlation to float32 resolution on the distances
used (``flagbit`` ties neighbouring floats that differ only in bit 0, see its docstring).

    python benchmarks/rank_step.py [--models 16] [--n 500] [--repeats 15]

Prints a table and writes ``benchmarks/results/rank_step-<device>.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from parc_jax import numerics
from parc_jax.atomic import write_text
from parc_jax.compilation_cache import enable_persistent_cache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import int_at_least, output_file, positive_int  # noqa: E402
from throughput import device_name  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def distances(b: int, n: int, k: int, f: int, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """``[b, m]`` correlation distances of f-dim class-structured features, ``high [m]``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    x = rng.normal(size=(b, n, f)) + 2.0 * rng.normal(size=(k, f))[labels]
    dist = jax.jit(jax.vmap(lambda v: numerics.upper_triangle(numerics.row_correlation_distance(
        numerics.standardize(v)))))(jnp.asarray(x, jnp.float32))  # fmt: skip
    rows, cols = np.triu_indices(n, 1)
    return dist, jnp.asarray(labels[rows] != labels[cols])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", type=positive_int, default=16)
    p.add_argument(
        "--n", type=int_at_least(3), default=500, help="probe size: m = n (n - 1) / 2 keys"
    )
    p.add_argument("--num-classes", type=int_at_least(2), default=100)
    p.add_argument("--repeats", type=positive_int, default=15)
    p.add_argument(
        "--out", type=output_file, help="JSON path (default results/rank_step-<device>.json)"
    )
    args = p.parse_args(argv)
    enable_persistent_cache()  # compiled programs persist across runs
    m = args.n * (args.n - 1) // 2
    dist, high = distances(args.models, args.n, args.num_classes, 32)

    def method(name: str):
        return jax.jit(jax.vmap(lambda d: numerics.spearman_two_valued(d, high, method=name)))

    fns = {name: method(name) for name in ("flagbit", "search", "pairs")}
    fns["sort alone"] = jax.jit(jax.vmap(lambda d: jnp.sort(numerics._order_keys(d))))
    rho = {name: np.asarray(fns[name](dist)) for name in ("flagbit", "search", "pairs")}
    # float32 sums in different orders (sorted or not): equal to ~1e-7, not bitwise
    largest = float(np.max(np.abs(rho["flagbit"] - rho["search"])))
    if np.max(np.abs(rho["search"] - rho["pairs"])) > 1e-6 or largest > 1e-6:
        sys.exit(f"the methods disagree: {rho}")
    for fn in fns.values():
        jax.block_until_ready(fn(dist))  # compile and warm up, excluded
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(dist))
            times[name].append(1e3 * (time.perf_counter() - start) / args.models)
    ms = {name: statistics.median(t) for name, t in times.items()}
    device = device_name()
    doc = {
        "device": device,
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/rank_step.py", *(argv or sys.argv[1:])]),
        "config": {"models": args.models, "keys_per_model": m, "repeats": args.repeats},
        "ms_per_model": ms,
        "largest_rho_difference_flagbit_vs_search": largest,
        "times_ms_per_model": times,
    }
    write_text(
        Path(args.out or RESULTS / f"rank_step-{device}.json"),
        json.dumps(doc, indent=2) + "\n",
        parents=True,
    )
    print(f"| rank step of {m:,} distances, B = {args.models} ({device}) | ms per model |")
    print("|---|---:|")
    for name, value in ms.items():
        print(f"| {name} | {value:.2f} |")
    print(f"largest |rho flagbit - rho search| = {largest:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
