"""The one angle convention of jaxpose, and conversions from dataset formats.

Every public function, dataset feature, metric and file uses (yaw, pitch, roll)
in degrees, in that order, on the last axis of shape (..., 3).

Signs follow 300W-LP / AFLW2000 (checked on the fixture images), described in
the OpenCV camera frame (x right, y down, z away from the camera):

* yaw > 0: the nose turns towards the image's left;
* pitch > 0: the face looks up;
* roll > 0: the top of the head tilts towards the image's right
  (clockwise as seen in the image; the image-right eye is the lower one).

`euler_to_matrix` maps head-model coordinates (same axes as the camera for a
frontal face, nose pointing towards the camera, i.e. -z) to camera
coordinates as R = Rx(-pitch) @ Ry(yaw) @ Rz(roll): roll about the face's
own axis first, then yaw, then pitch. This order and these signs fit the
AFLW2000 fixtures' 3D landmarks (`pt3d_68`) at their `Pose_Para` poses.

Binning uses `num_bins` equal bins over [lo, hi]; Hopenet's is 66 bins of 3
degrees over [-99, 99].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

HOPENET_BINS = (-99.0, 99.0, 66)  # (lo, hi, num_bins)


# --- bins -------------------------------------------------------------------


def bin_edges(lo: float, hi: float, num_bins: int) -> np.ndarray:
    """The num_bins + 1 edges of equal bins over [lo, hi]."""
    return np.linspace(lo, hi, num_bins + 1)


def bin_centers(lo: float, hi: float, num_bins: int) -> np.ndarray:
    """The num_bins centres of equal bins over [lo, hi]."""
    edges = bin_edges(lo, hi, num_bins)
    return (edges[:-1] + edges[1:]) / 2


def angle_to_bin(angles: jax.Array, lo: float, hi: float, num_bins: int) -> jax.Array:
    """Index of the bin containing each angle (left-closed bins, int32).

    Angles outside [lo, hi] are clipped into the first or last bin; `hi` itself
    belongs to the last bin.
    """
    width = (hi - lo) / num_bins
    index = jnp.floor((jnp.asarray(angles, jnp.float32) - lo) / width)
    return jnp.clip(index, 0, num_bins - 1).astype(jnp.int32)


def decode_expectation(
    logits: jax.Array, lo: float, hi: float, *, left_edge: bool = False
) -> jax.Array:
    """Soft-expectation decoding: sum_k softmax(logits)_k * value_k.

    logits: (..., K) over K equal bins of [lo, hi]. value_k is the centre of
    bin k, or its left edge with `left_edge=True`: the original Hopenet code
    decodes `sum(p_k * k) * 3 - 99`, so its weights need the left edge.
    Returns (...,) in the unit of lo and hi, computed in float32.
    """
    num_bins = logits.shape[-1]
    values = bin_edges(lo, hi, num_bins)[:-1] if left_edge else bin_centers(lo, hi, num_bins)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return probs @ jnp.asarray(values, jnp.float32)


# --- rotations (numpy: host-side geometry) ----------------------------------


def _rx(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _ry(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rz(a: np.ndarray) -> np.ndarray:
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def euler_to_matrix(angles: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) degrees (..., 3) -> rotation matrices (..., 3, 3)."""
    yaw, pitch, roll = np.moveaxis(np.radians(np.asarray(angles, np.float64)), -1, 0)
    return _rx(-pitch) @ _ry(yaw) @ _rz(roll)


def matrix_to_euler(rotation: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> (yaw, pitch, roll) degrees (..., 3).

    Inverse of `euler_to_matrix` for |yaw| < 90 degrees (the Rx Ry Rz
    decomposition is unique there; at |yaw| = 90 pitch and roll mix).
    For R = Rx(a) Ry(b) Rz(c): R02 = sin b, R12 = -sin a cos b,
    R22 = cos a cos b, R01 = -cos b sin c, R00 = cos b cos c.
    """
    r = np.asarray(rotation, np.float64)
    rx = np.arctan2(-r[..., 1, 2], r[..., 2, 2])
    ry = np.arctan2(r[..., 0, 2], np.hypot(r[..., 1, 2], r[..., 2, 2]))
    rz = np.arctan2(-r[..., 0, 1], r[..., 0, 0])
    return np.degrees(np.stack([ry, -rx, rz], -1))


def flip_horizontal(angles):
    """Pose of the mirrored image: yaw and roll change sign, pitch does not."""
    return angles * np.array([-1.0, 1.0, -1.0], np.float32)


# --- dataset formats ---------------------------------------------------------


def from_pose_para(pose_para: np.ndarray) -> np.ndarray:
    """300W-LP / AFLW2000 `Pose_Para` -> (yaw, pitch, roll) degrees.

    `Pose_Para` is (..., 7) or (..., >=3) = [pitch, yaw, roll, tx, ty, tz, s]
    with angles in radians.
    """
    p = np.asarray(pose_para, np.float64)
    return np.degrees(p[..., [1, 0, 2]]).astype(np.float32)


def from_biwi_rotation(rotation: np.ndarray) -> np.ndarray:
    """BIWI `frame_*_pose.txt` rotation matrix (3, 3) -> (yaw, pitch, roll) degrees.

    The published BIWI evaluations read the matrix transposed, M = R^T, then
    pitch = atan2(M21, M22), yaw = -atan2(-M20, sqrt(M21^2 + M22^2)) and
    roll = -atan2(M10, M00).
    """
    m = np.swapaxes(np.asarray(rotation, np.float64), -1, -2)
    pitch = np.arctan2(m[..., 2, 1], m[..., 2, 2])
    yaw = -np.arctan2(-m[..., 2, 0], np.hypot(m[..., 2, 1], m[..., 2, 2]))
    roll = -np.arctan2(m[..., 1, 0], m[..., 0, 0])
    return np.degrees(np.stack([yaw, pitch, roll], -1)).astype(np.float32)


def in_protocol_range(angles: np.ndarray, limit: float = 99.0) -> np.ndarray:
    """True where all three angles lie in [-limit, limit] (the papers' filter)."""
    return np.all(np.abs(np.asarray(angles)) <= limit, axis=-1)
