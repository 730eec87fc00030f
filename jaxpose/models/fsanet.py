"""FSA-Net (Yang et al., CVPR 2019) and SSR-Net-MD (Yang et al., IJCAI 2018) in flax.linen.

Both models share the two-stream trunk of the official FSA-Net code: seven
3x3 separable-conv blocks per stream (widths 16, 32, 32, 64, 64, 128, 128),
stream B_R with BatchNorm + ReLU and 2x2 average pooling, stream B_T with
BatchNorm + tanh and 2x2 max pooling, pooling after blocks 1, 3 and 5. Stage
k (K = 3, deepest first) fuses the two streams' taps in the official code's
order: a 1x1 convolution of each tap (tanh on B_T, ReLU on B_R), then their
element-wise product.

FSA-Net (paper §3.2-3.4) then

* pools every stage map U_k to w x w = H/8 x H/8 with c = 64 channels;
* scores each pixel, A_k = Phi(U_k): a learned 1x1 conv + sigmoid ("conv"),
  the variance over channels ("var"), or no scoring and no fine-grained
  mapping at all ("none", the paper's "w/o" variant, 3 w^2 = 192 capsules);
* maps the scores to S_k = C M_k with M_k = sigmoid(Dense(A_k)) (m x 3w^2,
  Dense shared by the stages) and C = sigmoid(Dense([A_1, A_2, A_3]))
  (n' x m, shared), then forms n' primary capsules per stage from
  S_k U / rowsum(S_k), U the (3 w^2, c) stacked pixel features;
* aggregates the 3 n' primary capsules into `num_capsule` capsules of
  `dim_capsule` dimensions by dynamic routing ("capsule"), NetVLAD
  ("netvlad") or two learned linear maps ("metric");
* gives each stage a third of the capsules; their feature f_k (16 values)
  is split as in the official code into [0:4] -> Delta_k (range scale),
  [4:8] -> eta_k (shift), [8:16] -> p_k (stage probabilities, ReLU);
* decodes by the soft stagewise regression (SSR-Net):
      y = V sum_k sum_i p_k,i (i - floor(s_k / 2) + eta_k) / prod_{j<=k} s_j (1 + lambda_d Delta_j)
  with s = (3, 3, 3), lambda_d = 1, V = 99.

SSR-Net-MD is the multi-dimensional SSR-Net of the FSA-Net release
(`ssrnet_mt`): the same trunk, each stage's fused map pooled 2x2, flattened,
and three dense heads per stage (p: Dense(3 s_k) ReLU; Delta and eta:
Dense(6) tanh -> Dense(3) tanh).

Details the paper leaves out follow the official Keras configuration (see
`../shared/testdata/fsanet_keras/*.model_config.json`): Keras BatchNorm
(epsilon 1e-3, momentum 0.99), Glorot-uniform kernels, the stage order
(deepest first; stage 3 is the H/4 tap average-pooled to H/8), capsule
squash epsilon 1e-7, NetVLAD with the LOUPE layout. Images are NHWC float of
any size divisible by 8 (64 x 64 for the published models); the official
weights expect raw 0-255 BGR values (see `jaxpose.pretrained`).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

SCORINGS = ("conv", "var", "none")
AGGREGATIONS = ("capsule", "netvlad", "metric")
NUM_ANGLES = 3  # (yaw, pitch, roll)
STREAM_WIDTHS = (16, 32, 32, 64, 64, 128, 128)
_POOL_AFTER = (0, 2, 4)  # 2x2 pooling after these blocks; the last two pools are stage taps
FUSED_CHANNELS = 64  # c of the paper: channels of every fused stage map

# Keras BatchNormalization defaults, which the official weights were trained with.
_BatchNorm = functools.partial(nn.BatchNorm, momentum=0.99, epsilon=1e-3)
_glorot = nn.initializers.glorot_uniform()
_ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh}


def _pool(kind: str, x: jax.Array) -> jax.Array:
    """2x2 max or average pooling, stride 2, 'VALID'; the max with its gradient written out (`_max_pool_2x2`)."""
    if kind == "max":
        return _max_pool_2x2(x)
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


@jax.custom_jvp
def _max_pool_2x2(x: jax.Array) -> jax.Array:
    """nn.max_pool(x, (2, 2), strides=(2, 2)), with the same gradient computed elementwise.

    The gradient goes to the first maximum of each window in row-major order,
    as reduce_window's select_and_scatter (and TF's MaxPoolGrad) route it,
    not split among ties (common on flat image regions); H and W even. On XLA:CPU the
    built-in gradient tracks argmax indices in a variadic reduce_window over
    four materialised int32 iotas: 29.5 ms forward + backward on
    (32, 64, 64, 16) against 3.0 ms for this one (13 % of FSA-Net's train step).
    """
    return nn.max_pool(x, (2, 2), strides=(2, 2))


@_max_pool_2x2.defjvp
def _max_pool_2x2_jvp(primals, tangents):
    (x,), (tangent,) = primals, tangents
    out = _max_pool_2x2(x)
    b, h, w, c = x.shape
    windows, tangent = (a.reshape(b, h // 2, 2, w // 2, 2, c) for a in (x, tangent))
    is_max = windows == out[:, :, None, :, None, :]
    picked = jnp.zeros_like(out)
    for dy, dx in ((1, 1), (1, 0), (0, 1), (0, 0)):  # the last assignment wins: the first maximum
        picked = jnp.where(is_max[:, :, dy, :, dx], tangent[:, :, dy, :, dx], picked)
    return out, picked


DEPTHWISE = ("auto", "conv", "shifts")


def resolve_depthwise(depthwise: str) -> str:
    """The depthwise formulation to run: "auto" picks one by the default JAX backend.

    "shifts" on CPU: XLA:CPU runs a convolution with one channel per group
    (feature_group_count = channels) pathologically slowly (forward and both
    gradients), while the same convolution as a sum of shifted products is a
    few fused elementwise loops (`depthwise_conv`). "conv" (lax conv with
    feature_group_count) on GPU and TPU, where cuDNN and the TPU compiler have
    native depthwise kernels. The GPU/TPU choice is not measured yet (no GPU
    was lent to the session that wrote this): compare with
    `--config.model.kwargs.depthwise=shifts` (or `=conv` on CPU).
    """
    if depthwise not in DEPTHWISE:
        raise ValueError(f"unknown depthwise formulation {depthwise!r}; valid: {', '.join(DEPTHWISE)}")
    if depthwise == "auto":
        return "shifts" if jax.default_backend() == "cpu" else "conv"
    return depthwise


def depthwise_conv(x: jax.Array, kernel: jax.Array, method: str) -> jax.Array:
    """Stride-1 'SAME' depthwise convolution: x (B, H, W, C), kernel (kh, kw, 1, C) -> (B, H, W, C).

    method "conv": lax.conv_general_dilated with feature_group_count = C.
    method "shifts": the same sum of kh * kw shifted products, with the conv's
    'SAME' zero padding ((k - 1) // 2 before, k // 2 after), arranged by
    kernel rows: row i sums the kw products of the W-padded input shifted
    along W, then the kh row sums are shifted along H and added. (Nine slices
    of one padded input compute the same, but XLA:CPU then materialises each
    slice, recomputing the fused BatchNorm + activation producer per slice:
    1.5x slower forward in the whole model.) A low-precision input is
    accumulated in float32 and rounded once, like a convolution's accumulator.
    """
    kh, kw, _, channels = kernel.shape
    if method == "conv":
        return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=channels)
    if method != "shifts":
        raise ValueError(f"unknown depthwise method {method!r}; valid: conv, shifts")
    h, w = x.shape[1:3]
    acc = jnp.promote_types(x.dtype, jnp.float32)
    top, left = (kh - 1) // 2, (kw - 1) // 2
    padded = jnp.pad(x, ((0, 0), (0, 0), (left, kw - 1 - left), (0, 0)))
    out = None
    for i in range(kh):
        row = sum(padded[:, :, j:j + w].astype(acc) * kernel[i, j, 0].astype(acc) for j in range(kw))
        # out[:, y] += row[:, y + i - top], zero outside the image
        row = jnp.pad(row, ((0, 0), (top, kh - 1 - top), (0, 0), (0, 0)))[:, i:i + h]
        out = row if out is None else out + row
    return out.astype(x.dtype)


class DepthwiseConv(nn.Module):
    """nn.Conv(C, kernel_size, 'SAME', feature_group_count=C, use_bias=False), formulation chosen by `depthwise`.

    Declares the same variable as that nn.Conv ("kernel", (kh, kw, 1, C),
    Glorot uniform, float32), so checkpoints and the converted official
    weights load whichever formulation runs.
    """

    kernel_size: tuple[int, int] = (3, 3)
    depthwise: str = "auto"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", _glorot, (*self.kernel_size, 1, x.shape[-1]), jnp.float32)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        return depthwise_conv(x, kernel, resolve_depthwise(self.depthwise))


class SepConvBlock(nn.Module):
    """Keras SeparableConv2D(3x3, 'same', bias) -> BatchNorm -> activation."""

    features: int
    activation: str
    dtype: Dtype = jnp.float32
    depthwise: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = DepthwiseConv((3, 3), self.depthwise, self.dtype, name="depthwise")(x)
        x = nn.Conv(self.features, (1, 1), kernel_init=_glorot, dtype=self.dtype, name="pointwise")(x)
        x = _BatchNorm(use_running_average=not train, dtype=self.dtype, name="bn")(x)
        return _ACTIVATIONS[self.activation](x)


class TwoStream(nn.Module):
    """The streams B_R (ReLU, average pooling) and B_T (tanh, max pooling).

    Returns (relu_taps, tanh_taps), each the three stage inputs deepest first:
    the last block (H/8, 128 ch), the third pool (H/8, 64 ch), the second
    pool (H/4, 32 ch).
    """

    dtype: Dtype = jnp.float32
    depthwise: str = "auto"

    @nn.compact
    def __call__(self, images: jax.Array, train: bool):
        taps = []
        for stream, pool in (("relu", "avg"), ("tanh", "max")):
            x, stream_taps = images, []
            for i, width in enumerate(STREAM_WIDTHS):
                x = SepConvBlock(width, stream, self.dtype, self.depthwise, name=f"{stream}_{i}")(x, train)
                if i in _POOL_AFTER:
                    x = _pool(pool, x)
                    if i > 0:
                        stream_taps.append(x)
            taps.append([x] + stream_taps[::-1])
        return taps[0], taps[1]


def fuse_stages(relu_taps, tanh_taps, dtype: Dtype) -> list[jax.Array]:
    """Stage k: tanh(conv1x1(B_T tap)) * relu(conv1x1(B_R tap)), 64 channels (paper Fig. 2).

    Call from a compact method: the convolutions `stage{k}_tanh` / `stage{k}_relu`
    (the official conv2d_{2k-1} / conv2d_{2k}) become submodules of the caller.
    """
    fused = []
    for k, (relu_tap, tanh_tap) in enumerate(zip(relu_taps, tanh_taps), start=1):
        conv = functools.partial(nn.Conv, FUSED_CHANNELS, (1, 1), kernel_init=_glorot, dtype=dtype)
        t = jnp.tanh(conv(name=f"stage{k}_tanh")(tanh_tap))
        r = nn.relu(conv(name=f"stage{k}_relu")(relu_tap))
        fused.append(t * r)
    return fused


def ssr_decode(probs: Sequence[jax.Array], shifts: Sequence[jax.Array], scales: Sequence[jax.Array],
               lambda_d: float = 1.0, value_range: float = 99.0) -> jax.Array:
    """Soft stagewise regression (SSR-Net, Yang et al. 2018, eq. 4-6, as in FSA-Net's SSRLayer).

    probs[k]: (B, A, s_k) stage distributions p_k; shifts[k]: (B, A) eta_k;
    scales[k]: (B, A) Delta_k. Returns (B, A) float32:
        y = V sum_k sum_i p_k,i (i - floor(s_k/2) + eta_k) / prod_{j<=k} s_j (1 + lambda_d Delta_j).
    """
    total, denominator = 0.0, 1.0
    for p, eta, delta in zip(probs, shifts, scales):
        p, eta, delta = (jnp.asarray(a, jnp.float32) for a in (p, eta, delta))
        size = p.shape[-1]
        denominator = denominator * size * (1.0 + lambda_d * delta)
        offsets = jnp.arange(size, dtype=jnp.float32) - size // 2
        total = total + jnp.sum((offsets + eta[..., None]) * p, axis=-1) / denominator
    return total * value_range


def squash(s: jax.Array, axis: int = -1, eps: float = 1e-7) -> jax.Array:
    """Capsule non-linearity v = |s|^2 / (1 + |s|^2) s / sqrt(|s|^2 + eps) (Sabour et al. 2017)."""
    norm2 = jnp.sum(jnp.square(s), axis=axis, keepdims=True)
    return s * (norm2 / (1.0 + norm2) / jnp.sqrt(norm2 + eps))


def dynamic_routing(u_hat: jax.Array, routings: int) -> jax.Array:
    """Routing-by-agreement over predictions u_hat (B, J, I, D) -> output capsules (B, J, D).

    b_ji = 0; repeat: c_ji = softmax_j(b_ji), v_j = squash(sum_i c_ji u_hat_ji),
    b_ji += <v_j, u_hat_ji> (all but the last iteration). Vectorised over the
    batch; the loop runs over the (static, small) number of routings.
    """
    logits = jnp.zeros(u_hat.shape[:3], u_hat.dtype)
    for iteration in range(routings):
        coupling = jax.nn.softmax(logits, axis=1)
        v = squash(jnp.einsum("bji,bjid->bjd", coupling, u_hat))
        if iteration < routings - 1:
            logits = logits + jnp.einsum("bjd,bjid->bji", v, u_hat)
    return v


class CapsuleAggregation(nn.Module):
    """Capsule layer with dynamic routing: (B, I, D_in) -> (B, num_capsule, dim_capsule).

    u_hat_ji = W_ji u_i with W of shape (num_capsule, I, dim_capsule, D_in)
    (the Keras CapsuleLayer layout).
    """

    num_capsule: int
    dim_capsule: int
    routings: int

    @nn.compact
    def __call__(self, u: jax.Array) -> jax.Array:
        shape = (self.num_capsule, u.shape[1], self.dim_capsule, u.shape[2])
        w = self.param("W", _glorot, shape, jnp.float32)
        u_hat = jnp.einsum("jidk,bik->bjid", w, u)
        return dynamic_routing(u_hat, self.routings)


def _l2_normalize(x: jax.Array, axis: int) -> jax.Array:
    # tf.nn.l2_normalize: x / sqrt(max(sum x^2, 1e-12))
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), 1e-12))


class NetVLADAggregation(nn.Module):
    """NetVLAD (Arandjelovic et al. 2016; LOUPE layout of the FSA-Net code).

    Soft-assigns the I features (B, I, D) to K = num_capsule clusters,
    accumulates residuals to the cluster centres (D, K), normalises per
    cluster then globally, and projects the D*K vector (feature-major) to
    num_capsule * dim_capsule values -> (B, num_capsule, dim_capsule).
    """

    num_capsule: int
    dim_capsule: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, _, d = x.shape
        k = self.num_capsule
        normal = nn.initializers.normal  # LOUPE's initial scales: 1/sqrt(D), projection 1/sqrt(K)
        kernel = self.param("cluster_kernel", normal(d ** -0.5), (d, k), jnp.float32)
        bias = self.param("cluster_bias", normal(d ** -0.5), (k,), jnp.float32)
        centres = self.param("cluster_centers", normal(d ** -0.5), (1, d, k), jnp.float32)
        projection = self.param("projection", normal(k ** -0.5), (d * k, k * self.dim_capsule), jnp.float32)
        assign = jax.nn.softmax(x @ kernel + bias, axis=-1)  # (B, I, K)
        vlad = jnp.einsum("bik,bid->bdk", assign, x) - jnp.sum(assign, axis=1)[:, None, :] * centres
        vlad = _l2_normalize(_l2_normalize(vlad, axis=1).reshape(b, d * k), axis=1)
        return (vlad @ projection).reshape(b, k, self.dim_capsule)


class MetricAggregation(nn.Module):
    """No aggregation ("metric"): two learned linear maps, features then capsules.

    (B, I, D) @ (D, dim_capsule) -> (B, I, dim_capsule), then mixes the I
    rows with (I, num_capsule) -> (B, num_capsule, dim_capsule).
    """

    num_capsule: int
    dim_capsule: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = self.param("feature_kernel", _glorot, (x.shape[2], self.dim_capsule), jnp.float32)
        capsules = self.param("capsule_kernel", _glorot, (x.shape[1], self.num_capsule), jnp.float32)
        return jnp.einsum("bid,ij->bjd", x @ features, capsules)


class StructureMapping(nn.Module):
    """Scoring and fine-grained structure mapping -> primary capsules (B, 3 n', c).

    maps: (B, 3, w, w, c) fused stage maps. A_k = Phi(U_k) (B, w^2);
    M_k = sigmoid(Dense(A_k)) (m x 3w^2); C = sigmoid(Dense([A_1 A_2 A_3])) (n' x m);
    S_k = C M_k; capsules_k = S_k U / rowsum(S_k). With scoring "none" the
    3 w^2 pixel features themselves are the primary capsules.
    """

    scoring: str
    caps_per_stage: int
    m_dim: int

    @nn.compact
    def __call__(self, maps: jax.Array) -> jax.Array:
        b, stages, h, w, c = maps.shape
        pixels = maps.reshape(b, stages * h * w, c)  # U: stage-major, then row-major pixels
        if self.scoring == "none":
            return pixels
        if self.scoring == "conv":
            scores = nn.sigmoid(nn.Conv(1, (1, 1), kernel_init=_glorot, name="score_conv")(maps))
        else:  # "var": population variance over channels (tf.nn.moments)
            scores = jnp.var(maps, axis=-1)
        scores = scores.reshape(b, stages, h * w)
        right = nn.sigmoid(nn.Dense(self.m_dim * stages * h * w, kernel_init=_glorot, name="sr_dense")(scores))
        right = right.reshape(b, stages, self.m_dim, stages * h * w)  # M_k
        left = nn.sigmoid(nn.Dense(self.caps_per_stage * self.m_dim, kernel_init=_glorot,
                                   name="sl_dense")(scores.reshape(b, stages * h * w)))
        left = left.reshape(b, self.caps_per_stage, self.m_dim)  # C
        s = jnp.einsum("bnm,bkmj->bknj", left, right).reshape(b, stages * self.caps_per_stage, -1)
        return jnp.einsum("bnj,bjc->bnc", s, pixels) / jnp.sum(s, axis=-1, keepdims=True)


class StageHeads(nn.Module):
    """Per-stage outputs from the aggregated features (official ssr_F_model).

    feats[k]: (B, F) with F = 16 for the published models: Delta_k = tanh(Dense(f[:F/4])),
    eta_k = tanh(Dense(f[F/4:F/2])), p_k = relu(Dense(f[F/2:])) as (B, 3, s_k).
    """

    stage_sizes: Sequence[int]

    @nn.compact
    def __call__(self, feats: Sequence[jax.Array]):
        probs, shifts, scales = [], [], []
        for k, (f, size) in enumerate(zip(feats, self.stage_sizes), start=1):
            q = f.shape[-1] // 4
            dense = functools.partial(nn.Dense, kernel_init=_glorot)
            scales.append(jnp.tanh(dense(NUM_ANGLES, name=f"delta_{k}")(f[:, :q])))
            shifts.append(jnp.tanh(dense(NUM_ANGLES, name=f"local_{k}")(f[:, q:2 * q])))
            p = nn.relu(dense(NUM_ANGLES * size, name=f"pred_{k}")(f[:, 2 * q:]))
            probs.append(p.reshape(f.shape[0], NUM_ANGLES, size))
        return probs, shifts, scales


class FSANet(nn.Module):
    """FSA-Net: images (B, H, W, 3) float -> {"pose": (B, 3) float32 degrees (yaw, pitch, roll)}.

    scoring: "conv" (FSA-Caps 1x1), "var" (FSA-Caps var.) or "none" (w/o
    fine-grained mapping); aggregation: "capsule", "netvlad" or "metric".
    num_primcaps: 3 n' primary capsules (default 21, the published setting;
    with scoring "none" it is fixed to 3 (H/8)^2, 192 at 64 px). The trunk
    runs in `dtype`; mapping, aggregation and SSR run in float32 (a few
    thousand FLOPs whose divisions by row sums and stage products need it).
    depthwise: how the trunk's 3x3 depthwise convolutions run, "auto" (by
    backend), "conv" or "shifts" (`resolve_depthwise`); the same variables
    and, up to float rounding, the same outputs either way.
    """

    scoring: str = "conv"
    aggregation: str = "capsule"
    num_capsule: int = 3
    dim_capsule: int = 16
    routings: int = 2
    num_primcaps: int | None = None
    m_dim: int = 5
    stage_sizes: tuple[int, int, int] = (3, 3, 3)
    lambda_d: float = 1.0
    value_range: float = 99.0
    dtype: Dtype = jnp.float32
    depthwise: str = "auto"

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
        self._check(images.shape)
        relu_taps, tanh_taps = TwoStream(self.dtype, self.depthwise, name="streams")(images, train)
        fused = fuse_stages(relu_taps, tanh_taps, self.dtype)
        fused[2] = _pool("avg", fused[2])  # H/4 -> H/8, as every stage map is w x w
        maps = jnp.stack(fused, axis=1).astype(jnp.float32)
        primary = StructureMapping(self.scoring, (self.num_primcaps or 21) // 3, self.m_dim,
                                   name="mapping")(maps)
        capsules = self._aggregate(primary)
        per_stage = self.num_capsule // 3
        feats = [capsules[:, k * per_stage:(k + 1) * per_stage].reshape(capsules.shape[0], -1) for k in range(3)]
        probs, shifts, scales = StageHeads(self.stage_sizes, name="heads")(feats)
        return {"pose": ssr_decode(probs, shifts, scales, self.lambda_d, self.value_range)}

    def _aggregate(self, primary: jax.Array) -> jax.Array:
        if self.aggregation == "capsule":
            return CapsuleAggregation(self.num_capsule, self.dim_capsule, self.routings, name="capsule")(primary)
        if self.aggregation == "netvlad":
            return NetVLADAggregation(self.num_capsule, self.dim_capsule, name="netvlad")(primary)
        return MetricAggregation(self.num_capsule, self.dim_capsule, name="metric")(primary)

    def _check(self, shape: tuple[int, ...]) -> None:
        if self.scoring not in SCORINGS:
            raise ValueError(f"FSANet: unknown scoring {self.scoring!r}; valid: {', '.join(SCORINGS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"FSANet: unknown aggregation {self.aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
        if self.depthwise not in DEPTHWISE:
            raise ValueError(f"FSANet: unknown depthwise {self.depthwise!r}; valid: {', '.join(DEPTHWISE)}")
        if len(shape) != 4 or shape[-1] != 3 or shape[1] % 8 or shape[2] % 8:
            raise ValueError(f"FSANet: images must be (B, H, W, 3) with H, W divisible by 8, got {shape}")
        if self.num_capsule % 3 or (self.num_capsule // 3 * self.dim_capsule) % 4:
            raise ValueError(f"FSANet: num_capsule ({self.num_capsule}) must split into 3 stages and "
                             f"num_capsule/3 * dim_capsule into quarters")
        pixels = 3 * (shape[1] // 8) * (shape[2] // 8)
        if self.scoring == "none" and self.num_primcaps not in (None, pixels):
            raise ValueError(f"FSANet: scoring 'none' uses the {pixels} pixel features as primary capsules, "
                             f"got num_primcaps={self.num_primcaps}")
        if self.scoring != "none" and (self.num_primcaps or 21) % 3:
            raise ValueError(f"FSANet: num_primcaps ({self.num_primcaps}) must be divisible by 3")


class FSANetFusion(nn.Module):
    """Mean pose of several FSA-Net variants (the paper's FSA-Caps-Fusion: 1x1, var., w/o).

    variants: the member modules; their variables live under variants_0, variants_1, ...
    """

    variants: Sequence[FSANet]

    def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
        poses = [member(images, train)["pose"] for member in self.variants]
        return {"pose": jnp.mean(jnp.stack(poses), axis=0)}


def caps_fusion(dtype: Dtype = jnp.float32) -> FSANetFusion:
    """FSA-Caps-Fusion: capsule aggregation with scoring conv, var and none."""
    return FSANetFusion(tuple(FSANet(scoring=s, aggregation="capsule", dtype=dtype) for s in SCORINGS))


class SSRNetMD(nn.Module):
    """SSR-Net-MD (official `ssrnet_mt`): images (B, H, W, 3) -> {"pose": (B, 3) float32 degrees}.

    Stage k: maxpool(tanh(conv1x1(B_T tap))) * avgpool(relu(conv1x1(B_R tap))),
    flattened (float32), then p_k = relu(Dense(3 s_k)), Delta_k =
    tanh(Dense(3)(tanh(Dense(6)))), eta_k likewise; decoded by `ssr_decode`.
    depthwise: as FSANet's.
    """

    stage_sizes: tuple[int, int, int] = (3, 3, 3)
    lambda_d: float = 1.0
    value_range: float = 99.0
    dtype: Dtype = jnp.float32
    depthwise: str = "auto"

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
        if len(images.shape) != 4 or images.shape[-1] != 3 or images.shape[1] % 16 or images.shape[2] % 16:
            raise ValueError(f"SSRNetMD: images must be (B, H, W, 3) with H, W divisible by 16, got {images.shape}")
        if self.depthwise not in DEPTHWISE:
            raise ValueError(f"SSRNetMD: unknown depthwise {self.depthwise!r}; valid: {', '.join(DEPTHWISE)}")
        relu_taps, tanh_taps = TwoStream(self.dtype, self.depthwise, name="streams")(images, train)
        conv = functools.partial(nn.Conv, FUSED_CHANNELS, (1, 1), kernel_init=_glorot, dtype=self.dtype)
        dense = functools.partial(nn.Dense, kernel_init=_glorot)
        probs, shifts, scales = [], [], []
        for k, (relu_tap, tanh_tap, size) in enumerate(zip(relu_taps, tanh_taps, self.stage_sizes), start=1):
            t = _pool("max", jnp.tanh(conv(name=f"stage{k}_tanh")(tanh_tap)))
            r = _pool("avg", nn.relu(conv(name=f"stage{k}_relu")(relu_tap)))
            f = (t * r).reshape(images.shape[0], -1).astype(jnp.float32)
            p = nn.relu(dense(NUM_ANGLES * size, name=f"pred_{k}")(f))
            probs.append(p.reshape(-1, NUM_ANGLES, size))
            for outputs, head in ((scales, "delta"), (shifts, "local")):
                hidden = jnp.tanh(dense(2 * NUM_ANGLES, name=f"{head}_hidden_{k}")(f))
                outputs.append(jnp.tanh(dense(NUM_ANGLES, name=f"{head}_{k}")(hidden)))
        return {"pose": ssr_decode(probs, shifts, scales, self.lambda_d, self.value_range)}
