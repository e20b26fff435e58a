"""Which methods run on a bank: names, per-method PCA widths, and what each needs of the target
and of every model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from parc_jax.defaults import SORT_BY
from parc_jax.engine._types import ModelBatch, ModelFacts, TargetInfo
from parc_jax.scorers.registry import BANK_LEVEL, META, PROBS, REFERENCE, SCORERS, ScorerSpec


def method_dims(
    methods: Sequence[str], n_dims: int | None | str = "default"
) -> dict[str, int | None]:
    """Per-method reduction: ``"default"`` = each scorer's own (docs/metrics.md), None = off,
    an int = that width for every scorer that reduces."""
    out: dict[str, int | None] = {}
    for m in methods:
        if m in BANK_LEVEL:  # a bank-level score reports its parts' width
            m_part = BANK_LEVEL[m][0][0]
            out[m] = method_dims([m_part], n_dims)[m_part]
            continue
        spec = SCORERS[m]
        if not spec.reduces:
            out[m] = None
        elif n_dims == "default":
            out[m] = spec.default_dims
        else:
            out[m] = n_dims  # type: ignore[assignment]
    return out


def _needs(spec: ScorerSpec, target: TargetInfo) -> str | None:
    """Why ``spec`` cannot run on this target (None if it can), judged from the target alone."""
    if target.task not in spec.tasks:
        if target.multilabel:
            return "single-label targets only"
        return f"does not take {target.task} targets ({' or '.join(spec.tasks)} only)"
    if REFERENCE in spec.inputs and target.reference_features is None:
        return "the bank has no target reference_features"
    if META in spec.inputs and target.num_images is None:
        return "the bank's target has no num_images"
    if spec.min_per_class > 0 and target.task == "classification":
        counts = np.bincount(target.labels, minlength=target.num_classes)
        present = counts[counts > 0]
        if present.min() < spec.min_per_class:
            return f"needs >= {spec.min_per_class} probe samples per class"
    return None


def method_names(requested: Sequence[str] | str) -> tuple[list[str], bool]:
    """``(names, is_all)`` from ``"all"``, one name, a comma-separated string or a sequence of
    names; duplicates are dropped, first occurrence kept (a repeated method would otherwise be
    scored twice into one result slot)."""
    if isinstance(requested, str):
        parts = requested.split(",")
    elif isinstance(requested, Sequence) and all(isinstance(m, str) for m in requested):
        parts = list(requested)
    else:
        raise ValueError(
            f"methods: expected 'all', a name, 'a,b' or a list of names, got {requested!r:.60}"
        )
    names = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not names:
        raise ValueError("methods: name at least one scorer, or 'all'")
    if "all" in names:
        if len(names) > 1:
            raise ValueError("methods: 'all' cannot be combined with other names")
        every = [*SCORERS, *BANK_LEVEL]
        return [SORT_BY, *(m for m in every if m != SORT_BY)], True
    unknown = [m for m in names if m not in SCORERS and m not in BANK_LEVEL]
    if unknown:
        raise ValueError(
            f"methods: unknown scorer(s) {', '.join(unknown)}; choose from "
            f"{', '.join([*SCORERS, *BANK_LEVEL])}"
        )
    return names, False


def _lacking(
    spec: ScorerSpec, target: TargetInfo, facts: Sequence[ModelFacts]
) -> tuple[list[ModelFacts], str]:
    """The models that lack a per-model input of ``spec``, and what they lack."""
    if PROBS in spec.inputs:
        return [f for f in facts if not f.probs], "no probs"
    if META in spec.inputs:
        return [f for f in facts if not (f.depth and f.source_images)], "no depth/source_images"
    if REFERENCE in spec.inputs:
        return [
            f for f in facts if target.reference_for(f.architecture) is None
        ], "no reference_features for their architecture"
    return [], ""


def resolve_methods(
    requested: Sequence[str] | str,
    target: TargetInfo,
    models: Sequence[ModelFacts | ModelBatch] | ModelBatch | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Methods to run and those skipped with why. ``"all"`` skips quietly; names are strict.

    ``requested``: see :func:`method_names`. Model-level needs (probs, depth, source_images, a
    reference for the architecture) are judged on every model of ``models`` (their
    :class:`ModelFacts`; one model is taken as the whole bank): under ``"all"`` a method that
    some model cannot take is skipped, saying how many lack what; asked for by name, it is an
    error naming such a model. Later models are checked again as they stream in.
    """
    names, is_all = method_names(requested)
    if isinstance(models, ModelBatch):
        models = [models]
    facts = [m if isinstance(m, ModelFacts) else ModelFacts.of(m) for m in models or ()]
    run, skipped = [], {}
    for m in names:
        if m in BANK_LEVEL:  # runs when all its parts can; judged after them
            continue
        spec = SCORERS[m]
        why = _needs(spec, target)
        if why is None and facts:
            lacking, what = _lacking(spec, target, facts)
            if lacking and is_all:
                why = (
                    f"{len(lacking)} of {len(facts)} models have {what} (e.g. {lacking[0].name!r})"
                )
            elif lacking:
                arch = f" {lacking[0].architecture!r}" if REFERENCE in spec.inputs else ""
                why = (
                    f"model {lacking[0].name!r} has {what.replace('their', 'its')}{arch} "
                    f"({len(lacking)} of {len(facts)} models lack it)"
                )
        if why is None:
            run.append(m)
        elif is_all:
            skipped[m] = why
        else:
            raise ValueError(f"methods: {m} cannot run on this bank: {why}")
    for m in names:
        if m not in BANK_LEVEL:
            continue
        parts = BANK_LEVEL[m][0]
        blocked = [p for p in parts if p in skipped]
        if not blocked and not is_all:
            try:
                resolve_methods(list(parts), target, facts)
            except ValueError as err:
                raise ValueError(str(err).replace("methods: ", f"methods: {m} needs ", 1)) from None
        if blocked:
            skipped[m] = f"its part {blocked[0]} cannot run: {skipped[blocked[0]]}"
        else:
            run.append(m)
    if not run:
        raise ValueError("methods: none of the requested scorers can run on this bank")
    return run, skipped


def engine_methods(run: Sequence[str]) -> list[str]:
    """The per-model methods the engine scores for ``run``: bank-level names replaced by
    their parts (each once, order kept)."""
    out: list[str] = []
    for m in run:
        for p in BANK_LEVEL[m][0] if m in BANK_LEVEL else (m,):
            if p not in out:
                out.append(p)
    return out


def add_bank_level(raw: dict[str, np.ndarray], run: Sequence[str]) -> dict[str, np.ndarray]:
    """``raw`` (``{method: [S, M]}``, every model of the run, every probe set) with each
    bank-level score of ``run`` added, row by row (per probe set: the full probe, each
    bootstrap resample), over the ``M`` models scored together. The one step that sees the
    whole set of models: called once every chunk is scored and every process's scores
    gathered, and by successive halving per round over that round's models."""
    out = dict(raw)
    for m in run:
        if m in BANK_LEVEL:
            parts, combine = BANK_LEVEL[m]
            rows = [np.asarray(raw[p], np.float64) for p in parts]
            out[m] = np.stack([combine(*(r[s] for r in rows)) for s in range(rows[0].shape[0])])
    return out
