"""Face detectors for `jaxpose predict`: the built-in MTCNN, a user's callable, or boxes from a CSV.

A detector is anything with `detect(images) -> [Detections]` (RGB uint8
images, one Detections per image). `load_detector` makes one from a name
("mtcnn"), a "package.module:function" path or a callable taking one RGB
image and returning boxes (N, 4), boxes with scores (N, 5), a (boxes,
scores) pair or `Detections`.
"""

from __future__ import annotations

import csv
import importlib
import pathlib
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from jaxpose.inference.mtcnn import MTCNN, Detections, no_detections

__all__ = ["Detections", "Detector", "CallableDetector", "MTCNN", "as_detections", "load_detector", "match_box",
           "box_iou"]

DETECTORS = ("mtcnn",)


class Detector(Protocol):
    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]: ...


class CallableDetector:
    """A function image -> boxes (see `as_detections`) as a Detector, one image at a time."""

    def __init__(self, fn: Callable[[np.ndarray], Any], name: str = ""):
        self.fn, self.name = fn, name or getattr(fn, "__name__", repr(fn))

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        return [as_detections(self.fn(image), self.name) for image in images]

    def __repr__(self) -> str:
        return f"CallableDetector({self.name})"


def as_detections(result: Any, name: str = "detector") -> Detections:
    """Detections from what a user's detector returned: Detections, (N, 4) boxes, (N, 5) boxes + scores,
    or a (boxes, scores) pair. Boxes are (x_min, y_min, x_max, y_max) pixels; scores default to NaN."""
    if isinstance(result, Detections):
        return result
    if isinstance(result, tuple) and len(result) == 2:
        boxes, scores = (np.asarray(r, np.float32) for r in result)
    else:
        array = np.asarray(result if result is not None else np.zeros((0, 4)), np.float32)
        if array.size == 0:
            return no_detections()
        if array.ndim != 2 or array.shape[1] not in (4, 5):
            raise ValueError(f"{name} returned shape {array.shape}; expected boxes (N, 4) or (N, 5) with scores")
        boxes = array[:, :4]
        scores = array[:, 4] if array.shape[1] == 5 else np.full(len(array), np.nan, np.float32)
    boxes = boxes.reshape(-1, 4)
    if scores.shape != (len(boxes),):
        raise ValueError(f"{name} returned {len(boxes)} boxes but scores of shape {scores.shape}")
    return Detections(boxes, scores)


def load_detector(spec: str | Callable | Detector = "mtcnn", **mtcnn_kwargs) -> Detector:
    """"mtcnn" (built in, offline), "package.module:attr" (a callable, or a class or factory called
    without arguments that returns one), a callable, or an object that already has `detect`."""
    if hasattr(spec, "detect"):
        return spec  # type: ignore[return-value]
    if callable(spec):
        return CallableDetector(spec)
    if spec == "mtcnn":
        return MTCNN(**mtcnn_kwargs)
    if isinstance(spec, str) and ":" in spec:
        module, _, attr = spec.partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"detector {spec!r}: {error}") from None
        if isinstance(target, type):
            target = target()
        return load_detector(target)
    raise ValueError(f"unknown detector {spec!r}; valid: {', '.join(DETECTORS)}, or package.module:function")


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) with each of boxes (N, 4)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def match_box(reference: np.ndarray, boxes: np.ndarray, min_iou: float = 0.3) -> int | None:
    """Index of the box that overlaps `reference` most (IoU >= min_iou), or None.

    How a detection is matched to a dataset's one labelled face (e.g. an
    AFLW2000 landmark box) when the image holds several faces.
    """
    if len(boxes) == 0:
        return None
    iou = box_iou(np.asarray(reference, np.float32), boxes)
    best = int(np.argmax(iou))
    return best if iou[best] >= min_iou else None


def read_boxes_by_image(csv_path: str | pathlib.Path) -> list[tuple[pathlib.Path, np.ndarray]]:
    """`read_boxes` grouped by image, in first-appearance order: [(path, boxes (K, 4))]."""
    paths, boxes = read_boxes(csv_path)
    groups: dict[pathlib.Path, list[np.ndarray]] = {}
    for path, box in zip(paths, boxes):
        groups.setdefault(path, []).append(box)
    return [(path, np.stack(rows)) for path, rows in groups.items()]


_BOX_COLUMNS = ("path", "x_min", "y_min", "x_max", "y_max")


def read_boxes(csv_path: str | pathlib.Path) -> tuple[list[pathlib.Path], np.ndarray]:
    """Face boxes from a CSV of `path,x_min,y_min,x_max,y_max` rows -> (paths, (N, 4) float32 pixels).

    An optional first row naming those columns is skipped; relative paths are
    taken from the CSV's folder; an image may have several rows (one per
    face). A malformed row is a ValueError naming the file and line.
    """
    csv_path = pathlib.Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: no such boxes file")
    paths, boxes = [], []
    with open(csv_path, newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            row = [cell.strip() for cell in row]
            if not row or (line == 1 and tuple(row) == _BOX_COLUMNS):
                continue
            paths.append(csv_path.parent / row[0])
            boxes.append(_parse_box(row, f"{csv_path}:{line}"))
    if not boxes:
        raise ValueError(f"{csv_path}: no boxes (expected rows {','.join(_BOX_COLUMNS)})")
    return paths, np.array(boxes, np.float32)


def _parse_box(row: list[str], where: str) -> list[float]:
    if len(row) != len(_BOX_COLUMNS):
        raise ValueError(f"{where}: expected {len(_BOX_COLUMNS)} columns {','.join(_BOX_COLUMNS)}, got {len(row)}")
    try:
        box = [float(v) for v in row[1:]]
    except ValueError:
        raise ValueError(f"{where}: box {row[1:]} is not four numbers") from None
    if not (np.all(np.isfinite(box)) and box[2] > box[0] and box[3] > box[1]):
        raise ValueError(f"{where}: box {box} needs x_max > x_min and y_max > y_min")
    return box
