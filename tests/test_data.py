"""Datasets: splits, caps, resizing, normalisation, augmentation, and the TFDS path."""

import numpy as np
import pytest

from parc_jax.data import (
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
    from parc_jax.tfds_data import build_npz_tfds, tfds_arrays

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
