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
import textwrap
import warnings
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

from parc_jax import __version__, defaults
from parc_jax.atomic import is_special, resolve_destination, write_text
from parc_jax.compilation_cache import CACHE_ENV, default_cache_dir, enable_persistent_cache
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
    from parc_jax.scorers.registry import BANK_LEVEL, BANK_LEVEL_DESCRIPTIONS, SCORERS

    width = max(len(n) for n in SCORERS)
    lines = ["scorers (higher = predicted to transfer better):"]
    for name, spec in SCORERS.items():
        dims = f" [default n_dims {spec.default_dims}]" if spec.default_dims else ""
        lines.append(f"  {name:<{width}}  {spec.description}{dims}")
    lines.append("bank-level scores (depend on which models are scored together):")
    for name, (parts, _) in BANK_LEVEL.items():
        lines.append(f"  {name:<{width}}  {BANK_LEVEL_DESCRIPTIONS[name]}; from {', '.join(parts)}")
    return "\n".join(lines)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description and epilog as written, and each option's default in its help line
    (unless the help already says it, or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)"


PROG = "python -m parc_jax.score"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog,
        description=textwrap.fill(
            "Rank the models of a bank by predicted transferability to its target. Compiled "
            f"programs are cached in ${CACHE_ENV} (default {default_cache_dir()}; set it to "
            "move the cache, or to an empty string to turn it off).",
            80,
        ),
        formatter_class=_HelpFormatter,
        epilog=_scorer_help(),
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--bank",
        help="bank file or directory of shards (default: the example bank shipped in the package)",
    )
    p.add_argument("--methods", default="all", help="comma-separated scorers, or 'all'")
    p.add_argument(
        "--n-dims",
        default="default",
        help="PCA dims for every scorer that reduces, 'none', or 'default' (each scorer's own)",
    )
    p.add_argument("--pca", default=defaults.PCA, choices=["exact", "fast"], help="PCA solver")
    p.add_argument("--depth-prior", action="store_true", help="add <method>+l (PARC Eq. 6)")
    p.add_argument("--l-max", type=float, default=defaults.L_MAX,
                   help="depth normaliser of the prior")  # fmt: skip
    p.add_argument(
        "--bootstrap", type=int, default=0, help="rescore on R probe subsamples: score spread"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the probe subsamples")
    p.add_argument("--sort-by", help="method to sort by (default: the first method)")
    p.add_argument("--top", type=int, help="show only the best K models (default: all)")
    p.add_argument("--format", default="table", choices=FORMATS, help="output format")
    p.add_argument(
        "--wide",
        action="store_true",
        help=f"table: every method's column (by default the table fits {TABLE_WIDTH} columns)",
    )
    p.add_argument("--output", help="write here (atomically) instead of stdout")
    p.add_argument("--chunk-size", type=int, default=defaults.CHUNK_SIZE,
                   help="models per compiled batch")  # fmt: skip
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
        default=defaults.HALVING_MIN_FRACTION,
        help="probe fraction of the first halving round",
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


TABLE_WIDTH = 120  # the default table fits this many columns; --wide shows every column
SIGNIFICANT = 4  # digits of a column's largest value; the column shares its decimals


def _column_format(values: Sequence[float], significant: int = SIGNIFICANT) -> Callable:
    """A formatter giving a column of numbers one number of decimals: enough for
    ``significant`` digits of its largest magnitude; ``-0`` is written ``0``."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    top = max(finite, default=0.0)
    decimals = max(0, significant - 1 - math.floor(math.log10(top))) if top > 0 else 0
    decimals = min(decimals, 6)

    def fmt(v: float) -> str:
        if not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        text = f"{v:.{decimals}f}"
        return text[1:] if text.lstrip("-0.") == "" and text.startswith("-") else text

    return fmt


def _wrap(prefix: str, items: Sequence[str], width: int = TABLE_WIDTH, sep: str = ",") -> list:
    """``prefix`` then ``items`` joined by ``sep``, wrapped at ``width`` (continuations
    indented)."""
    lines, line = [], prefix
    for i, item in enumerate(items):
        piece = item + (sep if i < len(items) - 1 else "")
        if len(line) + 1 + len(piece) > width and line.strip():
            lines.append(line)
            line = "   "
        line = f"{line} {piece}" if line else piece
    return [*lines, line]


def format_table(result, sort_by: str | None, top: int | None, *, wide: bool = False) -> str:
    """The table, best first: rank, model, architecture, the oracle accuracy when the bank
    records it, the sort column, then the other methods as they fit in ``TABLE_WIDTH``
    columns (every one with ``wide``); a legend; the methods left out; each method's agreement
    with the oracle; notes."""
    rows = result.rows(sort_by=sort_by, top=top)
    sort_key = sort_by or result.methods[0]
    methods = [sort_key, *(m for m in result.methods if m != sort_key)]
    oracle = result.has_oracle
    fixed = ["#", "model", "architecture"] + (["oracle %"] if oracle else [])
    body = [[str(i), r["name"], str(r["architecture"])] for i, r in enumerate(rows, 1)]
    if oracle:
        fmt = _column_format([r[defaults.ORACLE_KEY] for r in rows])
        for cells, r in zip(body, rows):
            cells.append(fmt(r[defaults.ORACLE_KEY]))
    columns: list[tuple[str, list[str]]] = []
    for m in methods:
        fmt = _column_format([r[m] for r in rows])
        cells = [fmt(r[m]) for r in rows]
        if result.spread is not None and m in result.spread:
            std = _column_format([r[f"{m}_std"] for r in rows], significant=2)
            cells = [f"{c} ±{std(r[f'{m}_std'])} {r[f'{m}_top1']:>4.0%}"
                     for c, r in zip(cells, rows)]  # fmt: skip
            m = f"{m} (±std, top1)"
        columns.append((m, cells))

    def width(name: str, cells: list[str]) -> int:
        return max(len(name), *(len(c) for c in cells)) if cells else len(name)

    used = sum(width(c, [b[j] for b in body]) + 2 for j, c in enumerate(fixed))
    shown, hidden = [], []
    for name, cells in columns:
        w = width(name, cells) + 2
        if wide or not shown or used + w <= TABLE_WIDTH:
            shown.append((name, cells))
            used += w
        else:
            hidden.append(name.split(" ")[0])
    cols = fixed + [name for name, _ in shown]
    for j, cells in enumerate(body):
        cells.extend(c[j] for _, c in shown)
    right = {0, *range(3, len(cols))}
    out = [
        f"target {result.target['name']}: {result.target['num_probe_images']} probe images, "
        f"{_target_kind(result.target)}, {len(result)} models; sorted by {sort_key}",
        *_render(cols, body, right),
        *_wrap("", [
            "higher = predicted to transfer better, scales differ by scorer (--help)",
            *(["oracle % = recorded fine-tuned accuracy"] if oracle else []),
            *(["+l = with the depth prior"] if any(m.endswith("+l") for m in methods) else []),
        ], sep=";"),
    ]  # fmt: skip
    if hidden:
        out += _wrap(f"not shown ({len(hidden)}; --wide shows every column, JSON and CSV hold "
                     "all):", hidden)  # fmt: skip
    out += oracle_lines(result)
    out += _notes(result.flags)
    return "\n".join(out) + "\n"


def _corr(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}".replace("-0.00", "+0.00")


def oracle_lines(result) -> list[str]:
    """Each method's agreement with the oracle, wrapped (the table's footer; on stderr beside
    the notes for CSV); none when the bank records no oracle."""
    agree = result.oracle_agreement()
    if not agree:
        return []
    count = max(a["models"] for a in agree.values())
    items = [f"{m} {_corr(a['spearman'])}/{_corr(a['kendall'])}" for m, a in agree.items()]
    return _wrap(f"agreement with the oracle over {count} models (Spearman/Kendall):", items)


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


def _target_kind(target: dict) -> str:
    """``K classes`` or, for a regression target, ``regression, C output(s)``."""
    if target.get("task") == "regression":
        return f"regression, {target['num_classes']} output(s)"
    return f"{target['num_classes']} classes"


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
    from parc_jax.bank import open_bank
    from parc_jax.halving import halving_pays, halving_plan, successive_halving

    if methods == "all" or len(methods) != 1:
        raise ValueError("--halving: name exactly one method with --methods")
    if args.depth_prior or args.bootstrap:
        raise ValueError("--halving: cannot be combined with --depth-prior or --bootstrap")
    if args.halving < 2:
        raise ValueError(f"--halving: expected an int >= 2, got {args.halving}")
    reader = open_bank(bank)  # its headers are read once, for the plan and the rounds
    sizes, count = halving_plan(reader, eta=args.halving, min_fraction=args.halving_min_fraction)
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
        reader,
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
    fmt = _column_format([row[res.method] for row in rows if row["left_round"] is None])
    body = [
        [str(row["rank"]), row["name"], str(row["architecture"]),
         "-" if row["left_round"] is not None else fmt(row[res.method]),
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
    from parc_jax.scorers.registry import BANK_LEVEL, SCORERS

    base = [*SCORERS, *BANK_LEVEL] if methods == "all" else methods
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
    if out.is_dir() or path.endswith(("/", os.sep)):
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


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Score a bank from the command line; returns the exit status (0, or 2 with one line on
    stderr). ``prog`` is the name the usage line shows."""
    warnings.formatwarning = _one_line_warning  # a CLI's warnings: one line, no source echo
    try:
        args = build_parser(prog).parse_args(argv)
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

    enable_persistent_cache()  # compiled programs persist across runs
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
            for line in [*oracle_lines(result), *_notes(result.flags)]:
                print(line, file=sys.stderr)
    else:
        text = format_table(result, args.sort_by, args.top, wide=args.wide)
    if jax.process_index() == 0:  # every process holds the result; one writes it
        _emit(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
