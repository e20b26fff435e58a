"""Tie-group bounds for average ranks: two binary searches against one search and a scan.

``numerics._tie_bounds_by_search`` (the CPU's way to average ranks, for PARC, RSA and every
Spearman) gives each of ``m`` int32 keys the first and last position of its tie group among
the sorted keys. This times, batched over ``B`` models as the engine runs it (warm-up call
excluded, ``block_until_ready``, calls interleaved round-robin, median of repeats):

* ``two searches``: a left- and a right-side ``searchsorted`` of every key (the earlier way);
* ``one search + scan``: the left-side search, the group's last position read from one
  reverse scan over the sorted keys (``numerics._tie_bounds_by_search`` now);
* ``sort alone``: the bare-key sort both start with.

It checks that both give the same integers, on distinct keys and on keys with ties.

    python benchmarks/rank_bounds.py [--models 16] [--n 500] [--repeats 15]

Prints a table and writes ``benchmarks/results/rank_bounds-<device>.json`` (atomically).
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


def two_searches(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The earlier bounds: a left- and a right-side binary search of every key."""
    sorted_keys = jnp.sort(keys)
    left = jnp.searchsorted(sorted_keys, keys, side="left")
    return left, jnp.searchsorted(sorted_keys, keys, side="right") - 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", type=positive_int, default=16)
    p.add_argument(
        "--n", type=int_at_least(2), default=500, help="probe size: m = n (n - 1) / 2 keys"
    )
    p.add_argument("--repeats", type=positive_int, default=15)
    p.add_argument(
        "--out", type=output_file, help="JSON path (default results/rank_bounds-<device>.json)"
    )
    args = p.parse_args(argv)
    enable_persistent_cache()  # compiled programs persist across runs
    m = args.n * (args.n - 1) // 2
    rng = np.random.default_rng(0)
    values = rng.random((args.models, m)).astype(np.float32)
    keys = jax.vmap(numerics._order_keys)(jnp.asarray(values))
    fns = {
        "two searches": jax.jit(jax.vmap(two_searches)),
        "one search + scan": jax.jit(jax.vmap(numerics._tie_bounds_by_search)),
        "sort alone": jax.jit(jax.vmap(jnp.sort)),
    }
    for tied in (keys, keys // 64):  # distinct keys, then groups of up to ~64
        a, b = fns["two searches"](tied), fns["one search + scan"](tied)
        if not all(bool(jnp.array_equal(x, y)) for x, y in zip(a, b, strict=True)):
            sys.exit("the two ways gave different tie bounds")
    for fn in fns.values():
        jax.block_until_ready(fn(keys))  # compile and warm up, excluded
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(keys))
            times[name].append(1e3 * (time.perf_counter() - start) / args.models)
    ms = {name: statistics.median(t) for name, t in times.items()}
    device = device_name()
    doc = {
        "device": device,
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/rank_bounds.py", *(argv or sys.argv[1:])]),
        "config": {"models": args.models, "keys_per_model": m, "repeats": args.repeats},
        "ms_per_model": ms,
        "times_ms_per_model": times,
    }
    write_text(
        Path(args.out or RESULTS / f"rank_bounds-{device}.json"),
        json.dumps(doc, indent=2) + "\n",
        parents=True,
    )
    print(f"| bounds of {m:,} keys, B = {args.models} ({device}) | ms per model |")
    print("|---|---:|")
    for name, value in ms.items():
        print(f"| {name} | {value:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
