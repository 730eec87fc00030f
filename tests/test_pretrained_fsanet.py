"""Official FSA-Net Keras weights on the 16 AFLW2000 fixture images, and the loader's errors."""

import shutil

import cv2
import h5py
import numpy as np
import pytest
import scipy.io

from input_pipeline import crops
from jaxpose.angles import from_pose_para
from jaxpose.pretrained import fsanet_fusion, fsanet_settings, load_fsanet_keras

CAPSULE = ("fsanet_capsule_3_16_2_21_5", "fsanet_var_capsule_3_16_2_21_5", "fsanet_noS_capsule_3_16_2_192_5")
OTHERS = ("fsanet_netvlad_3_16_2_21_5", "fsanet_metric_3_16_2_21_5")


def fsanet_input(image: np.ndarray, pt2d: np.ndarray) -> np.ndarray:
    """FSA-Net's 64 x 64 AFLW2000 input from the image (BGR) and the (2, 21) `pt2d` of its .mat."""
    box = crops.landmark_box(pt2d.T, rule="fsanet")
    return crops.crop_resize(image, crops.crop_box("fsanet", box, image.shape), 64, convention="fsanet")


def official_steps(image: np.ndarray, pt2d: np.ndarray, ad: float = 0.6, size: int = 64) -> np.ndarray:
    """The official AFLW2000 crop (data/type1/TYY_create_db_type1.py), written out step by step.

    Points with x > 0 (or y > 0, whichever keeps fewer), int-truncated tight
    box, enlarged by ad * (w, h) on every side, int-truncated and clipped,
    exclusive end img[y0:y1, x0:x1], cv2.resize with its default bilinear.
    """
    x, y = pt2d
    keep = (y > 0) if (x > 0).sum() > (y > 0).sum() else (x > 0)
    x_min, x_max, y_min, y_max = int(x[keep].min()), int(x[keep].max()), int(y[keep].min()), int(y[keep].max())
    w, h = x_max - x_min, y_max - y_min
    height, width = image.shape[:2]
    x0, x1 = max(int(x_min - ad * w), 0), min(int(x_max + ad * w), width - 1)
    y0, y1 = max(int(y_min - ad * h), 0), min(int(y_max + ad * h), height - 1)
    return cv2.resize(image[y0:y1, x0:x1], (size, size))


@pytest.fixture(scope="module")
def aflw(testdata):
    """(source images (BGR), pt2d (2, 21), FSA-Net inputs, truth (yaw, pitch, roll)) of the 16 fixture images."""
    images, points, inputs, truth = [], [], [], []
    for jpg in sorted((testdata / "aflw2000").glob("*.jpg")):
        mat = scipy.io.loadmat(jpg.with_suffix(".mat"))
        images.append(cv2.imread(str(jpg)))  # BGR, as the official code reads it
        points.append(mat["pt2d"])
        inputs.append(fsanet_input(images[-1], mat["pt2d"]))
        truth.append(from_pose_para(mat["Pose_Para"][0]))
    assert len(truth) == 16
    return images, points, np.stack(inputs), np.stack(truth)


def test_fsanet_crop_is_the_official_crop(aflw):
    images, points, inputs, _ = aflw
    for image, pt2d, ours in zip(images, points, inputs):
        np.testing.assert_array_equal(ours, official_steps(image, pt2d))
        # A stored crop padded beyond the source image clips at `bounds`, the source's edges.
        padded = cv2.copyMakeBorder(image, 23, 40, 37, 31, cv2.BORDER_CONSTANT, value=0)
        box = crops.landmark_box(pt2d.T, rule="fsanet") + np.array([37, 23, 37, 23], np.float32)
        region = crops.crop_box("fsanet", box, padded.shape, bounds=np.array([37, 23, 37 + 450, 23 + 450]))
        np.testing.assert_array_equal(crops.crop_resize(padded, region, 64, convention="fsanet"), ours)
    # The fixtures exercise the details: enlarged boxes clipped to the image (14 of 16) and
    # missing points (x = -1) dropped by the x > 0 mask (12 of 16).
    regions = [crops.crop_box("fsanet", crops.landmark_box(pt2d.T, rule="fsanet"), image.shape)
               for image, pt2d in zip(images, points)]
    assert sum(r[0] == 0 or r[1] == 0 or r[2] == 449 or r[3] == 449 for r in regions) == 14
    assert sum((pt2d[0] <= 0).any() for pt2d in points) == 12


def test_fsanet_crop_integer_steps():
    # Tight box (10.9, 20.2, 50.7, 60.99) -> int (10, 20, 50, 60), w = h = 40, enlarged by 24:
    # (-14 -> 0, -4 -> 0, 74, 84 -> clipped to H - 1 = 79); truncation, not rounding.
    box = crops.fsanet_crop(np.array([10.9, 20.2, 50.7, 60.99]), (80, 100, 3))
    np.testing.assert_array_equal(box, [0, 0, 74, 79])
    box = crops.fsanet_crop(np.array([40.0, 40.0, 50.0, 51.0]), (200, 200, 3), ad=0.65)
    np.testing.assert_array_equal(box, [33, 32, 56, 58])  # 40 - 6.5 = 33.5 -> 33; 51 + 7.15 -> 58
    image = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    # Same size: the exclusive end cuts exactly rows 2..5, columns 1..4 (no resampling).
    patch = crops.crop_resize(image, np.array([1, 2, 5, 6]), 4, convention="fsanet")
    np.testing.assert_array_equal(patch, image[2:6, 1:5])
    with pytest.raises(ValueError, match="unknown crop convention 'tight'"):
        crops.crop_resize(image, np.array([1, 2, 5, 6]), 4, convention="tight")


def test_landmark_rules():
    pts = np.array([[5.0, 6.0], [-1.0, 30.0], [20.0, -1.0], [10.0, 12.0]])
    np.testing.assert_array_equal(crops.landmark_box(pts), [5, 6, 10, 12])
    # x > 0 keeps 3 points, y > 0 keeps 3: the x mask (ties keep x), so (20, -1) is in the box.
    np.testing.assert_array_equal(crops.landmark_box(pts, rule="fsanet"), [5, -1, 20, 12])
    pts[2, 0] = -1.0  # now x > 0 keeps 2 < 3: still the x mask
    np.testing.assert_array_equal(crops.landmark_box(pts, rule="fsanet"), [5, 6, 10, 12])
    np.testing.assert_array_equal(crops.landmark_box(pts, rule="all"), [-1, -1, 10, 30])  # Hopenet's loader
    with pytest.raises(ValueError, match="unknown landmark rule"):
        crops.landmark_box(pts, rule="x")


@pytest.fixture(scope="module")
def weights(testdata):
    return testdata / "fsanet_keras"


@pytest.fixture(scope="module")
def predictor(weights):
    """load_fsanet_keras by variant name, each loaded (and compiled) once per module."""
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_fsanet_keras(weights / f"{name}.h5")
        return cache[name]

    return get


def _mae(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.abs(predicted - truth).mean(axis=0)


@pytest.mark.parametrize("name", CAPSULE + OTHERS)
def test_official_variant_mae(name, predictor, aflw):
    *_, official, truth = aflw
    poses = predictor(name)(official)
    assert poses.shape == (16, 3) and poses.dtype == np.float32
    mae = _mae(poses, truth)
    print(f"{name}: yaw {mae[0]:.2f} pitch {mae[1]:.2f} roll {mae[2]:.2f} mean {mae.mean():.2f}")
    assert mae.mean() < (5.0 if name in CAPSULE else 6.0)
    # uint8 crops are the same input as their float values
    np.testing.assert_allclose(predictor(name)(official.astype(np.uint8)), poses, atol=1e-4)


def test_caps_fusion_mae_and_mean(weights, predictor, aflw):
    *_, official, truth = aflw
    fusion = fsanet_fusion([weights / f"{name}.h5" for name in CAPSULE])
    poses = fusion(official)
    mae = _mae(poses, truth)
    print(f"fusion: yaw {mae[0]:.2f} pitch {mae[1]:.2f} roll {mae[2]:.2f} mean {mae.mean():.2f}")
    assert mae.mean() < 4.5
    members = np.mean([predictor(name)(official) for name in CAPSULE], axis=0)
    np.testing.assert_allclose(poses, members, atol=1e-3)


def test_settings_from_file_names():
    assert fsanet_settings("a/fsanet_noS_capsule_3_16_2_192_5.h5") == {
        "scoring": "none", "aggregation": "capsule", "num_capsule": 3, "dim_capsule": 16,
        "routings": 2, "num_primcaps": 192, "m_dim": 5}
    assert fsanet_settings("fsanet_var_netvlad_3_16_2_21_5.h5")["scoring"] == "var"
    with pytest.raises(ValueError, match="does not name an FSA-Net variant"):
        fsanet_settings("resnet50.h5")


def test_diverged_published_weights_are_refused(weights):
    # The published var_netvlad file is NaN throughout; refusing it beats predicting NaN.
    with pytest.raises(ValueError, match=r"fsanet_var_netvlad_3_16_2_21_5\.h5: tensor .* non-finite"):
        load_fsanet_keras(weights / "fsanet_var_netvlad_3_16_2_21_5.h5")


def test_wrong_files_raise_one_line_errors(weights, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_fsanet_keras(tmp_path / "fsanet_capsule_3_16_2_21_5.h5")
    not_hdf5 = tmp_path / "fsanet_capsule_3_16_2_21_5.h5"
    not_hdf5.write_text("{}")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        load_fsanet_keras(not_hdf5)
    with h5py.File(not_hdf5, "w") as handle:
        handle["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a Keras weights file"):
        load_fsanet_keras(not_hdf5)


def _copy(weights, tmp_path, name: str, as_name: str | None = None):
    target = tmp_path / f"{as_name or name}.h5"
    shutil.copy(weights / f"{name}.h5", target)
    target.chmod(0o644)
    return target


def test_missing_or_misshaped_tensor_is_named(weights, tmp_path):
    path = _copy(weights, tmp_path, "fsanet_capsule_3_16_2_21_5")
    with h5py.File(path, "r+") as handle:
        del handle["ssr_Cap_model/caps/W:0"]
    with pytest.raises(ValueError, match=r"fsanet_capsule_3_16_2_21_5\.h5: missing tensor ssr_Cap_model/caps/W:0"):
        load_fsanet_keras(path)
    with h5py.File(path, "r+") as handle:
        handle["ssr_Cap_model/caps/W:0"] = np.zeros((3, 20, 16, 64), np.float32)
    with pytest.raises(ValueError, match=r"tensor ssr_Cap_model/caps/W:0 has shape \(3, 20, 16, 64\)"):
        load_fsanet_keras(path)


def test_file_of_another_variant_is_refused(weights, tmp_path):
    # 1x1-conv weights under a var. name: the scoring conv would be silently dropped.
    path = _copy(weights, tmp_path, "fsanet_capsule_3_16_2_21_5", as_name="fsanet_var_capsule_3_16_2_21_5")
    with pytest.raises(ValueError, match="unexpected tensor ssr_S_model/conv2d_7"):
        load_fsanet_keras(path)
