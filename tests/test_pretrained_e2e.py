"""Pretrained weights end to end: convert -> checkpoint -> `train.evaluate` and `jaxpose predict`'s PoseModel.

The official FSA-Net (1x1 capsule) weights are converted into a workdir once,
then evaluated through the whole data path (AFLW2000 fixtures built into a
TFDS data_dir, the stored loose crop, `augment.prepare`, `train.eval_step`)
and run on the original images with `jaxpose.inference.pose.PoseModel`. Both give the official
FSA-Net crops pixel for pixel, hence the official predictions.
"""

import json
import pathlib

import cv2
import jax
import numpy as np
import pytest
import scipy.io
from test_pretrained_fsanet import official_steps

from input_pipeline import augment, canvases, crops, pipeline
from input_pipeline.datasets import features
from input_pipeline.datasets.build import build_dataset
from jaxpose import checkpoint, pretrained, train
from jaxpose.inference import detect
from jaxpose.inference import pose as pose_lib
from jaxpose.angles import from_pose_para
from jaxpose.config import apply_overrides, base_config, load_config
from jaxpose.models import build_model

WEIGHTS = "fsanet_capsule_3_16_2_21_5"
EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def converted(testdata, tmp_path_factory):
    """(workdir, converted.json record) of the official 1x1 capsule weights."""
    workdir = tmp_path_factory.mktemp("fsanet") / "w"
    directory = pretrained.convert("fsanet-keras", testdata / "fsanet_keras" / f"{WEIGHTS}.h5", workdir)
    assert directory == workdir.resolve() / "checkpoints"
    return workdir, json.loads((workdir / "converted.json").read_text())


def fsanet_config(record: dict, **overrides):
    """base_config + the overrides `jaxpose convert` printed: enough to run the weights."""
    flags = dict(flag.removeprefix("--config.").split("=", 1) for flag in record["overrides"])
    return apply_overrides(apply_overrides(base_config(), flags), overrides)


@pytest.fixture(scope="module")
def aflw(testdata):
    """(image paths, FSA-Net boxes (16, 4), official 64 px crops (BGR), truth) of the 16 fixtures."""
    paths = sorted((testdata / "aflw2000").glob("*.jpg"))
    boxes, official, truth = [], [], []
    for jpg in paths:
        mat = scipy.io.loadmat(jpg.with_suffix(".mat"))
        boxes.append(crops.landmark_box(mat["pt2d"].T, rule="fsanet"))
        official.append(official_steps(cv2.imread(str(jpg)), mat["pt2d"]))
        truth.append(from_pose_para(mat["Pose_Para"][0]))
    return paths, np.stack(boxes), np.stack(official), np.stack(truth)


def test_converted_record_and_checkpoint(converted, testdata):
    workdir, record = converted
    assert record["kind"] == "fsanet-keras" and record["variant"] == pretrained.fsanet_settings(f"{WEIGHTS}.h5")
    assert record["config"]["data.crop"] == "fsanet" and record["config"]["data.normalize"] == "bgr255"
    assert "--config.model.kwargs.scoring=conv" in record["overrides"]
    assert "--config.data.channels=bgr" in record["overrides"]
    expected = pretrained.fsanet_keras_variables(
        testdata / "fsanet_keras" / f"{WEIGHTS}.h5", build_model(fsanet_config(record).model))
    restored = checkpoint.restore_model(workdir, None)
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileExistsError, match="already holds checkpoints"):
        pretrained.convert("fsanet-keras", testdata / "fsanet_keras" / f"{WEIGHTS}.h5", workdir)


@pytest.fixture(scope="module")
def aflw_data(testdata, tmp_path_factory):
    """A data_dir holding the AFLW2000 fixtures built into TFDS records."""
    data_dir = tmp_path_factory.mktemp("data")
    report = build_dataset("aflw2000", testdata / "aflw2000", data_dir)
    assert report["splits"] == {"test": 16}
    return data_dir


def test_train_two_steps_and_evaluate_on_built_aflw2000(aflw_data, fast_compile, tmp_path, capsys):
    """The FSA-Net experiment trains 2 steps on the built fixture's canvases (its default device input path),
    then evaluates; BIWI (not built) is a reported skip."""
    overrides = {"data.data_dir": str(aflw_data), "data.name": "aflw2000", "data.train_split": "test",
                 "batch_size": 8, "num_train_steps": 2, "log_every": 1, "steps_per_dispatch": 1}
    config = load_config(EXPERIMENTS / "fsanet_caps_1x1.py", overrides)
    assert config.data.pipeline == "device"
    canvases.build_cache("aflw2000", str(aflw_data), "test", 64, canvases.default_canvas_size(64))
    results = train.train_and_evaluate(config, tmp_path)
    assert list(results) == ["aflw2000:test"] and results["aflw2000:test"]["num_images"] == 16
    assert "skipped biwi/protocol1:test: dataset 'biwi/protocol1' is not built" in capsys.readouterr().out
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    curves = json.loads((tmp_path / "ced_aflw2000_test.json").read_text())
    assert curves["thresholds"] == list(range(31)) and len(curves["yaw"]) == 31
    assert (tmp_path / "ced_aflw2000_test.png").read_bytes()[:4] == b"\x89PNG"


def record_names(config) -> list[str]:
    """The fixture file names of the built records, in the order the pipeline reads them."""
    source = pipeline.data_source(config.data, "test")
    names = [source[i]["filename"] for i in range(len(source))]
    return [name.decode() if isinstance(name, bytes) else str(name) for name in names]


def test_dataset_crop_is_the_official_crop(converted, aflw, aflw_data):
    """Record -> augment.prepare gives the official FSA-Net input pixel for pixel on the 16 fixtures.

    The stored crop is lossless and unscaled, and the FSA-Net box is clipped at
    the record's source_box (the original image's edges, beyond which the
    stored crop is padded black): 14 of the 16 official boxes are clipped.
    """
    _, record = converted
    config = fsanet_config(record, **{"data.name": "aflw2000", "data.data_dir": str(aflw_data)})
    source = pipeline.data_source(config.data, "test")
    official = dict(zip((p.name for p in aflw[0]), aflw[2]))
    clipped = 0
    for i in range(len(source)):
        example = source[i]
        name = example["filename"].decode() if isinstance(example["filename"], bytes) else str(example["filename"])
        np.testing.assert_array_equal(augment.prepare(example, config.data)["image"], official[name], err_msg=name)
        image_shape = (*features.decode_image(example["image"]).shape[:2], 3)
        padded = crops.crop_box("fsanet", example["box"], image_shape)  # clipped to the stored crop only
        clipped += not np.array_equal(augment.crop_region(example, image_shape, config.data, None), padded)
    assert clipped == 13  # the official box leaves the 450 x 450 image: source_box changes the region


def test_eval_through_the_dataset(converted, aflw, testdata, aflw_data):
    """`jaxpose eval` (train.evaluate) on the built fixtures equals the Predictor on the official crops."""
    workdir, record = converted
    config = fsanet_config(record, **{"data.data_dir": str(aflw_data), "eval_on": (("aflw2000", "test"),)})
    results = train.evaluate(config, workdir)["aflw2000:test"]
    direct_poses = pretrained.load_fsanet_keras(testdata / "fsanet_keras" / f"{WEIGHTS}.h5")(aflw[2])
    direct = np.abs(direct_poses - aflw[3])
    print(f"jaxpose eval mean MAE {results['mean']:.4f} vs direct Predictor on official crops {direct.mean():.4f}")
    assert results["num_images"] == 16
    # The inputs are the official pixels (test above): only float rounding separates the two.
    for i, angle in enumerate(("yaw", "pitch", "roll")):
        assert results[angle] == pytest.approx(direct[:, i].mean(), abs=1e-3)
    assert results["mean"] == pytest.approx(direct.mean(), abs=1e-3)
    assert abs(results["mean"] - 4.36) < 0.01  # the official weights' MAE on these 16 images
    assert json.loads((workdir / "eval.json").read_text())["aflw2000:test"]["mean"] == pytest.approx(results["mean"])
    # Per image, through the same data path (train.predict is what evaluate runs per dataset).
    config.data.name = "aflw2000"
    setup = train.Setup(config, training=False)
    preds, labels = train.predict(config, checkpoint.restore_model(workdir, setup.abstract_variables),
                                  setup, "aflw2000", "test")
    order = [[p.name for p in aflw[0]].index(name) for name in record_names(config)]
    np.testing.assert_allclose(labels, aflw[3][order], atol=1e-4)
    np.testing.assert_allclose(preds, direct_poses[order], atol=1e-3)


def test_pose_model_equals_official_crops(converted, aflw, testdata):
    """`jaxpose predict`'s PoseModel on the whole images and landmark boxes = the official weights on the
    official crops."""
    workdir, record = converted
    paths, boxes, official, _ = aflw
    config = fsanet_config(record, batch_size=8)  # 16 faces: two full batches
    faces = [pose_lib.Face(pose_lib.read_image(p), b) for p, b in zip(paths, boxes)]
    poses, errors = pose_lib.PoseModel(config, workdir).predict(faces)
    assert errors == [None] * len(faces)
    expected = pretrained.load_fsanet_keras(testdata / "fsanet_keras" / f"{WEIGHTS}.h5")(official)
    np.testing.assert_allclose(poses, expected, atol=1e-3)


def test_prepare_face_whole_image_and_channels(converted, aflw, tmp_path):
    _, record = converted
    config = fsanet_config(record)
    crop = aflw[2][0]  # an official 64 px crop, BGR
    cv2.imwrite(str(tmp_path / "crop.png"), crop)
    image = pose_lib.read_image(tmp_path / "crop.png")  # RGB, like the pipeline's decoded records
    np.testing.assert_array_equal(image, crop[..., ::-1])
    # No box: the image is the crop, resized whole (here 64 -> 64, unchanged) and put back in BGR.
    np.testing.assert_array_equal(pose_lib.prepare_face(image, None, config.data), crop)
    config.data.channels = "rgb"
    np.testing.assert_array_equal(pose_lib.prepare_face(image, None, config.data), image)
    config.data.image_size = 32
    assert pose_lib.prepare_face(image, np.array([10, 10, 40, 40]), config.data).shape == (32, 32, 3)


def test_predict_errors(converted, tmp_path):
    workdir, record = converted
    config = fsanet_config(record)
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        pose_lib.PoseModel(config, tmp_path / "nowhere")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg: not a readable image"):
        pose_lib.read_image(tmp_path / "broken.jpg")
    with pytest.raises(FileNotFoundError, match="gone.jpg: no such image file"):
        pose_lib.read_image(tmp_path / "gone.jpg")


def test_boxes_csv(tmp_path):
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("path,x_min,y_min,x_max,y_max\nfaces/a.jpg,1,2,30,40\n\n/abs/b.png, 5.5 ,6,7,8\n")
    paths, boxes = detect.read_boxes(csv_path)
    assert paths == [tmp_path / "faces" / "a.jpg", pathlib.Path("/abs/b.png")]
    np.testing.assert_array_equal(boxes, [[1, 2, 30, 40], [5.5, 6, 7, 8]])
    for text, message in [("a.jpg,1,2,3\n", r"boxes.csv:1: expected 5 columns"),
                          ("a.jpg,1,2,3,4\nb.jpg,1,x,3,4\n", r"boxes.csv:2: box .* is not four numbers"),
                          ("a.jpg,5,2,3,4\n", r"boxes.csv:1: box .* needs x_max > x_min"),
                          ("path,x_min,y_min,x_max,y_max\n", "boxes.csv: no boxes")]:
        csv_path.write_text(text)
        with pytest.raises(ValueError, match=message):
            detect.read_boxes(csv_path)


def test_convert_errors(testdata, tmp_path):
    valid = "fsanet-keras, torchvision-resnet, hopenet"
    with pytest.raises(ValueError, match=f"unknown conversion kind 'keras'; valid: {valid}"):
        pretrained.convert("keras", tmp_path / "x.h5", tmp_path / "w")
    with pytest.raises(FileNotFoundError, match="fsanet_capsule_3_16_2_21_5.h5: no such file"):
        pretrained.convert("fsanet-keras", tmp_path / "fsanet_capsule_3_16_2_21_5.h5", tmp_path / "w")
    (tmp_path / "weights.h5").write_bytes((testdata / "fsanet_keras" / f"{WEIGHTS}.h5").read_bytes())
    with pytest.raises(ValueError, match="does not name an FSA-Net variant"):
        pretrained.convert("fsanet-keras", tmp_path / "weights.h5", tmp_path / "w")
    assert not (tmp_path / "w").exists()  # nothing written for a refused source


def test_hopenet_original_config_fits_converted_hopenet():
    """experiments/hopenet_original.py builds the released Hopenet: converted checkpoints restore into it."""
    config = load_config(EXPERIMENTS / "hopenet_original.py")
    assert (config.data.image_size, config.data.crop, config.data.eval_crop_k) == (224, "hopenet", 0.2)
    assert (config.data.normalize, config.data.channels) == ("imagenet", "rgb")
    assert config.model.head_kwargs.left_edge
    images = np.zeros((1, 224, 224, 3), np.float32)
    ours = jax.eval_shape(lambda: build_model(config.model).init(jax.random.key(0), images, train=False))
    released = jax.eval_shape(lambda: pretrained.hopenet_model(50).init(jax.random.key(0), images, train=False))
    assert jax.tree.map(lambda s: (s.shape, s.dtype), ours) == jax.tree.map(lambda s: (s.shape, s.dtype), released)
