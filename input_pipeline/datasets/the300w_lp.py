"""300W-LP: the synthetic large-pose training set (Zhu et al., CVPR 2016).

Where to get it: the 3DDFA project page
(http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm, file
`300W-LP.zip`); research use only.

Folder: the unzipped `300W_LP/` folder with the image folders AFW, HELEN,
IBUG, LFPW and their mirrored twins AFW_Flip, ..., each holding `NAME_N.jpg` +
`NAME_N.mat` (the `landmarks/` and `Code/` folders are not used). `.jpg` +
`.mat` pairs lying directly in the given folder are read too.

Build: `jaxpose data build the300w_lp --source /path/to/300W_LP`

Protocol (Hopenet, FSA-Net, RankPose): every image is a `train` record;
pose = degrees(Pose_Para[[1, 0, 2]]) (`angles.from_pose_para`); samples with an
angle outside [-99, 99] degrees are dropped and counted (122,415 of 122,450
remain). Face box: min/max of all 68 `pt2d` points (Hopenet's convention;
300W-LP has no missing points). Identity: the file name without its last
`_N` (the N-th synthesised view of one face: `AFW_1051618982_1_3` ->
`AFW_1051618982_1`), with `_Flip` appended for the mirrored folders, so that
RankPose can pair views of one face.

Storage: JPEG, face box downscaled to 128 px (`build.MAX_FACE_SIDE`), with
the `source_box` feature since version 1.1.0.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline.datasets.aflw2000 import paired_items, pose_and_points
from input_pipeline.datasets.build import Face, Item, PoseBuilder, read_image, read_mat

FOLDERS = ("AFW", "HELEN", "IBUG", "LFPW")


def identity(stem: str, flipped: bool) -> str:
    """`AFW_1051618982_1_3` -> `AFW_1051618982_1` (+ `_Flip` for the mirrored folders)."""
    base = stem.rsplit("_", 1)[0] if "_" in stem else stem
    return base + "_Flip" if flipped else base


class The300wLp(PoseBuilder):
    """300W-LP (train split), see the module docstring."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "expected the 300W_LP folder (AFW, HELEN, IBUG, LFPW and *_Flip folders of .jpg + .mat, from "
        "300W-LP.zip of http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm)"
    )
    HOMEPAGE = "http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm"
    PROTOCOL = "all images as train; angles outside [-99, 99] deg dropped (122,415 of 122,450 remain)"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First jaxpose release.",
        "1.1.0": "source_box feature (the source image's extent in stored pixels, for FSA-Net's clipping); "
        "images unchanged (JPEG, face box downscaled to 128 px).",
    }
    SPLITS = ("train",)

    def _scan(self, source: pathlib.Path) -> dict[str, list[Item]]:
        folders = [source] + [source / f"{name}{flip}" for name in FOLDERS for flip in ("", "_Flip")]
        items = [i for f in folders if f.is_dir() for i in paired_items(f, source, "*.jpg", "*.mat")]
        if not any(i.data.with_suffix(".jpg").is_file() and i.data.with_suffix(".mat").is_file() for i in items):
            raise ValueError(f"no .jpg + .mat pairs found in {source}: {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        return {"train": items}

    def _load(self, item: Item, source: pathlib.Path) -> Face:
        stem: pathlib.Path = item.data
        image = read_image(stem.with_suffix(".jpg"))
        mat = read_mat(stem.with_suffix(".mat"), ("Pose_Para", "pt2d"))
        pose, points = pose_and_points(mat, stem.name, 68)
        box = np.concatenate([points.min(0), points.max(0)]).astype(np.float32)
        flipped = stem.parent != source and stem.parent.name.endswith("_Flip")
        filename = str(stem.with_suffix(".jpg").relative_to(source))
        return Face(filename, filename, identity(stem.name, flipped), image, pose, box, points)
