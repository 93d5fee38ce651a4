"""ONNX export: every gate, names, dynamic batch, metadata, node census, and the convert command."""

import copy
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import FIXTURE_NAMES, IMAGES, assert_top5_matches, fixture_image_batch

from onnx_mobilenets import ConversionError, get_variant
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.conversion import build_variant
from onnx_mobilenets.conversion import export as export_module
from onnx_mobilenets.conversion.artifact import check_census, check_structure, node_census
from onnx_mobilenets.conversion.export import CLEAN_OPS, export_onnx
from onnx_mobilenets.conversion.weights import randomize_weights
from onnx_mobilenets.labels import imagenet_classes
from onnx_mobilenets.parity import check, parity_inputs, parity_pixels, tolerance_for


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _metadata(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_artifacts_give_expected_top5_in_onnxruntime(fixture_artifacts, fixtures, expected, name):
    out, reports = fixture_artifacts
    session = _session(out / f"{name}.onnx")
    probs = session.run(["probabilities"], {"images": fixture_image_batch(fixtures, get_variant(name).resolution)})[0]
    for image, p in zip(IMAGES, probs):
        assert_top5_matches(p, expected[name][image])
    parity = reports[name].parity
    assert parity["inputs"] == 10  # 8 parity inputs + 2 real images
    for kind in ("logits", "log_probabilities"):
        assert parity[kind]["max_abs_diff"] < parity[kind]["bound"] and parity[kind]["headroom"] > 1
    assert parity["top1_agreement"] == 1.0
    assert parity["tolerance"]["depth"] == (28 if "v1" in name else 53)


def test_fixture_artifact_metadata(fixture_artifacts, fixtures):
    out, reports = fixture_artifacts
    meta = _metadata(out / "mobilenet_v2_1.0_224.onnx")
    assert meta["variant"] == "mobilenet_v2_1.0_224" and meta["family"] == "v2"
    assert meta["alpha"] == "1.0" and meta["resolution"] == "224" and meta["opset"] == "17"
    assert meta["output"] == "probabilities" and meta["classes"] == "1000"
    prep = json.loads(meta["preprocessing"])
    assert prep == {"name": "default", "version": 1, "dtype": "float32", "scale": 1 / 127.5, "offset": -1.0,
                    "channel_order": "RGB", "layout": "NHWC", "image_input": False}
    labels = json.loads(meta["labels"])
    assert len(labels) == 1000 and labels[386] == ["n02504458", "African elephant"] and labels[0][0] == "n01440764"
    assert [tuple(item) for item in labels] == list(imagenet_classes())
    weights = json.loads(meta["weights"])
    assert weights["random"] is False and weights["weights_source"] == "ema"
    assert weights["source"].endswith("mobilenet_v2_1.0_224.tgz") and len(weights["sha256"]) == 64
    assert weights["variables_from_ema"] > 0 and weights["variables_raw"] == 0
    versions = json.loads(meta["versions"])
    assert set(versions) == {"onnx_mobilenets", "tensorflow", "tf2onnx", "onnx"}
    assert json.loads(meta["parity"]) == reports["mobilenet_v2_1.0_224"].parity
    golden = json.loads(meta["golden"])
    assert golden["shape"] == [8, 1000] and golden["values"] == "logits"
    manifest = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert set(manifest) == set(FIXTURE_NAMES)
    entry = manifest["mobilenet_v2_1.0_224"]
    assert entry["file"] == "mobilenet_v2_1.0_224.onnx" and entry["opset"] == 17 and entry["random_weights"] is False
    assert entry["sha256"] == reports["mobilenet_v2_1.0_224"].sha256
    assert entry["size"] == (out / "mobilenet_v2_1.0_224.onnx").stat().st_size


# Random-weight variants: V1 and V2, alphas 0.25..1.4, several resolutions, opsets 13..18, NHWC and NCHW.
CASES = [
    ("mobilenet_v1_0.25_128", dict(opset=13)),
    ("mobilenet_v1_0.5_160", dict(opset=17, nchw=True)),
    ("mobilenet_v1_1.0_224", dict(opset=18, logits=True)),
    ("mobilenet_v2_0.35_96", dict(opset=13, nchw=True, logits=True)),
    ("mobilenet_v2_0.75_192", dict(opset=15)),
    ("mobilenet_v2_1.4_224", dict(opset=17)),
]


@pytest.mark.parametrize(
    "name, options", CASES, ids=[c[0] + "-" + "-".join(f"{k}{v}" for k, v in c[1].items()) for c in CASES]
)
def test_random_weight_exports_pass_every_gate(tmp_path, name, options):
    variant = get_variant(name)
    model = build_variant(name, weights=None)
    randomize_weights(model, seed=1)
    path = tmp_path / f"{name}.onnx"
    report = export_onnx(model, path, variant=variant, weights={"random": True}, **options)
    opset, nchw, logits = options["opset"], options.get("nchw", False), options.get("logits", False)
    R = variant.resolution

    proto = onnx.load(str(path))
    check_structure(proto, opset)  # the gates hold for the file as written
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", opset)]
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "images" and dims == (["batch", 3, R, R] if nchw else ["batch", R, R, 3])
    assert out.name == ("logits" if logits else "probabilities")
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 1000]

    census = node_census(proto)
    assert census == report.census
    assert census.get("Transpose", 0) == (0 if nchw else 1)
    assert not {"BatchNormalization", "Pad", "Identity", "Dropout", "Mul", "Reshape"} & set(census)
    assert census["GlobalAveragePool"] == 1 and census["Squeeze"] == 1 and census["Gemm"] == 1
    assert census["Conv"] == (27 if variant.family == "v1" else 52)
    assert census["Clip"] == (27 if variant.family == "v1" else 35)
    assert ("Softmax" in census) != logits
    for node in proto.graph.node:
        if node.op_type == "Conv":
            assert len(node.input) == 3, "BatchNorm must be folded into a Conv bias"

    # Dynamic batch: 1 and 7 give the Keras answers, per sample.
    session = _session(path)
    x = parity_inputs(R, count=7, seed=5)
    feed = np.transpose(x, (0, 3, 1, 2)) if nchw else x
    keras_out = model(x).numpy() if not logits else export_module.logits_model(model)(x).numpy()
    full = session.run(None, {"images": np.ascontiguousarray(feed)})[0]
    single = session.run(None, {"images": np.ascontiguousarray(feed[:1])})[0]
    assert full.shape == (7, 1000) and single.shape == (1, 1000)
    keras_logits = export_module.logits_model(model)(x).numpy()
    tolerance = tolerance_for(variant.family)
    assert check(keras_logits, full, "logits" if logits else "probabilities", tolerance, reference=keras_out).passed
    np.testing.assert_allclose(single[0], full[0], atol=1e-6)

    meta = _metadata(path)
    assert meta["opset"] == str(opset) and json.loads(meta["preprocessing"])["layout"] == ("NCHW" if nchw else "NHWC")
    assert json.loads(meta["weights"])["random"] is True
    assert proto.doc_string.startswith("UNTRAINED RANDOM WEIGHTS")


def _canonical(proto) -> bytes:
    """The graph with tf2onnx's numbered names replaced by their order of appearance and the
    initializers in that order (tf2onnx numbers names per process, and orders initializers as
    a set iterates); without the doc string, which names the traced function, numbered too."""
    proto = copy.deepcopy(proto)
    graph, names = proto.graph, {}
    assert graph.doc_string.startswith("converted from b'__inference_forward_")
    graph.doc_string = ""

    def canonical(name):
        return names.setdefault(name, f"v{len(names)}") if name else name

    for value in (*graph.input, *graph.output):
        value.name = canonical(value.name)
    for node in graph.node:
        node.name = ""
        node.input[:] = [canonical(n) for n in node.input]
        node.output[:] = [canonical(n) for n in node.output]
    for initializer in graph.initializer:
        initializer.name = canonical(initializer.name)
    ordered = sorted((copy.deepcopy(i) for i in graph.initializer), key=lambda i: int(i.name[1:]))
    del graph.initializer[:]
    graph.initializer.extend(ordered)
    return proto.SerializeToString()


@pytest.mark.parametrize("name, opset, output, nchw", [("mobilenet_v2_0.35_96", 13, "logits", True),
                                                       ("mobilenet_v1_0.25_128", 18, "probabilities", False)])
def test_our_freezing_gives_the_graph_tf2onnx_freezing_gives(name, opset, output, nchw, monkeypatch):
    """The export freezes the traced model itself (`export._frozen_graph_def`, with private TensorFlow
    internals, to skip work): the ONNX graph must be the one tf2onnx's own `from_function` makes,
    and so must the fallback for a TensorFlow without those internals."""
    import tf2onnx

    model = build_variant(name, weights=None)
    randomize_weights(model, seed=2)
    head, resolution = export_module.logits_model(model), get_variant(name).resolution
    ours = export_module._convert(head, resolution, opset, output, nchw)
    forward = export_module.traced(head, resolution, output, nchw)
    theirs, _ = tf2onnx.convert.from_function(forward, input_signature=forward.input_signature, opset=opset)
    theirs = export_module.tidy(theirs, output)
    assert len(ours.graph.node) == len(theirs.graph.node) > 50
    assert _canonical(ours) == _canonical(theirs)
    monkeypatch.setattr(export_module, "CONVERTER_INTERNALS", ("_not_in_this_tensorflow",))
    assert _canonical(export_module._convert(head, resolution, opset, output, nchw)) == _canonical(theirs)


def test_tampered_weight_is_caught_by_the_parity_gate(tmp_path, monkeypatch):
    model = build_variant("mobilenet_v2_0.35_96", weights=None)
    randomize_weights(model, seed=2)
    real_simplify = export_module.simplify_graph

    def tamper(proto):
        real_simplify(proto)
        from onnx import numpy_helper

        logits_gemm = next(n for n in proto.graph.node if n.op_type == "Gemm")
        init = next(i for i in proto.graph.initializer if i.name == logits_gemm.input[2])
        bias = numpy_helper.to_array(init).copy()
        bias[123] += 0.01  # one number of one layer: class 123's logit moves by 0.01
        init.CopyFrom(numpy_helper.from_array(bias, init.name))

    monkeypatch.setattr(export_module, "simplify_graph", tamper)
    path = tmp_path / "broken.onnx"
    with pytest.raises(ConversionError) as info:
        export_onnx(model, path)
    assert info.value.gate == "parity" and "max |logit difference| 0.01 exceeds its bound" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing written


def _tiny_model(nodes, inputs, outputs, opset=17, domain_imports=()):
    graph = onnx.helper.make_graph(nodes, "g", inputs, outputs)
    imports = [onnx.helper.make_opsetid("", opset)] + [onnx.helper.make_opsetid(d, 1) for d in domain_imports]
    return onnx.helper.make_model(graph, opset_imports=imports)


def _vi(name, dims):
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims)


def test_structural_gates_name_the_problem():
    ok = _tiny_model([onnx.helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["batch", 4])], [_vi("y", ["batch", 4])])
    check_structure(ok, 17)
    with pytest.raises(ConversionError, match=r"\[opset\].*expected only the default domain at 13"):
        check_structure(ok, 13)
    unknown = _tiny_model([onnx.helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["n", 4])], [_vi("y", ["n", 4])])
    with pytest.raises(ConversionError, match=r"\[shapes\].*dimension 0 is unknown \(n\)"):
        check_structure(unknown, 17)
    custom = _tiny_model([onnx.helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["batch", 4])],
                         [_vi("y", ["batch", 4])], domain_imports=("com.example",))
    with pytest.raises(ConversionError, match=r"\[opset\]"):
        check_structure(custom, 17)
    newer = _tiny_model([onnx.helper.make_node("Gelu", ["x"], ["y"])], [_vi("x", ["batch", 4])],
                        [_vi("y", ["batch", 4])], opset=20)
    with pytest.raises(ConversionError, match=r"\[(checker|opset)\]"):
        check_structure(newer, 17)
    broken = _tiny_model(
        [onnx.helper.make_node("Relu", ["missing"], ["y"])], [_vi("x", ["batch", 4])], [_vi("y", ["batch", 4])]
    )
    with pytest.raises(ConversionError, match=r"\[checker\]"):
        check_structure(broken, 17)
    with pytest.raises(ConversionError, match=r"\[graph\].*Pad"):
        check_census({"Conv": 3, "Pad": 1}, CLEAN_OPS, range(2))
    with pytest.raises(ConversionError, match=r"\[graph\].*2 Transpose"):
        check_census({"Conv": 3, "Transpose": 2}, CLEAN_OPS, range(2))


def test_export_refuses_bad_arguments(tmp_path):
    from onnx_mobilenets.conversion import MobileNet

    model = MobileNet((64, 64, 3), alpha=0.25)
    with pytest.raises(ValueError, match="opset must be an integer from 13 to 18"):
        export_onnx(model, tmp_path / "m.onnx", opset=12)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", opset=19)
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(model, tmp_path / "m.pb")
    with pytest.raises(ValueError, match="fixed square input"):
        export_onnx(MobileNet((64, 96, 3), alpha=0.25), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="no classifier head"):
        export_onnx(MobileNet((64, 64, 3), alpha=0.25, include_top=False, pooling="avg"), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_convert_command(tmp_path, fixtures, capsys):
    out = tmp_path / "out"
    assert (
        cli(["convert", "mobilenet_v1_0.25_128", "--random-weights", "--output", str(out), "--opset", "15", "--nchw"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "gates passed" in printed and "nodes: Clip 27, Conv 27, Gemm 1" in printed and "RANDOM WEIGHTS" in printed
    meta = _metadata(out / "mobilenet_v1_0.25_128.onnx")
    assert json.loads(meta["weights"])["warning"].startswith("UNTRAINED RANDOM WEIGHTS")
    entry = json.loads((out / "manifest.json").read_text())["artifacts"]["mobilenet_v1_0.25_128"]
    assert entry["opset"] == 15 and entry["layout"] == "NCHW" and entry["random_weights"] is True

    # A failing conversion (a 0.25 checkpoint for an alpha-0.5 variant) leaves no .onnx behind.
    bad = cli(
        [
            "convert",
            "mobilenet_v1_0.5_128",
            "--checkpoint",
            str(fixtures / "checkpoints" / "mobilenet_v1_0.25_128.tgz"),
            "--output",
            str(out),
        ]
    )
    assert bad == 1
    assert "alpha 0.25" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "mobilenet_v1_0.25_128.onnx"]
    assert cli(["convert", "--all", "--checkpoint", "x.tgz"]) == 2
    assert cli(["convert"]) == 2
    assert cli(["convert", "mobilenet_v9"]) == 2


@pytest.mark.parametrize("name, image_input", [("mobilenet_v1_0.25_128", False), ("mobilenet_v1_0.25_128", True),
                                               ("mobilenet_v1_0.25_128_quant", False)],
                         ids=["tensor", "image-in", "uint8"])
def test_a_fixed_batch_is_a_static_input_shape(tmp_path, fixtures, name, image_input):
    """A spec with a fixed batch makes an artifact whose input and output shapes are fully static
    (the image-in input keeps any height and width), recorded as ``batch`` and named ``-bN``; its
    gates feed it that many inputs at a time."""
    from onnx_mobilenets.artifact import ArtifactSpec, Weights, read_record
    from onnx_mobilenets.conversion.artifact import export_artifact
    from onnx_mobilenets.conversion.export import KerasGraph
    from onnx_mobilenets.conversion.quantized import TfliteGraph

    variant = get_variant(name)
    if variant.quantized:
        tarball = fixtures / "checkpoints" / f"{name}.tgz"
        maker = TfliteGraph(variant, tarball, str(tarball))
    else:
        model = build_variant(name, weights=None)
        randomize_weights(model, seed=1)
        maker = KerasGraph(model, variant, Weights.untrained(1))
    spec = ArtifactSpec.of_variant(name, batch=3, image_input=image_input)
    report = export_artifact(maker, spec, spec.path_in(tmp_path))
    assert report.path == str(tmp_path / f"{name}{'-image' if image_input else ''}-b3.onnx")
    proto = onnx.load(report.path)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ([3, "height", "width", 3] if image_input else [3, 128, 128, 3])
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == [3, 1000]
    record = read_record(report.path)
    assert record.spec == spec and _metadata(report.path)["batch"] == "3"
    assert record.parity["inputs"] == 8  # the golden inputs, 3 at a time (the last three padded)
    session = _session(report.path)
    feed = (np.zeros((3, 150, 170, 3), np.uint8) if image_input
            else parity_pixels(128, count=3) if variant.quantized else parity_inputs(128, count=3))
    assert session.run(None, {inp.name: feed})[0].shape == (3, 1000)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {inp.name: feed[:1]})
