"""The ground-truth pipeline: the fine-tuned accuracies that tell which scorer to trust.

Source models (Flax, :mod:`parc_jax.groundtruth.zoo`) are trained on source datasets, fully
fine-tuned on each target with a learning-rate grid (:mod:`~parc_jax.groundtruth.train`, optax),
and probed: each target's probe set goes through every source model, and the features and
source-class probabilities become a bank with the fine-tuned accuracies in each model's meta
(:mod:`~parc_jax.groundtruth.probes`, :mod:`~parc_jax.groundtruth.export`). Presets are config
modules (:mod:`parc_jax.groundtruth.configs`); the stages run from ``scripts/``
(:mod:`~parc_jax.groundtruth.main`) over resumable run directories
(:mod:`~parc_jax.groundtruth.pipeline`) and end in a report (:mod:`~parc_jax.groundtruth.report`).

Needs the ``train`` extra (``pip install 'parc-jax[train]'``: flax, optax). The scoring library
never imports this package. Datasets are read from ``$PARC_JAX_DATA`` (default ``./data``) or the
``data_dir`` / ``--data-dir`` option (:func:`parc_jax.groundtruth.data.default_data_dir`).
"""
