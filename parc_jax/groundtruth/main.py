"""Command-line entry of the pipeline's stages (``sources``, ``transfers``, ``probes``), used by
``scripts/``."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import jax

from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.groundtruth.pipeline import (
    check_run_dir,
    record_stage_time,
    run_transfers,
    train_sources,
)
from parc_jax.groundtruth.presets import PRESETS, get_preset, with_overrides

log = logging.getLogger(__name__)

STAGES = ("sources", "transfers", "probes")


def stage_main(stage: str, argv: Sequence[str] | None = None) -> int:
    """Command-line entry of one pipeline stage (``sources``, ``transfers``, ``probes``, or
    ``all``); used by the thin drivers in ``scripts/``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        description=f"parc_jax ground truth: {stage} stage (resumable)."
    )
    parser.add_argument("--preset", default="mini", choices=sorted(PRESETS))
    parser.add_argument(
        "--run-dir", default=None, help="output folder (default runs/groundtruth/<preset>)"
    )
    parser.add_argument(
        "--config", default=None, metavar="JSON",
        help="a JSON object of preset fields that replace the preset's (e.g. targets, "
        "flip_invariant, finetune_lrs)",
    )  # fmt: skip
    parser.add_argument(
        "--targets", default=None, metavar="A,B",
        help="target datasets (any <name>.npz in the data folder) instead of the preset's; "
        "a run dir grows new targets on the same zoo",
    )  # fmt: skip
    parser.add_argument(
        "--flip-invariant", default=None, metavar="A,B",
        help="datasets whose labels survive a horizontal flip, added to the preset's",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder of the datasets' .npz files (default: $PARC_JAX_DATA, else ./data)",
    )
    parser.add_argument(
        "--grid", default="auto", choices=("auto", "loop", "vmap"),
        help="learning-rate grid as a loop over one compiled step (CPU default) or vmapped "
        "(GPU default)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--compile-cache", default="runs/jax_cache",
        help="JAX persistent compilation cache folder ('' to disable)",
    )  # fmt: skip
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    enable_persistent_cache()  # compiled programs persist across runs
    run_dir = Path(args.run_dir or Path("runs") / "groundtruth" / args.preset)
    try:
        preset = with_overrides(
            get_preset(args.preset),
            config=args.config,
            targets=_names(args.targets),
            flip_invariant=_names(args.flip_invariant),
        )
        check_run_dir(preset, run_dir)  # before anything is written into another preset's dir
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (run_dir / "logs").mkdir(exist_ok=True)
    handlers: list[logging.Handler] = [
        logging.FileHandler(run_dir / "logs" / f"{stage}.log"),
        logging.StreamHandler(sys.stderr),
    ]
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
    progress = not args.no_progress
    kw = {"progress": progress, "data_dir": args.data_dir}
    stages = STAGES if stage == "all" else (stage,)
    try:
        _run_stages(stages, preset, run_dir, grid=args.grid, **kw)
    except ValueError as e:  # bad input or a missing earlier stage: one line, exit 2
        log.debug("stage failed", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("expected comma-separated dataset names")
    return names


def _run_stages(stages, preset, run_dir, *, grid, progress, data_dir) -> None:
    kw = {"progress": progress, "data_dir": data_dir}
    for st in stages:
        log.info("stage %s, preset %s, run dir %s", st, preset.name, run_dir)
        if st == "sources":
            train_sources(preset, run_dir, grid=grid, **kw)
        elif st == "transfers":
            run_transfers(preset, run_dir, grid=grid, **kw)
        elif st == "probes":
            from parc_jax.groundtruth.export import write_probe_banks

            t0 = time.perf_counter()
            try:
                write_probe_banks(preset, run_dir, **kw)  # records its time when it finishes
            except BaseException:  # ... and an interrupted segment is added here
                with contextlib.suppress(Exception):
                    record_stage_time(run_dir, "probes", time.perf_counter() - t0)
                raise
        else:
            raise ValueError(f"stage must be one of {STAGES} or 'all', got {st!r}")
