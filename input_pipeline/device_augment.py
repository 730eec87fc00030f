"""The training augmentations of `augment.py` as one pure JAX function, run inside the jitted train step.

Input: fixed-size "canvases" (`canvases.py`): every stored training image
(RGB uint8, H x W) resized to C x C, with per record `box` and `source_box`
in the STORED image's pixels and `canvas_scale` = (C / W, C / H), so stored
point (x, y) is canvas point (x * sx, y * sy); pixel i covers [i, i + 1).

Per example, as the host path (`augment.prepare`) does with numpy + OpenCV:

1. crop region: the configured convention around the face box with a random
   margin k (and, for "hopenet_train", a random offset of its square), then a
   random scale and shift (`crop_regions`, the exact arithmetic of
   `crops.crop_box` + `crops.scale_box`, whole pixels);
2. cut and resize to S x S in one `jax.image.scale_and_translate`
   (triangle kernel; anti-aliased when shrinking for Hopenet / box, which is
   PIL's bilinear filter that Hopenet's code used; plain bilinear for FSA-Net
   as its cv2 code; black outside the canvas, as PIL's crop);
3. horizontal flip with p = 0.5 (yaw and roll negated);
4. down/up-sampling, Gaussian blur, Gaussian noise, each with its probability.

Randomness: example i of a batch uses
``fold_in(fold_in(key, step), positions[i])`` with positions its GLOBAL index
in the batch, so an example is augmented identically on 1 device or split
over many. Its key is split in two: one U[0, 1) vector with a fixed entry per
draw, in the order of UNIFORM_DRAWS (k, scale, shift x, shift y, flip,
down-sampling on, factor, blur on, sigma, noise on, hopenet_train's offset
x and y), and the noise image's key; a draw never shifts another, even when
its option is off. New draws are appended: with JAX's partitionable
threefry (the default) a longer uniform vector keeps its leading entries,
so the earlier draws are unchanged.

Differences from the host path (measured in tests/test_device_augment.py):
the canvas is a second resampling of the stored image; the host rounds to
uint8 after each stage, here images stay float32 (noise is not rounded);
Hopenet / box shrink with the anti-aliased triangle (PIL) where the host
approximates PIL with INTER_AREA; the resize reads canvas pixels just outside
the region where cv2 replicates the cut patch's edge; where a region leaves
the canvas, the filter renormalises over the pixels inside (the host and PIL
blend in the black beyond, so the image's border row differs).

Cost: the resize is two dense matrix products per image,
2 * 3 * S * C * (C + S) FLOPs: 0.4 GFLOP for a 448 px canvas -> 224 px
(ResNet-50 trains at ~25 GFLOP per 224 px image, so ~2 %), 9 MFLOP for
128 -> 64 px. Down/up-sampling adds 24 S^3 (0.27 GFLOP at 224 px), blur
12 S^3 (0.13 GFLOP): all small next to the model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from input_pipeline import crops
from jaxpose import angles

# The index of each per-example draw in the example's one uniform vector (see _draw_one).
UNIFORM_DRAWS = ("k", "scale", "shift_x", "shift_y", "flip", "downsample", "downsample_factor",
                 "blur", "blur_sigma", "noise", "offset_x", "offset_y")
FSANET_MARGIN_FIFTHS = 3  # crops.fsanet_crop's ad = 0.6 = 3 / 5, kept exact (see _fsanet_regions)


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    """The fields of `config.data` the augmentations read; hashable (a static jit argument).

    It also serves as the `cfg` of the host functions (`augment.prepare`), which read the same names.
    """

    image_size: int = 64
    crop: str = "hopenet"
    eval_crop: str = ""  # the evaluation transform's convention; "": crop
    crop_k: tuple[float, float] = (0.2, 0.4)
    eval_crop_k: float = 0.2
    scale: tuple[float, float] = (1.0, 1.0)
    shift: float = 0.0
    flip: bool = True
    downsample_prob: float = 0.0
    downsample_max: float = 1.0
    blur_prob: float = 0.0
    blur_max_sigma: float = 1.5
    noise_prob: float = 0.0
    noise_std: float = 0.0
    channels: str = "rgb"

    def __post_init__(self):
        for crop in (self.crop, self.eval_crop or self.crop):
            if crop not in crops.CROPS:
                raise ValueError(f"unknown crop convention {crop!r}; valid: {', '.join(crops.CROPS)}")
        if self.channels not in ("rgb", "bgr"):
            raise ValueError(f"unknown channel order {self.channels!r}; valid: rgb, bgr")

    @classmethod
    def from_config(cls, data_cfg: Any) -> AugmentSpec:
        """From `config.data` (an ml_collections ConfigDict or anything with these attributes)."""
        pair = lambda v: (float(v[0]), float(v[1]))  # noqa: E731  (lists from JSON configs are not hashable)
        return cls(
            image_size=int(data_cfg.image_size), crop=str(data_cfg.crop),
            eval_crop=str(getattr(data_cfg, "eval_crop", "") or ""), crop_k=pair(data_cfg.crop_k),
            eval_crop_k=float(data_cfg.eval_crop_k), scale=pair(data_cfg.scale), shift=float(data_cfg.shift),
            flip=bool(data_cfg.flip), downsample_prob=float(data_cfg.downsample_prob),
            downsample_max=float(data_cfg.downsample_max), blur_prob=float(data_cfg.blur_prob),
            blur_max_sigma=float(data_cfg.blur_max_sigma), noise_prob=float(data_cfg.noise_prob),
            noise_std=float(data_cfg.noise_std), channels=str(data_cfg.channels),
        )

    @property
    def blur_radius(self) -> int:
        """The largest Gaussian radius a blur can use: cv2's uint8 kernel size for blur_max_sigma."""
        return blur_radius_of(self.blur_max_sigma)


def blur_radius_of(sigma):
    """cv2.GaussianBlur's radius for a uint8 image: ksize = round(6 sigma + 1) | 1 (round half to even)."""
    if isinstance(sigma, (int, float)):
        return (int(round(sigma * 6 + 1)) | 1) // 2
    return (jnp.round(sigma * 6 + 1).astype(jnp.int32) | 1) // 2


# --- crop regions --------------------------------------------------------------------------------


def _hopenet_regions(box: jax.Array, k: jax.Array) -> jax.Array:
    """crops.hopenet_crop for (B, 4) boxes, with its in-place updates (x_max sees the moved x_min)."""
    k = k[:, None]
    x_min, y_min, x_max, y_max = (box[:, i : i + 1] for i in range(4))
    x_min = x_min - 2 * k * jnp.abs(x_max - x_min)
    y_min = y_min - 2 * k * jnp.abs(y_max - y_min)
    x_max = x_max + 2 * k * jnp.abs(x_max - x_min)
    y_max = y_max + 0.6 * k * jnp.abs(y_max - y_min)
    return jnp.concatenate([x_min, y_min, x_max, y_max], axis=1)


def _hopenet_train_regions(box: jax.Array, k: jax.Array, offset: jax.Array) -> jax.Array:
    """crops.hopenet_train_crop for (B, 4) boxes, (B,) margins and (B, 2) offsets in [0, 1]."""
    k = k[:, None]
    x_min, y_min, x_max, y_max = (box[:, i : i + 1] for i in range(4))
    x_min = x_min - 0.6 * k * jnp.abs(x_max - x_min)
    y_min = y_min - 2 * k * jnp.abs(y_max - y_min)
    x_max = x_max + 0.6 * k * jnp.abs(x_max - x_min)
    y_max = y_max + 0.6 * k * jnp.abs(y_max - y_min)
    width, height = x_max - x_min, y_max - y_min
    side = crops.HOPENET_TRAIN_FRACTION * jnp.minimum(width, height)
    x0 = x_min + offset[:, :1] * (width - side)
    y0 = y_min + offset[:, 1:] * (height - side)
    return jnp.concatenate([x0, y0, x0 + side, y0 + side], axis=1)


def _fsanet_regions(box: jax.Array, source_box: jax.Array) -> jax.Array:
    """crops.fsanet_crop (ad = 0.6) for (B, 4) boxes, clipped to the rounded source_box.

    The official int() truncations are jnp.trunc. x_min - 0.6 w is computed as
    (5 x_min - 3 w) / 5 on whole numbers: exact when it is whole (as the
    official float64 arithmetic is) and at least 0.2 from a whole number
    otherwise, so float32 truncates it as Python does.
    """
    whole = jnp.trunc(box)
    low, high = whole[:, :2], whole[:, 2:]
    size = high - low
    margin = FSANET_MARGIN_FIFTHS * size
    low = jnp.trunc((5 * low - margin) / 5)
    high = jnp.trunc((5 * high + margin) / 5)
    bounds = jnp.round(source_box)  # int(round()) in fsanet_crop; both round half to even
    low = jnp.maximum(low, bounds[:, :2])
    high = jnp.minimum(high, bounds[:, 2:] - 1)
    return jnp.concatenate([low, high], axis=1)


def _scale_regions(region: jax.Array, scale: jax.Array, shift: jax.Array) -> jax.Array:
    """crops.scale_box for (B, 4) regions, (B,) scales and (B, 2) shifts, in the same float32 order."""
    centre = (region[:, :2] + region[:, 2:]) / 2
    size = region[:, 2:] - region[:, :2]
    centre = centre + shift * size
    half = size * scale[:, None] / 2
    return jnp.concatenate([centre - half, centre + half], axis=1)


def crop_regions(box, source_box, k, scale, shift, convention: str, offset=None) -> jax.Array:
    """Model-input regions (B, 4) float32 in stored-image pixels, rounded to whole pixels.

    Exactly `crops.crop_box(convention, box, k=k, bounds=source_box, offset=offset)`, then
    `crops.scale_box(region, scale, shift)`, then the rounding of
    `crops.crop_resize` (round half to even, as Python's round()).
    box, source_box: (B, 4); k, scale: (B,); shift, offset: (B, 2). scale=None skips
    `scale_box` (the evaluation transform, which never calls it); offset=None
    centres "hopenet_train"'s square (other conventions ignore it).
    """
    box = jnp.asarray(box, jnp.float32)
    if convention == "hopenet":
        region = _hopenet_regions(box, jnp.asarray(k, jnp.float32))
    elif convention == "hopenet_train":
        offset = jnp.full((box.shape[0], 2), 0.5, jnp.float32) if offset is None else offset
        region = _hopenet_train_regions(box, jnp.asarray(k, jnp.float32), jnp.asarray(offset, jnp.float32))
    elif convention == "fsanet":
        region = _fsanet_regions(box, jnp.asarray(source_box, jnp.float32))
    elif convention == "box":
        region = box
    else:
        raise ValueError(f"unknown crop convention {convention!r}; valid: {', '.join(crops.CROPS)}")
    if scale is not None:
        region = _scale_regions(region, jnp.asarray(scale, jnp.float32), jnp.asarray(shift, jnp.float32))
    return jnp.round(region)


# --- random draws --------------------------------------------------------------------------------


def example_keys(key: jax.Array, step, positions) -> jax.Array:
    """Per-example keys fold_in(fold_in(key, step), position): independent of how the batch is split."""
    step_key = jax.random.fold_in(key, step)
    return jax.vmap(lambda position: jax.random.fold_in(step_key, position))(jnp.asarray(positions, jnp.int32))


def _draw_one(key: jax.Array, spec: AugmentSpec) -> dict:
    """One example's draws: entry i of one uniform vector per UNIFORM_DRAWS name, and the noise key.

    One vector rather than a subkey per draw: every threefry call adds
    compile time (most of this module's on XLA:CPU), and fixed indices keep
    the draws independent.
    """
    uniform_key, noise_key = jax.random.split(key)
    u = dict(zip(UNIFORM_DRAWS, jax.random.uniform(uniform_key, (len(UNIFORM_DRAWS),), jnp.float32)))
    between = lambda name, lo, hi: lo + (hi - lo) * u[name]  # noqa: E731
    return {
        "k": between("k", *spec.crop_k),
        "scale": between("scale", *spec.scale),
        "shift": jnp.stack([between("shift_x", -spec.shift, spec.shift), between("shift_y", -spec.shift, spec.shift)]),
        "offset": jnp.stack([u["offset_x"], u["offset_y"]]),  # hopenet_train's square in its box
        "flip": (u["flip"] < 0.5) & spec.flip,
        "downsample": u["downsample"] < spec.downsample_prob,
        "downsample_factor": between("downsample_factor", 1.0, max(spec.downsample_max, 1.0)),
        "blur": u["blur"] < spec.blur_prob,
        "blur_sigma": between("blur_sigma", 0.1, max(spec.blur_max_sigma, 0.1)),
        "noise": (u["noise"] < spec.noise_prob) & (spec.noise_std > 0),
        "noise_key": noise_key,
    }


def draw(key: jax.Array, spec: AugmentSpec, batch: int, *, step=0, positions=None) -> dict:
    """The per-example random values (leading axis `batch`) that `augment` uses.

    k, scale (B,), shift, offset (B, 2), flip, downsample, blur, noise (B,) bool
    (whether each option applies), downsample_factor, blur_sigma (B,) and
    noise_key (B, ...). Positions default to 0..batch-1. Tests feed these to
    the host formulas.
    """
    positions = jnp.arange(batch, dtype=jnp.int32) if positions is None else positions
    return jax.vmap(lambda k: _draw_one(k, spec))(example_keys(key, step, positions))


# --- pixels --------------------------------------------------------------------------------------


def _resample(image, size: int, scale, translation, method: str, antialias: bool) -> jax.Array:
    """jax.image.scale_and_translate on (H, W, C): output (y, x) = input (y, x) * scale + translation.

    Pixel centres at i + 0.5; outputs whose sample falls outside the input are 0.
    """
    return jax.image.scale_and_translate(
        image, (size, size, image.shape[-1]), (0, 1), scale, translation, method, antialias=antialias
    )


def _cut_and_resize(canvas, region, size: int, antialias: bool) -> jax.Array:
    """Canvas pixels of `region` (x0, y0, x1, y1 in canvas coords) resized to size x size."""
    # A degenerate region (the host raises) would divide by zero; give it one pixel.
    low, high = region[:2], jnp.maximum(region[2:], region[:2] + 1e-3)
    scale = size / (high - low)  # (sx, sy)
    return _resample(canvas.astype(jnp.float32), size, scale[::-1], -(low * scale)[::-1], "linear", antialias)


def _down_up(image, factor) -> jax.Array:
    """The host's INTER_AREA shrink to round(S / f) px and INTER_LINEAR back to S, with static shapes.

    The small image lives in the top-left of an S x S buffer; its last row and
    column are repeated beyond it so the bilinear enlargement clamps at its
    edge as cv2 does.
    """
    size = image.shape[0]
    small = jnp.maximum(4.0, jnp.round(size / factor))
    ratio = jnp.stack([small / size] * 2)
    shrunk = _resample(image, size, ratio, jnp.zeros(2), "area", antialias=True)
    edge = jnp.minimum(jnp.arange(size), small.astype(jnp.int32) - 1)
    shrunk = shrunk[edge][:, edge]
    return _resample(shrunk, size, 1 / ratio, jnp.zeros(2), "linear", antialias=False)


def _reflect101_taps(size: int, radius: int) -> np.ndarray:
    """(size, 2 radius + 1) source index of each tap of each pixel, borders reflected as cv2's BORDER_REFLECT_101."""
    index = np.arange(size)[:, None] + np.arange(-radius, radius + 1)[None, :]
    index = np.abs(index)  # -i -> i (the edge pixel itself is not repeated)
    return np.where(index > size - 1, 2 * (size - 1) - index, index)


def _gaussian_blur(image, sigma, radius: int) -> jax.Array:
    """cv2.GaussianBlur(image, (0, 0), sigma) for uint8: separable, reflect-101 borders.

    The taps span the static `radius`; those beyond cv2's own radius for this
    sigma are zero, so the kernel equals cv2's. The filter is applied as an
    (S, S) matrix on each axis, like the resize: two matrix products instead
    of 2 (2 R + 1) shifted slices (fewer ops to compile, fast on GPUs).
    """
    size = image.shape[0]
    if radius >= size:
        raise ValueError(f"blur radius {radius} (blur_max_sigma) needs images larger than {size} px")
    taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    weights = jnp.exp(-(taps**2) / (2 * sigma**2)) * (jnp.abs(taps) <= blur_radius_of(sigma))
    weights = weights / weights.sum()
    sources = _reflect101_taps(size, radius)
    one_hot = (sources[:, :, None] == np.arange(size)[None, None, :]).astype(np.float32)  # static
    matrix = jnp.einsum("t,itj->ij", weights, one_hot)
    return jnp.einsum("yi,ijc,xj->yxc", matrix, image, matrix, precision=jax.lax.Precision.HIGHEST)


def _degrade(image, drawn: dict, spec: AugmentSpec) -> jax.Array:
    """Down/up-sampling, blur, noise in the host's order; options with probability 0 are not traced."""
    if spec.downsample_prob > 0 and spec.downsample_max > 1:
        image = jnp.where(drawn["downsample"], _down_up(image, drawn["downsample_factor"]), image)
    if spec.blur_prob > 0:
        image = jnp.where(drawn["blur"], _gaussian_blur(image, drawn["blur_sigma"], spec.blur_radius), image)
    if spec.noise_prob > 0 and spec.noise_std > 0:
        # The host rounds the noisy image to uint8; the model sees floats anyway, so this does not.
        noise = spec.noise_std * jax.random.normal(drawn["noise_key"], image.shape, jnp.float32)
        image = jnp.where(drawn["noise"], jnp.clip(image + noise, 0, 255), image)
    return image


def _flip(image, pose, flip):
    """Mirror the image (width axis) and negate yaw and roll where `flip`."""
    image = jnp.where(flip, image[:, ::-1], image)
    return image, jnp.where(flip, angles.flip_horizontal(pose), pose)


def augment(canvases, labels: dict, key, positions, step, spec: AugmentSpec, *, train: bool = True) -> dict:
    """Canvases (B, C, C, 3) uint8 -> {"image": (B, S, S, 3) float32 in [0, 255], "pose": (B, 3)}.

    labels: box, source_box (B, 4) in stored pixels, canvas_scale (B, 2) =
    (C / W, C / H), pose (B, 3). positions (B,) int32: the examples' global
    indices in the batch; key, step: the per-step randomness (see the module
    docstring). train=False is the evaluation transform: spec.eval_crop (or
    spec.crop), k = eval_crop_k, no scale, shift, offset, flip or degradation
    (key, step, positions unused).
    Images are in spec.channels order ("bgr" reverses the canvas's RGB).
    """
    batch, size = canvases.shape[0], spec.image_size
    pose = jnp.asarray(labels["pose"], jnp.float32)
    if train:
        drawn = draw(key, spec, batch, step=step, positions=positions)
        k, scale, shift, offset = drawn["k"], drawn["scale"], drawn["shift"], drawn["offset"]
        convention = spec.crop
    else:
        k, scale, shift, offset = jnp.full((batch,), spec.eval_crop_k, jnp.float32), None, None, None
        convention = spec.eval_crop or spec.crop
    region = crop_regions(labels["box"], labels["source_box"], k, scale, shift, convention, offset)
    region = region * jnp.tile(jnp.asarray(labels["canvas_scale"], jnp.float32), (1, 2))
    antialias = crops.RESIZE[convention] == "area"
    images = jax.vmap(lambda c, r: _cut_and_resize(c, r, size, antialias))(canvases, region)
    if train:
        images, pose = jax.vmap(_flip)(images, pose, drawn["flip"])
        images = jax.vmap(lambda image, d: _degrade(image, d, spec))(images, drawn)
    if spec.channels == "bgr":
        images = images[..., ::-1]
    return {"image": images, "pose": pose}
