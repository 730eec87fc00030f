"""AFLW2000-3D: the standard in-the-wild head-pose test set (Zhu et al., CVPR 2016).

Where to get it: the 3DDFA project page
(http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm, file
`AFLW2000-3D.zip`); research use only (AFLW licence).

Folder: the unzipped `AFLW2000/` folder holding `image00002.jpg` +
`image00002.mat`, ... (2000 pairs); the folder itself or its parent may be given.

Build: `jaxpose data build aflw2000 --source /path/to/AFLW2000`

Protocol (Hopenet, FSA-Net, RankPose and the later papers): all images form
the `test` split; pose = degrees(Pose_Para[[1, 0, 2]]) (`angles.from_pose_para`);
samples with an angle outside [-99, 99] degrees are dropped and counted
(1969 of 2000 images remain). Face box: the tight box of the 21 `pt2d` points
with both coordinates > 0 (negative = missing; FSA-Net's convention,
`crops.landmark_box`); missing points are stored as -1. Identity: the file
stem (AFLW2000 has no person labels).

Storage: the test split is lossless PNG at the source resolution with the
`source_box` feature (version 1.1.0), so the FSA-Net crop of a record equals
the official crop from the original image pixel for pixel.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import crops
from input_pipeline.datasets.build import (
    MALFORMED_ANNOTATION,
    BOX_OUTSIDE_IMAGE,
    Face,
    Item,
    PoseBuilder,
    SkipRecord,
    read_image,
    read_mat,
)
from jaxpose import angles


def find_folder(source: pathlib.Path, subfolder: str, pattern: str) -> pathlib.Path | None:
    """`source` or `source/subfolder`, whichever holds files matching `pattern`."""
    for folder in (source, source / subfolder):
        if folder.is_dir() and any(folder.glob(pattern)):
            return folder
    return None


def pose_and_points(mat: dict[str, np.ndarray], name: str, num_points: int) -> tuple[np.ndarray, np.ndarray]:
    """(yaw, pitch, roll) degrees and (num_points, 2) landmarks of a 300W-LP/AFLW2000 .mat."""
    pose_para = mat["Pose_Para"].astype(np.float64).reshape(-1)
    points = mat["pt2d"].astype(np.float32)
    if pose_para.size < 3 or points.shape != (2, num_points):
        raise SkipRecord(MALFORMED_ANNOTATION, f"{name}: Pose_Para {mat['Pose_Para'].shape}, pt2d {points.shape}")
    return angles.from_pose_para(pose_para[:3]), points.T.copy()


def paired_items(folder: pathlib.Path, root: pathlib.Path, image_glob: str, mat_glob: str) -> list[Item]:
    """One Item per stem found as image or .mat (a missing half is reported at load time)."""
    stems = {p.stem for p in folder.glob(image_glob)} | {p.stem for p in folder.glob(mat_glob)}
    return [Item(str((folder / stem).relative_to(root)), folder / stem) for stem in sorted(stems)]


class Aflw2000(PoseBuilder):
    """AFLW2000-3D (test split), see the module docstring."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "expected the AFLW2000-3D folder (image*.jpg + image*.mat, from AFLW2000-3D.zip of "
        "http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm)"
    )
    HOMEPAGE = "http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm"
    PROTOCOL = "all 2000 images as test; angles outside [-99, 99] deg dropped (1969 remain)"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First jaxpose release.",
        "1.1.0": "source_box feature; the test split is stored as lossless PNG at full resolution "
        "(was JPEG, face box downscaled to 128 px), so FSA-Net's clipped crop is exact.",
    }

    def _scan(self, source: pathlib.Path) -> dict[str, list[Item]]:
        folder = find_folder(source, "AFLW2000", "image*.mat")
        items = paired_items(folder, source, "image*.jpg", "image*.mat") if folder else []
        if not any(i.data.with_suffix(".jpg").is_file() and i.data.with_suffix(".mat").is_file() for i in items):
            raise ValueError(f"no image*.jpg + .mat pairs found in {source}: {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return {"test": items}

    def _load(self, item: Item, source: pathlib.Path) -> Face:
        stem: pathlib.Path = item.data
        image = read_image(stem.with_suffix(".jpg"))
        mat = read_mat(stem.with_suffix(".mat"), ("Pose_Para", "pt2d"))
        pose, points = pose_and_points(mat, stem.name, 21)
        try:
            box = crops.landmark_box(points)
        except ValueError:
            raise SkipRecord(BOX_OUTSIDE_IMAGE, f"{stem.name}: no valid landmark") from None
        points[~np.all(points > 0, axis=1)] = np.nan  # negative = missing (AFLW2000 uses -1)
        filename = str(stem.with_suffix(".jpg").relative_to(source))
        return Face(filename, filename, stem.name, image, pose, box, points)
