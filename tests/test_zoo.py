"""Zoo: depth tiers, output shapes, features are the penultimate layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from parc_jax.groundtruth.zoo import (
    ARCHITECTURES,
    count_params,
    init_variables,
    make_model,
    model_depth,
)

EXPECTED_DEPTH = {"alexnet": 8, "resnet14": 14, "resnet26": 26, "mixer": 18}
FEATURES = {"alexnet": 8, "resnet14": 4, "resnet26": 4, "mixer": 4}  # x width


def _shapes(model, size):
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return variables, out


def _counted_layers(params) -> int:
    """Conv/dense kernels on the main path: every kernel except 1x1 projection shortcuts."""
    n = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = jax.tree_util.keystr(path)
        if name.endswith("['kernel']"):
            is_projection = len(leaf.shape) == 4 and leaf.shape[:2] == (1, 1)
            n += 0 if is_projection else 1
    return n


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_depth_shapes_and_layer_count(arch):
    width, k = 8, 13
    model = make_model(arch, num_classes=k, width=width)
    assert model.depth == EXPECTED_DEPTH[arch] == model_depth(arch)
    variables, (feats, logits) = _shapes(model, 16)
    assert feats.shape == (2, FEATURES[arch] * width)
    assert logits.shape == (2, k)
    # The recorded depth is the number of conv + dense layers on the longest path.
    assert _counted_layers(variables["params"]) == model.depth
    assert "head" in variables["params"]
    assert ("batch_stats" in variables) == (arch != "mixer")


def test_depth_tiers_are_ordered():
    depths = [model_depth(a) for a in ARCHITECTURES]
    assert depths == [8, 14, 26, 18]
    assert len(set(depths)) == 4


@pytest.mark.parametrize("arch", ["alexnet", "mixer"])
def test_logits_are_head_of_features(arch):
    model = make_model(arch, num_classes=5, width=4)
    variables = init_variables(model, 0, image_size=16)
    x = jax.random.normal(jax.random.key(1), (3, 16, 16, 3))
    feats, logits = model.apply(variables, x, train=False)
    head = variables["params"]["head"]
    expected = np.asarray(feats) @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-4, atol=1e-5)
    assert count_params(variables) > 0


def test_init_is_deterministic_and_seeded():
    model = make_model("mixer", num_classes=5, width=4)
    a = init_variables(model, 3, image_size=16)
    b = init_variables(model, 3, image_size=16)
    c = init_variables(model, 4, image_size=16)
    leaves = jax.tree_util.tree_leaves
    assert all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b), strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(c), strict=True))


def test_bad_arguments():
    with pytest.raises(ValueError, match="architecture"):
        make_model("vgg", num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        make_model("alexnet", num_classes=0)
    with pytest.raises(ValueError, match="width"):
        make_model("alexnet", num_classes=3, width=0)
    with pytest.raises(ValueError, match="image_size"):
        init_variables(make_model("mixer", num_classes=3), 0, image_size=2)
