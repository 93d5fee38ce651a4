"""The preprocessings: the runtime's NumPy twin against their ONNX definition (onnxruntime, OpenVINO)
and `slim` against TensorFlow's own ops, on tall, wide, odd, tiny and huge images."""

import dataclasses
import json

import numpy as np
import onnxruntime as ort
import pytest
from conftest import require_module
from PIL import Image

from onnx_mobilenets import DEFAULT_PREPROCESSING, OnnxMobileNet, preprocessing
from onnx_mobilenets.conversion.preprocessing_graph import preprocessing_model
from onnx_mobilenets.preprocessing import QUANTIZED_PREPROCESSING

# (height, width): tall, wide, odd, square, tiny, one pixel, lines, sides just around R * 2^k, huge.
SHAPES = [(375, 500), (500, 375), (1200, 1600), (333, 777), (777, 333), (224, 224), (256, 256), (255, 257),
          (448, 449), (447, 448), (97, 131), (5, 7), (1, 1), (1, 300), (300, 1), (2, 2), (31, 1000), (1000, 31),
          (129, 128), (640, 480), (1080, 1920), (601, 599), (3000, 4000), (2049, 2050)]
RESOLUTIONS = (96, 224)
OPSET = 17


def _image(shape, seed):
    """A photo-like image: a smooth field with texture (noise alone would hide interpolation errors
    less well), deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    height, width = shape
    coarse = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), np.float32)
    field += rng.normal(0, 20, field.shape)
    return np.clip(field, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def graphs():
    """{(resolution, name, output): onnx model} of the ONNX definition: pixels, and uint8 input."""
    found = {}
    for resolution in RESOLUTIONS:
        for name in preprocessing.NAMES:
            found[resolution, name, "pixels"] = preprocessing_model(resolution, name, OPSET)
            found[resolution, name, "uint8"] = preprocessing_model(
                resolution, name, OPSET, dataclasses.replace(QUANTIZED_PREPROCESSING, name=name), output="images")
    return found


def _uint8(name):
    return dataclasses.replace(QUANTIZED_PREPROCESSING, name=name)


def test_the_twin_is_the_onnx_definition_in_onnxruntime(graphs):
    sessions = {key: ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
                for key, model in graphs.items()}
    worst = 0.0
    for seed, shape in enumerate(SHAPES):
        image = _image(shape, seed)
        for resolution in RESOLUTIONS:
            for name in preprocessing.NAMES:
                reference = sessions[resolution, name, "pixels"].run(None, {"image": image[None]})[0][0]
                ours = preprocessing.pixels(image, resolution, name)
                assert ours.shape == (resolution, resolution, 3) and ours.dtype == np.float32
                difference = float(np.abs(ours - reference).max())
                assert difference <= 1e-3, (shape, resolution, name, difference)
                worst = max(worst, difference)
                # uint8 networks: the very same pixels, also where a value sits at .5
                rounded = sessions[resolution, name, "uint8"].run(None, {"image": image[None]})[0][0]
                np.testing.assert_array_equal(preprocessing.network_input(image, resolution, _uint8(name)), rounded,
                                              err_msg=f"{shape} {resolution} {name}")
    assert worst > 0  # the twin is a separate computation, not the graph itself


def test_values_at_half_round_half_to_even_as_onnx_round_does():
    """512 x 512 crops to 448 = 2 x 224: each output is the mean of a 2 x 2 block. Columns of 0 and 1
    average to 0.5 and round to 0; columns of 2 and 3 to 2.5, which rounds to 2."""
    image = np.zeros((512, 512, 3), np.uint8)
    image[:, 1::2] = 1
    image[:, :, 1] += 2
    model = preprocessing_model(224, preprocessing.DEFAULT, OPSET, _uint8("default"), output="images")
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"image": image[None]})[0][0]
    ours = preprocessing.network_input(image, 224, _uint8("default"))
    np.testing.assert_array_equal(ours, reference)
    np.testing.assert_array_equal(preprocessing.pixels(image, 224)[0, 0], [0.5, 2.5, 0.5])
    np.testing.assert_array_equal(ours[0, 0], [0, 2, 0])


def test_the_twin_is_the_onnx_definition_in_openvino(graphs, tmp_path):
    openvino = require_module("openvino", "OpenVINO, an independent ONNX engine (the [verify] extra)")
    core = openvino.Core()
    for resolution in RESOLUTIONS:
        for name in preprocessing.NAMES:
            path = tmp_path / f"{resolution}_{name}.onnx"
            path.write_bytes(graphs[resolution, name, "pixels"].SerializeToString())
            compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            for seed, shape in enumerate(SHAPES[:12] + SHAPES[20:22]):
                image = _image(shape, seed)
                reference = np.asarray(compiled(image[None])[compiled.output(0)])[0]
                difference = float(np.abs(preprocessing.pixels(image, resolution, name) - reference).max())
                assert difference <= 1e-3, (shape, resolution, name, difference)


def test_slim_is_tensorflows_own_evaluation_preprocessing():
    """`slim` against TF-slim's ops on the same decoded pixels: tf.image.central_crop(0.875), then
    tf.compat.v1.image.resize_bilinear (align_corners=False, TF1's half_pixel_centers=False)."""
    import tensorflow as tf

    for seed, shape in enumerate(SHAPES):
        image = _image(shape, seed)
        for resolution in RESOLUTIONS:
            cropped = tf.image.central_crop(tf.image.convert_image_dtype(image, tf.float32), 0.875)
            resized = tf.compat.v1.image.resize_bilinear(cropped[tf.newaxis], [resolution, resolution],
                                                         align_corners=False)[0]
            reference = resized.numpy() * 255.0
            difference = float(np.abs(preprocessing.pixels(image, resolution, "slim") - reference).max())
            assert difference <= 0.05, (shape, resolution, difference)


def test_the_crops():
    # A 500x375 photo: a centred square for the default, each axis on its own for TF-slim (438x329).
    assert preprocessing.crop_box(500, 375, "default") == (85, 23, 414, 352)
    left, top, right, bottom = preprocessing.crop_box(500, 375, "slim")
    assert (right - left, bottom - top) == (438, 329) and (left, top) == (31, 23)
    assert preprocessing.crop_box(1, 1) == (0, 0, 1, 1)
    assert [preprocessing.block_factor(side, 224) for side in (100, 447, 448, 895, 896, 20000)] == [1, 1, 2, 2, 4, 64]
    with pytest.raises(ValueError, match="preprocessing must be one of default, slim"):
        preprocessing.crop_box(10, 10, "imagenet")


def test_the_runtime_applies_the_chosen_preprocessing(fixture_artifacts, fixtures):
    out, _ = fixture_artifacts
    path = fixtures / "images" / "elephant.jpg"  # 650x406: the two crops differ
    default = OnnxMobileNet(out / "mobilenet_v1_0.25_128.onnx", providers="cpu")
    slim = OnnxMobileNet(out / "mobilenet_v1_0.25_128.onnx", providers="cpu", preprocessing="slim")
    assert (default.preprocessing, slim.preprocessing) == ("default", "slim")
    image = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(default.preprocess(path)[0],
                                  preprocessing.network_input(image, 128, DEFAULT_PREPROCESSING))
    np.testing.assert_array_equal(slim.preprocess(path)[0], preprocessing.network_input(
        image, 128, dataclasses.replace(DEFAULT_PREPROCESSING, name="slim")))
    assert not np.array_equal(default.preprocess(path), slim.preprocess(path))
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        OnnxMobileNet(out / "mobilenet_v1_0.25_128.onnx", providers="cpu", preprocessing="inception")


def test_predict_and_evaluate_take_the_preprocessing(fixture_artifacts, fixtures, tmp_path, capsys):
    from onnx_mobilenets.cli import main as cli

    out, _ = fixture_artifacts
    model = str(out / "mobilenet_v1_0.25_128.onnx")
    folder = tmp_path / "val" / "n02130308"  # cheetah
    folder.mkdir(parents=True)
    (folder / "cheetah.jpg").write_bytes((fixtures / "images" / "cheetah.jpg").read_bytes())
    reports = {}
    for chosen in ("default", "slim"):
        assert cli(["evaluate", str(tmp_path / "val"), "--model", model, "--preprocessing", chosen, "--json"]) == 0
        reports[chosen] = json.loads(capsys.readouterr().out)
        assert reports[chosen]["preprocessing"] == chosen and reports[chosen]["top1"] == 1.0
        assert cli(["predict", str(fixtures / "images" / "elephant.jpg"), "--model", model, "--json",
                    "--preprocessing", chosen]) == 0
        reports[chosen, "predict"] = json.loads(capsys.readouterr().out)["results"][0]["predictions"]
    expected = {name: OnnxMobileNet(model, providers="cpu", preprocessing=name).predict(
        fixtures / "images" / "elephant.jpg")[0].probability for name in ("default", "slim")}
    for chosen in ("default", "slim"):
        assert reports[chosen, "predict"][0]["probability"] == pytest.approx(expected[chosen], abs=1e-9)
    assert expected["default"] != expected["slim"]
    assert cli(["evaluate", str(tmp_path / "val"), "--model", model]) == 0
    assert "default preprocessing" in capsys.readouterr().out
