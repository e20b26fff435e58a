"""Tests for the model bank file format (parc_jax.bank)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import msgpack
import numpy as np
import pytest
from flax import serialization

from parc_jax import bank as B
from parc_jax.bank import BankError, _codec, _reader

ROOT = Path(__file__).resolve().parents[1]
N, K = 20, 4


# --------------------------------------------------------------------------------------------
# helpers


def make_bank(
    *,
    m: int = 3,
    seed: int = 0,
    name: str = "digits",
    prefix: str = "src",
    multilabel: bool = False,
    features_dtype=np.float32,
    with_extras: bool = True,
    reference=None,
) -> B.Bank:
    rng = np.random.default_rng(seed)
    if multilabel:
        labels = (rng.random((N, K)) < 0.5).astype(np.float32)
        labels[:, 0], labels[:, 1] = 1.0, 0.0  # no all-0 / all-1 rows
    else:
        labels = np.arange(N) % K
    names = [f"{prefix}{i}/model" for i in range(m)]
    features = {
        nm: rng.standard_normal((N, 5 + 3 * i)).astype(features_dtype) for i, nm in enumerate(names)
    }
    extras = {}
    if with_extras:
        extras = dict(
            probs={nm: rng.dirichlet(np.ones(6), N).astype(np.float32) for nm in names},
            depths=[10 + i for i in range(m)],
            sources=["imagenet"] * m,
            source_images=[1000 * (i + 1) for i in range(m)],
            meta={names[0]: {"lr": 0.1, "tags": ("a", "b"), "step": np.int64(7), "none": None}},
            num_images=800,
        )
    return B.bank_from_arrays(
        target_name=name,
        labels=labels,
        features=features,
        num_classes=K,
        architectures=["resnet" if i % 2 == 0 else "vit" for i in range(m)],
        reference_features=reference,
        **extras,
    )


def raw_write(path: Path, tree) -> Path:
    """Write a tree with plain Flax serialisation, bypassing our validation."""
    path.write_bytes(serialization.msgpack_serialize(tree))
    return path


def good_tree(**kw):
    return B.bank_to_tree(make_bank(**kw))


def assert_bank_equal(a: B.Bank, b: B.Bank) -> None:
    assert a.target.name == b.target.name
    assert a.target.num_classes == b.target.num_classes
    assert a.target.task == b.target.task
    assert a.target.num_images == b.target.num_images
    np.testing.assert_array_equal(a.target.labels, b.target.labels)
    assert a.target.labels.dtype == b.target.labels.dtype
    ra, rb = a.target.reference_features, b.target.reference_features
    if isinstance(ra, dict):
        assert sorted(ra) == sorted(rb)
        for k in ra:
            np.testing.assert_array_equal(ra[k], rb[k])
    elif ra is None:
        assert rb is None
    else:
        np.testing.assert_array_equal(ra, rb)
    assert a.names == b.names
    for x, y in zip(a.models, b.models, strict=True):
        assert x.features.dtype == y.features.dtype
        np.testing.assert_array_equal(x.features, y.features)
        assert (x.probs is None) == (y.probs is None)
        if x.probs is not None:
            np.testing.assert_array_equal(x.probs, y.probs)
        for key in ("architecture", "depth", "source", "source_images", "meta"):
            assert getattr(x, key) == getattr(y, key), key


def raises_bank_error(fn, *parts: str) -> BankError:
    with pytest.raises(BankError) as info:
        fn()
    msg = str(info.value)
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    assert "\n" not in msg
    return info.value


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------
# round trips


def test_round_trip_single_label(tmp_path):
    bank = make_bank()
    path = tmp_path / "bank.msgpack"
    B.write_bank(path, bank)
    back = B.read_bank(path)
    assert_bank_equal(bank, back)
    assert len(back) == 3 and back.names == ["src0/model", "src1/model", "src2/model"]
    assert not back.target.multilabel and back.target.n == N
    assert back.models[1].width == 8
    assert back.models[0].meta == {"lr": 0.1, "tags": ["a", "b"], "step": 7, "none": None}
    assert back.models[0].depth == 10 and isinstance(back.models[0].depth, int)
    assert back.target.labels.dtype == np.int32
    # the whole file also decodes in one go, to the same tree as bank_to_tree
    whole = serialization.msgpack_restore(path.read_bytes())
    assert_bank_equal(B.validate_tree(whole), bank)
    assert no_temp_files(tmp_path)


def test_round_trip_multilabel_float16_and_reference_array(tmp_path):
    ref = np.random.default_rng(1).standard_normal((N, 7)).astype(np.float32)
    bank = make_bank(multilabel=True, features_dtype=np.float16, reference=ref, with_extras=False)
    path = tmp_path / "ml.msgpack"
    B.write_bank(path, bank)
    back = B.read_bank(path)
    assert_bank_equal(bank, back)
    assert back.target.multilabel and back.target.labels.dtype == np.float32
    assert all(m.features.dtype == np.float16 for m in back.models)
    assert back.target.reference_for("anything") is not None
    np.testing.assert_array_equal(back.target.reference_for("vit"), ref)
    assert back.models[0].probs is None and back.models[0].meta == {}


def test_round_trip_reference_map_and_features_dtype(tmp_path):
    rng = np.random.default_rng(2)
    ref = {"resnet": rng.standard_normal((N, 3)), "vit": rng.standard_normal((N, 4))}
    bank = make_bank(reference=ref)
    path = tmp_path / "b.msgpack"
    B.write_bank(path, bank, features_dtype="float16")
    back = B.read_bank(path)
    assert [m.features.dtype for m in back.models] == [np.float16] * 3
    np.testing.assert_array_equal(
        back.models[2].features, bank.models[2].features.astype(np.float16)
    )
    assert back.target.reference_for("resnet").shape == (N, 3)
    assert back.target.reference_for("vit").shape == (N, 4)
    assert back.target.reference_for("mlp") is None
    # and back to float32
    B.write_bank(path, back, features_dtype=np.float32)
    assert B.read_bank(path).models[0].features.dtype == np.float32
    with pytest.raises(ValueError, match="features_dtype"):
        B.write_bank(path, back, features_dtype="float64")


def test_float16_overflow_is_an_error_when_casting(tmp_path):
    bank = make_bank()
    bank.models[1].features = bank.models[1].features.copy()
    bank.models[1].features[3, 2] = 1e6
    path = tmp_path / "b.msgpack"
    raises_bank_error(
        lambda: B.write_bank(path, bank, features_dtype="float16"),
        str(path),
        "model 'src1/model'",
        "field 'features'",
        "row 3, column 2",
        "float16",
    )
    assert not path.exists() and no_temp_files(tmp_path)


def test_models_as_index_map_are_read(tmp_path):
    # what flax.serialization.to_state_dict makes of a list: keys sort as strings (0, 1, 10, 11, 2)
    tree = good_tree(m=12, with_extras=False)
    tree["models"] = {str(i): mt for i, mt in enumerate(tree["models"])}
    path = raw_write(tmp_path / "dict.msgpack", tree)
    expected = [f"src{i}/model" for i in range(12)]
    assert B.read_bank(path).names == expected
    assert B.open_bank(path).names == expected
    assert B.validate_tree(serialization.msgpack_restore(path.read_bytes())).names == expected
    # integer keys (a non-Flax writer) are accepted too
    raw = msgpack.unpackb(path.read_bytes(), strict_map_key=False)
    raw["models"] = {int(k): v for k, v in raw["models"].items()}
    path.write_bytes(msgpack.packb(raw))
    assert B.read_bank(path).names == expected
    tree["models"] = {"0": tree["models"]["0"], "2": tree["models"]["2"]}
    raises_bank_error(lambda: B.read_bank(raw_write(path, tree)), "field 'models'", "'0', '1'")


def test_file_is_plain_msgpack_without_pickle(tmp_path, monkeypatch):
    bank = make_bank(reference={"vit": np.ones((N, 2), np.float32)})
    path = tmp_path / "b.msgpack"
    B.write_bank(path, bank)
    raw = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    assert raw["format"] == "parc-bank" and raw["version"] == B.VERSION == 2
    assert raw["target"]["task"] == "classification"
    ext = raw["models"][1]["features"]
    assert isinstance(ext, msgpack.ExtType) and ext.code == 1  # Flax's ndarray extension
    shape, dtype, buffer = msgpack.unpackb(ext.data, raw=False)
    decoded = np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape)
    np.testing.assert_array_equal(decoded, bank.models[1].features)
    assert raw["models"][0]["meta"]["tags"] == ["a", "b"]

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    assert_bank_equal(B.read_bank(path), bank)


# --------------------------------------------------------------------------------------------
# validation errors: each names shard, model and field


def bad_file(tmp_path, mutate, **kw) -> Path:
    tree = good_tree(**kw)
    mutate(tree)
    return raw_write(tmp_path / "bank.msgpack", tree)


def check_read_error(path: Path, *parts: str) -> None:
    raises_bank_error(lambda: B.read_bank(path), str(path), *parts)


def test_rows_mismatch(tmp_path):
    def mutate(t):
        t["models"][1]["features"] = np.zeros((N + 2, 5), np.float32)

    path = bad_file(tmp_path, mutate)
    check_read_error(path, "model 'src1/model'", "field 'features'", "22 rows", f"{N} labels")


@pytest.mark.parametrize("field", ["probs", "reference_features"])
def test_rows_mismatch_other_arrays(tmp_path, field):
    def mutate(t):
        if field == "probs":
            t["models"][0]["probs"] = np.full((N - 1, 2), 0.5)
        else:
            t["target"]["reference_features"] = np.zeros((N + 1, 3), np.float32)

    path = bad_file(tmp_path, mutate)
    who = "model 'src0/model'" if field == "probs" else "target"
    check_read_error(path, who, f"field '{field}'", "rows")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_features(tmp_path, value):
    def mutate(t):
        f = t["models"][2]["features"].copy()
        f[4, 1] = value
        t["models"][2]["features"] = f

    path = bad_file(tmp_path, mutate)
    check_read_error(path, "model 'src2/model'", "field 'features'", "row 4, column 1")


def test_non_finite_reference_map(tmp_path):
    def mutate(t):
        ref = np.zeros((N, 3), np.float32)
        ref[0, 0] = np.nan
        t["target"]["reference_features"] = {"vit": ref}

    path = bad_file(tmp_path, mutate)
    check_read_error(path, "target field 'reference_features['vit']'", "non-finite")


def test_probs_must_sum_to_one(tmp_path):
    def mutate(t):
        p = t["models"][1]["probs"].copy()
        p[5] *= 1.01
        t["models"][1]["probs"] = p

    path = bad_file(tmp_path, mutate)
    check_read_error(path, "model 'src1/model'", "field 'probs'", "row 5", "logits")

    def negative(t):
        p = np.full((N, 2), 0.5)
        p[2] = [1.5, -0.5]
        t["models"][0]["probs"] = p

    check_read_error(bad_file(tmp_path, negative), "model 'src0/model'", "negative", "row 2")


def test_float16_probs_checked_after_upcast(tmp_path):
    # 1000 classes of float16(1e-3) = 0.0010004: each row sums to 1.0004 (within 1e-3)
    probs = np.full((N, 1000), 1e-3, dtype=np.float16)

    def mutate(t):
        t["models"][0]["probs"] = probs

    back = B.read_bank(bad_file(tmp_path, mutate))
    assert back.models[0].probs.dtype == np.float16

    def off(t):
        t["models"][0]["probs"] = np.full((N, 1000), 1.02e-3, dtype=np.float16)

    check_read_error(bad_file(tmp_path, off), "model 'src0/model'", "field 'probs'", "row 0")


def test_duplicate_names_in_one_file(tmp_path):
    def mutate(t):
        t["models"][2]["name"] = "src0/model"

    path = bad_file(tmp_path, mutate)
    check_read_error(path, "model 'src0/model'", "field 'name'", "duplicate")
    raises_bank_error(lambda: B.open_bank(path), str(path), "duplicate")


@pytest.mark.parametrize(
    ("where", "key", "parts"),
    [
        ("model", "features", ("model 'src1/model'", "field 'features'", "missing")),
        ("model", "architecture", ("model 'src1/model'", "field 'architecture'", "missing")),
        ("model", "name", ("model #1", "field 'name'", "missing")),
        ("target", "labels", ("target field 'labels'", "missing")),
        ("target", "num_classes", ("target field 'num_classes'", "missing")),
        ("top", "target", ("field 'target'", "missing")),
        ("top", "models", ("field 'models'", "missing")),
    ],
)
def test_missing_fields(tmp_path, where, key, parts):
    def mutate(t):
        holder = {"model": t["models"][1], "target": t["target"], "top": t}[where]
        del holder[key]

    check_read_error(bad_file(tmp_path, mutate), *parts)


def test_unknown_fields_are_rejected(tmp_path):
    def mutate(t):
        t["models"][0]["prob"] = t["models"][0].pop("probs")

    check_read_error(bad_file(tmp_path, mutate), "model 'src0/model'", "field 'prob'", "meta")


def test_unknown_format_and_version(tmp_path):
    def fmt(t):
        t["format"] = "other-bank"

    path = bad_file(tmp_path, fmt)
    check_read_error(path, "field 'format'", "other-bank", "not a parc bank")

    def version(t):
        t["version"] = 3

    path = bad_file(tmp_path, version)
    check_read_error(path, "field 'version'", "version 3 is not supported", "upgrade")
    raises_bank_error(lambda: B.open_bank(path), "version 3")

    def no_format(t):
        del t["format"]

    check_read_error(bad_file(tmp_path, no_format), "field 'format'", "missing")


def test_truncated_file(tmp_path):
    path = tmp_path / "bank.msgpack"
    B.write_bank(path, make_bank())
    data = path.read_bytes()
    for cut in (0, 1, 7, 60, len(data) // 3, len(data) // 2, len(data) - 40, len(data) - 1):
        path.write_bytes(data[:cut])
        for fn in (B.read_bank, B.open_bank):
            raises_bank_error(
                lambda fn=fn: fn(path), str(path), "not a valid parc bank", "truncated or corrupt"
            )
    path.write_bytes(data + b"\x00")
    raises_bank_error(lambda: B.read_bank(path), "not a valid parc bank", "trailing")


def test_random_garbage(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "garbage.msgpack"
    for _ in range(20):
        path.write_bytes(rng.bytes(int(rng.integers(1, 5000))))
        raises_bank_error(lambda: B.read_bank(path), str(path), "not a")
    # well-formed msgpack that is not a bank
    path.write_bytes(msgpack.packb([1, 2, 3]))
    raises_bank_error(lambda: B.read_bank(path), "not a valid parc bank")
    path.write_bytes(msgpack.packb({"hello": 1}))
    raises_bank_error(lambda: B.read_bank(path), "field 'format'", "not a parc bank")
    # corrupt extension payload inside an otherwise valid structure
    tree = msgpack.unpackb(serialization.msgpack_serialize(good_tree()), strict_map_key=False)
    tree["models"][0]["features"] = msgpack.ExtType(1, b"\x93\x01garbage")
    path.write_bytes(msgpack.packb(tree))
    raises_bank_error(lambda: B.read_bank(path), str(path), "truncated or corrupt")


def test_labels_out_of_range(tmp_path):
    def high(t):
        lab = t["target"]["labels"].copy()
        lab[6] = K
        t["target"]["labels"] = lab

    check_read_error(bad_file(tmp_path, high), "target field 'labels'", f"label {K} at row 6")

    def negative(t):
        lab = t["target"]["labels"].copy()
        lab[0] = -1
        t["target"]["labels"] = lab

    check_read_error(bad_file(tmp_path, negative), "target field 'labels'", "row 0")

    def floats(t):
        t["target"]["labels"] = t["target"]["labels"].astype(np.float32)

    check_read_error(bad_file(tmp_path, floats), "target field 'labels'", "integers")


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_flat_multilabel_row(tmp_path, fill):
    def mutate(t):
        lab = t["target"]["labels"].copy()
        lab[3] = fill
        t["target"]["labels"] = lab

    path = bad_file(tmp_path, mutate, multilabel=True)
    check_read_error(path, "target field 'labels'", f"row 3 is all {int(fill)}")


def test_multilabel_values_and_width(tmp_path):
    def half(t):
        lab = t["target"]["labels"].copy()
        lab[2, 3] = 0.5
        t["target"]["labels"] = lab

    check_read_error(bad_file(tmp_path, half, multilabel=True), "row 2, column 3", "not 0 or 1")

    def width(t):
        t["target"]["num_classes"] = K + 1

    check_read_error(bad_file(tmp_path, width, multilabel=True), "num_classes", "columns")


@pytest.mark.parametrize(
    ("key", "value", "part"),
    [
        ("depth", 0, "must be >= 1"),
        ("depth", True, "must be an integer"),
        ("source_images", 3.5, "must be an integer"),
        ("source", 3, "non-empty string"),
        ("architecture", "", "non-empty string"),
        ("features", np.zeros((N, 3)), "dtype float64"),
        ("features", np.zeros(N, np.float32), "2-D"),
        ("features", [[0.0] * 3] * N, "must be an array"),
        ("meta", {"w": np.zeros(3)}, "tolist"),
        ("meta", [1, 2], "must be a map"),
    ],
)
def test_bad_model_fields(tmp_path, key, value, part):
    def mutate(t):
        t["models"][0][key] = value

    check_read_error(bad_file(tmp_path, mutate), "model 'src0/model'", f"field '{key}", part)


def test_empty_models_and_validate_tree_defaults():
    tree = good_tree()
    tree["models"] = []
    raises_bank_error(lambda: B.validate_tree(tree), "<memory>", "field 'models'", "empty")
    tree = good_tree()
    tree["models"][0]["features"] = np.zeros((N, 0), np.float32)
    err = raises_bank_error(lambda: B.validate_tree(tree, shard="x.msgpack"), "x.msgpack: model")
    assert (err.shard, err.model, err.field) == ("x.msgpack", "src0/model", "features")
    assert isinstance(err, ValueError)
    bank = B.validate_bank(make_bank())
    assert bank.names == make_bank().names


# --------------------------------------------------------------------------------------------
# directories of shards


def write_shards(directory: Path, specs) -> list[B.Bank]:
    directory.mkdir(exist_ok=True)
    banks = []
    for fname, kw in specs:
        bank = make_bank(**kw)
        B.write_bank(directory / fname, bank)
        banks.append(bank)
    return banks


def test_directory_streamed_in_order(tmp_path, monkeypatch):
    d = tmp_path / "bank"
    banks = write_shards(
        d,
        [
            ("b.msgpack", dict(prefix="b", m=2, seed=1)),
            ("a.msgpack", dict(prefix="a", m=3, seed=2)),
            ("c.msgpack", dict(prefix="c", m=1, seed=3)),
        ],
    )
    (d / "notes.txt").write_text("ignored")
    (d / ".a.msgpack.partial.tmp").write_bytes(b"junk")
    (d / ".hidden.msgpack").write_bytes(b"junk")
    reader = B.open_bank(d)
    assert [p.name for p in reader.shards] == ["a.msgpack", "b.msgpack", "c.msgpack"]
    assert reader.num_models == len(reader) == 6
    assert reader.target.name == "digits" and reader.target.num_images == 800

    loads = []
    real_load = _reader._load_shard
    monkeypatch.setattr(_reader, "_load_shard",
                        lambda ix: loads.append(ix.path.name) or real_load(ix))  # fmt: skip
    it = reader.iter_models()
    first = next(it)
    assert first.name == "a0/model" and loads == ["a.msgpack"]  # lazily, one shard at a time
    rest = list(it)
    assert loads == ["a.msgpack", "b.msgpack", "c.msgpack"]
    expected = banks[1].models + banks[0].models + banks[2].models
    assert [m.name for m in [first, *rest]] == [m.name for m in expected]
    for got, want in zip([first, *rest], expected, strict=True):
        np.testing.assert_array_equal(got.features, want.features)
    assert_bank_equal(B.read_bank(d), B.Bank(banks[1].target, expected))
    assert [m.name for m in B.iter_models(d)] == [m.name for m in expected]

    digest = hashlib.sha256()
    for name in ("a.msgpack", "b.msgpack", "c.msgpack"):
        digest.update((d / name).read_bytes())
    assert reader.sha256() == digest.hexdigest()
    single = B.open_bank(d / "a.msgpack")
    assert single.sha256() == hashlib.sha256((d / "a.msgpack").read_bytes()).hexdigest()


def test_directory_target_mismatch(tmp_path):
    d = tmp_path / "bank"
    write_shards(d, [("a.msgpack", dict(prefix="a")), ("b.msgpack", dict(prefix="b", name="x"))])
    raises_bank_error(
        lambda: B.open_bank(d), str(d / "b.msgpack"), "target field 'name'", str(d / "a.msgpack")
    )
    bank = make_bank(prefix="b")
    bank.target.labels = np.roll(bank.target.labels, 1)
    B.write_bank(d / "b.msgpack", bank)
    raises_bank_error(lambda: B.open_bank(d), "target field 'labels'", "same target")


def test_directory_duplicate_names_across_shards(tmp_path):
    d = tmp_path / "bank"
    write_shards(d, [("a.msgpack", dict(prefix="s", m=2)), ("b.msgpack", dict(prefix="s", m=1))])
    err = raises_bank_error(
        lambda: B.open_bank(d),
        str(d / "b.msgpack"),
        "model 's0/model'",
        "field 'name'",
        f"already in {d / 'a.msgpack'}",
    )
    assert err.model == "s0/model"


def test_directory_bad_shard_raises_when_read(tmp_path):
    d = tmp_path / "bank"
    write_shards(d, [("a.msgpack", dict(prefix="a", m=2))])

    def mutate(t):
        t["models"][0]["features"] = np.full((N, 4), np.nan, np.float32)

    tree = good_tree(prefix="b")
    mutate(tree)
    raw_write(d / "b.msgpack", tree)
    reader = B.open_bank(d)  # headers are fine
    it = reader.iter_models()
    assert [next(it).name, next(it).name] == ["a0/model", "a1/model"]
    raises_bank_error(lambda: next(it), str(d / "b.msgpack"), "model 'b0/model'", "'features'")
    raises_bank_error(lambda: B.read_bank(d), str(d / "b.msgpack"))


def test_directory_reference_maps_are_united(tmp_path):
    rng = np.random.default_rng(5)
    vit, res = rng.standard_normal((N, 3)), rng.standard_normal((N, 2))
    d = tmp_path / "bank"
    write_shards(
        d,
        [
            ("a.msgpack", dict(prefix="a", reference={"vit": vit})),
            ("b.msgpack", dict(prefix="b", reference={"resnet": res})),
        ],
    )
    target = B.open_bank(d).target
    np.testing.assert_array_equal(target.reference_for("vit"), vit)
    np.testing.assert_array_equal(target.reference_for("resnet"), res)
    B.write_bank(d / "b.msgpack", make_bank(prefix="b", reference={"vit": vit + 1}))
    raises_bank_error(lambda: B.open_bank(d), "reference_features['vit']", "same target")


def test_empty_or_missing_directory(tmp_path):
    raises_bank_error(lambda: B.open_bank(tmp_path), "no *.msgpack")
    raises_bank_error(lambda: B.read_bank(tmp_path / "nope.msgpack"), "no such")


# --------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_write_failure_in_replace(tmp_path, monkeypatch):
    path = tmp_path / "bank.msgpack"
    B.write_bank(path, make_bank(seed=0))
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        B.write_bank(path, make_bank(seed=9))
    assert path.read_bytes() == before
    new = tmp_path / "new.msgpack"
    with pytest.raises(OSError):
        B.write_bank(new, make_bank())
    assert not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.msgpack"]


def test_atomic_write_failure_mid_stream(tmp_path, monkeypatch):
    path = tmp_path / "bank.msgpack"
    calls = []
    real = _codec.encode

    def flaky(tree, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # target, model 0, then fail on model 1
            raise RuntimeError("serialisation failed")
        return real(tree, *args, **kwargs)

    monkeypatch.setattr(_codec, "encode", flaky)
    with pytest.raises(RuntimeError, match="serialisation failed"):
        B.write_bank(path, make_bank())
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_write_validates_first(tmp_path):
    bank = make_bank()
    bank.models[1].name = bank.models[0].name
    path = tmp_path / "b.msgpack"
    raises_bank_error(lambda: B.write_bank(path, bank), str(path), "duplicate")
    bank = make_bank()
    bank.models[2].probs = np.full((N, 3), 0.5)
    raises_bank_error(lambda: B.write_bank(path, bank), "model 'src2/model'", "field 'probs'")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="directory"):
        B.write_bank(tmp_path, make_bank())
    with pytest.raises(ValueError, match="Bank"):
        B.write_bank(path, {"models": []})


# --------------------------------------------------------------------------------------------
# builders: arrays, npz folders, merge


def test_bank_from_arrays_forms_and_errors():
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((N, 4)), rng.standard_normal((N, 6)).astype(np.float16)]
    labels = (np.arange(N) % 3).astype(np.float64)  # whole-number floats are accepted
    bank = B.bank_from_arrays(target_name="t", labels=labels, features=feats)
    assert bank.names == ["model000", "model001"] and bank.target.num_classes == 3
    assert [m.features.dtype for m in bank.models] == [np.float32, np.float16]
    assert [m.architecture for m in bank.models] == ["unknown", "unknown"]
    bf16 = B.bank_from_arrays(
        target_name="t", labels=labels, features=[jnp.ones((N, 3), "bfloat16")]
    )
    assert bf16.models[0].features.dtype == np.float32
    bank = B.bank_from_arrays(
        target_name="t",
        labels=labels,
        features=feats,
        names=["x", "y"],
        architectures={"x": "a", "y": "b"},
        depths={"y": np.int64(4)},
    )
    assert [m.depth for m in bank.models] == [None, 4]
    with pytest.raises(ValueError, match="names"):
        B.bank_from_arrays(target_name="t", labels=labels, features=feats, names=["x"])
    with pytest.raises(ValueError, match="depths"):
        B.bank_from_arrays(target_name="t", labels=labels, features=feats, depths=[1])
    with pytest.raises(ValueError, match="probs"):
        B.bank_from_arrays(target_name="t", labels=labels, features=feats, probs={"zz": None})
    with pytest.raises(ValueError, match="whole numbers"):
        B.bank_from_arrays(target_name="t", labels=labels + 0.5, features=feats)
    raises_bank_error(
        lambda: B.bank_from_arrays(target_name="t", labels=labels, features=feats, num_classes=2),
        "<memory>",
        "target field 'labels'",
        "outside 0..1",
    )


def write_npz_folder(folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir()
    rng = np.random.default_rng(4)
    feats = {}
    for i, stem in enumerate(["beta", "alpha", "gamma"]):
        feats[stem] = rng.standard_normal((N, 4 + i)).astype(np.float32)
        extra = {}
        if stem != "gamma":
            extra = dict(
                architecture=np.array("resnet"),
                depth=np.array(18 + i),
                source=np.array("imagenet"),
                source_images=np.array(5000),
                probs=rng.dirichlet(np.ones(5), N),
            )
        np.savez(folder / f"{stem}.npz", features=feats[stem], **extra)
    (folder / "readme.txt").write_text("not a model")
    return feats


def test_npz_folder_to_bank(tmp_path):
    feats = write_npz_folder(tmp_path / "npz")
    labels = np.arange(N) % K
    # a file without an architecture gets the default, as bank_from_arrays gives it
    default = B.npz_folder_to_bank(tmp_path / "npz", labels=labels, target_name="t")
    assert [m.architecture for m in default.models] == ["resnet", "resnet", "unknown"]
    bank = B.npz_folder_to_bank(
        tmp_path / "npz", labels=labels, target_name="t", architecture="mlp", num_images=100
    )
    assert bank.names == ["alpha", "beta", "gamma"]
    assert [m.architecture for m in bank.models] == ["resnet", "resnet", "mlp"]
    assert [m.depth for m in bank.models] == [19, 18, None]
    assert bank.models[0].source == "imagenet" and bank.models[1].source_images == 5000
    assert bank.models[2].probs is None and bank.models[0].probs.shape == (N, 5)
    np.testing.assert_array_equal(bank.models[1].features, feats["beta"])
    assert bank.target.num_classes == K and bank.target.num_images == 100

    np.savez(tmp_path / "npz" / "delta.npz", features=feats["beta"], extra=np.ones(2))
    raises_bank_error(
        lambda: B.npz_folder_to_bank(tmp_path / "npz", labels=labels, target_name="t"),
        "delta.npz",
        "field 'extra'",
        "unknown key",
    )
    # object arrays need pickle to load: refused
    np.savez(tmp_path / "npz" / "delta.npz", features=np.array([{"a": 1}], dtype=object))
    raises_bank_error(
        lambda: B.npz_folder_to_bank(
            tmp_path / "npz", labels=labels, target_name="t", architecture="mlp"
        ),
        "delta.npz",
        "cannot read",
    )


def test_merge_banks(tmp_path):
    d = tmp_path / "dir"
    write_shards(d, [("x.msgpack", dict(prefix="x", m=2, seed=1))])
    single = tmp_path / "single.msgpack"
    B.write_bank(single, make_bank(prefix="s", m=2, seed=2))
    out = tmp_path / "merged.msgpack"
    assert B.merge_banks([single, d], out) is None
    merged = B.read_bank(out)
    assert merged.names == ["s0/model", "s1/model", "x0/model", "x1/model"]
    np.testing.assert_array_equal(merged.models[2].features, B.read_bank(d).models[0].features)
    assert merged.target.num_images == 800
    # same name twice
    before = out.read_bytes()
    raises_bank_error(lambda: B.merge_banks([single, single], out), "duplicate")
    assert out.read_bytes() == before
    # different target
    other = tmp_path / "other.msgpack"
    B.write_bank(other, make_bank(prefix="o", name="other"))
    raises_bank_error(lambda: B.merge_banks([single, other], out), "target field 'name'")
    assert out.read_bytes() == before and no_temp_files(tmp_path)
    with pytest.raises(ValueError, match="inside the input directory"):
        B.merge_banks([d], d / "all.msgpack")


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_validate(tmp_path, capsys):
    good = tmp_path / "good.msgpack"
    B.write_bank(good, make_bank())
    assert B.main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert f"OK: 3 models, n={N}, K={K}" in out

    bad = tmp_path / "bad.msgpack"
    bad.write_bytes(good.read_bytes()[:-10])
    assert B.main(["validate", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert "OK: 3 models" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "not a valid parc bank" in err[0]
    assert B.main(["validate"]) == 2  # usage error from argparse
    capsys.readouterr()


def test_cli_subprocess_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.msgpack"
    raw_write(bad, {**good_tree(), "version": 3})
    proc = subprocess.run(
        [sys.executable, "-m", "parc_jax.bank", "validate", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "version 3 is not supported" in lines[0] and str(bad) in lines[0]


def test_cli_info(tmp_path, capsys):
    path = tmp_path / "b.msgpack"
    B.write_bank(path, make_bank(reference={"resnet": np.ones((N, 2))}))
    assert B.main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    for part in ("target:        digits", f"n:             {N}", "multilabel:    no",
                 "widths:        5 x1, 8 x1, 11 x1", "resnet x2, vit x1", "leep (3/3)",
                 "rsa (2/3)", "+l depth prior (3/3)", "heuristic (3/3)"):  # fmt: skip
        assert part in text, part
    assert B.main(["info", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_models"] == 3 and info["fields"]["probs"] == 3
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()

    B.write_bank(path, make_bank(multilabel=True, with_extras=False))
    info = B.bank_info(path)
    assert info["multilabel"] and set(info["scorers"]) == {"parc", "knn"}
    assert any("depth" in note for note in info["notes"])


def test_cli_merge_and_from_npz(tmp_path, capsys):
    a, b = tmp_path / "a.msgpack", tmp_path / "b.msgpack"
    B.write_bank(a, make_bank(prefix="a", m=1))
    B.write_bank(b, make_bank(prefix="b", m=2))
    out = tmp_path / "m.msgpack"
    assert B.main(["merge", str(out), str(a), str(b)]) == 0
    assert "merged 3 models" in capsys.readouterr().out
    assert B.read_bank(out).names == ["a0/model", "b0/model", "b1/model"]

    write_npz_folder(tmp_path / "npz")
    labels = np.arange(N) % K
    np.save(tmp_path / "labels.npy", labels)
    np.savez(tmp_path / "labels.npz", y_train=labels, y_test=labels[:5])
    built = tmp_path / "built.msgpack"
    args = ["from-npz", str(tmp_path / "npz"), "--target-name", "digits", "-o", str(built)]
    assert B.main([*args, "--labels", str(tmp_path / "labels.npy"), "--architecture", "mlp"]) == 0
    assert "wrote 3 models" in capsys.readouterr().out
    assert B.read_bank(built).names == ["alpha", "beta", "gamma"]
    assert B.main([*args, "--labels", str(tmp_path / "labels.npz"), "--architecture", "m"]) == 2
    assert "--labels-key" in capsys.readouterr().err
    npz_args = ["--labels", str(tmp_path / "labels.npz"), "--labels-key", "y_train"]
    assert B.main([*args, *npz_args, "--features-dtype", "float16", "--architecture", "m"]) == 0
    assert B.read_bank(built).models[0].features.dtype == np.float16
    capsys.readouterr()
    # gamma has no architecture: the default, as bank_from_arrays gives it
    assert B.main([*args, "--labels", str(tmp_path / "labels.npy")]) == 0
    assert B.read_bank(built).models[2].architecture == "unknown"


# --------------------------------------------------------------------------------------------
# walkthrough defects: corrupt .npz inputs, labels-length mismatch, bad names, bools as ints


def corrupt_npz(path: Path) -> Path:
    """A zip whose member fails its CRC check when read (the archive itself opens)."""
    np.savez(path, features=np.ones((N, 4), np.float32))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def test_cli_from_npz_corrupt_inputs_name_the_file(tmp_path, capsys):
    good = tmp_path / "good"
    write_npz_folder(good)
    labels = tmp_path / "labels.npy"
    np.save(labels, np.arange(N) % K)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    (bad_dir / "a.npz").write_bytes(b"PK\x03\x04junk")
    crc_dir = tmp_path / "crc"
    crc_dir.mkdir()
    corrupt_npz(crc_dir / "b.npz")
    bad_npz, bad_npy = tmp_path / "bad_labels.npz", tmp_path / "bad_labels.npy"
    bad_npz.write_bytes(b"PK\x03\x04junk")
    bad_npy.write_bytes(b"\x93NUMPY\x01\x00junk")
    crc_labels = tmp_path / "crc_labels.npz"
    np.savez(crc_labels, labels=np.arange(N) % K)
    data = bytearray(crc_labels.read_bytes())
    data[len(data) // 2] ^= 0xFF
    crc_labels.write_bytes(bytes(data))
    out = tmp_path / "o.msgpack"
    cases = [
        (bad_dir, labels, bad_dir / "a.npz"),
        (crc_dir, labels, crc_dir / "b.npz"),
        (good, bad_npz, bad_npz),
        (good, bad_npy, bad_npy),
        (good, crc_labels, crc_labels),
    ]
    for folder, lab, culprit in cases:
        argv = ["from-npz", str(folder), "--labels", str(lab), "--target-name", "t"]
        assert B.main([*argv, "--architecture", "q", "-o", str(out)]) == 2, culprit
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(culprit) in err[0] and "cannot read" in err[0], err
    assert not out.exists()
    npy_dir = tmp_path / "npy"
    npy_dir.mkdir()
    with open(npy_dir / "c.npz", "wb") as f:  # a plain .npy under an .npz name
        np.save(f, np.ones((N, 4), np.float32))
    argv = ["from-npz", str(npy_dir), "--labels", str(labels), "--target-name", "t"]
    assert B.main([*argv, "--architecture", "q", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "c.npz" in err[0] and "cannot read" in err[0], err
    with pytest.raises(BankError, match="a.npz"):
        B.npz_folder_to_bank(bad_dir, labels=np.arange(N) % K, target_name="t", architecture="q")


def test_from_npz_labels_length_mismatch_names_the_files(tmp_path, capsys):
    write_npz_folder(tmp_path / "npz")
    labels = tmp_path / "labels.npy"
    np.save(labels, np.arange(N + 3) % K)
    argv = ["from-npz", str(tmp_path / "npz"), "--labels", str(labels), "--target-name", "t"]
    assert B.main([*argv, "--architecture", "q", "-o", str(tmp_path / "o.msgpack")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "<memory>" not in err[0], err
    for part in ("alpha.npz", "model 'alpha'", "field 'features'", str(labels), f"{N} rows"):
        assert part in err[0], (part, err)
    err = raises_bank_error(
        lambda: B.npz_folder_to_bank(
            tmp_path / "npz", labels=np.arange(N + 3) % K, target_name="t", architecture="q"
        ),
        str(tmp_path / "npz" / "alpha.npz"),
        "model 'alpha' field 'features'",
    )
    assert "<memory>" not in str(err)
    # other problems of a model's arrays also name its .npz, not <memory>
    np.savez(tmp_path / "npz" / "alpha.npz", features=np.full((N, 3), np.nan, np.float32))
    raises_bank_error(
        lambda: B.npz_folder_to_bank(
            tmp_path / "npz", labels=np.arange(N) % K, target_name="t", architecture="q"
        ),
        str(tmp_path / "npz" / "alpha.npz"),
        "field 'features'",
        "non-finite",
    )


BAD_NAMES = [
    "line\nbreak",
    " ",
    "",
    "\t",
    "tab\there",
    "cr\r",
    "esc\x1b[31m",
    "nul\x00",
    "ls\u2028",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_model_names_are_rejected(tmp_path, name):
    feats = {name: np.ones((N, 3), np.float32), "ok": np.ones((N, 2), np.float32)}
    err = raises_bank_error(
        lambda: B.bank_from_arrays(target_name="t", labels=np.arange(N) % K, features=feats),
        "<memory>",
        "model #0",
        "field 'name'",
    )
    assert err.field == "name"

    def mutate(t):
        t["models"][1]["name"] = name

    check_read_error(bad_file(tmp_path, mutate), "model #1", "field 'name'")
    bank = make_bank()
    bank.models[2].name = name
    out = tmp_path / "w.msgpack"
    raises_bank_error(lambda: B.write_bank(out, bank), str(out), "model #2", "field 'name'")
    assert not out.exists() and no_temp_files(tmp_path)


def test_good_unusual_model_names_still_accepted():
    names = ["a b", " lead", "ünï/códe", "x.y-z_1"]
    bank = B.bank_from_arrays(
        target_name="t", labels=np.arange(N) % K, features=[np.ones((N, 2))] * 4, names=names
    )
    assert bank.names == names


def test_bools_are_not_integers(tmp_path):
    labels = np.arange(N) % K
    feats = {"a": np.ones((N, 3), np.float32)}
    for kw, fld in [
        (dict(depths=[True]), "depth"),
        (dict(depths={"a": np.bool_(True)}), "depth"),
        (dict(source_images=[True]), "source_images"),
        (dict(num_images=True), "num_images"),
        (dict(num_images=np.bool_(True)), "num_images"),
        (dict(num_classes=True), "num_classes"),
    ]:
        raises_bank_error(
            lambda kw=kw: B.bank_from_arrays(target_name="t", labels=labels, features=feats, **kw),
            f"field '{fld}'",
            "must be an integer",
            "bool",
        )
    out = tmp_path / "w.msgpack"
    bank = make_bank()
    bank.models[0].depth = True
    raises_bank_error(lambda: B.write_bank(out, bank), "field 'depth'", "must be an integer")
    bank = make_bank()
    bank.target.num_images = False
    raises_bank_error(lambda: B.write_bank(out, bank), "field 'num_images'", "must be an integer")
    bank = make_bank()
    bank.target.num_classes = 4.0
    raises_bank_error(lambda: B.write_bank(out, bank), "field 'num_classes'", "must be an integer")
    assert not out.exists()
    # real integers of any integer type still work
    bank = B.bank_from_arrays(
        target_name="t",
        labels=labels,
        features=feats,
        depths=[np.int16(3)],
        num_images=np.uint32(50),
        num_classes=np.int64(K),
    )
    assert bank.models[0].depth == 3 and bank.target.num_images == 50
