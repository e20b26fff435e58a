"""The bank's format: its constants, the error type, and the Target / ModelEntry / Bank records."""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMAT = "parc-bank"
# Version 2 added the target's ``task``; version 1 files (no ``task``: classification or
# multi-label, told apart by the labels' shape) are still read.
VERSION = 2
READ_VERSIONS = (1, 2)
CLASSIFICATION, MULTILABEL, REGRESSION = "classification", "multilabel", "regression"
TASKS = (CLASSIFICATION, MULTILABEL, REGRESSION)
PROB_SUM_TOL = 1e-3
_MEMORY = "<memory>"

_TOP_KEYS = ("format", "version", "target", "models")
_TARGET_REQUIRED = ("name", "labels", "num_classes")
_TARGET_OPTIONAL = ("num_images", "reference_features")
# version 2: every target names its task; a regression target has no num_classes
_TARGET_REQUIRED_V2 = ("name", "labels", "task")
_TARGET_OPTIONAL_V2 = ("num_classes", "num_images", "reference_features")
_MODEL_REQUIRED = ("name", "features", "architecture")
_MODEL_OPTIONAL = ("probs", "depth", "source", "source_images", "meta")
_FEATURE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_HASH_BLOCK = 1 << 20
# what np.load and reading an .npz member raise on a corrupt or unreadable file
_LOAD_ERRORS = (
    OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
    KeyError, RuntimeError,
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Errors


class BankError(ValueError):
    """A bank file or in-memory bank breaks the format.

    The message names the shard (file, or ``<memory>``), the model (name, or ``#index`` when
    the name itself is unusable) or the target, the field, and what to do. The same pieces are
    kept as attributes ``shard``, ``model`` and ``field`` (``None`` where not applicable).
    """

    def __init__(
        self,
        message: str,
        *,
        shard: str | None = None,
        model: str | int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(" ".join(str(message).splitlines()))
        self.shard = shard
        self.model = model
        self.field = field


@dataclass(frozen=True)
class _Loc:
    """Where a value sits, for error messages: shard, and model (name/index) or target."""

    shard: str
    scope: str = "bank"  # "bank" | "target" | "model"
    model: str | int | None = None

    def error(self, fld: str | None, msg: str) -> BankError:
        parts = [self.shard]
        if self.scope == "model":
            who = f"model '{self.model}'" if isinstance(self.model, str) else f"model #{self.model}"
            parts.append(f"{who} field '{fld}'" if fld else who)
        elif self.scope == "target":
            parts.append(f"target field '{fld}'" if fld else "target")
        elif fld:
            parts.append(f"field '{fld}'")
        text = ": ".join(parts) + ": " + msg
        return BankError(
            text.replace("\n", " "),
            shard=self.shard,
            model=self.model if self.scope == "model" else None,
            field=fld,
        )


def _corrupt(shard: str, detail: str) -> BankError:
    return BankError(
        f"{shard}: not a valid parc bank (truncated or corrupt msgpack: {detail}); "
        "rewrite the file with parc_jax.bank.write_bank",
        shard=shard,
    )


@dataclass(eq=False)
class Target:
    """The target task of a bank.

    task: ``"classification"``, ``"multilabel"`` or ``"regression"``; None (the default)
    infers classification from ``[n]`` labels and multi-label from ``[n, K]`` labels (what a
    version-1 bank means). labels: int ``[n]`` in ``0..K-1`` (classification), 0/1 float
    ``[n, K]`` (multi-label) or finite floats ``[n]`` / ``[n, C]`` (regression, C outputs).
    num_classes: ``K``; for regression the number of outputs ``C`` (1 for ``[n]`` labels),
    set by validation (it is not stored in the file).
    reference_features: ``[n, d_r]`` features of a model trained on the target (used by rsa and
    dds for every model), or ``{architecture: [n, d_r]}`` to pick the scored model's own
    architecture, or None.
    """

    name: str
    labels: np.ndarray
    num_classes: int
    num_images: int | None = None
    reference_features: np.ndarray | dict[str, np.ndarray] | None = None
    task: str | None = None

    def __post_init__(self) -> None:
        if self.task is None:
            self.task = MULTILABEL if np.ndim(self.labels) == 2 else CLASSIFICATION

    @property
    def multilabel(self) -> bool:
        return self.task == MULTILABEL

    @property
    def regression(self) -> bool:
        return self.task == REGRESSION

    @property
    def n(self) -> int:
        """Number of probe images."""
        return int(np.shape(self.labels)[0])

    def reference_for(self, architecture: str | None) -> np.ndarray | None:
        """Reference features ``[n, d_r]`` for a model of ``architecture``, or None."""
        index = self.reference_index(architecture)
        return None if index is None else self.references()[index]

    def references(self) -> list[np.ndarray]:
        """The distinct reference feature arrays, in a fixed order (see reference_index)."""
        ref = self.reference_features
        if ref is None:
            return []
        return [ref] if isinstance(ref, np.ndarray) else list(ref.values())

    def reference_index(self, architecture: str | None) -> int | None:
        """Position in :meth:`references` of the reference a model of ``architecture`` is
        compared with (None: there is none)."""
        ref = self.reference_features
        if ref is None:
            return None
        if isinstance(ref, np.ndarray):
            return 0
        keys = list(ref)
        return keys.index(architecture) if architecture in keys else None


@dataclass(eq=False)
class ModelEntry:
    """One source model: probe features ``[n, d]`` (float16/float32) and optional extras.

    probs: ``[n, z]`` source-class probabilities (rows sum to 1). depth and source_images are
    positive ints (heuristic, depth prior). meta: free-form msgpack-native values.
    """

    name: str
    features: np.ndarray
    architecture: str
    probs: np.ndarray | None = None
    depth: int | None = None
    source: str | None = None
    source_images: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        """Feature width d."""
        return int(np.shape(self.features)[1])


@dataclass(eq=False)
class Bank:
    """A target and its source models, in memory."""

    target: Target
    models: list[ModelEntry]

    def __len__(self) -> int:
        return len(self.models)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]
