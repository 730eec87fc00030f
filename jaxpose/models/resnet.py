"""ResNet backbones (He et al. 2016) in flax.linen, NHWC, torchvision layout.

Parameter names follow torchvision's modules (conv1/bn1, layerI_J blocks
with conv1..conv3, bn1..bn3, downsample_conv/downsample_bn), so
`jaxpose.pretrained` maps a torchvision state_dict name by name. The
backbone returns globally average-pooled features (B, C) in float32.

`freeze_batch_stats` keeps BatchNorm layers in inference mode while training
(they normalise with, and do not update, their running statistics; their
scale and bias still train): "backbone" all of them; "blocks" the residual
blocks' bn1..bn3 only - what deep-head-pose's `train_hopenet.py` (and the
hybrid coarse-fine code built on it) does by calling .eval() on the modules
of layer1..layer4 whose name contains "bn", which leaves the stem's bn1 and
the shortcut BatchNorms (`downsample.1`) training.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any
FREEZE_BATCH_STATS = ("", "blocks", "backbone")

# torchvision's BatchNorm: eps 1e-5, running-average momentum 0.1 (flax: 0.9).
_BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)
_Conv = functools.partial(nn.Conv, use_bias=False, kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    features: int
    strides: int = 1
    dtype: Dtype = jnp.float32
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool, shortcut_train: bool | None = None):
        norm = functools.partial(_BatchNorm, use_running_average=not train, dtype=self.dtype)
        conv = functools.partial(_Conv, dtype=self.dtype)
        y = conv(self.features, (3, 3), self.strides, padding=1, name="conv1")(x)
        y = nn.relu(norm(name="bn1")(y))
        y = conv(self.features, (3, 3), padding=1, name="conv2")(y)
        # Zero-initialised last BN scale: each block starts as the identity (Goyal et al.).
        y = norm(name="bn2", scale_init=nn.initializers.zeros)(y)
        shortcut_norm = _shortcut_norm(train, shortcut_train, self.dtype)
        return nn.relu(y + _shortcut(x, y.shape[-1], self.strides, conv, shortcut_norm))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, as torchvision v1.5) -> 1x1 convolutions (ResNet-50/101)."""

    features: int
    strides: int = 1
    dtype: Dtype = jnp.float32
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool, shortcut_train: bool | None = None):
        norm = functools.partial(_BatchNorm, use_running_average=not train, dtype=self.dtype)
        conv = functools.partial(_Conv, dtype=self.dtype)
        y = nn.relu(norm(name="bn1")(conv(self.features, (1, 1), name="conv1")(x)))
        y = conv(self.features, (3, 3), self.strides, padding=1, name="conv2")(y)
        y = nn.relu(norm(name="bn2")(y))
        y = conv(self.features * 4, (1, 1), name="conv3")(y)
        y = norm(name="bn3", scale_init=nn.initializers.zeros)(y)
        shortcut_norm = _shortcut_norm(train, shortcut_train, self.dtype)
        return nn.relu(y + _shortcut(x, y.shape[-1], self.strides, conv, shortcut_norm))


def _shortcut_norm(train: bool, shortcut_train: bool | None, dtype):
    """The shortcut's BatchNorm: training like the block's own unless `shortcut_train` says otherwise."""
    shortcut_train = train if shortcut_train is None else shortcut_train
    return functools.partial(_BatchNorm, use_running_average=not shortcut_train, dtype=dtype)


def _shortcut(x, features: int, strides: int, conv, norm):
    if x.shape[-1] == features and strides == 1:
        return x
    return norm(name="downsample_bn")(conv(features, (1, 1), strides, name="downsample_conv")(x))


class ResNet(nn.Module):
    """ResNet trunk: 7x7/2 stem, 3x3/2 max-pool, four stages, global average pool."""

    stage_sizes: Sequence[int]
    block: str = "basic"  # "basic" or "bottleneck"
    width: int = 64
    dtype: Dtype = jnp.float32
    freeze_batch_stats: str = ""  # "", "blocks" or "backbone" (module docstring)

    @nn.compact
    def __call__(self, images, train: bool):
        if self.freeze_batch_stats not in FREEZE_BATCH_STATS:
            raise ValueError(f"unknown freeze_batch_stats {self.freeze_batch_stats!r}; valid: "
                             f"{', '.join(repr(v) for v in FREEZE_BATCH_STATS)}")
        # Stem and shortcut BatchNorms train unless "backbone"; the blocks' own unless anything is frozen.
        outer_train = train and self.freeze_batch_stats != "backbone"
        block_train = train and not self.freeze_batch_stats
        block_cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[self.block]
        x = images.astype(self.dtype)
        x = _Conv(self.width, (7, 7), 2, padding=3, dtype=self.dtype, name="conv1")(x)
        x = _BatchNorm(use_running_average=not outer_train, dtype=self.dtype, name="bn1")(x)
        x = nn.max_pool(nn.relu(x), (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                strides = 2 if i > 0 and j == 0 else 1
                block = block_cls(self.width * 2**i, strides, self.dtype, name=f"layer{i + 1}_{j}")
                x = block(x, block_train, shortcut_train=outer_train)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


RESNETS = {
    "resnet_tiny": dict(stage_sizes=(1, 1, 1, 1), block="basic", width=8),
    "resnet10": dict(stage_sizes=(1, 1, 1, 1), block="basic", width=64),
    "resnet18": dict(stage_sizes=(2, 2, 2, 2), block="basic", width=64),
    "resnet34": dict(stage_sizes=(3, 4, 6, 3), block="basic", width=64),
    "resnet50": dict(stage_sizes=(3, 4, 6, 3), block="bottleneck", width=64),
    "resnet101": dict(stage_sizes=(3, 4, 23, 3), block="bottleneck", width=64),
}
