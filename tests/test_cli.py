"""`python -m parc_jax.score`: formats, exit codes, one-line errors, atomic output, --help."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from flax import serialization
from toybank import K, toy_bank

from parc_jax import score
from parc_jax.api import score_bank
from parc_jax.bank import Bank, Target, bank_to_tree, write_bank
from parc_jax.defaults import SORT_BY
from parc_jax.scorers.registry import BANK_LEVEL, SCORERS


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "bank.msgpack"
    write_bank(path, toy_bank())
    return str(path)


def run(argv, capsys):
    code = score.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_table_is_sorted_best_first(bank_path, capsys):
    code, out, err = run(["--bank", bank_path, "--methods", "parc,logme", "--sort-by", "logme",
                          "--no-progress"], capsys)  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("target toy: 60 probe images, 4 classes, 5 models")
    assert lines[1].split()[3:] == ["logme", "parc"]  # the sort column first
    values = [float(line.split()[3]) for line in lines[3:8]]
    assert values == sorted(values, reverse=True) and len(values) == 5


def test_json_document(bank_path, capsys):
    code, out, _ = run(["--bank", bank_path, "--methods", "parc,leep", "--depth-prior",
                        "--format", "json", "--top", "2", "--no-progress"], capsys)  # fmt: skip
    assert code == 0
    doc = json.loads(out)
    assert doc["methods"] == ["parc", "leep", "parc+l", "leep+l"]
    assert doc["target"]["name"] == "toy"
    prov = doc["provenance"]
    assert {"version", "parameters", "pca", "bank_sha256", "device"} <= set(prov)
    assert prov["parameters"]["parc"]["n_dims"] == 32
    assert len(doc["models"]) == 2
    assert doc["models"][0]["rank"]["parc"] == 1
    assert set(doc["models"][0]["scores"]) == set(doc["methods"])


def test_csv_with_spread(bank_path, capsys):
    code, out, _ = run(["--bank", bank_path, "--methods", "knn", "--bootstrap", "3",
                        "--format", "csv", "--no-progress"], capsys)  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 5
    assert {"name", "architecture", "knn", "rank[knn]", "knn_std", "knn_top1"} <= set(rows[0])
    assert sum(float(r["knn_top1"]) for r in rows) == pytest.approx(1.0)


def test_all_methods_names_the_skipped(tmp_path, capsys):
    b = toy_bank()
    b.target.reference_features = None
    path = tmp_path / "noref.msgpack"
    write_bank(path, b)
    code, out, err = run(["--bank", str(path), "--methods", "all", "--format", "json",
                          "--no-progress"], capsys)  # fmt: skip
    assert code == 0
    assert err.count("\n") == 1 and err.startswith("skipped: ")
    assert "rsa (" in err and "dds (" in err
    assert "rsa" not in json.loads(out)["methods"]


def test_output_file_is_written_atomically(bank_path, tmp_path, capsys):
    out_file = tmp_path / "sub" / "scores.json"
    out_file.parent.mkdir()
    code, out, _ = run(["--bank", bank_path, "--methods", "parc", "--format", "json",
                        "--output", str(out_file), "--no-progress"], capsys)  # fmt: skip
    assert code == 0 and out == ""
    assert json.loads(out_file.read_text())["methods"] == ["parc"]
    assert [p.name for p in out_file.parent.iterdir()] == ["scores.json"]
    # the permissions of a plain open(): umask applied, not mkstemp's 0o600 ...
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o666 & ~umask
    # ... and a replaced file keeps its own
    out_file.chmod(0o640)
    code, _, _ = run(["--bank", bank_path, "--methods", "leep", "--format", "json",
                      "--output", str(out_file), "--no-progress"], capsys)  # fmt: skip
    assert code == 0 and json.loads(out_file.read_text())["methods"] == ["leep"]
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o640


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sort-by", "logme", "--methods", "parc"], "--sort-by"),
        (["--sort-by", "parc+l", "--methods", "parc"], "--sort-by"),  # no --depth-prior
        (["--sort-by", "bogus"], "--sort-by"),
        (["--seed", "-3"], "--seed"),
        (["--output", "{tmp}"], "is a directory"),
        (["--output", "{tmp}/plain.txt/scores.json"], "does not exist"),
        (["--output", "{tmp}/missing/scores.json"], "folder {tmp}/missing does not exist"),
        (["--output", "{tmp}/missing/"], "is a directory; name a file"),
    ],
)
def test_bad_arguments_fail_before_scoring(bank_path, tmp_path, capsys, monkeypatch, argv,
                                           message):  # fmt: skip
    (tmp_path / "plain.txt").write_text("a file, not a folder")

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored before the arguments were checked")

    monkeypatch.setattr("parc_jax.api.score_bank", no_scoring)
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, out, err = run(["--bank", bank_path, "--no-progress", *argv], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message.format(tmp=tmp_path) in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "missing").exists()  # a mistyped folder is never created


def test_unwritable_output_is_one_line_not_a_traceback(bank_path, tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("parc_jax.atomic.atomic_file", refuse)
    code, out, err = run(["--bank", bank_path, "--methods", "leep", "--output",
                          str(tmp_path / "s.txt"), "--no-progress"], capsys)  # fmt: skip
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--output" in err and "Permission denied" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "nope"], "unknown scorer"),
        (["--n-dims", "zero"], "--n-dims"),
        (["--n-dims", "-3"], "--n-dims"),
        (["--format", "xml"], "invalid choice"),
        (["--sort-by", "logme", "--methods", "parc"], "--sort-by"),
        (["--top", "0"], "--top"),
        (["--chunk-size", "0"], "chunk_size"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(bank_path, capsys, argv, message):
    code, out, err = run(["--bank", bank_path, "--no-progress", *argv], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_bad_banks_exit_2(tmp_path, bank_path, capsys):
    data = Path(bank_path).read_bytes()
    cut = tmp_path / "cut.msgpack"
    cut.write_bytes(data[: len(data) // 2])
    for path, message in [(cut, "cut.msgpack"), (tmp_path / "missing.msgpack", "does not exist")]:
        code, out, err = run(["--bank", str(path), "--no-progress"], capsys)
        assert code == 2 and out == "", err
        assert err.count("\n") == 1 and message in err


def test_help_lists_every_scorer():
    out = subprocess.run([sys.executable, "-m", "parc_jax.score", "--help"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    for name in SCORERS:
        assert f"\n  {name} " in out


def test_no_bank_scores_the_shipped_example(capsys):
    path = score.example_bank_path()
    if not path.exists():
        pytest.fail(f"the example bank {path} is missing from the package data")
    code, out, err = run(["--methods", "parc,leep", "--top", "3", "--no-progress"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split() == ["#", "model", "architecture", "oracle", "%", "parc", "leep"]
    assert len(lines) == 8 and lines[-1].startswith("agreement with the oracle over 12 models")
    # every scorer gives every shipped model a finite score (rsa, dds and gbc once printed nan)
    code, out, err = run(["--methods", "all", "--format", "json", "--no-progress"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["methods"]) == len(SCORERS) + len(BANK_LEVEL) and not doc["flags"], doc["flags"]
    for model in doc["models"]:
        assert all(np.isfinite(v) for v in model["scores"].values()), model


# --------------------------------------------------------------------------------------------
# --output onto special files and symlinks (written through, never replaced)


def test_output_to_a_fifo_writes_into_it(bank_path, tmp_path, capsys):
    import threading

    fifo = tmp_path / "scores.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    code, out, err = run(["--bank", bank_path, "--methods", "leep", "--format", "json",
                          "--output", str(fifo), "--no-progress"], capsys)  # fmt: skip
    reader.join(timeout=10)
    assert code == 0 and out == "", err
    assert stat.S_ISFIFO(fifo.lstat().st_mode)  # still a FIFO, not a regular file
    assert got and json.loads(got[0])["methods"] == ["leep"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.fifo"]  # no temp file left


def test_output_through_a_symlink_keeps_the_link(bank_path, tmp_path, capsys):
    target = tmp_path / "real" / "scores.json"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    code, _, err = run(["--bank", bank_path, "--methods", "leep", "--format", "json",
                        "--output", str(link), "--no-progress"], capsys)  # fmt: skip
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["methods"] == ["leep"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["scores.json"]
    # a dangling link: the file it names is created, the link kept
    target.unlink()
    code, _, err = run(["--bank", bank_path, "--methods", "leep", "--format", "csv",
                        "--output", str(link), "--no-progress"], capsys)  # fmt: skip
    assert code == 0, err
    assert link.is_symlink() and target.read_text().startswith("name,")


def test_output_to_the_null_device_stays_a_device(bank_path, capsys, monkeypatch):
    from parc_jax.atomic import write_text

    devnull = Path(os.devnull)
    assert stat.S_ISCHR(devnull.stat().st_mode)
    real_replace = os.replace

    def guarded_replace(src, dst, *args, **kwargs):  # never rename over a device (run as root)
        if os.path.exists(dst) and not stat.S_ISREG(os.stat(dst).st_mode):
            raise AssertionError(f"os.replace over the special file {dst}")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", guarded_replace)
    # the helper alone first: if it were to replace the device, fail before the CLI runs
    write_text(devnull, "nothing\n")
    assert stat.S_ISCHR(devnull.lstat().st_mode), f"{devnull} was replaced!"
    code, out, err = run(["--bank", bank_path, "--methods", "leep", "--output", os.devnull,
                          "--no-progress"], capsys)  # fmt: skip
    assert code == 0 and out == "", err
    assert stat.S_ISCHR(devnull.lstat().st_mode)


def test_csv_prints_the_notes_on_stderr(tmp_path, capsys):
    b = toy_bank(4, widths=(12, 64))  # n = 60: PCA to 64 dims whitens the probe (dds flagged)
    path = tmp_path / "wide.msgpack"
    write_bank(path, b)
    argv = ["--bank", str(path), "--methods", "dds,parc", "--no-progress"]
    code, out, err = run([*argv, "--format", "csv"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))  # the body is plain CSV, no notes in it
    assert len(rows) == 4 and not any("note" in line for line in out.splitlines())
    assert sum(r["dds"] == "nan" for r in rows) == 2
    assert err.count("\n") == 1 and err.startswith("note: dds: degenerate")
    # the same note as the table's and the JSON's
    _, table, _ = run([*argv, "--format", "table"], capsys)
    assert err.strip() in table.splitlines()
    _, doc, _ = run([*argv, "--format", "json"], capsys)
    assert err.strip() == f"note: dds: {json.loads(doc)['flags']['dds']}"


def test_atomic_write_never_creates_a_missing_folder(tmp_path):
    from parc_jax.atomic import write_text

    with pytest.raises(FileNotFoundError, match="no such folder"):
        write_text(tmp_path / "missing" / "out.txt", "x")
    assert list(tmp_path.iterdir()) == []
    write_text(tmp_path / "made" / "out.txt", "x", parents=True)  # a program's own run folder
    assert (tmp_path / "made" / "out.txt").read_text() == "x"


STALL = """
import sys, time
import parc_jax.api as api

def stalled(models, target, options, *, stage=None, **kwargs):
    stage("scoring a chunk of 5 models, bucket float32 width 16 (parc)")
    time.sleep(600)  # an XLA program that never returns

api.score_stream = stalled
from parc_jax import score
sys.exit(score.main(["--bank", sys.argv[1], "--methods", "parc", "--no-progress",
                     "--stall-timeout", "2"]))
"""


def test_stall_watchdog_ends_a_stuck_run_with_one_line(bank_path):
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", STALL, bank_path], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert time.monotonic() - start < 60
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: no progress for 2 s (--stall-timeout 2) while scoring")
    assert "bucket float32 width 16" in out.stderr and out.stdout == ""


@pytest.mark.parametrize("value", ["-1", "nan", "soon"])
def test_bad_stall_timeout_is_one_line(bank_path, capsys, monkeypatch, value):
    monkeypatch.setenv("PARC_JAX_STALL_TIMEOUT", value)
    code, out, err = run(["--bank", bank_path, "--no-progress"], capsys)
    assert code == 2 and out == "" and err.startswith("error: $PARC_JAX_STALL_TIMEOUT: ")
    monkeypatch.delenv("PARC_JAX_STALL_TIMEOUT")
    if value != "soon":
        code, out, err = run(["--bank", bank_path, "--stall-timeout", value], capsys)
        assert code == 2 and err.startswith("error: --stall-timeout: expected seconds >= 0")


def test_one_based_labels_are_an_error_and_empty_classes_a_warning(tmp_path, capsys):
    b = toy_bank(3, widths=(12,))
    one_based = Bank(Target("t", b.target.labels + 1, K + 1), b.models)
    path = tmp_path / "one.msgpack"
    with pytest.raises(ValueError, match="1-based"):  # refused when written ...
        write_bank(path, one_based)
    path.write_bytes(serialization.msgpack_serialize(bank_to_tree(one_based)))  # ... and read
    code, out, err = run(["--bank", str(path), "--methods", "parc", "--no-progress"], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "look 1-based; subtract 1" in err, err
    # a declared class with no probe image (class K): a one-line warning, then the scores
    extra = Bank(Target("t", b.target.labels, K + 2), b.models)
    path = tmp_path / "extra.msgpack"
    with pytest.warns(UserWarning, match="declared classes have no probe image"):
        write_bank(path, extra)
    done = subprocess.run([sys.executable, "-m", "parc_jax.score", "--bank", str(path),
                           "--methods", "leep", "--no-progress"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    code, err = done.returncode, done.stderr
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: "), err
    assert f"2 of the {K + 2} declared classes have no probe image (class {K}, {K + 1})" in err
    # the API sees the same
    with pytest.raises(ValueError, match="1-based"):
        score_bank(one_based, methods="parc", progress=False)


# --------------------------------------------------------------------------------------------
# the table: oracle column and agreement, width, legend, number format


def _oracle_bank(num_models: int = 5):
    b = toy_bank(num_models)
    for i, m in enumerate(b.models):
        m.meta = {"oracle_accuracy": 40.0 + 3 * i}
    return b


def test_oracle_column_and_agreement_appear_exactly_with_an_oracle(bank_path, tmp_path, capsys):
    path = tmp_path / "oracle.msgpack"
    write_bank(path, _oracle_bank())
    argv = ["--methods", "parc,leep", "--no-progress"]
    for bank, has in ((str(path), True), (bank_path, False)):
        _, table, _ = run(["--bank", bank, *argv], capsys)
        assert ("oracle %" in table.splitlines()[1]) is has
        assert ("agreement with the oracle over 5 models (Spearman/Kendall): parc " in table) is has
        assert ("oracle % = recorded fine-tuned accuracy" in table) is has
        _, doc, _ = run(["--bank", bank, *argv, "--format", "json"], capsys)
        doc = json.loads(doc)
        assert ("oracle_agreement" in doc) is has
        assert ("oracle_accuracy" in doc["models"][0]) is has
        code, body, err = run(["--bank", bank, *argv, "--format", "csv"], capsys)
        assert ("oracle_accuracy" in body.splitlines()[0]) is has
        assert err.startswith("agreement with the oracle") is has
    agree = doc_with = json.loads(run(["--bank", str(path), *argv, "--format", "json"], capsys)[1])
    agree = doc_with["oracle_agreement"]
    from scipy import stats

    by_name = {m["name"]: m for m in doc_with["models"]}
    names = sorted(by_name)
    s = [by_name[n]["scores"]["parc"] for n in names]
    o = [by_name[n]["oracle_accuracy"] for n in names]
    assert agree["parc"]["spearman"] == pytest.approx(stats.spearmanr(s, o)[0])
    assert agree["parc"]["kendall"] == pytest.approx(stats.kendalltau(s, o)[0])
    assert agree["parc"]["models"] == 5


def test_default_table_fits_120_columns_and_wide_shows_every_method(capsys):
    code, out, err = run(["--methods", "all", "--no-progress", "--depth-prior"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 120, max(lines, key=len)
    header = lines[1].split()
    assert header[:6] == ["#", "model", "architecture", "oracle", "%", SORT_BY]
    hidden = [line for line in lines if line.startswith("not shown (")]
    assert hidden and "--wide shows every column" in hidden[0]
    assert lines[15].startswith("higher = predicted to transfer better")  # after 12 rows
    code, wide, _ = run(["--methods", "all", "--no-progress", "--depth-prior", "--wide"], capsys)
    assert "not shown" not in wide
    assert len(wide.splitlines()[1].split()) == 5 + 2 * (
        len(SCORERS) + len(BANK_LEVEL)
    )  # '#', model, arch, oracle %


def test_columns_share_decimals_and_never_print_minus_zero():
    fmt = score._column_format([-1.8e-20, 2.5, -0.00004])
    assert [fmt(v) for v in (-1.8e-20, 2.5, -0.00004)] == ["0.000", "2.500", "0.000"]
    fmt = score._column_format([123.456, 7.0])
    assert [fmt(123.456), fmt(7.0), fmt(float("nan"))] == ["123.5", "7.0", "nan"]


def test_compilation_is_a_reported_phase(bank_path, capsys):
    from parc_jax.engine import _programs

    _programs._EXECUTABLES.clear()  # compile here, whatever earlier tests compiled
    seen = []
    result = score_bank(bank_path, methods="parc,leep,logme", progress=False,
                        on_compiled=lambda bucket, recs: seen.append((bucket, recs)))  # fmt: skip
    assert len(result) == 5 and seen
    for bucket, records in seen:
        assert bucket.startswith("bucket float32 width ")
        assert [r.name for r in records] == ["pca", "parc", "leep", "logme"]
        assert all(r.trace_s > 0 and r.lower_s > 0 and r.compile_s >= 0 for r in records)
    # a second pass in the same process compiles nothing
    seen.clear()
    score_bank(bank_path, methods="parc,leep,logme", progress=False,
               on_compiled=lambda bucket, recs: seen.append(recs))  # fmt: skip
    assert seen == []
    # the CLI's progress output names each bucket's compilation with its time
    _programs._EXECUTABLES.clear()
    code, _, err = run(["--bank", bank_path, "--methods", "leep"], capsys)
    assert code == 0 and "compiled 1 program for bucket float32 width" in err, err
