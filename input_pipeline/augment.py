"""Per-record preprocessing and random augmentation (host side, numpy + OpenCV).

A record from a jaxpose TFDS builder (encoded image, pose, face box) becomes a
model input: the configured crop convention around the face box, random
crop scale and shift, horizontal flip with yaw and roll negated, optional
down/up-sampling, blur and Gaussian noise. Images stay uint8 here; the
train step normalises them on the device (4x less host-to-device traffic).

Training decodes a JPEG at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling,
`cv2.IMREAD_REDUCED_COLOR_*`) when the crop region keeps at least
image_size pixels along its shorter side at that scale (`reduction`): the
stored training crops (e.g. 300W-LP's ~440 x 330 around a 128 px face) are
far larger than a 64 px input; resizing the smaller image is cheaper (300W-LP
at 64 px: `prepare` 1.5-1.8x faster). Only for crops resized with INTER_AREA
(Hopenet, box): the crop differs from the full-resolution one by about 2.4
grey levels on average, less than moving the crop by one pixel (bounds in
tests/test_augment.py). Evaluation (rng=None), PNG records and FSA-Net's
bilinear crops always decode at full resolution.
"""

from __future__ import annotations

import math
import os
import signal
from typing import Any

import cv2
import numpy as np

from input_pipeline import crops
from input_pipeline.datasets.features import decode_image
from jaxpose import angles


# JPEG decoding at 1/r scale (libjpeg DCT scaling; the result is ceil(W / r) x ceil(H / r)).
REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}
# Start-of-frame markers (they hold the image size): 0xC0-0xCF except DHT (C4), JPG (C8), DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_shape(encoded: bytes) -> tuple[int, int] | None:
    """(height, width) read from a JPEG's frame header without decoding; None if not a JPEG (e.g. PNG)."""
    data = bytes(encoded)
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _SOF_MARKERS:
            return int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def reduction(region: np.ndarray, image_size: int) -> int:
    """The largest r in (8, 4, 2, 1) at which `region` (whole-pixel cut, as crops.crop_resize) keeps
    at least image_size pixels along its shorter side, so the final resize never enlarges because of r."""
    x0, y0, x1, y1 = region.tolist()
    for r in (8, 4, 2):
        if min(round(x1 / r) - round(x0 / r), round(y1 / r) - round(y0 / r)) >= image_size:
            return r
    return 1


def _decode(encoded: bytes, r: int) -> np.ndarray | None:
    """RGB uint8 decoded at 1/r scale; None if unreadable."""
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), REDUCED_FLAGS[r])
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _training_image(record: dict, cfg: Any, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image, region in its pixels): a JPEG decoded at the coarsest scale the random region allows."""
    shape = jpeg_shape(record["image"])
    if shape is None:  # PNG: no DCT scaling
        image = decode_image(record["image"])
        return image, crop_region(record, image.shape, cfg, rng)
    region = crop_region(record, (*shape, 3), cfg, rng)
    # Only where the resize averages (INTER_AREA), which DCT scaling resembles; FSA-Net's plain bilinear
    # resize aliases, and a pre-averaged image would be systematically softer than its exact eval crops.
    r = reduction(region, cfg.image_size) if crops.RESIZE[cfg.crop] == "area" else 1
    image = _decode(record["image"], r) if r > 1 else None
    # A decoder that ignores the scale (or an EXIF rotation) gives another shape: use full resolution.
    if image is None or image.shape[:2] != (math.ceil(shape[0] / r), math.ceil(shape[1] / r)):
        return decode_image(record["image"]), region
    return image, region / np.float32(r)


def init_worker(worker_index: int = 0, worker_count: int = 1) -> None:
    """grain's `worker_init_fn`: OpenCV's own thread pool would compete with grain's workers and threads.

    Workers also ignore Ctrl-C: a terminal sends SIGINT to the whole process group, and the training
    process must stop at a checkpoint (checkpoint.StopRequest) with its workers still serving batches.
    """
    del worker_index, worker_count
    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def num_workers(requested: int) -> int:
    """config.data.num_workers resolved: -1 (auto) -> one worker per CPU this process may use less one
    for the training process, or 0 with 2 CPUs or fewer; 0 -> no worker process (grain threads in-process).

    Measured on 2 CPUs (demo ResNet-10 training on synthetic_heads and 300W-LP at 64 px): one worker is
    no faster than in-process threads (0.95-1.08x, within the noise) and costs its start-up. With more
    CPUs workers are needed: 20-60 % of `prepare` holds the GIL, which caps in-process threads.
    """
    if requested >= 0:
        return requested
    if requested != -1:
        raise ValueError(f"data.num_workers must be -1 (auto), 0 or positive, got {requested}")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cpus - 1 if cpus > 2 else 0


def eval_convention(cfg: Any) -> str:
    """The crop convention of the evaluation transform: `cfg.eval_crop`, or `cfg.crop` where that is empty."""
    return getattr(cfg, "eval_crop", "") or cfg.crop


def crop_region(record: dict, image_shape, cfg: Any, rng: np.random.Generator | None) -> np.ndarray:
    """The model-input box for a record; random k, scale and shift when rng is given (training).

    Training uses `cfg.crop` (for "hopenet_train" also a random offset of its
    square); evaluation (rng=None) `eval_convention(cfg)` with k = eval_crop_k.

    Conventions that clip to the source image (FSA-Net) clip to the record's
    `source_box` (the source image's extent in stored pixels), so the region
    equals the published one although the stored crop is padded beyond the
    source; without it (a whole image, e.g. `jaxpose.inference.pose.prepare_face`) the
    image's own edges.
    """
    k = rng.uniform(*cfg.crop_k) if rng is not None else cfg.eval_crop_k
    convention = cfg.crop if rng is not None else eval_convention(cfg)
    # Drawn only where used, so the other conventions' random streams stay as they were.
    offset = rng.uniform(size=2) if rng is not None and convention == "hopenet_train" else None
    bounds = record.get("source_box")
    region = crops.crop_box(convention, record["box"], image_shape, k=k, bounds=bounds, offset=offset)
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

    `rng=None` is the deterministic evaluation transform (full-resolution decoding, exact pixels);
    with rng a JPEG may be decoded at reduced scale (module docstring). A factor from
    `downsample_factor` (data.eval_downsample, or drawn from data.downsample_factors in training)
    degrades the crop at its source resolution first (`downsampled_crop`, Hopenet's Fig. 8).
    """
    if rng is None:
        image = decode_image(record["image"])
        region = crop_region(record, image.shape, cfg, None)
    else:
        image, region = _training_image(record, cfg, rng)
    pose = np.asarray(record["pose"], np.float32)
    convention = cfg.crop if rng is not None else eval_convention(cfg)
    factor = downsample_factor(cfg, rng)
    if factor > 1:  # Hopenet's low-resolution study (Fig. 8) and its training schedule
        patch = downsampled_crop(image, region, cfg.image_size, convention, factor, _source_scale(record, image))
    else:
        patch = crops.crop_resize(image, region, cfg.image_size, convention=convention)
    if rng is not None:
        if cfg.flip and rng.random() < 0.5:
            patch = np.ascontiguousarray(patch[:, ::-1])
            pose = angles.flip_horizontal(pose).astype(np.float32)
        patch = degrade(patch, cfg, rng)
    if cfg.channels == "bgr":
        patch = np.ascontiguousarray(patch[..., ::-1])
    return {"image": patch, "pose": pose}


# --- Hopenet's low-resolution study: nearest-neighbour down/up-sampling at the source resolution ---------


def downsample_nearest(image: np.ndarray, factor: int, small: tuple[int, int] | None = None) -> np.ndarray:
    """Nearest-neighbour down- then up-sampling of (H, W, C) by an integer factor, as Hopenet's code
    (deep-head-pose datasets.py, AFLW2000_ds and Pose_300W_LP_random_ds): PIL resize to (W // f, H // f)
    with NEAREST, then back to (W, H). cv2's INTER_NEAREST_EXACT samples pixel centres as PIL does
    (pixel-identical; INTER_NEAREST samples corners). small: the (width, height) to go through instead."""
    height, width = image.shape[:2]
    if small is None:
        small = (width // factor, height // factor)
    small = (min(width, max(1, small[0])), min(height, max(1, small[1])))
    shrunk = cv2.resize(image, small, interpolation=cv2.INTER_NEAREST_EXACT)
    return cv2.resize(shrunk, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


def downsample_factor(cfg: Any, rng: np.random.Generator | None) -> int:
    """Evaluation: `data.eval_downsample` (1 = none). Training: a factor drawn uniformly from
    `data.downsample_factors` (the official Hopenet schedule is (1, 6, 11, 16)), or 1 when empty."""
    if rng is None:
        value = getattr(cfg, "eval_downsample", 1)
        factor = 1 if value is None else int(value)
        if factor < 1:
            raise ValueError(f"data.eval_downsample must be an integer >= 1, got {factor}")
        return factor
    factors = tuple(getattr(cfg, "downsample_factors", ()) or ())
    if not factors:
        return 1
    if cfg.downsample_prob > 0:
        raise ValueError("set data.downsample_factors (nearest neighbour, Hopenet) or data.downsample_prob, not both")
    return int(factors[rng.integers(len(factors))])


def _source_scale(record: dict, image: np.ndarray) -> float:
    """Source pixels per pixel of `image`: r when training decoded a JPEG at 1/r scale, else 1."""
    shape = jpeg_shape(record["image"])
    return 1.0 if shape is None else shape[0] / image.shape[0]


def downsampled_crop(image: np.ndarray, region: np.ndarray, size: int, convention: str, factor: int,
                     source_scale: float = 1.0) -> np.ndarray:
    """`crops.crop_resize(image, region, size, convention=)` of the region degraded first, at its source
    resolution, by `downsample_nearest` - what Hopenet's code does to its crops before Scale(224).

    The region is cut as crop_resize cuts it (whole pixels, black beyond the image); with
    `source_scale` r > 1 (an image decoded at 1/r) it goes through the source's (w r // f, h r // f).
    """
    x0, y0, x1, y1 = (int(round(float(v))) for v in region)
    if x1 <= x0 or y1 <= y0:
        return crops.crop_resize(image, region, size, convention=convention)  # raises the empty-box error
    height, width = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - width, y1 - height)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    cut = image[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
    small = (int(round((x1 - x0) * source_scale)) // factor, int(round((y1 - y0) * source_scale)) // factor)
    cut = downsample_nearest(cut, factor, small)
    return crops.crop_resize(cut, np.array([0, 0, x1 - x0, y1 - y0], np.float32), size, convention=convention)
