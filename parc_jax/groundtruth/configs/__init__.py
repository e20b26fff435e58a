"""Ground-truth presets as config modules, one per preset, each with ``get_config() -> Preset``
(see :mod:`parc_jax.groundtruth.presets`)."""
