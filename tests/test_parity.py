"""Cross-runtime parity: Keras vs onnxruntime-CPU for every catalogue variant (random weights) and
for the fixture checkpoints (real weights, real images); NHWC vs NCHW; batch 1 vs batch N; CPU vs
CUDA where a CUDA provider binds. And proof that the checks catch real discrepancies."""

import os
import subprocess
import sys

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import FIXTURE_NAMES, fixture_image_batch
from onnx_mobilenets import ConversionError, get_variant, list_variants
from onnx_mobilenets.conversion import build_variant
from onnx_mobilenets.conversion import export as export_module
from onnx_mobilenets.conversion.export import export_onnx
from onnx_mobilenets.conversion.weights import randomize_weights
from onnx_mobilenets.parity import parity_inputs
from onnx_mobilenets.runtime.providers import create_session

LOGIT_TOLERANCE = 1e-4
PROBABILITY_TOLERANCE = 1e-5
CUDA_PROBABILITY_TOLERANCE = 1e-4


def _logits_and_probabilities_session(path, providers="cpu"):
    """A session on the artifact that also returns the logits (the Softmax input)."""
    model = onnx.load(str(path))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    model.graph.output.append(onnx.helper.make_tensor_value_info(softmax.input[0], onnx.TensorProto.FLOAT, None))
    return create_session(model.SerializeToString(), providers)


def _run(session, inputs):
    probabilities, logits = session.run(None, {"images": inputs})
    return logits, probabilities


def assert_parity(keras_model, session, inputs):
    """Keras and onnxruntime agree: logits within 1e-4, probabilities within 1e-5, same top-1;
    and each sample run alone gives what it gives in the batch."""
    keras_logits = export_module._logits_model(keras_model)(inputs).numpy()
    keras_probs = keras_model(inputs).numpy()
    logits, probs = _run(session, inputs)
    assert np.abs(logits - keras_logits).max() <= LOGIT_TOLERANCE, np.abs(logits - keras_logits).max()
    assert np.abs(probs - keras_probs).max() <= PROBABILITY_TOLERANCE, np.abs(probs - keras_probs).max()
    np.testing.assert_array_equal(logits.argmax(1), keras_logits.argmax(1))
    alone = np.concatenate([_run(session, inputs[i:i + 1])[0] for i in range(len(inputs))])
    np.testing.assert_allclose(alone, logits, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(alone.argmax(1), logits.argmax(1))


def _inputs(fixtures, resolution):
    """8 deterministic inputs with realistic image statistics (a different seed from the converter's
    own gate) plus the two real fixture photographs."""
    return np.concatenate([parity_inputs(resolution, count=8, seed=2024), fixture_image_batch(fixtures, resolution)])


@pytest.fixture(scope="module")
def random_artifacts(tmp_path_factory):
    """`onnx-mobilenets convert --all --random-weights`, exactly as a user runs it."""
    out = tmp_path_factory.mktemp("all_variants")
    env = dict(os.environ, ONNX_MOBILENETS_HOME=str(tmp_path_factory.mktemp("cache")))
    result = subprocess.run([sys.executable, "-m", "onnx_mobilenets.cli", "convert", "--all", "--random-weights",
                             "--output", str(out)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("gates passed") == 38
    return out


def test_convert_all_writes_every_variant(random_artifacts):
    import json

    manifest = json.loads((random_artifacts / "manifest.json").read_text())["artifacts"]
    assert sorted(manifest) == sorted(v.name for v in list_variants())
    for name, entry in manifest.items():
        assert (random_artifacts / entry["file"]).stat().st_size == entry["size"]
        assert entry["random_weights"] is True and entry["opset"] == 17
        assert entry["parity"]["max_abs_diff_logits"] <= LOGIT_TOLERANCE


@pytest.mark.parametrize("variant", list_variants(), ids=lambda v: v.name)
def test_keras_and_onnxruntime_cpu_agree_on_every_variant(random_artifacts, fixtures, variant):
    model = build_variant(variant.name, weights=None)
    randomize_weights(model, seed=0)  # what --random-weights uses
    session = _logits_and_probabilities_session(random_artifacts / f"{variant.name}.onnx")
    assert_parity(model, session, _inputs(fixtures, variant.resolution))
    keras.backend.clear_session()


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_keras_and_onnxruntime_cpu_agree_on_real_weights(fixture_artifacts, fixtures, name):
    out, _ = fixture_artifacts
    model = build_variant(name, weights=fixtures / "checkpoints" / f"{name}.tgz")
    session = _logits_and_probabilities_session(out / f"{name}.onnx")
    assert_parity(model, session, _inputs(fixtures, get_variant(name).resolution))


def test_nhwc_and_nchw_exports_agree(tmp_path, fixtures):
    model = build_variant("mobilenet_v2_0.5_128", weights=None)
    randomize_weights(model, seed=3)
    export_onnx(model, tmp_path / "nhwc.onnx")
    export_onnx(model, tmp_path / "nchw.onnx", nchw=True)
    inputs = _inputs(fixtures, 128)
    nhwc = _run(_logits_and_probabilities_session(tmp_path / "nhwc.onnx"), inputs)
    nchw = _run(_logits_and_probabilities_session(tmp_path / "nchw.onnx"), np.ascontiguousarray(inputs.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(nchw[0], nhwc[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(nchw[1], nhwc[1], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(nchw[0].argmax(1), nhwc[0].argmax(1))


def _cuda_binds() -> str:
    """'' when a CUDA provider binds here, else the reason it does not."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"onnxruntime offers no CUDAExecutionProvider here (providers: {ort.get_available_providers()})"
    from onnx_mobilenets.runtime.doctor import probe_model

    try:
        create_session(probe_model(), "cuda")
    except Exception as e:
        return f"the CUDA provider does not bind: {e}"
    return ""


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_onnxruntime_cpu_and_cuda_agree(fixture_artifacts, fixtures, name):
    reason = _cuda_binds()
    if reason:
        pytest.skip(reason)
    out, _ = fixture_artifacts
    inputs = _inputs(fixtures, get_variant(name).resolution)
    cpu = _run(_logits_and_probabilities_session(out / f"{name}.onnx", "cpu"), inputs)
    cuda = _run(_logits_and_probabilities_session(out / f"{name}.onnx", "cuda"), inputs)
    assert np.abs(cpu[1] - cuda[1]).max() <= CUDA_PROBABILITY_TOLERANCE
    np.testing.assert_array_equal(cpu[0].argmax(1), cuda[0].argmax(1))


def test_parity_check_catches_one_perturbed_weight(fixture_artifacts, fixtures):
    out, _ = fixture_artifacts
    name = "mobilenet_v1_0.25_128"
    model = build_variant(name, weights=fixtures / "checkpoints" / f"{name}.tgz")
    session = _logits_and_probabilities_session(out / f"{name}.onnx")
    inputs = _inputs(fixtures, 128)
    assert_parity(model, session, inputs)  # sound as exported
    weight = model.get_layer("MobilenetV1.Conv2d_7_pointwise").kernel
    value = weight.numpy()
    value[0, 0, 5, 17] += 0.05  # one weight, of one of 28 layers
    weight.assign(value)
    with pytest.raises(AssertionError):
        assert_parity(model, session, inputs)


def test_export_with_a_wrong_input_layout_is_caught(tmp_path, monkeypatch):
    """A layout bug that keeps the shapes valid (rows and columns swapped) fails the parity gate."""
    real_convert = export_module._convert

    def convert_with_swapped_axes(logits_model, *args):
        inputs = keras.Input(logits_model.input_shape[1:])
        swapped = keras.Model(inputs, logits_model(keras.ops.transpose(inputs, (0, 2, 1, 3))))
        return real_convert(swapped, *args)

    monkeypatch.setattr(export_module, "_convert", convert_with_swapped_axes)
    model = build_variant("mobilenet_v1_0.25_128", weights=None)
    randomize_weights(model, seed=4)
    with pytest.raises(ConversionError) as info:
        export_onnx(model, tmp_path / "swapped.onnx")
    assert info.value.gate == "parity"
    assert not (tmp_path / "swapped.onnx").exists()


def test_parity_session_helper_sees_the_logits(fixture_artifacts):
    out, _ = fixture_artifacts
    session = _logits_and_probabilities_session(out / "mobilenet_v1_0.25_128.onnx")
    logits, probs = _run(session, parity_inputs(128, count=2))
    z = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(z / z.sum(1, keepdims=True), probs, atol=1e-6)
    assert logits.shape == (2, 1000)
