"""`jaxpose predict`: images, folders, videos or a webcam in; a row per face and annotated copies out.

    summary = run.predict(config, workdir, ["photos/", "clip.mp4"], run.Options(output="poses.csv", draw="out/"))

Per input: read it (images: any OpenCV format, grayscale, RGBA and 16-bit
included; videos frame by frame), find the faces (MTCNN by default; or the
boxes of a CSV, or the whole image as a face crop), cut each with the
config's crop convention, predict in device batches, then write the rows
(`ROW_KEYS`, CSV or JSON lines), draw the axes, and for videos link faces
across frames (`video.Tracker`, optional smoothing). An input that cannot
be used (missing, empty, unreadable, not an image or video, too large, no
face) gets a message on stderr and a row whose `error` says why; the others
go on. `predict` raises only when no input at all could be read.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import pathlib
import sys
import time
import warnings
from typing import Any, Iterable, Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from jaxpose.inference import detect as detect_lib
from jaxpose.inference import draw as draw_lib
from jaxpose.inference import video as video_lib
from jaxpose.inference.mtcnn import Detections
from jaxpose.inference.pose import Face, PoseModel

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pgm", ".ppm", ".pbm")
ROW_KEYS = ("path", "frame", "x_min", "y_min", "x_max", "y_max", "score", "yaw", "pitch", "roll", "track", "error")
MAX_PIXELS = 1 << 28  # 268 megapixels (e.g. 16384 x 16384): about 0.8 GB decoded
NO_FACE = "no face found"


class InputError(Exception):
    """An input that cannot be used; the message says why (it goes into the row's `error`)."""


@dataclasses.dataclass
class Options:
    """How `predict` finds faces and what it writes (the `jaxpose predict` flags)."""

    detector: Any = "mtcnn"  # "mtcnn", "package.module:function", a callable or a Detector
    min_face_size: float = 20.0  # MTCNN: smallest face searched for, in pixels
    crops: bool = False  # the images are face crops: no detection, each resized whole
    boxes: str | None = None  # CSV path,x_min,y_min,x_max,y_max instead of detection
    camera: int | None = None  # webcam index
    output: str | None = None  # .csv or .jsonl
    draw: str | None = None  # folder for annotated images / videos
    cube: bool = False
    smooth: float = 0.0  # video: exponential smoothing of each track's pose, in [0, 1)
    max_frames: int | None = None  # per video / camera
    image_batch: int = 16  # images detected and predicted together
    frame_batch: int = 8  # video frames detected together
    max_pixels: int = MAX_PIXELS
    progress: bool = True
    print_faces: bool = True  # a line per face of an image on stdout


@dataclasses.dataclass
class Summary:
    inputs: int = 0
    processed: int = 0
    failed: int = 0
    frames: int = 0
    faces: int = 0
    rows: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        seconds = max(self.seconds, 1e-9)
        return (f"processed {self.processed} of {self.inputs} inputs ({self.failed} failed): "
                f"{self.frames} images/frames, {self.faces} faces in {self.seconds:.1f} s; "
                f"{self.frames / seconds:.1f} frames/s, {self.faces / seconds:.1f} faces/s")


@dataclasses.dataclass
class Frame:
    """One image or video frame: where it came from, its RGB pixels or why there are none, given boxes."""

    path: str
    index: int | None
    image: np.ndarray | None = None
    error: str | None = None
    boxes: np.ndarray | None = None


# --- reading images -------------------------------------------------------------------


def load_image(path: str | pathlib.Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file; InputError saying why it cannot be used.

    Grayscale is repeated over the channels, alpha dropped, 16-bit scaled to
    8 bits (v / 257: the full range onto 0-255), EXIF orientation applied.
    Images above max_pixels are refused from their header, before decoding.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise InputError("empty file")
    if (size := _header_size(path)) and size[0] * size[1] > max_pixels:
        raise InputError(f"image too large: {size[0]} x {size[1]} pixels (limit {max_pixels:,})")
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as error:
        raise InputError(f"cannot read the file ({error.strerror or error})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if image is None:
        raise InputError("not an image (OpenCV cannot decode it)")
    if image.dtype == np.uint16:
        image = np.round(image.astype(np.float32) / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InputError(f"unsupported pixel type {image.dtype} (8- or 16-bit images only)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _header_size(path: pathlib.Path) -> tuple[int, int] | None:
    """(width, height) from the file header (Pillow reads no pixels), or None if Pillow cannot tell."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's decompression-bomb warning: the limit is ours
            with Image.open(path) as image:
                return image.size
    except Image.DecompressionBombError:
        return (1 << 16, 1 << 16)  # beyond twice Pillow's own limit: certainly too large
    except Exception:  # not a format Pillow knows; OpenCV may still decode it
        return None


# --- the inputs -----------------------------------------------------------------------


@dataclasses.dataclass
class Source:
    """A unit of input: consecutive image files (kind "images"), one video, a camera, or an unusable path."""

    kind: str
    paths: list[pathlib.Path] = dataclasses.field(default_factory=list)
    boxes: list[np.ndarray | None] = dataclasses.field(default_factory=list)
    camera: int | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return f"camera:{self.camera}" if self.kind == "camera" else str(self.paths[0])


def plan_sources(inputs: Sequence[str | pathlib.Path], options: Options) -> list[Source]:
    """Inputs -> sources: folders expanded (images and videos, sorted, not recursive), runs of images merged."""
    if options.boxes:
        groups = detect_lib.read_boxes_by_image(options.boxes)
        return [Source("images", [p for p, _ in groups], [b for _, b in groups])]
    items: list[Source] = []
    for item in map(pathlib.Path, inputs):
        items.extend(_expand(item))
    if options.camera is not None:
        items.append(Source("camera", camera=options.camera))
    return _merge_images(items)


def _expand(item: pathlib.Path) -> list[Source]:
    if item.is_dir():
        suffixes = IMAGE_SUFFIXES + video_lib.VIDEO_SUFFIXES
        media = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not media:
            return [Source("error", [item], error="no image or video files in the folder")]
        return [_classify(p) for p in media]
    if not item.exists():
        return [Source("error", [item], error="no such file or folder")]
    return [_classify(item)]


def _classify(path: pathlib.Path) -> Source:
    if path.suffix.lower() in video_lib.VIDEO_SUFFIXES:
        return Source("video", [path])
    return Source("images", [path], [None])  # anything else is tried as an image


def _merge_images(items: list[Source]) -> list[Source]:
    merged: list[Source] = []
    for item in items:
        if item.kind == "images" and merged and merged[-1].kind == "images":
            merged[-1].paths.extend(item.paths)
            merged[-1].boxes.extend(item.boxes)
        else:
            merged.append(item)
    return merged


# --- results and where they go -----------------------------------------------------------


@dataclasses.dataclass
class FaceResult:
    """One face of a frame: box (None for a whole-image crop), score (NaN: none), pose (NaN: none), error, track."""

    box: np.ndarray | None
    score: float
    pose: np.ndarray
    error: str | None = None
    track: int | None = None


def make_row(frame: Frame, face: FaceResult | None, error: str | None = None) -> dict:
    """A `ROW_KEYS` dict; None where a value does not apply (no box, no score, no pose)."""
    row = dict.fromkeys(ROW_KEYS)
    row.update(path=frame.path, frame=frame.index, error=error)
    if face is not None:
        if face.box is not None:
            row.update(zip(ROW_KEYS[2:6], (float(v) for v in face.box)))
        row["score"] = None if math.isnan(face.score) else float(face.score)
        if np.all(np.isfinite(face.pose)):
            row.update(zip(("yaw", "pitch", "roll"), (float(v) for v in face.pose)))
        row["track"], row["error"] = face.track, face.error
    return row


class RowWriter:
    """Rows to a CSV (header ROW_KEYS) or JSON-lines file (one object with those keys per row), by suffix."""

    def __init__(self, path: str | pathlib.Path | None):
        self.path, self.count, self._file, self._csv = path, 0, None, None
        if path is None:
            return
        suffix = pathlib.Path(path).suffix.lower()
        if suffix not in (".csv", ".jsonl"):
            raise ValueError(f"--output {path}: use a .csv or .jsonl file")
        self._file = open(path, "w", newline="")
        if suffix == ".csv":
            self._csv = csv.writer(self._file)
            self._csv.writerow(ROW_KEYS)

    def write(self, row: dict) -> None:
        self.count += 1
        if self._csv is not None:
            self._csv.writerow([_cell(key, row[key]) for key in ROW_KEYS])
        elif self._file is not None:
            self._file.write(json.dumps({key: _rounded(key, row[key]) for key in ROW_KEYS}) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


_DECIMALS = {"x_min": 1, "y_min": 1, "x_max": 1, "y_max": 1, "score": 4, "yaw": 3, "pitch": 3, "roll": 3}


def _rounded(key: str, value):
    return round(value, _DECIMALS[key]) if key in _DECIMALS and value is not None else value


def _cell(key: str, value) -> str:
    if value is None:
        return ""
    return f"{value:.{_DECIMALS[key]}f}" if key in _DECIMALS else str(value)


def annotate(image: np.ndarray, faces: Sequence[FaceResult], cube: bool) -> np.ndarray:
    """A copy of the RGB image with each face's box, axes (and cube) and angles drawn."""
    out = image.copy()
    for face in faces:
        box = face.box if face.box is not None else np.array([0, 0, image.shape[1], image.shape[0]], np.float32)
        if face.error is None and np.all(np.isfinite(face.pose)):
            draw_lib.draw_pose(out, box, face.pose, cube=cube, label=draw_lib.pose_label(face.pose))
    if not faces:
        cv2.putText(out, NO_FACE, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 64, 64), 2, cv2.LINE_AA)
    return out


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- the work ---------------------------------------------------------------------------


class Runner:
    """Runs sources through detection and pose prediction, writing rows, drawings and the summary."""

    def __init__(self, model: PoseModel, detector: detect_lib.Detector | None, options: Options, writer: RowWriter):
        self.model, self.detector, self.options, self.writer = model, detector, options, writer
        self.summary = Summary()
        self.bar = tqdm(total=0, unit="frame", disable=None if options.progress else True, file=sys.stderr)

    def run(self, sources: Sequence[Source]) -> Summary:
        self.summary.inputs = sum(len(s.paths) if s.kind == "images" else 1 for s in sources)
        self.bar.total = sum(len(s.paths) for s in sources if s.kind == "images")
        start = time.perf_counter()
        try:
            for source in sources:
                if source.kind == "error":
                    self._fail(source.name, source.error)
                elif source.kind == "images":
                    self._images(source)
                else:
                    self._video(source)
        finally:
            self.summary.seconds = time.perf_counter() - start
            self.summary.rows = self.writer.count
            self.bar.close()
        return self.summary

    def _fail(self, name: str, error: str) -> None:
        print(f"skipped {name}: {error}", file=sys.stderr)
        self.summary.failed += 1
        self.writer.write(make_row(Frame(name, None), None, error))

    def _tick(self, frames: int, faces: int) -> None:
        self.summary.frames += frames
        self.summary.faces += faces
        self.bar.update(frames)
        elapsed = self.bar.format_dict.get("elapsed") or 0
        if elapsed > 0:
            self.bar.set_postfix_str(f"{self.summary.faces / elapsed:.1f} faces/s", refresh=False)

    # images ------------------------------------------------------------------------------

    def _images(self, source: Source) -> None:
        frames = (self._read(path, boxes) for path, boxes in zip(source.paths, source.boxes))
        for chunk in _chunks(frames, self.options.image_batch):
            for frame, faces in zip(chunk, self.faces(chunk)):
                self._emit_image(frame, faces)

    def _read(self, path: pathlib.Path, boxes: np.ndarray | None) -> Frame:
        try:
            return Frame(str(path), None, load_image(path, self.options.max_pixels), boxes=boxes)
        except InputError as error:
            return Frame(str(path), None, error=str(error))

    def _emit_image(self, frame: Frame, faces: list[FaceResult] | None) -> None:
        if frame.error is not None:
            self._fail(frame.path, frame.error)
            return
        self.summary.processed += 1
        if not faces:
            print(f"{frame.path}: {NO_FACE}", file=sys.stderr)
            self.writer.write(make_row(frame, None, NO_FACE))
        for face in faces:
            self.writer.write(make_row(frame, face))
            if self.options.print_faces and face.error is None:
                print(_face_line(frame.path, face))
            elif face.error is not None:
                print(f"{frame.path}: {face.error}", file=sys.stderr)
        if self.options.draw:
            self._draw_image(frame, faces)
        self._tick(1, sum(face.error is None for face in faces))

    def _draw_image(self, frame: Frame, faces: list[FaceResult]) -> None:
        out = pathlib.Path(self.options.draw) / pathlib.Path(frame.path).name
        out.parent.mkdir(parents=True, exist_ok=True)
        picture = cv2.cvtColor(annotate(frame.image, faces, self.options.cube), cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(out), picture):
            print(f"{frame.path}: could not write the drawing {out}", file=sys.stderr)

    # faces of a batch of frames ------------------------------------------------------------

    def faces(self, frames: Sequence[Frame]) -> list[list[FaceResult] | None]:
        """Per frame, its faces with poses (None for a frame that has no image)."""
        readable = [i for i, f in enumerate(frames) if f.error is None]
        found = self._detect([frames[i] for i in readable])
        todo, owners = [], []
        for i, detections in zip(readable, found):
            if isinstance(detections, str):  # the detector failed on this frame
                frames[i].error = detections
                continue
            for j, box in enumerate(detections.boxes):
                todo.append(Face(frames[i].image, None if self.options.crops else box))
                owners.append((i, j, detections))
        poses, errors = self.model.predict(todo)
        results: list[list[FaceResult] | None] = [None if f.error else [] for f in frames]
        for (i, j, detections), face, pose, error in zip(owners, todo, poses, errors):
            results[i].append(FaceResult(face.box, float(detections.scores[j]), pose, error))
        return results

    def _detect(self, frames: Sequence[Frame]) -> list[Detections | str]:
        if self.detector is None:  # given boxes, or whole-image crops
            return [_given(frame) for frame in frames]
        try:
            return self.detector.detect([f.image for f in frames])
        except Exception:  # a user's detector: find which frame fails, keep the others
            return [self._detect_one(f) for f in frames]

    def _detect_one(self, frame: Frame) -> Detections | str:
        try:
            return self.detector.detect([frame.image])[0]
        except Exception as error:
            return f"detector failed: {type(error).__name__}: {error}"

    # videos and cameras ------------------------------------------------------------------------

    def _video(self, source: Source) -> None:
        try:
            capture = video_lib.open_capture(source.camera if source.kind == "camera" else str(source.paths[0]))
        except video_lib.VideoError as error:
            self._fail(source.name, str(error))
            return
        self.bar.total += video_lib.frame_count(capture) or 0
        writer = self._video_writer(source, video_lib.frames_per_second(capture))
        frames = (Frame(source.name, i, image) for i, image in
                  enumerate(video_lib.read_frames(capture, self.options.max_frames)))
        tracker, count = video_lib.Tracker(self.options.smooth), 0
        try:
            for chunk in _chunks(frames, self.options.frame_batch):
                for frame, faces in zip(chunk, self.faces(chunk)):
                    self._emit_frame(frame, faces or [], tracker, writer)
                    count += 1
        except KeyboardInterrupt:  # a webcam runs until Ctrl-C; what was done is kept
            if source.kind != "camera":
                raise
        finally:
            capture.release()
            if writer is not None:
                writer.close()
        self._end_video(source, count)

    def _video_writer(self, source: Source, fps: float) -> video_lib.VideoWriter | None:
        if not self.options.draw:
            return None
        name = f"camera{source.camera}.mp4" if source.kind == "camera" else source.paths[0].name
        return video_lib.VideoWriter(pathlib.Path(self.options.draw) / name, fps)

    def _emit_frame(self, frame: Frame, faces: list[FaceResult], tracker: video_lib.Tracker, writer) -> None:
        boxes = np.array([f.box for f in faces], np.float32).reshape(-1, 4)
        ids, poses = tracker.update(boxes, np.array([f.pose for f in faces], np.float32).reshape(-1, 3))
        for face, track, pose in zip(faces, ids, poses):
            face.track, face.pose = int(track), pose
            self.writer.write(make_row(frame, face))
        if not faces:
            self.writer.write(make_row(frame, None, frame.error or NO_FACE))
        if writer is not None:
            writer.write(annotate(frame.image, faces, self.options.cube))
        self._tick(1, sum(face.error is None for face in faces))

    def _end_video(self, source: Source, count: int) -> None:
        if count == 0:
            self._fail(source.name, "no frame could be read")
            return
        self.summary.processed += 1
        print(f"{source.name}: {count} frames", file=sys.stderr)


def _detector(options: Options) -> detect_lib.Detector:
    if isinstance(options.detector, str) and options.detector == "mtcnn":
        return detect_lib.load_detector("mtcnn", min_face_size=options.min_face_size)
    return detect_lib.load_detector(options.detector)


def _given(frame: Frame) -> Detections:
    """The faces of a frame without a detector: its CSV boxes, or the whole image as one face crop."""
    if frame.boxes is not None:
        boxes = np.asarray(frame.boxes, np.float32).reshape(-1, 4)
    else:
        boxes = np.array([[0, 0, frame.image.shape[1], frame.image.shape[0]]], np.float32)
    return Detections(boxes, np.full(len(boxes), np.nan, np.float32))


def _face_line(path: str, face: FaceResult) -> str:
    yaw, pitch, roll = face.pose
    where = "" if face.box is None else "  box " + ",".join(f"{v:.0f}" for v in face.box)
    return f"{path}{where}  yaw {yaw:7.2f}  pitch {pitch:7.2f}  roll {roll:7.2f}"


def predict(config: Any, workdir: str | pathlib.Path, inputs: Sequence[str | pathlib.Path],
            options: Options | None = None, ensemble: Sequence[str | pathlib.Path] = (),
            model: PoseModel | None = None) -> Summary:
    """Runs `jaxpose predict` (see the module docstring); RuntimeError when no input could be processed.

    model: an already restored `PoseModel(config, workdir, ensemble)` to reuse (repeated calls).
    """
    options = options or Options()
    if options.boxes and (inputs or options.camera is not None):
        raise ValueError("give image files/folders/videos or --boxes CSV, not both (the CSV names the images)")
    if options.boxes and options.crops:
        raise ValueError("--crops and --boxes exclude each other (crops are whole images)")
    sources = plan_sources(inputs, options)
    if not sources:
        raise ValueError("no images: name image files or folders, videos, --camera N, or --boxes CSV "
                         "(path,x_min,y_min,x_max,y_max)")
    detector = None if options.boxes or options.crops else _detector(options)
    writer = RowWriter(options.output)  # before the slow part: a wrong suffix fails at once
    try:
        model = model or PoseModel(config, workdir, ensemble)
        summary = Runner(model, detector, options, writer).run(sources)
    finally:
        writer.close()
    if summary.processed == 0:
        raise RuntimeError(f"none of the {summary.inputs} inputs could be processed (reasons above)")
    return summary
