"""Per-record preprocessing and random augmentation (host side, numpy + OpenCV).

A record from a jaxpose TFDS builder (encoded image, pose, face box) becomes a
model input: the configured crop convention around the face box, random
crop scale and shift, horizontal flip with yaw and roll negated, optional
down/up-sampling, blur and Gaussian noise. Images stay uint8 here; the
train step normalises them on the device (4x less host-to-device traffic).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from input_pipeline import crops
from input_pipeline.datasets.features import decode_image
from jaxpose import angles


def crop_region(record: dict, image_shape, cfg: Any, rng: np.random.Generator | None) -> np.ndarray:
    """The model-input box for a record; random k, scale and shift when rng is given (training).

    Conventions that clip to the source image (FSA-Net) clip to the record's
    `source_box` (the source image's extent in stored pixels), so the region
    equals the published one although the stored crop is padded beyond the
    source; without it (a whole image, e.g. `pretrained.predict_images`) the
    image's own edges.
    """
    k = rng.uniform(*cfg.crop_k) if rng is not None else cfg.eval_crop_k
    bounds = record.get("source_box")
    region = crops.crop_box(cfg.crop, record["box"], image_shape, k=k, bounds=bounds)
    if rng is not None:
        scale = rng.uniform(*cfg.scale)
        region = crops.scale_box(region, scale, shift=rng.uniform(-cfg.shift, cfg.shift, size=2))
    return region


def degrade(patch: np.ndarray, cfg: Any, rng: np.random.Generator) -> np.ndarray:
    """Random down/up-sampling, Gaussian blur and additive Gaussian noise (each optional)."""
    size = patch.shape[0]
    if rng.random() < cfg.downsample_prob:
        small = max(4, int(round(size / rng.uniform(1.0, cfg.downsample_max))))
        patch = cv2.resize(cv2.resize(patch, (small, small), interpolation=cv2.INTER_AREA), (size, size))
    if rng.random() < cfg.blur_prob:
        patch = cv2.GaussianBlur(patch, (0, 0), rng.uniform(0.1, cfg.blur_max_sigma))
    if cfg.noise_std > 0 and rng.random() < cfg.noise_prob:
        noisy = patch.astype(np.float32) + rng.normal(0.0, cfg.noise_std, patch.shape)
        patch = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return patch


def prepare(record: dict, cfg: Any, rng: np.random.Generator | None = None) -> dict:
    """Record -> {"image": uint8 (S, S, 3) in cfg.channels order, "pose": float32 (3,)}.

    `rng=None` is the deterministic evaluation transform.
    """
    image = decode_image(record["image"])
    pose = np.asarray(record["pose"], np.float32)
    patch = crops.crop_resize(image, crop_region(record, image.shape, cfg, rng), cfg.image_size, convention=cfg.crop)
    if rng is not None:
        if cfg.flip and rng.random() < 0.5:
            patch = np.ascontiguousarray(patch[:, ::-1])
            pose = angles.flip_horizontal(pose).astype(np.float32)
        patch = degrade(patch, cfg, rng)
    if cfg.channels == "bgr":
        patch = np.ascontiguousarray(patch[..., ::-1])
    return {"image": patch, "pose": pose}
