"""Host-side chunk assembly: how fast the engine pads a chunk of models into one block.

    python benchmarks/assembly.py                      # 256 models, d = 2048, 1 thread vs auto
    python benchmarks/assembly.py --models 1000 --threads 1 4 8 0

On a GPU the end-to-end path is bound by data movement, and assembly came first: on an H100's
host the 1,000-model chunk of ``benchmarks/targets.py`` (4.2 GB: float16 features, float32
probabilities) was padded at 0.77 GB/s, against 6.3 GB/s for the copy to the device. The
engine's ``_chunks`` writes a large block with a few threads
(``engine._assembly.ASSEMBLY_THREADS``);
this measures it, in GB of assembled chunk per second, for each thread count (0 = the engine's
default: one per available core, at most 8), each in its own process so each meets fresh
memory as a first chunk does:

* ``first``: the process's first chunk, written into freshly mapped memory (page faults);
* ``steady``: median of the repeats that follow, the buffers reused as ``score_stream`` does.

Every model has its own arrays (a real bank's are distinct in memory). Writes
``benchmarks/results/assembly-<host>.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from parc_jax import engine
from parc_jax.api import _target_info
from parc_jax.atomic import write_text
from parc_jax.bank import Target
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.engine import ModelBatch, _assembly

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import int_at_least, non_negative_int, output_file, positive_int  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def measure(threads: int, args: argparse.Namespace) -> dict:
    """Assemble ``args.models`` models in chunks of ``args.chunk_size`` with ``threads``."""
    engine._assembly.ASSEMBLY_THREADS = threads or None
    rng = np.random.default_rng(0)
    labels = np.arange(args.n) % args.num_classes
    target = _target_info(Target(name="assembly", labels=labels, num_classes=args.num_classes))
    base = rng.normal(size=(args.n, args.d)).astype(np.float16)
    probs = np.full((args.n, args.z), 1.0 / args.z, np.float32)
    models = [
        ModelBatch(name=f"m{i}", features=base.copy(), architecture="a", probs=probs.copy())
        for i in range(args.models)
    ]
    methods = ["parc", "leep"]  # features and probabilities: the two large arrays of a chunk
    buffers = engine.HostBuffers()
    times, nbytes = [], 0
    for _ in range(args.repeats + 1):
        t0 = time.perf_counter()
        chunks = [a for _, _, a in _assembly._chunks(models, target, methods, args.chunk_size,
                                                   buffers=buffers)]  # fmt: skip
        times.append(time.perf_counter() - t0)
        nbytes = sum(v.nbytes for c in chunks for v in c.values())
        for c in chunks:
            buffers.give_back(c)
        del chunks
    return {
        "threads": threads,
        "workers": engine._assembly._assembly_workers(),
        "bytes": nbytes,
        "first_s": times[0],
        "steady_s": statistics.median(times[1:]),
        "first_gb_s": nbytes / times[0] / 1e9,
        "steady_gb_s": nbytes / statistics.median(times[1:]) / 1e9,
    }


def _child(threads: int, args: argparse.Namespace, queue) -> None:
    queue.put(measure(threads, args))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", type=positive_int, default=256)
    p.add_argument(
        "--chunk-size", type=positive_int, default=None, help="default: all models in one"
    )
    p.add_argument("--n", type=int_at_least(2), default=500)
    p.add_argument("--d", type=positive_int, default=2048)
    p.add_argument("--z", type=positive_int, default=1000)
    p.add_argument("--num-classes", type=int_at_least(2), default=100)
    p.add_argument(
        "--threads", type=non_negative_int, nargs="+", default=[1, 0], help="0 = engine default"
    )
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--out", type=output_file, default=None)
    args = p.parse_args(argv)
    enable_persistent_cache()  # compiled programs persist across runs
    args.chunk_size = args.chunk_size or args.models
    host = f"{platform.machine()}-{len(os.sched_getaffinity(0))}cores"
    doc = {
        "command": " ".join(["python", "benchmarks/assembly.py", *sys.argv[1:]]),
        "host": host,
        "date": time.strftime("%Y-%m-%d"),
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "runs": [],
    }
    ctx = multiprocessing.get_context("spawn")
    for threads in args.threads:
        q = ctx.Queue()
        proc = ctx.Process(target=_child, args=(threads, args, q))
        proc.start()
        r = q.get()
        proc.join()
        doc["runs"].append(r)
        print(
            f"threads {threads} ({r['workers']} used): {r['bytes'] / 1e9:.2f} GB, first chunk "
            f"{r['first_gb_s']:.2f} GB/s, steady {r['steady_gb_s']:.2f} GB/s",
            flush=True,
        )
    out = args.out or RESULTS / f"assembly-{host}.json"
    write_text(out, json.dumps(doc, indent=2) + "\n", parents=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
