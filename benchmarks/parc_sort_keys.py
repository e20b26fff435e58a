"""Sort keys for PARC's ranks: float32 vs int32 keys, and one sort vs two per PARC score.

For single-label targets the label distance takes two values, so PARC's Spearman correlation
needs only the average ranks of the feature distances (one sort, ties exact). This script
times, on the current JAX backend (compile excluded by a warm-up call, ``block_until_ready``,
median of repeats):

1. sorting the ``n (n - 1) / 2`` feature distances of one model (with the index payload that
   ranking needs) by float32 keys, by the sign-aware int32 keys of ``numerics._order_keys``,
   and by clamped bit patterns (``max(D, 0) + 0.0`` bitcast to int32, no sign handling);
2. the two-valued Spearman of those distances: ``numerics.spearman_two_valued`` (one sort of
   (key, index) pairs) against a payload-free variant (sort the int32 keys alone, then find
   each value's tie group by binary search; same exact ranks);
3. ``parc_core`` for one model (``n`` probe images, PCA to ``f`` dims) with the one-sort path,
   the generic two-sort ``numerics.spearman`` path, and the payload-free variant.

It also checks that the three key kinds give the same order and tie groups on these
distances (clamping merges negative rounding noise into 0, which it reports).

    python benchmarks/parc_sort_keys.py [--n 500] [--f 32] [--repeats 30]

Prints a table and writes ``benchmarks/results/parc_sort_keys.json`` (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from parc_jax import numerics
from parc_jax.atomic import write_text
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.scorers.parc import _feature_distances, parc_core

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import int_at_least, output_file, positive_int  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "parc_sort_keys.json"


def make_probe(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class means plus noise with a decaying spectrum: ``(features [n, d], labels [n])``."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
    means = rng.normal(size=(k, d))
    x = (means[labels] + rng.normal(size=(n, d))) / (1.0 + np.arange(d)) ** 0.5
    return x.astype(np.float32), labels.astype(np.int32)


def float_keys(v: jax.Array) -> jax.Array:
    return v


def clamped_keys(v: jax.Array) -> jax.Array:
    """Bit patterns of ``max(v, 0) + 0.0``: non-negative floats sort like their bits."""
    return lax.bitcast_convert_type(jnp.maximum(v, 0.0) + 0.0, jnp.int32)


def sort_with_index(key_fn: Callable[[jax.Array], jax.Array]) -> Callable:
    """The ranking sort: keys plus the index payload, stable, one key."""

    def run(v: jax.Array) -> tuple[jax.Array, jax.Array]:
        keys = key_fn(v)
        order = jnp.arange(v.shape[0], dtype=jnp.int32)
        return lax.sort((keys, order), num_keys=1, is_stable=True)

    return jax.jit(run)


def parc_two_sorts(features: jax.Array, labels: jax.Array, *, num_classes: int, n_dims: int):
    """PARC through the generic Spearman: the two-valued label distance is ranked as well."""
    dist = _feature_distances(features, None, n_dims)
    rows, cols = jnp.triu_indices(features.shape[0], k=1)
    label_dist = jnp.where(labels[rows] != labels[cols], 1.0 + 1.0 / (num_classes - 1), 0.0)
    return 100.0 * numerics.spearman(dist, label_dist.astype(dist.dtype))


def spearman_two_valued_payload(values: jax.Array, high: jax.Array) -> jax.Array:
    """The earlier two-valued Spearman: one sort of (key, index) pairs, ranks by tie groups,
    labels gathered through the permutation (kept here as the comparison)."""
    m = values.shape[0]
    order = jnp.arange(m, dtype=jnp.int32)
    c, order, t = numerics._twice_centred_ranks_sorted(
        numerics._order_keys(values), order, stable=True
    )
    tie_term = numerics._tie_term(t)
    s_high = numerics._int_block_sum(c * high.astype(jnp.int32)[order]) / 2.0
    m1 = jnp.sum(high.astype(jnp.float32))
    m0 = jnp.float32(m) - m1
    ss_r = numerics._centred_sum_squares(m, tie_term)
    return (jnp.float32(m) / 2.0) * s_high / jnp.sqrt(ss_r * m0 * m1 * jnp.float32(m) / 4.0)


def parc_payload(features: jax.Array, labels: jax.Array, *, num_classes: int, n_dims: int):
    """PARC with :func:`spearman_two_valued_payload` (one sort of key/index pairs)."""
    del num_classes
    dist = _feature_distances(features, None, n_dims)
    rows, cols = jnp.triu_indices(features.shape[0], k=1)
    return 100.0 * spearman_two_valued_payload(dist, labels[rows] != labels[cols])


def time_calls(fns: dict[str, Callable[[], object]], *, repeats: int) -> dict[str, dict]:
    """Median / min wall time in ms of each thunk, ``repeats`` calls after a warm-up call.

    Calls are interleaved round-robin so that load from other processes on a shared machine
    falls on every variant alike.
    """
    for fn in fns.values():
        jax.block_until_ready(fn())  # compile + warm-up, excluded
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append((time.perf_counter() - start) * 1e3)
    return {
        name: {"median_ms": statistics.median(t), "min_ms": min(t), "repeats": repeats}
        for name, t in times.items()
    }


def tie_structure(v: np.ndarray, keys: np.ndarray) -> tuple[bool, int]:
    """Whether sorting by ``keys`` orders ``v`` and how many distinct keys there are."""
    order = np.argsort(keys, kind="stable")
    return bool(np.all(np.diff(v[order]) >= 0)), int(np.unique(keys).size)


def write_json(path: Path, payload: dict) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n", parents=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int_at_least(2), default=500, help="probe images (default 500)")
    parser.add_argument(
        "--f", type=positive_int, default=32, help="PCA dims for parc_core (default 32)"
    )
    parser.add_argument(
        "--d",
        type=positive_int,
        default=64,
        help="raw feature width (default 64: a cheap PCA, so the "
        "rank step is visible in the parc_core timings)",
    )
    parser.add_argument("--k", type=int_at_least(2), default=10, help="classes (default 10)")
    parser.add_argument("--repeats", type=positive_int, default=30)
    parser.add_argument("--out", type=output_file, default=RESULTS)
    args = parser.parse_args(argv)
    enable_persistent_cache()  # compiled programs persist across runs
    if args.k > args.n:
        parser.error(f"--k {args.k} classes need at least as many probe images (--n {args.n})")

    x_np, y_np = make_probe(args.n, args.d, args.k)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    dist = jax.jit(_feature_distances, static_argnames="n_dims")(x, None, args.f)
    dist = jax.block_until_ready(dist)
    m = int(dist.shape[0])

    keys = {
        "float32 keys": float_keys,
        "int32 keys (numerics._order_keys)": numerics._order_keys,
        "int32 keys (clamp max(D,0)+0.0)": clamped_keys,
    }
    sorts = {}
    for name, key_fn in keys.items():
        with_index = sort_with_index(key_fn)
        keys_only = jax.jit(lambda v, key_fn=key_fn: jnp.sort(key_fn(v)))
        sorts[(f"sort {m} distances + index", name)] = lambda f=with_index: f(dist)
        sorts[(f"sort {m} distances, keys only", name)] = lambda f=keys_only: f(dist)

    rows_np, cols_np = np.triu_indices(args.n, 1)
    high = jnp.asarray(y_np[rows_np] != y_np[cols_np])
    rank_variants = {
        "(key, index) sort + permuted labels": jax.jit(spearman_two_valued_payload),
        "keys-only sort + searchsorted (numerics)": jax.jit(numerics.spearman_two_valued),
    }
    rho = {}
    for name, fn in rank_variants.items():
        rho[name] = float(fn(dist, high))
        sorts[(f"two-valued spearman, {m} pairs", name)] = lambda fn=fn: fn(dist, high)

    static = ("num_classes", "n_dims")
    cores = {
        "one (key, index) sort": jax.jit(parc_payload, static_argnames=static),
        "two sorts (numerics.spearman)": jax.jit(parc_two_sorts, static_argnames=static),
        "one payload-free sort + searchsorted (parc_core)": jax.jit(
            parc_core, static_argnames=static
        ),
    }
    kw = {"num_classes": args.k, "n_dims": args.f}
    scores = {}
    case = f"parc_core n={args.n} d={args.d} f={args.f}"
    for name, fn in cores.items():
        scores[name] = float(fn(x, y, **kw))
        sorts[(case, name)] = lambda fn=fn: fn(x, y, **kw)

    timings = time_calls(sorts, repeats=args.repeats)
    rows = [{"case": c, "variant": v, **t} for (c, v), t in timings.items()]

    v = np.asarray(dist)
    checks = {}
    for name, key_fn in (("order_keys", numerics._order_keys), ("clamp", clamped_keys)):
        sorted_ok, distinct = tie_structure(v, np.asarray(jax.jit(key_fn)(dist)))
        checks[name] = {"orders_values": sorted_ok, "distinct_keys": distinct}
    checks["distinct_values"] = int(np.unique(v + 0.0).size)
    checks["negative_distances"] = int(np.sum(v < 0))

    print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"{os.cpu_count()} CPUs, jax {jax.__version__}")  # fmt: skip
    print(f"{'case':<38} {'variant':<36} {'median ms':>10} {'min ms':>9}")
    for r in rows:
        print(f"{r['case']:<38} {r['variant']:<36} {r['median_ms']:>10.2f} {r['min_ms']:>9.2f}")
    print(f"two-valued spearman: {rho}")
    print(f"parc scores: {scores}")
    print(f"key checks: {checks}")

    payload = {
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "n": args.n, "f": args.f, "d": args.d, "k": args.k, "distances": m,
        "rows": rows,
        "two_valued_spearman": rho,
        "parc_scores": scores,
        "key_checks": checks,
    }  # fmt: skip
    write_json(args.out, payload)
    print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
