"""The package as a user installs it: what the scoring path imports, the bank's msgpack bytes,
the command names, the persistent compilation cache, and docs that stay inside the repository."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flax import serialization
from toybank import toy_bank

from parc_jax.bank import _codec, bank_to_tree, write_bank

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str, env: dict | None = None, timeout: float = 180):
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip


SCORING_IMPORTS = """
import sys
from parc_jax.__main__ import main
code = main(["--methods", "parc,leep", "--no-progress", "--format", "json"])
loaded = sorted(m for m in sys.modules
                if m == "optax" or m.startswith(("optax.", "flax.linen", "flax.nnx")))
print(code, loaded, file=sys.stderr)
"""


def test_scoring_the_example_bank_loads_no_training_stack():
    out = _python(SCORING_IMPORTS)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == "0 []", out.stderr[-2000:]
    assert json.loads(out.stdout)["methods"] == ["parc", "leep"]


def test_bank_bytes_are_flax_msgpack_both_ways(monkeypatch):
    tree = bank_to_tree(toy_bank(3))
    tree["models"][0]["meta"] = {"scalar": np.float32(2.5), "nested": {"a": [1, "b", None]}}
    ours = _codec.encode(tree)
    assert ours == serialization.msgpack_serialize(tree)
    back = _codec.decode(serialization.msgpack_serialize(tree))
    np.testing.assert_array_equal(back["models"][1]["features"], tree["models"][1]["features"])
    assert back["models"][0]["meta"] == {"scalar": 2.5, "nested": {"a": [1, "b", None]}}
    # arrays above the chunk limit are split the same way (limit lowered to test it)
    monkeypatch.setattr(_codec, "MAX_CHUNK_BYTES", 64)
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 64)
    big = {"x": np.arange(100, dtype=np.float32), "m": {"y": np.ones((5, 7), np.float16)}}
    assert _codec.encode(big) == serialization.msgpack_serialize(big)
    restored = _codec.decode(_codec.encode(big))
    np.testing.assert_array_equal(restored["x"], big["x"])
    np.testing.assert_array_equal(restored["m"]["y"], big["m"]["y"])
    restored = serialization.msgpack_restore(_codec.encode(big))
    np.testing.assert_array_equal(restored["m"]["y"], big["m"]["y"])
    with pytest.raises(ValueError, match="numbers only"):
        _codec.encode({"o": np.array([object()])})


def test_python_m_parc_jax_runs_both_commands(tmp_path):
    path = tmp_path / "bank.msgpack"
    write_bank(path, toy_bank(2))
    cmd = [sys.executable, "-m", "parc_jax"]
    version = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and re.fullmatch(r"python -m parc_jax \S+\n", version.stdout)
    info = subprocess.run([*cmd, "bank", "info", str(path)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert info.returncode == 0 and "toy" in info.stdout, info.stderr
    bad = subprocess.run([*cmd, "score", "--bank", str(tmp_path / "none")], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("error: --bank: ")
    usage = subprocess.run([*cmd, "score", "--help"], capture_output=True, text=True, timeout=60)
    assert usage.stdout.startswith("usage: python -m parc_jax score ")
    text = " ".join(usage.stdout.split())  # help lines wrap anywhere
    for default in ("(default: exact)", "(default: 50.0)", "(default: 64)", "(default: 0.125)"):
        assert default in text


CACHE_RUN = """
import json, sys
import jax
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
sys.path.insert(0, sys.argv[2])
from toybank import toy_bank
from parc_jax import score_bank
score_bank(toy_bank(3, widths=(12,)), methods="parc,leep", progress=False)
print(json.dumps({"hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses"),
                  "dir": jax.config.jax_compilation_cache_dir}))
"""


def _cache_env(cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT_CACHE")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the suite's own cache (conftest)
    return env | {"PARC_JAX_CACHE_DIR": cache}


def test_a_second_process_finds_its_programs_in_the_cache(tmp_path):
    env = _cache_env(str(tmp_path / "cache"))
    tests = str(Path(__file__).parent)
    first = _python(CACHE_RUN, "", tests, env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    cold = json.loads(first.stdout.splitlines()[-1])
    assert cold["misses"] > 0 and cold["dir"] == str(tmp_path / "cache")
    second = _python(CACHE_RUN, "", tests, env=env)
    warm = json.loads(second.stdout.splitlines()[-1])
    assert warm["misses"] == 0 and warm["hits"] >= cold["misses"], (cold, warm)
    # a cache that the calling program configured for JAX is kept
    env = env | {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "theirs")}
    theirs = _python(CACHE_RUN, "", tests, env=env)
    assert json.loads(theirs.stdout.splitlines()[-1])["dir"] == str(tmp_path / "theirs")


def test_an_unwritable_cache_warns_once_and_scores(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    env = _cache_env(str(blocker / "cache"))
    out = subprocess.run([sys.executable, "-m", "parc_jax", "--methods", "leep", "--no-progress"],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("target coil20")
    warning = [line for line in out.stderr.splitlines() if "compilation cache off" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: compilation cache off: cannot")


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_docs_link_inside_the_repository_and_nothing_points_outside():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for doc in docs:
        text = doc.read_text()
        for target in LINK.findall(text):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), f"{doc.name}: {target}"
    shipped = [*docs, *sorted((ROOT / "parc_jax").rglob("*.py"))]
    outside = [p for p in shipped if "../shared" in p.read_text()]
    assert not outside, outside


def test_scorer_docstring_examples_run():
    import doctest
    import importlib

    from parc_jax.scorers.registry import SCORERS

    modules = sorted({SCORERS[m].fn.__module__ for m in SCORERS})
    for name in modules:
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, name
    assert len(modules) >= 9
