"""Heads on pooled backbone features (B, C) -> a dict of outputs.

Output keys, the contract every loss term reads (jaxpose.losses):
* "logits":       (B, 3, K) the finest (first) binned granularity;
* "logits_multi": tuple of (B, 3, K_i), finest first (hybrid coarse-fine);
* "regression":   (B, 3) a regression head's output, radians (RankPose);
* "pose":         (B, 3) the prediction in degrees (every model).
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


HEADS = {"binned": BinnedHead, "regression": RegressionHead}
