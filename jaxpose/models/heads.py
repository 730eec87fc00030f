"""Heads on pooled backbone features (B, C) -> a dict of outputs.

Output keys, the contract every loss term reads (jaxpose.losses):
* "logits":       (B, 3, K) the finest (first) binned granularity;
* "logits_multi": tuple of (B, 3, K_i), finest first (hybrid coarse-fine);
* "regression":   (B, 3) a regression head's output, radians (RankPose);
* "rotation":     (B, 3, 3) a rotation head's matrix (jaxpose.angles conventions);
* "rotation_6d":  (B, 6) the 6D head's raw output (first two columns before Gram-Schmidt);
* "quaternion":   (B, 4) the quaternion head's unit quaternion (w, x, y, z), sign not canonicalised;
* "pose":         (B, 3) the prediction in degrees (every model; rotation heads decode their matrix).

Heads sit on pooled backbone features, so each composes with every MODELS
entry that takes a head (the ResNets); FSA-Net and SSR-Net-MD are
self-contained models with their own outputs.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxpose import angles

ANGLE_NAMES = ("yaw", "pitch", "roll")


class BinnedHead(nn.Module):
    """One linear classifier per angle and granularity (Ruiz et al.; Wang et al. for several).

    `granularities` lists bin counts over [lo, hi], finest first; the pose is
    the softmax expectation of the finest one. `left_edge` decodes like the
    original Hopenet code (for its converted weights only).
    """

    granularities: Sequence[int] = (66,)
    lo: float = -99.0
    hi: float = 99.0
    left_edge: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features, train: bool = False):
        del train
        logits_multi = []
        for i, num_bins in enumerate(self.granularities):
            suffix = "" if i == 0 else f"_{num_bins}"
            per_angle = [
                nn.Dense(num_bins, dtype=self.dtype, name=f"fc_{name}{suffix}")(features) for name in ANGLE_NAMES
            ]
            logits_multi.append(jnp.stack(per_angle, axis=1).astype(jnp.float32))
        logits = logits_multi[0]
        pose = angles.decode_expectation(logits, self.lo, self.hi, left_edge=self.left_edge)
        return {"logits": logits, "logits_multi": tuple(logits_multi), "pose": pose}


class RegressionHead(nn.Module):
    """RankPose's bounded regression outputs (Dai et al., Eq. 1-3), in radians.

    * "dot":    y = W^T F (unbounded);
    * "linear": y = W^T F + b in *degrees* (Hopenet's regression-only
      baseline, whose fc_angles outputs degrees); "regression" is then
      radians(y), so the same function as "dot", parametrised in degrees;
    * "cosine": y = alpha * W^T F / (|W| |F|), alpha = pi / 2 maps [-1, 1] to [-pi/2, pi/2];
    * "arccos": y = arccos(W^T F / (|W| |F|)) - pi / 2, also in [-pi/2, pi/2].
    W holds one column per angle; columns and F are L2-normalised for the bounded kinds.
    """

    kind: str = "arccos"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features, train: bool = False):
        del train
        if self.kind not in ("dot", "linear", "cosine", "arccos"):
            raise ValueError(f"unknown regression head kind {self.kind!r}; valid: dot, linear, cosine, arccos")
        features = features.astype(jnp.float32)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (features.shape[-1], 3), jnp.float32)
        if self.kind == "linear":
            degrees = features @ kernel + self.param("bias", nn.initializers.zeros, (3,), jnp.float32)
            return {"regression": jnp.radians(degrees), "pose": degrees}
        if self.kind == "dot":
            bias = self.param("bias", nn.initializers.zeros, (3,), jnp.float32)
            radians = features @ kernel + bias
        else:
            cosine = _unit(features) @ _unit(kernel, axis=0)
            if self.kind == "cosine":
                radians = cosine * (math.pi / 2)
            else:
                # Clip inside (-1, 1): arccos has an infinite gradient at +-1.
                radians = jnp.arccos(jnp.clip(cosine, -1 + 1e-6, 1 - 1e-6)) - math.pi / 2
        return {"regression": radians, "pose": jnp.degrees(radians)}


def _unit(x, axis: int = -1, eps: float = 1e-8):
    return x / jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True) + eps)


class Rotation6DHead(nn.Module):
    """6DRepNet's head: a linear layer to 6 numbers, mapped to a rotation by Gram-Schmidt.

    Hempel et al. 2022, "6D Rotation Representation for Unconstrained Head
    Pose Estimation": the 6 outputs are two 3-vectors (a1, a2), R =
    angles.rotation_6d_to_matrix(a1, a2) (continuous in its input, Zhou et al.
    2019). Outputs "rotation_6d" (B, 6), "rotation" (B, 3, 3) and "pose" (B, 3)
    = angles.matrix_to_euler(R) in degrees, differentiable everywhere, so the
    Euler losses ("mae", "mse") train through it too.

    Computed in float32 whatever `dtype` (the backbone's): 6 bf16 outputs
    would carry ~0.5 degree rounding. `identity_init` starts the bias at the
    identity's 6D (1, 0, 0, 0, 1, 0), so a fresh head predicts the frontal
    pose rather than a random rotation (where the clamped arccos of the
    geodesic loss is flat near 180 degrees); False starts it at zero (flax's
    default; the official PyTorch layer draws a small uniform bias).
    """

    identity_init: bool = True
    dtype: Any = jnp.float32  # the backbone's compute dtype; this head stays float32 (above)

    @nn.compact
    def __call__(self, features, train: bool = False):
        del train
        bias = _constant_init(IDENTITY_6D) if self.identity_init else nn.initializers.zeros
        six = nn.Dense(6, dtype=jnp.float32, bias_init=bias, name="fc_6d")(features.astype(jnp.float32))
        rotation = angles.rotation_6d_to_matrix(six)
        return {"rotation_6d": six, "rotation": rotation, "pose": angles.matrix_to_euler(rotation)}


class QuaternionHead(nn.Module):
    """A linear layer to 4 numbers, normalised to a unit quaternion (w, x, y, z).

    The representation of QuatNet (Hsu et al. 2019, "QuatNet: Quaternion-Based
    Head Pose Estimation With Multiregression Loss") and WQuatNet (Algabri et
    al. 2025). Outputs "quaternion" (B, 4) unit norm (its sign is left as
    predicted: the quaternion losses compare |<q, p>|, blind to it),
    "rotation" (B, 3, 3) and "pose" (B, 3) degrees. float32 and
    `identity_init` (bias (1, 0, 0, 0)) as `Rotation6DHead`.
    """

    identity_init: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features, train: bool = False):
        del train
        bias = _constant_init(IDENTITY_QUATERNION) if self.identity_init else nn.initializers.zeros
        raw = nn.Dense(4, dtype=jnp.float32, bias_init=bias, name="fc_quaternion")(features.astype(jnp.float32))
        quaternion = angles.unit_vector(raw)
        rotation = angles.quaternion_to_matrix(quaternion)
        return {"quaternion": quaternion, "rotation": rotation, "pose": angles.matrix_to_euler(rotation)}


IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
IDENTITY_QUATERNION = (1.0, 0.0, 0.0, 0.0)


def _constant_init(values):
    return lambda key, shape, dtype=jnp.float32: jnp.asarray(values, dtype).reshape(shape)


HEADS = {
    "binned": BinnedHead,
    "regression": RegressionHead,
    "rotation_6d": Rotation6DHead,
    "quaternion": QuaternionHead,
}
