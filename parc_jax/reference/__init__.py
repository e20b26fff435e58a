"""Plain NumPy/SciPy reference implementation of every transferability scorer.

Each function is written straight from the equations in ``docs/metrics.md`` and is meant to
be read: it is the baseline the JAX scorers are tested against and the one throughput
benchmarks time. It is independent of the JAX implementation (nothing from ``parc_jax`` is
imported except ``stratified_half``, the logistic train/test split, which is not under test;
it is re-exported here).

Conventions shared by all functions:

* float64 internally; scalar scores are returned as Python floats, on the scales of docs/metrics.md
  (higher = predicted to transfer better).
* ``n_dims`` is an int (exact PCA to ``min(n_dims, n - 1, d)`` components, see :func:`pca`) or
  None (no reduction). There are no masks: the reference never sees padding.
* Bad input raises ``ValueError`` naming the argument. Checks are kept minimal (this is a
  reference), but a score that is undefined for its input (multi-label targets for the
  probability and Gaussian scores, a single class, constant distances) is refused rather than
  returned as NaN.
* Classes listed by ``num_classes`` but absent from the probe have no samples. Where a formula
  sums or averages over classes (LogME's one-vs-rest columns, TransRate's ``1/K``, GBC's class
  pairs) the reference uses the classes present in the probe; elsewhere an absent class has no
  effect on the value. The literal PARC label distance alone uses all ``num_classes`` one-hot
  columns, as the published code did.

One module per family, as the scorers: ``parc`` (parc, rsa, dds), ``probability``, ``hscore``,
``logme``, ``transrate``, ``gbc``, ``knn``, ``logistic``, ``heuristic``, ``lda`` (sfda,
etran, the NCTI parts), ``nleep``, ``pactran``, ``lfc``; ``_common`` holds the
shared pieces (PCA, standardisation, rank correlation).
"""

from parc_jax.reference._common import pca as pca
from parc_jax.reference._common import standardize as standardize
from parc_jax.reference.gbc import gbc as gbc
from parc_jax.reference.gbc import gbc_spherical as gbc_spherical
from parc_jax.reference.heuristic import depth_prior as depth_prior
from parc_jax.reference.heuristic import heuristic as heuristic
from parc_jax.reference.hscore import hscore as hscore
from parc_jax.reference.hscore import hscore_is_degenerate as hscore_is_degenerate
from parc_jax.reference.hscore import hscore_shrink as hscore_shrink
from parc_jax.reference.hscore import ledoit_wolf as ledoit_wolf
from parc_jax.reference.knn import knn as knn
from parc_jax.reference.lda import etran as etran
from parc_jax.reference.lda import ncti_ncc as ncti_ncc
from parc_jax.reference.lda import ncti_parts as ncti_parts
from parc_jax.reference.lda import ncti_seli as ncti_seli
from parc_jax.reference.lda import ncti_vc as ncti_vc
from parc_jax.reference.lda import sfda as sfda
from parc_jax.reference.lfc import lfc as lfc
from parc_jax.reference.logistic import logistic as logistic
from parc_jax.reference.logistic import logistic_fit as logistic_fit
from parc_jax.reference.logistic import logistic_objective as logistic_objective
from parc_jax.reference.logme import logme as logme
from parc_jax.reference.logme import logme_fit as logme_fit
from parc_jax.reference.nleep import nleep as nleep
from parc_jax.reference.pactran import pactran_dir as pactran_dir
from parc_jax.reference.pactran import pactran_gamma as pactran_gamma
from parc_jax.reference.pactran import pactran_gauss as pactran_gauss
from parc_jax.reference.parc import dds as dds
from parc_jax.reference.parc import hsic_unbiased as hsic_unbiased
from parc_jax.reference.parc import parc as parc
from parc_jax.reference.parc import rsa as rsa
from parc_jax.reference.probability import leep as leep
from parc_jax.reference.probability import nce as nce
from parc_jax.reference.transrate import transrate as transrate
from parc_jax.scorers.logistic import stratified_half as stratified_half

__all__ = [
    "sfda",
    "pactran_gauss",
    "pactran_gamma",
    "pactran_dir",
    "nleep",
    "ncti_ncc",
    "ncti_parts",
    "ncti_seli",
    "ncti_vc",
    "lfc",
    "etran",
    "dds",
    "depth_prior",
    "gbc",
    "gbc_spherical",
    "heuristic",
    "hscore",
    "hscore_is_degenerate",
    "hscore_shrink",
    "hsic_unbiased",
    "knn",
    "ledoit_wolf",
    "leep",
    "logistic",
    "logistic_fit",
    "logistic_objective",
    "logme",
    "logme_fit",
    "nce",
    "parc",
    "pca",
    "rsa",
    "standardize",
    "stratified_half",
    "transrate",
]
