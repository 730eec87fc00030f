"""Shared machinery of the real-dataset TFDS builders, and `build_dataset`.

Every real dataset is read from a folder the user downloaded (a TFDS manual
directory), exactly as distributed, and written once to array_record files
with the shared features of `features.py` (no TensorFlow needed).

What each builder stores per face
---------------------------------
* image: a loose crop around the face box, wide enough for every published
  train-time crop: the union of Hopenet's crop at its largest k = 0.4
  (`crops.hopenet_crop`: 0.8 box sizes left and above, 1.44 right, 0.43 below)
  and FSA-Net's ad = 0.6 crop (0.6 on every side), grown by a further
  `EXTRA_MARGIN` of the box size on every side for random shifts. Parts
  outside the source image are black (as PIL's crop).
  Training splits: JPEG (quality 95), and crops whose face box is larger than
  `MAX_FACE_SIDE` pixels are downscaled so that its long side is
  `MAX_FACE_SIDE`: Hopenet's test crop (about 1.96 box sides) then still has
  at least 224 px, the size Hopenet feeds its ResNet, and the stored crops are
  at most about 3.6 * 128 = 470 px long.
  Test splits (`PoseBuilder.LOSSLESS_SPLITS`): lossless PNG at the source
  resolution (downscaled only for face boxes over `LOSSLESS_MAX_FACE_SIDE`),
  so that evaluation sees the pixels the published code cuts from the source
  image: with `source_box` the FSA-Net crop of a record equals the official
  crop pixel for pixel (tests/test_pretrained_e2e.py). On the 16 AFLW2000
  fixtures this costs about 170 KiB per record instead of 27 KiB and 8 ms
  instead of 0.8 ms to decode one.
* box and landmarks are moved (and scaled) into the stored crop's pixels;
  missing landmarks are stored as -1.
* source_box: the source image's extent (0, 0, W, H) moved and scaled the
  same way, so crop conventions can clip to the source image.
* pose (yaw, pitch, roll) degrees, identity, filename (path relative to the
  source folder).

Bad records and the protocol filter
-----------------------------------
Records that cannot be used are skipped and counted by reason (`SkipRecord`);
samples with an angle outside [-99, 99] degrees are dropped by the papers'
protocol filter (`jaxpose.angles.in_protocol_range`) and counted. Both counts,
a few example file names per reason and the records kept per split are saved
in the dataset's metadata (`builder.info.metadata`, `metadata.json` in the
dataset folder) and printed by `build_dataset`. Nothing is dropped silently.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import math
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from input_pipeline import crops
from input_pipeline.datasets import registry
from input_pipeline.datasets.features import encode_jpeg, encode_png, features
from jaxpose import angles

MAX_FACE_SIDE = 128  # px; larger face boxes of training splits are downscaled to this long side
# px; the same for lossless (test) splits: keeps every AFLW2000 and BIWI face at full
# resolution and bounds the PNG of a very large AFLW/AFW face (stored side <= ~1850 px).
LOSSLESS_MAX_FACE_SIDE = 512
EXTRA_MARGIN = 0.1  # box sizes added on every side beyond the published crops
PROTOCOL_LIMIT = 99.0  # degrees; the papers' range filter
NUM_EXAMPLES = 5  # file names kept in the metadata per skip reason

# Skip reasons (keys of the "skipped" metadata).
MISSING_IMAGE = "missing image"
UNREADABLE_IMAGE = "unreadable image"
MISSING_ANNOTATION = "missing annotation"
MALFORMED_ANNOTATION = "malformed annotation"
NONFINITE_POSE = "non-finite pose"
BOX_OUTSIDE_IMAGE = "box outside image"


SOURCE_BOX_RELEASE = (
    "source_box feature (the source image's extent in stored pixels) so FSA-Net's crop clips to the "
    "source image as the official code does; test splits stored as lossless PNG at full resolution "
    "(face boxes up to LOSSLESS_MAX_FACE_SIDE px), training splits unchanged (JPEG, MAX_FACE_SIDE)."
)


class SkipRecord(Exception):
    """A source record that cannot be used: counted under `reason`, never silent."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class Item:
    """One source record to load: `name` identifies it in reports, `data` is the builder's."""

    name: str
    data: Any = None


@dataclasses.dataclass
class Face:
    """A loaded face in source-image pixels, before cropping.

    image: (H, W, 3) uint8 BGR; pose: (3,) degrees; box: (4,) pixels;
    landmarks: (N, 2) pixels with NaN rows for missing points (N may be 0).
    flags: names counted in the metadata when the face is kept (e.g. a fallback box).
    """

    key: str
    filename: str
    identity: str
    image: np.ndarray
    pose: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 2), np.float32))
    flags: tuple[str, ...] = ()


@dataclasses.dataclass
class Tally:
    """Counts of one build: kept per split, skips per reason, protocol-filter drops."""

    kept: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped_examples: dict = dataclasses.field(default_factory=dict)
    filtered: int = 0
    filtered_examples: list = dataclasses.field(default_factory=list)
    notes: dict = dataclasses.field(default_factory=dict)
    flags: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # of kept faces

    def skip(self, reason: str, name: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        examples = self.skipped_examples.setdefault(reason, [])
        if len(examples) < NUM_EXAMPLES:
            examples.append(f"{name} ({detail})" if detail else name)

    def filter(self, name: str, pose: np.ndarray) -> None:
        self.filtered += 1
        if len(self.filtered_examples) < NUM_EXAMPLES:
            self.filtered_examples.append(f"{name} {np.round(pose, 1).tolist()}")

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        return f"{skipped} skipped {dict(self.skipped)}, {self.filtered} outside the protocol range"

    def metadata(self) -> dict:
        return {
            "kept": dict(self.kept),
            "protocol_filter": {
                "range_deg": [-PROTOCOL_LIMIT, PROTOCOL_LIMIT],
                "dropped": self.filtered,
                "examples": self.filtered_examples,
            },
            "skipped": dict(self.skipped),
            "skipped_examples": self.skipped_examples,
            **self.notes,
        }


# --- reading source files -----------------------------------------------------


def _complete(data: bytes) -> bool:
    """False for a JPEG or PNG whose end is missing (OpenCV decodes those with grey rows)."""
    if data[:2] == b"\xff\xd8":  # JPEG: an end-of-image marker after the last scan
        return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data.rfind(b"IEND") > data.rfind(b"IDAT")
    return True


def read_image(path: pathlib.Path) -> np.ndarray:
    """(H, W, 3) uint8 BGR image; raises SkipRecord when missing, truncated or undecodable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SkipRecord(MISSING_IMAGE, path.name) from None
    except OSError as error:
        raise SkipRecord(UNREADABLE_IMAGE, f"{path.name}: {error}") from None
    if not _complete(data):
        raise SkipRecord(UNREADABLE_IMAGE, f"{path.name}: truncated")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise SkipRecord(UNREADABLE_IMAGE, f"{path.name}: not a decodable image")
    return image


def read_mat(path: pathlib.Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of a MATLAB (v5) .mat file; raises SkipRecord when missing or malformed."""
    if not path.is_file():
        raise SkipRecord(MISSING_ANNOTATION, path.name)
    try:
        mat = scipy.io.loadmat(str(path), variable_names=keys)
    except Exception as error:  # scipy raises several types for corrupt files
        raise SkipRecord(MALFORMED_ANNOTATION, f"{path.name}: {error}") from None
    missing = [key for key in keys if key not in mat]
    if missing:
        raise SkipRecord(MALFORMED_ANNOTATION, f"{path.name}: no {', '.join(missing)}")
    return {key: np.asarray(mat[key]) for key in keys}


def check_face(face: Face) -> None:
    """Raise SkipRecord for a non-finite pose or a box not on the image.

    The box must be at least 2 px wide and high, finite, and its centre must
    lie inside the image (faces partly outside the image are kept).
    """
    if face.pose.shape != (3,) or not np.all(np.isfinite(face.pose)):
        raise SkipRecord(NONFINITE_POSE, str(face.pose.tolist()))
    box = np.asarray(face.box, np.float64)
    height, width = face.image.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    ok = np.all(np.isfinite(box)) and box[2] - box[0] >= 2 and box[3] - box[1] >= 2
    if not (ok and 0 <= cx < width and 0 <= cy < height):
        raise SkipRecord(BOX_OUTSIDE_IMAGE, f"box {np.round(box, 1).tolist()} on {width}x{height}")


# --- the stored crop ------------------------------------------------------------


def loose_region(box: np.ndarray) -> np.ndarray:
    """The stored region for a face box: Hopenet k=0.4 crop U FSA-Net ad=0.6 crop, + EXTRA_MARGIN."""
    box = np.asarray(box, np.float32)
    hopenet = crops.hopenet_crop(box, k=0.4)
    fsanet = crops.scale_box(box, 1 + 2 * 0.6)  # box +- 0.6 of its size, not clipped to the image
    region = np.concatenate([np.minimum(hopenet[:2], fsanet[:2]), np.maximum(hopenet[2:], fsanet[2:])])
    size = box[2:] - box[:2]
    return (region + np.concatenate([-size, size]) * EXTRA_MARGIN).astype(np.float32)


def _cut(image: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """image[y0:y1, x0:x1] with black where the window leaves the image."""
    height, width = image.shape[:2]
    pads = (max(0, -y0), max(0, y1 - height), max(0, -x0), max(0, x1 - width))
    patch = image[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)]
    if any(pads):
        patch = cv2.copyMakeBorder(patch, *pads, cv2.BORDER_CONSTANT, value=0)
    return patch


def crop_example(face: Face, *, lossless: bool = False) -> dict[str, Any]:
    """The feature dict of a face: loose crop, box, landmarks and source_box in the crop's pixels.

    lossless=False (training splits): JPEG, face box downscaled to at most
    MAX_FACE_SIDE px. lossless=True (test splits): PNG, downscaled only past
    LOSSLESS_MAX_FACE_SIDE, so unscaled crops hold the source pixels exactly.
    A point p of the source image is stored at (p - origin) * factor, with
    origin the crop's whole-pixel corner and factor 1 when not downscaled.
    """
    x0, y0, x1, y1 = loose_region(face.box)
    x0, y0, x1, y1 = math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)
    patch = _cut(face.image, x0, y0, x1, y1)
    box_side = float(np.max(face.box[2:] - face.box[:2]))
    scale = min(1.0, (LOSSLESS_MAX_FACE_SIDE if lossless else MAX_FACE_SIDE) / box_side)
    if scale < 1.0:
        size = (max(1, round(patch.shape[1] * scale)), max(1, round(patch.shape[0] * scale)))
        patch = cv2.resize(patch, size, interpolation=cv2.INTER_AREA)
    # Exact per-axis factors of the rounded output size; pixel i covers [i, i + 1).
    factor = np.array([patch.shape[1] / (x1 - x0), patch.shape[0] / (y1 - y0)], np.float32)
    origin = np.array([x0, y0], np.float32)

    def move(points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, np.float32).reshape(-1, 2) - origin) * factor

    height, width = face.image.shape[:2]
    landmarks = move(face.landmarks)
    landmarks[~np.all(np.isfinite(landmarks), axis=1)] = -1.0
    return {
        "image": encode_png(patch) if lossless else encode_jpeg(patch),
        "pose": np.asarray(face.pose, np.float32),
        "identity": face.identity,
        "box": move(face.box).reshape(4).astype(np.float32),
        "landmarks": landmarks.astype(np.float32),
        "filename": face.filename,
        "source_box": move([[0, 0], [width, height]]).reshape(4).astype(np.float32),
    }


# --- the builder base class -------------------------------------------------------


class PoseBuilder(tfds.core.GeneratorBasedBuilder):
    """Base of the real-dataset builders: scan a manual folder, load, check, filter, crop.

    Subclasses implement `_scan(source) -> {split: [Item]}` (raising a one-line
    ValueError when the folder holds none of the expected files) and
    `_load(item, source) -> Face` (raising SkipRecord for a bad record), and set
    MANUAL_DOWNLOAD_INSTRUCTIONS, HOMEPAGE and PROTOCOL.
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First jaxpose release.",
        "1.1.0": SOURCE_BOX_RELEASE,
    }
    HOMEPAGE = ""
    PROTOCOL = ""
    SPLITS: tuple[str, ...] = ("test",)  # the splits a build can write (declares the image format)
    LOSSLESS_SPLITS: tuple[str, ...] = ("test",)  # stored as full-resolution PNG, see crop_example

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features(self._image_format()),
            homepage=self.HOMEPAGE,
            metadata=tfds.core.MetadataDict(),
        )

    def _image_format(self) -> str | None:
        """"png" when every split is lossless, "jpeg" when none is, None (mixed) otherwise."""
        lossless = {split in self.LOSSLESS_SPLITS for split in self.SPLITS}
        return None if len(lossless) != 1 else ("png" if lossless.pop() else "jpeg")

    @abc.abstractmethod
    def _scan(self, source: pathlib.Path) -> dict[str, list[Item]]:
        """The items of each split found in the source folder."""

    @abc.abstractmethod
    def _load(self, item: Item, source: pathlib.Path) -> Face:
        """One face, in source-image pixels; raises SkipRecord for a bad record."""

    def _notes(self) -> dict:
        """Dataset-specific metadata (protocol details, box source counts, ...)."""
        return {}

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        source = pathlib.Path(dl_manager.manual_dir)
        self._tally = Tally()
        splits = {name: items for name, items in self._scan(source).items() if items}
        self._tally.notes["scanned"] = {name: len(items) for name, items in splits.items()}
        return {name: self._generate_examples(name, items, source) for name, items in splits.items()}

    def _generate_examples(self, split: str, items: list[Item], source: pathlib.Path) -> Iterator:
        for item in items:
            try:
                face = self._load(item, source)
                check_face(face)
            except SkipRecord as skip:
                self._tally.skip(skip.reason, item.name, skip.detail)
                continue
            if not angles.in_protocol_range(face.pose, PROTOCOL_LIMIT):
                self._tally.filter(item.name, face.pose)
                continue
            self._tally.kept[split] += 1
            self._tally.flags.update(face.flags)
            yield face.key, crop_example(face, lossless=split in self.LOSSLESS_SPLITS)
        if not self._tally.kept[split]:
            raise ValueError(f"no valid record for the {split} split in {source}: {self._tally.summary()}")

    def _download_and_prepare(self, dl_manager, download_config=None) -> None:
        try:
            super()._download_and_prepare(dl_manager, download_config)
        except AssertionError as error:
            if "No examples were yielded" not in str(error):
                raise
            raise ValueError(f"no valid record in {dl_manager.manual_dir}: {self._tally.summary()}") from None
        metadata = {"source": str(dl_manager.manual_dir), "protocol": self.PROTOCOL}
        metadata.update(self._tally.metadata())
        metadata.update(self._notes())
        self.info.metadata.update(metadata)


# --- build_dataset ----------------------------------------------------------------


def build_dataset(
    name: str,
    source: str | pathlib.Path | None,
    data_dir: str | pathlib.Path | None = None,
    *,
    overwrite: bool = False,
    **builder_kwargs: Any,
) -> dict:
    """Build dataset `name` ("name" or "name/config") from the downloaded folder `source`.

    Writes array_record files under data_dir (default ~/jaxpose_data), prints
    a short report and returns it: records per split, protocol-filter count,
    skips by reason, and the dataset's other metadata. An already built
    dataset is reused (its stored report is returned) unless overwrite=True.
    builder_kwargs go to the builder (e.g. Biwi's `detections=` CSV path).
    Generated datasets (no MANUAL_DOWNLOAD_INSTRUCTIONS, e.g. synthetic_heads)
    take source=None. Raises ValueError for an unknown name, FileNotFoundError
    for a missing source folder.
    """
    cls = registry.builder_class(name)
    expected = (cls.MANUAL_DOWNLOAD_INSTRUCTIONS or "").strip()
    if not expected and source is not None:
        raise ValueError(f"{name} is generated, not read from files: it takes no source folder")
    if expected and source is None:
        raise FileNotFoundError(f"{name}: no source folder given: {expected}")
    if expected:
        source = pathlib.Path(source).expanduser().resolve()
        if not source.is_dir():
            raise FileNotFoundError(f"source folder {source} not found: {expected}")
    config = name.split("/", 1)[1] if "/" in name else None
    kwargs = {"config": config} if config else {}
    data_dir = pathlib.Path(data_dir or registry.DEFAULT_DATA_DIR).expanduser()
    builder = cls(data_dir=str(data_dir), **kwargs, **builder_kwargs)
    reused = builder.is_prepared() and not overwrite
    if overwrite and builder.is_prepared():
        shutil.rmtree(builder.data_dir)  # this version's files only; a fresh builder writes them anew
        builder = cls(data_dir=str(data_dir), **kwargs, **builder_kwargs)
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=str(source) if expected else None),
    )
    config_name = builder.builder_config.name if builder.builder_config else None
    report = {
        "dataset": f"{builder.name}/{config_name}" if config_name else builder.name,
        "data_dir": str(builder.data_dir),
        "reused": reused,
        "splits": {split: info.num_examples for split, info in builder.info.splits.items()},
        **dict(builder.info.metadata or {}),
    }
    print(format_report(report))
    return report


def format_report(report: dict) -> str:
    """A few human-readable lines summarising a build report."""
    reused = " (already built, reused)" if report.get("reused") else ""
    lines = [f"{report['dataset']}: {report['data_dir']}{reused}"]
    lines.append("  records: " + ", ".join(f"{k} {v}" for k, v in report["splits"].items()))
    dropped = report.get("protocol_filter", {}).get("dropped", 0)
    lines.append(f"  protocol filter [-{PROTOCOL_LIMIT:g}, {PROTOCOL_LIMIT:g}] deg: dropped {dropped}")
    skipped = report.get("skipped", {})
    lines.append("  skipped: " + (", ".join(f"{k} {v}" for k, v in skipped.items()) if skipped else "none"))
    for reason, examples in report.get("skipped_examples", {}).items():
        lines.append(f"    {reason}: {'; '.join(examples)}")
    lines += [f"  {line}" for line in report.get("summary", [])]  # a builder's own lines (BIWI: boxes kept)
    return "\n".join(lines)
