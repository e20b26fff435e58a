"""The defaults of the scoring options, defined once for the API, the engine and the CLI.

A module of constants only (no JAX import), so that the command line can show them in ``--help``
and check its arguments before JAX loads.
"""

__all__ = [
    "BOOTSTRAP_FRACTION",
    "CHUNK_SIZE",
    "HALVING_ETA",
    "HALVING_MIN_FRACTION",
    "L_MAX",
    "ORACLE_KEY",
    "PCA",
    "PRIOR_SUFFIX",
    "SORT_BY",
]

#: Models per compiled batch (the engine's chunk).
CHUNK_SIZE = 64
#: Depth normaliser of the depth prior (PARC paper, Eq. 6): ``z-score + depth / L_MAX``.
L_MAX = 50.0
#: Suffix of a method's depth-prior column (``parc+l``).
PRIOR_SUFFIX = "+l"
#: Probe fraction of each bootstrap resample.
BOOTSTRAP_FRACTION = 0.8
#: PCA solver: ``exact`` (eigendecomposition) or ``fast`` (subspace iteration).
PCA = "exact"
#: Successive halving: keep the best 1/ETA per round, first round on this probe fraction.
HALVING_ETA = 2
HALVING_MIN_FRACTION = 0.125
#: A model's recorded fine-tuned accuracy (%) in its bank ``meta``, shown beside its scores.
ORACLE_KEY = "oracle_accuracy"
#: The scorer ``methods="all"`` puts first: the CLI's default sort and ``ScoreResult.best()``'s
#: default. Chosen by the selection benchmark's stated rule (benchmarks/_selection.py `recommend`;
#: benchmarks/README.md), which tests/test_evaluation.py checks against the committed record.
SORT_BY = "ncti_seli"
