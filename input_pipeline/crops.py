"""The published face-crop conventions.

Boxes are (x_min, y_min, x_max, y_max) in pixels of the image they refer to,
float32. A crop convention maps a face box (usually the tight box of the 2D
landmarks) to the region the model sees; `crop_resize` cuts that region out.
"""

from __future__ import annotations

import cv2
import numpy as np

CROPS = ("hopenet", "hopenet_train", "fsanet", "box")
# Hopenet's training transform Scale(240) + RandomCrop(224): a square of 224/240 of the crop's shorter side.
HOPENET_TRAIN_FRACTION = 224 / 240


def landmark_box(landmarks: np.ndarray, *, rule: str = "both") -> np.ndarray:
    """Tight box (4,) of the valid 2D landmarks (N, 2); points with a coordinate <= 0 are missing.

    AFLW2000 stores a missing point as (-1, H + 2). rule "both" keeps points
    whose two coordinates are > 0; rule "fsanet" is the official FSA-Net
    code's: the points with x > 0, or those with y > 0 if that keeps fewer
    (the two agree on AFLW2000, whose missing points have x = -1); rule
    "all" keeps every point, missing ones included, as Hopenet's released
    AFLW2000 loader does. Raises ValueError when no point is kept.
    """
    pts = np.asarray(landmarks, np.float32).reshape(-1, 2)
    if rule == "both":
        keep = np.all(pts > 0, axis=1)
    elif rule == "all":
        keep = np.ones(len(pts), bool)
    elif rule == "fsanet":
        keep_x, keep_y = pts[:, 0] > 0, pts[:, 1] > 0
        keep = keep_y if keep_x.sum() > keep_y.sum() else keep_x
    else:
        raise ValueError(f"unknown landmark rule {rule!r}; valid: both, fsanet, all")
    pts = pts[keep]
    if len(pts) == 0:
        raise ValueError("no valid landmark (all coordinates <= 0)")
    return np.array([*pts.min(0), *pts.max(0)], np.float32)


def hopenet_crop(box: np.ndarray, k: float = 0.2) -> np.ndarray:
    """Hopenet's loose crop (Ruiz et al. code): k = 0.2 at test, U[0.2, 0.4] in training.

    The published code updates the box in place, so x_max grows with the
    already enlarged width, and the bottom grows by only 0.6 k of the
    already enlarged height; this reproduces it exactly.
    """
    x_min, y_min, x_max, y_max = (float(v) for v in box)
    x_min -= 2 * k * abs(x_max - x_min)
    y_min -= 2 * k * abs(y_max - y_min)
    x_max += 2 * k * abs(x_max - x_min)
    y_max += 0.6 * k * abs(y_max - y_min)
    return np.array([x_min, y_min, x_max, y_max], np.float32)


def hopenet_train_crop(box: np.ndarray, k: float = 0.2, offset=(0.5, 0.5)) -> np.ndarray:
    """Hopenet's training crop (deep-head-pose `code/datasets.py`, class Pose_300W_LP).

    The landmark box widened in place, as the official loader does (so x_max
    grows by 0.6 k of the already widened width, y_max by 0.6 k of the already
    heightened height):
        x_min -= 0.6 k |x_max - x_min|;  y_min -= 2 k |y_max - y_min|
        x_max += 0.6 k |x_max - x_min|;  y_max += 0.6 k |y_max - y_min|
    with k ~ U[0.2, 0.4] in training; then its transform Scale(240) +
    RandomCrop(224), which keeps the aspect ratio: in the widened box's pixels
    a square of side (224 / 240) * its shorter side, at `offset` (each in
    [0, 1]) of the slack along x and y - uniformly random in training,
    (0.5, 0.5) (centred) without randomness. The official code also
    truncates the widened box to whole pixels before Scale(240); here the
    square is rounded once, by `crop_resize`.
    """
    x_min, y_min, x_max, y_max = (float(v) for v in box)
    x_min -= 0.6 * k * abs(x_max - x_min)
    y_min -= 2 * k * abs(y_max - y_min)
    x_max += 0.6 * k * abs(x_max - x_min)
    y_max += 0.6 * k * abs(y_max - y_min)
    width, height = x_max - x_min, y_max - y_min
    side = HOPENET_TRAIN_FRACTION * min(width, height)
    x0 = x_min + float(offset[0]) * (width - side)
    y0 = y_min + float(offset[1]) * (height - side)
    return np.array([x0, y0, x0 + side, y0 + side], np.float32)


def fsanet_crop(box: np.ndarray, image_shape: tuple[int, ...], ad: float = 0.6,
                bounds: np.ndarray | None = None) -> np.ndarray:
    """FSA-Net's crop (data/type1/TYY_create_db_type1.py): the box enlarged by `ad` of its size on every side.

    Reproduces the official integer arithmetic: the tight box is truncated
    with int() before w = x_max - x_min, h = y_max - y_min are taken; the
    enlarged box (x_min - ad w, y_min - ad h, x_max + ad w, y_max + ad h) is
    truncated with int() (not rounded) and clipped to [0, W - 1] x [0, H - 1].
    The result has whole-pixel coordinates and is cut with an exclusive end,
    image[y0:y1, x0:x1] (`crop_resize`), so the last row and column of the
    image are never part of it, as in the official code.

    bounds: where the source image lies in this image's pixels, (x0, y0, x1,
    y1) exclusive, when the image is a stored crop padded beyond the source
    image; the clipping then happens at the source image's edges, which gives
    the official pixels when the crop was cut at a whole-pixel offset without
    scaling. Default: the image itself, (0, 0, W, H).
    """
    # Python's int() truncates toward zero; the official boxes are positive before clipping.
    x_min, y_min, x_max, y_max = (int(float(v)) for v in box)
    w, h = x_max - x_min, y_max - y_min
    height, width = image_shape[:2]
    left, top, right, bottom = (0, 0, width, height) if bounds is None else (int(round(float(v))) for v in bounds)
    return np.array(
        [
            max(int(x_min - ad * w), left),
            max(int(y_min - ad * h), top),
            min(int(x_max + ad * w), right - 1),
            min(int(y_max + ad * h), bottom - 1),
        ],
        np.float32,
    )


def scale_box(box: np.ndarray, scale: float, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The box scaled about its centre, its centre moved by `shift` box sizes."""
    box = np.asarray(box, np.float32)
    centre = (box[:2] + box[2:]) / 2
    size = box[2:] - box[:2]
    centre = centre + np.asarray(shift, np.float32) * size
    return np.concatenate([centre - size * scale / 2, centre + size * scale / 2]).astype(np.float32)


# How each convention's published code resizes the cut region. FSA-Net: cv2.resize with its
# default bilinear filter (no anti-aliasing); Hopenet: PIL's bilinear resize, which widens its
# filter when shrinking, approximated by INTER_AREA when shrinking and bilinear when enlarging.
RESIZE = {"hopenet": "area", "hopenet_train": "area", "fsanet": "bilinear", "box": "area"}


def crop_resize(image: np.ndarray, box: np.ndarray, size: int, *, convention: str = "hopenet") -> np.ndarray:
    """Cut `box` out of `image` (black outside the image, as PIL's crop) and resize to size x size.

    image: (H, W, C) uint8; returns (size, size, C). The box is rounded to
    whole pixels like the published code (PIL crop with int coordinates;
    FSA-Net's numpy slicing) and its end is exclusive: image[y0:y1, x0:x1].
    `convention` picks the published resize filter (see RESIZE).
    """
    if convention not in RESIZE:
        raise ValueError(f"unknown crop convention {convention!r}; valid: {', '.join(CROPS)}")
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"empty crop box {tuple(np.round(box, 1))}")
    height, width = image.shape[:2]
    pad = max(0, -x0, -y0, x1 - width, y1 - height)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    patch = image[y0:y1, x0:x1]
    area = RESIZE[convention] == "area" and patch.shape[0] > size
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)


def crop_box(convention: str, box: np.ndarray, image_shape: tuple[int, ...], *, k: float = 0.2,
             bounds: np.ndarray | None = None, offset=None) -> np.ndarray:
    """The model-input region for a face box under a named convention (see CROPS).

    k: Hopenet's margin; bounds: the source image's extent for FSA-Net's
    clipping (see `fsanet_crop`); offset: where "hopenet_train"'s square lies
    in its widened box, (x, y) in [0, 1] (None: centred; see
    `hopenet_train_crop`). Cut it with `crop_resize(..., convention=)`.
    """
    if convention == "hopenet":
        return hopenet_crop(box, k)
    if convention == "hopenet_train":
        return hopenet_train_crop(box, k, (0.5, 0.5) if offset is None else offset)
    if convention == "fsanet":
        return fsanet_crop(box, image_shape, bounds=bounds)
    if convention == "box":
        return np.asarray(box, np.float32)
    raise ValueError(f"unknown crop convention {convention!r}; valid: {', '.join(CROPS)}")


# --- BIWI: a face box from the annotated 3D head centre ----------------------

BIWI_HEAD_BOX_MM = 160.0  # side of the square physical face box; see biwi_head_box


def project_points(
    points_mm: np.ndarray,
    intrinsics: np.ndarray,
    distortion: np.ndarray,
    rotation: np.ndarray,
    translation: np.ndarray,
) -> np.ndarray:
    """Project 3D points (N, 3) of a source camera frame into a camera's image: (N, 2) pixels.

    The points are first moved into the camera frame, p_cam = rotation @ p + translation
    (BIWI `rgb.cal`: R, T map the depth camera frame to the RGB camera frame; checked on
    the sample frame by overlaying the projected head mesh), then projected with the
    pinhole intrinsics (3, 3) and the OpenCV distortion coefficients (k1, k2, p1, p2[, k3]).
    """
    pts = np.asarray(points_mm, np.float64).reshape(-1, 3)
    rvec, _ = cv2.Rodrigues(np.asarray(rotation, np.float64))
    uv, _ = cv2.projectPoints(
        pts, rvec, np.asarray(translation, np.float64).reshape(3, 1),
        np.asarray(intrinsics, np.float64), np.asarray(distortion, np.float64).ravel(),
    )
    return uv.reshape(-1, 2).astype(np.float32)


def biwi_head_box(
    center_mm: np.ndarray,
    intrinsics: np.ndarray,
    distortion: np.ndarray,
    rotation: np.ndarray,
    translation: np.ndarray,
    size_mm: float = BIWI_HEAD_BOX_MM,
) -> np.ndarray:
    """BIWI face box: a size_mm x size_mm square facing the RGB camera at the head centre.

    center_mm: (3,) head centre of `frame_*_pose.txt` (depth camera frame, mm).
    The centre c = rotation @ center + translation (RGB camera frame) projects to
    (u, v); the box is (u -+ fx s / 2 z, v -+ fy s / 2 z) with z the depth of c.
    s = 160 mm spans about brow-to-chin and cheek-to-cheek (checked on the sample
    frame), i.e. about the tight 68-landmark box of 300W-LP, so the landmark-box
    crop conventions (Hopenet, FSA-Net) apply to it unchanged.
    Returns (4,) float32 (x_min, y_min, x_max, y_max); raises ValueError when the
    centre is not in front of the camera.
    """
    c = np.asarray(rotation, np.float64) @ np.asarray(center_mm, np.float64).reshape(3)
    c = c + np.asarray(translation, np.float64).reshape(3)
    if not np.all(np.isfinite(c)) or c[2] <= 0:
        raise ValueError(f"head centre {np.round(c, 1)} is not in front of the RGB camera")
    u, v = project_points(center_mm, intrinsics, distortion, rotation, translation)[0]
    k = np.asarray(intrinsics, np.float64)
    half_w = k[0, 0] * size_mm / 2 / c[2]
    half_h = k[1, 1] * size_mm / 2 / c[2]
    return np.array([u - half_w, v - half_h, u + half_w, v + half_h], np.float32)
