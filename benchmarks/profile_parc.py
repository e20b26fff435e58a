"""Where PARC's time goes at bank scale: each piece of the computation, batched over B models.

    python benchmarks/profile_parc.py                   # B = 1000, n = 500, d = 2048, f = 32
    python benchmarks/profile_parc.py --models 16 --d 256   # a quick look on a CPU

On GPUs, XLA runs a batch of dense factorisations (eigh, QR, SVD) as one batched solver call
only for small matrices (32 x 32 and below, plus Cholesky and triangular solves); a batch of
larger ones becomes one solver call per model. This benchmark times each piece on device-made
inputs (no host transfer; warm, compiled, ``block_until_ready``, median of repeats) so the
profile says which pieces are per-model loops.
Writes ``benchmarks/results/profile_parc-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from parc_jax import numerics
from parc_jax.atomic import write_text
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.scorers.parc import parc_core

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import int_at_least, output_file, positive_int  # noqa: E402
from throughput import device_name, timed  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def features(key: jax.Array, b: int, n: int, d: int) -> jax.Array:
    """``[b, n, d]`` float32 with a decaying spectrum (rank 64 signal plus noise)."""
    k1, k2, k3 = jax.random.split(key, 3)
    z = jax.random.normal(k1, (b, n, 64)) * (0.9 ** jnp.arange(64) * 3.0 + 0.1)
    mix = jax.random.normal(k2, (64, d)) / 8.0
    return jnp.maximum(z @ mix + 0.05 * jax.random.normal(k3, (b, n, d)), 0.0)


def gram(x: jax.Array) -> jax.Array:
    xc = numerics.center(x)
    return numerics.matmul(xc, xc.T)


def distances(scores: jax.Array) -> jax.Array:
    return numerics.upper_triangle(numerics.row_correlation_distance(scores))


def pieces(f: int) -> dict:
    """name -> (function of one model's inputs, which input it takes)."""
    p = f + numerics._FAST_PCA_OVERSAMPLE

    def sort_keys(dist):
        return jnp.sort(numerics._order_keys(dist))

    def searchsorted(dist):
        keys = numerics._order_keys(dist)
        s = jnp.sort(keys)
        return jnp.searchsorted(s, keys, side="left") + jnp.searchsorted(s, keys, side="right")

    return {
        "gram matmul [n,d]x[d,n] (HIGHEST)": (gram, "x"),
        "eigh [n,n]": (lambda a: jnp.linalg.eigh(a)[0], "gram"),
        f"eigh [{p},{p}]": (lambda a: jnp.linalg.eigh(a[:p, :p])[0], "gram"),
        f"eigh [{f},{f}]": (lambda a: jnp.linalg.eigh(a[:f, :f])[0], "gram"),
        f"householder qr [d,{f}]": (lambda x: jnp.linalg.qr(x[:f].T)[0], "x"),
        f"cholesky qr [d,{f}]": (lambda x: numerics.qr_near_orthogonal(x[:f].T)[0], "x"),
        f"householder qr [n,{p}]": (lambda a: jnp.linalg.qr(a[:, :p])[0], "gram"),
        f"svd [n,{f}]": (lambda a: jnp.linalg.svd(a[:, :f], full_matrices=False)[1], "gram"),
        f"svd [{f},{f}]": (lambda a: jnp.linalg.svd(a[:f, :f])[1], "gram"),
        "correlation distances (f cols)": (distances, "scores"),
        "sort int32 keys [n(n-1)/2]": (sort_keys, "dist"),
        "sort + 2 searchsorted": (searchsorted, "dist"),
        "spearman_two_valued (flagbit, default)": (
            lambda dist, high: numerics.spearman_two_valued(dist, high, method="flagbit"),
            "dist+high",
        ),
        "spearman_two_valued (search)": (
            lambda dist, high: numerics.spearman_two_valued(dist, high, method="search"),
            "dist+high",
        ),
        "spearman_two_valued (pairs)": (
            lambda dist, high: numerics.spearman_two_valued(dist, high, method="pairs"),
            "dist+high",
        ),
    }


def time_call(fn, args, repeats: int) -> tuple[float, float]:
    """``(median warm s, compile s)`` of ``fn(*args)``."""
    first, warm = timed(lambda: fn(*args), repeats)
    return warm, max(0.0, first - warm)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", type=positive_int, default=1000)
    p.add_argument("--n", type=int_at_least(2), default=500)
    p.add_argument("--d", type=positive_int, default=2048)
    p.add_argument("--f", type=positive_int, default=32)
    p.add_argument("--num-classes", type=int_at_least(2), default=100)
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--out", type=output_file, default=None)
    args = p.parse_args(argv)
    enable_persistent_cache()  # compiled programs persist across runs
    device = device_name()
    out = Path(args.out or RESULTS / f"profile_parc-{device}.json")
    key = jax.random.key(0)
    x = jax.block_until_ready(features(key, args.models, args.n, args.d))
    labels = jax.random.randint(jax.random.key(1), (args.n,), 0, args.num_classes)
    rows, cols = jnp.triu_indices(args.n, k=1)
    high = labels[rows] != labels[cols]
    inputs = {"x": x}
    doc = {
        "device": device,
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/profile_parc.py", *sys.argv[1:]]),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "pieces": {},
    }

    def record(name: str, warm: float, compile_s: float) -> None:
        doc["pieces"][name] = {"device_s": warm, "compile_s": compile_s}
        write_text(out, json.dumps(doc, indent=2) + "\n", parents=True)
        print(f"{name:36s} {warm:9.4f} s  ({1e3 * warm / args.models:7.3f} ms/model)  "
              f"compile {compile_s:5.1f} s", flush=True)  # fmt: skip

    default_qr = numerics.FAST_PCA_QR
    whole = (lambda v: parc_core(v, labels, num_classes=args.num_classes), "parc whole")
    alone = (lambda v: numerics.pca(v, args.f)[0], "pca alone")

    def variants(parts) -> None:
        for pca, qr in [("exact", None), ("fast", "cholesky"), ("fast", "householder")]:
            numerics.FAST_PCA_QR = qr or default_qr  # read at trace time
            label = f"{pca} PCA" + (f", {qr} QR" if qr else "")
            with numerics.pca_mode(pca):
                warm, comp = time_call(jax.jit(jax.vmap(parts[0])), (x,), args.repeats)
            record(f"{parts[1]} ({label})", warm, comp)
        numerics.FAST_PCA_QR = default_qr

    variants(whole)  # the headline first, the breakdown after it
    for name, (one, needs) in pieces(args.f).items():
        if needs == "gram" and "gram" not in inputs:
            inputs["gram"] = jax.jit(jax.vmap(gram))(x)
        if needs in ("scores", "dist", "dist+high") and "scores" not in inputs:
            inputs["scores"] = jax.jit(jax.vmap(lambda v: numerics.pca(v, args.f)[0]))(x)
        if needs in ("dist", "dist+high") and "dist" not in inputs:
            inputs["dist"] = jax.jit(jax.vmap(distances))(inputs["scores"])
        try:
            if needs == "dist+high":
                fn = jax.jit(jax.vmap(one, in_axes=(0, None)))
                warm, comp = time_call(fn, (inputs["dist"], high), args.repeats)
            else:
                fn = jax.jit(jax.vmap(one))
                warm, comp = time_call(fn, (inputs[needs],), args.repeats)
        except Exception as exc:  # noqa: BLE001 - record and go on
            doc["pieces"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            print(f"{name}: FAILED {doc['pieces'][name]['error']}", flush=True)
            continue
        record(name, warm, comp)
    variants(alone)
    return 0


if __name__ == "__main__":
    sys.exit(main())
