"""The Python API that mirrors the CLI: a bank (object or path) in, a :class:`ScoreResult` out.

>>> result = score_bank("bank.msgpack", methods=["parc", "logme"], depth_prior=True)
>>> result.rows(sort_by="parc+l")[:3]
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from parc_jax import __version__
from parc_jax.bank import Bank, ModelEntry, open_bank
from parc_jax.distributed import gather_results, local_shards
from parc_jax.engine import (
    DEFAULT_CHUNK_SIZE,
    EngineOptions,
    ModelBatch,
    TargetInfo,
    make_mesh,
    method_dims,
    resolve_methods,
    score_stream,
)
from parc_jax.numerics import PCA_MODES
from parc_jax.scorers.heuristic import depth_prior as _depth_prior
from parc_jax.scorers.hscore import hscore_is_degenerate
from parc_jax.validation import check_n_dims

__all__ = ["PRIOR_SUFFIX", "ScoreResult", "probe_subsample", "score_bank"]

PRIOR_SUFFIX = "+l"
DEFAULT_L_MAX = 50.0
BOOTSTRAP_FRACTION = 0.8


@dataclasses.dataclass
class ScoreResult:
    """Scores of every model of a bank; higher = predicted to transfer better.

    ``scores[method]`` is a float array ``[M]`` aligned with ``models``. With the score spread
    (``bootstrap > 0``), ``spread[method]`` holds ``mean``, ``std`` (over resamples, population)
    and ``top1`` (fraction of resamples in which the model ranked first).
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

    def rows(self, sort_by: str | None = None, top: int | None = None) -> list[dict[str, Any]]:
        """One flat dict per model, best first: name, architecture, each score (and spread)."""
        out = []
        order = self.order(sort_by)
        if top is not None:
            order = order[:top]
        ranks = {m: self.ranks(m) for m in self.methods}
        for i in order:
            row = {"name": self.models[i]["name"], "architecture": self.models[i]["architecture"]}
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
            order = order[:top]
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
        return {
            "target": self.target,
            "methods": list(self.methods),
            "skipped": dict(self.skipped),
            "flags": dict(self.flags),
            "provenance": self.provenance,
            "models": models,
        }


def _finite_or_none(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def probe_subsample(
    labels: np.ndarray, fraction: float, rng: np.random.Generator, *, min_per_class: int = 2
) -> np.ndarray:
    """Sorted indices of a stratified subsample of the probe (without replacement).

    Each class keeps ``round(fraction * count)`` images but at least ``min(count,
    min_per_class)``; multi-label probes are subsampled uniformly. Without replacement on
    purpose: duplicated images would hand 1-NN a perfect neighbour and PARC zero distances.
    """
    n = labels.shape[0]
    if labels.ndim == 2:
        keep = max(2, int(round(fraction * n)))
        return np.sort(rng.choice(n, size=keep, replace=False))
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(min(idx.size, min_per_class), int(round(fraction * idx.size)))
        chosen.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def _target_info(target: Any) -> TargetInfo:
    return TargetInfo(
        name=str(target.name),
        labels=np.asarray(target.labels),
        num_classes=int(target.num_classes),
        num_images=None if target.num_images is None else int(target.num_images),
        reference_features=target.reference_features,
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
    )


def _device_string(mesh: Any) -> str:
    devs = list(mesh.devices.flat) if mesh is not None else jax.local_devices()[:1]
    kind = getattr(devs[0], "device_kind", devs[0].platform)
    return f"{len(devs)} x {devs[0].platform}:{kind}"


def score_bank(
    bank: Bank | str | os.PathLike,
    *,
    methods: Sequence[str] | str = "all",
    n_dims: int | None | str = "default",
    pca: str = "exact",
    depth_prior: bool = False,
    l_max: float = DEFAULT_L_MAX,
    bootstrap: int = 0,
    seed: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = True,
) -> ScoreResult:
    """Score every model of ``bank`` (a :class:`~parc_jax.bank.Bank` or a path to a file or a
    directory of shards) with ``methods`` in one compiled pass per width bucket.

    ``n_dims``: ``"default"`` (METRICS.md's per-scorer reduction), None (no reduction) or an
    int for every scorer that reduces. ``depth_prior`` adds ``<method>+l`` outputs (z-score
    over the bank plus ``depth / l_max``). ``bootstrap=R`` rescores on R seeded stratified
    80% subsamples of the probe and reports each score's spread and top-1 frequency.
    ``devices``: shard the model axis over these (default: all local devices).

    Several processes (after ``jax.distributed.initialize``, see :mod:`parc_jax.distributed`):
    call this in every process with the same bank directory; each process scores its own
    shards (``shards[process_index::process_count]``) on its local devices, and every process
    returns the whole bank's result, in bank order.
    """
    if pca not in PCA_MODES:
        raise ValueError(f"pca: expected one of {', '.join(PCA_MODES)}, got {pca!r}")
    if n_dims != "default":
        check_n_dims(n_dims)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap: expected a non-negative int, got {bootstrap!r}")
    if not (np.isfinite(l_max) and l_max > 0):
        raise ValueError(f"l_max: expected a positive number, got {l_max!r}")

    if isinstance(bank, Bank):
        target_obj, num_models, sha = bank.target, len(bank.models), None

        def entries() -> Iterator[ModelEntry]:
            return iter(bank.models)
    elif jax.process_count() > 1:
        # Multi-process run: each process streams its own shards; results meet on all.
        reader = open_bank(bank)
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
        entries = reader.iter_models

    target = _target_info(target_obj)
    stream = (_narrow(e) for e in entries())
    first = next(stream, None)
    if first is None:
        raise ValueError("bank: holds no models")
    run, skipped = resolve_methods(methods, target, first)
    if depth_prior:
        missing = [first.name] if first.depth is None else []
        if missing:
            raise ValueError(
                "depth_prior: the bank's models have no 'depth' (model "
                f"{missing[0]!r}); add depths to the bank or drop --depth-prior"
            )
    dims = method_dims(run, n_dims)
    options = EngineOptions(
        methods=tuple(run), dims=tuple(sorted(dims.items())), pca=pca, chunk_size=chunk_size
    )

    rng = np.random.default_rng(seed)
    probe_sets: list[np.ndarray | None] = [None]
    probe_sets += [
        probe_subsample(target.labels, BOOTSTRAP_FRACTION, rng) for _ in range(bootstrap)
    ]
    mesh = None
    if devices is not None or len(jax.local_devices()) > 1:
        mesh = make_mesh(devices)
        if chunk_size % mesh.size:
            raise ValueError(
                f"chunk_size: {chunk_size} must be a multiple of the {mesh.size} devices"
            )

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_models, desc=f"scoring {target.name}", unit="model", file=sys.stderr)

    def all_models() -> Iterator[ModelBatch]:
        yield first
        yield from stream

    try:
        kept, raw = score_stream(
            all_models(),
            target,
            options,
            mesh=mesh,
            probe_sets=probe_sets,
            progress=bar.update if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()

    if jax.process_count() > 1 and not isinstance(bank, Bank):
        kept, raw = gather_results(kept, raw, reader.names)

    scores = {m: raw[m][0] for m in run}
    methods_out = list(run)
    spread = None
    if bootstrap:
        spread = {m: _spread(raw[m][1:]) for m in run}
    if depth_prior:
        depths = [m.depth for m in kept]
        lacking = [m.name for m, d in zip(kept, depths) if d is None]
        if lacking:
            raise ValueError(
                f"depth_prior: model(s) {', '.join(lacking[:3])} have no 'depth'; add depths "
                "to the bank or drop --depth-prior"
            )
        if len(kept) < 2:
            raise ValueError("depth_prior: needs at least 2 models to z-score over")
        d = np.asarray(depths, np.float32)
        for m in run:
            key = m + PRIOR_SUFFIX
            scores[key] = np.asarray(_depth_prior(scores[m], d, l_max=l_max))
            methods_out.append(key)
            if spread is not None:
                boot = np.stack([np.asarray(_depth_prior(s, d, l_max=l_max)) for s in raw[m][1:]])
                spread[key] = _spread(boot)

    flags = degenerate_flags(kept, target, dims, scores)

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
            "num_classes": target.num_classes,
            "num_probe_images": target.n,
            "multilabel": target.multilabel,
            "num_images": target.num_images,
        },
        methods=methods_out,
        models=[
            {"name": m.name, "architecture": m.architecture, "source": m.source, "depth": m.depth}
            for m in kept
        ],
        scores=scores,
        provenance=provenance,
        skipped=skipped,
        flags=flags,
        spread=spread,
    )


def _whitened(n: int, width: int, n_dims: int | None) -> bool:
    """PCA to >= n - 1 dims then standardising whitens the probe: all rows equidistant."""
    return n_dims is not None and min(n_dims, width) >= n - 1


def degenerate_flags(
    kept: Sequence[ModelBatch],
    target: TargetInfo,
    dims: dict[str, int | None],
    scores: dict[str, np.ndarray],
) -> dict[str, str]:
    """Find scores that carry no information, set them to NaN and say why (per method); flag
    any other score that is not finite.

    * hscore: reduced dimension >= n - 1 makes the feature covariance singular; the score is
      K - 1 in exact arithmetic for every model, rounding noise in float32 (METRICS.md).
    * dds: PCA to >= n - 1 dims plus standardisation whitens the rows, so every pair of images
      has the same cosine distance and CKA is 0/0.
    """
    n = target.n
    flags: dict[str, str] = {}
    why = {
        "hscore": "the reduced dimension is >= n - 1: the feature covariance is singular and "
        "H-Score is K - 1 for every model (no information)",
        "dds": "PCA to >= n - 1 dims whitens the probe: all cosine distances are equal",
    }
    for method in why:
        if method not in scores:
            continue
        bad = []
        for i, m in enumerate(kept):
            width = m.features.shape[1]
            if method == "hscore":
                d_used = min(dims[method] or width, width)
                hit = hscore_is_degenerate(n, d_used)
            else:
                ref = target.reference_for(m.architecture)
                hit = _whitened(n, width, dims[method]) or (
                    ref is not None and _whitened(n, ref.shape[1], dims[method])
                )
            if hit:
                bad.append(i)
        if bad:
            scores[method][bad] = np.nan
            flags[method] = (
                f"degenerate for {len(bad)} of {len(kept)} model(s) (e.g. "
                f"{kept[bad[0]].name!r}): {why[method]}; shown as NaN. Use a smaller n_dims "
                "or a larger probe"
            )
    # Anything else that is not finite is a numerical failure: say so, never a silent NaN.
    explained = set(flags)
    for method, values in scores.items():
        if method in explained or method.removesuffix(PRIOR_SUFFIX) in explained:
            continue
        bad = np.flatnonzero(~np.isfinite(np.asarray(values, np.float64)))
        if bad.size:
            flags[method] = (
                f"not finite for {bad.size} of {len(kept)} model(s) (e.g. "
                f"{kept[bad[0]].name!r}): a numerical failure of the scorer on these features; "
                "please report it with the bank"
            )
    return flags


def _spread(boot: np.ndarray) -> dict[str, np.ndarray]:
    """``boot: [R, M]`` scores over resamples -> mean, population std, top-1 frequency."""
    safe = np.where(np.isnan(boot), -np.inf, boot)
    winners = np.argmax(safe, axis=1)
    top1 = np.bincount(winners, minlength=boot.shape[1]) / boot.shape[0]
    return {"mean": boot.mean(axis=0), "std": boot.std(axis=0), "top1": top1}
