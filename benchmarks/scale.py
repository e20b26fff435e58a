"""Streaming at scale: a bank of 1,000 and 10,000 models (a directory of shards) scored with
peak host memory set by the chunk size, not by the bank size.

    python benchmarks/scale.py                      # 1k and 10k models, PARC, chunk 64
    python benchmarks/scale.py --models 1000 --chunk-sizes 16 64 256

Synthetic features with class structure (``parc_jax.synthetic``): n = 500, d = 256, K = 100,
float16, 250 models per shard (10k models = 2.5 GB on disk, generated once into
``runs/scale/``). Each run is a fresh child process, so its peak RSS (``wait4``) is its own;
models per second count the whole run (reading, padding, compute) after start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax

from parc_jax.atomic import write_text
from parc_jax.scorers.registry import PROBS, REFERENCE, SCORERS
from parc_jax.synthetic import write_sharded_bank

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import method_list, output_dir, positive_int  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PER_SHARD = 250
# the bank has features, labels and model facts only: no probabilities, no reference features
METHODS = ["all", *(m for m, s in SCORERS.items() if not {PROBS, REFERENCE} & set(s.inputs))]

CHILD = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    from parc_jax.api import score_bank
    import jax
    jax.numpy.zeros(1).block_until_ready()
    t1 = time.perf_counter()
    res = score_bank(sys.argv[1], methods=sys.argv[2].split(","), chunk_size=int(sys.argv[3]),
                     progress=False)
    t2 = time.perf_counter()
    print(json.dumps({"models": len(res), "startup_s": t1 - t0, "score_s": t2 - t1}))
    """
)


def ensure_bank(directory: Path, num_models: int) -> Path:
    """Write the shards that are missing (deterministic, resumable)."""
    directory.mkdir(parents=True, exist_ok=True)
    shards = (num_models + PER_SHARD - 1) // PER_SHARD
    if len(list(directory.glob("shard*.msgpack"))) != shards:
        write_sharded_bank(directory, num_models=num_models, models_per_shard=PER_SHARD,
                           widths=(256,), seed=0)  # fmt: skip
    return directory


def run_child(bank: Path, methods: str, chunk: int) -> dict:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(bank), methods, str(chunk)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(err[-2000:])
    doc = json.loads(out.strip().splitlines()[-1])
    doc["peak_rss_gb"] = usage.ru_maxrss * 1024 / 2**30  # ru_maxrss is KiB on Linux
    doc["models_per_s"] = doc["models"] / doc["score_s"]
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", nargs="+", type=positive_int, default=[1000, 10000])
    p.add_argument("--chunk-sizes", nargs="+", type=positive_int, default=[64])
    p.add_argument("--methods", type=method_list(METHODS), default="parc",
                   help="comma-separated, from: " + ", ".join(METHODS))  # fmt: skip
    p.add_argument("--work", type=output_dir, default=str(ROOT / "runs" / "scale"))
    args = p.parse_args(argv)
    rows = []
    for count in args.models:
        t0 = time.perf_counter()
        bank = ensure_bank(Path(args.work) / f"bank{count}", count)
        size = sum(f.stat().st_size for f in bank.glob("*.msgpack"))
        print(f"bank of {count} models: {size / 2**30:.2f} GB ({time.perf_counter() - t0:.0f} s "
              "to generate or check)", file=sys.stderr, flush=True)  # fmt: skip
        for chunk in args.chunk_sizes:
            doc = run_child(bank, args.methods, chunk)
            doc.update(bank_gb=size / 2**30, chunk_size=chunk, methods=args.methods)
            rows.append(doc)
            print(json.dumps(doc), file=sys.stderr, flush=True)
    dev = jax.devices()[0]
    result = {
        "device": f"{dev.platform}-{getattr(dev, 'device_kind', dev.platform)}",
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/scale.py", *sys.argv[1:]]),
        "rows": rows,
    }
    out = RESULTS / f"scale-{result['device'].replace(' ', '_')}.json"
    write_text(out, json.dumps(result, indent=2) + "\n", parents=True)
    lines = [
        f"{result['device']}, {result['cores']} cores, {result['date']}: `{result['command']}`",
        "",
        "| models | bank GB | methods | chunk | models/s | score s | peak RSS GB |",
        "|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['models']} | {r['bank_gb']:.2f} | {r['methods']} | {r['chunk_size']} | "
            f"{r['models_per_s']:.1f} | {r['score_s']:.1f} | {r['peak_rss_gb']:.2f} |"
        )
    table = "\n".join(lines) + "\n"
    write_text(out.with_suffix(".md"), table, parents=True)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
