"""Scoring across several processes (hosts) with JAX's own multi-process runtime.

Every process runs the same program: :func:`initialize` joins the run
(``jax.distributed.initialize``), :func:`parc_jax.api.score_bank` then scores the process's own
shards of a bank directory on its local devices, and :func:`gather_results` brings every
process's scores and model facts together with ``multihost_utils.process_allgather``. Models
are independent, so no cross-process computation happens beyond that one gather.

Joining from the CLI: ``--coordinator HOST:PORT --num-processes P --process-id I``, or the
environment variables ``PARC_JAX_COORDINATOR``, ``PARC_JAX_NUM_PROCESSES``,
``PARC_JAX_PROCESS_ID``.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import numpy as np

__all__ = ["ENV_VARS", "gather_results", "initialize", "local_shards"]

ENV_VARS = ("PARC_JAX_COORDINATOR", "PARC_JAX_NUM_PROCESSES", "PARC_JAX_PROCESS_ID")


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Join a multi-process run (arguments, else the ``PARC_JAX_*`` environment variables).

    Returns False (and does nothing) when no coordinator and no process count or id is given;
    a process count or id without a coordinator is an error, not a silent single-process run.
    Every problem (a malformed ``HOST:PORT``, a host that does not resolve, process 0's port
    in use, a failure of JAX's own initialisation) is a ValueError with one line. On CPU,
    cross-process collectives use Gloo. Must run before anything touches a JAX device.
    """
    coordinator = coordinator or os.environ.get(ENV_VARS[0])
    num_text = num_processes if num_processes is not None else os.environ.get(ENV_VARS[1])
    pid_text = process_id if process_id is not None else os.environ.get(ENV_VARS[2])
    if not coordinator:
        if num_text is not None or pid_text is not None:
            raise ValueError(
                "distributed: --num-processes/--process-id (or "
                f"{ENV_VARS[1]}/{ENV_VARS[2]}) need a coordinator: pass --coordinator "
                f"HOST:PORT or set {ENV_VARS[0]}"
            )
        return False
    host, port = parse_coordinator(coordinator)
    try:
        num, pid = int(num_text), int(pid_text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(
            "distributed: a coordinator needs --num-processes and --process-id (or "
            f"{ENV_VARS[1]} and {ENV_VARS[2]}) as integers"
        ) from None
    if num < 1 or not 0 <= pid < num:
        raise ValueError(f"distributed: process id {pid} is not in 0..{num - 1}")
    try:
        socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ValueError(
            f"distributed: --coordinator {coordinator}: cannot resolve the host {host!r} "
            f"({exc.strerror or exc})"
        ) from None
    if pid == 0:
        _check_port_free(coordinator, port)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num, process_id=pid
        )
    except Exception as exc:  # JaxRuntimeError, RuntimeError ("only once"), ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(
            f"distributed: cannot join the run at --coordinator {coordinator} as process "
            f"{pid} of {num}: {first}"
        ) from None
    return True


def parse_coordinator(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6-address]:PORT`` too) -> ``(host, port)``; port an int 1-65535."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or (":" in host and not host.startswith("[")):
        raise ValueError(f"distributed: --coordinator: expected HOST:PORT, got {text!r}")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ValueError(
            f"distributed: --coordinator {text}: the port must be an int in 1..65535, got "
            f"{port_text!r}"
        )
    return host, port


def _check_port_free(coordinator: str, port: int) -> None:
    """Process 0 serves the coordinator on ``[::]:port``; JAX's service crashes the process
    (SIGSEGV, no exception) when it cannot bind it, so try the bind first."""
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((address, port))
            return
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ValueError(
                    f"distributed: --coordinator {coordinator}: port {port} is in use on this "
                    "host (process 0 serves the coordinator there); choose a free port"
                ) from None
            if exc.errno == errno.EACCES:
                raise ValueError(
                    f"distributed: --coordinator {coordinator}: no permission to serve on port "
                    f"{port}; choose a port >= 1024"
                ) from None
            # no IPv6 here: try IPv4


def local_shards(shards: Sequence[Path]) -> list[Path]:
    """This process's shards: ``shards[process_index::process_count]``."""
    count, index = jax.process_count(), jax.process_index()
    if len(shards) < count:
        raise ValueError(
            f"bank: {len(shards)} shard(s) cannot be split over {count} processes; write the "
            "bank as a directory of at least as many shards as processes"
        )
    return list(shards[index::count])


def _allgather_bytes(payload: bytes) -> list[bytes]:
    from jax.experimental import multihost_utils

    sizes = multihost_utils.process_allgather(np.array([len(payload)], np.int64)).reshape(-1)
    buf = np.zeros(int(sizes.max()), np.uint8)
    buf[: len(payload)] = np.frombuffer(payload, np.uint8)
    rows = multihost_utils.process_allgather(buf).reshape(len(sizes), -1)
    return [bytes(row[: int(n)]) for row, n in zip(rows, sizes)]


def gather_results(
    kept: Sequence, raw: Mapping[str, np.ndarray], bank_order: Sequence[str | None]
) -> tuple[list, dict[str, np.ndarray]]:
    """Every process's ``(models, {method: [S, M_p]})`` joined on all processes, bank order."""
    from jax.experimental import multihost_utils

    from parc_jax.engine import ModelBatch

    facts = [
        {"name": m.name, "architecture": m.architecture, "depth": m.depth, "source": m.source,
         "source_images": m.source_images, "width": int(m.features.shape[1])}
        for m in kept
    ]  # fmt: skip
    all_facts = [json.loads(b) for b in _allgather_bytes(json.dumps(facts).encode())]
    counts = [len(f) for f in all_facts]
    width = max(counts)
    scores = {}
    for method, arr in raw.items():
        pad = np.full((arr.shape[0], width), np.nan, np.float32)
        pad[:, : arr.shape[1]] = arr
        every = np.asarray(multihost_utils.process_allgather(pad))  # [P, S, width]
        scores[method] = np.concatenate([every[p, :, :c] for p, c in enumerate(counts)], axis=1)
    models = [
        ModelBatch(f["name"], np.empty((0, f["width"]), np.float32), f["architecture"], None,
                   f["depth"], f["source"], f["source_images"])
        for facts_p in all_facts
        for f in facts_p
    ]  # fmt: skip
    position = {name: i for i, name in enumerate(bank_order)}
    order = np.argsort([position[m.name] for m in models], kind="stable")
    return [models[i] for i in order], {m: a[:, order] for m, a in scores.items()}
