"""Where a user's first answer spends its time: imports, tracing, lowering, XLA compilation.

Every measurement is a fresh Python process (what a user starts), with the persistent
compilation cache in a folder of this run: **cold** = an empty cache folder, **warm** = the
same command again with the folder the cold run filled.

* ``import``: ``import parc_jax.api, parc_jax.score`` (the floor of any scoring command) and
  ``import jax`` alone; median of ``--repeats`` processes.
* ``cli``: ``python -m parc_jax`` from command to table, cold and warm, on the example bank with
  every scorer, on one ground-truth bank (28 models) with every scorer and the depth prior, and
  on the example bank with each scorer alone (cold).
* ``programs``: per compiled program (the shared PCA of a bucket, each method) the seconds of
  tracing, lowering and compiling (or loading from the cache) and its size (StableHLO op
  count), cold and warm, for the example bank and the ground-truth bank with every scorer, and
  compile only (nothing runs, ``ShapeDtypeStruct`` inputs) for a synthetic chunk of
  ``--chunk-models`` models (n = 500, d = 512, K = 100).
* ``--tree DIR`` runs the CLI measurements in another checkout (e.g. the previous commit) for a
  before/after table in one sitting; programs are measured on this tree only.

    python benchmarks/compile.py                         # ~2 min on 2 CPU cores
    python benchmarks/compile.py --tree ../before --only cli
    python benchmarks/compile.py --only programs --chunk-only  # the 1,000-model chunk alone
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import existing_dir, output_file, positive_int  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GT_BANK = ROOT / "benchmarks" / "groundtruth" / "banks" / "usps.msgpack"
STAGES = ("import", "cli", "programs")

PROGRAMS = r"""
import json, sys, time
t0 = time.perf_counter()
import jax
import numpy as np
from parc_jax import score_bank
from parc_jax.api import _target_info
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.engine import (
    EngineOptions,
    chunk_scorer,
    engine_methods,
    method_dims,
    resolve_methods,
)
from parc_jax.scorers.registry import SCORERS
imported = time.perf_counter() - t0
kind, arg, models = sys.argv[1], sys.argv[2], int(sys.argv[3])
records = []

def ops(lowered):
    return sum(1 for line in lowered.as_text().splitlines() if "stablehlo." in line)

def keep(bucket, recs):
    records.extend({"bucket": bucket, "name": r.name, "trace_s": r.trace_s, "lower_s": r.lower_s,
                    "compile_s": r.compile_s, "hlo_ops": ops(r.lowered)} for r in recs)

t1 = time.perf_counter()
if kind == "bank":
    score_bank(arg, methods="all", progress=False, on_compiled=keep)
else:  # compile only: a chunk of `models` synthetic models, as shapes
    enable_persistent_cache()
    from parc_jax.synthetic import synthetic_bank
    bank = synthetic_bank(n=500, num_classes=100, num_models=1, widths=(512,), z=1000,
                          dtype="float16", reference_width=64)
    target = _target_info(bank.target)
    run, _ = resolve_methods("all", target, bank.models)
    run = engine_methods(run)  # ncti is compiled as its per-model parts
    opts = EngineOptions(methods=tuple(run), dims=tuple(sorted(method_dims(run).items())),
                         chunk_size=models)
    s = jax.ShapeDtypeStruct
    x = {"features": s((models, 500, 512), np.float16), "feature_mask": s((models, 512), bool),
         "probs": s((models, 500, 1024), np.float32), "prob_mask": s((models, 1024), bool),
         "reference_index": s((models,), np.int32), "depth": s((models,), np.float32),
         "source_images": s((models,), np.float32)}
    chunk_scorer(opts, target).compile(x, lambda r: keep("float16 width 512", [r]))
total = time.perf_counter() - t1
print(json.dumps({"import_s": imported, "run_s": total, "programs": records}))
"""


def _env(cache: Path | None, tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env["PARC_JAX_CACHE_DIR"] = str(cache) if cache is not None else ""
    env["PYTHONPATH"] = str(tree)  # the tree's parc_jax, whatever is installed
    return env


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ...: {done.stderr.strip()[-800:]}")
    return seconds, done.stdout


def measure_imports(tree: Path, repeats: int) -> dict[str, float]:
    out = {}
    for name, code in (("jax", "import jax"), ("parc_jax", "import parc_jax.api, parc_jax.score")):
        times = [_timed([sys.executable, "-c", code], _env(None, tree), tree)[0]
                 for _ in range(repeats)]  # fmt: skip
        out[name] = statistics.median(times)
    return out


def measure_cli(tree: Path, work: Path, methods: list[str]) -> dict[str, dict[str, float]]:
    """Command to table, cold and warm, per case."""
    cases = {"example, every scorer": [], "usps bank, every scorer, depth prior":
             ["--bank", str(GT_BANK), "--depth-prior"]}  # fmt: skip
    cases |= {f"example, {m} alone": ["--methods", m] for m in methods}
    out = {}
    for name, args in cases.items():
        cache = work / f"cli-{len(out)}"
        cmd = [sys.executable, "-m", "parc_jax.score", *args, "--no-progress"]
        cold, _ = _timed(cmd, _env(cache, tree), tree)
        entry = {"cold_s": cold}
        if "alone" not in name:
            entry["warm_s"] = _timed(cmd, _env(cache, tree), tree)[0]
        out[name] = entry
        shutil.rmtree(cache, ignore_errors=True)
        print(f"cli {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in entry.items()), flush=True)
    return out


def measure_programs(work: Path, chunk_models: int, chunk_only: bool = False) -> dict[str, dict]:
    example = str(ROOT / "parc_jax" / "data" / "example_bank.msgpack")
    cases = {"example bank, every scorer": ("bank", example),
             "usps bank (28 models), every scorer": ("bank", str(GT_BANK)),
             f"compile only, {chunk_models}-model chunk, d = 512": ("chunk", "-")}  # fmt: skip
    if chunk_only:
        cases = {k: v for k, v in cases.items() if v[0] == "chunk"}
    out = {}
    for name, (kind, arg) in cases.items():
        cache = work / f"programs-{len(out)}"
        entry = {}
        for phase in ("cold", "warm"):
            cmd = [sys.executable, "-c", PROGRAMS, kind, arg, str(chunk_models)]
            wall, stdout = _timed(cmd, _env(cache, ROOT), ROOT)
            doc = json.loads(stdout.strip().splitlines()[-1])
            entry[phase] = {"wall_s": wall, **doc}
            total = sum(p["trace_s"] + p["lower_s"] + p["compile_s"] for p in doc["programs"])
            print(f"programs {name} {phase}: {len(doc['programs'])} programs, {total:.2f} s "
                  f"(wall {wall:.2f} s)", flush=True)  # fmt: skip
        shutil.rmtree(cache, ignore_errors=True)
        out[name] = entry
    return out


def markdown(doc: dict) -> str:
    lines = [f"# Compile time ({doc['machine']})", "", f"Command: `{doc['command']}`", ""]
    if "import" in doc:
        imp = doc["import"]
        lines += [f"Import floor (median of {doc['repeats']} processes): `import jax` "
                  f"{imp['jax']:.2f} s, `import parc_jax.api, parc_jax.score` "
                  f"{imp['parc_jax']:.2f} s.", ""]  # fmt: skip
    if "cli" in doc:
        lines += ["## Command to table (`python -m parc_jax.score`)", "",
                  "| case | cold s | warm s |", "|---|---:|---:|"]  # fmt: skip
        for name, e in doc["cli"].items():
            warm = f"{e['warm_s']:.2f}" if "warm_s" in e else ""
            lines.append(f"| {name} | {e['cold_s']:.2f} | {warm} |")
        lines.append("")
    for name, entry in doc.get("programs", {}).items():
        lines += [f"## Programs: {name}", "",
                  "| bucket | program | HLO ops | trace s | lower s | compile s (cold) | "
                  "trace + lower + load s (warm) |",
                  "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        warm = {(p["bucket"], p["name"]): p for p in entry["warm"]["programs"]}
        for p in entry["cold"]["programs"]:
            w = warm.get((p["bucket"], p["name"]))
            wt = f"{w['trace_s'] + w['lower_s'] + w['compile_s']:.2f}" if w else ""
            lines.append(f"| {p['bucket']} | {p['name']} | {p['hlo_ops']} | {p['trace_s']:.2f} | "
                         f"{p['lower_s']:.2f} | {p['compile_s']:.2f} | {wt} |")  # fmt: skip
        for phase in ("cold", "warm"):
            e = entry[phase]
            total = sum(p["trace_s"] + p["lower_s"] + p["compile_s"] for p in e["programs"])
            lines.append(f"\n{phase}: {len(e['programs'])} programs, {total:.2f} s compiling; "
                         f"process wall {e['wall_s']:.2f} s (import {e['import_s']:.2f} s, "
                         f"scoring call {e['run_s']:.2f} s)")  # fmt: skip
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=STAGES, action="append",
                   help="measure only these parts (repeatable; default: all)")  # fmt: skip
    p.add_argument("--tree", type=existing_dir, default=str(ROOT),
                   help="checkout whose CLI is measured (default: this one)")  # fmt: skip
    p.add_argument("--repeats", type=positive_int, default=3, help="import measurements")
    p.add_argument("--chunk-models", type=positive_int, default=1000,
                   help="models in the compile-only chunk")  # fmt: skip
    p.add_argument("--chunk-only", action="store_true",
                   help="programs: only the compile-only chunk (not the two banks)")  # fmt: skip
    p.add_argument("--out", type=output_file, default=None,
                   help="JSON path (default: benchmarks/results/compile-<machine>.json; "
                   "the table beside it, .md)")  # fmt: skip
    args = p.parse_args(argv)
    tree = Path(args.tree).resolve()
    if not (tree / "parc_jax" / "__init__.py").is_file():
        p.error(f"--tree: {tree} holds no parc_jax package")
    stages = args.only or list(STAGES)
    if "programs" in stages and tree != ROOT:
        p.error("--tree: programs are measured on this tree only; add --only import/cli")
    from parc_jax.scorers.registry import SCORERS

    machine = f"{platform.machine()}-{os.cpu_count()}cores"
    doc: dict = {"machine": machine, "command": " ".join(["python", *sys.argv]),
                 "tree": str(tree), "repeats": args.repeats}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="parc_compile_") as tmp:
        work = Path(tmp)
        if "import" in stages:
            doc["import"] = measure_imports(tree, args.repeats)
            print(f"import: {doc['import']}", flush=True)
        if "cli" in stages:
            doc["cli"] = measure_cli(tree, work, list(SCORERS))
        if "programs" in stages:
            doc["programs"] = measure_programs(work, args.chunk_models, args.chunk_only)
    out = Path(args.out) if args.out else RESULTS / f"compile-{machine}.json"
    from parc_jax.atomic import write_text

    write_text(out, json.dumps(doc, indent=1) + "\n", parents=True)
    write_text(out.with_suffix(".md"), markdown(doc), parents=True)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
