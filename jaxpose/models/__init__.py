"""Model and head registries: a model maps images (B, H, W, 3) to a dict of outputs.

`build_model(config.model)` assembles what an experiment names: a backbone
from MODELS and, for backbones that only pool features (the ResNets), a head
from HEADS (binned, regression, rotation_6d, quaternion); every head composes
with every such backbone. Self-contained models (FSA-Net, SSR-Net-MD) produce
their outputs directly.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxpose.models.heads import HEADS
from jaxpose.models.resnet import RESNETS, ResNet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class PoseModel(nn.Module):
    """A feature backbone followed by a head; `__call__` returns the head's output dict."""

    backbone: nn.Module
    head: nn.Module

    def __call__(self, images, train: bool):
        return self.head(self.backbone(images, train=train), train=train)


def _resnet(name: str) -> Callable[..., nn.Module]:
    return lambda **kwargs: ResNet(**{**RESNETS[name], **kwargs})


def _fsanet(**kwargs) -> nn.Module:
    from jaxpose.models.fsanet import FSANet

    return FSANet(**kwargs)


def _ssrnet_md(**kwargs) -> nn.Module:
    from jaxpose.models.fsanet import SSRNetMD

    return SSRNetMD(**kwargs)


# name -> (constructor, needs a head)
MODELS: dict[str, tuple[Callable[..., nn.Module], bool]] = {
    **{name: (_resnet(name), True) for name in RESNETS},
    "fsanet": (_fsanet, False),
    "ssrnet_md": (_ssrnet_md, False),
}


def _lookup(registry: dict, kind: str, name: str):
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(registry))}")
    return registry[name]


def get_model(name: str, **kwargs) -> nn.Module:
    """A backbone or self-contained model by name; unknown names list the valid ones."""
    constructor, _ = _lookup(MODELS, "model", name)
    return constructor(**kwargs)


def get_head(name: str, **kwargs) -> nn.Module:
    return _lookup(HEADS, "head", name)(**kwargs)


def build_model(model_config: Any) -> nn.Module:
    """The model of an experiment's `config.model` (name, dtype, kwargs, head, head_kwargs)."""
    dtype = _lookup(DTYPES, "dtype", model_config.get("dtype", "float32"))
    kwargs = dict(model_config.get("kwargs", {}))
    if model_config.get("freeze_batch_stats"):  # BatchNorms kept in inference mode (models.resnet)
        if model_config.name not in RESNETS:
            raise ValueError(f"model.freeze_batch_stats applies to ResNet backbones, not {model_config.name!r}")
        kwargs["freeze_batch_stats"] = model_config.freeze_batch_stats
    backbone = get_model(model_config.name, dtype=dtype, **kwargs)
    if not _lookup(MODELS, "model", model_config.name)[1]:
        return backbone
    head = get_head(model_config.head, dtype=dtype, **dict(model_config.get("head_kwargs", {})))
    return PoseModel(backbone=backbone, head=head)
