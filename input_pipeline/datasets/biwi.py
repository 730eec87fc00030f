"""BIWI Kinect Head Pose database (Fanelli et al., IJCV 2013): 24 sequences, ~15.7k frames.

Where to get it: https://icu.ee.ethz.ch/research/datsets.html (Biwi Kinect Head
Pose Database, `kinect_head_pose_db.tgz`; also mirrored on Kaggle);
non-commercial research use.

Folder: the extracted `hpdb/` folder (or its parent) with the sequence folders
`01` ... `24`, each holding `frame_XXXXX_rgb.png`, `frame_XXXXX_pose.txt` and
`rgb.cal`.

Build: `jaxpose data build biwi/protocol1 --source /path/to/kinect_head_pose_db`
(or `biwi/protocol2`; `--detections boxes.csv` to use your own face detections).

Labels. Pose: the 3x3 rotation of `frame_*_pose.txt`, read transposed as the
published evaluations do (`angles.from_biwi_rotation`). Face box, by default
geometric: the head centre of `frame_*_pose.txt` (mm, depth-camera frame) is
moved into the RGB camera frame with R, T of `rgb.cal` (depth -> RGB; this
direction overlays the projected head mesh on the head, the opposite one is
off by ~15 px), projected with its intrinsics and distortion, and a square of
`crops.BIWI_HEAD_BOX_MM` = 160 mm at that depth is put around it
(`crops.biwi_head_box`; 160 mm spans brow-to-chin and cheek-to-cheek, about
the 68-landmark box of 300W-LP). With a detections CSV (columns: frame path
relative to hpdb such as `01/frame_00003_rgb.png` or `01/00003`, x_min, y_min,
x_max, y_max; a header row is allowed) its boxes replace the geometric ones and
frames without a detection are skipped and counted ("no detection"), as the
published detector-based protocols drop them. Identity: the sequence number.

Protocols (builder configs):
* `protocol1`: every frame is a `test` record (train on 300W-LP, test on BIWI;
  Hopenet, FSA-Net protocol 1).
* `protocol2`: the 70/30 split by sequence of FSA-Net's protocol 2: 16
  sequences `train`, 8 `test`. FSA-Net drew its split with an unseeded
  `np.random.permutation`, so the published list is unknown; jaxpose fixes a
  subject-disjoint list, test = PROTOCOL2_TEST (03, 10, 12, 14, 15, 17, 20, 24;
  BIWI recorded F02, F03, F05 and M01 twice: 02/21, 03/15, 05/18, 07/22, and
  each pair stays on one side). Your own test list: the config name
  `protocol2_test_01_02_...` (two-digit sequence numbers), e.g.
  `biwi/protocol2_test_01_02_03_04_05_06_07_08`.
Angles outside [-99, 99] degrees are dropped and counted (BIWI has none).

Storage (version 1.1.0): `test` frames as lossless PNG at the source
resolution (BIWI faces are about 95 px), protocol-2 `train` frames as JPEG
with the face box downscaled to at most 128 px, both with `source_box`.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import crops
from input_pipeline.datasets.build import (
    BOX_OUTSIDE_IMAGE,
    MALFORMED_ANNOTATION,
    MISSING_ANNOTATION,
    Face,
    Item,
    PoseBuilder,
    SkipRecord,
    read_image,
)
from jaxpose import angles

NO_DETECTION = "no detection"
SEQUENCES = tuple(f"{i:02d}" for i in range(1, 25))
# Subject of each sequence (BIWI readme): four people were recorded twice.
SUBJECTS = dict(zip(SEQUENCES, (
    "F01 F02 F03 F04 F05 F06 M01 M02 M03 M04 M05 M06 M07 M08 F03 M09 M10 F05 M11 M12 F02 M01 M13 M14"
).split()))
PROTOCOL2_TEST = ("03", "10", "12", "14", "15", "17", "20", "24")
_CONFIG_NAME = re.compile(r"^(protocol1|protocol2)((?:_test(?:_\d\d)+)?)(_detections)?$")


@dataclasses.dataclass(eq=False)
class BiwiConfig(tfds.core.BuilderConfig):
    """test_sequences: None = every frame is test (protocol 1); detections: boxes from a CSV."""

    test_sequences: tuple[str, ...] | None = None
    detections: bool = False


def config_from_name(name: str) -> BiwiConfig:
    """Parse `protocol1|protocol2[_test_NN_NN...][_detections]` into a BiwiConfig."""
    match = _CONFIG_NAME.match(name)
    if not match or (match.group(1) == "protocol1" and match.group(2)):
        raise ValueError(
            f"unknown biwi config {name!r}; valid: protocol1, protocol2, protocol2_test_NN_NN... "
            "(two-digit test sequences), each optionally with _detections"
        )
    test = None
    if match.group(1) == "protocol2":
        test = tuple(match.group(2).split("_")[2:]) if match.group(2) else PROTOCOL2_TEST
        unknown = sorted(set(test) - set(SEQUENCES))
        if unknown or len(set(test)) != len(test):
            raise ValueError(f"biwi config {name!r}: test sequences must be distinct, in 01..24 (got {test})")
    description = "all frames test" if test is None else f"test sequences {' '.join(test)}"
    return BiwiConfig(name=name, description=description, test_sequences=test, detections=bool(match.group(3)))


def read_numbers(path: pathlib.Path, shapes: tuple[tuple[int, int], ...]) -> list[np.ndarray]:
    """Blocks of numbers of a BIWI text file (blank lines ignored), checked against `shapes`.

    Raises SkipRecord (missing / malformed annotation) naming the file.
    """
    if not path.is_file():
        raise SkipRecord(MISSING_ANNOTATION, path.name)
    try:
        rows = [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]
        blocks, start = [], 0
        for rows_n, cols in shapes:
            block = np.array(rows[start : start + rows_n], np.float64)
            if block.shape != (rows_n, cols):
                raise ValueError(f"expected {rows_n}x{cols} numbers at row {start + 1}")
            blocks.append(block)
            start += rows_n
    except ValueError as error:
        raise SkipRecord(MALFORMED_ANNOTATION, f"{path.parent.name}/{path.name}: {error}") from None
    return blocks


def read_calibration(path: pathlib.Path) -> dict[str, np.ndarray]:
    """`rgb.cal`: intrinsics (3x3), distortion (4), R (3x3) and T (3) depth -> RGB, image size."""
    k, dist, r, t, _ = read_numbers(path, ((3, 3), (1, 4), (3, 3), (1, 3), (1, 2)))
    return {"intrinsics": k, "distortion": dist[0], "rotation": r, "translation": t[0]}


def read_pose(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """`frame_*_pose.txt`: rotation (3, 3) and head centre (3,) mm; rejects non-rotations."""
    rotation, centre = read_numbers(path, ((3, 3), (1, 3)))
    if np.all(np.isfinite(rotation)) and np.abs(rotation @ rotation.T - np.eye(3)).max() > 1e-2:
        raise SkipRecord(MALFORMED_ANNOTATION, f"{path.parent.name}/{path.name}: not a rotation matrix")
    return rotation, centre[0]


def read_detections(path: pathlib.Path) -> dict[tuple[str, int], np.ndarray]:
    """User detections CSV -> {(sequence, frame number): box}; one-line ValueError on a bad row."""
    if not path.is_file():
        raise FileNotFoundError(f"detections CSV {path} not found")
    boxes = {}
    with path.open(newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle), 1):
            if not row or not "".join(row).strip():
                continue
            key = re.search(r"(\d\d)[/\\](?:frame_)?(\d+)", row[0])
            try:
                box = np.array([float(v) for v in row[1:5]], np.float32)
            except ValueError:
                box = None
            if line_number == 1 and (key is None or box is None):
                continue  # header row
            if key is None or box is None or box.shape != (4,):
                expected = "SEQ/frame_NNNNN_rgb.png,x_min,y_min,x_max,y_max"
                raise ValueError(f"{path}:{line_number}: expected '{expected}'")
            frame = (key.group(1), int(key.group(2)))
            if frame in boxes:
                raise ValueError(f"{path}:{line_number}: second detection for {row[0]}")
            boxes[frame] = box
    return boxes


def hpdb_folder(source: pathlib.Path) -> pathlib.Path | None:
    """The folder holding the sequence folders: source/hpdb, source/*/hpdb or source itself."""
    for folder in (source / "hpdb", *sorted(source.glob("*/hpdb")), source):
        if any((folder / seq).is_dir() for seq in SEQUENCES):
            return folder
    return None


class Biwi(PoseBuilder):
    """BIWI Kinect Head Pose (protocol 1 or 2), see the module docstring.

    detections: optional CSV of face boxes replacing the geometric boxes; the
    config name then gets a `_detections` suffix so both variants can coexist.
    """

    BUILDER_CONFIGS = [config_from_name("protocol1"), config_from_name("protocol2")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "expected the BIWI Kinect Head Pose folder (hpdb/01..24 with frame_*_rgb.png, frame_*_pose.txt, "
        "rgb.cal; kinect_head_pose_db.tgz of https://icu.ee.ethz.ch/research/datsets.html)"
    )
    HOMEPAGE = "https://icu.ee.ethz.ch/research/datsets.html"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First jaxpose release.",
        "1.1.0": "source_box feature; test frames stored as lossless PNG at full resolution "
        "(was JPEG quality 95), protocol-2 train frames unchanged (JPEG).",
    }

    def __init__(self, *, detections: str | pathlib.Path | None = None, **kwargs):
        config = kwargs.get("config")
        if detections is not None and (config is None or isinstance(config, str)):
            name = config or "protocol1"
            kwargs["config"] = name if name.endswith("_detections") else name + "_detections"
        self._detections_path = pathlib.Path(detections).expanduser() if detections is not None else None
        super().__init__(**kwargs)

    def _create_builder_config(self, builder_config, version):
        # Config names with a custom test list or detections are parsed, not listed.
        if isinstance(builder_config, str) and ":" not in builder_config:
            if builder_config not in type(self).builder_configs:
                builder_config = config_from_name(builder_config)
        return super()._create_builder_config(builder_config, version)

    @property
    def SPLITS(self) -> tuple[str, ...]:  # noqa: N802 (the base class's attribute name)
        return ("test",) if self.builder_config.test_sequences is None else ("train", "test")

    @property
    def PROTOCOL(self) -> str:  # noqa: N802 (the base class's attribute name)
        test = self.builder_config.test_sequences
        if test is None:
            return "protocol 1: every frame test; angles outside [-99, 99] deg dropped"
        return f"protocol 2: test sequences {' '.join(test)}; angles outside [-99, 99] deg dropped"

    def _scan(self, source: pathlib.Path) -> dict[str, list[Item]]:
        items = frame_items(source)
        if not any(_has_pair(item) for item in items):
            raise ValueError(
                f"no hpdb/NN/frame_*_rgb.png + frame_*_pose.txt found in {source}: {self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        self._detections, self._calibrations = None, {}
        if self.builder_config.detections:
            if self._detections_path is None:
                raise ValueError(f"biwi/{self.builder_config.name} needs a detections CSV (detections=PATH)")
            self._detections = read_detections(self._detections_path)
        test = self.builder_config.test_sequences
        if test is None:
            return {"test": items}
        return {
            "train": [i for i in items if i.data[1] not in test],
            "test": [i for i in items if i.data[1] in test],
        }

    def _calibration(self, folder: pathlib.Path) -> dict[str, np.ndarray]:
        """rgb.cal of a sequence, read once; a bad one skips every frame of the sequence."""
        if folder not in self._calibrations:
            try:
                self._calibrations[folder] = read_calibration(folder / "rgb.cal")
            except SkipRecord as skip:
                self._calibrations[folder] = skip
        calibration = self._calibrations[folder]
        if isinstance(calibration, SkipRecord):
            raise SkipRecord(calibration.reason, f"{folder.name}/rgb.cal: {calibration.detail}")
        return calibration

    def _load(self, item: Item, source: pathlib.Path) -> Face:
        hpdb, sequence, frame = item.data
        folder = hpdb / sequence
        image = read_image(folder / f"frame_{frame}_rgb.png")
        rotation, centre = read_pose(folder / f"frame_{frame}_pose.txt")
        pose = angles.from_biwi_rotation(rotation)
        if self._detections is not None:
            box = self._detections.get((sequence, int(frame)))
            if box is None:
                raise SkipRecord(NO_DETECTION, item.name)
        else:
            try:
                box = crops.biwi_head_box(centre, **self._calibration(folder))
            except ValueError as error:
                raise SkipRecord(BOX_OUTSIDE_IMAGE, str(error)) from None
        filename = str((folder / f"frame_{frame}_rgb.png").relative_to(source))
        return Face(item.name, filename, sequence, image, pose, box)

    def _notes(self) -> dict:
        test = self.builder_config.test_sequences
        notes = {
            "box": f"detections CSV {self._detections_path}" if self._detections is not None
            else f"geometric: {crops.BIWI_HEAD_BOX_MM:g} mm square at the projected head centre",
            "identity": "sequence number",
        }
        if test is not None:
            notes["test_sequences"] = list(test)
            notes["train_sequences"] = [s for s in SEQUENCES if s not in test]
            notes["test_subjects"] = sorted({SUBJECTS[s] for s in test})
            notes["train_subjects"] = sorted({SUBJECTS[s] for s in SEQUENCES if s not in test})
        return notes


def frame_items(source: pathlib.Path) -> list[Item]:
    """One Item per frame found as image or pose file in hpdb/NN (a missing half is reported at load)."""
    hpdb, items = hpdb_folder(source), []
    for folder in sorted(p for p in (hpdb.iterdir() if hpdb else []) if re.fullmatch(r"\d\d", p.name)):
        names = (re.fullmatch(r"frame_(\d+)_(?:rgb\.png|pose\.txt)", p.name) for p in folder.glob("frame_*"))
        frames = sorted({m.group(1) for m in names if m})
        items += [Item(f"{folder.name}/frame_{f}_rgb.png", (hpdb, folder.name, f)) for f in frames]
    return items


def _has_pair(item: Item) -> bool:
    hpdb, sequence, frame = item.data
    folder = hpdb / sequence
    return (folder / f"frame_{frame}_rgb.png").is_file() and (folder / f"frame_{frame}_pose.txt").is_file()
