"""AFLW: Annotated Facial Landmarks in the Wild (Koestinger et al., 2011), ~25k faces.

Where to get it: apply at https://www.tugraz.at/institute/icg/research/team-bischof/lrs/downloads/aflw/
(research use); the release holds `aflw-db.tar.gz` (`aflw/data/aflw.sqlite`)
and `aflw-images-{0,2,3}.tar.gz` (`aflw/data/flickr/{0,2,3}/image*.jpg`).

Folder: the folder holding `aflw.sqlite` and `flickr/` (`aflw/data`), or a
parent of it (`aflw/`, or the folder holding `aflw/`).

Build: `jaxpose data build aflw --source /path/to/aflw/data`

Labels, from the SQLite tables Faces, FaceImages (filepath), FacePose (roll,
pitch, yaw in radians), FaceRect (x, y, w, h) and FeatureCoords (21 points,
feature_id 1..21, absent = missing): pose = (yaw, pitch, -roll) in degrees:
AFLW's roll has the opposite sign to 300W-LP's, which Hopenet's AFLW loader
corrects the same way (`roll *= -1`); the yaw and pitch signs follow Hopenet
and were not checked on AFLW images (no AFLW sample is available to the tests).
Face box: the tight box of the annotated points when at least `MIN_POINTS`
are present, else the FaceRect (the count is in the metadata,
`box_from_face_rect`). Identity: `aflw_<face_id>` (AFLW has no person labels).

Protocol: AFLW test sets of 1000 images (HyperFace, KEPLER; Hopenet's AFLW
experiments) were drawn at random and never published, so no published
split can be reproduced. jaxpose draws the test images reproducibly: the
image file_ids (sorted) permuted by `numpy.random.default_rng(0)`, the first
1000 are `test` (all their faces), the others `train` (config `test1000`,
the default; `testN` draws N images). Angles outside [-99, 99] degrees are
dropped and counted.

Storage (version 1.1.0): `train` as JPEG with the face box downscaled to
128 px, `test` as lossless PNG at the source resolution (face boxes over 512
px downscaled to it), both with `source_box`; the declared image format is
therefore None (mixed).
"""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import re
import sqlite3

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline.datasets.build import (
    MALFORMED_ANNOTATION,
    MISSING_ANNOTATION,
    Face,
    Item,
    PoseBuilder,
    SkipRecord,
    read_image,
)

FACE_RECT = "box_from_face_rect"  # metadata: kept faces boxed by FaceRect
MIN_POINTS = 5  # fewer annotated points: use FaceRect as the face box
NUM_POINTS = 21
SPLIT_SEED = 0
_FACES_QUERY = """
SELECT Faces.face_id, Faces.file_id, FaceImages.filepath,
       FacePose.yaw, FacePose.pitch, FacePose.roll,
       FaceRect.x, FaceRect.y, FaceRect.w, FaceRect.h
FROM Faces
LEFT JOIN FaceImages ON FaceImages.file_id = Faces.file_id
LEFT JOIN FacePose ON FacePose.face_id = Faces.face_id
LEFT JOIN FaceRect ON FaceRect.face_id = Faces.face_id
ORDER BY Faces.file_id, Faces.face_id
"""


@dataclasses.dataclass(eq=False)
class AflwConfig(tfds.core.BuilderConfig):
    """test_images: how many images (with all their faces) form the test split."""

    test_images: int = 1000


def config_from_name(name: str) -> AflwConfig:
    match = re.fullmatch(r"test(\d+)", name)
    if not match:
        raise ValueError(f"unknown aflw config {name!r}; valid: testN (N test images, default test1000)")
    count = int(match.group(1))
    return AflwConfig(name=name, description=f"{count} random test images (seed {SPLIT_SEED})", test_images=count)


def aflw_folder(source: pathlib.Path) -> pathlib.Path | None:
    """The folder holding aflw.sqlite: source, source/data or source/aflw/data."""
    for folder in (source, source / "data", source / "aflw" / "data"):
        if (folder / "aflw.sqlite").is_file():
            return folder
    return None


def read_faces(database: pathlib.Path) -> tuple[list[tuple], dict[int, np.ndarray], int]:
    """Face rows, {face_id: (21, 2) points with NaN for missing} and the number of duplicate rows.

    Raises ValueError naming the file when the database lacks the AFLW tables.
    """
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            rows = connection.execute(_FACES_QUERY).fetchall()
            coords = connection.execute("SELECT face_id, feature_id, x, y FROM FeatureCoords").fetchall()
    except sqlite3.Error as error:
        raise ValueError(f"{database}: not the AFLW database ({error})") from None
    faces, seen = [], set()
    for row in rows:  # a face with several pose/rect rows keeps its first
        if row[0] not in seen:
            seen.add(row[0])
            faces.append(row)
    points = collections.defaultdict(lambda: np.full((NUM_POINTS, 2), np.nan, np.float32))
    for face_id, feature_id, x, y in coords:
        if isinstance(feature_id, int) and 1 <= feature_id <= NUM_POINTS and x is not None and y is not None:
            points[face_id][feature_id - 1] = (x, y)
    return faces, dict(points), len(rows) - len(faces)


def split_images(file_ids: list[str], test_images: int) -> set[str]:
    """The test file_ids: the sorted ids permuted with default_rng(SPLIT_SEED), first test_images."""
    ordered = sorted(set(file_ids))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(ordered))
    return {ordered[i] for i in order[:test_images]}


class Aflw(PoseBuilder):
    """AFLW with a reproducible random 1000-image test split, see the module docstring."""

    BUILDER_CONFIGS = [config_from_name("test1000")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "expected the AFLW folder (aflw.sqlite + flickr/{0,2,3}/image*.jpg, i.e. aflw/data of the AFLW release "
        "from https://www.tugraz.at/institute/icg/research/team-bischof/lrs/downloads/aflw/)"
    )
    HOMEPAGE = "https://www.tugraz.at/institute/icg/research/team-bischof/lrs/downloads/aflw/"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First jaxpose release.",
        "1.1.0": "source_box feature; the test split is stored as lossless PNG at full resolution "
        "(face boxes up to 512 px), the train split unchanged (JPEG, 128 px).",
    }
    SPLITS = ("train", "test")

    def _create_builder_config(self, builder_config, version):
        if isinstance(builder_config, str) and ":" not in builder_config:
            if builder_config not in type(self).builder_configs:
                builder_config = config_from_name(builder_config)
        return super()._create_builder_config(builder_config, version)

    @property
    def PROTOCOL(self) -> str:  # noqa: N802 (the base class's attribute name)
        count = self.builder_config.test_images
        return (
            f"{count} test images drawn with numpy default_rng({SPLIT_SEED}) from the sorted file_ids "
            "(the published 1000-image splits were never released); angles outside [-99, 99] deg dropped"
        )

    def _scan(self, source: pathlib.Path) -> dict[str, list[Item]]:
        folder = aflw_folder(source)
        if folder is None:
            raise ValueError(f"no aflw.sqlite found in {source}: {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        faces, self._points, duplicates = read_faces(folder / "aflw.sqlite")
        if not faces:
            raise ValueError(f"no faces in {folder / 'aflw.sqlite'}: {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        self._folder, self._cache = folder, (None, None)
        self._duplicates = duplicates
        test = split_images([row[1] for row in faces], self.builder_config.test_images)
        items = [Item(f"face {row[0]} ({row[2]})", row) for row in faces]
        return {
            "train": [i for i in items if i.data[1] not in test],
            "test": [i for i in items if i.data[1] in test],
        }

    def _image(self, filepath: str | None) -> np.ndarray:
        """The image of a face; the last one is kept since faces of one image are consecutive."""
        if filepath is None:
            raise SkipRecord(MISSING_ANNOTATION, "no FaceImages row")
        if self._cache[0] != filepath:
            try:
                self._cache = (filepath, read_image(self._folder / "flickr" / filepath))
            except SkipRecord as skip:
                self._cache = (filepath, skip)
        if isinstance(self._cache[1], SkipRecord):
            raise SkipRecord(self._cache[1].reason, self._cache[1].detail)
        return self._cache[1]

    def _load(self, item: Item, source: pathlib.Path) -> Face:
        face_id, _, filepath, yaw, pitch, roll, x, y, w, h = item.data
        image = self._image(filepath)
        if None in (yaw, pitch, roll):
            raise SkipRecord(MISSING_ANNOTATION, "no FacePose row")
        try:
            pose = np.degrees(np.array([yaw, pitch, -roll], np.float64)).astype(np.float32)
        except (TypeError, ValueError):
            raise SkipRecord(MALFORMED_ANNOTATION, f"FacePose {(yaw, pitch, roll)}") from None
        points = self._points.get(face_id, np.full((NUM_POINTS, 2), np.nan, np.float32))
        valid = points[np.all(np.isfinite(points), axis=1)]
        flags = ()
        if len(valid) >= MIN_POINTS:
            box = np.concatenate([valid.min(0), valid.max(0)]).astype(np.float32)
        elif None not in (x, y, w, h):
            box = np.array([x, y, x + w, y + h], np.float32)
            flags = (FACE_RECT,)
        else:
            raise SkipRecord(MISSING_ANNOTATION, f"{len(valid)} points and no FaceRect")
        filename = str((self._folder / "flickr" / filepath).relative_to(source))
        return Face(str(face_id), filename, f"aflw_{face_id}", image, pose, box, points.copy(), flags)

    def _notes(self) -> dict:
        return {
            FACE_RECT: self._tally.flags[FACE_RECT],
            "duplicate_annotation_rows_ignored": self._duplicates,
            "split_seed": SPLIT_SEED,
            "test_images": self.builder_config.test_images,
        }
