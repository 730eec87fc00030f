"""Crop and predict: the pose of face boxes in whole images, batched on the devices.

`PoseModel(config, workdir, ensemble)` restores a trained or converted
checkpoint (and optionally more, averaged: e.g. FSA-Caps-Fusion) once;
`model.predict(faces)` cuts each face with its member's crop convention
(`data.crop`, `data.eval_crop_k`, `data.image_size`, `data.channels`; the
evaluation transform of `augment.prepare`, `prepare_face`) and runs the jitted
evaluation step on full batches of `config.batch_size` split over the
devices (one compilation; the last batch is padded).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Sequence

import cv2
import jax
import numpy as np

from input_pipeline import augment, crops
from jaxpose import checkpoint, sharding, train


def read_image(path: str | pathlib.Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, the channel order of the pipeline's decoded records."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        if not pathlib.Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such image file")
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def prepare_face(image: np.ndarray, box: np.ndarray | None, data_cfg: Any) -> np.ndarray:
    """One face's model input, uint8 (S, S, 3): the evaluation transform of `augment.prepare`.

    image: (H, W, 3) uint8 RGB. box: the face box (x_min, y_min, x_max, y_max)
    in its pixels, which gets the config's crop convention (`data.crop`,
    `data.eval_crop_k`), or None when the image is already the crop (it is
    resized whole). Then `data.image_size` with the convention's resize
    filter and `data.channels` order; the model normalises on the device.
    """
    if box is None:
        region = np.array([0, 0, image.shape[1], image.shape[0]], np.float32)
    else:
        region = augment.crop_region({"box": np.asarray(box, np.float32)}, image.shape, data_cfg, None)
    patch = crops.crop_resize(image, region, data_cfg.image_size, convention=data_cfg.crop)
    return np.ascontiguousarray(patch[..., ::-1]) if data_cfg.channels == "bgr" else patch


@dataclasses.dataclass
class Face:
    """One face to predict: an RGB uint8 image and its box (x_min, y_min, x_max, y_max), None for a whole-image crop."""

    image: np.ndarray
    box: np.ndarray | None


@functools.lru_cache(maxsize=8)
def _jitted_step(model, normalize: str):
    # Cached by (module, normalisation): PoseModels of the same model share one compilation per batch shape.
    return jax.jit(functools.partial(train.eval_step, model=model, normalize=normalize))


class _Member:
    """One checkpoint: its data config, variables and jitted step."""

    def __init__(self, config: Any, workdir: pathlib.Path):
        if not (workdir / "checkpoints").is_dir():
            raise FileNotFoundError(f"{workdir}: no checkpoints (train, or `jaxpose convert` weights into it, first)")
        setup = train.Setup(config, training=False)
        self.data, self.mesh, self.batch = config.data, setup.mesh, setup.batch_per_process
        self.variables = checkpoint.restore_model(workdir, setup.abstract_variables)
        self.step = _jitted_step(setup.model, config.data.normalize)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        poses = []
        for start in range(0, len(crops), self.batch):
            chunk = crops[start:start + self.batch]
            batch = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - len(chunk), axis=0)])
            pose = self.step(self.variables, sharding.put_batch({"image": batch}, self.mesh)["image"])
            poses.append(np.asarray(pose, np.float32)[: len(chunk)])
        return np.concatenate(poses)


class PoseModel:
    """(yaw, pitch, roll) degrees of faces in whole images, from one checkpoint or the mean of several."""

    def __init__(self, config: Any, workdir: str | pathlib.Path, ensemble: Sequence[str | pathlib.Path] = ()):
        if jax.process_count() > 1:
            raise ValueError("predict runs in one process")
        workdirs = [pathlib.Path(workdir), *map(pathlib.Path, ensemble)]
        configs = [config] + [train.member_config(config, w) for w in workdirs[1:]]
        self.members = [_Member(c, w) for c, w in zip(configs, workdirs)]

    @property
    def batch_size(self) -> int:
        return self.members[0].batch

    def predict(self, faces: Sequence[Face]) -> tuple[np.ndarray, list[str | None]]:
        """(N, 3) degrees and, per face, None or why it has no pose (a NaN row): e.g. a box with no pixels
        in the image."""
        poses = np.full((len(faces), 3), np.nan, np.float32)
        crops, errors = self._crops(faces)
        ok = [i for i, error in enumerate(errors) if error is None]
        if ok:
            poses[ok] = np.mean([m.predict(np.stack([c[i] for i in ok])) for m, c in zip(self.members, crops)], axis=0)
        return poses, errors

    def _crops(self, faces: Sequence[Face]) -> tuple[list[list[np.ndarray | None]], list[str | None]]:
        crops = [[None] * len(faces) for _ in self.members]
        errors: list[str | None] = [None] * len(faces)
        for i, face in enumerate(faces):
            try:
                for k, member in enumerate(self.members):
                    crops[k][i] = prepare_face(face.image, face.box, member.data)
            except ValueError as error:  # crops.crop_resize: the box leaves no pixels
                errors[i] = f"cannot crop the face: {error}"
        return crops, errors
