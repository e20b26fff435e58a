"""Datasets: splits, caps, resizing, normalisation, augmentation, and the TFDS path."""

import numpy as np
import pytest

from parc_jax.groundtruth.data import (
    augment,
    carve_validation,
    check_arrays,
    default_data_dir,
    load_dataset,
    load_npz,
    resize_images,
    stratified_subset,
)

pytestmark = pytest.mark.skipif(
    not (default_data_dir() / "usps.npz").is_file(), reason="needs ../shared/data"
)


def test_stratified_subset_proportions_and_coverage():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), [100, 50, 30, 10, 2])
    idx = stratified_subset(labels, 40, rng)
    assert idx.size == 40 and np.unique(idx).size == 40
    counts = np.bincount(labels[idx], minlength=5)
    assert (counts >= 1).all()
    assert counts[0] >= 20 and counts[0] > counts[1] > counts[2]
    assert np.array_equal(stratified_subset(labels, 500, rng), np.arange(labels.size))
    again = stratified_subset(labels, 40, np.random.default_rng(0))
    assert np.array_equal(idx, again)


def test_stratified_subset_more_classes_than_slots():
    labels = np.arange(20)
    idx = stratified_subset(labels, 7, np.random.default_rng(1))
    assert idx.size == 7 and np.unique(labels[idx]).size == 7


def test_carve_validation_disjoint_stratified_capped():
    labels = np.repeat(np.arange(4), [40, 20, 2, 1])
    train, val = carve_validation(labels, fraction=0.1, max_size=None, rng=np.random.default_rng(0))
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(labels.size))
    assert list(np.bincount(labels[val], minlength=4)) == [4, 2, 1, 0]
    train, val = carve_validation(labels, fraction=0.5, max_size=5, rng=np.random.default_rng(0))
    assert val.size == 5
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(labels.size))


def test_load_dataset_shapes_normalisation_and_splits():
    raw = load_npz("usps")
    ds = load_dataset("usps", image_size=16, val_fraction=0.1, max_val=300, seed=0)
    assert ds.num_classes == 10 and ds.image_size == 16
    assert ds.train.images.shape[1:] == (16, 16, 3) and ds.train.images.dtype == np.float32
    assert len(ds.val) == 300
    assert len(ds.train) + len(ds.val) == raw["y_train"].size
    assert len(ds.test) == raw["y_test"].size
    # Grey -> identical channels; statistics of the full training split applied.
    assert np.array_equal(ds.train.images[..., 0], ds.train.images[..., 2])
    allx = np.concatenate([ds.train.images, ds.val.images]).astype(np.float64)
    np.testing.assert_allclose(allx.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(allx.std(axis=(0, 1, 2)), 1.0, rtol=1e-4)
    # Pixels are the file's, rescaled: usps is already 16x16, so no resampling.
    x0 = raw["x_train"].astype(np.float64) / 255.0
    recovered = allx[..., 0].astype(np.float64) * ds.std[0] + ds.mean[0]
    assert np.isin(np.round(recovered * 255).astype(int), np.arange(256)).all()
    assert np.isclose(recovered.mean(), x0.mean(), atol=1e-4)
    # Validation images are not in training: compare pixel rows as bytes.
    tr = {r.tobytes() for r in ds.train.images.reshape(len(ds.train), -1)}
    dup_free = sum(r.tobytes() in tr for r in ds.val.images.reshape(len(ds.val), -1))
    assert dup_free <= 3  # usps has a few duplicate images across the file itself


def test_load_dataset_caps_and_determinism():
    a = load_dataset("coil20", image_size=16, max_train=200, max_test=100, max_val=40, seed=0)
    b = load_dataset("coil20", image_size=16, max_train=200, max_test=100, max_val=40, seed=0)
    c = load_dataset("coil20", image_size=16, max_train=200, max_test=100, max_val=40, seed=1)
    assert len(a.train) == 200 and len(a.test) == 100 and len(a.val) == 40
    assert np.bincount(a.train.labels, minlength=20).min() >= 1
    assert np.array_equal(a.train.images, b.train.images)
    assert np.array_equal(a.val.labels, b.val.labels)
    assert not np.array_equal(a.train.images, c.train.images)
    assert a.flip and not load_dataset("usps", max_train=50, max_test=20, max_val=10).flip


def test_resize_matches_triangle_filter_reference():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(3, 32, 32, 1), dtype=np.uint8)
    out = resize_images(img, 16)
    assert out.shape == (3, 16, 16, 3)
    # Independent reference: antialiased linear downscaling by 2 is a separable triangle
    # filter of half-width 2 input pixels centred at 2i + 0.5, renormalised at the borders.
    x = img[..., 0].astype(np.float64) / 255.0
    w = np.zeros((16, 32))
    for i in range(16):
        for j in range(32):
            w[i, j] = max(0.0, 1.0 - abs(j - (2 * i + 0.5)) / 2.0)
    w /= w.sum(axis=1, keepdims=True)
    ref = np.einsum("ij,bjk,lk->bil", w, x, w)
    np.testing.assert_allclose(out[..., 0], ref, atol=1e-5)
    const = np.full((2, 28, 28, 3), 77, np.uint8)
    np.testing.assert_allclose(resize_images(const, 16), 77 / 255.0, atol=1e-6)


def test_augment_shift_and_flip():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 3)).astype(np.float32)
    assert np.array_equal(augment(x, rng, pad=0, flip=False), x)
    out = augment(x, np.random.default_rng(1), pad=2, flip=False)
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    for b in range(8):
        crops = [padded[b, i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
        assert any(np.array_equal(out[b], c) for c in crops)
    flipped = augment(x, np.random.default_rng(2), pad=0, flip=True)
    same = [np.array_equal(flipped[b], x[b]) for b in range(64)]
    mirrored = [np.array_equal(flipped[b], x[b, :, ::-1]) for b in range(64)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 10 < sum(mirrored) < 54


def test_bad_inputs():
    with pytest.raises(ValueError, match="name"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("usps", image_size=4)
    with pytest.raises(ValueError, match="max_train"):
        load_dataset("usps", max_train=0)
    with pytest.raises(ValueError, match="x_train"):
        check_arrays(
            {"x_train": np.zeros((3, 4, 4)), "y_train": np.zeros(3, int),
             "x_test": np.zeros((1, 4, 4, 1), np.uint8), "y_test": np.zeros(1, int)}
        )  # fmt: skip


def test_tfds_builder_roundtrip(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("array_record")
    from parc_jax.groundtruth.tfds_data import build_npz_tfds, tfds_arrays

    raw = load_npz("coil20")
    rng = np.random.default_rng(0)
    tr = rng.choice(raw["y_train"].size, 120, replace=False)
    te = rng.choice(raw["y_test"].size, 40, replace=False)
    small = {"x_train": raw["x_train"][tr], "y_train": raw["y_train"][tr],
             "x_test": raw["x_test"][te], "y_test": raw["y_test"][te]}  # fmt: skip
    manual = tmp_path / "manual"
    manual.mkdir()
    np.savez(manual / "coil20.npz", **small)
    path = build_npz_tfds("coil20", manual_dir=manual, data_dir=tmp_path / "tfds")
    assert any(p.name.endswith(".array_record-00000-of-00001") for p in path.iterdir())
    back = tfds_arrays("parc_npz_images/coil20", data_dir=tmp_path / "tfds")
    for split in ("train", "test"):
        x, y = back[f"x_{split}"], back[f"y_{split}"]
        assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 1)

        def key(xs, ys):
            return sorted((int(yy), xx.tobytes()) for xx, yy in zip(xs, ys, strict=True))

        assert key(x, y) == key(small[f"x_{split}"], small[f"y_{split}"])
    ds = load_dataset("coil20", arrays=back, image_size=16, max_val=20)
    assert ds.num_classes <= 20 and len(ds.train) + len(ds.val) == 120


def test_stratified_subset_long_tail():
    labels = np.array([0, 1, 2, 3] + [4] * 100)
    idx = stratified_subset(labels, 50, np.random.default_rng(0))
    assert idx.size == 50 and np.unique(idx).size == 50
    counts = np.bincount(labels[idx], minlength=5)
    assert (counts >= 1).all() and counts[4] == 46
    assert np.array_equal(idx, stratified_subset(labels, 50, np.random.default_rng(0)))
    # one big class and many tiny ones (the load_dataset(max_train=...) walkthrough)
    labels = np.repeat(np.arange(41), [3000] + [3] * 40)
    for size in (41, 42, 100, 1000, 3100):
        idx = stratified_subset(labels, size, np.random.default_rng(size))
        counts = np.bincount(labels[idx], minlength=41)
        assert idx.size == size and np.unique(idx).size == size
        assert (counts >= 1).all() and (counts <= np.bincount(labels)).all()
        assert counts[0] >= counts[1:].max()
    small = stratified_subset(labels, 30, np.random.default_rng(0))  # fewer slots than classes
    assert small.size == 30 and np.unique(labels[small]).size == 30


def test_load_dataset_long_tail_max_train():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(41), [3000] + [3] * 40)
    arrays = {"x_train": rng.integers(0, 255, (y.size, 8, 8, 1), dtype=np.uint8), "y_train": y,
              "x_test": np.zeros((41, 8, 8, 1), np.uint8), "y_test": np.arange(41)}  # fmt: skip
    ds = load_dataset("long_tail", arrays=arrays, image_size=8, max_train=1000, max_val=50)
    assert len(ds.train) == 1000
    assert np.unique(ds.train.labels).size == 41


def test_tfds_record_order():
    from parc_jax.groundtruth.tfds_data import INDEX_KEY, _file_order

    recs = [{"label": 5, INDEX_KEY: 2}, {"label": 3, INDEX_KEY: 0}, {"label": 4, INDEX_KEY: 1}]
    assert [r["label"] for r in _file_order(recs)] == [3, 4, 5]
    plain = [{"label": 5}, {"label": 3}]  # a catalogue dataset: record order kept
    assert _file_order(plain) == plain
    with pytest.raises(ValueError, match="index"):
        _file_order([{INDEX_KEY: 0}, {INDEX_KEY: 0}])


def test_tfds_same_splits_as_npz(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("array_record")
    from parc_jax.groundtruth.tfds_data import build_npz_tfds, tfds_arrays

    raw = load_npz("orl")
    manual = tmp_path / "manual"
    manual.mkdir()
    np.savez(manual / "orl.npz", **raw)
    build_npz_tfds("orl", manual_dir=manual, data_dir=tmp_path / "tfds")
    back = tfds_arrays("parc_npz_images/orl", data_dir=tmp_path / "tfds")
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(back[k], raw[k]), k
    a = load_dataset("orl", arrays=back, image_size=16, max_val=100)
    b = load_dataset("orl", image_size=16, max_val=100)
    assert np.array_equal(a.val.images, b.val.images)


def test_tfds_not_prepared_message(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    from parc_jax.groundtruth.tfds_data import tfds_arrays

    with pytest.raises(FileNotFoundError, match="not prepared at") as info:
        tfds_arrays("mnist", data_dir=tmp_path)
    assert "\n" not in str(info.value) and "already prepared" not in str(info.value)


def _script(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_throughput_validates_before_measuring(tmp_path, monkeypatch, capsys):
    mt = _script("measure_throughput")

    def boom(*args, **kwargs):
        raise AssertionError("measured before validating the arguments")

    monkeypatch.setattr(mt, "measure_throughput", boom)
    (tmp_path / "afile").write_text("x")
    bad = [
        ["--steps", "0"],
        ["--steps", "-1"],
        ["--preset", "huge"],
        ["--data-dir", str(tmp_path / "nodata")],
        ["--json", str(tmp_path / "afile" / "x.json")],
        ["--json", str(tmp_path)],
    ]
    for argv in bad:
        with pytest.raises(SystemExit) as info:
            mt.main(argv)
        assert info.value.code == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and "error:" in err, argv
    with pytest.raises(SystemExit):
        mt.main(["--help"])
    assert "predict the wall time" in capsys.readouterr().out


def test_measure_throughput_writes_json_atomically(tmp_path, monkeypatch):
    import json

    mt = _script("measure_throughput")
    rate = {"train_ips": 100.0, "eval_ips": 400.0, "compile_train_s": 1.0, "compile_eval_s": 0.5}
    monkeypatch.setattr(mt, "measure_throughput", lambda arch, **kw: dict(rate))
    work = {"sources": {"train": 1000, "eval": 400}}
    monkeypatch.setattr(mt, "preset_workload", lambda preset, data_dir=None: work)
    calls = []
    real = mt.write_text
    monkeypatch.setattr(mt, "write_text", lambda p, t, **kw: (calls.append(p), real(p, t, **kw)))
    out = tmp_path / "sub" / "x.json"
    assert mt.main(["--preset", "tiny", "--steps", "1", "--json", str(out)]) == 0
    assert calls == [str(out)]
    got = json.loads(out.read_text())
    from parc_jax.groundtruth.presets import get_preset

    assert got["workload"] == work and set(got["rates"]) == set(get_preset("tiny").architectures)
    assert got["predicted_s"]["sources"] > 0


def test_run_transfers_checks_sources_first(tmp_path, monkeypatch, capsys):
    rt = _script("run_transfers")

    def boom(*args, **kwargs):
        raise AssertionError("trained before checking the source models")

    monkeypatch.setattr(rt, "stage_main", boom)
    with pytest.raises(SystemExit) as info:
        rt.main(["--preset", "tiny", "--run-dir", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "missing source model" in err and "Traceback" not in err
    # all present: hands over to the stage
    from parc_jax.groundtruth.presets import get_preset

    preset = get_preset("tiny")
    for arch in preset.architectures:
        for src in preset.sources:
            p = tmp_path / "sources" / arch / f"{src}.msgpack"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")
    seen = []
    monkeypatch.setattr(rt, "stage_main", lambda stage, argv=None: seen.append((stage, argv)) or 0)
    assert rt.main(["--preset", "tiny", "--run-dir", str(tmp_path)]) == 0
    assert seen == [("transfers", ["--preset", "tiny", "--run-dir", str(tmp_path)])]
