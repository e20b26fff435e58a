"""Selection quality of every scorer on the ground-truth benchmark (issue 5).

    python benchmarks/selection.py            # committed banks + oracle -> benchmarks/results/

Scores every probe bank under ``--banks`` (``<target>/run<r>.msgpack``) with every scorer, at
the paper's PCA setting and without reduction, with and without the depth prior, plus the
published code's literal-label PARC and a leave-one-target-out learned predictor; then writes

- ``selection_scores.csv``: every score (run, target, architecture, source, method, score);
  ``--scores`` reuses such a file instead of rescoring;
- ``selection.csv``: Mean PC and the other metrics/modes per method (mean, std, per run);
- ``selection.md``: the tables (paper Tab. 1/2/4 layout);
- ``selection_bars.png``, ``selection_scatter.png``: Mean PC per scorer; score vs fine-tuned
  accuracy per target for PARC+l and the two best other scorers.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import platform
import sys
import time
from pathlib import Path

import jax

from parc_jax import __version__
from parc_jax.api import PRIOR_SUFFIX
from parc_jax.bank import read_bank
from parc_jax.evaluation import evaluate, read_oracle, read_score_rows, write_score_rows
from parc_jax.selection import (
    LEARNED_FACTS,
    LEARNED_METHODS,
    NONE_SUFFIX,
    find_banks,
    learned_rows,
    markdown_report,
    model_facts,
    plot_bars,
    plot_scatter,
    score_banks,
    summarize,
    time_methods,
)
from parc_jax.training import _atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--banks", default=str(ROOT / "benchmarks/groundtruth/banks"))
    p.add_argument("--oracle", default=str(ROOT / "benchmarks/groundtruth/oracle.csv"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    p.add_argument("--scores", default=None, help="reuse this score CSV instead of rescoring")
    p.add_argument("--no-timing", action="store_true", help="skip the ms-per-transfer timing")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    out = Path(args.out)
    oracle = read_oracle(args.oracle)
    banks = find_banks(args.banks)
    sources = {k[1] for k in oracle}
    main_targets = [t for t in sorted(banks) if t in sources]
    extra_targets = [t for t in sorted(banks) if t not in sources]
    if not main_targets:  # a benchmark whose targets are never sources (the tiny preset)
        main_targets, extra_targets = extra_targets, []

    flags: dict[str, str] = {}
    if args.scores:
        rows = read_score_rows(args.scores)
    else:
        rows, flags = score_banks(banks, progress=not args.no_progress)
        write_score_rows(out / "selection_scores.csv", rows)
    rows = [r for r in rows if r["method"] != "learned"]
    scored_s = time.perf_counter() - t0

    learned_info = {}
    if len(main_targets) >= 2:
        facts = model_facts(banks)
        extra, learned_info = learned_rows(rows, oracle, facts, train_targets=main_targets)
        rows = rows + extra

    ms = {}
    if not args.no_timing:
        bank = read_bank(banks[main_targets[0] if main_targets else sorted(banks)[0]][0])
        methods = sorted({r["method"] for r in rows if PRIOR_SUFFIX not in r["method"]
                          and NONE_SUFFIX not in r["method"]
                          and r["method"] not in ("learned", "parc_literal")})  # fmt: skip
        ms = time_methods(bank, methods)

    dims = {"parc": 32, "rsa": 32, "dds": 64, "hscore": 32, "hscore_shrink": 32, "gbc": 64,
            "gbc_spherical": 64, "parc_literal": 32}  # fmt: skip
    runs = sorted({int(r["run"]) for r in rows})
    header = "\n".join([
        "## Selection quality on the mini ground-truth benchmark",
        "",
        f"Command: `python benchmarks/selection.py` · parc_jax {__version__} · jax "
        f"{jax.__version__} · {jax.devices()[0].platform} "
        f"({platform.processor() or platform.machine()})"
        f" · {time.strftime('%Y-%m-%d')} · {len(runs)} probe runs · banks `{args.banks}`",
        "",
        "ms / transfer: one model scored on one probe (n = 500) by `score_bank` with that "
        "method alone, compile excluded, median of 3, on this machine.",
        "",
        f"`learned`: ridge combination of {', '.join(LEARNED_METHODS)} and the model facts "
        f"{', '.join(LEARNED_FACTS)}, z-scored within each target, fitted leave-one-target-out "
        "on the main targets (ridge strength by an inner leave-one-target-out).",
        "",
    ])  # fmt: skip
    md = markdown_report(rows, oracle, main_targets=main_targets, extra_targets=extra_targets,
                         flags=flags, ms_per_transfer=ms, dims=dims, header=header)  # fmt: skip
    if learned_info:
        md += "\n### What the learned predictor weighs (per held-out target)\n\n"
        md += "| held-out | ridge | " + " | ".join(LEARNED_METHODS + LEARNED_FACTS) + " |\n"
        md += "|---|---|" + "---|" * (len(LEARNED_METHODS) + len(LEARNED_FACTS)) + "\n"
        for t, info in learned_info.items():
            md += f"| {t} | {info['ridge']:g} | " + " | ".join(
                f"{w:+.2f}" for w in info["weights"]) + " |\n"  # fmt: skip
    if flags:
        md += "\n### Degenerate scores\n\n" + "".join(f"- `{m}`: {n}\n" for m, n in flags.items())

    records = summarize(rows, oracle, targets=main_targets)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(out / "selection.csv", buf.getvalue().encode())
    _atomic_write_bytes(out / "selection.md", md.encode())
    _atomic_write_bytes(out / "selection_learned.json",
                        json.dumps(learned_info, indent=1).encode())  # fmt: skip

    pc = evaluate(rows, oracle, targets=main_targets)
    plot_bars({m: s for m, s in pc.items() if NONE_SUFFIX not in m}, out / "selection_bars.png",
              title="Mean PC over the main targets (paper PCA setting)")  # fmt: skip
    ranked = sorted((m for m in pc if m.endswith(PRIOR_SUFFIX) and NONE_SUFFIX not in m
                     and m != "parc+l" and "literal" not in m),
                    key=lambda m: pc[m].mean, reverse=True)  # fmt: skip
    scatter_methods = ["parc+l", *ranked[:2]] if "parc+l" in pc else ranked[:3]
    plot_scatter(rows, oracle, methods=scatter_methods, targets=main_targets,
                 path=out / "selection_scatter.png")  # fmt: skip
    print(md)
    print(f"scored in {scored_s:.0f} s, total {time.perf_counter() - t0:.0f} s; wrote "
          f"{out}/selection*.{{csv,md,png}}", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
