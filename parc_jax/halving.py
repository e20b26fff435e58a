"""Sub-linear selection by successive halving over the probe.

Score every model on a small stratified subset of the probe, keep the best ``1/eta`` of them,
re-score the survivors on a larger subset (the subsets are nested), and so on until the last
round uses the whole probe. Pairwise scorers such as PARC cost ~n^2 per model, so most of the
bank is judged at a fraction of the price, and only the contenders pay for the full probe.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np

from parc_jax.bank import Bank, open_bank
from parc_jax.engine import (
    DEFAULT_CHUNK_SIZE,
    EngineOptions,
    ModelFacts,
    method_dims,
    resolve_methods,
    score_stream,
)

__all__ = ["HalvingResult", "halving_schedule", "nested_probes", "successive_halving"]


@dataclasses.dataclass
class HalvingResult:
    """Outcome of successive halving for one method.

    ``ranking``: model names, best first (final survivors by their full-probe score, then the
    models eliminated in later rounds before those eliminated earlier). ``scores[name]``: the
    score of the last round the model took part in, and ``rounds[name]`` that round's index.
    ``cost_fraction``: the work done relative to scoring every model on the full probe, with a
    model-round costing ``(n_r / n)^power`` (2 for pairwise scorers such as PARC).
    ``flags``: notes as in :attr:`parc_jax.api.ScoreResult.flags`: a score that carries no
    information on the full probe (H-Score, whitened DDS) is NaN and ranks last; one that
    carries none only on a round's smaller probe is not judged there and passes on.
    """

    method: str
    ranking: list[str]
    scores: dict[str, float]
    rounds: dict[str, int]
    probe_sizes: list[int]
    survivors_per_round: list[int]
    cost_fraction: float
    flags: dict[str, str] = dataclasses.field(default_factory=dict)


def halving_schedule(
    n: int, num_models: int, *, eta: int = 2, min_fraction: float = 0.125, min_size: int = 1
):
    """Probe sizes per round: ``n * min_fraction * eta^r`` up to ``n``, each at least
    ``min_size`` (rounds that the floor makes equal are merged); with few models, only the
    last rounds (as many as halving can use before one model is left)."""
    if eta < 2:
        raise ValueError(f"eta: expected an int >= 2, got {eta}")
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction: expected a number in (0, 1], got {min_fraction}")
    rounds = max(1, math.ceil(math.log(1 / min_fraction, eta) - 1e-9) + 1)
    sizes = [n if r == rounds - 1 else int(round(n * min_fraction * eta**r)) for r in range(rounds)]
    sizes = [min(n, max(s, min_size)) for s in sizes]
    sizes = [s for i, s in enumerate(sizes) if i == len(sizes) - 1 or s != sizes[i + 1]]
    # few models need few rounds: drop the smallest probes, keep the full one last
    usable = max(1, math.ceil(math.log(max(num_models, 1), eta) - 1e-9) + 1)
    return sizes[-usable:]


def nested_probes(labels: np.ndarray, sizes: Sequence[int], seed: int = 0) -> list[np.ndarray]:
    """Nested stratified subsets of the probe: indices of the first ``sizes[r]`` images of one
    seeded order in which classes alternate (every class gets images early; >= 2 per class
    whenever the size allows)."""
    rng = np.random.default_rng(seed)
    if labels.ndim == 2:
        order = rng.permutation(labels.shape[0])
    else:
        # round-robin over classes in a shuffled order: position k of class c gets key k
        keys = np.empty(labels.shape[0])
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            keys[rng.permutation(idx)] = np.arange(idx.size) + rng.random()
        order = np.lexsort((rng.random(labels.shape[0]), keys))
    return [np.sort(order[:s]) for s in sizes]


def successive_halving(
    bank: Bank | str | os.PathLike,
    *,
    method: str = "parc",
    eta: int = 2,
    min_fraction: float = 0.125,
    n_dims: int | None | str = "default",
    pca: str = "exact",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    seed: int = 0,
    cost_power: float = 2.0,
) -> HalvingResult:
    """Select with successive halving; see the module docstring. Higher scores are better.

    The method must be able to run on the bank as full scoring judges it
    (:func:`parc_jax.engine.resolve_methods`: a ValueError otherwise), and degenerate scores
    are flagged as full scoring flags them (:func:`parc_jax.api.degenerate_flags`).
    """
    from parc_jax.api import _narrow, _target_info, degenerate_flags, reader_facts

    if isinstance(bank, Bank):
        target = _target_info(bank.target)

        def entries():
            return iter(bank.models)

        total = len(bank.models)
        facts = [ModelFacts.of(m) for m in bank.models]
    else:
        reader = open_bank(bank)
        target = _target_info(reader.target)
        entries, total = reader.iter_models, reader.num_models
        facts = reader_facts(reader)
    if not facts:
        raise ValueError("bank: holds no models")
    # the same applicability checks as full scoring (multi-label, probs, references, ...), on
    # every model's fields
    resolve_methods([method], target, facts)
    # a round gives every class of the probe 2 images (the scorers' minimum), or all it has
    # (full scoring's floor too, see probe_subsample; logistic, which needs 2, was refused above)
    if target.labels.ndim == 2:
        floor, min_size = None, 1
    else:
        floor = np.minimum(np.bincount(target.labels), 2)
        min_size = int(floor.sum())
    sizes = halving_schedule(target.n, total, eta=eta, min_fraction=min_fraction,
                             min_size=min_size)  # fmt: skip
    probes = nested_probes(target.labels, sizes, seed)
    for size, idx in zip(sizes, probes):
        if floor is not None:
            counts = np.bincount(target.labels[idx], minlength=floor.size)
            if (counts < floor).any():  # nested_probes' round-robin makes this impossible
                raise ValueError(
                    f"halving: a round's {size} probe images leave a class with fewer than "
                    f"min(2, its images); this is a bug, please report it with the bank"
                )
    dims = method_dims([method], n_dims)
    options = EngineOptions(methods=(method,), dims=tuple(dims.items()), pca=pca,
                            chunk_size=chunk_size)  # fmt: skip
    alive: set[str] | None = None
    scores: dict[str, float] = {}
    rounds: dict[str, int] = {}
    flags: dict[str, str] = {}
    eliminated: list[list[str]] = []
    survivors_per_round = []
    cost = 0.0
    for r, idx in enumerate(probes):
        stream = (_narrow(e) for e in entries() if alive is None or e.name in alive)
        kept, raw = score_stream(stream, target, options, probe_sets=[idx])
        values = np.array(raw[method][0], np.float64)
        survivors_per_round.append(len(kept))
        cost += len(kept) * (len(idx) / target.n) ** cost_power
        # no information on the full probe: NaN with a note, exactly as full scoring flags it
        on_full = {method: values.copy()}
        for m, why in degenerate_flags(kept, target, dims, on_full).items():
            flags.setdefault(m, why)
        # no information on this round's smaller probe only: not judged here, passed on
        on_round = {method: values.copy()}
        degenerate_flags(kept, dataclasses.replace(target, labels=target.labels[idx]), dims,
                         on_round)  # fmt: skip
        values = on_full[method]
        deferred = ~np.isfinite(on_round[method]) & np.isfinite(values)
        for m, v in zip(kept, values):
            scores[m.name], rounds[m.name] = float(v), r
        judged = np.where(deferred | np.isnan(values), -np.inf, values)
        order = np.argsort(-judged, kind="stable")
        ranked = [kept[i].name for i in order if not deferred[i]]
        if r == len(probes) - 1:
            eliminated.append(ranked)
        else:
            keep = max(1, math.ceil(len(ranked) / eta)) if ranked else 0
            passed = [kept[i].name for i in np.flatnonzero(deferred)]
            alive = set(ranked[:keep]) | set(passed)
            eliminated.append(ranked[keep:])
            if passed and f"{method} (round {r})" not in flags:
                flags[f"{method} (round {r})"] = (
                    f"{len(passed)} model(s) (e.g. {passed[0]!r}) not judged on round {r}'s "
                    f"{len(idx)} probe images, where the score carries no information (reduced "
                    "dimension >= images - 1); passed on to the next round"
                )
    ranking = [name for group in reversed(eliminated) for name in group]
    return HalvingResult(
        method=method,
        ranking=ranking,
        scores=scores,
        rounds=rounds,
        probe_sizes=[len(i) for i in probes],
        survivors_per_round=survivors_per_round,
        cost_fraction=cost / total,
        flags=flags,
    )
