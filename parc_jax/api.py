"""The Python API that mirrors the CLI: a bank (object or path) in, a :class:`ScoreResult` out.

>>> result = score_bank("bank.msgpack", methods=["parc", "logme"], depth_prior=True)
>>> result.rows(sort_by="parc+l")[:3]
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from parc_jax import __version__, defaults
from parc_jax.bank import Bank, BankReader, ModelEntry, open_bank
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.defaults import BOOTSTRAP_FRACTION, ORACLE_KEY, PRIOR_SUFFIX
from parc_jax.distributed import gather_results, local_shards
from parc_jax.engine import (
    DEFAULT_CHUNK_SIZE,
    CompileRecord,
    EngineOptions,
    ModelBatch,
    ModelFacts,
    TargetInfo,
    add_bank_level,
    engine_methods,
    make_mesh,
    method_dims,
    resolve_methods,
    score_stream,
    sharding_mesh,
)
from parc_jax.numerics import PCA_MODES
from parc_jax.scorers.dds import dds_is_degenerate
from parc_jax.scorers.heuristic import check_l_max
from parc_jax.scorers.heuristic import depth_prior as _depth_prior
from parc_jax.scorers.hscore import hscore_is_degenerate
from parc_jax.validation import check_class_coverage, check_n_dims

__all__ = ["PRIOR_SUFFIX", "ScoreResult", "probe_subsample", "score_bank"]

DEFAULT_L_MAX = defaults.L_MAX  # also importable from here, beside score_bank


@dataclasses.dataclass
class ScoreResult:
    """Scores of every model of a bank; higher = predicted to transfer better.

    ``scores[method]`` is a float array ``[M]`` aligned with ``models``. With the score spread
    (``bootstrap > 0``), ``spread[method]`` holds ``mean``, ``std`` (over resamples, population)
    and ``top1`` (fraction of resamples in which the model ranked first); a model whose score
    is NaN (see ``flags``) has NaN mean and std and never ranks first.
    """

    target: dict[str, Any]
    methods: list[str]
    models: list[dict[str, Any]]
    scores: dict[str, np.ndarray]
    provenance: dict[str, Any]
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    flags: dict[str, str] = dataclasses.field(default_factory=dict)
    spread: dict[str, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.models)

    @property
    def names(self) -> list[str]:
        return [m["name"] for m in self.models]

    def ranks(self, method: str) -> np.ndarray:
        """1 = best. Ties share the best rank of their group; NaN ranks last."""
        s = np.where(np.isnan(self.scores[method]), -np.inf, self.scores[method])
        order = np.argsort(-s, kind="stable")
        ranks = np.empty(len(s), np.int64)
        ranks[order] = np.arange(1, len(s) + 1)
        # shared rank for exact ties
        for value in np.unique(s):
            tie = s == value
            ranks[tie] = ranks[tie].min()
        return ranks

    def order(self, method: str | None = None) -> np.ndarray:
        """Model indices best first by ``method`` (default: the first method)."""
        method = method or self.methods[0]
        if method not in self.scores:
            raise ValueError(f"sort_by: {method!r} is not among the scored methods {self.methods}")
        return np.lexsort((np.arange(len(self.models)), self.ranks(method)))

    def best(self, method: str | None = None) -> str:
        return self.models[int(self.order(method)[0])]["name"]

    @property
    def has_oracle(self) -> bool:
        """Whether the bank records its models' fine-tuned accuracies (``meta.oracle_accuracy``)."""
        return any(m.get(ORACLE_KEY) is not None for m in self.models)

    def oracle_agreement(self) -> dict[str, dict[str, float | int | None]]:
        """Per method, Spearman's rho and Kendall's tau-b between its scores and the oracle
        accuracies, over the models that have both (``models``); None where fewer than 3
        models do or a side is constant. Empty when the bank has no oracle."""
        if not self.has_oracle:
            return {}
        from scipy import stats

        oracle = np.array([np.nan if m.get(ORACLE_KEY) is None else m[ORACLE_KEY]
                           for m in self.models], np.float64)  # fmt: skip
        out = {}
        for m in self.methods:
            s = np.asarray(self.scores[m], np.float64)
            ok = np.isfinite(s) & np.isfinite(oracle)
            rho = tau = None
            if ok.sum() >= 3 and np.ptp(s[ok]) > 0 and np.ptp(oracle[ok]) > 0:
                rho = float(stats.spearmanr(s[ok], oracle[ok])[0])
                tau = float(stats.kendalltau(s[ok], oracle[ok])[0])
            out[m] = {"spearman": rho, "kendall": tau, "models": int(ok.sum())}
        return out

    def rows(self, sort_by: str | None = None, top: int | None = None) -> list[dict[str, Any]]:
        """One flat dict per model, best first: name, architecture, the oracle accuracy when the
        bank has one, each score (and spread)."""
        out = []
        order = self.order(sort_by)
        if top is not None:
            order = order[: _check_top(top)]
        ranks = {m: self.ranks(m) for m in self.methods}
        oracle = self.has_oracle
        for i in order:
            row = {"name": self.models[i]["name"], "architecture": self.models[i]["architecture"]}
            if oracle:
                value = self.models[i].get(ORACLE_KEY)
                row[ORACLE_KEY] = math.nan if value is None else float(value)
            for m in self.methods:
                row[m] = float(self.scores[m][i])
                row[f"rank[{m}]"] = int(ranks[m][i])
                if self.spread is not None and m in self.spread:
                    row[f"{m}_std"] = float(self.spread[m]["std"][i])
                    row[f"{m}_top1"] = float(self.spread[m]["top1"][i])
            out.append(row)
        return out

    def to_dict(self, sort_by: str | None = None, top: int | None = None) -> dict[str, Any]:
        """The CLI's JSON document."""
        ranks = {m: self.ranks(m) for m in self.methods}
        order = self.order(sort_by)
        if top is not None:
            order = order[: _check_top(top)]
        models = []
        for i in order:
            entry = dict(self.models[i])
            entry["scores"] = {m: _finite_or_none(self.scores[m][i]) for m in self.methods}
            entry["rank"] = {m: int(ranks[m][i]) for m in self.methods}
            if self.spread is not None:
                entry["spread"] = {
                    m: {k: _finite_or_none(v[i]) for k, v in self.spread[m].items()}
                    for m in self.spread
                }
            models.append(entry)
        doc = {
            "target": self.target,
            "methods": list(self.methods),
            "skipped": dict(self.skipped),
            "flags": dict(self.flags),
            "provenance": self.provenance,
        }
        if self.has_oracle:
            doc["oracle_agreement"] = self.oracle_agreement()
        return doc | {"models": models}


def _check_top(top: Any) -> int:
    """``top`` as a positive int (a slice would take -1 as "all but the last", 0 as none)."""
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top: expected a positive int, got {top!r}")
    return int(top)


def _finite_or_none(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def probe_subsample(
    labels: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    *,
    min_per_class: int = 2,
    stratify: bool = True,
) -> np.ndarray:
    """Sorted indices of a stratified subsample of the probe (without replacement).

    Each class keeps ``round(fraction * count)`` images but at least ``min(count,
    min_per_class)``; multi-label probes, and any with ``stratify=False`` (regression
    targets), are subsampled uniformly. Without replacement on purpose: duplicated images
    would hand 1-NN a perfect neighbour and PARC zero distances.
    """
    n = labels.shape[0]
    if labels.ndim == 2 or not stratify:
        keep = max(2, int(round(fraction * n)))
        return np.sort(rng.choice(n, size=keep, replace=False))
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(min(idx.size, min_per_class), int(round(fraction * idx.size)))
        chosen.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def _target_info(target: Any) -> TargetInfo:
    labels = np.asarray(target.labels)
    if not target.regression and (labels.ndim == 2) != target.multilabel:
        raise ValueError(
            f"target: task {target.task!r} does not fit labels of shape {labels.shape} "
            "([n] class indices are 'classification', [n, K] 0/1 'multilabel'); set task"
        )
    if not target.regression:
        where = f"target {target.name!r} labels"
        check_class_coverage(labels, int(target.num_classes), where=where)
    return TargetInfo(
        name=str(target.name),
        labels=np.asarray(target.labels),
        num_classes=int(target.num_classes),
        num_images=None if target.num_images is None else int(target.num_images),
        reference_features=target.reference_features,
        task=target.task,
    )


def _narrow(entry: ModelEntry) -> ModelBatch:
    return ModelBatch(
        name=entry.name,
        features=entry.features,
        architecture=entry.architecture,
        probs=entry.probs,
        depth=None if entry.depth is None else float(entry.depth),
        source=entry.source,
        source_images=None if entry.source_images is None else float(entry.source_images),
        oracle=_oracle(entry),
    )


def _oracle(entry: ModelEntry) -> float | None:
    value = entry.meta.get(ORACLE_KEY) if isinstance(entry.meta, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return None
    return float(value) if np.isfinite(value) else None


def _device_string(mesh: Any) -> str:
    devs = list(mesh.devices.flat) if mesh is not None else jax.local_devices()[:1]
    kind = getattr(devs[0], "device_kind", devs[0].platform)
    text = f"{len(devs)} x {devs[0].platform}:{kind}"
    if len(devs) > 1 and sharding_mesh(mesh) is None:
        text += " (one at a time: CPU devices share the cores)"
    return text


def score_bank(
    bank: Bank | str | os.PathLike,
    *,
    methods: Sequence[str] | str = "all",
    n_dims: int | None | str = "default",
    pca: str = defaults.PCA,
    depth_prior: bool = False,
    l_max: float = DEFAULT_L_MAX,
    bootstrap: int = 0,
    seed: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_compiled: Callable[[str, list[CompileRecord]], None] | None = None,
) -> ScoreResult:
    """Score every model of ``bank`` (a :class:`~parc_jax.bank.Bank` or a path to a file or a
    directory of shards) with ``methods`` in one compiled pass per width bucket.

    ``methods``: ``"all"`` (every scorer that every model of the bank supports; the others
    are listed in ``skipped`` with why), one name, ``"a,b"`` or a list; repeats count once.
    ``n_dims``: ``"default"`` (docs/metrics.md's per-scorer reduction), None (no reduction) or an
    int for every scorer that reduces. ``depth_prior`` adds ``<method>+l`` outputs (z-score
    over the models with a finite score plus ``depth / l_max``; NaN where the score is NaN).
    ``bootstrap=R`` rescores on R seeded stratified 80% subsamples of the probe and reports
    each score's spread and top-1 frequency. Scores that carry no information or are undefined
    are NaN, in the spread too, and ``flags`` says why and for which models.
    ``devices``: shard the model axis over these (default: all local devices).

    Several processes (after ``jax.distributed.initialize``, see :mod:`parc_jax.distributed`):
    call this in every process with the same bank directory; each process scores its own
    shards (``shards[process_index::process_count]``) on its local devices, and every process
    returns the whole bank's result, in bank order.

    ``on_chunk(count)`` is called as each chunk's scores come back and ``on_stage(text)`` with
    what runs next (e.g. to drive a progress display or a stall watchdog); ``on_compiled(bucket,
    records)`` after the programs of a new chunk shape are compiled, before they run (one
    :class:`~parc_jax.engine.CompileRecord` per program; the progress bar prints them as one
    line per bucket). This function has
    no stall watchdog of its own (the CLI's ``--stall-timeout`` ends its process, which a
    library must not do): to bound a run, score in a subprocess with a timeout.
    """
    enable_persistent_cache()
    if pca not in PCA_MODES:
        raise ValueError(f"pca: expected one of {', '.join(PCA_MODES)}, got {pca!r}")
    if n_dims != "default":
        check_n_dims(n_dims)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap: expected a non-negative int, got {bootstrap!r}")
    l_max = check_l_max(l_max)

    if isinstance(bank, Bank):
        target_obj, num_models, sha = bank.target, len(bank.models), None
        facts = [ModelFacts.of(m) for m in bank.models]

        def entries() -> Iterator[ModelEntry]:
            return iter(bank.models)
    elif jax.process_count() > 1:
        # Multi-process run: each process streams its own shards; results meet on all.
        reader = open_bank(bank)
        facts = reader_facts(reader)  # the whole bank's: every process resolves alike
        local = local_shards(reader.shards)
        target_obj, sha = reader.target, reader.sha256() if jax.process_index() == 0 else None
        local_readers = [open_bank(path) for path in local]
        num_models = sum(r.num_models for r in local_readers)

        def entries() -> Iterator[ModelEntry]:
            for r in local_readers:
                yield from r.iter_models()
    else:
        reader = open_bank(bank)
        target_obj, num_models, sha = reader.target, reader.num_models, reader.sha256()
        facts = reader_facts(reader)
        entries = reader.iter_models

    target = _target_info(target_obj)
    if not facts:
        raise ValueError("bank: holds no models")
    # "all" is decided from every model's fields, not the first one's: order must not matter
    run, skipped = resolve_methods(methods, target, facts)
    if depth_prior:
        lacking = [f.name for f in facts if not f.depth]
        if lacking:
            raise ValueError(
                f"depth_prior: model {lacking[0]!r} has no 'depth' ({len(lacking)} of "
                f"{len(facts)} models lack it); add depths to the bank or drop --depth-prior"
            )
        if len(facts) < 2:
            raise ValueError("depth_prior: needs at least 2 models to z-score over")
    dims = method_dims(run, n_dims)
    scored = engine_methods(run)  # bank-level scores (ncti) run as their per-model parts
    options = EngineOptions(
        methods=tuple(scored),
        dims=tuple(sorted(method_dims(scored, n_dims).items())),
        pca=pca,
        chunk_size=chunk_size,
    )

    rng = np.random.default_rng(seed)
    probe_sets: list[np.ndarray | None] = [None]
    probe_sets += [
        probe_subsample(target.labels, BOOTSTRAP_FRACTION, rng, stratify=not target.regression)
        for _ in range(bootstrap)
    ]
    mesh = None
    if devices is not None or len(jax.local_devices()) > 1:
        mesh = make_mesh(devices)
        sharded = sharding_mesh(mesh)
        if sharded is not None and chunk_size % sharded.size:
            raise ValueError(
                f"chunk_size: {chunk_size} must be a multiple of the {sharded.size} devices"
            )

    bar = show_stage = show_compiled = None
    if progress:
        from tqdm.auto import tqdm

        desc = f"scoring {target.name}"
        bar = tqdm(total=num_models, desc=desc, unit="model", file=sys.stderr)

        def show_stage(text: str) -> None:
            bar.set_description_str(text if text.startswith("compiling") else desc)

        def show_compiled(bucket: str, records: list[CompileRecord]) -> None:
            bar.write(compile_summary(bucket, records), file=sys.stderr)

    try:
        kept, raw = score_stream(
            (_narrow(e) for e in entries()),
            target,
            options,
            mesh=mesh,
            probe_sets=probe_sets,
            progress=_chain(bar.update if bar is not None else None, on_chunk),
            stage=_chain(show_stage, on_stage),
            compiled=_chain(show_compiled, on_compiled),
            num_models=num_models,
        )
    finally:
        if bar is not None:
            bar.close()

    if jax.process_count() > 1 and not isinstance(bank, Bank):
        kept, raw = gather_results(kept, raw, reader.names)
    # Every model's parts are in (all chunks, all processes): the bank-level scores now.
    raw = add_bank_level(raw, run)

    scores = {m: raw[m][0] for m in run}
    methods_out = list(run)
    # Blank what carries no information before anything is derived from the scores: the
    # depth prior's z-score and the spread must not see a degenerate value.
    flags = degenerate_flags(kept, target, dims, scores)
    spread, boots = None, {}
    if bootstrap:
        spread = {}
        for m in run:
            boot = np.array(raw[m][1:], np.float64)
            for r, idx in enumerate(probe_sets[1:]):
                boot[r, _undefined(m, kept, target, dims[m], len(idx))[0]] = np.nan
            boot[:, ~np.isfinite(scores[m])] = np.nan  # blanked on the full probe
            boots[m] = boot
            spread[m] = _spread(boot)
            late = np.flatnonzero(np.isnan(spread[m]["mean"]) & np.isfinite(scores[m]))
            if late.size:
                note = (
                    f"spread NaN for {_some(kept, late)}: undefined or not finite on some of "
                    "the bootstrap resamples (a smaller probe)"
                )
                flags[m] = f"{flags[m]}; {note}" if m in flags else note
    if depth_prior:
        lacking = [m.name for m in kept if m.depth is None]
        if lacking:  # the bank changed since its fields were read
            raise ValueError(f"depth_prior: model {lacking[0]!r} has no 'depth'")
        d = np.asarray([m.depth for m in kept], np.float64)
        for m in run:
            key = m + PRIOR_SUFFIX
            scores[key] = _prior(scores[m], d, l_max)
            methods_out.append(key)
            if spread is not None:
                spread[key] = _spread(np.stack([_prior(s, d, l_max) for s in boots[m]]))
            blank = np.flatnonzero(np.isnan(scores[key]))
            finite = int(np.isfinite(scores[m]).sum())
            if finite < 2:
                flags[key] = (
                    f"NaN for every model: {finite} model(s) have a finite {m}, and the "
                    "z-score needs at least 2; shown as NaN"
                )
            elif blank.size:
                flags[key] = (
                    f"NaN for {_some(kept, blank)}: {m} is NaN there (see its note); the "
                    f"z-score is over the other {finite} model(s); shown as NaN"
                )

    has_oracle = any(m.oracle is not None for m in kept)
    provenance = {
        "package": "parc-jax",
        "version": __version__,
        "jax": jax.__version__,
        "device": _device_string(mesh),
        "pca": pca,
        "parameters": {
            m: {"n_dims": dims[m], **({"l_max": l_max} if depth_prior else {})} for m in run
        },
        "chunk_size": chunk_size,
        "bank_sha256": sha,
        "bootstrap": {"resamples": bootstrap, "fraction": BOOTSTRAP_FRACTION, "seed": seed}
        if bootstrap
        else None,
    }
    return ScoreResult(
        target={
            "name": target.name,
            "task": target.task,
            "num_classes": target.num_classes,
            "num_probe_images": target.n,
            "multilabel": target.multilabel,
            "num_images": target.num_images,
        },
        methods=methods_out,
        models=[
            {"name": m.name, "architecture": m.architecture, "source": m.source, "depth": m.depth}
            | ({ORACLE_KEY: m.oracle} if has_oracle else {})
            for m in kept
        ],
        scores=scores,
        provenance=provenance,
        skipped=skipped,
        flags=flags,
        spread=spread,
    )


def _chain(*fns: Callable[..., None] | None) -> Callable[..., None] | None:
    """One callback calling every given one in turn (None when none is given)."""
    given = [f for f in fns if f is not None]
    if not given:
        return None

    def call(*args: Any) -> None:
        for f in given:
            f(*args)

    return call


def compile_summary(bucket: str, records: Sequence[CompileRecord]) -> str:
    """One line: how long each program of a bucket took to compile (or load from the cache)."""
    total = sum(r.seconds for r in records)
    parts = ", ".join(f"{r.name} {r.seconds:.1f}" for r in records)
    count = f"{len(records)} program{'s' if len(records) != 1 else ''}"
    return f"compiled {count} for {bucket} in {total:.1f} s ({parts})"


def reader_facts(reader: BankReader) -> list[ModelFacts]:
    """Every model's :class:`~parc_jax.engine.ModelFacts` (name, architecture, which optional
    fields it has) from :meth:`BankReader.model_fields`: the shards' msgpack headers, without
    reading the arrays."""
    return [ModelFacts(**fields) for fields in reader.model_fields()]


def _some(kept: Sequence[ModelBatch], index: Sequence[int] | np.ndarray) -> str:
    """``"2 of 4 model(s) ('a', 'b')"``: how many, and which (the first 3)."""
    names = ", ".join(repr(kept[i].name) for i in list(index)[:3])
    more = ", ..." if len(index) > 3 else ""
    return f"{len(index)} of {len(kept)} model(s) ({names}{more})"


def _prior(values: np.ndarray, depths: np.ndarray, l_max: float) -> np.ndarray:
    """The depth prior over the models with a finite score; NaN for the others (and for all
    when fewer than 2 are finite: no sample std)."""
    values = np.asarray(values, np.float64)
    out = np.full(values.shape, np.nan)
    finite = np.isfinite(values)
    if finite.sum() >= 2:
        out[finite] = np.asarray(_depth_prior(values[finite], depths[finite], l_max=l_max))
    return out


def _one_dim(width: int, n_dims: int | None) -> bool:
    """One column left after PCA: a one-element row has no correlation with another."""
    return min(width, n_dims or width) <= 1


_WHY = {
    "hscore": "the reduced dimension is >= n - 1: the feature covariance is singular and "
    "H-Score is K - 1 for every model (no information)",
    "dds": "PCA to >= n - 1 dims whitens the probe: all cosine distances are equal",
    "one_dim": "one dimension after PCA (n_dims 1 or a 1-wide model or reference): all "
    "pairwise row-correlation distances are equal, so the rank correlation is undefined",
}
_FIX = {
    "hscore": "use a smaller n_dims or a larger probe",
    "dds": "use a smaller n_dims or a larger probe",
    "one_dim": "use n_dims >= 2",
}
# A NaN from these scorers is their answer for all-equal distances (Spearman or CKA 0/0).
_SCORER_NAN = {
    m: "all pairwise feature distances are equal (constant features, or one varying "
    "dimension left after PCA's rank cut), so the score is undefined; check the features"
    for m in ("parc", "rsa", "dds")
}


def _undefined(
    method: str, kept: Sequence[ModelBatch], target: TargetInfo, n_dims: int | None, n: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(mask [M], {rule: mask})``: the models whose ``method`` score carries no information
    or is undefined on a probe of ``n`` images, decided from the inputs (not the score)."""
    rules: dict[str, np.ndarray] = {}
    m = len(kept)
    if method == "hscore":
        rules["hscore"] = np.array(
            [hscore_is_degenerate(n, min(n_dims or b.features.shape[1], b.features.shape[1]))
             for b in kept], bool,
        )  # fmt: skip
    if method in ("parc", "rsa", "dds"):
        refs = [target.reference_for(b.architecture) for b in kept]
        uses_ref = method != "parc"
        if method == "dds":
            rules["dds"] = np.array(
                [dds_is_degenerate(n, b.features.shape[1], n_dims)
                 or (r is not None and dds_is_degenerate(n, r.shape[1], n_dims))
                 for b, r in zip(kept, refs)], bool,
            )  # fmt: skip
        else:
            rules["one_dim"] = np.array(
                [_one_dim(b.features.shape[1], n_dims)
                 or (uses_ref and r is not None and _one_dim(r.shape[1], n_dims))
                 for b, r in zip(kept, refs)], bool,
            )  # fmt: skip
    mask = np.zeros(m, bool)
    for hit in rules.values():
        mask |= hit
    return mask, rules


def degenerate_flags(
    kept: Sequence[ModelBatch],
    target: TargetInfo,
    dims: dict[str, int | None],
    scores: dict[str, np.ndarray],
) -> dict[str, str]:
    """Find scores that carry no information or are undefined, set them to NaN and say why
    (per method, naming the models); flag any other score that is not finite.

    * hscore: reduced dimension >= n - 1 makes the feature covariance singular; the score is
      K - 1 in exact arithmetic for every model, rounding noise in float32 (docs/metrics.md).
    * dds: PCA to >= n - 1 dims plus standardisation whitens the rows, so every pair of images
      has the same cosine distance and CKA is 0/0.
    * parc, rsa: one dimension after PCA makes every pairwise distance equal; Spearman is then
      undefined. So do constant features: the scorers return NaN there (dds too), and the
      note says why.
    """
    flags: dict[str, str] = {}
    for method, values in scores.items():
        notes = []
        if method in dims:
            _, rules = _undefined(method, kept, target, dims[method], target.n)
            for rule, hit in rules.items():
                if hit.any():
                    values[hit] = np.nan
                    notes.append(
                        f"{'degenerate' if rule in ('hscore', 'dds') else 'undefined'} for "
                        f"{_some(kept, np.flatnonzero(hit))}: {_WHY[rule]}; {_FIX[rule]}"
                    )
            explained = np.zeros(len(kept), bool)
            for hit in rules.values():
                explained |= hit
        else:
            explained = np.zeros(len(kept), bool)
        # Anything else not finite: the scorer's own "undefined", or a numerical failure.
        bad = np.flatnonzero(~np.isfinite(np.asarray(values, np.float64)) & ~explained)
        if bad.size:
            why = _SCORER_NAN.get(method) or (
                "a numerical failure of the scorer on these features; please report it with "
                "the bank"
            )
            notes.append(f"not finite for {_some(kept, bad)}: {why}")
        if notes:
            flags[method] = "; ".join(notes) + "; shown as NaN"
    return flags


def _spread(boot: np.ndarray) -> dict[str, np.ndarray]:
    """``boot: [R, M]`` scores over resamples -> mean, population std, top-1 frequency.

    A model that is NaN on any resample has NaN mean and std, and never ranks first; a
    resample where no model is finite has no winner."""
    boot = np.asarray(boot, np.float64)
    finite = np.isfinite(boot)
    safe = np.where(finite, boot, -np.inf)
    winners = np.argmax(safe, axis=1)[finite.any(axis=1)]
    top1 = np.bincount(winners, minlength=boot.shape[1]) / boot.shape[0]
    return {"mean": boot.mean(axis=0), "std": boot.std(axis=0), "top1": top1}
