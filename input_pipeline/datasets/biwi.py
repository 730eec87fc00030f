"""BIWI Kinect Head Pose database (Fanelli et al., IJCV 2013): 24 sequences, ~15.7k frames.

Where to get it: https://icu.ee.ethz.ch/research/datsets.html (Biwi Kinect Head
Pose Database, `kinect_head_pose_db.tgz`; also mirrored on Kaggle);
non-commercial research use.

Folder: the extracted `hpdb/` folder (or its parent) with the sequence folders
`01` ... `24`, each holding `frame_XXXXX_rgb.png`, `frame_XXXXX_pose.txt` and
`rgb.cal`.

Build: `jaxpose data build biwi/protocol1 --source /path/to/kinect_head_pose_db`
(or another config below; `--detections boxes.csv` for the detector protocol).

Labels. Pose: the 3x3 rotation of `frame_*_pose.txt`, read transposed as the
published evaluations do (`angles.from_biwi_rotation`). Identity: the
sequence number. Face box, by default geometric: the head centre of
`frame_*_pose.txt` (mm, depth-camera frame) is moved into the RGB camera frame
with R, T of `rgb.cal` (depth -> RGB; this direction overlays the projected
head mesh on the head, the opposite one is off by ~15 px), projected with its
intrinsics and distortion, and a square of `crops.BIWI_HEAD_BOX_MM` = 160 mm
at that depth is put around it (`crops.biwi_head_box`; 160 mm spans
brow-to-chin and cheek-to-cheek, about the 68-landmark box of 300W-LP). Every
frame has one, so the geometric protocol keeps every readable frame.

Detector protocol (config suffix `_detections`, `--detections CSV`). FSA-Net,
RankPose and the hybrid coarse-fine paper test on detector boxes and drop the
frames without one. FSA-Net's preprocessing (data/TYY_create_db_biwi.py) runs
MTCNN on every frame, keeps detections with confidence > 0.9, picks among
several the one whose enlarged box's top-left corner is nearest (L1) to
(2/3 W, 2/3 H), drops a frame whose enlarged box's left edge moved 80 px or
more from the last kept frame of the sequence, and crops the box enlarged by
ad = 0.4 of its size on every side. jaxpose applies the same rules to the
boxes of a CSV (`resolve_detections`), with two deviations, both for frames
the official code handles by accident: a frame whose detections all score
<= 0.9 is dropped (the official code reuses a stale box from an earlier
frame), and a sequence's track starts at its first frame with a detection
(the official one starts at its first file, at x = 0). The stored box is the
detector box scaled about its centre by (1 + 2 x 0.4) / (1 + 2 x 0.6) = 9/11,
so that the `fsanet` crop convention (ad 0.6, what every jaxpose FSA-Net config
evaluates with) cuts FSA-Net's BIWI region, the detector box + 0.4 (to a
pixel of integer rounding); the detector box is the stored box x 11/9. Every
dropped frame is counted by reason ("no detection", "detections below score
0.9", "detection jump"), and the build also counts the frames the
geometric-box protocol keeps, printing both ("boxes: ..." line).
CSV rows: `path,x_min,y_min,x_max,y_max[,score]` (pixels; path like
`01/frame_00003_rgb.png`, `01/00003` or any path ending so), one row per box,
several per frame allowed, a row with empty box cells = frame without a
detection; a header row naming the columns is read by name, so the CSV of
`jaxpose predict --output F.csv` (columns path, frame, x_min, ..., score, ...)
works as it is. A box without a score is taken as detected. `write_detections`
writes such a CSV with any detector (`detect(images) -> [.boxes, .scores]`).

Configs (the split each frame goes to):
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
* `cv8_fold1` ... `cv8_fold8`: 8-fold cross-validation by sequence (the hybrid
  coarse-fine paper's BIWI experiment): fold k's 3 sequences `test`, the other
  21 `train`. Fold 1 = 01, 10, 23, the one split the hybrid code publishes
  (haofanwang/accurate-head-pose tools/BIWI_test.txt names frames of exactly
  these sequences, tools/BIWI_train.txt of the other 21); its other seven
  folds are not published, so CV8_FOLDS fixes them: each twice-recorded
  subject's pair with the next free single sequence, then the remaining
  singles in order, three by three; no person is in two folds.
* `lists`: the splits named by your own frame lists, e.g. the hybrid code's
  (`--split_list train=tools/BIWI_train.txt --split_list test=tools/BIWI_test.txt`;
  lines `NN/frame_NNNNN`). Those lists name 15,638 frames: 1,794 test, 13,844
  train, fewer than the 15,678 of the release; frames in no list are counted,
  and listed frames not found are counted with examples. The lists carry no
  licence, so jaxpose reads your copy rather than shipping them.
Angles outside [-99, 99] degrees are dropped and counted (BIWI has none).
A rebuild with a different detections CSV or split list under the same name is
refused (their sha256 is in the metadata) unless `--overwrite` is given.

Storage (version 1.1.0): `test` frames as lossless PNG at the source
resolution (BIWI faces are about 95 px), `train` frames as JPEG with the face
box downscaled to at most 128 px, both with `source_box`.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import math
import pathlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

import cv2
import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import crops
from input_pipeline.datasets.build import (
    BOX_OUTSIDE_IMAGE,
    MALFORMED_ANNOTATION,
    MISSING_ANNOTATION,
    PROTOCOL_LIMIT,
    Face,
    Item,
    PoseBuilder,
    SkipRecord,
    check_face,
    read_image,
)
from jaxpose import angles

SEQUENCES = tuple(f"{i:02d}" for i in range(1, 25))
# Subject of each sequence (BIWI readme): four people were recorded twice.
SUBJECTS = dict(zip(SEQUENCES, (
    "F01 F02 F03 F04 F05 F06 M01 M02 M03 M04 M05 M06 M07 M08 F03 M09 M10 F05 M11 M12 F02 M01 M13 M14"
).split()))
PROTOCOL2_TEST = ("03", "10", "12", "14", "15", "17", "20", "24")
CV8_FOLDS = (
    ("01", "10", "23"),  # the hybrid code's published split (tools/BIWI_test.txt)
    ("02", "04", "21"),  # F02 twice (02, 21)
    ("03", "06", "15"),  # F03 twice
    ("05", "08", "18"),  # F05 twice
    ("07", "09", "22"),  # M01 twice
    ("11", "12", "13"),
    ("14", "16", "17"),
    ("19", "20", "24"),
)
SPLIT_LIST_NAMES = ("train", "test")

# FSA-Net's detector protocol (data/TYY_create_db_biwi.py), see the module docstring.
DETECTION_MARGIN = 0.4  # the detector box + 0.4 of its size on every side is FSA-Net's BIWI crop
DETECTION_MIN_SCORE = 0.9  # boxes scoring above this are detections
DETECTION_MAX_JUMP_PX = 80  # the enlarged box's left edge may move less than this between kept frames
FSANET_MARGIN = 0.6  # crops.fsanet_crop's ad, what the stored box is enlarged by at evaluation
DETECTION_BOX_SCALE = (1 + 2 * DETECTION_MARGIN) / (1 + 2 * FSANET_MARGIN)  # 9/11
IMAGE_SIZE = (640, 480)  # BIWI's Kinect RGB frames (rgb.cal's last row); FSA-Net's pick rule refers to it

# Skip reasons of the detector protocol (keys of the "skipped" metadata).
NO_DETECTION = "no detection"
LOW_SCORE = f"detections below score {DETECTION_MIN_SCORE:g}"
DETECTION_JUMP = f"detection jump >= {DETECTION_MAX_JUMP_PX} px"

_CONFIG_NAME = re.compile(r"^(?:(protocol1)|protocol2((?:_test(?:_\d\d)+)?)|cv8_fold(\d+)|(lists))(_detections)?$")
# A BIWI frame at the end of a path: "01/frame_00003_rgb.png", "/data/hpdb/01/00003", "23/frame_00090".
_FRAME = re.compile(r"(?:^|[/\\])(\d\d)[/\\](?:frame_)?(\d+)(?:_rgb(?:\.png)?)?$")
_BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
_POSITIONAL = {"path": 0, "x_min": 1, "y_min": 2, "x_max": 3, "y_max": 4, "score": 5}
_EXPECTED_ROW = "SEQ/frame_NNNNN_rgb.png,x_min,y_min,x_max,y_max[,score]"

FrameKey = tuple[str, int]  # (sequence "01".."24", frame number)


@dataclasses.dataclass(eq=False)
class BiwiConfig(tfds.core.BuilderConfig):
    """test_sequences: None = every frame is test (protocol 1); detections: boxes from a CSV;
    split_lists: splits from the user's frame lists (config `lists`)."""

    test_sequences: tuple[str, ...] | None = None
    detections: bool = False
    split_lists: bool = False


def config_from_name(name: str) -> BiwiConfig:
    """Parse `protocol1|protocol2[_test_NN_NN...]|cv8_foldK|lists`, each optionally `_detections`."""
    match = _CONFIG_NAME.match(name)
    fold = int(match.group(3)) if match and match.group(3) else None
    if not match or (fold is not None and not 1 <= fold <= len(CV8_FOLDS)):
        raise ValueError(
            f"unknown biwi config {name!r}; valid: protocol1, protocol2, protocol2_test_NN_NN... "
            f"(two-digit test sequences), cv8_fold1 ... cv8_fold{len(CV8_FOLDS)}, lists; each optionally "
            "with _detections"
        )
    test, description = None, "all frames test"
    if match.group(2) is not None:  # protocol2, "" without a test list
        test = tuple(match.group(2).split("_")[2:]) if match.group(2) else PROTOCOL2_TEST
        unknown = sorted(set(test) - set(SEQUENCES))
        if unknown or len(set(test)) != len(test):
            raise ValueError(f"biwi config {name!r}: test sequences must be distinct, in 01..24 (got {test})")
        description = f"test sequences {' '.join(test)}"
    elif fold is not None:
        test = CV8_FOLDS[fold - 1]
        description = f"8-fold cross-validation, fold {fold}: test sequences {' '.join(test)}"
    elif match.group(4):
        description = "splits from the user's frame lists"
    return BiwiConfig(name=name, description=description, test_sequences=test,
                      detections=bool(match.group(5)), split_lists=bool(match.group(4)))


# --- reading the release's files ------------------------------------------------------


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


def frame_key(text: str) -> FrameKey | None:
    """(sequence, frame number) of a path or name ending in a BIWI frame, else None."""
    match = _FRAME.search(text.strip())
    return (match.group(1), int(match.group(2))) if match else None


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


# --- user files: frame lists and detections -----------------------------------------------


def read_frame_list(path: pathlib.Path) -> set[FrameKey]:
    """A list of frames, one `NN/frame_NNNNN` per line (CRLF and blank lines allowed).

    Raises FileNotFoundError, or a one-line ValueError naming file:line for a
    line that names no frame or repeats one.
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"frame list {path} not found")
    frames: set[FrameKey] = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key = frame_key(line)
        if key is None:
            raise ValueError(f"{path}:{number}: {line.strip()!r} names no BIWI frame (expected NN/frame_NNNNN)")
        if key in frames:
            raise ValueError(f"{path}:{number}: {line.strip()!r} is listed twice")
        frames.add(key)
    return frames


def read_detections(path: pathlib.Path) -> dict[FrameKey, list[tuple[np.ndarray | None, float]]]:
    """Detections CSV -> {(sequence, frame): [(box (4,) or None, score or NaN), ...]}.

    A header row naming x_min, y_min, x_max, y_max (and optionally path and
    score) is read by name; otherwise columns are positional
    (path, x_min, y_min, x_max, y_max[, score]) and a first row that is not a
    frame is taken as a header. A row with empty box cells lists a frame
    without a detection (box None). Raises FileNotFoundError, or a one-line
    ValueError naming file:line for a bad row.
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"detections CSV {path} not found")
    table: dict[FrameKey, list] = collections.defaultdict(list)
    columns = None
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        for row in reader:
            if not row or not "".join(row).strip():
                continue
            where = f"{path}:{reader.line_num}"
            if columns is None:
                columns = _header_columns(row)
                if columns is not None:
                    continue
                columns = _POSITIONAL
                if frame_key(row[0]) is None:
                    continue  # a header row with other column names
            key, box, score = _detection_row(row, columns, where)
            table[key].append((box, score))
    return dict(table)


def _header_columns(row: list[str]) -> dict[str, int | None] | None:
    names = [cell.strip().lower() for cell in row]
    if not set(_BOX_COLUMNS) <= set(names):
        return None
    return {"path": names.index("path") if "path" in names else 0, **{n: names.index(n) for n in _BOX_COLUMNS},
            "score": names.index("score") if "score" in names else None}


def _detection_row(row: list[str], columns: Mapping[str, int | None], where: str):
    def cell(name: str) -> str:
        index = columns[name]
        return row[index].strip() if index is not None and index < len(row) else ""

    key = frame_key(cell("path"))
    if key is None:
        raise ValueError(f"{where}: {cell('path')!r} names no BIWI frame; expected '{_EXPECTED_ROW}'")
    values = [cell(name) for name in _BOX_COLUMNS]
    if not any(values):
        return key, None, math.nan  # listed without a detection (`jaxpose predict` writes such rows)
    try:
        box = np.array([float(v) for v in values], np.float64)
        score = float(cell("score")) if cell("score") else math.nan
    except ValueError:
        raise ValueError(f"{where}: expected '{_EXPECTED_ROW}'") from None
    if not (np.all(np.isfinite(box)) and box[2] > box[0] and box[3] > box[1]):
        raise ValueError(f"{where}: box {values} is not finite or has no area (x_max <= x_min or y_max <= y_min)")
    return key, box, score


def fsanet_region_corner(box: np.ndarray) -> tuple[int, int]:
    """Top-left corner of FSA-Net's crop, the box + DETECTION_MARGIN, with its int() and clip at 0."""
    width, height = box[2] - box[0], box[3] - box[1]
    return (max(int(box[0] - DETECTION_MARGIN * width), 0), max(int(box[1] - DETECTION_MARGIN * height), 0))


def stored_detection_box(box: np.ndarray) -> np.ndarray:
    """The detector box scaled by DETECTION_BOX_SCALE about its centre (module docstring)."""
    return crops.scale_box(np.asarray(box, np.float32), DETECTION_BOX_SCALE)


def resolve_detections(frames: Iterable[FrameKey], table: Mapping[FrameKey, list]) -> tuple[dict, dict]:
    """FSA-Net's rules over each sequence in frame order: ({frame: stored box or skip reason}, counts).

    Score > DETECTION_MIN_SCORE (a box without score passes); among several,
    the enlarged box whose top-left corner is nearest (L1) to (2/3 W, 2/3 H)
    of IMAGE_SIZE; dropped when its left edge is DETECTION_MAX_JUMP_PX or more
    from the last kept frame's of the sequence (the first kept frame starts
    the track).
    """
    target = (IMAGE_SIZE[0] * 2 / 3, IMAGE_SIZE[1] * 2 / 3)
    resolved, last_left, counts = {}, {}, collections.Counter()
    frames = sorted(set(frames))
    for key in frames:
        rows = table.get(key, [])
        boxes = [(box, score) for box, score in rows if box is not None]
        counts["frames not in the CSV"] += not rows
        counts["frames listed without a box"] += bool(rows) and not boxes
        detected = [box for box, score in boxes if not score <= DETECTION_MIN_SCORE]  # NaN: no score, kept
        counts["boxes without score"] += sum(math.isnan(score) for _, score in boxes)
        if not detected:
            resolved[key] = LOW_SCORE if boxes else NO_DETECTION
            continue
        counts["frames with several detections"] += len(detected) > 1
        corners = [fsanet_region_corner(box) for box in detected]
        distance = [abs(x - target[0]) + abs(y - target[1]) for x, y in corners]
        best = int(np.argmin(distance))  # the first of equals, as FSA-Net's np.argmin
        sequence = key[0]
        if sequence in last_left and abs(corners[best][0] - last_left[sequence]) >= DETECTION_MAX_JUMP_PX:
            resolved[key] = DETECTION_JUMP
            continue
        last_left[sequence] = corners[best][0]
        resolved[key] = stored_detection_box(detected[best])
    counts["rows for frames not in the source"] = sum(len(rows) for key, rows in table.items() if key not in resolved)
    return resolved, dict(counts)


def write_detections(source: str | pathlib.Path, detector: Any, output: str | pathlib.Path, *,
                     batch_size: int = 8) -> dict[str, int]:
    """Run a face detector over every BIWI frame and write the CSV `--detections` reads.

    detector: anything with `detect(list of (H, W, 3) RGB uint8 images)` returning, per image,
    an object with `.boxes` (N, 4) pixels and `.scores` (N,) (jaxpose.inference's MTCNN and
    load_detector(...) do). Every frame gets its boxes as rows, or one row with empty box cells
    when none was found; frames whose image cannot be read are counted, not written.
    """
    hpdb = hpdb_folder(pathlib.Path(source).expanduser())
    if hpdb is None:
        raise FileNotFoundError(f"no BIWI sequence folders (hpdb/01..24) in {source}")
    items = [item for item in frame_items(hpdb) if _has_pair(item)]
    counts = collections.Counter()
    with open(output, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", *_BOX_COLUMNS, "score"])
        for start in range(0, len(items), batch_size):
            names, images = [], []
            for item in items[start : start + batch_size]:
                try:
                    images.append(cv2.cvtColor(read_image(item.data[0] / item.name), cv2.COLOR_BGR2RGB))
                    names.append(item.name)
                except SkipRecord:
                    counts["unreadable frames"] += 1
            results = list(detector.detect(images)) if images else []
            if len(results) != len(images):
                raise ValueError(f"the detector returned {len(results)} results for {len(images)} images")
            for name, found in zip(names, results):
                boxes, scores = np.asarray(found.boxes).reshape(-1, 4), np.asarray(found.scores).reshape(-1)
                counts["frames"] += 1
                counts["frames without a face"] += not len(boxes)
                for box, score in zip(boxes, scores):
                    writer.writerow([name, *(f"{v:.1f}" for v in box), f"{score:.4f}"])
                    counts["boxes"] += 1
                if not len(boxes):
                    writer.writerow([name, "", "", "", "", ""])
    return dict(counts)


# --- the builder ---------------------------------------------------------------------------


def hpdb_folder(source: pathlib.Path) -> pathlib.Path | None:
    """The folder holding the sequence folders: source/hpdb, source/*/hpdb or source itself."""
    for folder in (source / "hpdb", *sorted(source.glob("*/hpdb")), source):
        if any((folder / seq).is_dir() for seq in SEQUENCES):
            return folder
    return None


class Biwi(PoseBuilder):
    """BIWI Kinect Head Pose (protocols 1, 2, 8-fold CV, the user's lists), see the module docstring.

    detections: a CSV of face boxes replacing the geometric boxes (the config
    name gets a `_detections` suffix so both variants can coexist);
    split_lists: {"train": path, "test": path} (either or both) for the
    `lists` config.
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

    def __init__(self, *, detections: str | pathlib.Path | None = None,
                 split_lists: Mapping[str, str | pathlib.Path] | None = None, **kwargs):
        config = kwargs.get("config")
        if split_lists is not None:
            unknown = sorted(set(split_lists) - set(SPLIT_LIST_NAMES))
            if unknown or not split_lists:
                raise ValueError(f"split lists name the splits {', '.join(SPLIT_LIST_NAMES)} "
                                 f"(got {sorted(split_lists)})")
            if config is not None and (not isinstance(config, str) or not config.startswith("lists")):
                raise ValueError(f"split lists build the config biwi/lists, not biwi/{config}")
            kwargs["config"] = config = config or "lists"
        if detections is not None and (config is None or isinstance(config, str)):
            name = config or "protocol1"
            kwargs["config"] = name if name.endswith("_detections") else name + "_detections"
        self._detections_path = pathlib.Path(detections).expanduser() if detections is not None else None
        self._split_list_paths = {k: pathlib.Path(v).expanduser() for k, v in (split_lists or {}).items()}
        super().__init__(**kwargs)

    def _create_builder_config(self, builder_config, version):
        # Config names with a custom test list, a fold, lists or detections are parsed, not listed.
        if isinstance(builder_config, str) and ":" not in builder_config:
            if builder_config not in type(self).builder_configs:
                builder_config = config_from_name(builder_config)
        return super()._create_builder_config(builder_config, version)

    @property
    def SPLITS(self) -> tuple[str, ...]:  # noqa: N802 (the base class's attribute name)
        config = self.builder_config
        return ("test",) if config.test_sequences is None and not config.split_lists else ("train", "test")

    @property
    def PROTOCOL(self) -> str:  # noqa: N802 (the base class's attribute name)
        config, tail = self.builder_config, "; angles outside [-99, 99] deg dropped"
        boxes = "; FSA-Net's detector protocol on a detections CSV" if config.detections else ""
        if config.split_lists:
            return f"splits from the user's frame lists{boxes}{tail}"
        if config.test_sequences is None:
            return f"protocol 1: every frame test{boxes}{tail}"
        kind = "8-fold cross-validation" if config.name.startswith("cv8") else "protocol 2"
        return f"{kind}: test sequences {' '.join(config.test_sequences)}{boxes}{tail}"

    def download_and_prepare(self, *args, **kwargs):
        if self.is_prepared():
            self._check_same_inputs()
        return super().download_and_prepare(*args, **kwargs)

    def _inputs(self) -> dict[str, dict]:
        """The user files this build reads, with their sha256 (stored; a rebuild must match)."""
        files = {"detections": self._detections_path} if self._detections_path else {}
        files.update({f"split_list_{split}": path for split, path in self._split_list_paths.items()})
        return {name: {"file": str(path), "sha256": sha256(path)} for name, path in files.items() if path.is_file()}

    def _check_same_inputs(self) -> None:
        stored = dict(self.info.metadata or {}).get("inputs", {})
        for name, given in self._inputs().items():
            if name in stored and stored[name]["sha256"] != given["sha256"]:
                raise ValueError(
                    f"biwi/{self.builder_config.name} in {self.data_dir} was built from another {name} "
                    f"({stored[name]['file']}); give --overwrite to rebuild it from {given['file']}, "
                    "or another --data_dir"
                )

    def _scan(self, source: pathlib.Path) -> dict[str, list[Item]]:
        items = frame_items(source)
        if not any(_has_pair(item) for item in items):
            raise ValueError(
                f"no hpdb/NN/frame_*_rgb.png + frame_*_pose.txt found in {source}: {self.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        self._resolved, self._calibrations, self._list_notes = None, {}, {}
        self._detection_counts, self._geometric_kept = {}, collections.Counter()
        if self.builder_config.detections:
            if self._detections_path is None:
                raise ValueError(f"biwi/{self.builder_config.name} needs a detections CSV (--detections CSV)")
            table = read_detections(self._detections_path)
            self._resolved, self._detection_counts = resolve_detections((_key(i) for i in items), table)
        splits = self._split_items(items)
        self._split_of = {item.name: split for split, chosen in splits.items() for item in chosen}
        return splits

    def _split_items(self, items: list[Item]) -> dict[str, list[Item]]:
        config = self.builder_config
        if config.split_lists:
            return self._split_by_lists(items)
        if config.test_sequences is None:
            return {"test": items}
        return {
            "train": [i for i in items if i.data[1] not in config.test_sequences],
            "test": [i for i in items if i.data[1] in config.test_sequences],
        }

    def _split_by_lists(self, items: list[Item]) -> dict[str, list[Item]]:
        """Each frame to the split whose list names it; unlisted frames and missing names counted."""
        if not self._split_list_paths:
            raise ValueError("biwi/lists needs frame lists (--split_list train=FILE --split_list test=FILE)")
        listed = {split: read_frame_list(path) for split, path in self._split_list_paths.items()}
        if len(listed) == 2 and (both := sorted(listed["train"] & listed["test"])):
            seq, number = both[0]
            raise ValueError(f"{self._split_list_paths['train']} and {self._split_list_paths['test']} both list "
                             f"{len(both)} frames, e.g. {seq}/frame_{number:05d}")
        present = {_key(item) for item in items}
        for split, names in listed.items():
            missing = sorted(names - present)
            self._list_notes[split] = {
                "listed": len(names), "found": len(names) - len(missing), "missing": len(missing),
                "missing_examples": [f"{s}/frame_{n:05d}" for s, n in missing[:5]],
            }
        self._list_notes["frames_in_no_list"] = len(present - set().union(*listed.values()))
        return {split: [i for i in items if _key(i) in names] for split, names in listed.items()}

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

    def _geometric_box(self, folder: pathlib.Path, centre: np.ndarray) -> np.ndarray:
        try:
            return crops.biwi_head_box(centre, **self._calibration(folder))
        except ValueError as error:
            raise SkipRecord(BOX_OUTSIDE_IMAGE, str(error)) from None

    def _load(self, item: Item, source: pathlib.Path) -> Face:
        hpdb, sequence, frame = item.data
        folder = hpdb / sequence
        image = read_image(folder / f"frame_{frame}_rgb.png")
        rotation, centre = read_pose(folder / f"frame_{frame}_pose.txt")
        pose = angles.from_biwi_rotation(rotation)
        filename = str((folder / f"frame_{frame}_rgb.png").relative_to(source))
        if self._resolved is None:
            return Face(item.name, filename, sequence, image, pose, self._geometric_box(folder, centre))
        # The geometric protocol's verdict on the same frame, for the "boxes:" report line.
        try:
            face = Face(item.name, filename, sequence, image, pose, self._geometric_box(folder, centre))
            check_face(face)
            self._geometric_kept[self._split_of[item.name]] += bool(angles.in_protocol_range(pose, PROTOCOL_LIMIT))
        except SkipRecord:
            pass
        box = self._resolved[_key(item)]
        if isinstance(box, str):
            raise SkipRecord(box, item.name)
        return Face(item.name, filename, sequence, image, pose, box)

    def _notes(self) -> dict:
        test = self.builder_config.test_sequences
        notes: dict[str, Any] = {"identity": "sequence number", "inputs": self._inputs(), "summary": []}
        notes["box"] = (
            f"geometric: {crops.BIWI_HEAD_BOX_MM:g} mm square at the projected head centre" if self._resolved is None
            else f"detections CSV {self._detections_path}, FSA-Net's rules (score > {DETECTION_MIN_SCORE:g}, "
            f"pick nearest (2/3 W, 2/3 H), jump < {DETECTION_MAX_JUMP_PX} px), stored x {DETECTION_BOX_SCALE:.4f} "
            f"so that the fsanet crop (ad {FSANET_MARGIN:g}) cuts the detector box + {DETECTION_MARGIN:g}"
        )
        if test is not None:
            notes["test_sequences"] = list(test)
            notes["train_sequences"] = [s for s in SEQUENCES if s not in test]
            notes["test_subjects"] = sorted({SUBJECTS[s] for s in test})
            notes["train_subjects"] = sorted({SUBJECTS[s] for s in SEQUENCES if s not in test})
        if self._list_notes:
            notes["split_lists"] = self._list_notes
            found = ", ".join(f"{s} {n['found']} of {n['listed']} listed" for s, n in self._list_notes.items()
                              if isinstance(n, dict))
            notes["summary"].append(f"split lists: {found} found; {self._list_notes['frames_in_no_list']} "
                                    "frames of the source in no list (not built)")
        if self._resolved is not None:
            notes["detections"] = self._detection_counts
            notes["geometric_box_kept"] = dict(self._geometric_kept)
            notes["summary"].append(self._boxes_line())
        return notes

    def _boxes_line(self) -> str:
        frames = sum(self._tally.notes.get("scanned", {}).values())
        kept, geometric = sum(self._tally.kept.values()), sum(self._geometric_kept.values())
        reasons = (NO_DETECTION, LOW_SCORE, DETECTION_JUMP)
        dropped = ", ".join(f"{r} {self._tally.skipped[r]}" for r in reasons if self._tally.skipped[r])
        return (f"boxes: the detector protocol keeps {kept} of {frames} frames ({dropped or 'none dropped'}); "
                f"the geometric-box protocol keeps {geometric} of the same {frames}")


def frame_items(source: pathlib.Path) -> list[Item]:
    """One Item per frame found as image or pose file in hpdb/NN (a missing half is reported at load)."""
    hpdb, items = hpdb_folder(source), []
    for folder in sorted(p for p in (hpdb.iterdir() if hpdb else []) if re.fullmatch(r"\d\d", p.name)):
        names = (re.fullmatch(r"frame_(\d+)_(?:rgb\.png|pose\.txt)", p.name) for p in folder.glob("frame_*"))
        frames = sorted({m.group(1) for m in names if m})
        items += [Item(f"{folder.name}/frame_{f}_rgb.png", (hpdb, folder.name, f)) for f in frames]
    return items


def _key(item: Item) -> FrameKey:
    return item.data[1], int(item.data[2])


def _has_pair(item: Item) -> bool:
    hpdb, sequence, frame = item.data
    folder = hpdb / sequence
    return (folder / f"frame_{frame}_rgb.png").is_file() and (folder / f"frame_{frame}_pose.txt").is_file()
