"""Videos and webcams: frames in, faces linked across frames, optional temporal smoothing, annotated video out."""

from __future__ import annotations

import pathlib
from typing import Iterator

import cv2
import numpy as np

from jaxpose.inference.detect import box_iou

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


class VideoError(Exception):
    """A video or camera that cannot be read."""


def open_capture(source: str | int) -> cv2.VideoCapture:
    """cv2.VideoCapture of a file or camera index; VideoError when OpenCV cannot open it."""
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        capture.release()
        what = f"camera {source}" if isinstance(source, int) else "video"
        raise VideoError(f"cannot open {what} (OpenCV: unsupported, damaged or not a video)")
    return capture


def frame_count(capture: cv2.VideoCapture) -> int | None:
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    return count if count > 0 else None  # cameras and some containers do not know


def frames_per_second(capture: cv2.VideoCapture, default: float = 25.0) -> float:
    fps = capture.get(cv2.CAP_PROP_FPS)
    return fps if np.isfinite(fps) and 0 < fps < 1000 else default


def read_frames(capture: cv2.VideoCapture, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 frames until the end (or max_frames); the capture is released at the end."""
    try:
        count = 0
        while max_frames is None or count < max_frames:
            ok, frame = capture.read()
            if not ok:
                return
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


class VideoWriter:
    """An annotated copy of a video (mp4v in .mp4, MJPG in .avi), opened at the first frame."""

    def __init__(self, path: pathlib.Path, fps: float):
        self.path, self.fps, self._writer = path, fps, None

    def write(self, frame_rgb: np.ndarray) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            height, width = frame_rgb.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                raise VideoError(f"{self.path}: OpenCV cannot write this video format")
        self._writer.write(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class Tracker:
    """Links the faces of consecutive frames and smooths their poses.

    Each face takes the track of the previous frames' face it overlaps most
    (IoU >= min_iou, greedy by IoU, each track used once); unmatched faces
    start new tracks, and a track not seen for max_gap frames ends. With
    smooth = a > 0 a track's pose is the exponential moving average
    a * previous + (1 - a) * new (angles stay within +-99 degrees, so no
    wrap-around); a = 0 leaves the poses as predicted.
    """

    def __init__(self, smooth: float = 0.0, min_iou: float = 0.3, max_gap: int = 5):
        if not 0.0 <= smooth < 1.0:
            raise ValueError(f"smoothing factor must be in [0, 1), got {smooth}")
        self.smooth, self.min_iou, self.max_gap = smooth, min_iou, max_gap
        self.tracks: dict[int, dict] = {}  # id -> {"box", "pose", "seen"}
        self.frame, self.next_id = 0, 0

    def update(self, boxes: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Track ids (N,) and (smoothed) poses (N, 3) of this frame's faces; NaN poses are not smoothed."""
        self.frame += 1
        ids = self._assign(np.asarray(boxes, np.float32).reshape(-1, 4))
        out = np.array(poses, np.float32, copy=True).reshape(-1, 3)
        for i, track_id in enumerate(ids):
            track = self.tracks.setdefault(int(track_id), {"pose": None})
            if np.all(np.isfinite(out[i])):
                if track["pose"] is not None and self.smooth > 0:
                    out[i] = self.smooth * track["pose"] + (1 - self.smooth) * out[i]
                track["pose"] = out[i].copy()
            track.update(box=boxes[i], seen=self.frame)
        self.tracks = {k: t for k, t in self.tracks.items() if self.frame - t["seen"] <= self.max_gap}
        return ids, out

    def _assign(self, boxes: np.ndarray) -> np.ndarray:
        ids = np.full(len(boxes), -1, np.int64)
        live = [k for k, t in self.tracks.items() if t["seen"] < self.frame]
        if live and len(boxes):
            iou = np.stack([box_iou(self.tracks[k]["box"], boxes) for k in live])  # (tracks, boxes)
            for flat in np.argsort(-iou, axis=None):
                t, b = np.unravel_index(flat, iou.shape)
                if iou[t, b] < self.min_iou:
                    break
                if ids[b] < 0 and live[t] not in ids:
                    ids[b] = live[t]
        for b in np.flatnonzero(ids < 0):
            ids[b], self.next_id = self.next_id, self.next_id + 1
        return ids
