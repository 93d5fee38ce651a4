import subprocess
import sys

import pytest
from conftest import WITHOUT_TENSORFLOW

from onnx_mobilenets import ALIASES, get_variant, list_variants


def test_catalogue_holds_every_published_variant_once():
    variants = list_variants(precision="float32")
    assert len(variants) == 38 and len(list_variants()) == 76
    assert len(list_variants("v1", "float32")) == 16 and len(list_variants("v2", "float32")) == 22
    assert len({v.name for v in list_variants()}) == 76
    v1 = {(v.alpha, v.resolution) for v in list_variants("v1", "float32")}
    assert v1 == {(a, r) for a in (1.0, 0.75, 0.5, 0.25) for r in (224, 192, 160, 128)}
    v2 = {(v.alpha, v.resolution) for v in list_variants("v2", "float32")}
    assert v2 == {(a, r) for a in (1.0, 0.75, 0.5, 0.35) for r in (224, 192, 160, 128, 96)} | {(1.4, 224), (1.3, 224)}


def test_variant_fields_follow_the_slim_release():
    v = get_variant("mobilenet_v2_1.4_224")
    assert (v.family, v.alpha, v.resolution) == ("v2", 1.4, 224)
    assert v.checkpoint_url == "https://storage.googleapis.com/mobilenet_v2/checkpoints/mobilenet_v2_1.4_224.tgz"
    assert v.checkpoint_sha256 == "a20d0c8d698502dc6a620528871c97a588885df7737556243a3412b39fce85e0"
    assert (v.top1, v.top5, v.macs_millions, v.params_millions) == (75.0, 92.5, 582, 6.06)
    v = get_variant("mobilenet_v1_0.25_128")
    assert v.checkpoint_url.endswith("/mobilenet_v1_2018_08_02/mobilenet_v1_0.25_128.tgz")
    assert v.checkpoint_filename == "mobilenet_v1_0.25_128.tgz"
    assert get_variant("mobilenet_v1_0.75_160").checkpoint_sha256 is None  # none published: never invented
    assert sum(v.checkpoint_sha256 is not None for v in list_variants()) == 6


def test_every_float_variant_has_its_quantized_sibling():
    quantized = list_variants(precision="uint8")
    assert [q.name for q in quantized] == [f"{v.name}_quant" for v in list_variants(precision="float32")]
    for q in quantized:
        float_variant = get_variant(q.name[:-len("_quant")])
        assert (q.family, q.alpha, q.resolution, q.macs_millions) == (
            float_variant.family,
            float_variant.alpha,
            float_variant.resolution,
            float_variant.macs_millions,
        )
        assert q.quantized and q.precision == "uint8" and q.checkpoint_sha256 is None  # none published
        assert q.preprocessing.dtype == "uint8" and float_variant.preprocessing.dtype == "float32"
        if q.family == "v1":
            assert q.checkpoint_url == ("https://storage.googleapis.com/download.tensorflow.org/models/"
                                        f"mobilenet_v1_2018_08_02/mobilenet_v1_{q.alpha}_{q.resolution}_quant.tgz")
            assert q.top1 is not None and q.top1 < float_variant.top1  # published, from mobilenet_v1.md
        else:
            assert q.checkpoint_url == ("https://storage.googleapis.com/mobilenet_v2/checkpoints/"
                                        f"quantized_v2_{q.resolution}_{round(q.alpha * 100)}.tgz")
            # Google publishes one for V2 1.0/224 only (TensorFlow Lite's hosted-models list)
            if (q.alpha, q.resolution) == (1.0, 224):
                assert (q.top1, q.top5) == (70.8, 89.9) and q.top1 < float_variant.top1
                assert q.accuracy_source == ("TensorFlow Lite hosted models",
                                             "https://www.tensorflow.org/lite/guide/hosted_models")
            else:
                assert q.top1 is None and q.top5 is None and q.accuracy_source is None
        if q.top1 is not None:
            assert q.accuracy_source[1].startswith("https://") and float_variant.accuracy_source is not None
    assert get_variant("mobilenet_v2_0.35_96_quant").checkpoint_filename == "quantized_v2_96_35.tgz"
    assert get_variant("mobilenet_v2_1.4_224_quant").checkpoint_filename == "quantized_v2_224_140.tgz"
    assert get_variant("mobilenet_v1_1.0_224_quant").top1 == 70.1
    with pytest.raises(ValueError, match="precision"):
        list_variants(precision="int4")


def test_aliases():
    assert ALIASES == {"v1": "mobilenet_v1_1.0_224", "v2": "mobilenet_v2_1.0_224",
                       "v1_quant": "mobilenet_v1_1.0_224_quant", "v2_quant": "mobilenet_v2_1.0_224_quant"}
    assert get_variant("v2_quant").name == "mobilenet_v2_1.0_224_quant"
    assert get_variant("v1") is get_variant("mobilenet_v1_1.0_224")
    assert get_variant("v2").name == "mobilenet_v2_1.0_224"


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="mobilenet_v2_1.0_224") as info:
        get_variant("mobilenet_v2_1.0_225")
    assert "unknown MobileNet variant 'mobilenet_v2_1.0_225'" in str(info.value)
    with pytest.raises(ValueError, match="unknown"):
        get_variant("resnet50")
    with pytest.raises(ValueError, match="family"):
        list_variants("v3")


def test_import_works_without_tensorflow():
    """`import onnx_mobilenets` must not need (or load) TensorFlow, tf2onnx or onnx."""
    code = WITHOUT_TENSORFLOW + (
        "import onnx_mobilenets\n"
        "from onnx_mobilenets import get_variant, list_variants\n"
        "assert len(list_variants()) == 76\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in HEAVY]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
