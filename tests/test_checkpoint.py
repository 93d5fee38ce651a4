"""Loading TF-slim checkpoints: real weights on the fixtures, random ones against an independent
reference forward pass, and strictness about every variable."""

import numpy as np
import pytest
import slim_reference
from conftest import FIXTURE_NAMES, IMAGES, assert_top5_matches, fixture_image_batch

from onnx_mobilenets import CheckpointError, get_variant
from onnx_mobilenets.conversion import MobileNet, MobileNetV2, build_variant, load_slim_checkpoint, resolve_checkpoint


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_checkpoints_classify_as_expected(fixtures, expected, name):
    variant = get_variant(name)
    model = build_variant(name, weights=fixtures / "checkpoints" / f"{name}.tgz")
    probs = model(fixture_image_batch(fixtures, variant.resolution)).numpy()
    for image, p in zip(IMAGES, probs):
        assert_top5_matches(p, expected[name][image])
    report = model.checkpoint_report
    assert report.weights_source == "ema" and report.from_ema and not report.from_raw
    assert len(report.sha256) == 64

    # The raw (non-EMA) copies are perturbed: taking them must visibly change the answers.
    raw = build_variant(name, weights=fixtures / "checkpoints" / f"{name}.tgz", weights_source="raw")
    raw_probs = raw(fixture_image_batch(fixtures, variant.resolution)).numpy()
    for image, p in zip(IMAGES, raw_probs):
        top1 = expected[name][image][0]
        assert int(np.argmax(p)) != top1["class_index"]
        assert abs(p[top1["class_index"]] - top1["probability"]) > 0.1
    assert raw.checkpoint_report.from_raw and not raw.checkpoint_report.from_ema


def test_fixture_1001_classes_keep_background(fixtures):
    tarball = fixtures / "checkpoints" / "mobilenet_v1_0.25_128.tgz"
    m1000 = MobileNet((128, 128, 3), alpha=0.25, weights=tarball, classifier_activation=None)
    m1001 = MobileNet((128, 128, 3), alpha=0.25, weights=tarball, classes=1001, classifier_activation=None)
    x = fixture_image_batch(fixtures, 128)
    np.testing.assert_allclose(m1001(x).numpy()[:, 1:], m1000(x).numpy(), atol=1e-5)


def test_wrong_alpha_is_refused_with_a_message_saying_so(fixtures):
    tarball = fixtures / "checkpoints" / "mobilenet_v1_0.25_128.tgz"
    with pytest.raises(CheckpointError) as info:
        MobileNet((128, 128, 3), alpha=0.5, weights=tarball)
    message = str(info.value)
    assert "alpha 0.25" in message and "the alphas differ" in message
    assert "MobilenetV1/Conv2d_0/weights: checkpoint [3, 3, 3, 8] vs model [3, 3, 3, 16]" in message
    with pytest.raises(CheckpointError, match="left over"):
        MobileNetV2((128, 128, 3), weights=tarball)  # a V1 checkpoint in a V2 model


# Random checkpoints written here, several alphas of both families, non-square odd input.
@pytest.mark.parametrize("family, alpha", [("v1", 0.25), ("v1", 0.75), ("v1", 1.0), ("v2", 0.35), ("v2", 0.75),
                                           ("v2", 1.0), ("v2", 1.3), ("v2", 1.4)])
def test_random_checkpoint_matches_independent_reference(tmp_path, family, alpha):
    values = slim_reference.random_values(slim_reference.slim_shapes(family, alpha), seed=int(alpha * 100))
    prefix = slim_reference.write_checkpoint(tmp_path / "model.ckpt", values)
    builder = MobileNet if family == "v1" else MobileNetV2
    model = builder((97, 130, 3), alpha=alpha, weights=prefix, classes=1001, classifier_activation=None)
    images = np.random.default_rng(1).uniform(-1, 1, (3, 97, 130, 3)).astype(np.float32)
    reference = slim_reference.forward(values, family, images)
    ours = model(images).numpy()
    assert np.abs(reference).max() > 1.0  # a meaningful comparison, not near-zero outputs
    assert np.abs(ours - reference).max() <= 1e-4
    assert model.checkpoint_report.from_raw and not model.checkpoint_report.from_ema  # no EMA: fallback


def test_ema_copies_preferred_and_extra_variables_ignored(tmp_path):
    shapes = slim_reference.slim_shapes("v2", 0.35)
    truth = slim_reference.random_values(shapes, seed=7)
    decoy = slim_reference.random_values(shapes, seed=8)
    stored = dict(decoy)
    # EMA copies for all but the logits (which must fall back to raw), optimizer slots, global_step.
    for name, value in truth.items():
        if "Logits" in name:
            stored[name] = value
        else:
            stored[f"{name}/ExponentialMovingAverage"] = value
        stored[f"{name}/RMSProp"] = np.zeros_like(value)
        stored[f"{name}/RMSProp_1"] = np.ones_like(value)
    stored["global_step"] = np.array(1234, np.int64)
    prefix = slim_reference.write_checkpoint(tmp_path / "ema.ckpt", stored)
    images = np.random.default_rng(2).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=prefix, classes=1001, classifier_activation=None)
    np.testing.assert_allclose(model(images).numpy(), slim_reference.forward(truth, "v2", images), atol=1e-4)
    assert len(model.checkpoint_report.from_raw) == 2  # logits weights and biases
    raw = MobileNetV2((96, 96, 3), alpha=0.35, weights=prefix, classes=1001, classifier_activation=None,
                      weights_source="raw")
    np.testing.assert_allclose(raw(images).numpy(), slim_reference.forward(
        {**decoy, **{n: v for n, v in truth.items() if "Logits" in n}}, "v2", images), atol=1e-4)


def test_missing_and_leftover_variables_are_named(tmp_path):
    values = slim_reference.random_values(slim_reference.slim_shapes("v1", 0.25), seed=3)
    del values["MobilenetV1/Conv2d_5_pointwise/BatchNorm/beta"]
    values["MobilenetV1/Extra/weights"] = np.zeros((1,), np.float32)
    prefix = slim_reference.write_checkpoint(tmp_path / "bad.ckpt", values)
    model = MobileNet((128, 128, 3), alpha=0.25)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(CheckpointError) as info:
        load_slim_checkpoint(model, prefix)
    assert "MobilenetV1/Conv2d_5_pointwise/BatchNorm/beta" in str(info.value)
    assert "MobilenetV1/Extra/weights" in str(info.value)
    for b, w in zip(before, model.weights):  # all-or-nothing: nothing was assigned
        np.testing.assert_array_equal(b, w.numpy())
    with pytest.raises(ValueError, match="weights_source"):
        load_slim_checkpoint(model, prefix, weights_source="average")


def test_checkpoint_sources(tmp_path, fixtures):
    values = slim_reference.random_values(slim_reference.slim_shapes("v1", 0.25), seed=4)
    folder = tmp_path / "one"
    folder.mkdir()
    prefix = slim_reference.write_checkpoint(folder / "m.ckpt", values)
    assert resolve_checkpoint(folder) == (prefix, None)
    assert resolve_checkpoint(prefix) == (prefix, None)
    tar_prefix, sha = resolve_checkpoint(fixtures / "checkpoints" / "mobilenet_v1_0.25_128.tgz")
    assert tar_prefix.endswith("mobilenet_v1_0.25_128.ckpt") and len(sha) == 64
    slim_reference.write_checkpoint(folder / "other.ckpt", values)
    with pytest.raises(ValueError, match="holds 2 checkpoints"):
        resolve_checkpoint(folder)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint(tmp_path / "nowhere" / "x.ckpt")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a checkpoint tarball"):
        resolve_checkpoint(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="unknown MobileNet variant"):
        resolve_checkpoint("mobilenet_v3_1.0_224")


def test_catalogue_name_goes_through_the_downloader(fixtures, tmp_path, monkeypatch, caplog):
    # A mirror folder holding the fixture under the official name of a variant without a published
    # checksum: downloaded into the cache, reported as unverified, loaded (weights fit any resolution).
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "mobilenet_v1_0.25_160.tgz").write_bytes(
        (fixtures / "checkpoints" / "mobilenet_v1_0.25_128.tgz").read_bytes()
    )
    monkeypatch.setenv("ONNX_MOBILENETS_MIRROR", str(mirror))
    with caplog.at_level("WARNING"):
        model = build_variant("mobilenet_v1_0.25_160")
    assert "could not be verified" in caplog.text
    assert model.input_shape == (None, 160, 160, 3)
    assert model.checkpoint_report.source == "mobilenet_v1_0.25_160"
    # The official name of a variant whose checksum is published: the fixture is not that file.
    (mirror / "mobilenet_v1_0.25_128.tgz").write_bytes(
        (fixtures / "checkpoints" / "mobilenet_v1_0.25_128.tgz").read_bytes()
    )
    from onnx_mobilenets import ChecksumError
    from onnx_mobilenets.download import cache_dir

    with pytest.raises(ChecksumError, match="879ddc3e"):
        build_variant("mobilenet_v1_0.25_128")
    assert not (cache_dir() / "checkpoints" / "mobilenet_v1_0.25_128.tgz").exists()
