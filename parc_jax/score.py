"""``python -m parc_jax.score --bank bank.msgpack``: rank a model bank for a target.

Thin entry point: parses arguments, calls :func:`parc_jax.api.score_bank`, formats the result.
Exit status 0 on success, 2 on bad arguments or a bad bank (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from parc_jax.atomic import is_special, resolve_destination, write_text
from parc_jax.watchdog import DEFAULT_STALL_TIMEOUT, STALL_TIMEOUT_ENV, Watchdog

EXAMPLE_BANK = "example_bank.msgpack"
FORMATS = ("table", "json", "csv")


def example_bank_path() -> Path:
    """The real example bank shipped as package data (used when ``--bank`` is omitted)."""
    return Path(str(resources.files("parc_jax") / "data" / EXAMPLE_BANK))


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise _ArgumentError(message)


def _scorer_help() -> str:
    from parc_jax.scorers.registry import SCORERS

    width = max(len(n) for n in SCORERS)
    lines = ["scorers (higher = predicted to transfer better):"]
    for name, spec in SCORERS.items():
        dims = f" [default n_dims {spec.default_dims}]" if spec.default_dims else ""
        lines.append(f"  {name:<{width}}  {spec.description}{dims}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m parc_jax.score",
        description="Rank the models of a bank by predicted transferability to its target.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_scorer_help(),
    )
    p.add_argument("--bank", help="bank file or directory of shards (default: the example bank)")
    p.add_argument(
        "--methods", default="all", help="comma-separated scorers, or 'all' (default: all)"
    )
    p.add_argument(
        "--n-dims",
        default="default",
        help="PCA dims for every scorer that reduces, or 'none' (default: each scorer's own)",
    )
    p.add_argument("--pca", default="exact", choices=["exact", "fast"], help="PCA solver")
    p.add_argument("--depth-prior", action="store_true", help="add <method>+l (PARC Eq. 6)")
    p.add_argument("--l-max", type=float, default=50.0, help="depth normaliser of the prior")
    p.add_argument(
        "--bootstrap", type=int, default=0, help="rescore on R probe subsamples: score spread"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the probe subsamples")
    p.add_argument("--sort-by", help="method to sort by (default: the first method)")
    p.add_argument("--top", type=int, help="show only the best K models")
    p.add_argument("--format", default="table", choices=FORMATS)
    p.add_argument("--output", help="write here (atomically) instead of stdout")
    p.add_argument("--chunk-size", type=int, default=64, help="models per compiled batch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--stall-timeout",
        type=float,
        metavar="SECONDS",
        help=f"end with exit status 2 when no chunk of models completes for this long; 0 turns "
        f"it off (default: ${STALL_TIMEOUT_ENV} or {DEFAULT_STALL_TIMEOUT:g})",
    )
    p.add_argument(
        "--halving",
        type=int,
        metavar="ETA",
        help="successive halving with one method: keep the best 1/ETA per round on growing "
        "probe subsets (sub-linear cost)",
    )
    p.add_argument(
        "--halving-min-fraction",
        type=float,
        default=0.125,
        help="probe fraction of the first halving round (default 1/8)",
    )
    g = p.add_argument_group(
        "several processes/hosts (or PARC_JAX_COORDINATOR, PARC_JAX_NUM_PROCESSES, "
        "PARC_JAX_PROCESS_ID); each process scores its own shards, process 0 writes the output"
    )
    g.add_argument("--coordinator", help="HOST:PORT of process 0's coordinator")
    g.add_argument("--num-processes", type=int, help="processes in the run")
    g.add_argument("--process-id", type=int, help="this process's index, 0-based")
    return p


def _parse_dims(text: str) -> int | None | str:
    if text == "default":
        return "default"
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        raise _ArgumentError(
            f"--n-dims: expected a positive int, 'none' or 'default', got {text!r}"
        ) from None
    if value < 1:
        raise _ArgumentError(f"--n-dims: expected a positive int, got {value}")
    return value


def format_table(result, sort_by: str | None, top: int | None) -> str:
    """Fixed-width table, best first, with the score spread when it was computed."""
    rows = result.rows(sort_by=sort_by, top=top)
    cols = ["#", "model", "architecture"]
    for m in result.methods:
        cols.append(m if result.spread is None else f"{m} (±std, top1)")
    body = []
    for i, row in enumerate(rows, 1):
        cells = [str(i), row["name"], str(row["architecture"])]
        for m in result.methods:
            text = f"{row[m]:.4g}"
            if result.spread is not None:
                text += f" ±{row[f'{m}_std']:.2g} {row[f'{m}_top1']:.0%}"
            cells.append(text)
        body.append(cells)
    widths = [
        max(len(c), *(len(r[j]) for r in body)) if body else len(c) for j, c in enumerate(cols)
    ]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    out = [
        f"target {result.target['name']}: {result.target['num_probe_images']} probe images, "
        f"{result.target['num_classes']} classes, {len(result)} models; sorted by "
        f"{sort_by or result.methods[0]} (higher = better)",
        line,
        "-" * len(line),
    ]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body]
    out += _notes(result.flags)
    return "\n".join(out) + "\n"


def _notes(flags: dict[str, str]) -> list[str]:
    """One ``note: <method>: <why>`` line per flagged method (NaN scores and why): in the
    table's body, under ``flags`` in JSON, on stderr for CSV (whose body stays plain rows)."""
    return [f"note: {m}: {why}" for m, why in flags.items()]


def format_csv(result, sort_by: str | None, top: int | None) -> str:
    rows = result.rows(sort_by=sort_by, top=top)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["name"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no NaN


def _render(cols: list[str], body: list[list[str]], right: set[int]) -> list[str]:
    """Header, rule and rows of a fixed-width table; columns in ``right`` right-aligned."""
    widths = [max(len(c), *(len(r[j]) for r in body)) if body else len(c)
              for j, c in enumerate(cols)]  # fmt: skip

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    head = line(cols)
    return [head, "-" * len(head), *(line(r) for r in body)]


def _run_halving(args, bank: str, methods, n_dims, dog: Watchdog) -> str | None:
    """``--halving``: successive halving with one method; table/json/csv of the ranking, or
    None (with a note on stderr) when the bank is too small for halving to pay."""
    from parc_jax.halving import halving_pays, halving_plan, successive_halving

    if methods == "all" or len(methods) != 1:
        raise ValueError("--halving: name exactly one method with --methods")
    if args.depth_prior or args.bootstrap:
        raise ValueError("--halving: cannot be combined with --depth-prior or --bootstrap")
    if args.halving < 2:
        raise ValueError(f"--halving: expected an int >= 2, got {args.halving}")
    sizes, count = halving_plan(bank, eta=args.halving, min_fraction=args.halving_min_fraction)
    pays, why = halving_pays(count, sizes, eta=args.halving)
    if not pays:
        print(f"note: halving: {why}; scoring every model on the full probe", file=sys.stderr)
        return None

    def round_line(text: str) -> None:
        dog.stage(text)
        dog.beat()
        if not args.no_progress:
            print(text, file=sys.stderr, flush=True)

    res = successive_halving(
        bank,
        method=methods[0],
        eta=args.halving,
        min_fraction=args.halving_min_fraction,
        n_dims=n_dims,
        pca=args.pca,
        chunk_size=args.chunk_size,
        seed=args.seed,
        progress=round_line,
        on_chunk=lambda _: dog.beat(),
    )
    last = len(res.probe_sizes) - 1
    names = res.ranking[: args.top] if args.top else res.ranking
    rows = []
    for i, name in enumerate(names, 1):
        r = res.rounds[name]
        rows.append({
            "rank": i,
            "name": name,
            "architecture": res.architectures[name],
            res.method: res.full_probe_score(name),
            "left_round": None if r == last else r + 1,
            "left_probe_images": None if r == last else res.probe_sizes[r],
        })  # fmt: skip
    if args.format == "json":
        models = [
            {**row, res.method: _finite_or_none(row[res.method]),
             "round_scores": [_finite_or_none(s[row["name"]]) for s in res.round_scores
                              if row["name"] in s]}
            for row in rows
        ]  # fmt: skip
        doc = {
            "method": res.method,
            "rounds": [
                {"round": r + 1, "probe_images": size, "models": count}
                for r, (size, count) in enumerate(zip(res.probe_sizes, res.survivors_per_round))
            ],
            "model_round_fraction": res.cost_fraction,
            "flags": dict(res.flags),
            "models": models,
        }
        return json.dumps(doc, indent=2) + "\n"
    if args.format == "csv":
        for line in _notes(res.flags):
            print(line, file=sys.stderr)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    n = res.probe_sizes[-1]
    cols = ["#", "model", "architecture", f"{res.method} (full probe)", "left at round",
            "on probe images"]  # fmt: skip
    body = [
        [str(row["rank"]), row["name"], str(row["architecture"]),
         "-" if row["left_round"] is not None else f"{row[res.method]:.4g}",
         "-" if row["left_round"] is None else f"{row['left_round']} of {last + 1}",
         "-" if row["left_round"] is None else str(row["left_probe_images"])]
        for row in rows
    ]  # fmt: skip
    out = [
        f"successive halving with {res.method}: {len(res.probe_sizes)} rounds on "
        f"{', '.join(map(str, res.probe_sizes))} of {n} probe images, models per round "
        f"{', '.join(map(str, res.survivors_per_round))}; model-round fraction "
        f"{res.cost_fraction:.1%} of scoring every model on the full probe (compilation not "
        "included); higher = better",
        *_render(cols, body, right={0, 3}),
        *_notes(res.flags),
    ]
    return "\n".join(out) + "\n"


def _check_sort_by(sort_by: str, methods: list[str] | str, depth_prior: bool) -> None:
    """Before scoring: ``sort_by`` must name a scorer that will be run (with ``all``, whether
    the bank supports it is known only after reading it; that is checked afterwards)."""
    from parc_jax.api import PRIOR_SUFFIX
    from parc_jax.scorers.registry import SCORERS

    base = list(SCORERS) if methods == "all" else methods
    names = base + ([m + PRIOR_SUFFIX for m in base] if depth_prior else [])
    if sort_by not in names:
        raise _ArgumentError(
            f"--sort-by: {sort_by!r} is not among the methods to score ({', '.join(names)})"
        )


def _check_output(path: str) -> None:
    """Before scoring, not after it: the output must be a file in an existing folder we can
    write (a mistyped folder is an error, never created). A symlink is judged by the file it
    names; a FIFO or device (``/dev/null``) is written into, so it must be writable itself."""
    out = resolve_destination(path)
    if out.is_dir():
        raise _ArgumentError(f"--output: {path} is a directory; name a file")
    if is_special(out):
        if not os.access(out, os.W_OK):
            raise _ArgumentError(f"--output: cannot write {path}: permission denied")
        return
    folder = out.parent
    if not folder.is_dir():
        raise _ArgumentError(f"--output: cannot create {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _ArgumentError(f"--output: cannot create {path}: {folder} is not writable")


def _stall_timeout(value: float | None) -> float:
    """``--stall-timeout``, else ``$PARC_JAX_STALL_TIMEOUT``, else the default; 0 = off."""
    where = "--stall-timeout"
    if value is None:
        text = os.environ.get(STALL_TIMEOUT_ENV, "").strip()
        if not text:
            return DEFAULT_STALL_TIMEOUT
        where = f"${STALL_TIMEOUT_ENV}"
        try:
            value = float(text)
        except ValueError:
            raise _ArgumentError(f"{where}: expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise _ArgumentError(f"{where}: expected seconds >= 0 (0 = off), got {value:g}")
    return value


def _emit(output: str | None, text: str) -> None:
    """``text`` to the ``--output`` file (atomically), or to stdout without one."""
    if not output:
        sys.stdout.write(text)
        return
    try:
        write_text(output, text)
    except OSError as exc:
        raise _ArgumentError(f"--output: cannot write {output}: {exc.strerror or exc}") from None


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning  # a CLI's warnings: one line, no source echo
    try:
        args = build_parser().parse_args(argv)
        n_dims = _parse_dims(args.n_dims)
        methods = "all" if args.methods.strip() == "all" else [
            m.strip() for m in args.methods.split(",") if m.strip()
        ]  # fmt: skip
        if not methods:
            raise _ArgumentError("--methods: name at least one scorer, or 'all'")
        if args.top is not None and args.top < 1:
            raise _ArgumentError("--top: expected a positive int")
        if args.seed < 0:
            raise _ArgumentError(f"--seed: expected a non-negative int, got {args.seed}")
        if args.sort_by is not None:
            _check_sort_by(args.sort_by, methods, args.depth_prior)
        if args.output:
            _check_output(args.output)
        stall_timeout = _stall_timeout(args.stall_timeout)
        bank = args.bank or str(example_bank_path())
        if not os.path.exists(bank):
            raise _ArgumentError(f"--bank: {bank} does not exist")
    except _ArgumentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import jax

    # Compiled programs persist across runs (the first run on a machine pays the compile).
    cache = os.environ.get("PARC_JAX_CACHE_DIR", str(Path.home() / ".cache" / "parc_jax" / "xla"))
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
    try:
        with Watchdog(stall_timeout) as dog:
            return _score(args, bank, methods, n_dims, dog)
    except (ValueError, _ArgumentError) as exc:  # BankError is a ValueError too
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _score(args, bank: str, methods, n_dims, dog: Watchdog) -> int:
    import jax

    from parc_jax import distributed
    from parc_jax.api import score_bank

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    note = None
    if args.halving is not None:
        text = _run_halving(args, bank, methods, n_dims, dog)
        if text is not None:
            _emit(args.output, text)
            return 0
        note = "the bank is too small for halving to pay (see the note above); scored every model"
    result = score_bank(
        bank,
        methods=methods,
        n_dims=n_dims,
        pca=args.pca,
        depth_prior=args.depth_prior,
        l_max=args.l_max,
        bootstrap=args.bootstrap,
        seed=args.seed,
        chunk_size=args.chunk_size,
        progress=not args.no_progress,
        on_chunk=lambda _: dog.beat(),
        on_stage=dog.stage,
    )
    if note is not None:
        result.flags["halving"] = note
    if result.skipped and jax.process_index() == 0:
        skipped = "; ".join(f"{m} ({why})" for m, why in result.skipped.items())
        print(f"skipped: {skipped}", file=sys.stderr)
    if args.sort_by is not None and args.sort_by not in result.scores:
        raise ValueError(
            f"--sort-by: {args.sort_by!r} is not among the scored methods "
            f"({', '.join(result.methods)})"
        )
    if args.format == "json":
        text = json.dumps(result.to_dict(args.sort_by, args.top), indent=2) + "\n"
    elif args.format == "csv":
        text = format_csv(result, args.sort_by, args.top)
        if jax.process_index() == 0:  # the CSV body holds rows only: notes on stderr
            for line in _notes(result.flags):
                print(line, file=sys.stderr)
    else:
        text = format_table(result, args.sort_by, args.top)
    if jax.process_index() == 0:  # every process holds the result; one writes it
        _emit(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
