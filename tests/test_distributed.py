"""Several processes on this machine (coordinator on 127.0.0.1) score a sharded bank; the
result gathered on process 0 equals a single-process run, in bank order - the bank-level
ncti included, combined after the gather."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from parc_jax.bank import Bank, write_bank
from parc_jax.defaults import PRIOR_SUFFIX
from parc_jax.scorers.registry import BANK_LEVEL
from parc_jax.synthetic import synthetic_bank


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    # n = 200 with widths 64 and 128: real shapes for the batched factorisations; processes
    # score different chunk shapes, whose float32 batched eigh rounds differently (tolerances
    # below)
    bank = synthetic_bank(
        n=200,
        num_classes=20,
        num_models=7,
        widths=(64, 128),
        z=30,
        seed=6,
        dtype="float16",
        reference_width=None,
    )
    out = tmp_path_factory.mktemp("dist") / "shards"
    out.mkdir()
    for i, part in enumerate((bank.models[:3], bank.models[3:5], bank.models[5:])):
        write_bank(out / f"part{i}.msgpack", Bank(bank.target, part))
    return out


NCTI = "ncti,ncti_seli,ncti_ncc,ncti_vc"
ARGS = ["--methods", f"parc,leep,knn,{NCTI}", "--depth-prior", "--format", "json", "--no-progress"]


@pytest.mark.parametrize("processes", [2])
def test_multi_process_equals_single_process(shard_dir, tmp_path, processes):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    single = subprocess.run(
        [sys.executable, "-m", "parc_jax.score", "--bank", str(shard_dir), *ARGS],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    want = json.loads(single.stdout)

    port = _free_port()
    out = tmp_path / "scores.json"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "parc_jax.score",
                "--bank",
                str(shard_dir),
                *ARGS,
                "--output",
                str(out),
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                str(processes),
                "--process-id",
                str(i),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for i in range(processes)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    got = json.loads(out.read_text())
    want_by_name = {w["name"]: w for w in want["models"]}
    assert sorted(want_by_name) == sorted(g["name"] for g in got["models"])
    got_by_name = {g["name"]: g for g in got["models"]}
    names = sorted(want_by_name)

    def column(run: dict, method: str) -> np.ndarray:
        return np.array([run[n]["scores"][method] for n in names], dtype=np.float64)

    methods = list(want["models"][0]["scores"])
    moved = {}
    for method in [m for m in methods if not _normalised(m)]:
        # a per-model score: float32 rounding across chunk shapes
        g, w = column(got_by_name, method), column(want_by_name, method)
        np.testing.assert_allclose(g, w, rtol=5e-5, atol=1e-4, err_msg=method)
        moved[method] = float(np.max(np.abs(g - w)))
    atol = dict(moved)
    for method in [m for m in methods if _normalised(m)]:
        atol[method] = _carried(method, moved, lambda m: column(want_by_name, m))
        g, w = column(got_by_name, method), column(want_by_name, method)
        np.testing.assert_allclose(g, w, rtol=0, atol=atol[method], err_msg=method)
    for method in want["methods"]:  # the document's order is one method's ranks
        # two models swap only when both move, towards each other: up to twice the bound
        _assert_ranks_agree(got["models"], want["models"], method, 2 * atol[method])


def _normalised(method: str) -> bool:
    """Columns normalised over the whole bank: the bank-level scores (ncti: min-max of its
    parts) and every depth-prior column (a z-score)."""
    return method.removesuffix(PRIOR_SUFFIX) in BANK_LEVEL or method.endswith(PRIOR_SUFFIX)


def _carried(method: str, moved: dict[str, float], column) -> float:
    """The bound on a bank-normalised column, carried from how far the per-model columns it
    is made of moved between the two runs: min-max (ncti's combine) moves a value by at most
    ``4 d / range`` and a z-score by at most ``4 d / std`` when its inputs move by ``d``; each
    step adds 1e-5 of float32 rounding of its result. So these columns must agree as well as
    their parts agree; a per-process normalisation would move them by O(1)."""
    base = method.removesuffix(PRIOR_SUFFIX)
    if base in BANK_LEVEL:
        parts, _ = BANK_LEVEL[base]
        d = sum(4 * moved[p] / float(np.ptp(column(p))) for p in parts) + 1e-5
    else:
        d = moved[base]
    if method.endswith(PRIOR_SUFFIX):
        d = 4 * d / float(np.std(column(base), ddof=1)) + 1e-5
    return d


def _assert_ranks_agree(got: list, want: list, method: str, atol: float) -> None:
    """Two runs order every pair of models alike, except a pair whose reference scores lie
    within ``atol``: float32 rounding across chunk shapes may flip such a near-tie."""
    score = {w["name"]: w["scores"][method] for w in want}
    want_rank = {w["name"]: w["rank"][method] for w in want}
    got_rank = {g["name"]: g["rank"][method] for g in got}
    for a in want_rank:
        for b in want_rank:
            if (got_rank[a] < got_rank[b]) != (want_rank[a] < want_rank[b]):
                gap = abs(score[a] - score[b])
                assert gap <= atol, f"{method}: {a} and {b} swap places, scores {gap:.2e} apart"


def test_more_processes_than_shards_is_a_clear_error(shard_dir):
    from parc_jax.distributed import local_shards

    with pytest.raises(ValueError, match="cannot be split"):
        # one shard, but this single process pretends nothing: emulate via a 0-length list
        local_shards([])


def _cli(*args, env_extra=None, timeout=60):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **(env_extra or {}))
    for name in ("PARC_JAX_COORDINATOR", "PARC_JAX_NUM_PROCESSES", "PARC_JAX_PROCESS_ID"):
        if name not in (env_extra or {}):
            env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "parc_jax.score", "--no-progress", "--methods", "leep", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip


@pytest.mark.parametrize(
    "coordinator, message",
    [
        ("nonsense", "HOST:PORT"),
        ("127.0.0.1:notaport", "port"),
        ("127.0.0.1:99999", "port"),
        (":1234", "HOST:PORT"),
        ("nonexistent.invalid:1234", "cannot resolve"),
    ],
)
def test_bad_coordinator_is_one_line_exit_2(coordinator, message):
    r = _cli("--coordinator", coordinator, "--num-processes", "1", "--process-id", "0")
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stdout == "" and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert "--coordinator" in r.stderr and message in r.stderr and "Traceback" not in r.stderr


def test_coordinator_port_in_use_is_one_line_exit_2():
    # jax's coordinator service crashed the process (SIGSEGV) on a port already in use
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _cli("--coordinator", f"127.0.0.1:{port}", "--num-processes", "1", "--process-id", "0")
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.count("\n") == 1 and "in use" in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize(
    "args, env",
    [
        (["--num-processes", "2"], None),
        (["--process-id", "0"], None),
        (["--num-processes", "2", "--process-id", "1"], None),
        ([], {"PARC_JAX_NUM_PROCESSES": "2", "PARC_JAX_PROCESS_ID": "0"}),
    ],
)
def test_processes_without_a_coordinator_is_an_error(args, env):
    r = _cli(*args, env_extra=env)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stdout == "" and r.stderr.count("\n") == 1 and "coordinator" in r.stderr


def test_initialisation_failure_is_a_value_error(monkeypatch):
    import jax

    from parc_jax import distributed

    def fail(**kwargs):
        raise jax.errors.JaxRuntimeError("UNKNOWN: Failed to start RPC server")

    monkeypatch.setattr(jax.distributed, "initialize", fail)
    monkeypatch.setattr(jax.config, "update", lambda *args: None)
    with pytest.raises(ValueError, match="distributed: .*Failed to start RPC server"):
        distributed.initialize(f"127.0.0.1:{_free_port()}", 1, 0)
