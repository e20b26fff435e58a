"""parc_jax: scalable diverse model selection with every published transferability scorer.

Every scorer is a pure JAX function for one model (``parc_jax.parc``, ``parc_jax.logme``, ...);
:func:`score_bank` scores a whole model bank with them in one compiled pass per width bucket.
Attributes are imported on first use (PEP 562), so ``python -m parc_jax.bank`` and friends do
not import the whole package first.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ScoreResult": "parc_jax.api",
    "score_bank": "parc_jax.api",
    "Bank": "parc_jax.bank",
    "BankError": "parc_jax.bank",
    "ModelEntry": "parc_jax.bank",
    "Target": "parc_jax.bank",
    "bank_from_arrays": "parc_jax.bank",
    "open_bank": "parc_jax.bank",
    "read_bank": "parc_jax.bank",
    "write_bank": "parc_jax.bank",
    "successive_halving": "parc_jax.halving",
    "SCORERS": "parc_jax.scorers.registry",
    "dds": "parc_jax.scorers.dds",
    "depth_prior": "parc_jax.scorers.heuristic",
    "heuristic": "parc_jax.scorers.heuristic",
    "gbc": "parc_jax.scorers.gbc",
    "gbc_spherical": "parc_jax.scorers.gbc",
    "hscore": "parc_jax.scorers.hscore",
    "hscore_shrink": "parc_jax.scorers.hscore",
    "knn": "parc_jax.scorers.knn",
    "leep": "parc_jax.scorers.probability",
    "nce": "parc_jax.scorers.probability",
    "logistic": "parc_jax.scorers.logistic",
    "stratified_half": "parc_jax.scorers.logistic",
    "logme": "parc_jax.scorers.logme",
    "parc": "parc_jax.scorers.parc",
    "rsa": "parc_jax.scorers.parc",
    "transrate": "parc_jax.scorers.transrate",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'parc_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
