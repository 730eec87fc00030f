"""AFW: Annotated Faces in the Wild (Zhu & Ramanan, CVPR 2012): 205 images, 468 faces.

Where to get it: https://www.ics.uci.edu/~xzhu/face/ (`AFW.zip`, research use).

Folder: the unzipped `testimages/` folder holding the `.jpg` images and
`anno.mat`, or a parent of it.

Build: `jaxpose data build afw --source /path/to/AFW`

`anno.mat` (MATLAB v7.3 = HDF5 in the release; a v5 file written by
scipy.io.savemat is read too) holds the cell array `anno`, one row per
image: {image name, 1xF cell of boxes [x1 y1; x2 y2], 1xF cell of poses
[yaw pitch roll] in degrees, 1xF cell of 6x2 landmarks}. The release notes
say only yaw is evaluated; Hopenet reads these poses as degrees.

Protocol: every face is a `test` record for the yaw-accuracy metric (yaw error
within 15 degrees, `jaxpose.metrics`). Only yaw is a valid label
(`metadata["valid_angles"] == ["yaw"]`): pitch and roll are stored as given,
and a non-finite pitch or roll is stored as 0 and counted
(`pitch_roll_set_to_zero`); a non-finite yaw skips the face. Face box: the
annotated box (AFW's 6 landmarks are too few for a landmark box); landmarks:
the 6 points, missing ones -1. Identity: `<image stem>_<face index>` (no
person labels). Angles outside [-99, 99] degrees are dropped and counted.

Storage: lossless PNG at the source resolution (face boxes over
`build.LOSSLESS_MAX_FACE_SIDE` = 512 px downscaled to it), with `source_box`
(version 1.1.0).
"""

from __future__ import annotations

import pathlib

import h5py
import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from input_pipeline.datasets.build import (
    MALFORMED_ANNOTATION,
    Face,
    Item,
    PoseBuilder,
    SkipRecord,
    read_image,
)

PITCH_ROLL_ZERO = "pitch_roll_set_to_zero"  # metadata: kept faces whose pitch/roll were not finite


def _h5_value(file: h5py.File, node: h5py.Dataset):
    """A MATLAB v7.3 value as numpy in MATLAB's shape: cells -> object arrays, char -> str."""
    data = node[()]
    if node.dtype == h5py.ref_dtype:
        cells = np.empty(data.shape, object)
        for index, ref in np.ndenumerate(data):
            cells[index] = _h5_value(file, file[ref])
        return cells.T  # HDF5 stores MATLAB arrays transposed
    if node.attrs.get("MATLAB_class", b"") in (b"char", "char"):
        return "".join(chr(c) for c in np.asarray(data).T.ravel())
    return np.asarray(data).T


def _mat_value(value):
    """A scipy.io.loadmat (v5) value in the same form as `_h5_value`."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        return "".join(value.ravel())
    if isinstance(value, np.ndarray) and value.dtype == object:
        cells = np.empty(value.shape, object)
        for index, cell in np.ndenumerate(value):
            cells[index] = _mat_value(cell)
        return cells
    return np.asarray(value)


def read_anno(path: pathlib.Path) -> np.ndarray:
    """The `anno` cell array of anno.mat, (N, 4) object; ValueError naming the file otherwise."""
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as file:
                anno = _h5_value(file, file["anno"])
        else:
            anno = _mat_value(scipy.io.loadmat(str(path))["anno"])
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: no readable 'anno' cell array ({error})") from None
    if anno.ndim != 2 or anno.shape[1] != 4 or anno.dtype != object:
        raise ValueError(f"{path}: 'anno' has shape {anno.shape}, expected (images, 4) cells")
    return anno


def face_records(row: np.ndarray) -> list[tuple[str, int, object]]:
    """(image name, face index, (box, pose, landmarks) or SkipRecord) for one `anno` row."""
    name = row[0] if isinstance(row[0], str) else ""
    try:
        boxes, poses, points = (list(np.asarray(row[c], object).ravel()) for c in (1, 2, 3))
        if not name or not (len(boxes) == len(poses) == len(points)):
            raise ValueError(f"{len(boxes)} boxes, {len(poses)} poses, {len(points)} landmark sets")
        faces = []
        for box, pose, pts in zip(boxes, poses, points):
            box = np.asarray(box, np.float32).reshape(2, 2).reshape(4)  # [x1 y1; x2 y2]
            pose = np.asarray(pose, np.float64).reshape(3)
            pts = np.asarray(pts, np.float32).reshape(-1, 2)
            faces.append((box, pose, pts))
    except (ValueError, TypeError) as error:
        return [(name or "?", 0, SkipRecord(MALFORMED_ANNOTATION, f"anno row of {name or '?'}: {error}"))]
    return [(name, i, face) for i, face in enumerate(faces)]


def anno_folder(source: pathlib.Path) -> pathlib.Path | None:
    for folder in (source, source / "testimages", source / "AFW" / "testimages"):
        if (folder / "anno.mat").is_file():
            return folder
    return None


class Afw(PoseBuilder):
    """AFW (test split, yaw only), see the module docstring."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "expected the AFW folder (testimages/ with *.jpg + anno.mat, AFW.zip of "
        "https://www.ics.uci.edu/~xzhu/face/)"
    )
    HOMEPAGE = "https://www.ics.uci.edu/~xzhu/face/"
    PROTOCOL = "every face as test for yaw accuracy (only yaw is valid); angles outside [-99, 99] deg dropped"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First jaxpose release.",
        "1.1.0": "source_box feature; the test split is stored as lossless PNG at full resolution "
        "(face boxes up to 512 px; was JPEG downscaled to 128 px).",
    }

    def _scan(self, source: pathlib.Path) -> dict[str, list[Item]]:
        folder = anno_folder(source)
        if folder is None:
            raise ValueError(f"no anno.mat found in {source}: {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        anno = read_anno(folder / "anno.mat")
        self._folder, self._cache = folder, (None, None)
        items = [Item(f"{name}#{i}", (name, i, face)) for row in anno for name, i, face in face_records(row)]
        if not items:
            raise ValueError(f"{folder / 'anno.mat'} lists no face: {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return {"test": items}

    def _image(self, name: str) -> np.ndarray:
        """The image of a face; the last one is kept since the faces of one image are consecutive."""
        if self._cache[0] != name:
            try:
                self._cache = (name, read_image(self._folder / name))
            except SkipRecord as skip:
                self._cache = (name, skip)
        if isinstance(self._cache[1], SkipRecord):
            raise SkipRecord(self._cache[1].reason, self._cache[1].detail)
        return self._cache[1]

    def _load(self, item: Item, source: pathlib.Path) -> Face:
        name, index, face = item.data
        if isinstance(face, SkipRecord):
            raise face
        box, pose, points = face
        image = self._image(name)
        pose, flags = pose.copy(), ()
        if np.isfinite(pose[0]) and not np.all(np.isfinite(pose[1:])):
            pose[1:] = np.where(np.isfinite(pose[1:]), pose[1:], 0.0)
            flags = (PITCH_ROLL_ZERO,)
        filename = str((self._folder / name).relative_to(source))
        identity = f"{pathlib.Path(name).stem}_{index}"
        return Face(item.name, filename, identity, image, pose.astype(np.float32), box, points, flags)

    def _notes(self) -> dict:
        return {"valid_angles": ["yaw"], "pose_unit": "degrees", PITCH_ROLL_ZERO: self._tally.flags[PITCH_ROLL_ZERO]}
