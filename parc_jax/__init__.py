"""parc_jax: scalable diverse model selection with every published transferability scorer."""

__version__ = "0.1.0"
