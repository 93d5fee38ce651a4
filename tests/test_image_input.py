"""Image-in artifacts: the preprocessing as the model's first ops, its input the decoded image of any
size. They pass the gates, run through OnnxMobileNet, answer what the tensor artifacts answer, and
pass `verify` in every engine here (or the row says why not); an engine that crashes is a row."""

import json
import os

import numpy as np
import onnx
import pytest
from conftest import FIXTURE_NAMES, IMAGES, QUANT_FIXTURES, require_module
from PIL import Image

from onnx_mobilenets import OnnxMobileNet, get_variant
from onnx_mobilenets.cli import engines
from onnx_mobilenets.cli.verify import verify_artifact
from onnx_mobilenets.parity import parity_images

# The image-in artifacts `converted` makes are shared with test_web.py: one worker makes them.
pytestmark = pytest.mark.xdist_group("image_in")

# (variant, preprocessing, the fixture tarball)
CASES = [(name, "default", f"{name}.tgz") for name in FIXTURE_NAMES] + [
    ("mobilenet_v1_0.25_128", "slim", "mobilenet_v1_0.25_128.tgz")] + [
    (name, "default", tarball) for name, tarball in QUANT_FIXTURES.items()]


@pytest.fixture(scope="module")
def image_artifacts(converted):
    """{(variant, preprocessing): (image-in artifact, tensor artifact recording the same preprocessing)}."""
    return {(name, chosen): (str(converted(name, chosen, image_input=True)), str(converted(name, chosen)))
            for name, chosen, _ in CASES}


def _photos(fixtures):
    """The fixture photographs, and photo-like images of odd sizes (tall, wide, tiny)."""
    photos = [np.asarray(Image.open(fixtures / "images" / n).convert("RGB")) for n in IMAGES]
    cheetah = Image.fromarray(photos[1])
    return photos + [np.asarray(cheetah.resize(size)) for size in ((97, 300), (640, 123), (31, 17))]


@pytest.mark.parametrize("name, chosen", [(c[0], c[1]) for c in CASES])
def test_the_artifact_takes_decoded_images_and_records_what_is_inside(image_artifacts, name, chosen):
    image_in, _ = image_artifacts[name, chosen]
    model = onnx.load(image_in)
    (source,) = model.graph.input
    assert source.name == "image" and source.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in source.type.tensor_type.shape.dim] == ["batch", "height", "width", 3]
    meta = {p.key: p.value for p in model.metadata_props}
    record = json.loads(meta["preprocessing"])
    assert record["image_input"] is True and record["name"] == chosen
    assert record["dtype"] == ("uint8" if get_variant(name).quantized else "float32")
    ops = {n.op_type for n in model.graph.node}
    assert {"Resize", "Slice"} <= ops and ("ReduceMean" in ops) == (chosen == "default")
    parity = json.loads(meta["parity"])["image_input"]
    assert parity["inputs"] == 8  # images of 8 sizes
    suffix = "-image" + ("" if chosen == "default" else "-slim")
    assert os.path.basename(image_in) == f"{name}{suffix}.onnx"


@pytest.mark.parametrize("name, chosen", [(c[0], c[1]) for c in CASES])
def test_image_in_answers_what_the_tensor_artifact_answers(image_artifacts, fixtures, name, chosen):
    image_in, tensor = (OnnxMobileNet(path, providers="cpu") for path in image_artifacts[name, chosen])
    assert image_in.input_contract.image_input and not tensor.input_contract.image_input
    photos = _photos(fixtures)
    ours, theirs = image_in.predict_proba(photos), tensor.predict_proba(photos)  # different sizes in one call
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))
    if get_variant(name).quantized:  # the same uint8 pixels, so the same integer arithmetic
        np.testing.assert_array_equal(ours, theirs)
    else:
        np.testing.assert_allclose(ours, theirs, atol=1e-5)
    stream = [r.predictions[0].class_index for r in image_in.predict_stream(photos, batch_size=2)]
    assert stream == list(theirs.argmax(1))
    same_size = np.stack([photos[0]] * 3)
    assert image_in.preprocess(same_size).shape == (3, *photos[0].shape)  # the decoded images themselves
    with pytest.raises(ValueError, match="images of one size"):
        image_in.preprocess(photos[:2])
    with pytest.raises(ValueError, match=r"decoded images, uint8 \(N, H, W, 3\)"):
        image_in.run(np.zeros((1, 50, 50, 3), np.float32))
    with pytest.raises(ValueError, match="holds its preprocessing"):
        other = "slim" if chosen == "default" else "default"
        OnnxMobileNet(image_artifacts[name, chosen][0], providers="cpu", preprocessing=other)


def test_verify_runs_image_in_artifacts_in_every_engine(image_artifacts):
    """Images of many sizes in every engine; one that cannot run image-in artifacts right (OpenCV)
    gets a skipped row saying so."""
    require_module("openvino", "OpenVINO (the [verify] extra)")
    require_module("cv2", "OpenCV (the [verify] extra)")
    for (name, chosen), (image_in, _) in image_artifacts.items():
        rows = {r.runtime: r for r in verify_artifact(image_in, use_keras=not get_variant(name).quantized)}
        for runtime in ("onnxruntime-CPU", "OpenVINO-CPU"):
            assert rows[runtime].status == "pass", rows[runtime]
        opencv = rows["OpenCV-DNN"]
        assert opencv.status == "pass" or (opencv.status == "skipped" and "image-in" in opencv.note), opencv
        assert rows["onnxruntime-CPU"].artifact == f"{name}-image" + ("" if chosen == "default" else "-slim")
        if not get_variant(name).quantized:
            assert rows["keras"].status == "pass"


def test_verify_fails_a_tampered_image_in_artifact(image_artifacts, tmp_path):
    image_in, _ = image_artifacts["mobilenet_v1_0.25_128", "default"]
    model = onnx.load(image_in)
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    bias = next(i for i in model.graph.initializer if i.name == gemm.input[2])
    values = onnx.numpy_helper.to_array(bias).copy()
    values[10] += 0.5
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    rows = {r.runtime: r for r in verify_artifact(tmp_path / "bad.onnx", use_keras=False)}
    assert rows["onnxruntime-CPU"].status == "fail"
    if "OpenVINO-CPU" in rows and rows["OpenVINO-CPU"].status != "skipped":
        assert rows["OpenVINO-CPU"].status == "fail"


class _Crashing(engines.IsolatedEngine):
    """An engine whose native code kills its process on every model."""

    name, module, label = "Crashing", "numpy", "Crashing"

    def compute(self, path, feeds):
        os.abort()


def test_an_engine_that_crashes_is_a_failed_row_and_verify_goes_on(image_artifacts):
    crashing = _Crashing()
    _, tensor = image_artifacts["mobilenet_v1_0.25_128", "default"]
    try:
        for _ in range(2):  # after a crash the engine starts a new process
            rows = verify_artifact(tensor, use_keras=False, engines=[crashing, engines.OnnxRuntime("cpu")])
            assert rows[0].runtime == "Crashing" and rows[0].status == "fail"
            assert "process died" in rows[0].note
            assert rows[1].runtime == "onnxruntime-CPU" and rows[1].status == "pass"
    finally:
        crashing.close()


def test_golden_images_have_many_sizes():
    images = parity_images(128)
    assert len(images) == 8 and len({im.shape for im in images}) == 8
    assert all(64 <= min(im.shape[:2]) and max(im.shape[:2]) <= 384 for im in images)
    np.testing.assert_array_equal(images[3], parity_images(128)[3])  # deterministic
