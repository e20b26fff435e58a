"""The tiny preset end to end: sources -> scratch + transfers -> probe banks -> export.

Real datasets, real training (a few epochs on a few hundred images), ~1-3 minutes on 2 cores,
most of it compiling the four architectures. Also checks the packaged example bank.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from parc_jax.bank import read_bank
from parc_jax.groundtruth.data import default_data_dir
from parc_jax.groundtruth.export import export_bank
from parc_jax.groundtruth.pipeline import (
    ORACLE_COLUMNS,
    read_csv,
    run_transfers,
    stage_datasets,
    train_sources,
)
from parc_jax.groundtruth.presets import get_preset
from parc_jax.groundtruth.probes import preset_probe, sample_probe
from parc_jax.groundtruth.report import summarize
from parc_jax.groundtruth.zoo import model_depth

EXAMPLE = Path(__file__).resolve().parents[1] / "parc_jax" / "data" / "example_bank.msgpack"
HAVE_DATA = (default_data_dir() / "coil20.npz").is_file()


def test_sample_probe_rules():
    labels = np.repeat(np.arange(10), 100)
    p = sample_probe(labels, size=500, seed=0)
    assert p.indices.size == 500 and np.unique(p.indices).size == 500
    assert np.bincount(p.labels).min() >= 2 and p.num_classes == 10
    assert np.array_equal(p.labels, labels[p.indices])
    small = sample_probe(labels[:30], size=500, seed=0)  # n = min(500, N)
    assert small.indices.size == 30
    many = np.repeat(np.arange(400), 3)  # 400 classes need 800 > 500 images at 2 each
    q = sample_probe(many, size=500, seed=1)
    assert q.num_classes == 250 and q.indices.size == 500
    assert np.bincount(q.labels, minlength=250).min() >= 2
    assert np.array_equal(q.classes[q.labels], many[q.indices])
    runs = [sample_probe(labels, size=200, seed=s).indices for s in range(5)]
    assert len({r.tobytes() for r in runs}) == 5
    assert np.array_equal(runs[0], sample_probe(labels, size=200, seed=0).indices)
    with pytest.raises(ValueError, match="labels"):
        sample_probe(np.zeros((3, 2), int))


def test_extract_probe_any_flax_model_into_bank(tmp_path):
    import flax.linen as nn
    import jax

    from parc_jax.bank import write_bank
    from parc_jax.groundtruth.probes import ProbeModel, extract_probe, probe_bank

    class Tiny(nn.Module):  # any Flax model giving (features, logits)
        @nn.compact
        def __call__(self, x):
            f = nn.tanh(nn.Dense(6)(x.reshape(x.shape[0], -1)))
            return f, nn.Dense(4)(f)

    model = Tiny()
    x = np.random.default_rng(0).normal(size=(37, 3, 3, 2)).astype(np.float32)
    variables = model.init(jax.random.key(0), x[:1])
    apply_fn = jax.jit(model.apply)
    feats, probs = extract_probe(apply_fn, variables, x, batch_size=16)
    f_ref, lo_ref = (np.asarray(a, np.float64) for a in model.apply(variables, x))
    np.testing.assert_allclose(feats, f_ref, rtol=1e-4, atol=1e-6)
    e = np.exp(lo_ref - lo_ref.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-7)
    _, p3 = extract_probe(apply_fn, variables, x, num_classes=3)
    assert p3.shape == (37, 3)
    np.testing.assert_allclose(p3.sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="num_classes"):
        extract_probe(apply_fn, variables, x, num_classes=9)

    labels = np.arange(37) % 3
    bank = probe_bank(
        target_name="toy",
        labels=labels,
        num_classes=3,
        models={
            "tiny/src": ProbeModel(feats, "tiny", probs, depth=2, source="src", source_images=100)
        },  # fmt: skip
        num_images=370,
        reference_features={"tiny": feats},
    )
    write_bank(tmp_path / "b.msgpack", bank)
    back = read_bank(tmp_path / "b.msgpack")
    m = back.models[0]
    assert (m.name, m.architecture, m.depth, m.source, m.source_images) == (
        "tiny/src",
        "tiny",
        2,
        "src",
        100,
    )
    assert back.target.num_images == 370 and back.target.n == 37


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_DATA, reason="needs ../shared/data")
def test_tiny_preset_end_to_end(tmp_path):
    from parc_jax.groundtruth.export import write_probe_banks

    # two of tiny's three sources: every stage runs (pool, sources, grid with extension,
    # scratch, references, banks, resume, report, export); the third only adds training time
    preset = dataclasses.replace(get_preset("tiny"), sources=("mnist", "usps"))
    run = tmp_path / "tiny"
    sources = train_sources(preset, run, progress=False)
    assert len(sources) == len(preset.sources) * len(preset.architectures)
    for row in sources:
        assert 0.0 <= float(row["test_accuracy"]) <= 100.0
    src_acc = {r["source"]: float(r["test_accuracy"]) for r in sources
               if r["architecture"] == "alexnet"}  # fmt: skip
    assert src_acc["usps"] > 50.0  # 10 classes: well above chance

    oracle = run_transfers(preset, run, progress=False)
    assert tuple(read_csv(run / "oracle.csv")[0]) == ORACLE_COLUMNS
    keys = {(r["architecture"], r["source"], r["target"]) for r in oracle}
    assert keys == set(preset.transfers()) and len(oracle) == len(keys)
    majority = 100.0 * 18 / 360  # coil20 test is balanced
    accs = np.array([float(r["accuracy"]) for r in oracle])
    assert (accs > majority).mean() >= 0.75
    # The grid: the preset's rates, extended by at most lr_extend on a side; every rate
    # tried is a grid.csv row with its status, and the chosen one is among them.
    grid = read_csv(run / "grid.csv")
    assert {r["status"] for r in grid} <= {"ok", "collapsed", "diverged"}
    for r in oracle:
        tried = sorted(
            float(g["lr"]) for g in grid
            if (g["architecture"], g["source"], g["target"])
            == (r["architecture"], r["source"], r["target"])
        )  # fmt: skip
        assert set(preset.finetune_lrs) <= set(tried)
        assert len(tried) <= len(preset.finetune_lrs) + 2 * preset.lr_extend
        assert float(r["lr"]) in tried
    assert len(read_csv(run / "scratch.csv")) == len(preset.architectures)
    assert len(read_csv(run / "pretrain.csv")) == len(preset.architectures)
    refs = read_csv(run / "references.csv")
    assert len(refs) == len(preset.architectures)
    for r in refs:  # the scratch run, then one doubling: two points on the curve
        assert len(r["val_curve"].split()) == 2 and r["converged"] in ("0", "1")
    assert not list((run / "ckpt").rglob("*.ckpt"))  # finished runs leave no checkpoints

    banks = write_probe_banks(preset, run, progress=False)
    assert len(banks) == 1
    bank = read_bank(banks[0])
    ds = stage_datasets(preset, ["coil20"], role="target")["coil20"]
    probe = preset_probe(preset, ds, 0)
    assert bank.target.n == probe.indices.size == preset.probe_size
    assert np.array_equal(bank.target.labels, probe.labels)
    assert bank.target.num_images == len(ds.train)
    assert set(bank.target.reference_features) == set(preset.architectures)
    assert {m.name for m in bank.models} == {f"{a}/{s}" for a, s, _ in preset.transfers()}
    for m in bank.models:
        assert m.depth == model_depth(m.architecture)
        assert m.source in preset.sources and m.source_images > 0
        assert m.probs.shape == (bank.target.n, 10)  # source classes, not the padded head
        np.testing.assert_allclose(m.probs.sum(axis=1), 1.0, atol=1e-5)
        assert np.isfinite(m.features).all() and m.features.std() > 0

    # Resumable: a second pass over finished stages changes nothing and trains nothing.
    before = (run / "oracle.csv").read_bytes()
    assert len(run_transfers(preset, run, progress=False)) == len(oracle)
    assert (run / "oracle.csv").read_bytes() == before
    assert write_probe_banks(preset, run, progress=False) == []

    refs_npz = np.load(banks[0].with_suffix(".scratch_refs.npz"))
    assert set(refs_npz.files) == set(preset.architectures)

    report = summarize(preset, run)
    assert "coil20" in report["targets"] and "| coil20 |" in report["markdown"]
    names = [c["name"] for c in report["sanity"]["checks"]]
    assert "every target's worst transfer >= majority + 5" in names
    assert "### Sanity checks" in report["markdown"]
    out = export_bank(run, "coil20", tmp_path / "example.msgpack")
    small = read_bank(tmp_path / "example.msgpack")
    assert all(m.features.dtype == np.float16 for m in small.models)
    assert all("oracle_accuracy" in m.meta for m in out.models)


@pytest.mark.skipif(not EXAMPLE.is_file(), reason="example bank not generated")
def test_packaged_example_bank():
    bank = read_bank(EXAMPLE)
    preset = get_preset("tiny")
    assert EXAMPLE.stat().st_size < 3_000_000
    assert bank.target.name == "coil20" and 200 <= bank.target.n <= 500
    assert bank.target.num_images and set(bank.target.reference_features) == set(
        preset.architectures
    )
    archs = {m.architecture for m in bank.models}
    assert archs == set(preset.architectures)
    assert len(bank.models) == len(preset.sources) * len(preset.architectures)
    for m in bank.models:
        # as export_bank writes today (float16 probabilities since 8f43cdd): not a stale file
        assert m.features.dtype == np.float16 and m.probs.dtype == np.float16
        assert m.probs is not None and m.depth and m.source and m.source_images
        assert 0.0 <= m.meta["oracle_accuracy"] <= 100.0
