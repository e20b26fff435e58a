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
from collections.abc import Callable, Sequence

import numpy as np

from parc_jax import defaults
from parc_jax.bank import Bank, BankReader, open_bank
from parc_jax.compilation_cache import enable_persistent_cache
from parc_jax.engine import (
    DEFAULT_CHUNK_SIZE,
    EngineOptions,
    ModelFacts,
    add_bank_level,
    engine_methods,
    method_dims,
    resolve_methods,
    score_stream,
)

__all__ = [
    "MODELS_PER_EXTRA_ROUND",
    "HalvingResult",
    "expected_cost_fraction",
    "halving_pays",
    "halving_plan",
    "halving_schedule",
    "nested_probes",
    "successive_halving",
]

# What one more round costs, counted in models: each round scores a new probe size, so it is
# one more compiled program (and dispatch) per method, which costs about as much as scoring a
# default chunk of 64 models does (on 2 CPU cores a PARC compile is ~2-5 s, a model ~40 ms).
MODELS_PER_EXTRA_ROUND = 64


@dataclasses.dataclass
class HalvingResult:
    """Outcome of successive halving for one method.

    ``ranking``: model names, best first (final survivors by their full-probe score, then the
    models eliminated in later rounds before those eliminated earlier). ``scores[name]``: the
    score of the last round the model took part in, and ``rounds[name]`` that round's index
    (0-based; the last round is on the full probe). ``round_scores[r]``: every score of round
    ``r``, by model name. ``cost_fraction``: the model-round fraction, the work done relative to
    scoring every model on the full probe, with a model-round costing ``(n_r / n)^power`` (2
    for pairwise scorers such as PARC); it leaves out the extra compilations.
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
    architectures: dict[str, str | None]
    cost_fraction: float
    flags: dict[str, str] = dataclasses.field(default_factory=dict)
    round_scores: list[dict[str, float]] = dataclasses.field(default_factory=list)

    def full_probe_score(self, name: str) -> float:
        """``name``'s score on the full probe, NaN for a model eliminated before the last round."""
        last = len(self.probe_sizes) - 1
        return self.scores[name] if self.rounds[name] == last else math.nan


def halving_schedule(
    n: int,
    num_models: int,
    *,
    eta: int = defaults.HALVING_ETA,
    min_fraction: float = defaults.HALVING_MIN_FRACTION,
    min_size: int = 1,
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


def expected_cost_fraction(
    num_models: int, sizes: Sequence[int], *, eta: int = 2, power: float = 2.0
) -> float:
    """The model-round fraction of a schedule, known before scoring: round ``r`` scores
    ``ceil(M / eta^r)`` models on ``sizes[r]`` images, each costing ``(sizes[r] / n)^power``
    of a full-probe score (models passed on unjudged make the measured one a little larger)."""
    n = sizes[-1]
    alive, cost = num_models, 0.0
    for size in sizes:
        cost += alive * (size / n) ** power
        alive = max(1, math.ceil(alive / eta))
    return cost / max(num_models, 1)


def halving_pays(
    num_models: int, sizes: Sequence[int], *, eta: int = 2, power: float = 2.0
) -> tuple[bool, str]:
    """Whether halving is worth running on a bank of ``num_models``, and why (a sentence).

    The rule: the full-probe model-scores it spares, ``M * (1 - expected_cost_fraction)``,
    must be at least :data:`MODELS_PER_EXTRA_ROUND` per round beyond the first; each round is
    one more program to compile and dispatch. E.g. with eta 2 and four rounds (first probe 1/8),
    a bank needs ~256 models."""
    rounds = len(sizes)
    spared = num_models * (1.0 - expected_cost_fraction(num_models, sizes, eta=eta, power=power))
    needed = MODELS_PER_EXTRA_ROUND * (rounds - 1)
    if rounds > 1 and spared >= needed:
        return True, ""
    return False, (
        f"{num_models} models are too few for halving to pay: {rounds} rounds would spare "
        f"{spared:.0f} full-probe model-scores, fewer than the {needed} that the "
        f"{rounds - 1} extra round(s) cost ({MODELS_PER_EXTRA_ROUND} per round)"
    )


def nested_probes(
    labels: np.ndarray, sizes: Sequence[int], seed: int = 0, *, stratify: bool = True
) -> list[np.ndarray]:
    """Nested stratified subsets of the probe: indices of the first ``sizes[r]`` images of one
    seeded order in which classes alternate (every class gets images early; >= 2 per class
    whenever the size allows). Multi-label probes, and any with ``stratify=False``
    (regression targets), take a plain seeded order."""
    rng = np.random.default_rng(seed)
    if labels.ndim == 2 or not stratify:
        order = rng.permutation(labels.shape[0])
    else:
        # round-robin over classes in a shuffled order: position k of class c gets key k
        keys = np.empty(labels.shape[0])
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            keys[rng.permutation(idx)] = np.arange(idx.size) + rng.random()
        order = np.lexsort((rng.random(labels.shape[0]), keys))
    return [np.sort(order[:s]) for s in sizes]


def _open(bank: Bank | BankReader | str | os.PathLike):
    """``(target info, entries() -> iterator of models, every model's facts)``; a path is
    opened (its headers read) here, an open :class:`BankReader` is used as it is."""
    from parc_jax.api import _target_info, reader_facts

    if isinstance(bank, Bank):
        target = _target_info(bank.target)

        def entries():
            return iter(bank.models)

        facts = [ModelFacts.of(m) for m in bank.models]
    else:
        reader = bank if isinstance(bank, BankReader) else open_bank(bank)
        target = _target_info(reader.target)
        entries = reader.iter_models
        facts = reader_facts(reader)
    if not facts:
        raise ValueError("bank: holds no models")
    return target, entries, facts


def _schedule(target, total: int, eta: int, min_fraction: float):
    """Probe sizes per round and the per-class floor of every round (None for multi-label):
    a round gives every class of the probe 2 images (the scorers' minimum), or all it has
    (full scoring's floor too, see probe_subsample)."""
    if target.labels.ndim == 2 or target.regression:
        floor, min_size = None, 1
    else:
        floor = np.minimum(np.bincount(target.labels), 2)
        min_size = int(floor.sum())
    sizes = halving_schedule(target.n, total, eta=eta, min_fraction=min_fraction,
                             min_size=min_size)  # fmt: skip
    return sizes, floor


def halving_plan(
    bank: Bank | BankReader | str | os.PathLike,
    *,
    eta: int = defaults.HALVING_ETA,
    min_fraction: float = defaults.HALVING_MIN_FRACTION,
) -> tuple[list[int], int]:
    """``(probe sizes per round, number of models)`` that :func:`successive_halving` would use
    on ``bank``, read from the bank's header only (for :func:`halving_pays`)."""
    target, _, facts = _open(bank)
    return _schedule(target, len(facts), eta, min_fraction)[0], len(facts)


def successive_halving(
    bank: Bank | BankReader | str | os.PathLike,
    *,
    method: str = "parc",
    eta: int = defaults.HALVING_ETA,
    min_fraction: float = defaults.HALVING_MIN_FRACTION,
    n_dims: int | None | str = "default",
    pca: str = defaults.PCA,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    seed: int = 0,
    cost_power: float = 2.0,
    progress: Callable[[str], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> HalvingResult:
    """Select with successive halving; see the module docstring. Higher scores are better.

    ``progress``: called with one line at the start of each round (models, probe images);
    ``on_chunk(count)`` as each chunk of models is scored.

    The method must be able to run on the bank as full scoring judges it
    (:func:`parc_jax.engine.resolve_methods`: a ValueError otherwise), and degenerate scores
    are flagged as full scoring flags them (:func:`parc_jax.api.degenerate_flags`).
    """
    from parc_jax.api import _narrow, degenerate_flags

    enable_persistent_cache()
    target, entries, facts = _open(bank)
    total = len(facts)
    # the same applicability checks as full scoring (multi-label, probs, references, ...), on
    # every model's fields
    resolve_methods([method], target, facts)
    sizes, floor = _schedule(target, total, eta, min_fraction)
    probes = nested_probes(target.labels, sizes, seed, stratify=not target.regression)
    for size, idx in zip(sizes, probes):
        if floor is not None:
            counts = np.bincount(target.labels[idx], minlength=floor.size)
            if (counts < floor).any():  # nested_probes' round-robin makes this impossible
                raise ValueError(
                    f"halving: a round's {size} probe images leave a class with fewer than "
                    f"min(2, its images); this is a bug, please report it with the bank"
                )
    dims = method_dims([method], n_dims)
    scored = engine_methods([method])  # ncti: its parts, combined per round below
    options = EngineOptions(methods=tuple(scored), dims=tuple(method_dims(scored, n_dims).items()),
                            pca=pca, chunk_size=chunk_size)  # fmt: skip
    alive: set[str] | None = None
    scores: dict[str, float] = {}
    rounds: dict[str, int] = {}
    architectures: dict[str, str | None] = {}
    flags: dict[str, str] = {}
    eliminated: list[list[str]] = []
    survivors_per_round = []
    round_scores: list[dict[str, float]] = []
    cost = 0.0
    for r, idx in enumerate(probes):
        stream = (_narrow(e) for e in entries() if alive is None or e.name in alive)
        count = total if alive is None else len(alive)
        if progress is not None:
            progress(f"halving round {r + 1}/{len(probes)}: scoring {count} models on "
                     f"{len(idx)} of {target.n} probe images")  # fmt: skip
        kept, raw = score_stream(stream, target, options, probe_sets=[idx], progress=on_chunk,
                                 num_models=count)  # fmt: skip
        raw = add_bank_level(raw, [method])  # over this round's models
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
            architectures[m.name] = m.architecture
        round_scores.append({m.name: float(v) for m, v in zip(kept, values)})
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
        architectures=architectures,
        cost_fraction=cost / total,
        flags=flags,
        round_scores=round_scores,
    )
