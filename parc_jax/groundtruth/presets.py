"""Ground-truth presets: which datasets, zoo, sizes and training recipes a benchmark uses.

Each preset is a config module in :mod:`parc_jax.groundtruth.configs` (``tiny``, ``mini``) that
returns a :class:`Preset`; :func:`get_preset` loads one by name."""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from parc_jax.groundtruth.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    """A ground-truth benchmark: datasets, zoo, sizes and training recipes.

    With a ``pool``, every architecture is first pretrained once on the pool (the union of
    the pool datasets' training splits, labels kept apart; ``pretrain`` recipe at
    ``pretrain_lr``), the way the PARC paper's models all start from ImageNet weights; the
    pool must be disjoint from the targets. Sources are then trained once per architecture
    from that start (``source`` recipe, one learning rate; without a pool, from random
    weights). Every ``(architecture, source, target)`` with ``source != target`` is fully
    fine-tuned with the ``finetune`` recipe over ``finetune_lrs``, extended by up to
    ``lr_extend`` rates on a side while the best rate is at the grid's edge or every rate
    collapsed (:func:`parc_jax.groundtruth.train.grid_search`). Every ``(architecture,
    target)`` is also trained from scratch with the ``scratch`` recipe over ``scratch_lrs``
    (the baseline fine-tuning must beat). The rsa/dds reference model of an ``(architecture,
    target)`` is trained from scratch at the scratch run's rate for ``reference_epochs``
    multiples (> 1) of its epochs in turn, stopping at the first whose validation accuracy
    gains less than ``reference_tolerance`` points over the previous length (the scratch run
    is the first point; converged) or at the last (the epoch cap); the model kept is the best
    on validation along the way (the scratch model itself when no longer run beat it).
    ``flip_invariant``: datasets whose labels survive a horizontal flip (None: the
    defaults of :data:`parc_jax.groundtruth.data.FLIP_INVARIANT`). Caps are stratified;
    validation is carved before capping.
    """

    name: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    source: TrainConfig
    source_lr: float
    finetune: TrainConfig
    finetune_lrs: tuple[float, ...]
    scratch: TrainConfig
    scratch_lrs: tuple[float, ...]
    architectures: tuple[str, ...] = ("alexnet", "resnet14", "resnet26", "mixer")
    image_size: int = 16
    width: int = 8
    head_width: int = 160
    max_source_train: int | None = 4000
    max_target_train: int | None = 2000
    max_val: int = 500
    max_test: int | None = None
    probe_size: int = 500
    probe_runs: int = 5
    seed: int = 0
    pool: tuple[str, ...] = ()
    pretrain: TrainConfig | None = None
    pretrain_lr: float = 0.1
    max_pool_train: int | None = 4000
    lr_extend: int = 0
    reference_epochs: tuple[int, ...] = (2,)
    reference_tolerance: float = 1.0
    flip_invariant: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        shared = sorted(set(self.pool) & set(self.targets))
        if shared:
            raise ValueError(
                f"preset {self.name!r}: pool datasets {shared} are also targets; the "
                "pretraining pool must be disjoint from every target"
            )
        if self.pool and self.pretrain is None:
            raise ValueError(f"preset {self.name!r}: a pool needs a pretrain recipe")
        if not self.reference_epochs or any(
            not isinstance(f, int) or f < 2 for f in self.reference_epochs
        ):
            raise ValueError(
                f"preset {self.name!r}: reference_epochs must be ints >= 2, "
                f"got {self.reference_epochs!r}"
            )

    def flips(self, name: str) -> bool:
        """Whether ``name``'s labels survive a horizontal flip (training augmentation)."""
        from parc_jax.groundtruth.data import FLIP_INVARIANT

        table = FLIP_INVARIANT if self.flip_invariant is None else self.flip_invariant
        return name in table

    def transfers(self) -> list[tuple[str, str, str]]:
        """Every ``(architecture, source, target)`` except self-transfers, in run order."""
        return [
            (a, s, t)
            for t in self.targets
            for a in self.architectures
            for s in self.sources
            if s != t
        ]


PRESET_NAMES = ("tiny", "mini")


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (one of :data:`PRESET_NAMES`), from its config module."""
    if name not in PRESET_NAMES:
        raise ValueError(f"preset must be one of {sorted(PRESET_NAMES)}, got {name!r}")
    return importlib.import_module(f"parc_jax.groundtruth.configs.{name}").get_config()


def with_overrides(
    preset: Preset,
    *,
    config: str | os.PathLike | None = None,
    targets: Sequence[str] | None = None,
    flip_invariant: Sequence[str] | None = None,
) -> Preset:
    """``preset`` with fields replaced: first from a JSON file ``config`` (an object of
    :class:`Preset` fields; lists for tuples; a training recipe as an object of
    :class:`~parc_jax.groundtruth.train.TrainConfig` fields), then ``targets`` (new target
    datasets: any ``<name>.npz`` in the data folder) and ``flip_invariant`` (datasets added
    to the preset's flip-invariant set).

    Example: ``{"targets": ["orl", "faces"], "flip_invariant": ["faces"]}``.
    """
    import json
    from pathlib import Path

    changes: dict[str, Any] = {}
    if config is not None:
        try:
            raw = json.loads(Path(config).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"config: cannot read {config} as JSON ({e})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"config: {config} must hold a JSON object of preset fields")
        fields = {f.name: f for f in dataclasses.fields(Preset)}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise ValueError(f"config: unknown preset fields {unknown}; known: {sorted(fields)}")
        for key, value in raw.items():
            current = getattr(preset, key)
            if isinstance(current, TrainConfig) or key == "pretrain":
                base = current if isinstance(current, TrainConfig) else TrainConfig()
                changes[key] = None if value is None else dataclasses.replace(base, **value)
            elif isinstance(value, list):
                changes[key] = tuple(value)
            else:
                changes[key] = value
    if targets is not None:
        changes["targets"] = tuple(targets)
    if flip_invariant is not None:
        from parc_jax.groundtruth.data import FLIP_INVARIANT

        known = changes.get("flip_invariant", preset.flip_invariant)
        base = tuple(sorted(FLIP_INVARIANT)) if known is None else tuple(known)
        changes["flip_invariant"] = base + tuple(n for n in flip_invariant if n not in base)
    try:
        return dataclasses.replace(preset, **changes)
    except TypeError as e:
        raise ValueError(f"config: {e}") from None


class _Presets(Mapping):
    """``PRESETS[name]``: every preset by name, loaded on first use."""

    def __getitem__(self, name: str) -> Preset:
        if name not in PRESET_NAMES:
            raise KeyError(name)
        return get_preset(name)

    def __iter__(self):
        return iter(PRESET_NAMES)

    def __len__(self) -> int:
        return len(PRESET_NAMES)


PRESETS: Mapping[str, Preset] = _Presets()
