"""float16 artifacts (`convert --float16`, `onnx_mobilenets.conversion.float16`): half the size,
float32 in and out, judged by the float16 bound (`parity.tolerance_for(..., float16=True)`) by the
conversion gate and by `verify`, and a broken precision conversion is caught."""

import copy
import dataclasses
import json
import warnings

import numpy as np
import onnx
import pytest
from conftest import FIXTURE_NAMES, PRINTED, assert_top5_matches
from onnx import TensorProto, numpy_helper

from onnx_mobilenets import ConversionError, OnnxMobileNet
from onnx_mobilenets.artifact import judge, read_record
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.conversion.float16 import check_float16, to_float16
from onnx_mobilenets.parity import FLOAT16_UNIT_ROUNDOFF
from onnx_mobilenets.sessions import new_session

# On the two fixture photographs the float16 artifacts' probabilities move by at most 0.004 from the
# float32 ones (measured); 0.01 still keeps every expected top-5 class in its place (their
# probabilities are at least 0.03 apart) and catches a conversion that is off by more than rounding.
FLOAT16_PROBABILITY_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def halves(converted):
    """{fixture name: (its float16 artifact, its float32 one)}."""
    return {name: (converted(name, float16=True), converted(name)) for name in FIXTURE_NAMES}


def test_a_float16_artifact_is_half_the_size_and_keeps_the_top5(halves, fixtures, expected, record_property):
    lines = ["", "float16 artifacts against float32 (parity gate, log-probabilities; size):"]
    for name, (half, full) in halves.items():
        record = read_record(half)
        assert record.spec.float16 and half.name == f"{name}-fp16.onnx" and record.spec.precision == "float32"
        ratio = half.stat().st_size / full.stat().st_size
        assert 0.45 < ratio < 0.56, ratio  # the weights halve; the labels and golden record do not
        proto = onnx.load(str(half))
        floats = {i.data_type for i in proto.graph.initializer} - {TensorProto.INT64}
        assert floats == {TensorProto.FLOAT16}, floats
        ends = (*proto.graph.input, *proto.graph.output)
        assert [v.type.tensor_type.elem_type for v in ends] == [TensorProto.FLOAT] * 2
        gate = record.parity
        assert gate["tolerance"]["unit_roundoff"] == FLOAT16_UNIT_ROUNDOFF
        assert gate["log_probabilities"]["headroom"] > 10, gate  # a bound correct conversions stay far from
        lines.append(f"  {name}: max |dlog p| {gate['log_probabilities']['max_abs_diff']:.3g}, bound "
                     f"{gate['log_probabilities']['bound']:.3g} ({gate['log_probabilities']['headroom']:.0f}x); "
                     f"size {ratio:.0%} of float32")
        model = OnnxMobileNet(half, providers="cpu")
        for image in ("elephant.jpg", "cheetah.jpg"):
            probabilities = model.predict_proba(fixtures / "images" / image)[0]
            assert_top5_matches(probabilities, expected[name][image], tol=FLOAT16_PROBABILITY_TOLERANCE)
    record_property(PRINTED, "\n".join(lines))


def test_verify_judges_a_float16_artifact_by_the_float16_bound(halves, capsys):
    half, _ = halves["mobilenet_v2_1.0_224"]
    assert cli(["verify", str(half), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    ran = [r for r in rows if r["status"] != "skipped"]
    assert {r["runtime"] for r in ran} >= {"keras", "onnxruntime-CPU"} and all(r["status"] == "pass" for r in ran)
    engine = next(r for r in ran if r["runtime"] == "onnxruntime-CPU")
    record = read_record(half)
    outputs = np.concatenate([new_session(half).run(None, {"images": feed})[0] for feed in record.feeds(
        record.golden_inputs())])
    assert engine["bound"] == pytest.approx(judge(record, outputs).bound)
    # The same outputs under the float32 bound: refused. A float16 artifact judged as float32 fails
    # verify, so the bound verify uses is the float16 one.
    as_float32 = judge(_as_float32(record), outputs)
    assert not as_float32.passed and "exceeds its bound" in as_float32.problems[0]


def _as_float32(record):
    return dataclasses.replace(record, spec=dataclasses.replace(record.spec, float16=False))


def test_a_broken_precision_conversion_is_caught(halves):
    half, full = halves["mobilenet_v1_0.25_128"]
    record = read_record(half)
    feeds = record.feeds(record.golden_inputs())

    def outputs_of(proto):
        session = new_session(proto.SerializeToString())
        return np.concatenate([session.run(None, {"images": feed})[0] for feed in feeds])

    assert judge(record, outputs_of(onnx.load(str(half)))).passed
    # A weight left in float32: the float16 gate names it (onnxruntime would not even load the graph).
    left = onnx.load(str(half))
    weight = next(i for i in left.graph.initializer if i.data_type == TensorProto.FLOAT16 and len(i.dims) == 4)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight).astype(np.float32), weight.name))
    with pytest.raises(ConversionError, match=r"\[float16\] 1 weight tensors were not converted.*" + weight.name):
        check_float16(left)
    # The converter's own output without our fix: the probabilities rounded to float16 (below 6e-8
    # they are 0), refused by the bound as well as by the gate.
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its notes on tiny weights
        rounded = float16.convert_float_to_float16(onnx.load(str(full)), keep_io_types=True, op_block_list=["Softmax"])
    with pytest.raises(ConversionError, match="input and output must stay float32; probabilities"):
        check_float16(rounded)
    verdict = judge(record, outputs_of(rounded))
    assert not verdict.passed and "exceeds its bound" in verdict.problems[0]
    # A weight tensor lost in the conversion (zeros where the weights were): refused.
    lost = onnx.load(str(half))
    convs = [i for i in lost.graph.initializer if i.data_type == TensorProto.FLOAT16 and len(i.dims) == 4]
    conv = convs[len(convs) // 2]
    conv.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(conv)), conv.name))
    verdict = judge(record, outputs_of(lost))
    assert not verdict.passed and "exceeds its bound" in verdict.problems[0]


def test_float16_refuses_a_weight_it_cannot_hold(halves):
    _, full = halves["mobilenet_v1_0.25_128"]
    proto = onnx.load(str(full))
    weight = next(i for i in proto.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) == 4)
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] = 1e5  # beyond float16's 65504: the converter would clamp it without a word
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    before = copy.deepcopy(proto)
    with pytest.raises(ConversionError, match=r"\[float16\] 1 weight tensors hold values float16 cannot represent"):
        to_float16(proto)
    assert proto == before  # nothing changed in place


def test_uint8_variants_have_no_float16_artifact(tmp_path, capsys):
    assert cli(["convert", "mobilenet_v1_0.25_128_quant", "--float16", "--output", str(tmp_path)]) != 0
    printed = capsys.readouterr()
    assert "--float16 and --weights-source apply to float checkpoints only" in printed.out + printed.err
    assert not any(tmp_path.iterdir())
