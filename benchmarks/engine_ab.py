"""A/B of the engine across source trees: the same bank, the same method set, one sitting.

    git worktree add /tmp/before d421caa
    python benchmarks/engine_ab.py /tmp/before . --methods parc rsa dds ... --models 16

Each tree is timed in its own subprocess (``PYTHONPATH=<tree>``): ``score_bank`` on a synthetic
bank (``parc_jax.synthetic``, n = 500, K = 100, z = 1000, widths cycling over {512, 2048,
4096}, float16 features, one chunk), a first call (compilation included), then the median of
``--repeats`` warm calls. The trees' scores are compared (largest absolute difference per
method). Writes ``benchmarks/results/engine_ab-<device>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import existing_dir, int_at_least, output_file, positive_int  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def child(args: argparse.Namespace) -> None:
    """Runs inside one tree: time it, print one JSON line."""
    from parc_jax.api import score_bank
    from parc_jax.synthetic import synthetic_bank

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from throughput import device_name, tiled_bank

    pool = synthetic_bank(n=args.n, num_classes=args.num_classes, num_models=6,
                          widths=tuple(args.widths), z=args.z, seed=0)  # fmt: skip
    bank = tiled_bank(pool, args.models)
    call = dict(methods=args.methods, chunk_size=args.models, progress=False)
    t0 = time.perf_counter()
    score_bank(bank, **call)
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = score_bank(bank, **call)
        times.append(time.perf_counter() - t0)
    warm = statistics.median(times)
    print(json.dumps({
        "device": device_name(), "first_s": first, "warm_s": warm, "times": times,
        "ms_per_model": 1e3 * warm / args.models,
        "scores": {m: [float(v) for v in result.scores[m]] for m in args.methods},
    }))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "trees", nargs="+", type=existing_dir, help="source trees (repository roots) to compare"
    )
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--models", type=positive_int, default=16)
    p.add_argument("--widths", nargs="+", type=positive_int, default=[512, 2048, 4096])
    p.add_argument("--n", type=int_at_least(2), default=500)
    p.add_argument("--num-classes", type=int_at_least(2), default=100)
    p.add_argument("--z", type=positive_int, default=1000)
    p.add_argument("--repeats", type=positive_int, default=3)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--out", type=output_file, help="JSON path (default results/engine_ab-<device>.json)"
    )
    args = p.parse_args(argv)
    for tree in args.trees:
        if not (Path(tree) / "parc_jax" / "__init__.py").is_file():
            p.error(f"{tree!r} holds no parc_jax package; give repository roots")
    if args.child:
        child(args)
        return 0
    runs = []
    for tree in args.trees:
        root = Path(tree).resolve()
        git = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True)  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(root))
        cmd = [sys.executable, __file__, "--child", *(sys.argv[1:] if argv is None else argv)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"{root}: the timing run failed:\n{out.stderr[-3000:]}")
        run = json.loads(out.stdout.strip().splitlines()[-1])
        run.update(tree=str(root), commit=git.stdout.strip() or None)
        runs.append(run)
        print(f"{root} ({run['commit']}): {run['ms_per_model']:.1f} ms/model warm, first call "
              f"{run['first_s']:.1f} s", file=sys.stderr, flush=True)  # fmt: skip
    base = runs[0]
    for run in runs[1:]:
        run["speedup_vs_first"] = base["warm_s"] / run["warm_s"]
        run["max_abs_diff_vs_first"] = {
            m: max(abs(a - b) for a, b in zip(base["scores"][m], run["scores"][m], strict=True))
            for m in args.methods
        }
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/engine_ab.py", *(argv or sys.argv[1:])]),
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "child")},
        "runs": runs,
    }
    dest = Path(args.out or RESULTS / f"engine_ab-{base['device']}.json")
    from parc_jax.atomic import write_text

    write_text(dest, json.dumps(doc, indent=2) + "\n", parents=True)
    print("| tree | commit | ms/model (warm) | first call s | speed-up | max |diff| |")
    print("|---|---|---:|---:|---:|---:|")
    for run in runs:
        diff = max(run.get("max_abs_diff_vs_first", {0: 0.0}).values())
        speedup = run.get("speedup_vs_first", 1.0)
        print(f"| {run['tree']} | {run['commit']} | {run['ms_per_model']:.1f} | "
              f"{run['first_s']:.1f} | {speedup:.2f}x | {diff:.3g} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
