"""Throughput of the batched engine against the plain NumPy/SciPy reference loop.

    python benchmarks/throughput.py                       # every scorer, B in {1, 16, 64}
    python benchmarks/throughput.py --batch-sizes 1 16 64 256 1024 --methods parc logme

Synthetic banks with class structure (``parc_jax.synthetic``): n = 500, d mixed over
{512, 2048, 4096}, K = 100, z = 1000, float16 features. For each scorer and bank size B:

* engine, end to end (``score_bank`` on an in-memory bank: padding, host-to-device transfer,
  compute): warm-up first, compilation excluded, median of repeats, ms per model;
* engine, device only (the compiled chunk function on device-resident chunks,
  ``block_until_ready``);
* compile time (first call minus a warm call);
* the reference loop (``parc_jax.reference``) in the same run, ms per model over the same mix
  of widths as the engine's bank (each width timed once on a pool model after a warm-up: the
  loop does not batch, so its cost per model depends on the width only);
* peak memory: RSS sampled during the engine runs (and the device's peak bytes where reported).

Results go to ``benchmarks/results/throughput-<device>.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np
import psutil

from parc_jax import engine, reference
from parc_jax.api import _narrow, _target_info, score_bank
from parc_jax.atomic import write_text
from parc_jax.bank import Bank, ModelEntry
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.engine import _assembly
from parc_jax.scorers.logistic import stratified_half
from parc_jax.scorers.registry import PROBS, SCORERS
from parc_jax.synthetic import synthetic_bank

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import int_at_least, output_file, positive_float, positive_int  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class PeakRSS:
    """Samples this process's RSS every few ms in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.005) -> None:
        self.proc, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def tiled_bank(pool: Bank, size: int) -> Bank:
    """``size`` models cycling through ``pool`` (throughput does not depend on the values)."""
    models = []
    for i in range(size):
        m = pool.models[i % len(pool.models)]
        models.append(
            ModelEntry(f"{m.name}-{i}", m.features, m.architecture, m.probs, m.depth, m.source,
                       m.source_images)
        )  # fmt: skip
    return Bank(pool.target, models)


def reference_call(method: str, model: ModelEntry, bank: Bank) -> float:
    spec = SCORERS[method]
    dims = spec.default_dims if spec.reduces else None
    t = bank.target
    x = np.asarray(model.features, np.float64)
    if method == "heuristic":
        return reference.heuristic(model.depth, model.source_images, t.num_images)
    if method == "etran":  # reads raw features, reduces its LDA part itself
        dims = spec.fn.__kwdefaults__["n_dims"]
    if PROBS in spec.inputs:
        return getattr(reference, method)(model.probs, t.labels, num_classes=t.num_classes)
    if method in ("rsa", "dds"):
        return getattr(reference, method)(x, t.reference_for(model.architecture), n_dims=dims)
    if method == "logistic":
        return reference.logistic(x, t.labels, num_classes=t.num_classes,
                                  train_mask=stratified_half(t.labels), n_dims=dims)  # fmt: skip
    return getattr(reference, method)(x, t.labels, num_classes=t.num_classes, n_dims=dims)


def time_reference(method: str, bank: Bank, count: int) -> list[float]:
    """Seconds of the reference for each of the first ``count`` pool models (after a warm-up).

    Pool model ``i`` has width ``widths[i % len(widths)]``; a bank of B tiled models costs the
    loop ``sum(times[i % count] for i < B)`` (see :func:`reference_per_model`)."""
    models = bank.models[: max(1, count)]
    reference_call(method, models[0], bank)
    times = []
    for m in models:
        t0 = time.perf_counter()
        reference_call(method, m, bank)
        times.append(time.perf_counter() - t0)
    return times


def reference_per_model(times: list[float], b: int) -> float:
    """Mean reference seconds per model over the same width mix as a bank of ``b`` models."""
    return statistics.fmean(times[i % len(times)] for i in range(b))


def engine_scorer(
    methods: Sequence[str],
    target: engine.TargetInfo,
    chunk: int,
    pca: str = "exact",
    timings: dict[str, float] | None = None,
) -> Callable[[dict], dict]:
    """``engine.chunk_scorer`` for ``methods`` at their default reductions, as ``score_bank``
    runs them in one pass."""
    options = engine.EngineOptions(methods=tuple(methods),
                                   dims=tuple(engine.method_dims(methods).items()), pca=pca,
                                   chunk_size=chunk)  # fmt: skip
    return engine.chunk_scorer(options, target, timings=timings)


def time_device_only(
    methods: list[str],
    bank: Bank,
    chunk: int,
    repeats: int,
    pca: str = "exact",
    breakdown: dict[str, float] | None = None,
) -> float:
    """Seconds for all chunks of the bank, arrays already on the device, compiled. With
    ``breakdown``, one more pass fills it with the seconds of each program (the shared PCA,
    each method) over all chunks, each program waited for before the next starts."""
    target = _target_info(bank.target)
    fn = engine_scorer(methods, target, chunk, pca)
    chunks = [
        jax.device_put(arrays)
        for _, _, arrays in _assembly._chunks((_narrow(m) for m in bank.models), target, methods,
                                           chunk)
    ]  # fmt: skip
    for c in chunks:  # compile every bucket, warm up
        jax.block_until_ready(fn(c))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        outs = [fn(c) for c in chunks]
        jax.block_until_ready(outs)
        times.append(time.perf_counter() - t0)
    if breakdown is not None:
        profiled = engine_scorer(methods, target, chunk, pca, timings=breakdown)
        for c in chunks:
            profiled(c)
    return statistics.median(times)


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """``(first call s, median warm s)`` of ``fn``; every call waits on
    ``block_until_ready``, so the first one includes compilation."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def device_name() -> str:
    """``<platform>-<device kind>`` of the default device, e.g. ``gpu-NVIDIA_H100_80GB_HBM3``."""
    dev = jax.devices()[0]
    return f"{dev.platform}-{getattr(dev, 'device_kind', dev.platform)}".replace(" ", "_")


def save(doc: dict, out: Path) -> None:
    """Write the JSON (atomically) and the Markdown table beside it."""
    write_text(out, json.dumps(doc, indent=2) + "\n", parents=True)
    write_text(out.with_suffix(".md"), markdown(doc), parents=True)


def run(args: argparse.Namespace, out: Path | None = None) -> dict:
    device = device_name()
    methods = args.methods or list(SCORERS)
    pool = synthetic_bank(n=args.n, num_classes=args.num_classes, num_models=args.pool,
                          widths=tuple(args.widths), z=args.z, seed=0)  # fmt: skip
    rows: list[dict] = []
    doc = {
        "device": device,
        "devices": len(jax.devices()),
        "host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/throughput.py", *sys.argv[1:]]),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "rows": rows,
    }
    out = out or Path(args.out or RESULTS / f"throughput-{device}.json")
    start = time.perf_counter()
    ref_times: dict[str, list[float]] = {}

    def out_of_time(what: str) -> bool:
        if args.time_budget and time.perf_counter() - start > args.time_budget:
            doc.setdefault("stopped", f"time budget of {args.time_budget} s spent before {what}")
            return True
        return False

    for method in methods:
        if out_of_time(method):
            print(doc["stopped"], file=sys.stderr, flush=True)
            break
        skip_ref = method in (args.skip_reference or [])
        ref_times[method] = (
            [float("nan")] if skip_ref else time_reference(method, pool, args.ref_models)
        )
        for b in args.batch_sizes:
            if out_of_time(f"{method} B={b}"):
                break
            rows.append(measure(method, [method], b, pool, ref_times, args))
            save(doc, out)  # after every row: an interrupted run keeps what it measured
    if args.together and len(methods) > 1 and not doc.get("stopped"):
        for b in args.batch_sizes:
            if out_of_time(f"all together B={b}"):
                break
            rows.append(measure("together", methods, b, pool, ref_times, args))
            save(doc, out)
    return doc


def measure(
    label: str,
    methods: list[str],
    b: int,
    pool: Bank,
    ref_times: dict[str, list[float]],
    args: argparse.Namespace,
) -> dict:
    """One row: ``methods`` scored together by the engine on ``b`` tiled models; the reference
    is the sum of the methods' reference loops."""  # fmt: skip
    bank = tiled_bank(pool, b)
    chunk = min(b, args.chunk_size)
    call = dict(methods=methods, chunk_size=chunk, pca=args.pca, progress=False)
    t0 = time.perf_counter()
    score_bank(bank, **call)
    first = time.perf_counter() - t0
    times = []
    with PeakRSS() as mem:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            score_bank(bank, **call)
            times.append(time.perf_counter() - t0)
    warm = statistics.median(times)
    ref_s = sum(reference_per_model(ref_times[m], b) for m in methods)
    skip_ref = bool(np.isnan(ref_s))
    breakdown: dict[str, float] | None = {} if len(methods) > 1 else None
    device_s = time_device_only(methods, bank, chunk, args.repeats, args.pca, breakdown)
    stats = jax.devices()[0].memory_stats() or {}
    row = {
        "method": label,
        "methods": methods,
        "models": b,
        "chunk_size": chunk,
        "engine_ms_per_model": 1e3 * warm / b,
        "device_ms_per_model": 1e3 * device_s / b,
        "device_s_total": device_s,
        "compile_s": max(0.0, first - warm),
        "reference_ms_per_model": None if skip_ref else 1e3 * ref_s,
        "speedup": None if skip_ref else ref_s * b / warm,
        "peak_rss_gb": mem.peak / 2**30,
        "peak_device_gb": stats.get("peak_bytes_in_use", 0) / 2**30 or None,
    }
    if breakdown:
        row["breakdown_ms_per_model"] = {k: 1e3 * v / b for k, v in breakdown.items()}
    print(
        f"{label:14s} B={b:5d} engine {row['engine_ms_per_model']:9.3f} ms/model "
        f"(device {row['device_ms_per_model']:8.3f}) "
        f"ref {1e3 * ref_s:9.2f} -> x{ref_s * b / warm:7.1f}  compile {row['compile_s']:.1f}s",
        file=sys.stderr,
        flush=True,
    )
    return row


def markdown(doc: dict) -> str:
    lines = [
        f"Device: {doc['device']} ({doc['devices']} device(s)), host {doc['host']['cores']} "
        f"cores, jax {doc['jax']}, {doc['date']}. Command: `{doc['command']}`",
        "",
        "| scorer | B | engine ms/model | device ms/model | reference ms/model | speed-up |"
        " compile s | peak RSS GB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        ref = r["reference_ms_per_model"]
        ref_cells = "not run | -" if ref is None else f"{ref:.2f} | {r['speedup']:.1f}x"
        lines.append(
            f"| {r['method']} | {r['models']} | {r['engine_ms_per_model']:.3f} | "
            f"{r['device_ms_per_model']:.3f} | {ref_cells} | {r['compile_s']:.1f} | "
            f"{r['peak_rss_gb']:.2f} |"
        )
    for r in doc["rows"]:
        if r.get("breakdown_ms_per_model"):
            parts = ", ".join(f"{k} {v:.1f}" for k, v in r["breakdown_ms_per_model"].items())
            lines += ["", f"{r['method']} (B = {r['models']}), ms per model by program: {parts}."]
    if doc.get("stopped"):
        lines += ["", f"Stopped early: {doc['stopped']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--methods", nargs="*", choices=list(SCORERS))
    p.add_argument("--batch-sizes", nargs="+", type=positive_int, default=[1, 16, 64])
    p.add_argument("--widths", nargs="+", type=positive_int, default=[512, 2048, 4096])
    p.add_argument("--n", type=int_at_least(2), default=500)
    p.add_argument("--num-classes", type=int_at_least(2), default=100)
    p.add_argument("--z", type=positive_int, default=1000)
    p.add_argument(
        "--pool", type=positive_int, default=6, help="distinct synthetic models, tiled to B"
    )
    p.add_argument("--chunk-size", type=positive_int, default=64)
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--ref-models", type=positive_int, default=3)
    p.add_argument(
        "--skip-reference",
        nargs="*",
        choices=list(SCORERS),
        help="scorers whose (slow) reference loop is not timed: no speed-up column",
    )
    p.add_argument(
        "--time-budget",
        type=positive_float,
        default=None,
        help="seconds after which no further scorer is started (rows so far kept)",
    )
    p.add_argument(
        "--pca",
        choices=["exact", "fast"],
        default="exact",
        help="the engine's PCA mode (the reference is always exact)",
    )
    p.add_argument(
        "--together",
        action="store_true",
        help="also score all --methods together in one pass (row 'together'; reference: the "
        "sum of their loops)",
    )
    p.add_argument(
        "--out", type=output_file, help="JSON path (default results/throughput-<device>.json)"
    )
    args = p.parse_args(argv)
    enable_persistent_cache()  # compiled programs persist across runs
    doc = run(args)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
