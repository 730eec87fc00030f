"""PyTorch references for `jaxpose.bench --torch`: the same model, loss and optimizer as a config, in torch.

    build_reference(config) -> torch.nn.Module         # outputs the dict jaxpose's model does
    reference_loss(config)  -> fn(outputs, pose) -> scalar
    torch_images_per_sec(config, batch, steps)          # train steps/s x batch, on one device

Covered (anything else is a ValueError naming this list):

* `config.model.name` in `jaxpose.models.resnet.RESNETS` (basic and
  bottleneck blocks, `width` kwarg) with the "binned" head: torchvision's
  ResNet v1.5 layout as `jaxpose.models.resnet`, then one Linear per angle and
  granularity (`fc_yaw`, `fc_pitch`, `fc_roll` [+ `_K`]) as `BinnedHead`;
* `fsanet` (every scoring: conv / var / none; every aggregation: capsule /
  netvlad / metric) and `ssrnet_md`, layer for layer as `jaxpose.models.fsanet`
  (Keras BatchNorm eps 1e-3, momentum 0.99; mapping, aggregation and SSR
  decoding in float32 whatever the autocast);
* loss terms `hopenet`, `binned_ce`, `expectation_mse`, `hybrid`, `mae`
  (per-example values summed over angles, mean over the batch, weighted
  sum, as `jaxpose.losses.total_loss`; bin ranges from the head as
  `jaxpose.train.loss_terms`);
* optimizers `adam`, `adamw`, `sgd` (nesterov) at `config.optimizer.lr`,
  with `grad_clip` when set (the schedule is not reproduced: a constant rate
  costs the same).

Parameter counts equal jaxpose's: `parameter_count(module)` counts torch
parameters, which are jaxpose's "params"; BatchNorm running statistics are
torch buffers and jaxpose "batch_stats" (`include_batch_stats=True` adds
them, as the official FSA-Net .h5 files do: 238,471 for FSA-Caps 1x1).
Initialisation follows jaxpose's initialisers (He fan-out for ResNet convs,
zero last-BN scale per block, LeCun normal for the binned head, Glorot
uniform for FSA-Net), so the reference trains like the jaxpose model; its
outputs are not numerically equal (different random draws).

torch is an optional extra, imported here only: import this module only when
a PyTorch reference is asked for.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jaxpose import losses as jax_losses
from jaxpose.models.fsanet import FUSED_CHANNELS, NUM_ANGLES, STREAM_WIDTHS
from jaxpose.models.resnet import RESNETS

COVERED = (f"models {', '.join(RESNETS)} with head 'binned', fsanet (scoring conv/var/none, "
           f"aggregation capsule/netvlad/metric), ssrnet_md; losses hopenet, binned_ce, expectation_mse, "
           f"hybrid, mae; optimizers adam, adamw, sgd")
_POOL_AFTER = (0, 2, 4)
# jaxpose model kwargs that choose how, not what, is computed (same parameters): not the reference's business.
_HOW_NOT_WHAT = ("dtype", "depthwise")
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def _uncovered(what: str) -> ValueError:
    return ValueError(f"no PyTorch reference for {what}; covered: {COVERED}")


# --- ResNet + binned head --------------------------------------------------------------


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # jaxpose: variance_scaling(2, fan_out)
    return conv


def _bn(channels: int, zero: bool = False) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)
    if zero:  # jaxpose zero-initialises each block's last BN scale (Goyal et al.)
        nn.init.zeros_(bn.weight)
    return bn


class _Block(nn.Module):
    def __init__(self, kind: str, cin: int, features: int, stride: int):
        super().__init__()
        cout = features * (4 if kind == "bottleneck" else 1)
        if kind == "basic":
            self.body = nn.Sequential(_conv(cin, features, 3, stride), _bn(features), nn.ReLU(inplace=True),
                                      _conv(features, features, 3), _bn(features, zero=True))
        else:  # torchvision v1.5: the 3x3 conv carries the stride
            self.body = nn.Sequential(_conv(cin, features, 1), _bn(features), nn.ReLU(inplace=True),
                                      _conv(features, features, 3, stride), _bn(features), nn.ReLU(inplace=True),
                                      _conv(features, cout, 1), _bn(cout, zero=True))
        self.skip = (nn.Identity() if cin == cout and stride == 1
                     else nn.Sequential(_conv(cin, cout, 1, stride), _bn(cout)))
        self.out_channels = cout

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class _BinnedHead(nn.Module):
    """jaxpose's BinnedHead: one Linear per angle and granularity, LeCun-normal kernels, zero biases."""

    def __init__(self, features: int, granularities, lo: float, hi: float, left_edge: bool = False):
        super().__init__()
        self.fcs = nn.ModuleList(nn.ModuleList(_dense(features, k, "lecun") for _ in range(NUM_ANGLES))
                                 for k in granularities)
        width = (hi - lo) / granularities[0]
        values = lo + width * (torch.arange(granularities[0], dtype=torch.float32) + (0.0 if left_edge else 0.5))
        self.register_buffer("values", values, persistent=False)

    def forward(self, features):
        logits_multi = [torch.stack([fc(features) for fc in fcs], dim=1).float() for fcs in self.fcs]
        pose = (logits_multi[0].softmax(-1) * self.values).sum(-1)  # elementwise: float32 under autocast
        return {"logits": logits_multi[0], "logits_multi": logits_multi, "pose": pose}


class ResNetBinned(nn.Module):
    """jaxpose's ResNet trunk (7x7/2 stem, 3x3/2 max-pool, four stages, global mean) + BinnedHead."""

    def __init__(self, stage_sizes, block: str, width: int, head_kwargs: dict):
        super().__init__()
        self.stem = nn.Sequential(_conv(3, width, 7, 2), _bn(width), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], width
        for i, num_blocks in enumerate(stage_sizes):
            for j in range(num_blocks):
                blocks.append(_Block(block, cin, width * 2**i, 2 if i > 0 and j == 0 else 1))
                cin = blocks[-1].out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = _BinnedHead(cin, **head_kwargs)

    def forward(self, images):
        return self.head(self.blocks(self.stem(images)).float().mean((2, 3)))


def _dense(cin: int, cout: int, init: str = "glorot") -> nn.Linear:
    layer = nn.Linear(cin, cout)
    if init == "lecun":  # flax lecun_normal: truncated normal, std sqrt(1/fan_in) / 0.8796
        std = math.sqrt(1.0 / cin) / 0.87962566103423978
        nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    else:
        nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


# --- FSA-Net / SSR-Net-MD ------------------------------------------------------------------


def _glorot_conv(cin: int, cout: int, kernel: int = 1, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=bias)
    nn.init.xavier_uniform_(conv.weight)  # same fans as flax glorot_uniform for (kh, kw, cin/g, cout)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


class _SepConvBlock(nn.Sequential):
    """Keras SeparableConv2D(3x3, same, bias) -> BatchNorm(eps 1e-3, momentum 0.99) -> activation."""

    def __init__(self, cin: int, cout: int, activation: str):
        super().__init__(_glorot_conv(cin, cin, 3, groups=cin, bias=False), _glorot_conv(cin, cout),
                         nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
                         nn.ReLU(inplace=True) if activation == "relu" else nn.Tanh())


class _TwoStream(nn.Module):
    """Streams B_R (ReLU, avg pool) and B_T (tanh, max pool); taps deepest first, as jaxpose's TwoStream."""

    def __init__(self):
        super().__init__()
        widths = (3,) + STREAM_WIDTHS
        self.relu = nn.ModuleList(_SepConvBlock(a, b, "relu") for a, b in zip(widths, widths[1:]))
        self.tanh = nn.ModuleList(_SepConvBlock(a, b, "tanh") for a, b in zip(widths, widths[1:]))

    def forward(self, images):
        taps = []
        for blocks, pool in ((self.relu, F.avg_pool2d), (self.tanh, F.max_pool2d)):
            x, stream_taps = images, []
            for i, block in enumerate(blocks):
                x = block(x)
                if i in _POOL_AFTER:
                    x = pool(x, 2)
                    if i > 0:
                        stream_taps.append(x)
            taps.append([x] + stream_taps[::-1])
        return taps


class _Fusion(nn.Module):
    """Stage k: tanh(conv1x1(B_T tap)) * relu(conv1x1(B_R tap)), 64 channels (`fuse_stages`)."""

    def __init__(self, pooled: bool):
        super().__init__()
        channels = (STREAM_WIDTHS[-1], STREAM_WIDTHS[4], STREAM_WIDTHS[2])  # deepest first: 128, 64, 32
        self.tanh = nn.ModuleList(_glorot_conv(c, FUSED_CHANNELS) for c in channels)
        self.relu = nn.ModuleList(_glorot_conv(c, FUSED_CHANNELS) for c in channels)
        self.pooled = pooled  # SSR-Net-MD pools each factor 2x2 before the product

    def forward(self, relu_taps, tanh_taps):
        fused = []
        for conv_t, conv_r, r, t in zip(self.tanh, self.relu, relu_taps, tanh_taps):
            t, r = torch.tanh(conv_t(t)), torch.relu(conv_r(r))
            fused.append(F.max_pool2d(t, 2) * F.avg_pool2d(r, 2) if self.pooled else t * r)
        return fused


def _squash(s, eps: float = 1e-7):
    norm2 = s.square().sum(-1, keepdim=True)
    return s * (norm2 / (1.0 + norm2) / torch.sqrt(norm2 + eps))


class _Capsule(nn.Module):
    """W (num_capsule, I, dim_capsule, D_in), u_hat = W u, dynamic routing (jaxpose CapsuleAggregation)."""

    def __init__(self, num_in: int, dim_in: int, num_capsule: int, dim_capsule: int, routings: int):
        super().__init__()
        shape = (num_capsule, num_in, dim_capsule, dim_in)
        limit = math.sqrt(6.0 / ((dim_capsule + dim_in) * num_capsule * num_in))  # flax glorot fans
        self.W = nn.Parameter(torch.empty(shape).uniform_(-limit, limit))
        self.routings = routings

    def forward(self, u):
        u_hat = torch.einsum("jidk,bik->bjid", self.W, u)
        logits = u_hat.new_zeros(u_hat.shape[:3])
        for iteration in range(self.routings):
            v = _squash(torch.einsum("bji,bjid->bjd", logits.softmax(1), u_hat))
            if iteration < self.routings - 1:
                logits = logits + torch.einsum("bjd,bjid->bji", v, u_hat)
        return v


class _NetVLAD(nn.Module):
    def __init__(self, dim_in: int, num_capsule: int, dim_capsule: int):
        super().__init__()
        d, k = dim_in, num_capsule
        self.cluster_kernel = nn.Parameter(torch.randn(d, k) * d**-0.5)
        self.cluster_bias = nn.Parameter(torch.randn(k) * d**-0.5)
        self.cluster_centers = nn.Parameter(torch.randn(1, d, k) * d**-0.5)
        self.projection = nn.Parameter(torch.randn(d * k, k * dim_capsule) * k**-0.5)
        self.shape = (k, dim_capsule)

    def forward(self, x):
        assign = (x @ self.cluster_kernel + self.cluster_bias).softmax(-1)
        vlad = torch.einsum("bik,bid->bdk", assign, x) - assign.sum(1)[:, None, :] * self.cluster_centers
        vlad = F.normalize(F.normalize(vlad, dim=1, eps=1e-6).flatten(1), dim=1, eps=1e-6)
        return (vlad @ self.projection).view(-1, *self.shape)


class _Metric(nn.Module):
    def __init__(self, num_in: int, dim_in: int, num_capsule: int, dim_capsule: int):
        super().__init__()
        self.feature_kernel = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim_in, dim_capsule)))
        self.capsule_kernel = nn.Parameter(nn.init.xavier_uniform_(torch.empty(num_in, num_capsule)))

    def forward(self, x):
        return torch.einsum("bid,ij->bjd", x @ self.feature_kernel, self.capsule_kernel)


class _StructureMapping(nn.Module):
    """Scoring (conv / var / none) and fine-grained structure mapping -> (B, 3 n', c) primary capsules."""

    def __init__(self, scoring: str, pixels_per_stage: int, caps_per_stage: int, m_dim: int):
        super().__init__()
        hw = pixels_per_stage
        self.scoring, self.m_dim, self.caps_per_stage = scoring, m_dim, caps_per_stage
        if scoring == "conv":
            self.score_conv = _glorot_conv(FUSED_CHANNELS, 1)
        if scoring != "none":
            self.sr_dense = _dense(hw, m_dim * 3 * hw)
            self.sl_dense = _dense(3 * hw, caps_per_stage * m_dim)

    def forward(self, maps):  # maps (B, 3, c, h, w) float32
        b, stages, c, h, w = maps.shape
        pixels = maps.permute(0, 1, 3, 4, 2).reshape(b, stages * h * w, c)  # stage-major, row-major, as jaxpose
        if self.scoring == "none":
            return pixels
        if self.scoring == "conv":
            scores = torch.sigmoid(self.score_conv(maps.reshape(b * stages, c, h, w)))
        else:
            scores = maps.var(2, unbiased=False)
        scores = scores.reshape(b, stages, h * w)
        right = torch.sigmoid(self.sr_dense(scores)).view(b, stages, self.m_dim, stages * h * w)
        left = torch.sigmoid(self.sl_dense(scores.reshape(b, -1))).view(b, self.caps_per_stage, self.m_dim)
        s = torch.einsum("bnm,bkmj->bknj", left, right).reshape(b, stages * self.caps_per_stage, -1)
        return (s @ pixels) / s.sum(-1, keepdim=True)


def _ssr_decode(probs, shifts, scales, lambda_d: float, value_range: float):
    total, denominator = 0.0, 1.0
    for p, eta, delta in zip(probs, shifts, scales):
        size = p.shape[-1]
        denominator = denominator * size * (1.0 + lambda_d * delta)
        offsets = torch.arange(size, dtype=torch.float32, device=p.device) - size // 2
        total = total + ((offsets + eta[..., None]) * p).sum(-1) / denominator
    return total * value_range


class FSANetReference(nn.Module):
    """jaxpose's FSANet: two streams, fusion, scoring + mapping, aggregation, stage heads, SSR decoding."""

    def __init__(self, image_size: int, scoring="conv", aggregation="capsule", num_capsule=3, dim_capsule=16,
                 routings=2, num_primcaps=None, m_dim=5, stage_sizes=(3, 3, 3), lambda_d=1.0, value_range=99.0):
        super().__init__()
        hw = (image_size // 8) ** 2
        num_in = 3 * hw if scoring == "none" else (num_primcaps or 21) // 3 * 3
        self.streams, self.fusion = _TwoStream(), _Fusion(pooled=False)
        self.mapping = _StructureMapping(scoring, hw, (num_primcaps or 21) // 3, m_dim)
        self.aggregate = {"capsule": lambda: _Capsule(num_in, FUSED_CHANNELS, num_capsule, dim_capsule, routings),
                          "netvlad": lambda: _NetVLAD(FUSED_CHANNELS, num_capsule, dim_capsule),
                          "metric": lambda: _Metric(num_in, FUSED_CHANNELS, num_capsule, dim_capsule)}[aggregation]()
        f = num_capsule // 3 * dim_capsule
        q = f // 4
        self.delta = nn.ModuleList(_dense(q, NUM_ANGLES) for _ in stage_sizes)
        self.local = nn.ModuleList(_dense(q, NUM_ANGLES) for _ in stage_sizes)
        self.pred = nn.ModuleList(_dense(f - 2 * q, NUM_ANGLES * s) for s in stage_sizes)
        self.per_stage, self.q, self.stage_sizes = num_capsule // 3, q, stage_sizes
        self.lambda_d, self.value_range = lambda_d, value_range

    def forward(self, images):
        fused = self.fusion(*self.streams(images))
        fused[2] = F.avg_pool2d(fused[2], 2)
        with torch.autocast(images.device.type, enabled=False):  # float32, as jaxpose
            capsules = self.aggregate(self.mapping(torch.stack(fused, 1).float()))
            probs, shifts, scales = [], [], []
            for k, size in enumerate(self.stage_sizes):
                f = capsules[:, k * self.per_stage:(k + 1) * self.per_stage].flatten(1)
                scales.append(torch.tanh(self.delta[k](f[:, :self.q])))
                shifts.append(torch.tanh(self.local[k](f[:, self.q:2 * self.q])))
                probs.append(torch.relu(self.pred[k](f[:, 2 * self.q:])).view(-1, NUM_ANGLES, size))
            return {"pose": _ssr_decode(probs, shifts, scales, self.lambda_d, self.value_range)}


class SSRNetMDReference(nn.Module):
    """jaxpose's SSRNetMD: the two streams, pooled fused stages flattened, p / Delta / eta dense heads."""

    def __init__(self, image_size: int, stage_sizes=(3, 3, 3), lambda_d=1.0, value_range=99.0):
        super().__init__()
        self.streams, self.fusion = _TwoStream(), _Fusion(pooled=True)
        flat = [(image_size // d) ** 2 * FUSED_CHANNELS for d in (16, 16, 8)]
        self.pred = nn.ModuleList(_dense(f, NUM_ANGLES * s) for f, s in zip(flat, stage_sizes))
        self.heads = nn.ModuleList(nn.ModuleList(nn.Sequential(_dense(f, 2 * NUM_ANGLES), nn.Tanh(),
                                                               _dense(2 * NUM_ANGLES, NUM_ANGLES), nn.Tanh())
                                                 for _ in ("delta", "local")) for f in flat)
        self.stage_sizes, self.lambda_d, self.value_range = stage_sizes, lambda_d, value_range

    def forward(self, images):
        fused = self.fusion(*self.streams(images))
        with torch.autocast(images.device.type, enabled=False):
            probs, shifts, scales = [], [], []
            for k, (x, size) in enumerate(zip(fused, self.stage_sizes)):
                f = x.float().permute(0, 2, 3, 1).flatten(1)  # NHWC order, as jaxpose
                probs.append(torch.relu(self.pred[k](f)).view(-1, NUM_ANGLES, size))
                scales.append(self.heads[k][0](f))
                shifts.append(self.heads[k][1](f))
            return {"pose": _ssr_decode(probs, shifts, scales, self.lambda_d, self.value_range)}


# --- public API ------------------------------------------------------------------------------


def build_reference(config) -> nn.Module:
    """The PyTorch twin of `jaxpose.models.build_model(config.model)` (NCHW float input, dict output)."""
    name = config.model.name
    kwargs = {k: v for k, v in dict(config.model.get("kwargs", {})).items() if k not in _HOW_NOT_WHAT}
    if name in RESNETS:
        if config.model.get("head") != "binned":
            raise _uncovered(f"model {name!r} with head {config.model.get('head')!r}")
        spec = {**RESNETS[name], **kwargs}
        head = {k: v for k, v in dict(config.model.get("head_kwargs", {})).items() if k != "dtype"}
        head = {"granularities": (66,), "lo": -99.0, "hi": 99.0, **head}
        return ResNetBinned(spec["stage_sizes"], spec["block"], spec["width"], head)
    if name in ("fsanet", "ssrnet_md"):
        cls = FSANetReference if name == "fsanet" else SSRNetMDReference
        try:
            return cls(config.data.image_size, **kwargs)
        except TypeError as error:  # a kwarg the reference does not know
            raise _uncovered(f"model {name!r} with kwargs {sorted(kwargs)} ({error})") from None
    raise _uncovered(f"model {name!r}")


def parameter_count(module: nn.Module, *, include_batch_stats: bool = False) -> int:
    """Trainable values (jaxpose's "params"); with include_batch_stats, plus BatchNorm running
    means and variances (jaxpose's "batch_stats"; not num_batches_tracked, which jaxpose has not)."""
    count = sum(p.numel() for p in module.parameters())
    if include_batch_stats:
        count += sum(b.numel() for name, b in module.named_buffers() if name.endswith(("running_mean", "running_var")))
    return count


def _bin_index(angles, lo: float, hi: float, num_bins: int):
    return ((angles - lo) / ((hi - lo) / num_bins)).floor().clamp(0, num_bins - 1).long()


def binned_ce(logits, angles, *, lo=-99.0, hi=99.0):
    target = _bin_index(angles, lo, hi, logits.shape[-1])
    return -logits.float().log_softmax(-1).gather(-1, target[..., None])[..., 0].sum(-1)


def expectation_mse(logits, angles, *, lo=-99.0, hi=99.0):
    bins = logits.shape[-1]
    centres = lo + (hi - lo) / bins * (torch.arange(bins, dtype=torch.float32, device=logits.device) + 0.5)
    return ((logits.float().softmax(-1) @ centres - angles) ** 2).sum(-1)


def hopenet_loss(logits, angles, *, alpha=1.0, lo=-99.0, hi=99.0):
    return binned_ce(logits, angles, lo=lo, hi=hi) + alpha * expectation_mse(logits, angles, lo=lo, hi=hi)


def hybrid_loss(logits_multi, angles, *, betas=(7.0, 5.0, 3.0, 1.0, 1.0), alpha=2.0, lo=-99.0, hi=99.0):
    total = alpha * expectation_mse(logits_multi[0], angles, lo=lo, hi=hi)
    for beta, logits in zip(betas, logits_multi, strict=True):
        total = total + beta * binned_ce(logits, angles, lo=lo, hi=hi)
    return total


def mae_loss(pose, angles):
    return (pose.float() - angles).abs().sum(-1)


TORCH_LOSSES = {"hopenet": hopenet_loss, "binned_ce": binned_ce, "expectation_mse": expectation_mse,
                "hybrid": hybrid_loss, "mae": mae_loss}


def reference_loss(config) -> Callable:
    """fn(outputs, pose degrees (B, 3)) -> scalar: sum_t weight_t * mean_t, the terms of config.losses."""
    from jaxpose.train import loss_terms  # bin ranges default to the head's, as in jaxpose's train step

    terms = []
    for name, weight, kwargs in loss_terms(config):
        if name not in TORCH_LOSSES:
            raise _uncovered(f"loss {name!r}")
        terms.append((TORCH_LOSSES[name], jax_losses.get_loss(name).output_key, weight, kwargs))

    def loss(outputs, angles):
        return sum(weight * fn(outputs[key], angles, **kwargs).mean() for fn, key, weight, kwargs in terms)

    return loss


def _optimizer(cfg, params, fused: bool):
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.b1, cfg.b2), fused=fused)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.b1, cfg.b2), weight_decay=cfg.weight_decay,
                                 fused=fused)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    raise _uncovered(f"optimizer {cfg.name!r}")


def to_device(config, batch: dict, device: torch.device, *, channels_last: bool | None = None):
    """uint8 NHWC images -> float32 NCHW on `device`, normalised as config.data.normalize (channels_last
    memory format on CUDA unless told), and the pose as float32: (images, pose)."""
    images = torch.from_numpy(np.ascontiguousarray(batch["image"])).to(device).permute(0, 3, 1, 2).float()
    normalize = config.data.normalize
    if normalize == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        images = (images - mean) / std
    elif normalize != "bgr255":
        raise ValueError(f"unknown normalize {normalize!r}; valid: imagenet, bgr255")
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return images.contiguous(memory_format=memory_format), torch.from_numpy(batch["pose"]).float().to(device)


def make_train_step(config, device: torch.device | str = "cpu", *, mixed_precision: bool | None = None):
    """(model, step) where step(images, pose) runs forward + loss + backward + optimizer and returns the loss.

    mixed_precision (default: on CUDA): bfloat16 autocast of the model (the loss in float32, as jaxpose's)
    and channels_last; off: float32. Adam is fused on CUDA.
    """
    device = torch.device(device)
    amp = device.type == "cuda" if mixed_precision is None else mixed_precision
    model = build_reference(config).to(device)
    if amp:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = reference_loss(config)
    optimizer = _optimizer(config.optimizer, model.parameters(), fused=device.type == "cuda")
    clip = config.optimizer.get("grad_clip", 0.0)
    model.train()

    def step(images, pose):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = model(images)
        loss = loss_fn(outputs, pose)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        return loss.detach()

    return model, step


def torch_images_per_sec(config, batch: dict, steps: int, *, device: str = "auto", warmup: int = 3) -> float:
    """Training images/s of the PyTorch reference on `batch` ({"image": uint8 (B, S, S, 3), "pose": (B, 3)}),
    converted to the device once; `steps` timed steps after `warmup` untimed ones. device "auto": cuda if any."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    _, step = make_train_step(config, device)
    images, pose = to_device(config, batch, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step(images, pose)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step(images, pose)
    sync()
    return steps * images.shape[0] / (time.perf_counter() - start)
