"""``python -m parc_jax.bank validate|info|merge|from-npz``: the bank's command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parc_jax.bank._build import DEFAULT_ARCHITECTURE, npz_folder_to_bank
from parc_jax.bank._format import _LOAD_ERRORS, TASKS, Target
from parc_jax.bank._info import _format_info, bank_info
from parc_jax.bank._reader import open_bank
from parc_jax.bank._writer import merge_banks, write_bank


def _load_labels(path: str, key: str | None) -> np.ndarray:
    p = Path(path)

    def cannot(exc: BaseException) -> ValueError:
        return ValueError(f"--labels: cannot read {p} ({type(exc).__name__}: {exc})")

    try:
        loaded = np.load(p, allow_pickle=False)
    except _LOAD_ERRORS as exc:
        raise cannot(exc) from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded as npz:
        keys = list(npz.files)
        if key is None:
            key = "labels" if "labels" in keys else (keys[0] if len(keys) == 1 else None)
        if key is None or key not in keys:
            raise ValueError(f"--labels: {p} holds {keys}; choose one with --labels-key")
        try:
            return npz[key]
        except _LOAD_ERRORS as exc:
            raise cannot(exc) from None


def _target_text(t: Target) -> str:
    """``n=..., K=..., task=...`` (``outputs=...`` for regression) for the one-line reports."""
    count = f"outputs={t.num_classes}" if t.regression else f"K={t.num_classes}"
    return f"n={t.n}, {count}, task={t.task}"


PROG = "python -m parc_jax.bank"


def _build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Check, inspect, merge and build model banks."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate bank files or directories")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p = sub.add_parser("info", help="summarise a bank and the scorers it supports")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p = sub.add_parser("merge", help="merge banks with the same target into one file")
    p.add_argument("out", metavar="OUT")
    p.add_argument("inputs", nargs="+", metavar="IN")
    p = sub.add_parser(
        "from-npz",
        help="build a bank from a folder of per-model .npz files",
        description="Build a bank from FOLDER/*.npz, one file per model (the model's name is "
        "the file's stem). A model's file holds 'features' float [n, d] (required) and "
        "optionally 'probs' float [n, z] (source-class probabilities, rows summing to 1) and "
        "the 0-d values 'architecture' (str), 'depth' (int), 'source' (str) and "
        "'source_images' (int); other keys are refused. Files are read without pickle.",
    )
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--labels", required=True, help=".npy, or .npz (key 'labels' or --labels-key)")
    p.add_argument("--labels-key", default=None, help="the labels' key in an .npz file")
    p.add_argument("--target-name", required=True, help="the target dataset's name")
    p.add_argument(
        "--task",
        choices=TASKS,
        default=None,
        help="the target's task (default: classification for [n] labels, "
        "multilabel for [n, K] labels); regression takes real values [n] or [n, C]",
    )
    p.add_argument("--num-classes", type=int, default=None,
                   help="K (default: max label + 1, or the columns of 0/1 labels; none for "
                   "regression)")  # fmt: skip
    p.add_argument("--num-images", type=int, default=None,
                   help="images in the target's training set (the heuristic needs it)")  # fmt: skip
    p.add_argument("--architecture", default=DEFAULT_ARCHITECTURE,
                   help="for .npz files without one (default: %(default)s)")  # fmt: skip
    p.add_argument("--features-dtype", choices=("float16", "float32"), default=None,
                   help="convert every model's features (default: keep each file's)")  # fmt: skip
    p.add_argument("-o", "--out", required=True, help="the bank file to write")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """CLI entry point; returns the exit status (0 ok, 2 invalid bank or usage). ``prog`` is the
    name the usage line shows."""
    parser = _build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    try:
        if args.command == "validate":
            status = 0
            for path in args.paths:
                try:
                    reader = open_bank(path)
                    count = sum(1 for _ in reader.iter_models())
                except (ValueError, OSError) as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    status = 2
                    continue
                print(f"OK: {count} models, {_target_text(reader.target)} ({path})")
            return status
        if args.command == "info":
            info = bank_info(args.path)
            print(json.dumps(info, indent=2) if args.json else _format_info(info))
            return 0
        if args.command == "merge":
            merge_banks(args.inputs, args.out)
            reader = open_bank(args.out)
            print(f"OK: merged {reader.num_models} models into {args.out}")
            return 0
        if args.command == "from-npz":
            bank = npz_folder_to_bank(
                args.folder,
                labels=_load_labels(args.labels, args.labels_key),
                target_name=args.target_name,
                num_classes=args.num_classes,
                architecture=args.architecture,
                num_images=args.num_images,
                labels_source=args.labels,
                task=args.task,
            )
            write_bank(args.out, bank, features_dtype=args.features_dtype)
            print(f"OK: wrote {len(bank)} models, {_target_text(bank.target)} to {args.out}")
            return 0
    except (ValueError, OSError) as exc:
        print(
            f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            file=sys.stderr,
        )
        return 2
    return 2  # unreachable: argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
