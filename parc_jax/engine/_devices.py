"""Where chunks run: a mesh of accelerators that the model axis is sharded over, or one XLA:CPU
device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all local devices) with the axis ``"models"``."""
    devs = list(devices) if devices is not None else jax.local_devices()
    return Mesh(np.array(devs), ("models",))


def sharding_mesh(mesh: Mesh | None) -> Mesh | None:
    """The mesh a chunk's model axis is sharded over: ``mesh`` on accelerators, None on
    XLA:CPU.

    XLA:CPU devices are one process's threads on the same cores, and their programs share one
    intra-op thread pool. Sharded programs run on every device at once, and jaxlib's batched
    LAPACK kernels (``eigh``, ``qr``, ``cholesky`` under ``vmap``) can each hold a pool thread
    while waiting for work that only the pool can run: with 8 forced devices a 37-model bank
    (n = 200) waited forever (``benchmarks/multidevice_hang.py``). On the CPU a whole chunk
    therefore runs on the mesh's first device, one program at a time, with the same cores
    busy inside it."""
    if mesh is not None and all(d.platform == "cpu" for d in mesh.devices.flat):
        return None
    return mesh


def _placement(mesh: Mesh | None, spec: PartitionSpec) -> Any:
    """Where chunk arrays go: sharded by ``spec`` over an accelerator mesh, else on the mesh's
    first device (None: JAX's default device)."""
    if mesh is None:
        return None
    if sharding_mesh(mesh) is None:
        return mesh.devices.flat[0]
    return NamedSharding(mesh, spec)
