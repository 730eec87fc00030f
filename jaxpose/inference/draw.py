"""Drawing a predicted pose on the image: the head's three axes (and optionally a cube) on each face.

The axes are the head frame of `jaxpose.angles` rotated by
R = euler_to_matrix(yaw, pitch, roll) (camera frame: x right, y down, z away
from the camera) and projected orthographically (drop z) from the face
centre, as Hopenet's and FSA-Net's demos draw them:

* red: the head's x axis, towards the image's right on a frontal face (from
  the subject's right eye to their left eye);
* green: up, from the chin towards the top of the head;
* blue: forward, out of the face along the nose (a dot on a frontal face).

tests/test_inference_draw.py checks these directions against the AFLW2000
samples' own 3D landmarks (`pt3d_68`) at their labelled poses.
"""

from __future__ import annotations

import cv2
import numpy as np

from jaxpose.angles import euler_to_matrix

# Head-frame directions of the drawn axes (rows): x, up (-y), forward (-z: the nose points at the camera).
HEAD_AXES = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
AXIS_COLORS = ((230, 40, 40), (40, 200, 40), (40, 90, 255))  # RGB: x red, up green, forward blue
CUBE_EDGES = [(0, 1), (1, 3), (3, 2), (2, 0), (4, 5), (5, 7), (7, 6), (6, 4), (0, 4), (1, 5), (2, 6), (3, 7)]


def axis_directions(pose: np.ndarray) -> np.ndarray:
    """(3, 3) unit vectors in the camera frame of the drawn axes (rows: x, up, forward) for (yaw, pitch, roll)."""
    return HEAD_AXES @ euler_to_matrix(np.asarray(pose, np.float64)).T


def axis_endpoints(pose: np.ndarray, origin: np.ndarray, length: float) -> np.ndarray:
    """(3, 2) image points where the x, up and forward axes of `length` pixels end, from `origin` (x, y)."""
    return np.asarray(origin, np.float64)[None] + length * axis_directions(pose)[:, :2]


def cube_corners(pose: np.ndarray, center: np.ndarray, side: float) -> np.ndarray:
    """(8, 2) image points of a head-aligned cube of `side` pixels centred on `center`; corners 0-3 face forward."""
    signs = np.array([[x, y, z] for z in (-1, 1) for y in (-1, 1) for x in (-1, 1)], np.float64)
    points = signs * side / 2 @ euler_to_matrix(np.asarray(pose, np.float64)).T
    return np.asarray(center, np.float64)[None] + points[:, :2]


def face_origin(box: np.ndarray) -> tuple[np.ndarray, float]:
    """Where the axes start (the box centre) and their length (half the box's larger side)."""
    box = np.asarray(box, np.float64)
    return (box[:2] + box[2:]) / 2, 0.5 * float(max(box[2] - box[0], box[3] - box[1]))


def _point(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def draw_pose(image: np.ndarray, box: np.ndarray, pose: np.ndarray, *, cube: bool = False,
              label: str | None = None) -> np.ndarray:
    """Draws one face's box, axes (and cube) into `image` (H, W, 3) uint8 RGB, in place; returns it."""
    thickness = max(1, int(round(max(image.shape[:2]) / 300)))
    origin, length = face_origin(box)
    cv2.rectangle(image, _point(box[:2]), _point(box[2:]), (255, 255, 255), max(1, thickness // 2))
    if cube:
        corners = cube_corners(pose, origin, length)
        for a, b in CUBE_EDGES:
            cv2.line(image, _point(corners[a]), _point(corners[b]), (255, 200, 0), max(1, thickness // 2), cv2.LINE_AA)
    # Back to front: the axis pointing most towards the camera is drawn last.
    directions = axis_directions(pose)
    for k in np.argsort(-directions[:, 2]):
        end = origin + length * directions[k, :2]
        cv2.line(image, _point(origin), _point(end), AXIS_COLORS[k], thickness + 1, cv2.LINE_AA)
    if label:
        scale = max(0.4, thickness * 0.4)
        y = int(box[1]) - 4 if box[1] > 20 else int(box[3]) + 16
        cv2.putText(image, label, (int(box[0]), y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 0), thickness,
                    cv2.LINE_AA)
    return image


def pose_label(pose: np.ndarray) -> str:
    yaw, pitch, roll = (float(v) for v in pose)
    return f"y {yaw:.0f} p {pitch:.0f} r {roll:.0f}"
