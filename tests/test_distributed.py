"""Several processes on this machine (coordinator on 127.0.0.1) score a sharded bank; the
result gathered on process 0 equals a single-process run, in bank order."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from toybank import toy_bank

from parc_jax.bank import Bank, write_bank


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    # well-conditioned spectrum: processes score different chunk shapes, whose float32
    # batched eigh/svd round differently (see the sharded test in test_engine.py)
    bank = toy_bank(7, widths=(12, 20), latent=20, noise=0.0)
    out = tmp_path_factory.mktemp("dist") / "shards"
    out.mkdir()
    for i, part in enumerate((bank.models[:3], bank.models[3:5], bank.models[5:])):
        write_bank(out / f"part{i}.msgpack", Bank(bank.target, part))
    return out


ARGS = ["--methods", "parc,leep,knn", "--depth-prior", "--format", "json", "--no-progress"]


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
    assert [m["name"] for m in got["models"]] == [m["name"] for m in want["models"]]
    for g, w in zip(got["models"], want["models"]):
        for method, value in w["scores"].items():
            np.testing.assert_allclose(  # +l values are O(1) z-scores: absolute
                g["scores"][method], value, rtol=5e-5, atol=1e-4, err_msg=method
            )
        assert g["rank"] == w["rank"]


def test_more_processes_than_shards_is_a_clear_error(shard_dir):
    from parc_jax.distributed import local_shards

    with pytest.raises(ValueError, match="cannot be split"):
        # one shard, but this single process pretends nothing: emulate via a 0-length list
        local_shards([])
