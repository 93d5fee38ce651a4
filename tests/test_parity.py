"""Cross-runtime parity: Keras vs onnxruntime-CPU for every catalogue variant (random weights) and
for the fixture checkpoints (real weights, real images); NHWC vs NCHW; batch 1 vs batch N; CPU vs
CUDA where a CUDA provider binds. All under the float32 bound of `onnx_mobilenets.parity`. And proof
that the conversion gate catches real bugs on its golden inputs alone: one perturbed weight, rows
and columns swapped, BatchNorm epsilon 1e-5 instead of 1e-3 in one layer, ReLU instead of ReLU6 in
one layer (a tampered logit bias is in test_export.py)."""


import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ALL_VARIANTS, FIXTURE_NAMES, PRINTED, fixture_image_batch, require

from onnx_mobilenets import ConversionError, get_variant, list_variants
from onnx_mobilenets.conversion import build_variant
from onnx_mobilenets.conversion import export as export_module
from onnx_mobilenets.conversion.export import export_onnx
from onnx_mobilenets.conversion.weights import randomize_weights
from onnx_mobilenets.parity import check, parity_inputs, tolerance_for
from onnx_mobilenets.runtime.providers import create_session


def _logits_and_probabilities_session(path, providers="cpu"):
    """A session on the artifact that also returns the logits (the Softmax input)."""
    model = onnx.load(str(path))
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    model.graph.output.append(onnx.helper.make_tensor_value_info(softmax.input[0], onnx.TensorProto.FLOAT, None))
    return create_session(model.SerializeToString(), providers)


def _run(session, inputs):
    probabilities, logits = session.run(None, {"images": inputs})
    return logits, probabilities


def assert_parity(keras_model, session, inputs, family):
    """Keras and onnxruntime agree within the float32 bound on logits and probabilities, same top-1;
    and each sample run alone gives what it gives in the batch."""
    tolerance = tolerance_for(family)
    # Keras's logits and its own softmax's probabilities, from one forward pass
    both = keras.Model(keras_model.inputs[0], [export_module.logits_model(keras_model).output, keras_model.output])
    keras_logits, keras_probs = (np.asarray(x) for x in both(inputs))
    logits, probs = _run(session, inputs)
    for output, values, reference in (("logits", logits, keras_logits), ("probabilities", probs, keras_probs)):
        result = check(keras_logits, values, output, tolerance, reference=reference)
        assert result.passed, (output, result)
    np.testing.assert_array_equal(logits.argmax(1), keras_logits.argmax(1))
    alone = np.concatenate([_run(session, inputs[i:i + 1])[0] for i in range(len(inputs))])
    assert check(logits, alone, "logits", tolerance).passed
    np.testing.assert_array_equal(alone.argmax(1), logits.argmax(1))


def _inputs(fixtures, resolution):
    """8 deterministic inputs with realistic image statistics (a different seed from the converter's
    own gate) plus the two real fixture photographs."""
    return np.concatenate([parity_inputs(resolution, count=8, seed=2024), fixture_image_batch(fixtures, resolution)])


@ALL_VARIANTS
def test_convert_all_writes_every_variant(random_artifacts):
    import json

    manifest = json.loads((random_artifacts / "manifest.json").read_text())["artifacts"]
    assert sorted(manifest) == sorted(v.name for v in list_variants(precision="float32"))
    for entry in manifest.values():
        assert (random_artifacts / entry["file"]).stat().st_size == entry["size"]
        assert entry["random_weights"] is True and entry["opset"] == 17
        assert entry["parity"]["logits"]["headroom"] > 1 and entry["parity"]["log_probabilities"]["headroom"] > 1


@ALL_VARIANTS
@pytest.mark.parametrize("variant", list_variants(precision="float32"), ids=lambda v: v.name)
def test_keras_and_onnxruntime_cpu_agree_on_every_variant(random_artifacts, random_weight_model, fixtures, variant):
    session = _logits_and_probabilities_session(random_artifacts / f"{variant.name}.onnx")
    assert_parity(random_weight_model(variant.name), session, _inputs(fixtures, variant.resolution), variant.family)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_keras_and_onnxruntime_cpu_agree_on_real_weights(fixture_artifacts, fixtures, name):
    out, _ = fixture_artifacts
    model = build_variant(name, weights=fixtures / "checkpoints" / f"{name}.tgz")
    session = _logits_and_probabilities_session(out / f"{name}.onnx")
    assert_parity(model, session, _inputs(fixtures, get_variant(name).resolution), get_variant(name).family)


def test_nhwc_and_nchw_exports_agree(tmp_path, fixtures):
    model = build_variant("mobilenet_v2_0.5_128", weights=None)
    randomize_weights(model, seed=3)
    export_onnx(model, tmp_path / "nhwc.onnx")
    export_onnx(model, tmp_path / "nchw.onnx", nchw=True)
    inputs = _inputs(fixtures, 128)
    nhwc = _run(_logits_and_probabilities_session(tmp_path / "nhwc.onnx"), inputs)
    nchw = _run(
        _logits_and_probabilities_session(tmp_path / "nchw.onnx"), np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))
    )
    assert check(nhwc[0], nchw[0], "logits", tolerance_for("v2")).passed
    assert check(nhwc[0], nchw[1], "probabilities", tolerance_for("v2"), reference=nhwc[1]).passed
    np.testing.assert_array_equal(nchw[0].argmax(1), nhwc[0].argmax(1))


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_onnxruntime_cpu_and_cuda_agree(fixture_artifacts, fixtures, name):
    """Wherever onnxruntime offers CUDA; one that is offered and does not bind fails the test."""
    require("CUDAExecutionProvider" in ort.get_available_providers(),
            f"onnxruntime's CUDAExecutionProvider (providers here: {ort.get_available_providers()})", ci_has_it=False)
    out, _ = fixture_artifacts
    inputs = _inputs(fixtures, get_variant(name).resolution)
    cpu = _run(_logits_and_probabilities_session(out / f"{name}.onnx", "cpu"), inputs)
    cuda = _run(_logits_and_probabilities_session(out / f"{name}.onnx", "cuda"), inputs)
    gpu = tolerance_for(get_variant(name).family, "gpu")
    assert check(cpu[0], cuda[0], "logits", gpu).passed
    assert check(cpu[0], cuda[1], "probabilities", gpu, reference=cpu[1]).passed


def _keras_bug(layer, change=None, weight_delta=None):
    """A bug in one layer of the Keras network that gets converted (the gate's reference stays
    correct): a changed layer setting (`change`, e.g. {"epsilon": 1e-5}) or one kernel weight moved
    (`weight_delta`: (index, delta))."""
    def convert_buggy(real_convert, logits_model, *args):
        def clone(original):
            config = original.get_config()
            if original.name == layer and change:
                config.update(change)
            return original.__class__.from_config(config)

        buggy = keras.models.clone_model(logits_model, clone_function=clone)
        buggy.set_weights(logits_model.get_weights())
        if weight_delta:
            index, delta = weight_delta
            kernel = buggy.get_layer(layer).kernel
            value = kernel.numpy()
            value[index] += delta
            kernel.assign(value)
        return real_convert(buggy, *args)

    return "_convert", convert_buggy


def _relu_instead_of_relu6(layer):
    """The exported graph's Clip for `layer` loses its upper bound: ReLU instead of ReLU6."""
    def simplify_buggy(real_simplify, proto):
        real_simplify(proto)
        clip = next(n for n in proto.graph.node if n.op_type == "Clip" and f"{layer}_1/" in n.name)
        unbounded = onnx.numpy_helper.from_array(np.array(np.finfo(np.float32).max, np.float32), "unbounded_max")
        proto.graph.initializer.append(unbounded)
        clip.input[2] = unbounded.name

    return "simplify_graph", simplify_buggy


# Each bug in a layer where it changes the network's output on the golden inputs: a BatchNorm whose
# variance is comparable to epsilon (the two below move the output least of all the fixtures'
# BatchNorms), a ReLU6 whose inputs exceed 6 there. (A ReLU6 that never sees an input above 6
# computes exactly what a ReLU does: no test on those inputs can tell them apart.)
BUGS = {
    "v1-one-weight": ("mobilenet_v1_0.25_128", _keras_bug("MobilenetV1.Conv2d_7_pointwise",
                                                          weight_delta=((0, 0, 5, 17), 0.05))),
    "v1-epsilon": ("mobilenet_v1_0.25_128", _keras_bug("MobilenetV1.Conv2d_0.BatchNorm", {"epsilon": 1e-5})),
    "v2-epsilon": ("mobilenet_v2_1.0_224", _keras_bug("MobilenetV2.expanded_conv_5.project.BatchNorm",
                                                      {"epsilon": 1e-5})),
    "v1-relu": ("mobilenet_v1_0.25_128", _relu_instead_of_relu6("MobilenetV1.Conv2d_12_pointwise.relu6")),
    "v2-relu": ("mobilenet_v2_1.0_224", _relu_instead_of_relu6("MobilenetV2.expanded_conv_7.expand.relu6")),
}


@pytest.mark.parametrize("bug", BUGS)
def test_the_gate_catches_a_bug_in_one_layer(tmp_path, fixtures, fixture_artifacts, monkeypatch, bug):
    name, (function, buggy) = BUGS[bug]
    model = build_variant(name, weights=fixtures / "checkpoints" / f"{name}.tgz")
    real = getattr(export_module, function)
    monkeypatch.setattr(export_module, function, lambda *args: buggy(real, *args))
    with pytest.raises(ConversionError) as info:
        export_onnx(model, tmp_path / "buggy.onnx")  # the golden inputs alone: no parity images
    assert info.value.gate == "parity" and "exceeds its bound" in str(info.value) and "over 8 inputs" in str(info.value)
    assert not (tmp_path / "buggy.onnx").exists()
    # The same network without the bug passes: its conversion, that of the fixture artifacts.
    sound = fixture_artifacts[1][name].parity
    assert sound["logits"]["headroom"] is None or sound["logits"]["headroom"] > 1
    keras.backend.clear_session()


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
    assert info.value.gate == "parity" and "exceeds its bound" in str(info.value)
    assert not (tmp_path / "swapped.onnx").exists()


def test_parity_session_helper_sees_the_logits(fixture_artifacts):
    out, _ = fixture_artifacts
    session = _logits_and_probabilities_session(out / "mobilenet_v1_0.25_128.onnx")
    logits, probs = _run(session, parity_inputs(128, count=2))
    z = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(z / z.sum(1, keepdims=True), probs, atol=1e-6)
    assert logits.shape == (2, 1000)


@ALL_VARIANTS
def test_verify_passes_on_every_variant_in_every_engine(random_artifacts, record_property):
    """`verify` against each artifact's golden record, on onnxruntime and the independent engines
    installed here (CI installs OpenVINO and OpenCV with the [verify] extra)."""
    from onnx_mobilenets.cli.engines import OpenCv, OpenVino, engines_here
    from onnx_mobilenets.cli.verify import format_table, verify_artifact

    for engine in (OpenVino(), OpenCv()):
        require(engine.unavailable() is None, f"{engine.name} (the [verify] extra; .ci/run installs it)")
    engines = engines_here()  # one process per independent engine for all 38, as `verify --all` runs them
    try:
        rows = [row for path in sorted(random_artifacts.glob("*.onnx"))
                for row in verify_artifact(path, use_keras=False, engines=engines)]
    finally:
        for engine in engines:
            engine.close()
    ran = [r for r in rows if r.status != "skipped"]
    for runtime in ("onnxruntime-CPU", "OpenVINO-CPU", "OpenCV-DNN"):
        assert len({r.artifact for r in ran if r.runtime == runtime}) == 38, runtime
    assert all(r.status == "pass" for r in ran), format_table([r for r in ran if r.status != "pass"])
    for r in rows:  # only the GPU providers this onnxruntime does not offer may be skipped
        assert r.status != "skipped" or "offers no" in r.note, r
    headroom = {}
    for r in ran:
        headroom[r.runtime] = min(headroom.get(r.runtime, float("inf")), r.headroom or float("inf"))
    record_property(PRINTED, "verify on the 38 random-weight artifacts, smallest headroom per engine: "
                    + ", ".join(f"{k} {v:.0f}x" for k, v in headroom.items()))
