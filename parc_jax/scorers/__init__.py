"""Every transferability scorer: one pure JAX function per score for ONE model.

Each ``name`` has a validating public function (``parc``, ``logme``, ...) and a pure core
(``parc_core``, ...) that the engine vmaps over models; ``SCORERS`` (from ``registry``) tells
the engine what each needs.
"""

from parc_jax.scorers.dds import dds
from parc_jax.scorers.gbc import gbc, gbc_spherical
from parc_jax.scorers.heuristic import depth_prior, heuristic
from parc_jax.scorers.hscore import (
    DegenerateScoreWarning,
    hscore,
    hscore_is_degenerate,
    hscore_shrink,
)
from parc_jax.scorers.knn import knn
from parc_jax.scorers.logistic import logistic, stratified_half
from parc_jax.scorers.logme import logme
from parc_jax.scorers.parc import parc, rsa
from parc_jax.scorers.probability import leep, nce
from parc_jax.scorers.registry import SCORERS, ScorerSpec
from parc_jax.scorers.transrate import transrate

__all__ = [
    "SCORERS",
    "DegenerateScoreWarning",
    "ScorerSpec",
    "dds",
    "depth_prior",
    "gbc",
    "gbc_spherical",
    "heuristic",
    "hscore",
    "hscore_is_degenerate",
    "hscore_shrink",
    "knn",
    "leep",
    "logistic",
    "logme",
    "nce",
    "parc",
    "rsa",
    "stratified_half",
    "transrate",
]
