"""Does a stronger reference model make rsa and dds better predictors? (issue 18)

    python benchmarks/reference_strength.py      # committed banks + oracle -> benchmarks/results/

rsa and dds compare each source model's probe features with those of a model trained on the
target (the *reference*). The ground-truth pipeline trains two: the from-scratch baseline (the
fine-tuning recipe's budget) and a reference trained to a convergence rule
(``Preset.reference_epochs``); banks carry the converged one, and the scratch model's probe
features lie beside each bank (``<bank>.scratch_refs.npz``). This scores rsa and dds (with
the depth prior too) with each reference on the same banks and reports Mean PC with 95 %
bootstrap intervals and the paired difference (converged - scratch).

Writes ``reference_strength.json`` and ``reference_strength.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from _selection import find_banks

from parc_jax.api import PRIOR_SUFFIX, score_bank
from parc_jax.atomic import write_text
from parc_jax.bank import read_bank
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.evaluation import bootstrap_table, read_oracle, rows_from_result

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import existing_dir, existing_file, output_dir, positive_int  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("rsa", "dds")


def scratch_refs_path(bank_path: Path) -> Path:
    return bank_path.with_suffix(".scratch_refs.npz")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--banks", type=existing_dir, default=str(ROOT / "benchmarks/groundtruth/banks"))
    p.add_argument("--oracle", type=existing_file,
                   default=str(ROOT / "benchmarks/groundtruth/oracle.csv"))  # fmt: skip
    p.add_argument("--out", type=output_dir, default=str(ROOT / "benchmarks/results"))
    p.add_argument("--resamples", type=positive_int, default=1000)
    args = p.parse_args(argv)
    enable_persistent_cache()
    oracle = read_oracle(args.oracle)
    rows = []
    targets = []
    for target, runs in sorted(find_banks(args.banks).items()):
        for run, path in sorted(runs.items()):
            refs = scratch_refs_path(path)
            if not refs.is_file():
                print(f"error: {path}: no {refs.name} beside it (banks from a run with "
                      "converged references)", file=sys.stderr)  # fmt: skip
                return 2
            bank = read_bank(path)
            with np.load(refs, allow_pickle=False) as npz:
                scratch = {a: np.asarray(npz[a], np.float32) for a in npz.files}
            weak = dataclasses.replace(
                bank, target=dataclasses.replace(bank.target, reference_features=scratch)
            )
            for name, b in (("converged", bank), ("scratch", weak)):
                res = score_bank(b, methods=list(METHODS), depth_prior=True, progress=False)
                for r in rows_from_result(res, run=run):
                    rows.append(dict(r, method=f"{r['method']}@{name}"))
            targets.append(target)
    targets = sorted(set(targets))
    methods = [f"{m}{s}@{k}" for m in METHODS for s in ("", PRIOR_SUFFIX)
               for k in ("converged", "scratch")]  # fmt: skip
    table = bootstrap_table(rows, oracle, methods=methods, targets=targets,
                            resamples=args.resamples)  # fmt: skip

    def fmt(iv) -> str:
        return f"{iv.estimate:.1f} [{iv.low:.1f}, {iv.high:.1f}]"

    record: dict = {"targets": targets, "resamples": args.resamples, "methods": {}}
    md = [
        "## rsa and dds: converged references against from-scratch baselines",
        "",
        f"Command: `python benchmarks/reference_strength.py` · {len(targets)} targets "
        f"({', '.join(targets)}) · banks `{args.banks}` · Mean PC with 95 % two-level "
        f"bootstrap intervals ({args.resamples} draws, seed 0), differences paired.",
        "",
        "| method | converged reference | scratch reference | converged - scratch |",
        "|---|---|---|---|",
    ]
    for m in METHODS:
        for s in ("", PRIOR_SUFFIX):
            a, b = f"{m}{s}@converged", f"{m}{s}@scratch"
            d = table.difference(a, b)
            record["methods"][m + s] = {
                k: {"estimate": iv.estimate, "low": iv.low, "high": iv.high}
                for k, iv in (("converged", table.interval(a)), ("scratch", table.interval(b)),
                              ("difference", d))
            }  # fmt: skip
            md.append(f"| {m + s} | {fmt(table.interval(a))} | {fmt(table.interval(b))} | "
                      f"{fmt(d)}{' (excludes 0)' if d.excludes_zero() else ''} |")  # fmt: skip
    out = Path(args.out)
    write_text(out / "reference_strength.json", json.dumps(record, indent=1), parents=True)
    write_text(out / "reference_strength.md", "\n".join(md) + "\n", parents=True)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
