"""Measure training / inference images per second of each zoo architecture on this host and
predict the wall time of a preset's stages from its real split sizes.

    python scripts/measure_throughput.py --preset mini

Other processes sharing the CPU slow every number down: the load average is printed with them.
"""

import argparse
import json
import os

from parc_jax.training import get_preset, measure_throughput, preset_workload


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mini")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    preset = get_preset(args.preset)
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
    work = preset_workload(preset, data_dir=args.data_dir)
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
        with open(args.json, "w") as f:
            json.dump(
                {
                    "rates": rates,
                    "workload": work,
                    "predicted_s": predicted,
                    "load": [load_before, load_after],
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
