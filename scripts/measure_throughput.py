"""Measure training / inference images per second of each zoo architecture on this host and
predict the wall time of a preset's stages from its real split sizes.

    python scripts/measure_throughput.py --preset mini

Other processes sharing the CPU slow every number down: the load average is printed with them.
"""

import argparse
import json
import os
from pathlib import Path

from parc_jax.atomic import write_text
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.groundtruth.data import default_data_dir
from parc_jax.groundtruth.presets import PRESETS, get_preset
from parc_jax.groundtruth.throughput import measure_throughput, preset_workload


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _writable_file(parser: argparse.ArgumentParser, path: str) -> None:
    """parser.error unless a file can be written at ``path`` (missing folders are created)."""
    p = Path(path)
    if p.is_dir():
        parser.error(f"--json: {p} is a folder, not a file")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        parser.error(f"--json: cannot create {p}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        parser.error(f"--json: cannot write in {parent}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="mini", choices=sorted(PRESETS))
    parser.add_argument(
        "--steps", type=_positive_int, default=20, help="timed steps per measurement (>= 1)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder of the datasets' .npz files (default: $PARC_JAX_DATA, else ./data)",
    )
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    enable_persistent_cache()  # compiled programs persist across runs
    preset = get_preset(args.preset)
    directory = Path(args.data_dir) if args.data_dir is not None else default_data_dir()
    if not directory.is_dir():
        parser.error(f"--data-dir: no such folder {directory}")
    missing = [
        n for n in dict.fromkeys(preset.sources + preset.targets)
        if not (directory / f"{n}.npz").is_file()
    ]  # fmt: skip
    if missing:
        parser.error(f"--data-dir: {directory} lacks {', '.join(f'{n}.npz' for n in missing)}")
    if args.json:
        _writable_file(parser, args.json)
    try:  # the real split sizes, before the (long) measurements
        work = preset_workload(preset, data_dir=args.data_dir)
    except (ValueError, OSError) as err:
        parser.error(f"--data-dir: {err}")
    load_before = os.getloadavg()[0]
    rates = {}
    for arch in preset.architectures:
        rates[arch] = measure_throughput(
            arch,
            image_size=preset.image_size,
            width=preset.width,
            head_width=preset.head_width,
            batch_size=preset.source.batch_size,
            steps=args.steps,
        )
        r = rates[arch]
        print(
            f"{arch:9s} train {r['train_ips']:7.0f} img/s  eval {r['eval_ips']:7.0f} img/s  "
            f"compile train {r['compile_train_s']:.1f}s eval {r['compile_eval_s']:.1f}s",
            flush=True,
        )
    load_after = os.getloadavg()[0]
    predicted = {}
    for stage, n in work.items():
        predicted[stage] = sum(
            n["train"] / rates[a]["train_ips"] + n["eval"] / rates[a]["eval_ips"]
            for a in preset.architectures
        )
    print(
        f"\nload average {load_before:.2f} before, {load_after:.2f} after (on {os.cpu_count()} "
        "cores)"
    )
    print(f"preset {preset.name}: images per architecture and predicted seconds (all archs):")
    for stage, n in work.items():
        print(
            f"  {stage:9s} train {n['train']:>9,d}  eval {n['eval']:>9,d}  "
            f"-> {predicted[stage]:7.0f} s"
        )
    compiles = sum(r["compile_train_s"] + r["compile_eval_s"] for r in rates.values())
    print(f"  compiles (train + eval, once per architecture): ~{compiles:.0f} s")
    print(f"  total predicted: {sum(predicted.values()) + compiles:.0f} s")
    if args.json:
        numbers = {
            "rates": rates,
            "workload": work,
            "predicted_s": predicted,
            "load": [load_before, load_after],
        }
        write_text(args.json, json.dumps(numbers, indent=1), parents=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
