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
    """The preset's datasets in a role (``source``, ``target`` or ``pool``: different training
    caps; a pool dataset's classes may exceed the head width, the pool model has its own)."""
    from parc_jax.groundtruth.data import load_dataset

    if role not in ("source", "target", "pool"):
        raise ValueError(f"role must be 'source', 'target' or 'pool', got {role!r}")
    cap = {
        "source": preset.max_source_train,
        "target": preset.max_target_train,
        "pool": preset.max_pool_train,
    }[role]
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
            preset.flips(name),
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
                flip=preset.flips(name),
            )
        ds = _DATA_CACHE[key]
        if role != "pool" and ds.num_classes > preset.head_width:
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
GRID_COLUMNS = ("architecture", "source", "target", "lr", "val_accuracy", "status")
PRETRAIN_COLUMNS = (
    "architecture", "pool", "test_accuracy", "val_accuracy", "lr", "epochs", "train_images",
    "classes", "seconds",
)  # fmt: skip
REFERENCE_COLUMNS = (
    "architecture", "target", "accuracy", "val_accuracy", "lr", "epochs", "converged",
    "val_curve", "seconds",
)  # fmt: skip
#: ``source`` column of grid.csv rows that belong to from-scratch runs.
SCRATCH_SOURCE = "(scratch)"


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
    older than it) is accepted and the record written then. The targets may differ (a run
    grows new targets on the same zoo: every transfer is keyed by its target); the record
    then lists the union."""
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
        diff = sorted(
            k for k in set(recipe) | set(want["recipe"])
            if k not in ("name", "targets") and recipe.get(k) != want["recipe"].get(k)
        )  # fmt: skip
        if name != want["preset"] or diff:
            what = f"differs in {', '.join(diff)}" if diff else "another recipe"
            raise ValueError(
                f"run dir {run_dir} was made with preset {name} ({what} from preset "
                f"{preset.name}); use another --run-dir or the same preset"
            )
        targets = list(recipe.get("targets", []))
        grown = targets + [t for t in preset.targets if t not in targets]
        if grown != targets:
            got["recipe"]["targets"] = grown
            write_bytes(path, (json.dumps(got, indent=1, sort_keys=True) + "\n").encode())
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
    """Pretrain every architecture on the preset's pool (if it has one), then train every
    ``(architecture, source)`` model of ``preset`` into ``run_dir``.

    Writes ``pretrained/<arch>.msgpack`` + a row of ``pretrain.csv`` per architecture, and
    ``sources/<arch>/<source>.msgpack`` (variables + meta) + a row of ``sources.csv`` per
    model; a model whose file and row exist is skipped, one interrupted mid-training resumes
    from its last epoch checkpoint. Returns the sources' CSV rows. A run dir made with another
    preset or recipe is refused (:func:`check_run_dir`).
    """
    run_dir = Path(run_dir)
    check_run_dir(preset, run_dir)
    if preset.pool:
        with timed_stage(run_dir, "pretrain"):
            _pretrain(preset, run_dir, grid=grid, progress=progress, data_dir=data_dir)
    with timed_stage(run_dir, "sources"):
        return _train_sources(preset, run_dir, grid=grid, progress=progress, data_dir=data_dir)


def pool_dataset(preset: Preset, *, data_dir: str | os.PathLike | None = None) -> Dataset:
    """The preset's pretraining pool as one dataset
    (:func:`~parc_jax.groundtruth.data.concat_datasets`)."""
    from parc_jax.groundtruth.data import concat_datasets

    parts = stage_datasets(preset, preset.pool, role="pool", data_dir=data_dir)
    return concat_datasets("+".join(preset.pool), [parts[n] for n in preset.pool])


def _pretrain(preset, run_dir, *, grid, progress, data_dir):
    from parc_jax.groundtruth.zoo import make_model

    csv_path = run_dir / "pretrain.csv"
    done = {r["architecture"] for r in read_csv(csv_path)}
    ds = pool_dataset(preset, data_dir=data_dir)
    for arch in tqdm(preset.architectures, desc=f"pretrain [{preset.name}]", disable=not progress):
        out = run_dir / "pretrained" / f"{arch}.msgpack"
        if arch in done and out.is_file():
            continue
        model = make_model(arch, num_classes=ds.num_classes, width=preset.width)
        variables = init_variables(model, _key(preset.seed, arch, "pool"), image_size=ds.image_size)
        prefix = run_dir / "ckpt" / "pretrained" / arch
        res = grid_search(
            model, variables, ds, learning_rates=[preset.pretrain_lr], config=preset.pretrain,
            seed=preset.seed, grid=grid, checkpoint=prefix, progress=progress,
            desc=f"{arch}/pool",
        )  # fmt: skip
        meta = {
            "architecture": arch, "pool": ds.name, "num_classes": ds.num_classes,
            "width": preset.width, "image_size": ds.image_size,
            "test_accuracy": res.test_accuracy, "val_accuracy": res.val_accuracies[res.lr],
            "lr": res.lr, "epochs": res.epochs, "train_images": len(ds.train),
        }  # fmt: skip
        save_variables(out, res.variables, meta)
        row = dict(meta, classes=ds.num_classes, seconds=round(res.seconds, 2))
        row = {k: (_fmt(v) if isinstance(v, float) else v) for k, v in row.items()}
        _append_csv(csv_path, PRETRAIN_COLUMNS, row)
        remove_checkpoints(prefix)
        log.info(
            "pretrain %s on %s: test %.2f%% (%.1fs)", arch, ds.name, res.test_accuracy, res.seconds
        )


def _start(preset, run_dir, model, arch, key, *, image_size):
    """Initial variables of a source model: the pretrained trunk with a fresh head when the
    preset has a pool, else random weights."""
    if not preset.pool:
        return init_variables(model, key, image_size=image_size)
    path = run_dir / "pretrained" / f"{arch}.msgpack"
    if not path.is_file():
        raise ValueError(f"run_dir: missing pretrained model {path}; run the sources stage")
    trunk, _ = load_variables(path)
    return new_head(model, trunk, key, image_size=image_size)


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
        variables = _start(
            preset, run_dir, model, arch, _key(preset.seed, arch, source), image_size=ds.image_size
        )
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
    """From-scratch baselines, rsa/dds reference models, then every fine-tuning transfer of
    ``preset``, into ``run_dir``.

    Scratch: ``scratch/<arch>/<target>.msgpack`` + ``scratch.csv``. References:
    ``references/<arch>/<target>.msgpack`` + ``references.csv`` (accuracy, the validation
    accuracy after each length tried, whether the convergence criterion stopped it).
    Transfers: one row of ``oracle.csv`` (architecture, source, target, accuracy %, lr,
    epochs, seconds) each. Every learning rate tried, scratch runs included (source
    ``(scratch)``), is a row of ``grid.csv`` with its validation accuracy and status (ok,
    collapsed, diverged). Finished rows are skipped (resumable); needs the sources stage.
    Returns the oracle rows. A run dir made with another preset or recipe is refused
    (:func:`check_run_dir`).
    """
    run_dir = Path(run_dir)
    check_run_dir(preset, run_dir)
    kw = {"grid": grid, "progress": progress, "data_dir": data_dir}
    with timed_stage(run_dir, "scratch"):
        _run_scratch(preset, run_dir, **kw)
    with timed_stage(run_dir, "references"):
        _run_references(preset, run_dir, **kw)
    with timed_stage(run_dir, "transfers"):
        return _run_transfers(preset, run_dir, **kw)


def _record_grid(run_dir: Path, arch: str, source: str, target: str, res) -> None:
    grid_csv = run_dir / "grid.csv"
    rows = [
        r for r in read_csv(grid_csv)
        if (r["architecture"], r["source"], r["target"]) != (arch, source, target)
    ]  # fmt: skip
    rows += [
        {"architecture": arch, "source": source, "target": target, "lr": _fmt(lr),
         "val_accuracy": _fmt(acc), "status": res.status.get(lr, "ok")}
        for lr, acc in res.val_accuracies.items()
    ]  # fmt: skip
    write_csv(grid_csv, GRID_COLUMNS, rows)
    if res.all_failed:
        log.warning(
            "%s %s->%s: every learning rate collapsed or diverged; kept the best (flagged)",
            arch, source, target,
        )  # fmt: skip


def _pending_targets(preset, run_dir, kind, *, progress):
    """``(architecture, target, model path)`` of every per-target model of ``kind``
    (``scratch`` or ``references``: ``<kind>/<arch>/<target>.msgpack`` and a row of
    ``<kind>.csv``) not yet finished, with a progress bar over all of them."""
    done = {(r["architecture"], r["target"]) for r in read_csv(run_dir / f"{kind}.csv")}
    jobs = [(a, t) for t in preset.targets for a in preset.architectures]
    for arch, target in tqdm(jobs, desc=f"{kind} [{preset.name}]", disable=not progress):
        out = run_dir / kind / arch / f"{target}.msgpack"
        if (arch, target) not in done or not out.is_file():
            yield arch, target, out


def _run_scratch(preset, run_dir, *, grid, progress, data_dir):
    from parc_jax.groundtruth.zoo import make_model

    data = stage_datasets(preset, preset.targets, role="target", data_dir=data_dir)
    scratch_csv = run_dir / "scratch.csv"
    for arch, target, out in _pending_targets(preset, run_dir, "scratch", progress=progress):
        ds = data[target]
        model = make_model(arch, num_classes=preset.head_width, width=preset.width)
        variables = init_variables(
            model, _key(preset.seed, arch, "scratch", target), image_size=ds.image_size
        )
        prefix = run_dir / "ckpt" / "scratch" / arch / target
        res = grid_search(
            model, variables, ds, learning_rates=preset.scratch_lrs, config=preset.scratch,
            seed=preset.seed, grid=grid, checkpoint=prefix, progress=progress,
            desc=f"{arch}/scratch->{target}", extend=preset.lr_extend,
        )  # fmt: skip
        meta = {
            "architecture": arch, "target": target, "depth": int(model.depth),
            "num_classes": ds.num_classes, "head_width": preset.head_width,
            "width": preset.width, "train_images": len(ds.train),
            "test_accuracy": res.test_accuracy, "lr": res.lr, "epochs": res.epochs,
        }  # fmt: skip
        save_variables(out, res.variables, meta)
        _record_grid(run_dir, arch, SCRATCH_SOURCE, target, res)
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


def _run_references(preset, run_dir, *, grid, progress, data_dir):
    """Reference models for rsa/dds, trained from scratch to a convergence criterion (see
    :class:`~parc_jax.groundtruth.presets.Preset`)."""
    from parc_jax.groundtruth.zoo import make_model

    data = stage_datasets(preset, preset.targets, role="target", data_dir=data_dir)
    scratch = {(r["architecture"], r["target"]): r for r in read_csv(run_dir / "scratch.csv")}
    scratch_val = {
        (r["architecture"], r["target"], float(r["lr"])): float(r["val_accuracy"])
        for r in read_csv(run_dir / "grid.csv")
        if r["source"] == SCRATCH_SOURCE
    }
    ref_csv = run_dir / "references.csv"
    for arch, target, out in _pending_targets(preset, run_dir, "references", progress=progress):
        ds = data[target]
        lr = float(scratch[(arch, target)]["lr"])
        base, _, _ = preset.scratch.plan(len(ds.train))
        model = make_model(arch, num_classes=preset.head_width, width=preset.width)
        variables = init_variables(
            model, _key(preset.seed, arch, "scratch", target), image_size=ds.image_size
        )
        t0 = time.perf_counter()
        curve: list[float] = [scratch_val[(arch, target, lr)]]  # the scratch run: factor 1
        # The kept model: the best on validation along the curve (a longer run that does
        # worse, at a rate chosen for the shorter budget, is not the stronger reference).
        best = {"val": curve[0], "epochs": base, "factor": 1}
        converged = False
        for factor in preset.reference_epochs:
            config = dataclasses.replace(preset.scratch, epochs=base * factor, min_steps=0)
            prefix = run_dir / "ckpt" / "references" / arch / f"{target}.e{factor}"
            res = grid_search(
                model, variables, ds, learning_rates=[lr], config=config, seed=preset.seed,
                grid=grid, checkpoint=prefix, progress=progress,
                desc=f"{arch}/reference->{target} x{factor}",
            )  # fmt: skip
            remove_checkpoints(prefix)
            curve.append(res.val_accuracies[res.lr])
            if curve[-1] > best["val"]:
                best = {"val": curve[-1], "epochs": res.epochs, "factor": factor,
                        "variables": res.variables, "test": res.test_accuracy}  # fmt: skip
            if curve[-1] - curve[-2] < preset.reference_tolerance:
                converged = True
                break
        if best["factor"] == 1:  # no longer run did better: the scratch model is the reference
            best["variables"], _ = load_variables(run_dir / "scratch" / arch / f"{target}.msgpack")
            best["test"] = float(scratch[(arch, target)]["accuracy"])
        meta = {
            "architecture": arch, "target": target, "depth": int(model.depth),
            "num_classes": ds.num_classes, "head_width": preset.head_width,
            "width": preset.width, "test_accuracy": best["test"], "lr": lr,
            "epochs": best["epochs"], "converged": converged,
        }  # fmt: skip
        save_variables(out, best["variables"], meta)
        row = {
            "architecture": arch, "target": target, "accuracy": _fmt(best["test"]),
            "val_accuracy": _fmt(best["val"]), "lr": _fmt(lr), "epochs": best["epochs"],
            "converged": int(converged), "val_curve": " ".join(_fmt(v) for v in curve),
            "seconds": _fmt(round(time.perf_counter() - t0, 2)),
        }  # fmt: skip
        _append_csv(ref_csv, REFERENCE_COLUMNS, row)
        log.info(
            "reference %s %s: test %.2f%% after %d epochs (%s)",
            arch, target, best["test"], best["epochs"],
            "converged" if converged else "epoch cap",
        )  # fmt: skip


def _run_transfers(preset, run_dir, *, grid, progress, data_dir):
    from parc_jax.groundtruth.zoo import make_model

    data = stage_datasets(preset, preset.targets, role="target", data_dir=data_dir)
    oracle_csv = run_dir / "oracle.csv"
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
            desc=f"{arch}/{source}->{target}", extend=preset.lr_extend,
        )  # fmt: skip
        _record_grid(run_dir, arch, source, target, res)
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
