"""Every transferability scorer: one pure JAX function per score for ONE model.

One module per family (``parc`` holds parc and rsa, ``probability`` leep and nce, ``hscore``
both H-Scores, ``gbc`` both GBCs, ...). Each score ``name`` has a validating public function
and a pure core ``name_core`` that the engine vmaps over models; ``registry.SCORERS`` tells the
engine what each needs. The public functions are re-exported from :mod:`parc_jax`.
"""
