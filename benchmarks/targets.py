"""The bank-scale targets: 1,000 models (n = 500, d = 2048, K = 100, z = 1000) on one device.

    python benchmarks/targets.py      # 1,000 models: every scorer in one chunk; PARC also 256, 64
    python benchmarks/targets.py --models 64 --chunk-sizes 64 --parc-chunk-sizes 16 --methods parc

The issue's targets on one H100/H200: PARC (f = 32) on 1,000 such models in under 0.05 s of
device compute after compilation, every scorer together in under 1 s. This benchmark measures,
for each chunk size (models scored per compiled call):

* ``load``: host-side assembly of the padded chunks (the engine's own ``_chunks``), GB/s;
* ``transfer``: host-to-device copy of those chunks (float16 features), GB/s;
* device compute per scorer on device-resident chunks (warm, compiled, ``block_until_ready``,
  median of repeats), compile time separately, and every scorer together as the engine runs them
  (one PCA per model shared by all), with exact and with fast PCA;
* PARC in exact and fast PCA mode, and the largest |fast - exact| PARC difference here (where
  PARC's time goes, piece by piece: ``benchmarks/profile_parc.py``);
* end to end (``score_bank`` on the in-memory bank: assembly, transfer and compute overlapped).

Synthetic features with class structure (``parc_jax.synthetic``), a pool of distinct models tiled
to the bank size (the cost of a model does not depend on its values). Writes
``benchmarks/results/targets-<device>.json`` and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

from parc_jax import engine
from parc_jax.api import _narrow, _target_info, score_bank
from parc_jax.atomic import write_text
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.scorers.registry import SCORERS
from parc_jax.synthetic import synthetic_bank

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import int_at_least, output_file, positive_int  # noqa: E402
from throughput import device_name, engine_scorer, reference_call, tiled_bank, timed  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_PARC_S = 0.05
TARGET_ALL_S = 1.0


def run(args: argparse.Namespace) -> dict:
    device = device_name()
    methods = args.methods or list(SCORERS)
    pool = synthetic_bank(n=args.n, num_classes=args.num_classes, num_models=args.pool,
                          widths=(args.d,), z=args.z, seed=0)  # fmt: skip
    bank = tiled_bank(pool, args.models)
    doc: dict = {
        "device": device,
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/targets.py", *sys.argv[1:]]),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "targets": {"parc_s": TARGET_PARC_S, "all_scorers_s": TARGET_ALL_S},
        "runs": [],
    }
    out = Path(args.out or RESULTS / f"targets-{device}.json")

    plan = [(c, methods) for c in args.chunk_sizes]
    plan += [(c, ["parc"]) for c in args.parc_chunk_sizes if "parc" in methods]
    for chunk, ms in plan:
        run_doc: dict = {"chunk_size": chunk, "methods": {}}
        doc["runs"].append(run_doc)
        measure_chunk_size(bank, ms, chunk, args, run_doc, lambda: save(doc, out))
        save(doc, out)
    return doc


def measure_chunk_size(
    bank, methods: list[str], chunk: int, args: argparse.Namespace, run_doc: dict, save_doc
) -> None:
    """Fill ``run_doc`` with the measurements for one chunk size (see the module docstring)."""
    target = _target_info(bank.target)

    t0 = time.perf_counter()
    models = (_narrow(m) for m in bank.models)
    host = [a for _, _, a in engine._assembly._chunks(models, target, methods, chunk)]
    load_s = time.perf_counter() - t0
    nbytes = sum(v.nbytes for c in host for v in c.values())
    t0 = time.perf_counter()
    chunks = jax.block_until_ready([jax.device_put(c) for c in host])
    transfer_s = time.perf_counter() - t0
    run_doc.update(
        chunks=len(chunks), load_s=load_s, transfer_s=transfer_s, bytes=nbytes,
        feature_bytes=sum(c["features"].nbytes for c in host),
        load_gb_s=nbytes / load_s / 1e9, transfer_gb_s=nbytes / transfer_s / 1e9,
    )  # fmt: skip
    if args.transfer_probe:
        run_doc["transfer_probe"] = transfer_probe(host[0]["features"])
    del host
    print(f"chunk {chunk}: {len(chunks)} chunk(s), {nbytes / 1e9:.2f} GB; load "
          f"{run_doc['load_gb_s']:.2f} GB/s, transfer {run_doc['transfer_gb_s']:.2f} GB/s",
          file=sys.stderr, flush=True)  # fmt: skip

    def method_run(ms: tuple[str, ...], pca: str = "exact") -> Callable[[], object]:
        fn = engine_scorer(ms, target, chunk, pca)
        return lambda: [fn(c) for c in chunks]

    scores = {}
    variants = [(m, "exact") for m in methods]
    if "parc" in methods:
        variants.insert(methods.index("parc") + 1, ("parc", "fast"))
    for m, pca in variants:
        key = m if pca == "exact" else f"{m} (fast PCA)"
        try:
            call = method_run((m,), pca)
            first, warm = timed(call, args.repeats)
        except Exception as exc:  # noqa: BLE001 - e.g. device memory: record, go on
            run_doc["methods"][key] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            print(f"  {key}: FAILED {run_doc['methods'][key]['error']}", file=sys.stderr)
            continue
        scores[(m, pca)] = np.concatenate([np.asarray(o[m]) for o in call()])[: args.models]
        run_doc["methods"][key] = {"device_s": warm, "compile_s": max(0.0, first - warm)}
        print(f"  {key:22s} {warm:8.4f} s device ({1e3 * warm / args.models:.3f} ms/model), "
              f"compile {first - warm:6.1f} s", file=sys.stderr, flush=True)  # fmt: skip
        save_doc()
    if ("parc", "fast") in scores:
        diff = np.abs(scores[("parc", "fast")] - scores[("parc", "exact")])
        run_doc["parc_fast_max_abs_diff"] = float(diff.max())
        # against the float64 pipeline (SVD PCA + spearmanr) on the distinct pool models
        pool = len({id(m.features) for m in bank.models})
        want = np.array([reference_call("parc", m, bank) for m in bank.models[:pool]])
        for pca in ("fast", "exact"):
            got = scores[("parc", pca)][: len(want)]
            run_doc[f"parc_{pca}_vs_float64"] = {
                "max_abs": float(np.max(np.abs(got - want))),
                "mean_abs": float(np.mean(np.abs(got - want))),
                "models": len(want),
            }
    ok = [m for m in methods if "error" not in run_doc["methods"][m]]
    if len(ok) > 1:
        # together = one shared PCA per model for all of them (engine.chunk_scorer)
        for pca, suffix in (("exact", ""), ("fast", "_fast_pca")):
            _, warm = timed(method_run(tuple(ok), pca), args.repeats)
            run_doc[f"all_methods{suffix}_device_s"], run_doc["all_methods"] = warm, ok
            print(f"  every scorer together ({pca} PCA): {warm:.3f} s device", file=sys.stderr,
                  flush=True)  # fmt: skip
            save_doc()
    chunks.clear()  # device memory back before the end-to-end runs
    e2e = [("parc", ["parc"], "exact"), ("parc (fast PCA)", ["parc"], "fast")]
    if len(ok) > 1:
        e2e.append(("every scorer", ok, "exact"))
    e2e = [(name, ms, pca, chunk) for name, ms, pca in e2e]
    e2e += [(f"parc (fast PCA), chunks of {c}", ["parc"], "fast", c)
            for c in args.e2e_chunk_sizes if c < chunk]  # fmt: skip
    for name, ms, pca, size in e2e:
        if not set(ms) <= set(ok):
            continue
        call = dict(methods=ms, pca=pca, chunk_size=size, progress=False)
        _, warm = timed(lambda call=call: score_bank(bank, **call).scores, args.e2e_repeats)
        run_doc.setdefault("end_to_end_s", {})[name] = warm
        print(f"  end to end, {name}: {warm:.3f} s", file=sys.stderr, flush=True)


def transfer_probe(features: np.ndarray) -> dict:
    """Host-to-device GB/s of one chunk's features ``[B, n, d]``: as they are (float16), as
    float32 (twice the bytes), and as 8 pieces of models put one after the other (each
    ``device_put`` async, waited for at the end), to tell the link's rate from the path's."""
    out = {}
    pieces = np.array_split(np.arange(features.shape[0]), 8)
    cases = {
        "whole": lambda: jax.device_put(features),
        "whole_float32": lambda: jax.device_put(as32),
        "8_pieces": lambda: [jax.device_put(features[p[0] : p[-1] + 1]) for p in pieces],
    }
    as32 = features.astype(np.float32)
    for name, put in cases.items():
        nbytes = as32.nbytes if name == "whole_float32" else features.nbytes
        jax.block_until_ready(put())  # warm-up: allocator, pinned staging
        t0 = time.perf_counter()
        jax.block_until_ready(put())
        seconds = time.perf_counter() - t0
        out[name] = {"s": seconds, "gb_s": nbytes / seconds / 1e9}
        print(f"  transfer {name}: {nbytes / seconds / 1e9:.2f} GB/s", file=sys.stderr, flush=True)
    return out


def save(doc: dict, out: Path) -> None:
    write_text(out, json.dumps(doc, indent=2) + "\n", parents=True)
    write_text(out.with_suffix(".md"), markdown(doc), parents=True)


def markdown(doc: dict) -> str:
    c = doc["config"]
    lines = [
        f"Device: {doc['device']}, jax {doc['jax']}, {doc['date']}. {c['models']} models, "
        f"n = {c['n']}, d = {c['d']}, K = {c['num_classes']}, z = {c['z']}, float16 features. "
        f"Command: `{doc['command']}`",
        "",
    ]
    for r in doc["runs"]:
        if "load_gb_s" not in r:
            continue
        lines += [
            f"Chunk size {r['chunk_size']} ({r['chunks']} chunk(s)): {r['bytes'] / 1e9:.2f} GB "
            f"of inputs; host assembly {r['load_s']:.2f} s ({r['load_gb_s']:.2f} GB/s), "
            f"host-to-device {r['transfer_s']:.2f} s ({r['transfer_gb_s']:.2f} GB/s).",
            "",
            "| scorer | device s (all models) | ms/model | compile s |",
            "|---|---:|---:|---:|",
        ]
        for m, v in r["methods"].items():
            if "error" in v:
                lines.append(f"| {m} | failed: {v['error'][:120]} | | |")
                continue
            lines.append(
                f"| {m} | {v['device_s']:.4f} | {1e3 * v['device_s'] / c['models']:.3f} | "
                f"{v['compile_s']:.1f} |"
            )
        for suffix, what in (("", ""), ("_fast_pca", ", fast PCA")):
            if f"all_methods{suffix}_device_s" in r:
                together = f"**all {len(r['all_methods'])} scorers together{what}**"
                lines.append(f"| {together} | {r[f'all_methods{suffix}_device_s']:.3f} | | |")
        lines.append("")
        if "parc_fast_max_abs_diff" in r:
            lines.append(f"Largest |PARC fast - exact| here: {r['parc_fast_max_abs_diff']:.4f}.")
        for pca in ("fast", "exact"):
            if f"parc_{pca}_vs_float64" in r:
                v = r[f"parc_{pca}_vs_float64"]
                lines.append(f"PARC {pca} against float64 (SVD PCA + spearmanr, "
                             f"{v['models']} distinct models): max |difference| "
                             f"{v['max_abs']:.4f}, mean {v['mean_abs']:.4f}.")  # fmt: skip
        for name, v in r.get("transfer_probe", {}).items():
            lines.append(f"Host-to-device, {name}: {v['gb_s']:.2f} GB/s ({v['s']:.2f} s).")
        for name, s in r.get("end_to_end_s", {}).items():
            lines.append(f"End to end ({name}): {s:.3f} s.")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--methods", nargs="*", choices=list(SCORERS))
    p.add_argument("--models", type=positive_int, default=1000)
    p.add_argument(
        "--chunk-sizes",
        nargs="*",
        type=positive_int,
        default=[1000],
        help="chunk sizes at which every scorer is measured",
    )
    p.add_argument(
        "--parc-chunk-sizes",
        nargs="*",
        type=positive_int,
        default=[256, 64],
        help="further chunk sizes at which PARC alone is measured",
    )
    p.add_argument("--n", type=int_at_least(2), default=500)
    p.add_argument("--d", type=positive_int, default=2048)
    p.add_argument("--num-classes", type=int_at_least(2), default=100)
    p.add_argument("--z", type=positive_int, default=1000)
    p.add_argument("--pool", type=positive_int, default=8, help="distinct synthetic models, tiled")
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--e2e-repeats", type=positive_int, default=2)
    p.add_argument(
        "--e2e-chunk-sizes",
        nargs="*",
        type=positive_int,
        default=[],
        help="further chunk sizes for end-to-end PARC (transfer/compute overlap)",
    )
    p.add_argument(
        "--transfer-probe",
        action="store_true",
        help="also time float16 / float32 / piecewise host-to-device copies",
    )
    p.add_argument(
        "--out", type=output_file, help="JSON path (default results/targets-<device>.json)"
    )
    args = p.parse_args(argv)
    enable_persistent_cache()  # compiled programs persist across runs
    if not args.chunk_sizes and not (
        args.parc_chunk_sizes and "parc" in (args.methods or list(SCORERS))
    ):
        p.error(
            "nothing to measure: give --chunk-sizes, or --parc-chunk-sizes with parc among "
            "--methods"
        )
    print(markdown(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
