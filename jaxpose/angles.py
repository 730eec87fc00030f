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


# --- rotations: Euler <-> matrix <-> quaternion <-> 6D, flips ------------------
#
# Every function here takes numpy or JAX arrays: numpy (or lists) in -> numpy
# out in float64 (host geometry, drawing, metrics keep their precision); a JAX
# array or tracer in -> jnp out in its floating dtype (float32 by default), with
# gradients that stay finite everywhere (losses backpropagate through them).
#
# Conventions (the one place they are defined):
# * matrix R (..., 3, 3): head-model coordinates -> camera coordinates,
#   R = Rx(-pitch) @ Ry(yaw) @ Rz(roll) (module docstring). Its columns are the
#   head's axes in the camera frame: R e_x = the subject's left (image right on
#   a frontal face), R e_y = down, R e_z = backwards (the nose points along -R e_z).
# * quaternion (..., 4) = (w, x, y, z), w the scalar part, unit norm, sign
#   canonicalised to w >= 0 (q and -q are the same rotation); R(q) is the
#   usual Hamilton-convention matrix.
# * 6D (..., 6) = the first two COLUMNS of R, (R e_x, R e_y) concatenated
#   (Zhou et al. 2019, "On the Continuity of Rotation Representations in Neural
#   Networks", as 6DRepNet's compute_rotation_matrix_from_ortho6d reads it:
#   x = a1 / |a1|, z = (x cross a2) / |x cross a2|, y = z cross x, R = [x y z]).
# * flip: the mirror image of a head with rotation R has F R F, F = diag(-1, 1, 1)
#   (the camera's x axis mirrored), which is the pose with yaw and roll negated.

_FLIP_SIGNS = np.array([[1.0, -1.0, -1.0], [-1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]])  # F R F = R * these
# Squared lengths below this count as zero in the JAX forms (zero gradient instead of NaN / inf):
# (1e-6)^2, i.e. within ~6e-5 degrees of gimbal lock, far below float32's resolution of the angles.
_TINY = 1e-12


def _is_jax(*arrays) -> bool:
    return any(isinstance(a, jax.Array) for a in arrays)  # tracers are jax.Array instances too


def _namespace(*arrays):
    """(array module, float array converter): numpy in float64, or jnp keeping a floating dtype."""
    if _is_jax(*arrays):
        def to_float(a):
            a = jnp.asarray(a)
            return a if jnp.issubdtype(a.dtype, jnp.floating) else a.astype(jnp.float32)

        return jnp, to_float
    return np, lambda a: np.asarray(a, np.float64)


def _safe_sqrt(xp, squared):
    """sqrt with a zero (not infinite) gradient at 0 (jnp); plain sqrt for numpy."""
    if xp is np:
        return np.sqrt(squared)
    positive = squared > _TINY
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def _atan2(xp, y, x):
    """atan2 whose gradient is 0, not NaN, at y = x = 0 (gimbal lock) for jnp; np.arctan2 for numpy."""
    if xp is np:
        return np.arctan2(y, x)
    defined = y * y + x * x > _TINY
    return jnp.arctan2(jnp.where(defined, y, 0.0), jnp.where(defined, x, 1.0))


def _normalize(xp, v, axis: int = -1):
    """v / |v| along axis; a zero vector stays zero instead of dividing by 0 (6DRepNet clamps |v| >= 1e-8)."""
    # max(|v|, 1e-8) taken inside the sqrt: the same value, and no infinite sqrt gradient at 0.
    return v / xp.sqrt(xp.maximum(xp.sum(v * v, axis=axis, keepdims=True), 1e-16))


def _matmul(xp, a, b):
    """a @ b; for JAX at full float32 precision (GPUs would otherwise use TF32, ~1e-3 relative error)."""
    if xp is np:
        return a @ b
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _axis_rotation(xp, a, axis: int):
    """Rotations by angles a (radians, (...,)) about the x, y or z axis (0, 1, 2): (..., 3, 3)."""
    c, s, o, z = xp.cos(a), xp.sin(a), xp.ones_like(a), xp.zeros_like(a)
    rows = {
        0: ((o, z, z), (z, c, -s), (z, s, c)),
        1: ((c, z, s), (z, o, z), (-s, z, c)),
        2: ((c, -s, z), (s, c, z), (z, z, o)),
    }[axis]
    return xp.stack([xp.stack(row, -1) for row in rows], -2)


def euler_to_matrix(angles):
    """(yaw, pitch, roll) degrees (..., 3) -> rotation matrices (..., 3, 3), R = Rx(-pitch) Ry(yaw) Rz(roll)."""
    xp, to_float = _namespace(angles)
    yaw, pitch, roll = xp.moveaxis(xp.radians(to_float(angles)), -1, 0)
    yaw_roll = _matmul(xp, _axis_rotation(xp, yaw, 1), _axis_rotation(xp, roll, 2))
    return _matmul(xp, _axis_rotation(xp, -pitch, 0), yaw_roll)


def matrix_to_euler(rotation):
    """Rotation matrices (..., 3, 3) -> (yaw, pitch, roll) degrees (..., 3).

    Inverse of `euler_to_matrix` for |yaw| < 90 degrees (the Rx Ry Rz
    decomposition is unique there; at |yaw| = 90 pitch and roll mix).
    For R = Rx(a) Ry(b) Rz(c): R02 = sin b, R12 = -sin a cos b,
    R22 = cos a cos b, R01 = -cos b sin c, R00 = cos b cos c.
    With JAX arrays the gradient is finite everywhere: at gimbal lock
    (cos b = 0) the undefined atan2(0, 0) and hypot(0, 0) get a zero gradient.
    """
    xp, to_float = _namespace(rotation)
    r = to_float(rotation)
    rx = _atan2(xp, -r[..., 1, 2], r[..., 2, 2])
    cos_b = _safe_sqrt(xp, r[..., 1, 2] ** 2 + r[..., 2, 2] ** 2)
    ry = _atan2(xp, r[..., 0, 2], cos_b)
    rz = _atan2(xp, -r[..., 0, 1], r[..., 0, 0])
    return xp.degrees(xp.stack([ry, -rx, rz], -1))


def quaternion_to_matrix(quaternion):
    """Quaternions (w, x, y, z) (..., 4) -> rotation matrices (..., 3, 3).

    The quaternion is normalised first (any non-zero 4-vector is accepted, so a
    head's raw output can be passed); q and -q give the same matrix.
    """
    xp, to_float = _namespace(quaternion)
    w, x, y, z = xp.moveaxis(_normalize(xp, to_float(quaternion)), -1, 0)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return xp.stack([xp.stack(row, -1) for row in rows], -2)


def matrix_to_quaternion(rotation):
    """Rotation matrices (..., 3, 3) -> unit quaternions (w, x, y, z) (..., 4) with w >= 0.

    Shepperd's method: of the four expressions 4 w^2 = 1 + R00 + R11 + R22,
    4 x^2 = 1 + R00 - R11 - R22, 4 y^2 = 1 - R00 + R11 - R22 and
    4 z^2 = 1 - R00 - R11 + R22, the largest (>= 1 for a rotation) is divided
    by, so no component is recovered from a near-zero square root. Each
    candidate is computed and the best selected, which jit and vmap need.
    """
    xp, to_float = _namespace(rotation)
    r = to_float(rotation)
    r00, r11, r22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    sym = lambda i, j: r[..., i, j] + r[..., j, i]  # noqa: E731
    skew = lambda i, j: r[..., i, j] - r[..., j, i]  # noqa: E731
    squares = xp.stack([1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22], -1)
    candidates = xp.stack([
        xp.stack([squares[..., 0], skew(2, 1), skew(0, 2), skew(1, 0)], -1),
        xp.stack([skew(2, 1), squares[..., 1], sym(0, 1), sym(0, 2)], -1),
        xp.stack([skew(0, 2), sym(0, 1), squares[..., 2], sym(1, 2)], -1),
        xp.stack([skew(1, 0), sym(0, 2), sym(1, 2), squares[..., 3]], -1),
    ], -2)  # (..., 4 candidates, 4 components), candidate k = 4 q_k q
    best = xp.argmax(squares, axis=-1)[..., None, None]
    chosen = xp.take_along_axis(candidates, best, axis=-2)[..., 0, :]
    scale = 2 * _safe_sqrt(xp, xp.maximum(xp.take_along_axis(squares, best[..., 0], axis=-1), 0.0))
    quaternion = chosen / xp.maximum(scale, 1e-12)
    return canonical_quaternion(quaternion)


def unit_vector(v):
    """v / |v| along the last axis (numpy or JAX, as the other conversions); a zero vector stays zero.

    The normalisation of the quaternion head and loss: any non-zero vector is accepted.
    """
    xp, to_float = _namespace(v)
    return _normalize(xp, to_float(v))


def canonical_quaternion(quaternion):
    """The representative with w >= 0 of each quaternion's pair {q, -q} (..., 4)."""
    xp, to_float = _namespace(quaternion)
    q = to_float(quaternion)
    return xp.where(q[..., :1] < 0, -q, q)


def euler_to_quaternion(angles):
    """(yaw, pitch, roll) degrees (..., 3) -> unit quaternions (w, x, y, z) (..., 4), w >= 0."""
    return matrix_to_quaternion(euler_to_matrix(angles))


def quaternion_to_euler(quaternion):
    """Quaternions (w, x, y, z) (..., 4) -> (yaw, pitch, roll) degrees (..., 3)."""
    return matrix_to_euler(quaternion_to_matrix(quaternion))


def rotation_6d_to_matrix(x):
    """6D representations (..., 6) -> rotation matrices (..., 3, 3) by Gram-Schmidt.

    x = (a1, a2), two 3-vectors: c1 = a1 / |a1|, c3 = (c1 x a2) / |c1 x a2|,
    c2 = c3 x c1, R = [c1 c2 c3] as columns (Zhou et al. 2019, Eq. 15-16;
    Hempel et al. 2022, "6D Rotation Representation for Unconstrained Head
    Pose Estimation", Eq. 3-5). Any (a1, a2) with a1, a2 not parallel maps to
    a rotation; zero or parallel vectors give a degenerate (non-NaN) matrix.
    """
    xp, to_float = _namespace(x)
    x = to_float(x)
    c1 = _normalize(xp, x[..., 0:3])
    c3 = _normalize(xp, xp.cross(c1, x[..., 3:6]))
    c2 = xp.cross(c3, c1)
    return xp.stack([c1, c2, c3], axis=-1)


def matrix_to_rotation_6d(rotation):
    """Rotation matrices (..., 3, 3) -> 6D (..., 6): the first column, then the second."""
    xp, to_float = _namespace(rotation)
    r = to_float(rotation)
    return xp.concatenate([r[..., :, 0], r[..., :, 1]], axis=-1)


def flip_rotation(rotation):
    """The rotation of the horizontally mirrored image: F R F, F = diag(-1, 1, 1) (..., 3, 3).

    Mirroring the image mirrors the camera's x axis; the head seen in the
    mirror is rotated by F R F (a proper rotation: det F^2 = 1). For
    R = euler_to_matrix((yaw, pitch, roll)) this is euler_to_matrix((-yaw,
    pitch, -roll)), i.e. `flip_horizontal` (tests/test_rotations.py).
    """
    xp, to_float = _namespace(rotation)
    r = to_float(rotation)
    return r * xp.asarray(_FLIP_SIGNS, r.dtype)


def rotation_angle_between(r1, r2, eps: float = 0.0):
    """Angle in radians of the rotation R1^T R2, i.e. the geodesic distance on SO(3) (...,).

    theta = arccos((tr(R1^T R2) - 1) / 2), with tr(R1^T R2) = sum_ij R1_ij R2_ij;
    the cosine is clamped to [-1 + eps, 1 - eps]. eps = 0 (metrics) only
    absorbs rounding; eps > 0 (losses) keeps the arccos gradient finite, as
    6DRepNet's loss.py does with eps = 1e-7.
    """
    xp, to_float = _namespace(r1, r2)
    trace = xp.sum(to_float(r1) * to_float(r2), axis=(-2, -1))
    return xp.arccos(xp.clip((trace - 1) / 2, -1 + eps, 1 - eps))


def flip_horizontal(angles):
    """Pose of the mirrored image: yaw and roll change sign, pitch does not (see `flip_rotation`)."""
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
