"""Every transferability scorer: one pure JAX function per score for ONE model.

One module per family (``parc`` holds parc and rsa, ``probability`` leep and nce, ``hscore``
both H-Scores, ``gbc`` both GBCs, ...). Each score ``name`` has a validating public function
and a pure core ``name_core`` that the engine vmaps over models; ``registry.SCORERS`` tells the
engine what each needs. The public functions are re-exported from :mod:`parc_jax`.

One signature per family, every option keyword-only (defaults: each module's ``*_N_DIMS``
constant, which ``registry.SCORERS`` reports as ``default_dims``):

* features: ``name(features, labels, *, num_classes=None, n_dims=..., feature_mask=None)``
  (parc, knn, logistic, logme, transrate, hscore, hscore_shrink, gbc, gbc_spherical, sfda,
  nleep, pactran_gauss, ncti_seli, ncti_ncc, ncti_vc, etran, lfc);
* reference: ``name(features, reference_features, *, n_dims=..., feature_mask=None,
  reference_mask=None)`` (rsa, dds);
* probabilities: ``name(probs, labels, *, num_classes=None, prob_mask=None)`` (leep, nce,
  pactran_dir, pactran_gamma).

``ncti`` is not a one-model scorer: ``registry.BANK_LEVEL`` combines its parts over the
models scored together.

``num_classes`` is inferred from concrete labels and must be given when they are traced
(inside ``jit``/``vmap``). Helpers shared between the modules live in the private
``_common``. Definitions: ``docs/metrics.md``.
"""
