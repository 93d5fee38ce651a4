"""The Keras MobileNets: every catalogue variant builds as TF-slim defines it."""

import numpy as np
import pytest
import slim_reference
from conftest import ALL_VARIANTS

from onnx_mobilenets import get_variant, list_variants
from onnx_mobilenets.conversion import MobileNet, MobileNetV2, build_variant, slim_variable_names
from onnx_mobilenets.conversion.mobilenet_v2 import make_divisible


def _published_count(model, family):
    """What the published parameter counts include (slim-facts): V2 conv kernels + logits,
    V1 the same plus BatchNorm gamma/beta; never the moving statistics."""
    count = 0
    for w in model.weights:
        if w.name in ("moving_mean", "moving_variance") or (family == "v2" and w.name in ("gamma", "beta")):
            continue
        count += int(np.prod(w.shape))
    return count


@ALL_VARIANTS  # the default model is the one the parity tests run: built once
@pytest.mark.parametrize("variant", list_variants(precision="float32"), ids=lambda v: v.name)
def test_every_variant_builds_with_published_size(random_weight_model, variant):
    model = random_weight_model(variant.name)
    assert model.input_shape == (None, variant.resolution, variant.resolution, 3)
    assert model.output_shape == (None, 1000)
    x = np.random.default_rng(0).uniform(-1, 1, (2, variant.resolution, variant.resolution, 3)).astype(np.float32)
    probs = model(x).numpy()
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs >= 0).all()
    # Every weight has a slim name, and the shape of that variable in a slim checkpoint (which has a
    # background class more: the loader drops it).
    assert _slim_shapes_of(model) == slim_reference.slim_shapes(variant.family, variant.alpha, classes=1000)
    # The published count is the 1001-class network's: one more class is one more logit filter.
    channels = model.get_layer(f"Mobilenet{variant.family.upper()}.Logits.Conv2d_1c_1x1").get_weights()[0].shape[2]
    count = _published_count(model, variant.family) + channels + 1
    assert abs(count / (variant.params_millions * 1e6) - 1) < 0.01, (count, variant.params_millions)


@pytest.mark.parametrize("name", ["mobilenet_v1_0.25_128", "mobilenet_v2_0.35_96"])
def test_classes_and_classifier_activation_build_as_asked(name):
    """The options work the same at every width; TF-slim's own 1001 classes, as logits."""
    variant = get_variant(name)
    model = build_variant(name, weights=None, classes=1001, classifier_activation=None)
    assert model.output_shape == (None, 1001)
    x = np.random.default_rng(0).uniform(-1, 1, (2, variant.resolution, variant.resolution, 3)).astype(np.float32)
    assert not np.allclose(model(x).numpy().sum(axis=1), 1.0), "classifier_activation=None must give logits"
    assert _slim_shapes_of(model) == slim_reference.slim_shapes(variant.family, variant.alpha, classes=1001)
    count = _published_count(model, variant.family)
    assert abs(count / (variant.params_millions * 1e6) - 1) < 0.01, (count, variant.params_millions)


def _slim_shapes_of(model) -> dict:
    """{slim variable name: shape} of a Keras model's weights, each weight named once."""
    names = slim_variable_names(model)
    assert len(names) == len(model.weights) == len(set(names.values()))
    return {names[w.path]: tuple(w.shape) for w in model.weights}


# Per-alpha channel counts of TF-slim V2 (stem; 17 block outputs; Conv_1), from the slim facts.
V2_CHANNELS = {
    0.35: (16, [8, 8, 8, 16, 16, 16, 24, 24, 24, 24, 32, 32, 32, 56, 56, 56, 112], 1280),
    0.5: (16, [8, 16, 16, 16, 16, 16, 32, 32, 32, 32, 48, 48, 48, 80, 80, 80, 160], 1280),
    0.75: (24, [16, 24, 24, 24, 24, 24, 48, 48, 48, 48, 72, 72, 72, 120, 120, 120, 240], 1280),
    1.0: (32, [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320], 1280),
    1.3: (40, [24, 32, 32, 40, 40, 40, 80, 80, 80, 80, 128, 128, 128, 208, 208, 208, 416], 1664),
    1.4: (48, [24, 32, 32, 48, 48, 48, 88, 88, 88, 88, 136, 136, 136, 224, 224, 224, 448], 1792),
}


@pytest.mark.parametrize("alpha", sorted(V2_CHANNELS))
def test_v2_channel_rounding_matches_slim(alpha):
    model = MobileNetV2((96, 96, 3), alpha=alpha)
    stem, blocks, head = V2_CHANNELS[alpha]
    assert model.get_layer("MobilenetV2.Conv").filters == stem
    got = [model.get_layer(f"MobilenetV2.expanded_conv{'_' + str(i) if i else ''}.project").filters for i in range(17)]
    assert got == blocks
    assert model.get_layer("MobilenetV2.Conv_1").filters == head
    # Residual adds exactly on the stride-1, equal-width blocks.
    adds = sorted(
        int(layer.name.split(".")[1].rsplit("_", 1)[-1]) for layer in model.layers if layer.name.endswith(".add")
    )
    assert adds == [2, 4, 5, 7, 8, 9, 11, 12, 14, 15]
    assert "MobilenetV2.expanded_conv.expand" not in {layer.name for layer in model.layers}


def test_make_divisible_rule():
    assert [make_divisible(v) for v in (11.2, 16, 20, 22.4, 41.6, 1280 * 1.4)] == [16, 16, 24, 24, 40, 1792]


def test_v1_width_truncates_with_min_depth_8():
    model = MobileNet((128, 128, 3), alpha=0.25)
    assert model.get_layer("MobilenetV1.Conv2d_0").filters == 8
    assert model.get_layer("MobilenetV1.Conv2d_13_pointwise").filters == 256
    model = MobileNet((128, 128, 3), alpha=0.3)  # int(32 * 0.3) = 9, int(64 * 0.3) = 19: truncation
    assert model.get_layer("MobilenetV1.Conv2d_0").filters == 9
    assert model.get_layer("MobilenetV1.Conv2d_1_pointwise").filters == 19


@pytest.mark.parametrize("builder", [MobileNet, MobileNetV2])
def test_non_square_and_odd_inputs(builder):
    model = builder((33, 47, 3), classes=10)
    out = model(np.zeros((1, 33, 47, 3), np.float32))
    assert out.shape == (1, 10)
    # TF SAME padding: 33 -> 17 -> ... (ceil(n / stride)), 47 -> 24 -> ...
    features = builder((33, 47, 3), include_top=False)
    assert features.output_shape == (None, 2, 2, features.output_shape[-1])


@pytest.mark.parametrize("builder", [MobileNet, MobileNetV2])
def test_headless_pooling_and_depth_multiplier(builder):
    model = builder((64, 64, 3), include_top=False, pooling="avg", depth_multiplier=2)
    assert len(model.output_shape) == 2
    dw = next(layer for layer in model.layers if "depthwise" in layer.name and hasattr(layer, "depth_multiplier"))
    assert dw.depth_multiplier == 2
    assert builder((64, 64, 3), include_top=False, pooling="max").output_shape == model.output_shape


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_shape": (31, 64, 3)}, "at least 32"),
        ({"input_shape": (64, 64, 1)}, r"\(height, width, 3\)"),
        ({"input_shape": (64, 64)}, r"\(height, width, 3\)"),
        ({"alpha": 0}, "alpha must be a positive number"),
        ({"alpha": "1.0"}, "alpha must be a positive number"),
        ({"depth_multiplier": 1.5}, "depth_multiplier must be a positive integer"),
        ({"pooling": "mean", "include_top": False}, "pooling must be"),
        ({"classes": 0}, "classes must be a positive integer"),
        ({"classes": 10, "weights": "v2"}, "classes must be 1000"),
        ({"classifier_activation": "relu"}, "classifier_activation"),
        ({"weights": "v1"}, "MobileNet V1; this builds a V2"),
        ({"weights": "mobilenet_v2_1.4_224"}, "need alpha=1.4"),
        ({"weights": "mobilenet_v2_9.9_224"}, "unknown MobileNet variant"),
        ({"weights": 3}, "weights must be None"),
    ],
)
def test_bad_arguments_are_refused_before_building(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MobileNetV2(**kwargs)


def test_expansion_factor_changes_inner_width():
    model = MobileNetV2((64, 64, 3), expansion_factor=4)
    assert model.get_layer("MobilenetV2.expanded_conv_1.expand").filters == make_divisible(16 * 4)
    with pytest.raises(ValueError, match="expansion_factor"):
        MobileNetV2(expansion_factor=-1)
