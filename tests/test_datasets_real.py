"""The real-dataset TFDS builders on the shared fixtures and on generated files in the real formats."""

from __future__ import annotations

import pathlib
import shutil
import sqlite3

import cv2
import h5py
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from input_pipeline import crops
from input_pipeline.datasets import registry
from input_pipeline.datasets.build import Face, build_dataset, crop_example
from input_pipeline.datasets.features import decode_image, features


def records(name: str, data_dir: pathlib.Path, split: str, *, decode: bool = True) -> list[dict]:
    decoders = None if decode else {"image": tfds.decode.SkipDecoding()}
    source = registry.get_builder(name, data_dir).as_data_source(decoders=decoders)[split]
    return [source[i] for i in range(len(source))]


PNG, JPEG = b"\x89PNG", b"\xff\xd8"


def to_source(record: dict, width: int, height: int) -> np.ndarray:
    """The record's box mapped back to source-image pixels through its source_box."""
    source_box = record["source_box"].astype(np.float64)
    scale = (source_box[2:] - source_box[:2]) / [width, height]
    return ((record["box"].reshape(2, 2) - source_box[:2]) / scale).reshape(4)


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check_geometry(record: dict, landmark_box: bool = True) -> None:
    """Published crops inside the stored crop; box = tight box of the valid stored landmarks."""
    height, width = record["image"].shape[:2]
    box = record["box"]
    # Hopenet's widest training crop (k = 0.4) and FSA-Net's ad = 0.6 crop fit without clipping.
    for region in (crops.hopenet_crop(box, k=0.4), crops.scale_box(box, 2.2)):
        assert region[0] >= -0.5 and region[1] >= -0.5 and region[2] <= width + 0.5 and region[3] <= height + 0.5
    points = record["landmarks"]
    valid = points[np.all(points >= 0, axis=1)]
    if landmark_box and len(valid) >= 5:
        np.testing.assert_allclose(np.r_[valid.min(0), valid.max(0)], box, atol=1e-3)


# --- AFLW2000 and 300W-LP ---------------------------------------------------------


def test_aflw2000_fixture(testdata, tmp_path):
    report = build_dataset("aflw2000", testdata / "aflw2000", tmp_path)
    assert report["splits"] == {"test": 16} and report["skipped"] == {}
    assert report["protocol_filter"]["dropped"] == 0
    got = records("aflw2000", tmp_path, "test")
    assert len(got) == 16
    for record in got:
        mat = scipy.io.loadmat(testdata / "aflw2000" / text(record["filename"]).replace(".jpg", ".mat"))
        expected = np.degrees(mat["Pose_Para"][0, [1, 0, 2]].astype(np.float64))
        np.testing.assert_allclose(record["pose"], expected, atol=1e-4)
        assert text(record["identity"]) == text(record["filename"])[:-4]
        missing = np.any(mat["pt2d"].T <= 0, axis=1)
        np.testing.assert_array_equal(np.all(record["landmarks"] == -1, axis=1), missing)
        check_geometry(record)
        # The test split keeps the source resolution (faces of 135-210 px, above MAX_FACE_SIDE):
        # source_box is the 450 x 450 image moved by a whole-pixel origin, and maps the box back.
        source_box = record["source_box"]
        np.testing.assert_array_equal(source_box[2:] - source_box[:2], [450, 450])
        np.testing.assert_array_equal(source_box, np.round(source_box))
        np.testing.assert_allclose(to_source(record, 450, 450), crops.landmark_box(mat["pt2d"].T), atol=1e-3)


def test_aflw2000_test_split_holds_the_source_pixels(testdata, tmp_path):
    """Lossless PNG at full resolution: inside source_box the source pixels exactly, black outside."""
    build_dataset("aflw2000", testdata / "aflw2000", tmp_path)
    encoded = {text(r["filename"]): r["image"] for r in records("aflw2000", tmp_path, "test", decode=False)}
    for record in records("aflw2000", tmp_path, "test"):
        assert encoded[text(record["filename"])][:4] == PNG
        source = cv2.imread(str(testdata / "aflw2000" / text(record["filename"])))[:, :, ::-1]
        x0, y0 = (-record["source_box"][:2]).astype(int)  # the crop's origin in the source image
        stored = record["image"]
        height, width = stored.shape[:2]
        inside = np.zeros((height, width), bool)
        inside[max(0, -y0) : 450 - y0, max(0, -x0) : 450 - x0] = True
        window = source[max(0, y0) : y0 + height, max(0, x0) : x0 + width]
        np.testing.assert_array_equal(stored[inside].reshape(window.shape), window)
        assert not stored[~inside].any()


def test_300w_lp_identity_top_level_and_flip_folder(testdata, tmp_path):
    report = build_dataset("the300w_lp", testdata / "300w_lp", tmp_path / "data")
    assert report["splits"] == {"train": 1}
    (record,) = records("the300w_lp", tmp_path / "data", "train")
    assert text(record["identity"]) == "IBUG_image_008_1"
    assert text(record["filename"]) == "IBUG_image_008_1_0.jpg"
    mat = scipy.io.loadmat(testdata / "300w_lp" / "IBUG_image_008_1_0.mat")
    np.testing.assert_allclose(record["pose"], np.degrees(mat["Pose_Para"][0, [1, 0, 2]]), atol=1e-4)
    assert record["landmarks"].shape == (68, 2)
    check_geometry(record)
    # A training split: JPEG, the face box downscaled to MAX_FACE_SIDE (128 px); source_box is
    # the 450 x 450 image scaled the same way and maps the stored box back to the source box.
    (raw,) = records("the300w_lp", tmp_path / "data", "train", decode=False)
    assert raw["image"][:2] == JPEG
    assert max(record["box"][2:] - record["box"][:2]) < 128.5  # up to rounding of the crop size
    source_box = np.r_[mat["pt2d"].T.min(0), mat["pt2d"].T.max(0)]
    np.testing.assert_allclose(to_source(record, 450, 450), source_box, atol=0.02)
    # The standard layout: IBUG/ and IBUG_Flip/ folders; the mirrored twin has its own identity.
    source = tmp_path / "300W_LP"
    for folder in ("IBUG", "IBUG_Flip"):
        (source / folder).mkdir(parents=True)
        for suffix in (".jpg", ".mat"):
            shutil.copy(testdata / "300w_lp" / f"IBUG_image_008_1_0{suffix}", source / folder)
    build_dataset("the300w_lp", source, tmp_path / "data2")
    got = {text(r["filename"]): text(r["identity"]) for r in records("the300w_lp", tmp_path / "data2", "train")}
    assert got == {
        "IBUG/IBUG_image_008_1_0.jpg": "IBUG_image_008_1",
        "IBUG_Flip/IBUG_image_008_1_0.jpg": "IBUG_image_008_1_Flip",
    }


def test_bad_records_are_counted_by_reason(testdata, tmp_path, capsys):
    source = tmp_path / "AFLW2000"
    shutil.copytree(testdata / "aflw2000", source)
    data = (source / "image00050.jpg").read_bytes()
    (source / "image00050.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    (source / "image00081.mat").unlink()
    for stem, yaw in (("image00251", np.nan), ("image00430", np.radians(120.0))):
        mat = scipy.io.loadmat(source / f"{stem}.mat")
        mat["Pose_Para"][0, 1] = yaw
        scipy.io.savemat(source / f"{stem}.mat", {"Pose_Para": mat["Pose_Para"], "pt2d": mat["pt2d"]})
    report = build_dataset("aflw2000", source, tmp_path / "data")
    assert report["splits"] == {"test": 12}
    assert report["skipped"] == {"unreadable image": 1, "missing annotation": 1, "non-finite pose": 1}
    assert report["protocol_filter"]["dropped"] == 1
    assert report["protocol_filter"]["examples"][0].startswith("image00430")
    examples = report["skipped_examples"]
    assert [e.split(" ")[0] for e in examples["unreadable image"]] == ["image00050"]
    assert [e.split(" ")[0] for e in examples["missing annotation"]] == ["image00081"]
    assert [e.split(" ")[0] for e in examples["non-finite pose"]] == ["image00251"]
    printed = capsys.readouterr().out
    assert "dropped 1" in printed and "unreadable image 1" in printed
    # The counts are saved with the dataset and read back by a fresh builder.
    metadata = registry.get_builder("aflw2000", tmp_path / "data").info.metadata
    assert metadata["skipped"] == report["skipped"] and metadata["protocol_filter"]["dropped"] == 1
    # A second build reuses the stored dataset and its report; overwrite=True rebuilds.
    again = build_dataset("aflw2000", source, tmp_path / "data")
    assert again["reused"] and again["skipped"] == report["skipped"]
    shutil.copy(testdata / "aflw2000" / "image00050.jpg", source)
    rebuilt = build_dataset("aflw2000", source, tmp_path / "data", overwrite=True)
    assert not rebuilt["reused"] and rebuilt["splits"] == {"test": 13}
    assert rebuilt["skipped"] == {"missing annotation": 1, "non-finite pose": 1}


def test_wrong_folder_and_names(testdata, tmp_path):
    with pytest.raises(ValueError, match=r"no image\*\.jpg \+ \.mat pairs found in .*300w_lp: expected the AFLW2000"):
        build_dataset("aflw2000", testdata / "300w_lp", tmp_path)
    with pytest.raises(ValueError, match=r"no \.jpg \+ \.mat pairs found in .*: expected the 300W_LP folder"):
        build_dataset("the300w_lp", testdata / "biwi", tmp_path)
    with pytest.raises(ValueError, match=r"no hpdb/NN/frame_.* found in .*aflw2000: expected the BIWI"):
        build_dataset("biwi/protocol1", testdata / "aflw2000", tmp_path)
    with pytest.raises(ValueError, match=r"no aflw\.sqlite found"):
        build_dataset("aflw", testdata / "aflw2000", tmp_path)
    with pytest.raises(ValueError, match=r"no anno\.mat found"):
        build_dataset("afw", testdata / "aflw2000", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        build_dataset("nope", testdata, tmp_path)
    with pytest.raises(FileNotFoundError, match="source folder .*missing not found: expected the AFLW2000-3D"):
        build_dataset("aflw2000", tmp_path / "missing", tmp_path)
    with pytest.raises(ValueError, match="unknown biwi config 'protocol3'"):
        build_dataset("biwi/protocol3", testdata / "biwi", tmp_path)
    with pytest.raises(ValueError, match="test sequences must be distinct, in 01..24"):
        build_dataset("biwi/protocol2_test_01_25", testdata / "biwi", tmp_path)
    assert not list(tmp_path.rglob("*.array_record*"))  # nothing half-built left behind


class ToyGenerated(tfds.core.GeneratorBasedBuilder):
    """A generated dataset (no manual folder), as synthetic_heads."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({"x": np.int32}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(3):
            yield i, {"x": i}


def test_generated_dataset_takes_no_source(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "builder_class", lambda name: ToyGenerated)
    report = build_dataset("toy_generated", None, tmp_path)
    assert report["splits"] == {"train": 3} and "skipped" not in report
    with pytest.raises(ValueError, match="toy_generated is generated, not read from files: it takes no source"):
        build_dataset("toy_generated", tmp_path, tmp_path)


def test_crop_example_formats_scaling_and_source_box():
    """Lossless: PNG, unscaled up to LOSSLESS_MAX_FACE_SIDE; else JPEG at MAX_FACE_SIDE; source_box maps back."""
    image = np.random.default_rng(0).integers(0, 256, (700, 900, 3), dtype=np.uint8)
    face = Face("k", "f.jpg", "id", image, np.zeros(3, np.float32), np.array([50, 100, 250, 400], np.float32))
    example = crop_example(face, lossless=True)
    assert example["image"][:4] == PNG
    stored = decode_image(example["image"])[..., ::-1]  # back to BGR, as the source
    # By hand: the loose region is Hopenet's k = 0.4 crop on the left, top and right (50 - 0.8 * 200,
    # 100 - 0.8 * 300, 250 + 0.8 * 360), FSA-Net's on the bottom (400 + 0.6 * 300), + 0.1 box sizes:
    # (-130, -170, 558, 610); source_box = (0, 0, 900, 700) - origin.
    np.testing.assert_array_equal(example["box"], [180, 270, 380, 570])
    np.testing.assert_array_equal(example["source_box"], [130, 170, 1030, 870])
    assert stored.shape == (780, 688, 3)
    np.testing.assert_array_equal(stored[170:, 130:], image[:610, :558])  # the source pixels, exactly
    assert not stored[:170].any() and not stored[:, :130].any()  # black beyond the source image
    # FSA-Net's box leaves the image on the left and top (50 - 0.6 * 200 < 0, 100 - 0.6 * 300 < 0):
    # clipped at source_box it cuts the source's pixels; clipped at the stored crop's edges it would not.
    official = crops.crop_resize(image, crops.crop_box("fsanet", face.box, image.shape), 64, convention="fsanet")
    region = crops.crop_box("fsanet", example["box"], stored.shape, bounds=example["source_box"])
    np.testing.assert_array_equal(crops.crop_resize(stored, region, 64, convention="fsanet"), official)
    padded = crops.crop_box("fsanet", example["box"], stored.shape)
    assert not np.array_equal(crops.crop_resize(stored, padded, 64, convention="fsanet"), official)
    # Training splits: JPEG, the 300 px face downscaled to 128 px; source_box scales with it.
    example = crop_example(face)
    assert example["image"][:2] == JPEG and max(example["box"][2:] - example["box"][:2]) < 128.5
    np.testing.assert_allclose(to_source(example, 900, 700), face.box, atol=0.05)
    # A face above LOSSLESS_MAX_FACE_SIDE is downscaled to it even in a test split.
    face.box = np.array([100, 50, 500, 650], np.float32)
    example = crop_example(face, lossless=True)
    assert example["image"][:4] == PNG and abs(max(example["box"][2:] - example["box"][:2]) - 512) < 0.5
    np.testing.assert_allclose(to_source(example, 900, 700), face.box, atol=0.05)


@pytest.mark.parametrize("name, encoding", [
    ("aflw2000", "png"), ("the300w_lp", "jpeg"), ("biwi/protocol1", "png"), ("biwi/protocol2", None),
    ("aflw", None), ("afw", "png"),
])
def test_declared_image_format(tmp_path, name, encoding):
    """Test-only builders declare PNG, training-only JPEG, mixed ones None (the bytes tell)."""
    builder = registry.get_builder(name, tmp_path)
    assert builder.info.features["image"].encoding_format == encoding
    assert "source_box" in builder.info.features and builder.version.minor >= 1


def test_features_reject_unknown_format():
    with pytest.raises(ValueError, match="unknown image encoding_format 'gif'"):
        features("gif")


# --- BIWI ----------------------------------------------------------------------------


def biwi_calibration(testdata):
    rows = [line.split() for line in (testdata / "biwi/hpdb/01/rgb.cal").read_text().splitlines() if line.split()]
    k, rotation, translation = np.array(rows[0:3], float), np.array(rows[4:7], float), np.array(rows[7], float)
    pose = np.loadtxt(testdata / "biwi/hpdb/01/frame_00003_pose.txt")
    return k, rotation, translation, pose[:3], pose[3]


def test_biwi_head_box_by_hand():
    k = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    box = crops.biwi_head_box(np.array([100.0, 50, 1000]), k, np.zeros(4), np.eye(3), np.zeros(3), size_mm=160)
    # u = 500 * 100 / 1000 + 320 = 370, v = 500 * 50 / 1000 + 240 = 265, half side = 500 * 80 / 1000 = 40.
    np.testing.assert_allclose(box, [330, 225, 410, 305], atol=1e-4)
    shifted = crops.biwi_head_box(np.array([100.0, 50, 1000]), k, np.zeros(4), np.eye(3), np.array([-100.0, 0, 0]))
    np.testing.assert_allclose(shifted, [280, 225, 360, 305], atol=1e-4)  # translation applied before projecting
    with pytest.raises(ValueError, match="not in front"):
        crops.biwi_head_box(np.array([0.0, 0, -5]), k, np.zeros(4), np.eye(3), np.zeros(3))


def test_biwi_pose_and_geometric_box(testdata, tmp_path):
    report = build_dataset("biwi/protocol1", testdata / "biwi", tmp_path)
    assert report["splits"] == {"test": 1} and report["skipped"] == {}
    (record,) = records("biwi/protocol1", tmp_path, "test")
    np.testing.assert_allclose(record["pose"], [3.3, 7.6, -1.6], atol=0.05)
    assert text(record["identity"]) == "01" and text(record["filename"]) == "hpdb/01/frame_00003_rgb.png"
    assert record["landmarks"].shape == (0, 2)
    check_geometry(record)
    # Head centre moved into the RGB frame (R c + T) and projected, by hand.
    k, rot, trans, _, centre = biwi_calibration(testdata)
    c = rot @ centre + trans
    u, v, side = k[0, 0] * c[0] / c[2] + k[0, 2], k[1, 1] * c[1] / c[2] + k[1, 2], k[0, 0] * 160 / c[2]
    box = record["box"]
    np.testing.assert_allclose(box[2:] - box[:2], [side, side], atol=1e-3)  # 94 px: not downscaled
    # The stored pixels around the box centre are the source pixels around (u, v).
    source = cv2.imread(str(testdata / "biwi/hpdb/01/frame_00003_rgb.png"))[:, :, ::-1].astype(np.float32)
    cx, cy = (box[:2] + box[2:]) / 2
    ox, oy = round(u - cx), round(v - cy)  # the crop's integer origin in the source image
    np.testing.assert_allclose([u - cx, v - cy], [ox, oy], atol=1e-3)
    np.testing.assert_array_equal(record["source_box"], [-ox, -oy, 640 - ox, 480 - oy])
    rows, cols = slice(int(cy) - 30, int(cy) + 30), slice(int(cx) - 30, int(cx) + 30)
    stored = record["image"][rows, cols].astype(np.float32)
    expected = source[rows.start + oy : rows.stop + oy, cols.start + ox : cols.stop + ox]
    np.testing.assert_array_equal(stored, expected)  # test frames are lossless PNG
    (raw,) = records("biwi/protocol1", tmp_path, "test", decode=False)
    assert raw["image"][:4] == PNG
    # The face is inside the box: the head mesh (01.obj) posed and projected covers the box,
    # and the box covers the mesh's face half (vertices in front of the head centre).
    lines = (testdata / "biwi/hpdb/01.obj").read_text().splitlines()
    mesh = np.array([line.split()[1:4] for line in lines if line.startswith("v ")], float)
    _, _, _, rotation, _ = biwi_calibration(testdata)
    points = (rot @ ((rotation @ mesh.T).T + centre).T).T + trans
    uv = (k @ points.T).T[:, :2] / points[:, 2:3] - [u - (box[0] + box[2]) / 2, v - (box[1] + box[3]) / 2]
    head = np.r_[uv.min(0), uv.max(0)]
    assert head[0] < box[0] and head[1] < box[1] and head[2] > box[2] and head[3] > box[3]
    nose = uv[np.argmax(mesh[:, 2])]  # the model's nose tip: in the box's central half
    assert np.all(np.abs(nose - (box[:2] + box[2:]) / 2) < (box[2:] - box[:2]) / 4)
    front = uv[mesh[:, 2] > 60]  # the front of the head: face, forehead, ears, chin
    assert np.all((front >= box[:2]) & (front <= box[2:]), axis=1).mean() > 0.5


def test_biwi_protocol2_and_detections(testdata, tmp_path):
    report = build_dataset("biwi/protocol2", testdata / "biwi", tmp_path)
    assert report["splits"] == {"train": 1}  # sequence 01 trains; the fixture has no test sequence
    (raw,) = records("biwi/protocol2", tmp_path, "train", decode=False)
    assert raw["image"][:2] == JPEG  # training frames stay JPEG
    assert report["test_sequences"] == ["03", "10", "12", "14", "15", "17", "20", "24"]
    assert len(report["train_sequences"]) == 16
    assert not set(report["test_subjects"]) & set(report["train_subjects"])  # no person on both sides
    report = build_dataset("biwi/protocol2_test_01_05", testdata / "biwi", tmp_path)
    assert report["splits"] == {"test": 1} and report["test_sequences"] == ["01", "05"]
    csv = tmp_path / "boxes.csv"
    csv.write_text("path,x_min,y_min,x_max,y_max\n01/frame_00003_rgb.png,300,200,380,300\n")
    report = build_dataset("biwi/protocol1", testdata / "biwi", tmp_path, detections=csv)
    assert report["dataset"] == "biwi/protocol1_detections" and report["box"].startswith("detections CSV")
    (record,) = records("biwi/protocol1_detections", tmp_path, "test")
    # Stored x 9/11 so that the fsanet crop (ad 0.6) cuts FSA-Net's BIWI region, the box + 0.4 (biwi.py).
    np.testing.assert_allclose(record["box"][2:] - record["box"][:2], np.array([80, 100]) * 9 / 11, atol=1e-3)
    csv.write_text("02/00003,300,200,380,300\n")  # no detection for 01/frame_00003
    with pytest.raises(ValueError, match=r"no valid record for the train split in .*: 1 skipped \{'no detection'"):
        build_dataset("biwi/protocol2_detections", testdata / "biwi", tmp_path, detections=csv)
    csv.write_text("01/00003,300,200\n")
    with pytest.raises(ValueError, match=r"boxes\.csv:1: expected"):
        build_dataset("biwi/protocol1", testdata / "biwi", tmp_path / "x", detections=csv)


# --- AFLW (generated database with the release's schema) -----------------------------

AFLW_SCHEMA = """
CREATE TABLE FaceImages (image_id INTEGER PRIMARY KEY, db_id TEXT, file_id TEXT, filepath TEXT,
                         bw INTEGER, width INTEGER, height INTEGER);
CREATE TABLE Faces (face_id INTEGER PRIMARY KEY, file_id TEXT, db_id TEXT);
CREATE TABLE FacePose (face_id INTEGER, roll FLOAT, pitch FLOAT, yaw FLOAT, annot_type_id INTEGER);
CREATE TABLE FaceRect (face_id INTEGER, x INTEGER, y INTEGER, w INTEGER, h INTEGER, annot_type_id INTEGER);
CREATE TABLE FeatureCoords (face_id INTEGER, feature_id INTEGER, x FLOAT, y FLOAT, annot_type_id INTEGER);
CREATE TABLE FaceMetaData (face_id INTEGER, sex TEXT, occluded INTEGER, glasses INTEGER, bw INTEGER,
                           annot_type_id INTEGER);
"""


def face_image(seed: int, height: int = 240, width: int = 320) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    cv2.ellipse(image, (width // 2, height // 2), (50, 65), 0, 0, 360, (150, 180, 220), -1)
    return image


AFLW_OWNERS = {1: "image00002.jpg", 2: "image00002.jpg", 3: "image00004.jpg", 6: "image00004.jpg",
               4: "image00006.jpg", 5: "image00008.jpg"}


def make_aflw(root: pathlib.Path) -> dict:
    """aflw/data with 4 images, 6 faces: 3 good, 1 out of range, 1 without pose, 1 image missing."""
    data = root / "aflw" / "data"
    images = {"image00002.jpg": "0", "image00004.jpg": "2", "image00006.jpg": "3", "image00008.jpg": "3"}
    for i, (name, sub) in enumerate(images.items()):
        (data / "flickr" / sub).mkdir(parents=True, exist_ok=True)
        if name != "image00008.jpg":
            cv2.imwrite(str(data / "flickr" / sub / name), face_image(i))
    poses = {1: (0.1, -0.2, 0.3), 2: (-0.5, 0.05, -0.1), 3: (0.0, 0.1, 2.0), 5: (0.1, 0.1, 0.1), 6: (0, 0.2, -0.3)}
    points = {1: [(k, 130.0 + 7 * k, 90.0 + 3 * k) for k in range(1, 11)], 2: [(8, 100.0, 100.0), (9, 120.0, 110.0)]}
    with sqlite3.connect(data / "aflw.sqlite") as db:
        db.executescript(AFLW_SCHEMA)
        for i, (name, sub) in enumerate(images.items()):
            db.execute("INSERT INTO FaceImages VALUES (?, 'flickr', ?, ?, 0, 320, 240)", (i + 1, name, f"{sub}/{name}"))
        for face_id, name in AFLW_OWNERS.items():
            db.execute("INSERT INTO Faces VALUES (?, ?, 'flickr')", (face_id, name))
            db.execute("INSERT INTO FaceRect VALUES (?, 100, 70, 120, 110, 1)", (face_id,))
        for face_id, (roll, pitch, yaw) in poses.items():
            db.execute("INSERT INTO FacePose VALUES (?, ?, ?, ?, 1)", (face_id, roll, pitch, yaw))
        for face_id, pts in points.items():
            db.executemany("INSERT INTO FeatureCoords VALUES (?, ?, ?, ?, 1)", [(face_id, *p) for p in pts])
    return {"poses": poses, "points": points}


def test_aflw_generated_database(tmp_path):
    truth = make_aflw(tmp_path / "src")
    report = build_dataset("aflw/test2", tmp_path / "src", tmp_path / "data")
    # Test images: the first 2 of the sorted file_ids permuted by default_rng(0), with all their faces.
    file_ids = sorted(set(AFLW_OWNERS.values()))
    test_ids = {file_ids[i] for i in np.random.default_rng(0).permutation(len(file_ids))[:2]}
    expected = {"train": set(), "test": set()}
    for face_id in (1, 2, 6):  # the usable faces
        expected["test" if AFLW_OWNERS[face_id] in test_ids else "train"].add(f"aflw_{face_id}")
    assert report["splits"] == {split: len(ids) for split, ids in expected.items() if ids}
    assert report["skipped"] == {"missing annotation": 1, "missing image": 1}
    assert report["protocol_filter"]["dropped"] == 1 and report["box_from_face_rect"] == 2
    got = {}
    for split in report["splits"]:
        split_records = records("aflw/test2", tmp_path / "data", split)
        assert {text(r["identity"]) for r in split_records} == expected[split]
        got.update({text(r["identity"]): r for r in split_records})
    for face_id in (1, 2, 6):
        roll, pitch, yaw = truth["poses"][face_id]
        np.testing.assert_allclose(got[f"aflw_{face_id}"]["pose"], np.degrees([yaw, pitch, -roll]), atol=1e-4)
    record = got["aflw_1"]
    assert text(record["filename"]) == "aflw/data/flickr/0/image00002.jpg"
    check_geometry(record)  # 10 points: the landmark box
    assert np.sum(np.all(record["landmarks"] >= 0, axis=1)) == 10
    w, h = got["aflw_2"]["box"][2:] - got["aflw_2"]["box"][:2]
    np.testing.assert_allclose([w, h], [120, 110], atol=1e-3)  # 2 points: the FaceRect
    np.testing.assert_allclose(to_source(got["aflw_2"], 320, 240), [100, 70, 220, 180], atol=1e-3)
    for split in report["splits"]:  # test faces lossless, training faces JPEG
        for raw in records("aflw/test2", tmp_path / "data", split, decode=False):
            assert raw["image"][:4 if split == "test" else 2] == (PNG if split == "test" else JPEG)


# --- AFW (generated anno.mat in the release layout) ----------------------------------

AFW_FACES = {  # image -> [(box [x1 y1; x2 y2], [yaw pitch roll] degrees, 6x2 landmarks)]
    "img1.jpg": [
        ([[60.0, 50.0], [160.0, 170.0]], [30.0, -5.0, 2.0], np.c_[np.linspace(70, 150, 6), np.linspace(80, 150, 6)]),
        ([[180.0, 60.0], [260.0, 150.0]], [-45.0, np.nan, np.nan], np.full((6, 2), np.nan)),
    ],
    "img2.jpg": [
        ([[40.0, 40.0], [120.0, 130.0]], [120.0, 0.0, 0.0], np.zeros((6, 2))),
        ([[150.0, 40.0], [220.0, 130.0]], [np.nan, 0.0, 0.0], np.zeros((6, 2))),
    ],
}


def write_anno_v5(path: pathlib.Path) -> None:
    anno = np.empty((len(AFW_FACES), 4), object)
    for i, (name, faces) in enumerate(AFW_FACES.items()):
        anno[i, 0] = name
        for column in (1, 2, 3):
            cell = np.empty((1, len(faces)), object)
            for j, face in enumerate(faces):
                cell[0, j] = np.array(face[column - 1], float).reshape([(2, 2), (1, 3), (6, 2)][column - 1])
            anno[i, column] = cell
    scipy.io.savemat(path, {"anno": anno})


def write_anno_v73(path: pathlib.Path) -> None:
    """MATLAB v7.3 layout: HDF5, arrays transposed, cells as object references under #refs#."""
    with h5py.File(path, "w") as file:
        refs = file.create_group("#refs#")
        counter = iter(range(10**6))

        def put(value) -> h5py.Reference:
            if isinstance(value, str):
                data = np.array([[ord(c)] for c in value], np.uint16)
                node = refs.create_dataset(str(next(counter)), data=data)
                node.attrs["MATLAB_class"] = np.bytes_("char")
            elif isinstance(value, list):  # a 1xF cell
                data = np.array([[put(v)] for v in value], dtype=h5py.ref_dtype)
                node = refs.create_dataset(str(next(counter)), data=data)
                node.attrs["MATLAB_class"] = np.bytes_("cell")
            else:
                node = refs.create_dataset(str(next(counter)), data=np.asarray(value, float).T)
                node.attrs["MATLAB_class"] = np.bytes_("double")
            return node.ref

        table = np.empty((4, len(AFW_FACES)), dtype=h5py.ref_dtype)
        for i, (name, faces) in enumerate(AFW_FACES.items()):
            table[0, i] = put(name)
            for column in (1, 2, 3):
                table[column, i] = put([np.array(face[column - 1], float) for face in faces])
        file.create_dataset("anno", data=table).attrs["MATLAB_class"] = np.bytes_("cell")


@pytest.mark.parametrize("writer", [write_anno_v5, write_anno_v73])
def test_afw_generated_anno(tmp_path, writer):
    folder = tmp_path / "AFW" / "testimages"
    folder.mkdir(parents=True)
    for i, name in enumerate(AFW_FACES):
        cv2.imwrite(str(folder / name), face_image(i))
    writer(folder / "anno.mat")
    report = build_dataset("afw", tmp_path / "AFW", tmp_path / "data")
    assert report["splits"] == {"test": 2} and report["skipped"] == {"non-finite pose": 1}
    assert report["protocol_filter"]["dropped"] == 1
    assert report["valid_angles"] == ["yaw"] and report["pitch_roll_set_to_zero"] == 1
    got = {text(r["identity"]): r for r in records("afw", tmp_path / "data", "test")}
    assert sorted(got) == ["img1_0", "img1_1"]
    np.testing.assert_allclose(got["img1_0"]["pose"], [30, -5, 2], atol=1e-5)
    np.testing.assert_allclose(got["img1_1"]["pose"], [-45, 0, 0], atol=1e-5)
    np.testing.assert_allclose(got["img1_0"]["box"][2:] - got["img1_0"]["box"][:2], [100, 120], atol=1e-3)
    assert np.all(got["img1_1"]["landmarks"] == -1) and got["img1_0"]["landmarks"].shape == (6, 2)
    assert text(got["img1_0"]["filename"]) == "testimages/img1.jpg"
    # The landmarks keep their place relative to the box.
    record = got["img1_0"]
    check_geometry(record, landmark_box=False)  # AFW's box is the annotated box
    np.testing.assert_allclose(record["landmarks"][0] - record["box"][:2], [10, 30], atol=1e-3)
    np.testing.assert_array_equal(record["box"] - np.tile(record["source_box"][:2], 2), [60, 50, 160, 170])
    np.testing.assert_array_equal(record["source_box"][2:] - record["source_box"][:2], [320, 240])
