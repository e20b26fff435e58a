"""The registry of scorers.

``SCORERS`` maps a method name to a :class:`ScorerSpec` that tells the engine which bank fields
the method reads, its default feature reduction (docs/metrics.md), which target tasks it accepts
(classification, multi-label, regression), and how to call its pure one-model core.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax

from parc_jax.scorers.dds import DDS_N_DIMS, dds, dds_core
from parc_jax.scorers.etran import ETRAN_N_DIMS, etran, etran_core
from parc_jax.scorers.gbc import GBC_N_DIMS, gbc, gbc_core, gbc_spherical, gbc_spherical_core
from parc_jax.scorers.heuristic import heuristic, heuristic_core
from parc_jax.scorers.hscore import (
    HSCORE_N_DIMS,
    hscore,
    hscore_core,
    hscore_shrink,
    hscore_shrink_core,
)
from parc_jax.scorers.knn import KNN_N_DIMS, knn, knn_core
from parc_jax.scorers.lfc import LFC_N_DIMS, lfc, lfc_core
from parc_jax.scorers.logistic import (
    LOGISTIC_N_DIMS,
    PACTRAN_GAUSS_N_DIMS,
    logistic,
    logistic_core,
    pactran_gauss,
    pactran_gauss_core,
)
from parc_jax.scorers.logme import LOGME_N_DIMS, logme, logme_core
from parc_jax.scorers.ncti import (
    NCTI_N_DIMS,
    NCTI_PARTS,
    ncti_combine,
    ncti_ncc,
    ncti_ncc_core,
    ncti_seli,
    ncti_seli_core,
    ncti_vc,
    ncti_vc_core,
)
from parc_jax.scorers.nleep import NLEEP_N_DIMS, nleep, nleep_core
from parc_jax.scorers.pactran import (
    pactran_dir,
    pactran_dir_core,
    pactran_gamma,
    pactran_gamma_core,
)
from parc_jax.scorers.parc import PARC_N_DIMS, RSA_N_DIMS, parc, parc_core, rsa, rsa_core
from parc_jax.scorers.probability import leep, leep_core, nce, nce_core
from parc_jax.scorers.sfda import SFDA_N_DIMS, sfda, sfda_core
from parc_jax.scorers.transrate import TRANSRATE_N_DIMS, transrate, transrate_core

__all__ = [
    "BANK_LEVEL",
    "BANK_LEVEL_DESCRIPTIONS",
    "META",
    "PROBS",
    "REFERENCE",
    "SCORERS",
    "FEATURES",
    "ScorerSpec",
]

# What a method reads from a bank. "labels" is implied for every method with min_per_class >= 0
# and uses_labels; "meta" means depth / source_images / num_images.
FEATURES = "features"
PROBS = "probs"
REFERENCE = "reference_features"
META = "meta"


@dataclass(frozen=True)
class ScorerSpec:
    """How the engine runs one method. ``call`` maps a model's batched inputs to a score."""

    name: str
    fn: Callable[..., Any]
    core: Callable[..., Any]
    inputs: tuple[str, ...]
    default_dims: int | None
    reduces: bool
    multilabel: bool
    uses_labels: bool
    min_per_class: int
    description: str
    call: Callable[..., jax.Array]
    # The core takes a static ``class_block`` (transrate): the engine passes it per probe.
    class_block: bool = False
    # The core takes the centred features' numerics.Spectrum (transrate), which the engine's
    # shared PCA computes anyway (only when the method does not reduce).
    spectrum: bool = False
    # The target tasks the method accepts (bank ``task`` values). Empty (the default) means
    # classification, plus multilabel where ``multilabel`` says so: a scorer takes regression
    # targets only when it declares so (its core then takes a static ``regression`` flag).
    tasks: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.tasks:
            tasks = ("classification", "multilabel") if self.multilabel else ("classification",)
            object.__setattr__(self, "tasks", tasks)


def _features_call(
    core: Callable[..., Any],
    extras: Callable[[Mapping[str, jax.Array], Mapping[str, Any]], dict[str, Any]] | None = None,
) -> Callable[..., jax.Array]:
    """``core(features, labels, ...)``; ``extras(x, t)`` gives more keyword arguments."""

    def call(x: Mapping[str, jax.Array], t: Mapping[str, Any], *, n_dims: int | None):
        return core(
            x["features"],
            t["labels"],
            num_classes=t["num_classes"],
            n_dims=n_dims,
            feature_mask=x["feature_mask"],
            **(extras(x, t) if extras is not None else {}),
        )

    return call


def _regression_extras(x: Mapping[str, jax.Array], t: Mapping[str, Any]) -> dict[str, Any]:
    """The static ``regression`` flag of the scorers that take regression targets."""
    return {"regression": bool(t.get("regression", False))}


def _transrate_extras(x: Mapping[str, jax.Array], t: Mapping[str, Any]) -> dict[str, Any]:
    """TransRate's engine extras: the per-probe class block size, and the centred features'
    spectrum when the shared PCA computed it (``centred_matrix``/``_eigenvalues``)."""
    spectrum = None
    if "centred_matrix" in x:
        spectrum = (x["centred_matrix"], x["centred_eigenvalues"])
    return {"class_block": t.get("class_block"), "spectrum": spectrum}


def _reference_call(core: Callable[..., Any]) -> Callable[..., jax.Array]:
    def call(x: Mapping[str, jax.Array], t: Mapping[str, Any], *, n_dims: int | None):
        return core(
            x["features"],
            x["reference_features"],
            n_dims=n_dims,
            feature_mask=x["feature_mask"],
            reference_mask=x["reference_mask"],
        )

    return call


def _probs_call(core: Callable[..., Any]) -> Callable[..., jax.Array]:
    def call(x: Mapping[str, jax.Array], t: Mapping[str, Any], *, n_dims: int | None):
        del n_dims
        return core(x["probs"], t["labels"], num_classes=t["num_classes"], prob_mask=x["prob_mask"])

    return call


def _logistic_call(x: Mapping[str, jax.Array], t: Mapping[str, Any], *, n_dims: int | None):
    return logistic_core(
        x["features"],
        t["labels"],
        num_classes=t["num_classes"],
        train_mask=t["train_mask"],
        train_rows=t.get("train_rows"),
        n_dims=n_dims,
        feature_mask=x["feature_mask"],
    )


def _etran_call(x: Mapping[str, jax.Array], t: Mapping[str, Any], *, n_dims: int | None):
    """ETran reads the raw features (its energy part) and reduces them itself for its LDA
    part, at ``ETRAN_N_DIMS`` (registered with ``reduces=False``)."""
    del n_dims
    return etran_core(
        x["features"],
        t["labels"],
        num_classes=t["num_classes"],
        n_dims=ETRAN_N_DIMS,
        feature_mask=x["feature_mask"],
    )


def _heuristic_call(x: Mapping[str, jax.Array], t: Mapping[str, Any], *, n_dims: int | None):
    del n_dims
    return heuristic_core(x["depth"], x["source_images"], t["target_images"])


def _spec(
    name: str,
    fn: Callable[..., Any],
    core: Callable[..., Any],
    inputs: tuple[str, ...],
    call: Callable[..., jax.Array],
    *,
    default_dims: int | None = None,
    reduces: bool = True,
    multilabel: bool = False,
    uses_labels: bool = True,
    min_per_class: int = 0,
    description: str,
    class_block: bool = False,
    spectrum: bool = False,
    tasks: tuple[str, ...] = (),
) -> ScorerSpec:
    return ScorerSpec(
        name, fn, core, inputs, default_dims, reduces, multilabel, uses_labels, min_per_class,
        description, call, class_block, spectrum, tasks=tasks,
    )  # fmt: skip


SCORERS: dict[str, ScorerSpec] = {
    s.name: s
    for s in [
        _spec("parc", parc, parc_core, (FEATURES,), _features_call(parc_core),
              default_dims=PARC_N_DIMS, multilabel=True,
              description="PARC: pairwise annotation representation comparison, x100"),
        _spec("rsa", rsa, rsa_core, (FEATURES, REFERENCE), _reference_call(rsa_core),
              default_dims=RSA_N_DIMS, multilabel=True, uses_labels=False,
              description="RSA: representation similarity to a target-trained model, x100"),
        _spec("dds", dds, dds_core, (FEATURES, REFERENCE), _reference_call(dds_core),
              default_dims=DDS_N_DIMS, multilabel=True, uses_labels=False,
              description="Duality Diagram Similarity (debiased CKA of cosine distances), x100"),
        _spec("leep", leep, leep_core, (PROBS,), _probs_call(leep_core), reduces=False,
              description="Log Expected Empirical Prediction (Nguyen et al. 2020), nats <= 0"),
        _spec("nce", nce, nce_core, (PROBS,), _probs_call(nce_core), reduces=False,
              description="Negative Conditional Entropy (Tran et al. 2019), nats <= 0"),
        _spec("hscore", hscore, hscore_core, (FEATURES,), _features_call(hscore_core),
              default_dims=HSCORE_N_DIMS, min_per_class=1,
              description="H-Score (Bao et al. 2019) on standardised features, >= 0"),
        _spec("hscore_shrink", hscore_shrink, hscore_shrink_core, (FEATURES,),
              _features_call(hscore_shrink_core), default_dims=HSCORE_N_DIMS, min_per_class=1,
              description="H-Score with Ledoit-Wolf shrinkage (Ibrahim et al. 2022), >= 0"),
        _spec("logme", logme, logme_core, (FEATURES,),
              _features_call(logme_core, _regression_extras), default_dims=LOGME_N_DIMS,
              tasks=("classification", "regression"),
              description="LogME evidence per sample (You et al. 2021), nats"),
        _spec("transrate", transrate, transrate_core, (FEATURES,),
              _features_call(transrate_core, _transrate_extras), default_dims=TRANSRATE_N_DIMS,
              class_block=True, spectrum=True,
              description="TransRate coding-rate gap (Huang et al. 2022), nats"),
        _spec("gbc", gbc, gbc_core, (FEATURES,), _features_call(gbc_core), default_dims=GBC_N_DIMS,
              min_per_class=1,
              description="Gaussian Bhattacharyya Coefficient, diagonal (Pandy et al. 2022), <= 0"),
        _spec("gbc_spherical", gbc_spherical, gbc_spherical_core, (FEATURES,),
              _features_call(gbc_spherical_core), default_dims=GBC_N_DIMS, min_per_class=1,
              description="Gaussian Bhattacharyya Coefficient, spherical, <= 0"),
        _spec("knn", knn, knn_core, (FEATURES,), _features_call(knn_core, _regression_extras),
              default_dims=KNN_N_DIMS, multilabel=True,
              tasks=("classification", "multilabel", "regression"),
              description="1-NN leave-one-out accuracy, % (regression: Pearson x100)"),
        _spec("logistic", logistic, logistic_core, (FEATURES,), _logistic_call,
              default_dims=LOGISTIC_N_DIMS, min_per_class=2,
              description="logistic regression (L2, C=1) fit on a stratified half, held-out %"),
        _spec("sfda", sfda, sfda_core, (FEATURES,), _features_call(sfda_core),
              default_dims=SFDA_N_DIMS, min_per_class=1,
              description="SFDA: self-challenging Fisher discriminant (Shao et al. 2022), (0, 1]"),
        _spec("nleep", nleep, nleep_core, (FEATURES,), _features_call(nleep_core),
              default_dims=NLEEP_N_DIMS, min_per_class=1,
              description="NLEEP: LEEP on Gaussian-mixture posteriors (Li et al. 2021), <= 0"),
        _spec("pactran_dir", pactran_dir, pactran_dir_core, (PROBS,),
              _probs_call(pactran_dir_core), reduces=False,
              description="PACTran-Dirichlet on source probabilities (Ding et al. 2022), nats"),
        _spec("pactran_gamma", pactran_gamma, pactran_gamma_core, (PROBS,),
              _probs_call(pactran_gamma_core), reduces=False,
              description="PACTran-Gamma on source probabilities (Ding et al. 2022), nats"),
        _spec("pactran_gauss", pactran_gauss, pactran_gauss_core, (FEATURES,),
              _features_call(pactran_gauss_core), default_dims=PACTRAN_GAUSS_N_DIMS,
              description="PACTran-Gauss: L2 logistic PAC-Bayes bound (Ding et al. 2022), nats"),
        _spec("ncti_seli", ncti_seli, ncti_seli_core, (FEATURES,),
              _features_call(ncti_seli_core), default_dims=NCTI_N_DIMS, min_per_class=1,
              description="NCTI part S_seli: nuclear norm of LDA projections (Wang et al. 2023)"),
        _spec("ncti_ncc", ncti_ncc, ncti_ncc_core, (FEATURES,),
              _features_call(ncti_ncc_core), default_dims=NCTI_N_DIMS, min_per_class=1,
              description="NCTI part S_ncc: mean true-class LDA posterior, (0, 1]"),
        _spec("ncti_vc", ncti_vc, ncti_vc_core, (FEATURES,),
              _features_call(ncti_vc_core), default_dims=NCTI_N_DIMS, min_per_class=1,
              description="NCTI part -S_vc: minus log summed class nuclear norms of posteriors"),
        _spec("etran", etran, etran_core, (FEATURES,), _etran_call, reduces=False,
              min_per_class=1,
              description="ETran: feature energy + LDA posterior (Gholami et al. 2023)"),
        _spec("lfc", lfc, lfc_core, (FEATURES,), _features_call(lfc_core),
              default_dims=LFC_N_DIMS,
              description="LFC: Gram vs +-1 label kernel correlation (Deshpande et al. 2021)"),
        _spec("heuristic", heuristic, heuristic_core, (META,), _heuristic_call, reduces=False,
              multilabel=True, uses_labels=False,
              description="Depth + log(source + target training images) (PARC Eq. 4)"),
    ]
}  # fmt: skip

# Scores of a set of models, not of one: ``name -> (per-model parts, combine)``; ``combine``
# maps each part's values over the models scored together ([M] each) to the score [M]. The
# engine scores the parts; the bank-level step (engine._methods.add_bank_level) combines them
# once every model's parts are in. NCTI is the one such score (docs/metrics.md).
BANK_LEVEL: dict[str, tuple[tuple[str, ...], Callable[..., Any]]] = {
    "ncti": (NCTI_PARTS, ncti_combine),
}
#: One line per bank-level score for listings (CLI help, README).
BANK_LEVEL_DESCRIPTIONS: dict[str, str] = {
    "ncti": "NCTI (Wang et al. 2023): min-max normalised parts summed over the models scored "
    "together",
}
