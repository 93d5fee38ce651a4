"""tools/web_benchmark.py --peers, the parts that need no browser and no TF.js: how it reads
onnxruntime-web's profile, and which kind of convolution each of our nodes is (the profile's
point: where onnxruntime-web loses to TF.js). The measurement itself is a benchmark, run by hand
(docs/browser.md)."""

import json
from collections import Counter

import pytest
import web_benchmark
import web_peers


def test_every_convolution_of_our_artifacts_gets_its_kind(converted):
    """MobileNet V2 (slim-facts): a full 3x3 stem, 17 depthwise 3x3 convolutions (one per block),
    16 expansion and 17 projection 1x1 convolutions and the 1x1 Conv_1; the float artifact's logits
    are a Gemm, the uint8 one's a 1x1 Conv (Google's graph)."""
    float_kinds = web_peers.conv_kinds(converted("mobilenet_v2_1.0_224"))
    assert Counter(float_kinds.values()) == {"3x3 conv": 1, "depthwise 3x3 conv": 17, "1x1 conv": 34}
    uint8_kinds = web_peers.conv_kinds(converted("mobilenet_v2_1.0_224_quant"))  # weights behind DequantizeLinear
    assert Counter(uint8_kinds.values()) == {"3x3 conv": 1, "depthwise 3x3 conv": 17, "1x1 conv": 35}


def _event(name, op, ms, cat="Node"):
    return json.dumps({"cat": cat, "name": name, "dur": int(ms * 1000), "args": {"op_name": op}})


def test_the_profile_is_summed_per_run_by_kind():
    """onnxruntime-web prints one event per line, with other console text around; fused kernels keep
    their Conv's name, nodes moved to NHWC get `_token_N`; a node of no known kind counts as its op."""
    kinds = {"dw": "depthwise 3x3 conv", "pw": "1x1 conv"}
    messages = [
        "onnxruntime-web loaded",
        "\n".join([_event("dw_kernel_time", "FusedConv", 3.0) + ",",
                   _event("pw_token_7_kernel_time", "QLinearConv", 5.0),
                   _event("dw_fence_before", "FusedConv", 1.0), _event("model_run", "", 10.0, cat="Session")]),
        _event("dw_kernel_time", "FusedConv", 1.0),
        _event("gemm_kernel_time", "Gemm", 0.5),
        _event("model_run", "", 8.0, cat="Session"),
    ]
    summary = web_peers.ort_profile_summary(messages, kinds)
    assert summary["runs"] == 2 and summary["model_run_ms"] == pytest.approx(9.0)
    assert summary["kernel_ms_per_run"] == pytest.approx({"1x1 conv": 2.5, "depthwise 3x3 conv": 2.0, "Gemm": 0.25})
    assert list(summary["kernel_ms_per_run"]) == ["1x1 conv", "depthwise 3x3 conv", "Gemm"]  # largest first
    assert sum(summary["kernel_share"].values()) == pytest.approx(1.0)
    with pytest.raises(SystemExit, match="printed no profile"):
        web_peers.ort_profile_summary(["nothing to see"], kinds)


def test_the_command_takes_artifacts_or_peers(capsys):
    with pytest.raises(SystemExit):
        web_benchmark.main([])
    with pytest.raises(SystemExit):
        web_benchmark.main(["--peers", "model-image.onnx"])
    assert "give image-in artifacts, or --peers" in capsys.readouterr().err
