"""parc_jax: scalable diverse model selection with every published transferability scorer.

Every scorer is a pure JAX function for one model (``parc_jax.parc``, ``parc_jax.logme``, ...);
:func:`score_bank` scores a whole model bank with them in one compiled pass per width bucket.
"""

__version__ = "0.1.0"

from parc_jax.api import ScoreResult, score_bank  # noqa: E402
from parc_jax.bank import (  # noqa: E402
    Bank,
    BankError,
    ModelEntry,
    Target,
    bank_from_arrays,
    open_bank,
    read_bank,
    write_bank,
)
from parc_jax.scorers import (  # noqa: E402
    SCORERS,
    dds,
    depth_prior,
    gbc,
    gbc_spherical,
    heuristic,
    hscore,
    hscore_shrink,
    knn,
    leep,
    logistic,
    logme,
    nce,
    parc,
    rsa,
    stratified_half,
    transrate,
)

__all__ = [
    "SCORERS",
    "Bank",
    "BankError",
    "ModelEntry",
    "ScoreResult",
    "Target",
    "__version__",
    "bank_from_arrays",
    "dds",
    "depth_prior",
    "gbc",
    "gbc_spherical",
    "heuristic",
    "hscore",
    "hscore_shrink",
    "knn",
    "leep",
    "logistic",
    "logme",
    "nce",
    "open_bank",
    "parc",
    "read_bank",
    "rsa",
    "score_bank",
    "stratified_half",
    "transrate",
    "write_bank",
]
