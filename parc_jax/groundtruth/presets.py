"""Ground-truth presets: which datasets, zoo, sizes and training recipes a benchmark uses.

Each preset is a config module in :mod:`parc_jax.groundtruth.configs` (``tiny``, ``mini``) that
returns a :class:`Preset`; :func:`get_preset` loads one by name."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping

from parc_jax.groundtruth.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    """A ground-truth benchmark: datasets, zoo, sizes and training recipes.

    Sources are trained once per architecture (``source`` recipe, one learning rate); every
    ``(architecture, source, target)`` with ``source != target`` is fully fine-tuned with the
    ``finetune`` recipe over ``finetune_lrs``; every ``(architecture, target)`` is also trained
    from scratch with the ``scratch`` recipe over ``scratch_lrs`` (baseline and the reference
    model for rsa/dds). Caps are stratified; validation is carved before capping.
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
