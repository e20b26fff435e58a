"""Probe banks of a finished pipeline run, and the files a benchmark commits: banks with the
oracle accuracies in each model's meta, the oracle and the report."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from parc_jax.atomic import write_bytes
from parc_jax.bank import Bank, write_bank
from parc_jax.groundtruth.probes import ProbeModel, extract_probe, preset_probe, probe_bank

log = logging.getLogger(__name__)


def write_probe_banks(
    preset: Any,
    run_dir: str | os.PathLike,
    *,
    targets: Sequence[str] | None = None,
    runs: Sequence[int] | None = None,
    progress: bool = True,
    data_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Write ``<run_dir>/probes/<target>/run<r>.msgpack`` for every target and probe run.

    Each bank holds every ``(architecture, source)`` source model of the preset except
    self-transfers, with features, probabilities, depth, source and source size, and the
    target's ``reference_features`` per architecture from the converged reference models
    (the from-scratch baselines where a run has none; their features are also saved beside
    each bank as ``run<r>.scratch_refs.npz``).
    Existing banks are kept (resumable). Needs the outputs of the sources and transfers stages.
    """
    from parc_jax.groundtruth.pipeline import record_stage_time, stage_datasets
    from parc_jax.groundtruth.train import eval_fn, load_variables
    from parc_jax.groundtruth.zoo import make_model

    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    targets = list(targets or preset.targets)
    runs = list(range(preset.probe_runs) if runs is None else runs)
    written = []
    data = stage_datasets(preset, targets, role="target", data_dir=data_dir)
    for target in tqdm(targets, desc="probe banks", disable=not progress):
        ds = data[target]
        out = {r: run_dir / "probes" / target / f"run{r}.msgpack" for r in runs}
        todo = [r for r in runs if not out[r].is_file()]
        if not todo:
            continue
        probes = {r: preset_probe(preset, ds, r) for r in todo}
        union = np.unique(np.concatenate([p.indices for p in probes.values()]))
        images = ds.train.images[union]
        where = {r: np.searchsorted(union, p.indices) for r, p in probes.items()}
        entries: dict[str, tuple[np.ndarray, ProbeModel]] = {}
        references: dict[str, np.ndarray] = {}
        scratch_refs: dict[str, np.ndarray] = {}
        for arch in preset.architectures:
            for kind, into in (("references", references), ("scratch", scratch_refs)):
                ref_path = run_dir / kind / arch / f"{target}.msgpack"
                if not ref_path.is_file():
                    if kind == "references" and (run_dir / "scratch").is_dir():
                        continue  # a run without converged references: scratch models serve
                    raise ValueError(
                        f"run_dir: missing {kind} model {ref_path}; run the transfers stage"
                    )
                variables, meta = load_variables(ref_path)
                model = make_model(arch, num_classes=int(meta["head_width"]), width=preset.width)
                into[arch], _ = extract_probe(eval_fn(model), variables, images)
            references.setdefault(arch, scratch_refs[arch])
            for source in preset.sources:
                if source == target:
                    continue
                path = run_dir / "sources" / arch / f"{source}.msgpack"
                if not path.is_file():
                    raise ValueError(f"run_dir: missing source model {path}; run sources stage")
                variables, meta = load_variables(path)
                model = make_model(arch, num_classes=int(meta["head_width"]), width=preset.width)
                feats, probs = extract_probe(
                    eval_fn(model),
                    variables,
                    images,
                    num_classes=int(meta["num_classes"]),
                )
                entries[f"{arch}/{source}"] = (
                    feats,
                    ProbeModel(
                        features=feats,
                        architecture=arch,
                        probs=probs,
                        depth=int(meta["depth"]),
                        source=source,
                        source_images=int(meta["train_images"]),
                        meta={"source_test_accuracy": float(meta["test_accuracy"])},
                    ),
                )
        for r in todo:
            rows = where[r]
            models = {
                name: dataclasses.replace(m, features=f[rows], probs=m.probs[rows])
                for name, (f, m) in entries.items()
            }
            bank = probe_bank(
                target_name=target,
                labels=probes[r].labels,
                num_classes=probes[r].num_classes,
                models=models,
                num_images=len(ds.train),
                reference_features={a: f[rows] for a, f in references.items()},
            )
            out[r].parent.mkdir(parents=True, exist_ok=True)
            # The from-scratch models' features beside the bank: rsa/dds with the weaker
            # reference (benchmarks/reference_strength.py).
            buf = io.BytesIO()
            np.savez(buf, **{a: f[rows].astype(np.float16) for a, f in scratch_refs.items()})
            write_bytes(out[r].with_suffix(".scratch_refs.npz"), buf.getvalue())
            write_bank(out[r], bank, features_dtype="float32")
            written.append(out[r])
            log.info("wrote %s (%d models, n=%d)", out[r], len(models), rows.size)
    record_stage_time(run_dir, "probes", time.perf_counter() - t0)
    return written


# ---------------------------------------------------------------------------------------------
# Committed artefacts


def _with_oracle(bank: Bank, oracle: Sequence[Mapping[str, str]], *, float16: bool) -> Bank:
    """Copy of ``bank`` with each model's fine-tuned accuracy in ``meta["oracle_accuracy"]``
    and, with ``float16``, float16 reference features and source probabilities (model
    features are converted on write). Probabilities in float16 keep row sums within 5e-4 of
    1 (half a unit in the last place per entry), inside the bank's 1e-3 check, and halve
    the committed size.
    """
    acc = {(r["architecture"], r["source"]): float(r["accuracy"]) for r in oracle
           if r["target"] == bank.target.name}  # fmt: skip
    models = []
    for m in bank.models:
        meta = dict(m.meta)
        if (m.architecture, m.source) in acc:
            meta["oracle_accuracy"] = acc[(m.architecture, m.source)]
        probs = m.probs
        if float16 and probs is not None:
            probs = np.asarray(probs, np.float16)
        models.append(dataclasses.replace(m, meta=meta, probs=probs))
    target = bank.target
    ref = target.reference_features
    if float16 and ref is not None:
        ref = (
            {a: np.asarray(f, np.float16) for a, f in ref.items()}
            if isinstance(ref, Mapping)
            else np.asarray(ref, np.float16)
        )
        target = dataclasses.replace(target, reference_features=ref)
    return Bank(target=target, models=models)


def export_bank(
    run_dir: str | os.PathLike, target: str, out_path: str | os.PathLike, *, run: int = 0
) -> Bank:
    """Rewrite probe bank ``run`` of ``target`` with float16 features and each model's
    fine-tuned accuracy (``meta["oracle_accuracy"]``) to ``out_path``, atomically."""
    from parc_jax.bank import read_bank
    from parc_jax.groundtruth.pipeline import read_csv

    run_dir = Path(run_dir)
    src = run_dir / "probes" / target / f"run{run}.msgpack"
    if not src.is_file():
        raise ValueError(f"run_dir: no probe bank {src}; run the probes stage first")
    bank = _with_oracle(read_bank(src), read_csv(run_dir / "oracle.csv"), float16=True)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    write_bank(out_path, bank, features_dtype="float16")
    return bank


EXPORT_FILES = ("oracle.csv", "sources.csv", "scratch.csv", "grid.csv", "timings.json")
#: Exported when the run has them (pretraining pool, converged references).
OPTIONAL_EXPORT_FILES = ("pretrain.csv", "references.csv")


def export_benchmark(
    preset: Any,
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    markdown: str | None = None,
) -> list[Path]:
    """Copy what the repository keeps of a finished run into ``out_dir``, all or nothing.

    ``EXPORT_FILES`` (the CSVs and ``timings.json``), one probe bank per target (run 0, float16
    features) as ``banks/<target>.msgpack``, and the sanity report ``summary.md`` (``markdown``,
    else :func:`parc_jax.training.summarize`'s). Every input is checked first and nothing is
    written if one is missing; the outputs are built, then each is written atomically.
    """
    import tempfile

    from parc_jax.atomic import write_bytes
    from parc_jax.groundtruth.report import summarize

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    missing = [run_dir / n for n in EXPORT_FILES if not (run_dir / n).is_file()]
    missing += [
        run_dir / "probes" / t / "run0.msgpack"
        for t in preset.targets
        if not (run_dir / "probes" / t / "run0.msgpack").is_file()
    ]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise ValueError(
            f"cannot export: {len(missing)} input(s) missing: {shown}{more} (no probe bank or "
            "CSV: finish every stage first); nothing written"
        )
    if markdown is None:
        markdown = summarize(preset, run_dir, data_dir=data_dir)["markdown"]
    names = [*EXPORT_FILES, *(n for n in OPTIONAL_EXPORT_FILES if (run_dir / n).is_file())]
    outputs: dict[Path, bytes] = {out_dir / n: (run_dir / n).read_bytes() for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for t in preset.targets:
            staged = Path(tmp) / f"{t}.msgpack"
            export_bank(run_dir, t, staged)
            outputs[out_dir / "banks" / f"{t}.msgpack"] = staged.read_bytes()
            refs = run_dir / "probes" / t / "run0.scratch_refs.npz"
            if refs.is_file():
                outputs[out_dir / "banks" / f"{t}.scratch_refs.npz"] = refs.read_bytes()
    outputs[out_dir / "summary.md"] = markdown.encode()
    for path, data in outputs.items():
        write_bytes(path, data, parents=True)  # creates banks/ as needed
    return list(outputs)
