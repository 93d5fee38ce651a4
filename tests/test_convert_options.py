"""`convert`'s options as a user gives them on the command line, each seen in what it writes:
--weights-source, --parity-image, --logits (float and quantized), --opset with --nchw."""

import json

import numpy as np
import onnx
import pytest
from conftest import assert_top5_matches

from onnx_mobilenets import OnnxMobileNet
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.model_bytes import read_metadata
from onnx_mobilenets.parity import GOLDEN_COUNT, parity_pixels, softmax
from onnx_mobilenets.sessions import new_session

V1 = "mobilenet_v1_0.25_128"


def _convert(fixtures, tmp_path, folder, *options, name=V1, tarball=f"{V1}.tgz") -> tuple:
    """`convert NAME --checkpoint FIXTURE --output tmp/folder OPTIONS`: (artifact, its manifest entry)."""
    output = tmp_path / folder
    assert cli(["convert", name, "--checkpoint", str(fixtures / "checkpoints" / tarball), "--output", str(output),
                *options]) == 0
    manifest = json.loads((output / "manifest.json").read_text())
    return output / f"{name}.onnx", manifest["artifacts"][name]


@pytest.fixture(scope="session")
def default(fixtures, tmp_path_factory) -> tuple:
    """`convert` with no option but the checkpoint, made once: what each option is compared with."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ONNX_MOBILENETS_HOME", str(tmp_path_factory.mktemp("default_cache")))
        return _convert(fixtures, tmp_path_factory.mktemp("default"), "out")


def test_weights_source_raw_takes_the_raw_copies(fixtures, expected, tmp_path, default):
    """The fixture's raw trainable variables are perturbed, its EMA copies real: the default (ema)
    reproduces expected.json, --weights-source raw a different network, and says so."""
    ema_path, _ = default
    raw_path, _ = _convert(fixtures, tmp_path, "raw", "--weights-source", "raw")
    assert json.loads(read_metadata(raw_path.read_bytes())["weights"])["weights_source"] == "raw"
    assert json.loads(read_metadata(ema_path.read_bytes())["weights"])["weights_source"] == "ema"
    elephant = fixtures / "images" / "elephant.jpg"
    ema = OnnxMobileNet(ema_path, providers="cpu").predict_proba(elephant)[0]
    raw = OnnxMobileNet(raw_path, providers="cpu").predict_proba(elephant)[0]
    assert_top5_matches(ema, expected[V1]["elephant.jpg"])
    assert np.abs(ema - raw).max() > 0.01


def test_parity_images_join_the_gate(fixtures, tmp_path, capsys, default):
    """Each --parity-image is one more input of the parity gate (recorded in the manifest); a path
    that is not an image stops the command before anything is converted."""
    images = [str(fixtures / "images" / name) for name in ("elephant.jpg", "cheetah.jpg")]
    _, plain = default
    _, gated = _convert(fixtures, tmp_path, "gated", "--parity-image", images[0], "--parity-image", images[1])
    assert plain["parity"]["logits"]["inputs"] == GOLDEN_COUNT
    assert gated["parity"]["logits"]["inputs"] == GOLDEN_COUNT + 2 and gated["parity"]["top1_agreement"] == 1.0
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not an image")
    output = tmp_path / "refused"
    assert cli(["convert", V1, "--checkpoint", str(fixtures / "checkpoints" / f"{V1}.tgz"), "--output", str(output),
                "--parity-image", str(not_an_image)]) == 2
    assert "notes.jpg" in capsys.readouterr().err and not (output / f"{V1}.onnx").exists()


def test_logits_output_float(fixtures, tmp_path, default):
    """--logits: the output is named logits and its softmax is the probability artifact's output."""
    probabilities_path, _ = default
    logits_path, entry = _convert(fixtures, tmp_path, "logits", "--logits")
    assert [o.name for o in onnx.load(str(logits_path)).graph.output] == ["logits"]
    pixels = parity_pixels(128, count=4, seed=9).astype(np.float32) / 127.5 - 1
    logits = new_session(logits_path.read_bytes()).run(None, {"images": pixels})[0]
    probabilities = new_session(probabilities_path.read_bytes()).run(None, {"images": pixels})[0]
    assert np.abs(logits).max() > 1  # logits, not probabilities
    np.testing.assert_allclose(softmax(logits.astype(np.float64)), probabilities, atol=1e-6)
    assert entry["parity"]["logits"]["output"] == "logits"


def test_logits_output_quantized(fixtures, tmp_path):
    """--logits on a uint8 model: the dequantized logits, whole steps of the output scale, whose
    softmax is the probability artifact's output."""
    name, tarball = "mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.25_128_quant.tgz"
    probabilities_path, _ = _convert(fixtures, tmp_path, "probabilities", name=name, tarball=tarball)
    logits_path, _ = _convert(fixtures, tmp_path, "logits", "--logits", name=name, tarball=tarball)
    quantization = json.loads(read_metadata(logits_path.read_bytes())["quantization"])
    assert [o.name for o in onnx.load(str(logits_path)).graph.output] == ["logits"]
    pixels = parity_pixels(128, count=4, seed=9)
    logits = new_session(logits_path.read_bytes()).run(None, {"images": pixels})[0].astype(np.float64)
    probabilities = new_session(probabilities_path.read_bytes()).run(None, {"images": pixels})[0]
    steps = logits / quantization["logits_scale"] + quantization["logits_zero_point"]
    np.testing.assert_allclose(steps, np.rint(steps), atol=1e-3)  # on the uint8 grid
    assert len(np.unique(np.rint(steps))) > 20
    np.testing.assert_allclose(softmax(logits), probabilities, atol=1e-5)


@pytest.mark.parametrize("opset", [13, 18])
def test_opset_and_nchw(fixtures, tmp_path, default, opset):
    """--opset N --nchw: the file's opset is N, its input (N, 3, R, R), its answers the NHWC artifact's."""
    nhwc_path, _ = default
    nchw_path, _ = _convert(fixtures, tmp_path, "nchw", "--opset", str(opset), "--nchw")
    model = onnx.load(str(nchw_path))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == opset
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 128, 128]
    pixels = parity_pixels(128, count=3, seed=4).astype(np.float32) / 127.5 - 1
    nhwc = new_session(nhwc_path.read_bytes()).run(None, {"images": pixels})[0]
    nchw = new_session(nchw_path.read_bytes()).run(None, {"images": np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))})
    np.testing.assert_allclose(nchw[0], nhwc, atol=1e-6)
