"""MTCNN face detector (Zhang et al., IEEE SPL 2016) in JAX/Flax, ported from facenet-pytorch 2.6.0.

Three cascaded networks: P-Net proposes faces on an image pyramid (a 12 x 12
window with stride 2), R-Net (24 x 24) and O-Net (48 x 48) rescore and refine
the surviving boxes; non-maximum suppression (NMS) after each stage. The
weights are facenet-pytorch's (`weights/mtcnn.npz`, MIT, converted once by
`jaxpose.inference.mtcnn_convert`), themselves converted from the authors'
Caffe models.

The algorithm follows facenet-pytorch's `detect_face` step for step (thresholds
0.6 / 0.7 / 0.7, pyramid factor 0.709, minimum face 20 px, its box rounding,
and its resampling, PyTorch's `interpolate(mode="area")`), so that the boxes
agree with facenet-pytorch's (tests/test_inference_mtcnn.py). Everything that
touches pixels runs on the device, batched: one integral image per batch of
equal-sized images feeds the whole pyramid and every R-Net / O-Net crop
(area resampling is a box mean, four lookups in the integral image), so
the images cross to the device once (on a CPU backend numpy builds the
integral image: see `integral_table`). All the pyramid's scales are packed
into one canvas (`pyramid_layout`), so P-Net is one program per canvas size,
not one per scale: XLA compiles each distinct shape, about 0.4 s per
convolution net on a CPU. Image sides and canvases are rounded up to
CANVAS_STEP and batch and box counts to powers of two, so nearby sizes share
the compilations; the jitted functions are module-level, shared by all
MTCNN instances. The host only thresholds, runs NMS and does the box
arithmetic, on a few hundred boxes.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Sequence

import cv2
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

WEIGHTS = pathlib.Path(__file__).resolve().parent / "weights" / "mtcnn.npz"
NETS = ("pnet", "rnet", "onet")
# Area resampling sums whole pixel windows in int32; 255 x pixels must stay below 2**31.
MAX_DETECT_PIXELS = 8_000_000


@dataclasses.dataclass(frozen=True)
class Detections:
    """Faces found in one image: boxes (N, 4) float32 (x_min, y_min, x_max, y_max) pixels,
    scores (N,) float32 in [0, 1] (NaN where the detector gives none), landmarks (N, 5, 2) or None
    (MTCNN: the two eyes, the nose tip and the two mouth corners, image-left first)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    def take(self, index) -> "Detections":
        marks = None if self.landmarks is None else self.landmarks[index]
        return Detections(self.boxes[index], self.scores[index], marks)

    def scaled(self, factor) -> "Detections":
        """The detections in pixels `factor` (a number, or (x, y) factors) times larger."""
        xy = np.broadcast_to(np.asarray(factor, np.float32), (2,))
        marks = None if self.landmarks is None else self.landmarks * xy
        return Detections(self.boxes * np.tile(xy, 2), self.scores, marks)


def no_detections() -> Detections:
    return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


# --- the three networks ---------------------------------------------------------------


class PReLU(nn.Module):
    """max(0, x) + alpha min(0, x) with one alpha per channel (torch.nn.PReLU(C))."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = self.param("alpha", nn.initializers.constant(0.25), (x.shape[-1],))
        return jnp.where(x >= 0, x, alpha * x)


def _ceil_pool(x: jax.Array, k: int, s: int) -> jax.Array:
    """Max pooling with PyTorch's ceil_mode=True: a last, partial window is kept (padded with -inf)."""
    pads = []
    for n in x.shape[1:3]:
        out = -(-(n - k) // s) + 1
        pads.append((0, max(0, (out - 1) * s + k - n)))
    return nn.max_pool(x, (k, k), (s, s), padding=pads)


def _conv(features: int, kernel: int, name: str) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), padding="VALID", name=name)


def _flatten_like_torch(x: jax.Array) -> jax.Array:
    # facenet-pytorch flattens x.permute(0, 3, 2, 1) of NCHW: (N, W, H, C) order.
    return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal net, fully convolutional: (N, H, W, 3) -> face probability (N, h, w), box offsets (N, h, w, 4).

    mask: (H - 2, W - 2) bool, False where conv1's output is not part of any
    image (a packed pyramid's gaps and edges): -inf there before the pooling,
    which is what PyTorch's ceil-mode padding puts into a tile's last window.
    """

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        x = PReLU(name="prelu1")(_conv(10, 3, "conv1")(x))
        if mask is not None:
            x = jnp.where(mask[None, :, :, None], x, -jnp.inf)
        x = _ceil_pool(x, 2, 2)
        x = PReLU(name="prelu2")(_conv(16, 3, "conv2")(x))
        x = PReLU(name="prelu3")(_conv(32, 3, "conv3")(x))
        prob = nn.softmax(_conv(2, 1, "conv4_1")(x))[..., 1]
        return prob, _conv(4, 1, "conv4_2")(x)


class RNet(nn.Module):
    """Refinement net: (N, 24, 24, 3) -> face probability (N,), box offsets (N, 4)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = _ceil_pool(PReLU(name="prelu1")(_conv(28, 3, "conv1")(x)), 3, 2)
        x = _ceil_pool(PReLU(name="prelu2")(_conv(48, 3, "conv2")(x)), 3, 2)
        x = PReLU(name="prelu3")(_conv(64, 2, "conv3")(x))
        x = PReLU(name="prelu4")(nn.Dense(128, name="dense4")(_flatten_like_torch(x)))
        prob = nn.softmax(nn.Dense(2, name="dense5_1")(x))[:, 1]
        return prob, nn.Dense(4, name="dense5_2")(x)


class ONet(nn.Module):
    """Output net: (N, 48, 48, 3) -> face probability (N,), box offsets (N, 4), landmarks (N, 10) (x1..x5, y1..y5)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        x = _ceil_pool(PReLU(name="prelu1")(_conv(32, 3, "conv1")(x)), 3, 2)
        x = _ceil_pool(PReLU(name="prelu2")(_conv(64, 3, "conv2")(x)), 3, 2)
        x = _ceil_pool(PReLU(name="prelu3")(_conv(64, 3, "conv3")(x)), 2, 2)
        x = PReLU(name="prelu4")(_conv(128, 2, "conv4")(x))
        x = PReLU(name="prelu5")(nn.Dense(256, name="dense5")(_flatten_like_torch(x)))
        prob = nn.softmax(nn.Dense(2, name="dense6_1")(x))[:, 1]
        return prob, nn.Dense(4, name="dense6_2")(x), nn.Dense(10, name="dense6_3")(x)


MODULES = {"pnet": (PNet(), 12), "rnet": (RNet(), 24), "onet": (ONet(), 48)}


def load_params(path: str | pathlib.Path = WEIGHTS) -> dict[str, dict]:
    """{net: flax params} from an npz of facenet-pytorch state_dict tensors named "pnet/conv1.weight" etc.

    The npz keeps PyTorch's layouts; here conv kernels (O, I, kh, kw) become
    (kh, kw, I, O), linear weights are transposed. Every parameter must come
    from one tensor of the right shape, and every tensor must be used.
    """
    with np.load(path, allow_pickle=False) as data:
        tensors = {key: np.asarray(data[key], np.float32) for key in data.files}
    params, used = {}, set()
    for net, (module, size) in MODULES.items():
        template = jax.eval_shape(lambda m=module, s=size: m.init(jax.random.key(0), jnp.zeros((1, s, s, 3))))
        flat = {}
        for path_, spec in flax.traverse_util.flatten_dict(template["params"]).items():
            key, value = _tensor_for(net, path_, tensors)
            if value.shape != spec.shape:
                raise ValueError(f"{path}: {key} has shape {value.shape}, "
                                 f"expected {spec.shape} for {net}/{'/'.join(path_)}")
            flat[path_], _ = jnp.asarray(value), used.add(key)
        params[net] = flax.traverse_util.unflatten_dict(flat)
    if unused := sorted(set(tensors) - used):
        raise ValueError(f"{path}: unexpected tensors {', '.join(unused)}")
    return params


def _tensor_for(net: str, path: tuple[str, ...], tensors: dict[str, np.ndarray]) -> tuple[str, np.ndarray]:
    layer, kind = path
    key = f"{net}/{layer}.{'bias' if kind == 'bias' else 'weight'}"
    if key not in tensors:
        raise ValueError(f"MTCNN weights: missing tensor {key}")
    value = tensors[key]
    if kind == "kernel":
        value = np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value.T
    return key, value


# --- device side: area resampling from an integral image, and the nets --------------------


@jax.jit
def _integral(images: jax.Array) -> jax.Array:
    """(N, H, W, 3) uint8 -> (N, H + 1, W + 1, 3) int32 summed-area table (exact: sums stay < 2**31)."""
    table = jnp.cumsum(jnp.cumsum(images.astype(jnp.int32), axis=1), axis=2)
    return jnp.pad(table, ((0, 0), (1, 0), (1, 0), (0, 0)))


def _window_means(table: jax.Array, n, r0, r1, c0, c1) -> jax.Array:
    """Means of image n over rows [r0, r1) x columns [c0, c1): n (B,), r* (B, h), c* (B, w) -> (B, h, w, 3).

    With torch's adaptive-pooling windows this is `interpolate(mode="area")`
    exactly: integer sums, then one division.
    """
    n, r0, r1 = n[:, None, None], r0[:, :, None], r1[:, :, None]
    c0, c1 = c0[:, None, :], c1[:, None, :]
    total = table[n, r1, c1] - table[n, r0, c1] - table[n, r1, c0] + table[n, r0, c0]
    area = ((r1 - r0) * (c1 - c0)).astype(jnp.float32)
    return total.astype(jnp.float32) / area[..., None]


def _normalize(x: jax.Array) -> jax.Array:
    return (x - 127.5) * 0.0078125


@jax.jit
def _pyramid(params, table, r0, r1, c0, c1, mask):
    """P-Net on the packed pyramid of every image: per-pixel windows (Hc, Wc) of the canvas -> (prob, offsets)."""
    n = jnp.arange(table.shape[0])[:, None, None]
    total = table[n, r1, c1] - table[n, r0, c1] - table[n, r1, c0] + table[n, r0, c0]
    canvas = total.astype(jnp.float32) / ((r1 - r0) * (c1 - c0)).astype(jnp.float32)[None, :, :, None]
    return PNet().apply({"params": params}, _normalize(canvas), mask)


@jax.jit
def _box_crops(table, n, r0, r1, c0, c1):
    """Box crops resampled to R-Net's or O-Net's size (windows from `_area_windows`), normalised."""
    return _normalize(_window_means(table, n, r0, r1, c0, c1))


@functools.partial(jax.jit, static_argnums=0)
def _refine(net: str, params, crops):
    # Apart from the crops, so that the nets compile once per box count whatever the image size.
    return MODULES[net][0].apply({"params": params}, crops)


def integral_table(images: np.ndarray) -> jax.Array:
    """(N, H + 1, W + 1, 3) int32 summed-area table of uint8 images, on the device.

    On a CPU backend numpy builds it in place (XLA:CPU's cumsum is slower to
    compile and to run); on accelerators `_integral` runs on the device, so
    only the uint8 images are transferred.
    """
    if jax.default_backend() != "cpu":
        return _integral(jnp.asarray(images))
    table = np.zeros((images.shape[0], images.shape[1] + 1, images.shape[2] + 1, 3), np.int32)
    inner = table[:, 1:, 1:]
    inner[...] = images
    np.cumsum(inner, axis=1, out=inner)
    np.cumsum(inner, axis=2, out=inner)
    return jnp.asarray(table)


# --- host side: the cascade's box arithmetic (float32, as facenet-pytorch) --------------------


def _area_windows(start: np.ndarray, length: np.ndarray, out: int) -> tuple[np.ndarray, np.ndarray]:
    """torch adaptive-pooling windows of `out` cells over [start, start + length): (lo, hi), each (B, out)."""
    i = np.arange(out)[None, :]
    start, length = np.asarray(start)[:, None], np.asarray(length)[:, None]
    return (start + (i * length) // out).astype(np.int32), (start - ((-(i + 1) * length) // out)).astype(np.int32)


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """The scales at which a min_face_size face fills P-Net's 12 px window, down to a 12 px image."""
    m = 12.0 / min_face_size
    minl, scale, scales = min(height, width) * m, m, []
    while minl >= 12:
        scales.append(scale)
        scale, minl = scale * factor, minl * factor
    return scales


CANVAS_STEP = 32  # canvas and image sides are rounded up to this: one compilation serves many image sizes


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


@dataclasses.dataclass(frozen=True, eq=False)
class PyramidLayout:
    """All pyramid scales of an image packed into one canvas, so P-Net runs (and compiles) once per canvas size.

    tiles[k] = (y, x, h, w): scale k's resampled image at an even offset
    (P-Net's stride-2 pooling then sees each tile on its own grid); columns
    of tiles as high as the largest scale. r0, r1, c0, c1 (Hc, Wc): each
    canvas pixel's area window in the image (gaps: pixel (0, 0)); mask: where
    conv1's output belongs to a tile.
    """

    scales: tuple[float, ...]
    tiles: tuple[tuple[int, int, int, int], ...]
    windows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    mask: np.ndarray

    def outputs(self, k: int) -> tuple[slice, slice]:
        """Where scale k's P-Net output cells lie in the canvas output (conv1, ceil pool, conv2, conv3)."""
        y, x, h, w = self.tiles[k]
        return slice(y // 2, y // 2 + -(-(h - 2) // 2) - 4), slice(x // 2, x // 2 + -(-(w - 2) // 2) - 4)


@functools.lru_cache(maxsize=64)
def pyramid_layout(height: int, width: int, min_face_size: float, factor: float) -> PyramidLayout | None:
    """The packed pyramid of an image size (None: smaller than the smallest face)."""
    scales = pyramid_scales(height, width, min_face_size, factor)
    if not scales:
        return None
    sizes = [(int(height * s + 1), int(width * s + 1)) for s in scales]  # facenet-pytorch's resampled sizes
    column_height, columns, tiles = _round_up(sizes[0][0], 2), [], []
    for h, w in sizes:  # first fit, largest first: each column is as wide as its first tile
        column = next((c for c in columns if c[2] + h <= column_height), None)
        if column is None:
            column = [columns[-1][0] + columns[-1][1] if columns else 0, _round_up(w, 2), 0]
            columns.append(column)
        tiles.append((column[2], column[0], h, w))
        column[2] += _round_up(h, 2)
    shape = (_round_up(column_height, CANVAS_STEP), _round_up(columns[-1][0] + columns[-1][1], CANVAS_STEP))
    r0, c0 = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    r1, c1, mask = np.ones(shape, np.int32), np.ones(shape, np.int32), np.zeros((shape[0] - 2, shape[1] - 2), bool)
    for y, x, h, w in tiles:
        rows = _area_windows(np.zeros(1, np.int64), np.array([height]), h)
        cols = _area_windows(np.zeros(1, np.int64), np.array([width]), w)
        r0[y:y + h, x:x + w], r1[y:y + h, x:x + w] = rows[0][0][:, None], rows[1][0][:, None]
        c0[y:y + h, x:x + w], c1[y:y + h, x:x + w] = cols[0][0][None, :], cols[1][0][None, :]
        mask[y:y + h - 2, x:x + w - 2] = True
    return PyramidLayout(tuple(scales), tuple(tiles), (r0, r1, c0, c1), mask)


@functools.lru_cache(maxsize=16)
def _on_device(layout: PyramidLayout) -> tuple[jax.Array, ...]:
    # A video's frames share one layout: its index arrays are sent to the device once.
    return tuple(jax.device_put(a) for a in (*layout.windows, layout.mask))


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, *, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, best first.

    mode "union": torchvision's `nms` (IoU with areas (x2 - x1)(y2 - y1), drop
    IoU > threshold); "min": facenet-pytorch's last-stage NMS (overlap over
    the smaller area, areas with + 1).
    """
    plus = 1.0 if mode == "min" else 0.0
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = (x2 - x1 + plus) * (y2 - y1 + plus)
    order, keep = np.argsort(-scores, kind="stable"), []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + plus)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + plus)
        inter = w * h
        overlap = inter / np.minimum(area[i], area[rest]) if mode == "min" else inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, image: np.ndarray, threshold: float, *,
                mode: str = "union") -> np.ndarray:
    """NMS within each image of a batch; indices kept (grouped by image, best first)."""
    kept = [np.flatnonzero(image == n)[nms(boxes[image == n], scores[image == n], threshold, mode=mode)]
            for n in np.unique(image)]
    return np.concatenate(kept) if kept else np.zeros((0,), np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """facenet-pytorch `rerec`: the square of side max(w, h) on the same centre."""
    boxes = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, 0:2] + side[:, None]
    return boxes


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """facenet-pytorch `bbreg`: offsets in units of the box size (with its + 1)."""
    boxes = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] = boxes[:, :4] + offsets * np.stack([w, h, w, h], 1)
    return boxes


def _crop_regions(boxes: np.ndarray, width: int, height: int):
    """facenet-pytorch `pad`: whole-pixel regions [y0, y1) x [x0, x1) clipped to the image, and which are non-empty."""
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x0, y0 = np.maximum(b[:, 0], 1) - 1, np.maximum(b[:, 1], 1) - 1
    x1, y1 = np.minimum(b[:, 2], width), np.minimum(b[:, 3], height)
    return (x0, y0, x1, y1), (x1 > x0) & (y1 > y0)


def _bucket(count: int, least: int = 16) -> int:
    # Counts rounded up to a power of two: a handful of compilations instead of one per count.
    return max(least, 1 << (count - 1).bit_length())


def _proposals(prob: np.ndarray, offsets: np.ndarray, scale: float, threshold: float):
    """P-Net cells with prob >= threshold -> boxes (K, 9) [x1, y1, x2, y2, score, 4 offsets], image index (K,)."""
    n, y, x = np.nonzero(prob >= threshold)
    cells = 2 * np.stack([x, y], 1).astype(np.float32)
    s = np.float32(scale)
    corners = [np.floor((cells + 1) / s), np.floor((cells + 12) / s)]
    boxes = np.concatenate([*corners, prob[n, y, x][:, None], offsets[n, y, x]], 1)
    return boxes.astype(np.float32), n


def _pad_rows(arrays: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    # Repeats the last row: padded crops are valid windows whose outputs are dropped.
    return [np.concatenate([a, np.repeat(a[-1:], size - len(a), axis=0)]) for a in arrays]


class MTCNN:
    """Face detector: `mtcnn(image) -> Detections`, `mtcnn.detect(images) -> [Detections]`.

    Images are RGB uint8 (H, W, 3). min_face_size, thresholds and factor are
    facenet-pytorch's (and the MTCNN paper's) settings. An image whose longer
    side exceeds max_side (or holding more than MAX_DETECT_PIXELS) is
    searched at a reduced size (area filter) and the boxes scaled back, so a
    50-megapixel photo costs about as much as a 2048 px one; faces smaller
    than min_face_size at that size are missed. Equal-sized images run in
    batches of batch_size (default 4 on a CPU, 32 on accelerators).
    """

    def __init__(self, weights: str | pathlib.Path = WEIGHTS, *, min_face_size: float = 20.0,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 max_side: int | None = 2048, batch_size: int | None = None):
        self.params = jax.device_put(load_params(weights))
        # On a CPU, batches beyond a few images are slower per image (the integral images leave the cache).
        self.batch_size = batch_size or (4 if jax.default_backend() == "cpu" else 32)
        self.min_face_size, self.thresholds, self.factor = float(min_face_size), tuple(thresholds), float(factor)
        self.max_side = max_side

    def __repr__(self) -> str:
        return f"MTCNN(min_face_size={self.min_face_size:g}, thresholds={self.thresholds}, factor={self.factor})"

    def __call__(self, image: np.ndarray) -> Detections:
        return self.detect([image])[0]

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Faces of each image, best score first; equal-sized images (video frames) run as one batch."""
        fitted = [self._fit(image) for image in images]
        results: list[Detections | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (small, _) in enumerate(fitted):
            groups.setdefault(small.shape, []).append(i)
        batches = [group[k:k + self.batch_size] for group in groups.values()
                   for k in range(0, len(group), self.batch_size)]
        for indices in batches:
            found = self.detect_batch(np.stack([fitted[i][0] for i in indices]))
            for i, detections in zip(indices, found):
                results[i] = detections if fitted[i][1] is None else detections.scaled(fitted[i][1])
        return results

    def _fit(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The image to search and the (x, y) factor back to the original pixels (None: unchanged)."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"MTCNN takes (H, W, 3) uint8 RGB images, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        shrink = max(1.0, np.sqrt(h * w / MAX_DETECT_PIXELS), max(h, w) / (self.max_side or max(h, w)))
        if shrink == 1.0:
            return image, None
        size = (max(1, round(w / shrink)), max(1, round(h / shrink)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return small, np.array([w / size[0], h / size[1]], np.float32)

    def detect_batch(self, images: np.ndarray) -> list[Detections]:
        """The cascade on (N, H, W, 3) uint8 RGB images of one size (H x W <= MAX_DETECT_PIXELS)."""
        count, height, width = images.shape[:3]
        if height * width > MAX_DETECT_PIXELS:
            raise ValueError(f"detect_batch: {width} x {height} exceeds {MAX_DETECT_PIXELS} pixels; use detect()")
        table = integral_table(_padded(images))
        boxes, image = self._propose(table, count, height, width)
        boxes, image, _ = self._refine_stage(table, "rnet", boxes, image, (height, width))
        boxes, image, marks = self._refine_stage(table, "onet", boxes, image, (height, width))
        return [_sorted(boxes[image == n], marks[image == n]) for n in range(count)]

    def _propose(self, table: jax.Array, count: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1: P-Net over the pyramid, NMS per scale (0.5) then across scales (0.7), offsets, squares."""
        layout = pyramid_layout(height, width, self.min_face_size, self.factor)
        if layout is None:  # the image is smaller than the smallest face searched for
            return np.zeros((0, 5), np.float32), np.zeros((0,), np.int64)
        outputs = _pyramid(self.params["pnet"], table, *_on_device(layout))
        prob, offsets = (np.asarray(a)[:count] for a in outputs)  # the padding images are dropped
        candidates, images = [], []
        for k, scale in enumerate(layout.scales):
            rows, cols = layout.outputs(k)
            boxes, image = _proposals(prob[:, rows, cols], offsets[:, rows, cols], scale, self.thresholds[0])
            keep = batched_nms(boxes[:, :4], boxes[:, 4], image, 0.5)
            candidates.append(boxes[keep])
            images.append(image[keep])
        boxes, image = np.concatenate(candidates), np.concatenate(images)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], image, 0.7)
        boxes, image = boxes[keep], image[keep]
        size = boxes[:, 2:4] - boxes[:, 0:2]
        corners = boxes[:, :4] + boxes[:, 5:9] * np.concatenate([size, size], 1)
        return _square(np.concatenate([corners, boxes[:, 4:5]], 1)), image

    def _refine_stage(self, table, net: str, boxes: np.ndarray, image: np.ndarray, shape: tuple[int, int]):
        """Stage 2 (R-Net) or 3 (O-Net): rescore the crops, keep score > threshold, NMS, refine the boxes."""
        (x0, y0, x1, y1), valid = _crop_regions(boxes, shape[1], shape[0])
        boxes, image = boxes[valid], image[valid]
        if not len(boxes):
            return np.zeros((0, 5), np.float32), image, np.zeros((0, 5, 2), np.float32)
        size = MODULES[net][1]
        rows = _area_windows(y0[valid], (y1 - y0)[valid], size)
        cols = _area_windows(x0[valid], (x1 - x0)[valid], size)
        inputs = _pad_rows([image.astype(np.int32), *rows, *cols], _bucket(len(boxes), 32))
        crops = _box_crops(table, *inputs)
        outputs = [np.asarray(o)[: len(boxes)] for o in _refine(net, self.params[net], crops)]
        passed = outputs[0] > self.thresholds[1 if net == "rnet" else 2]
        boxes = np.concatenate([boxes[passed, :4], outputs[0][passed, None]], 1)
        image, offsets = image[passed], outputs[1][passed]
        if net == "rnet":
            keep = batched_nms(boxes[:, :4], boxes[:, 4], image, 0.7)
            return _square(_regress(boxes[keep], offsets[keep])), image[keep], None
        marks = _landmarks(boxes, outputs[2][passed])
        boxes = _regress(boxes, offsets)
        keep = batched_nms(boxes[:, :4], boxes[:, 4], image, 0.7, mode="min")
        return boxes[keep], image[keep], marks[keep]


def _padded(images: np.ndarray) -> np.ndarray:
    """The batch grown to a power of two of images with sides rounded up to CANVAS_STEP (zeros, never read):
    the integral image's shape, hence the compilations, are shared by nearby sizes and batch counts."""
    count, height, width = images.shape[:3]
    pads = ((0, _bucket(count, 1) - count), (0, _round_up(height, CANVAS_STEP) - height),
            (0, _round_up(width, CANVAS_STEP) - width), (0, 0))
    return np.pad(images, pads) if any(p[1] for p in pads) else images


def _landmarks(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """O-Net's five points (relative to the box, x1..x5 then y1..y5) -> (B, 5, 2) pixels, as facenet-pytorch."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    x = w[:, None] * points[:, :5] + boxes[:, 0:1] - 1
    y = h[:, None] * points[:, 5:] + boxes[:, 1:2] - 1
    return np.stack([x, y], -1).astype(np.float32)


def _sorted(boxes: np.ndarray, marks: np.ndarray) -> Detections:
    order = np.argsort(-boxes[:, 4], kind="stable")
    return Detections(boxes[order, :4].astype(np.float32), boxes[order, 4].astype(np.float32),
                      marks[order].astype(np.float32))
