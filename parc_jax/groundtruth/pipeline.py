"""The ground-truth pipeline's stages: datasets per role, source training, fine-tuned transfers
and from-scratch baselines, with run directories whose CSV tables are rewritten atomically after
every finished row (a restarted stage resumes)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from parc_jax.atomic import write_bytes
from parc_jax.groundtruth.data import Dataset, seeded_rng
from parc_jax.groundtruth.presets import Preset
from parc_jax.groundtruth.train import (
    grid_search,
    load_variables,
    new_head,
    remove_checkpoints,
    save_variables,
)
from parc_jax.groundtruth.zoo import init_variables

log = logging.getLogger(__name__)


_DATA_CACHE: dict[tuple, Dataset] = {}


def stage_datasets(
    preset: Preset,
    names: Sequence[str],
    *,
    role: str,
    data_dir: str | os.PathLike | None = None,
) -> dict[str, Dataset]:
    """The preset's datasets in a role (``source`` or ``target``: different training caps)."""
    from parc_jax.groundtruth.data import load_dataset

    if role not in ("source", "target"):
        raise ValueError(f"role must be 'source' or 'target', got {role!r}")
    cap = preset.max_source_train if role == "source" else preset.max_target_train
    out = {}
    for name in names:
        key = (
            name,
            preset.image_size,
            cap,
            preset.max_val,
            preset.max_test,
            preset.seed,
            str(data_dir),
        )
        if key not in _DATA_CACHE:
            _DATA_CACHE[key] = load_dataset(
                name,
                image_size=preset.image_size,
                data_dir=data_dir,
                max_train=cap,
                max_val=preset.max_val,
                max_test=preset.max_test,
                seed=preset.seed,
            )
        ds = _DATA_CACHE[key]
        if ds.num_classes > preset.head_width:
            raise ValueError(
                f"preset {preset.name!r}: dataset {name!r} has {ds.num_classes} classes, "
                f"more than head_width={preset.head_width}; raise head_width"
            )
        out[name] = ds
    return out


def _key(seed: int, *names: str) -> int:
    """An int seed for :func:`parc_jax.groundtruth.zoo.init_variables` derived from the names."""
    return int(seeded_rng(seed, "key", *names).integers(2**31))


# CSV files: small, rewritten whole and atomically after every finished row.

SOURCES_COLUMNS = (
    "architecture", "source", "test_accuracy", "val_accuracy", "lr", "epochs",
    "train_images", "seconds",
)  # fmt: skip
ORACLE_COLUMNS = ("architecture", "source", "target", "accuracy", "lr", "epochs", "seconds")
SCRATCH_COLUMNS = ("architecture", "target", "accuracy", "lr", "epochs", "seconds")
GRID_COLUMNS = ("architecture", "source", "target", "lr", "val_accuracy")


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts (empty list if the file does not exist)."""
    import csv

    p = Path(path)
    if not p.is_file():
        return []
    with p.open(newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Sequence[Mapping]) -> None:
    """Write ``rows`` (dicts keyed by ``columns``) to ``path`` atomically."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row[c] for c in columns})
    write_bytes(Path(path), buf.getvalue().encode(), parents=True)


def _append_csv(path: Path, columns: Sequence[str], row: Mapping) -> None:
    write_csv(path, columns, [*read_csv(path), {c: row[c] for c in columns}])


def record_stage_time(run_dir: str | os.PathLike, stage: str, seconds: float) -> None:
    """Add ``seconds`` to ``stage`` in ``<run_dir>/timings.json`` (summed over resumptions;
    :func:`timed_stage` adds interrupted segments too)."""
    import json

    path = Path(run_dir) / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[stage] = round(float(timings.get(stage, 0.0)) + seconds, 2)
    write_bytes(path, (json.dumps(timings, indent=1, sort_keys=True) + "\n").encode(), parents=True)


@contextlib.contextmanager
def timed_stage(run_dir: str | os.PathLike, stage: str):
    """Add the wall time of the ``with`` body to ``stage`` in ``timings.json``, also when it
    is interrupted (KeyboardInterrupt or an exception: the segment is added, then re-raised)."""
    t0 = time.perf_counter()
    try:
        yield
    except BaseException:
        try:
            record_stage_time(run_dir, stage, time.perf_counter() - t0)
        except Exception as e:  # never hide the interruption behind a bookkeeping error
            log.warning("could not record the time of the interrupted %s stage: %s", stage, e)
        raise
    record_stage_time(run_dir, stage, time.perf_counter() - t0)


RUN_RECORD = "preset.json"


def preset_record(preset: Preset) -> dict[str, Any]:
    """What a run dir records of the preset that made it: its name and its whole recipe (every
    field of :class:`Preset`, training configs included), JSON-ready."""
    import json

    return {"preset": preset.name, "recipe": json.loads(json.dumps(dataclasses.asdict(preset)))}


def check_run_dir(preset: Preset, run_dir: str | os.PathLike) -> None:
    """Refuse ``run_dir`` if it was made with another preset or recipe; record ``preset`` in
    ``<run_dir>/preset.json`` (atomically) on first use. A run dir without the record (runs
    older than it) is accepted and the record written then."""
    import json

    run_dir = Path(run_dir)
    path = run_dir / RUN_RECORD
    want = preset_record(preset)
    if path.is_file():
        try:
            got = json.loads(path.read_text())
            name, recipe = got["preset"], dict(got["recipe"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"run dir {run_dir}: unreadable {path} ({e}); use another --run-dir"
            ) from None
        if name != want["preset"] or recipe != want["recipe"]:
            diff = sorted(
                k for k in set(recipe) | set(want["recipe"])
                if k != "name" and recipe.get(k) != want["recipe"].get(k)
            )  # fmt: skip
            what = f"differs in {', '.join(diff)}" if diff else "another recipe"
            raise ValueError(
                f"run dir {run_dir} was made with preset {name} ({what} from preset "
                f"{preset.name}); use another --run-dir or the same preset"
            )
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(path, (json.dumps(want, indent=1, sort_keys=True) + "\n").encode(), parents=True)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def train_sources(
    preset: Preset,
    run_dir: str | os.PathLike,
    *,
    grid: str = "auto",
    progress: bool = True,
    data_dir: str | os.PathLike | None = None,
) -> list[dict[str, str]]:
    """Train every ``(architecture, source)`` model of ``preset`` into ``run_dir``.

    Writes ``sources/<arch>/<source>.msgpack`` (variables + meta) and a row of
    ``sources.csv`` per model; a model whose file and row exist is skipped, one interrupted
    mid-training resumes from its last epoch checkpoint. Returns the CSV rows. A run dir made
    with another preset or recipe is refused (:func:`check_run_dir`).
    """
    run_dir = Path(run_dir)
    check_run_dir(preset, run_dir)
    with timed_stage(run_dir, "sources"):
        return _train_sources(preset, run_dir, grid=grid, progress=progress, data_dir=data_dir)


def _train_sources(preset, run_dir, *, grid, progress, data_dir):
    from parc_jax.groundtruth.zoo import make_model

    csv_path = run_dir / "sources.csv"
    done = {(r["architecture"], r["source"]) for r in read_csv(csv_path)}
    data = stage_datasets(preset, preset.sources, role="source", data_dir=data_dir)
    jobs = [(a, s) for a in preset.architectures for s in preset.sources]
    for arch, source in tqdm(jobs, desc=f"sources [{preset.name}]", disable=not progress):
        out = run_dir / "sources" / arch / f"{source}.msgpack"
        if (arch, source) in done and out.is_file():
            continue
        ds = data[source]
        model = make_model(arch, num_classes=preset.head_width, width=preset.width)
        variables = init_variables(model, _key(preset.seed, arch, source), image_size=ds.image_size)
        prefix = run_dir / "ckpt" / "sources" / arch / source
        res = grid_search(
            model, variables, ds, learning_rates=[preset.source_lr], config=preset.source,
            seed=preset.seed, grid=grid, checkpoint=prefix, progress=progress,
            desc=f"{arch}/{source}",
        )  # fmt: skip
        meta = {
            "architecture": arch, "source": source, "depth": int(model.depth),
            "num_classes": ds.num_classes, "head_width": preset.head_width,
            "width": preset.width, "image_size": ds.image_size,
            "train_images": len(ds.train), "test_accuracy": res.test_accuracy,
            "val_accuracy": res.val_accuracies[res.lr], "lr": res.lr, "epochs": res.epochs,
            "mean": [float(v) for v in ds.mean], "std": [float(v) for v in ds.std],
        }  # fmt: skip
        save_variables(out, res.variables, meta)
        row = dict(meta, seconds=round(res.seconds, 2))
        row = {k: (_fmt(v) if isinstance(v, float) else v) for k, v in row.items()}
        _append_csv(csv_path, SOURCES_COLUMNS, row)
        remove_checkpoints(prefix)
        log.info("source %s/%s: test %.2f%% (%.1fs)", arch, source, res.test_accuracy, res.seconds)
    return read_csv(csv_path)


def run_transfers(
    preset: Preset,
    run_dir: str | os.PathLike,
    *,
    grid: str = "auto",
    progress: bool = True,
    data_dir: str | os.PathLike | None = None,
) -> list[dict[str, str]]:
    """From-scratch baselines, then every fine-tuning transfer of ``preset``, into ``run_dir``.

    Scratch: ``scratch/<arch>/<target>.msgpack`` + ``scratch.csv``. Transfers: one row of
    ``oracle.csv`` (architecture, source, target, accuracy %, lr, epochs, seconds) each and the
    validation accuracy of every grid learning rate in ``grid.csv``. Finished rows are skipped
    (resumable); needs the sources stage. Returns the oracle rows. A run dir made with another
    preset or recipe is refused (:func:`check_run_dir`).
    """
    run_dir = Path(run_dir)
    check_run_dir(preset, run_dir)
    with timed_stage(run_dir, "transfers"):
        return _run_transfers(preset, run_dir, grid=grid, progress=progress, data_dir=data_dir)


def _run_transfers(preset, run_dir, *, grid, progress, data_dir):
    from parc_jax.groundtruth.zoo import make_model

    data = stage_datasets(preset, preset.targets, role="target", data_dir=data_dir)
    scratch_csv = run_dir / "scratch.csv"
    done = {(r["architecture"], r["target"]) for r in read_csv(scratch_csv)}
    jobs = [(a, t) for t in preset.targets for a in preset.architectures]
    for arch, target in tqdm(jobs, desc=f"scratch [{preset.name}]", disable=not progress):
        out = run_dir / "scratch" / arch / f"{target}.msgpack"
        if (arch, target) in done and out.is_file():
            continue
        ds = data[target]
        model = make_model(arch, num_classes=preset.head_width, width=preset.width)
        variables = init_variables(
            model, _key(preset.seed, arch, "scratch", target), image_size=ds.image_size
        )
        prefix = run_dir / "ckpt" / "scratch" / arch / target
        res = grid_search(
            model, variables, ds, learning_rates=preset.scratch_lrs, config=preset.scratch,
            seed=preset.seed, grid=grid, checkpoint=prefix, progress=progress,
            desc=f"{arch}/scratch->{target}",
        )  # fmt: skip
        meta = {
            "architecture": arch, "target": target, "depth": int(model.depth),
            "num_classes": ds.num_classes, "head_width": preset.head_width,
            "width": preset.width, "train_images": len(ds.train),
            "test_accuracy": res.test_accuracy, "lr": res.lr, "epochs": res.epochs,
        }  # fmt: skip
        save_variables(out, res.variables, meta)
        row = {
            "architecture": arch, "target": target, "accuracy": _fmt(res.test_accuracy),
            "lr": _fmt(res.lr), "epochs": res.epochs, "seconds": _fmt(round(res.seconds, 2)),
        }  # fmt: skip
        _append_csv(scratch_csv, SCRATCH_COLUMNS, row)
        remove_checkpoints(prefix)
        log.info(
            "scratch %s %s: test %.2f%% lr %g (%.1fs)",
            arch, target, res.test_accuracy, res.lr, res.seconds,
        )  # fmt: skip

    oracle_csv = run_dir / "oracle.csv"
    grid_csv = run_dir / "grid.csv"
    done3 = {(r["architecture"], r["source"], r["target"]) for r in read_csv(oracle_csv)}
    transfers = preset.transfers()
    for arch, source, target in tqdm(
        transfers, desc=f"transfers [{preset.name}]", disable=not progress
    ):
        if (arch, source, target) in done3:
            continue
        src_path = run_dir / "sources" / arch / f"{source}.msgpack"
        if not src_path.is_file():
            raise ValueError(f"run_dir: missing source model {src_path}; run the sources stage")
        source_vars, _ = load_variables(src_path)
        ds = data[target]
        model = make_model(arch, num_classes=preset.head_width, width=preset.width)
        variables = new_head(
            model, source_vars, _key(preset.seed, arch, source, target),
            image_size=ds.image_size,
        )  # fmt: skip
        prefix = run_dir / "ckpt" / "transfers" / arch / f"{source}__{target}"
        res = grid_search(
            model, variables, ds, learning_rates=preset.finetune_lrs, config=preset.finetune,
            seed=preset.seed, grid=grid, checkpoint=prefix, progress=progress,
            desc=f"{arch}/{source}->{target}",
        )  # fmt: skip
        rows = [
            r for r in read_csv(grid_csv)
            if (r["architecture"], r["source"], r["target"]) != (arch, source, target)
        ]  # fmt: skip
        rows += [
            {"architecture": arch, "source": source, "target": target, "lr": _fmt(lr),
             "val_accuracy": _fmt(acc)}
            for lr, acc in res.val_accuracies.items()
        ]  # fmt: skip
        write_csv(grid_csv, GRID_COLUMNS, rows)
        row = {
            "architecture": arch, "source": source, "target": target,
            "accuracy": _fmt(res.test_accuracy), "lr": _fmt(res.lr), "epochs": res.epochs,
            "seconds": _fmt(round(res.seconds, 2)),
        }  # fmt: skip
        _append_csv(oracle_csv, ORACLE_COLUMNS, row)
        remove_checkpoints(prefix)
        log.info(
            "transfer %s %s->%s: test %.2f%% lr %g (%.1fs)",
            arch, source, target, res.test_accuracy, res.lr, res.seconds,
        )  # fmt: skip
    return read_csv(oracle_csv)
