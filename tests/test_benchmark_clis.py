"""The benchmark scripts check their arguments before any work: a bad one ends the run at parse
time with argparse's usage error (one ``error:`` line on stderr, exit status 2), never with a
traceback or a crash after minutes of measuring.

Every script but ``engine_ab.py`` imports JAX before it parses (about 2 s a process here), so
each of those gets one command-line case (``throughput.py`` its three known failures), run a
few at a time; ``engine_ab.py`` parses first and gets more. The converters of
``benchmarks/_args.py`` are tested directly, and every parser's ``--help`` and defaults are
checked in this process.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = [
    "assembly",
    "cpu_target",
    "engine_ab",
    "fast_parc_accuracy",
    "halving",
    "parc_sort_keys",
    "pca_fast",
    "profile_parc",
    "rank_bounds",
    "rank_step",
    "reference_strength",
    "scale",
    "selection",
    "targets",
    "throughput",
]
# A run that got past parsing would measure for minutes: seconds mean it stopped at parsing
# (the budget covers importing JAX with the other cases running beside it on a busy machine).
QUICK_S = 30.0

# (script, arguments, a piece of the error line); {tmp} is an empty folder of the case's own,
# which must still be empty afterwards (outputs go there, so a run that got through writes
# nothing into the repository).
BAD = [
    ("assembly", ["--repeats", "0", "--out", "{tmp}/a.json"], "--repeats: expected a positive"),
    ("engine_ab", ["{tmp}/missing", "--methods", "parc"], "trees: no such folder"),
    ("engine_ab", ["{tmp}", "--methods", "parc"], "holds no parc_jax package"),
    ("engine_ab", [".", "--methods", "parc", "--widths"], "--widths: expected at least one"),
    ("engine_ab", [".", "--methods", "parc", "--models", "0"], "--models: expected a positive"),
    ("engine_ab", [".", "--methods", "parc", "--num-classes", "1"], "at least 2, got 1"),
    ("engine_ab", [".", "--methods", "parc", "--repeats", "x"], "--repeats: expected a posit"),
    ("engine_ab", [".", "--methods", "parc", "--out", "{tmp}"], "is a folder"),
    ("halving", ["--method", "nope", "--out", "{tmp}/out"], "--method: invalid choice"),
    ("parc_sort_keys", ["--n", "5", "--k", "10", "--out", "{tmp}/k.json"], "--k 10 classes"),
    ("pca_fast", ["--banks", "{tmp}/none", "--out", "{tmp}/p.json"], "--banks: no such folder"),
    ("profile_parc", ["--f", "0", "--out", "{tmp}/p.json"], "--f: expected a positive"),
    ("rank_bounds", ["--n", "1", "--out", "{tmp}/r.json"], "--n: expected an integer of at"),
    ("rank_step", ["--n", "2", "--out", "{tmp}/r.json"], "--n: expected an integer of at"),
    ("cpu_target", ["--models", "0", "--out", "{tmp}/c.json"], "--models: expected a positive"),
    ("fast_parc_accuracy", ["--iterations", "0", "--out", "{tmp}/f.json"], "--iterations: expec"),
    ("scale", ["--methods", "parc,leep", "--work", "{tmp}/w"], "unsupported method(s) leep"),
    ("reference_strength", ["--resamples", "0", "--out", "{tmp}/o"], "--resamples: expected"),
    ("selection", ["--scores", "{tmp}/none.csv", "--out", "{tmp}/o"], "--scores: no such file"),
    ("selection", ["--fit-targets", ",", "--out", "{tmp}/o"], "comma-separated target"),
    ("targets", ["--chunk-sizes", "--parc-chunk-sizes", "--out", "{tmp}/t.json"], "nothing to"),
    ("throughput", ["--repeats", "0", "--out", "{tmp}/t.json"], "--repeats: expected a posit"),
    ("throughput", ["--batch-sizes", "0", "--out", "{tmp}/t.json"], "--batch-sizes: expected"),
    ("throughput", ["--chunk-size", "0", "--out", "{tmp}/t.json"], "--chunk-size: expected"),
]
IDS = [f"{script}-{i}" for i, (script, _, _) in enumerate(BAD)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every case of ``BAD`` as a command line, a few at a time: ``{id: (folder, completed
    process, seconds)}``."""
    folders = {i: tmp_path_factory.mktemp(i) for i in IDS}

    def one(i: str, script: str, args: list[str]):
        argv = [a.replace("{tmp}", str(folders[i])) for a in args]
        start = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, f"benchmarks/{script}.py", *argv], cwd=ROOT,
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
        except subprocess.TimeoutExpired:
            done = None  # still running after a minute: it got past parsing
        return folders[i], done, time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 1))) as pool:
        futures = {i: pool.submit(one, i, *case[:2]) for i, case in zip(IDS, BAD, strict=True)}
        return {i: f.result() for i, f in futures.items()}


@pytest.mark.parametrize(("i", "script", "fragment"), [(i, c[0], c[2]) for i, c in zip(IDS, BAD)],
                         ids=IDS)  # fmt: skip
def test_bad_arguments_stop_at_parse_time(runs, i, script, fragment):
    folder, done, seconds = runs[i]
    assert done is not None, f"still running after {seconds:.0f} s"
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert [line for line in lines if "error:" in line] == lines[-1:]
    assert lines[-1].startswith(f"{script}.py: error: ") and fragment in lines[-1], lines[-1]
    assert done.stdout == ""
    assert seconds < QUICK_S
    assert list(folder.iterdir()) == []  # nothing written


@pytest.fixture(scope="module")
def scripts():
    """Every benchmark module, loaded in this process under its own name; ``sys.path`` and the
    sibling modules they import (``_args``, ``throughput``) are put back afterwards."""
    path, before = list(sys.path), set(sys.modules)
    loaded = {}
    try:
        for name in SCRIPTS:
            spec = importlib.util.spec_from_file_location(
                f"_bench_{name}", BENCHMARKS / f"{name}.py"
            )
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            loaded[name] = module
        yield loaded
    finally:
        sys.path[:] = path
        for name in set(sys.modules) - before:
            if str(getattr(sys.modules[name], "__file__", "")).startswith(str(BENCHMARKS)):
                del sys.modules[name]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(scripts, name, capsys):
    with pytest.raises(SystemExit) as info:
        scripts[name].main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "--" in out


class Reached(Exception):
    """The first step after parsing was reached."""


@pytest.mark.parametrize(
    ("name", "first_step"),
    [("halving", "default_banks"), ("pca_fast", "default_banks"), ("parc_sort_keys", "make_probe"),
     ("profile_parc", "device_name"), ("scale", "ensure_bank"), ("selection", "default_banks"),
     ("targets", "run"), ("throughput", "run")],
)  # fmt: skip
def test_defaults_pass_the_checks(scripts, name, first_step, monkeypatch):
    """With no arguments, the defaults (paths among them) pass their own checks."""

    def reached(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(scripts[name], first_step, reached)
    with pytest.raises(Reached):
        scripts[name].main([])


@pytest.fixture(scope="module")
def args_module():
    spec = importlib.util.spec_from_file_location("_bench_args", BENCHMARKS / "_args.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_numbers(args_module):
    a = args_module
    assert a.positive_int("3") == 3 and a.non_negative_int("0") == 0
    assert a.int_at_least(2)("2") == 2
    assert a.positive_float("0.5") == 0.5 and a.fraction("1") == 1.0
    assert a.int_list("1,16, 64") == [1, 16, 64]
    bad = [
        (a.positive_int, "0"),
        (a.positive_int, "-3"),
        (a.positive_int, "1.5"),
        (a.positive_int, ""),
        (a.non_negative_int, "-1"),
        (a.int_at_least(2), "1"),
        (a.positive_float, "0"),
        (a.positive_float, "-1"),
        (a.positive_float, "nan"),
        (a.positive_float, "inf"),
        (a.positive_float, "x"),
        (a.fraction, "0"),
        (a.fraction, "1.01"),
        (a.int_list, ""),
        (a.int_list, "1,,2"),
        (a.int_list, "1,0"),
        (a.int_list, "-1"),
    ]
    for convert, text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            convert(text)


def test_methods(args_module):
    convert = args_module.method_list(["all", "parc", "knn"])
    assert convert("parc, knn") == "parc, knn" and convert("all") == "all"
    for text, match in [("", "at least one"), (",", "at least one"), ("parc,leep", "leep"),
                        ("all,parc", "cannot be combined")]:  # fmt: skip
        with pytest.raises(argparse.ArgumentTypeError, match=match):
            convert(text)


def test_paths(args_module, tmp_path):
    a = args_module
    (tmp_path / "f").write_text("x")
    f, d = str(tmp_path / "f"), str(tmp_path)
    assert a.existing_file(f) == f and a.existing_dir(d) == d
    assert a.output_file(str(tmp_path / "new" / "deeper" / "x.json")).endswith("x.json")
    assert a.output_file(f) == f and a.output_file(os.devnull) == os.devnull
    assert a.output_dir(d) == d and a.output_dir(str(tmp_path / "new" / "dir")).endswith("dir")
    bad = [
        (a.existing_file, d, "no such file"),
        (a.existing_file, str(tmp_path / "none"), "no such file"),
        (a.existing_dir, f, "no such folder"),
        (a.output_file, d, "is a folder"),
        (a.output_file, str(tmp_path / "f" / "x.json"), "is not a folder"),
        (a.output_file, "", "expected a file path"),
        (a.output_dir, f, "is not a folder"),
        (a.output_dir, str(tmp_path / "f" / "sub"), "is not a folder"),
    ]
    for convert, text, match in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=match):
            convert(text)
