"""The persistent compilation cache: compiled XLA programs kept on disk between processes.

A fresh process compiles every program it runs (seconds per scorer on a CPU, more on a GPU);
with the cache, a second process with the same shapes loads them instead. Every entry point
(the CLI, :func:`parc_jax.score_bank`, successive halving, the one-call scorers, the
benchmarks and the ground-truth scripts) calls :func:`enable_persistent_cache` first.

* One directory: ``$PARC_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/parc_jax/xla`` (by default
  ``~/.cache/parc_jax/xla``); an empty ``PARC_JAX_CACHE_DIR`` turns the cache off.
* Every program is written, however short its compile: JAX's default minimum of 1 s would
  leave most of the scorers' programs out (set ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``
  to choose another).
* A cache that the calling program configured for JAX (``jax_compilation_cache_dir``) is
  used as it is, never overridden.
* An unwritable directory is one warning, and scoring goes on without the cache.

This module imports JAX only inside :func:`enable_persistent_cache`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

__all__ = ["CACHE_ENV", "cache_dir", "default_cache_dir", "enable_persistent_cache"]

CACHE_ENV = "PARC_JAX_CACHE_DIR"
_MIN_COMPILE_TIME_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
_UNDECIDED = object()
_in_use: object = _UNDECIDED  # the directory in use (None: no cache), once decided


class CacheWarning(UserWarning):
    """The compilation cache could not be used; scoring goes on without it."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/parc_jax/xla``, or ``~/.cache/parc_jax/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "parc_jax" / "xla"


def cache_dir() -> Path | None:
    """The directory this package caches in: ``$PARC_JAX_CACHE_DIR`` (empty = None, off), else
    :func:`default_cache_dir`."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        return default_cache_dir()
    return Path(value).expanduser() if value.strip() else None


def enable_persistent_cache() -> str | None:
    """Point JAX's persistent compilation cache at :func:`cache_dir`, once per process.

    Returns the directory in use: the caller's own when it configured one for JAX, ours, or
    None when the cache is off or unusable (a :class:`CacheWarning` says why).
    """
    global _in_use
    if _in_use is _UNDECIDED:
        _in_use = _decide()
    return _in_use  # type: ignore[return-value]


def _decide() -> str | None:
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return str(configured)
    path = cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"{path} is not writable")
    except OSError as exc:
        warnings.warn(
            f"compilation cache off: cannot use {path} ({exc.strerror or exc}); set "
            f"{CACHE_ENV} to a writable folder, or to '' to silence this",
            CacheWarning,
            stacklevel=3,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if _MIN_COMPILE_TIME_ENV not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    # A program compiled earlier in this process may have found the cache off already.
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()
    return str(path)
