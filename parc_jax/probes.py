"""Probe sets and feature extraction into model banks (PARC paper Sec. 3.1).

A probe set is ``n = min(500, training images)`` images of the target's training split with at
least 2 per class; when the classes need more than ``n`` images at 2 each, ``n // 2`` classes
are sampled at random and relabelled ``0..k-1``. Each probe run has its own seed.

Extraction works for any Flax model: an ``apply_fn(variables, x) -> (features, logits)`` and its
variables give penultimate features and softmax source-class probabilities on the probe, which
:func:`probe_bank` writes into the bank format of :mod:`parc_jax.bank` with ``architecture``,
``depth``, ``source`` and ``source_images`` filled in.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from parc_jax.bank import Bank, bank_from_arrays, write_bank
from parc_jax.data import seeded_rng
from parc_jax.training import extract

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Probe:
    """A probe set: ``indices [n]`` into the training split, ``labels [n]`` in
    ``0..num_classes-1`` (renumbered when classes were sampled), and ``classes [k]`` the
    original class of each probe label."""

    indices: np.ndarray
    labels: np.ndarray
    num_classes: int
    classes: np.ndarray


def sample_probe(
    labels: np.ndarray,
    *,
    num_classes: int | None = None,
    size: int = 500,
    min_per_class: int = 2,
    seed: int = 0,
) -> Probe:
    """Draw a probe set from training ``labels [N]`` (ints in ``0..num_classes-1``).

    n = min(size, N). Every class gives ``min_per_class`` images (all it has if fewer), the
    rest of the ``n`` are drawn uniformly from the remaining images, so class shares follow
    the data. If the classes need more than ``n`` images, ``n // min_per_class`` classes are
    chosen at random and the labels renumbered ``0..k-1`` in class order (``num_classes`` of
    the probe is then k). Indices are sorted.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected a non-empty int [N] array, got {labels.shape}")
    k_all = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.min() < 0 or labels.max() >= k_all:
        raise ValueError(f"labels must lie in 0..{k_all - 1} (num_classes)")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if not isinstance(min_per_class, int) or min_per_class < 1:
        raise ValueError(f"min_per_class must be a positive int, got {min_per_class!r}")
    rng = seeded_rng(seed, "probe")
    n = min(size, labels.size)
    present = np.unique(labels)
    relabel = present.size * min_per_class > n
    classes = present
    if relabel:
        classes = np.sort(rng.choice(present, max(n // min_per_class, 1), replace=False))
    pool = np.flatnonzero(np.isin(labels, classes))
    n = min(n, pool.size)
    chosen = [
        rng.choice(idx, min(min_per_class, idx.size), replace=False)
        for idx in (np.flatnonzero(labels == c) for c in classes)
    ]
    base = np.concatenate(chosen)
    rest = np.setdiff1d(pool, base)
    extra = rng.choice(rest, n - base.size, replace=False) if n > base.size else rest[:0]
    idx = np.sort(np.concatenate([base, extra]))
    if relabel:
        return Probe(
            idx, np.searchsorted(classes, labels[idx]).astype(np.int32), classes.size, classes
        )
    return Probe(idx, labels[idx].astype(np.int32), k_all, np.arange(k_all))


def softmax_probs(logits: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Row softmax of ``logits [n, w]`` over the first ``num_classes`` columns, float32."""
    z = np.asarray(logits, np.float64)
    if num_classes is not None:
        z = z[:, :num_classes]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def extract_probe(
    apply_fn: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]],
    variables: Any,
    images: np.ndarray,
    *,
    num_classes: int | None = None,
    batch_size: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``[n, d]`` and source probabilities ``[n, z]`` of one model on probe images.

    apply_fn: ``apply_fn(variables, x [b, ...]) -> (features [b, d], logits [b, w])`` in
    inference mode, ideally jitted (for a zoo model: :func:`parc_jax.training.eval_fn`).
    num_classes: the source's class count when the head is wider (masked classes); default w.
    """
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be None or a positive int, got {num_classes!r}")
    features, logits = extract(apply_fn, variables, images, batch_size=batch_size)
    if num_classes is not None and num_classes > logits.shape[1]:
        raise ValueError(
            f"num_classes ({num_classes}) exceeds the model's {logits.shape[1]} logits"
        )
    if features.ndim != 2:
        raise ValueError(f"apply_fn must return features [b, d], got {features.shape[1:]}")
    return features, softmax_probs(logits, num_classes)


@dataclasses.dataclass(frozen=True)
class ProbeModel:
    """One source model's extraction on a probe: what a bank entry needs."""

    features: np.ndarray
    architecture: str
    probs: np.ndarray | None = None
    depth: int | None = None
    source: str | None = None
    source_images: int | None = None
    meta: Mapping[str, Any] | None = None


def probe_bank(
    *,
    target_name: str,
    labels: np.ndarray,
    num_classes: int,
    models: Mapping[str, ProbeModel],
    num_images: int | None = None,
    reference_features: np.ndarray | Mapping[str, np.ndarray] | None = None,
) -> Bank:
    """A validated :class:`parc_jax.bank.Bank` from per-model extractions (names ``arch/src``)."""
    return bank_from_arrays(
        target_name=target_name,
        labels=labels,
        num_classes=num_classes,
        features={k: m.features for k, m in models.items()},
        architectures={k: m.architecture for k, m in models.items()},
        probs={k: m.probs for k, m in models.items() if m.probs is not None},
        depths={k: m.depth for k, m in models.items() if m.depth is not None},
        sources={k: m.source for k, m in models.items() if m.source is not None},
        source_images={k: m.source_images for k, m in models.items() if m.source_images},
        meta={k: dict(m.meta) for k, m in models.items() if m.meta},
        num_images=num_images,
        reference_features=(
            dict(reference_features)
            if isinstance(reference_features, Mapping)
            else reference_features
        ),
    )


# ---------------------------------------------------------------------------------------------
# Pipeline stage: probe banks of a preset


def preset_probe(preset: Any, dataset: Any, run: int) -> Probe:
    """Probe run ``run`` of a preset's target ``dataset`` (seeded by preset seed, name, run)."""
    seed = int(seeded_rng(preset.seed, "probe", dataset.name, str(run)).integers(2**31))
    return sample_probe(
        dataset.train.labels, num_classes=dataset.num_classes, size=preset.probe_size, seed=seed
    )


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
    target's ``reference_features`` per architecture from the from-scratch target models.
    Existing banks are kept (resumable). Needs the outputs of the sources and transfers stages.
    """
    from parc_jax.training import eval_fn, load_variables, record_stage_time, stage_datasets
    from parc_jax.zoo import make_model

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
        for arch in preset.architectures:
            ref_path = run_dir / "scratch" / arch / f"{target}.msgpack"
            if not ref_path.is_file():
                raise ValueError(
                    f"run_dir: missing from-scratch model {ref_path}; run the transfers stage"
                )
            variables, meta = load_variables(ref_path)
            model = make_model(arch, num_classes=int(meta["head_width"]), width=preset.width)
            references[arch], _ = extract_probe(eval_fn(model), variables, images)
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
    from parc_jax.training import read_csv

    run_dir = Path(run_dir)
    src = run_dir / "probes" / target / f"run{run}.msgpack"
    if not src.is_file():
        raise ValueError(f"run_dir: no probe bank {src}; run the probes stage first")
    bank = _with_oracle(read_bank(src), read_csv(run_dir / "oracle.csv"), float16=True)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    write_bank(out_path, bank, features_dtype="float16")
    return bank


EXPORT_FILES = ("oracle.csv", "sources.csv", "scratch.csv", "grid.csv", "timings.json")


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
    from parc_jax.training import summarize

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
    outputs: dict[Path, bytes] = {out_dir / n: (run_dir / n).read_bytes() for n in EXPORT_FILES}
    with tempfile.TemporaryDirectory() as tmp:
        for t in preset.targets:
            staged = Path(tmp) / f"{t}.msgpack"
            export_bank(run_dir, t, staged)
            outputs[out_dir / "banks" / f"{t}.msgpack"] = staged.read_bytes()
    outputs[out_dir / "summary.md"] = markdown.encode()
    for path, data in outputs.items():
        write_bytes(path, data, parents=True)  # creates banks/ as needed
    return list(outputs)
