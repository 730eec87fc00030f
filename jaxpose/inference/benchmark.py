"""Face detectors compared on the real samples, and `jaxpose predict` throughput (README, BENCHMARKS.md).

    python -m jaxpose.inference.benchmark detectors [--testdata ../shared/testdata]
    python -m jaxpose.inference.benchmark predict --config experiments/fsanet_caps_1x1.py --workdir W \\
        [--config.key=value ...] [--testdata ../shared/testdata]

detectors: every detector available here on the 16 AFLW2000 images and the
BIWI frame: faces found (a detection with IoU >= 0.4 with the labelled face:
the landmark box, or BIWI's projected 160 mm head box) and milliseconds per
image (mean over the 17 images, after one warm-up pass that compiles).
Candidates: jaxpose's MTCNN (one image at a time, and the 16 AFLW2000 images
in batches); facenet-pytorch's MTCNN (torch CPU; `pip install --no-deps
facenet-pytorch==2.6.0`); OpenCV's Haar cascades, frontal + profile (both
profile sides; only OpenCV 4.x wheels ship them: put an
opencv-python-headless 4.x on PYTHONPATH); dlib's HOG detector (`pip install
dlib-bin`).

predict: the whole `jaxpose predict` path (read, detect, crop, predict)
on the AFLW2000 images (faces/s) and on a 640 x 480 video made from the BIWI
frame (frames/s), after a warm-up run, progress bar and outputs off.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
import tempfile
import time
import types
from typing import Callable

import cv2
import numpy as np

from jaxpose.inference import detect, mtcnn

TESTDATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "testdata"


def samples(testdata: pathlib.Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, RGB image, labelled face box) of the 16 AFLW2000 images and the BIWI frame."""
    import scipy.io

    from input_pipeline import crops
    from input_pipeline.datasets import biwi

    out = []
    for path in sorted((testdata / "aflw2000").glob("*.jpg")):
        box = crops.landmark_box(scipy.io.loadmat(path.with_suffix(".mat"))["pt2d"].T, rule="fsanet")
        out.append((path.name, _rgb(path), box))
    folder = testdata / "biwi" / "hpdb" / "01"
    _, centre = biwi.read_pose(folder / "frame_00003_pose.txt")
    box = crops.biwi_head_box(centre, **biwi.read_calibration(folder / "rgb.cal"))
    out.append(("biwi/01/frame_00003", _rgb(folder / "frame_00003_rgb.png"), box))
    return out


def _rgb(path: pathlib.Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


# --- the candidates: image -> (N, 4) boxes ------------------------------------------------------


def torchvision_standin(torch) -> types.ModuleType:
    """A `torchvision` module with what facenet-pytorch's detection imports (ops.boxes.batched_nms, and
    transforms.functional.to_tensor, unused by detection), for torch installs without torchvision (the PyPI
    torchvision needs the CUDA torch build). batched_nms as documented: per category, greedy by score, a box
    is dropped when its IoU with a kept one exceeds the threshold; kept indices by decreasing score.
    Written apart from `mtcnn.nms`, so that the parity test checks one against the other."""

    def batched_nms(boxes, scores, idxs, iou_threshold):
        # All pairwise IoUs at once (numpy), then one pass in score order: boxes of the same category that
        # overlap a kept box more than the threshold are removed. The detector's own NMS is a separate loop.
        order = np.argsort(-scores.numpy(), kind="stable")
        b, c = boxes.numpy()[order], idxs.numpy()[order]
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        inter = np.prod(np.clip(np.minimum(b[:, None, 2:], b[None, :, 2:]) - np.maximum(b[:, None, :2], b[None, :, :2]),
                                0, None), axis=-1)
        overlap = (inter / (area[:, None] + area[None, :] - inter) > iou_threshold) & (c[:, None] == c[None, :])
        later, removed = np.triu(np.ones((len(b), len(b)), bool), k=1), np.zeros(len(b), bool)
        for i in range(len(b)):
            if not removed[i]:
                removed |= overlap[i] & later[i]
        return torch.as_tensor(order[~removed], dtype=torch.long)

    root = types.ModuleType("torchvision")
    root.ops = types.ModuleType("torchvision.ops")
    root.ops.boxes = types.ModuleType("torchvision.ops.boxes")
    root.ops.boxes.batched_nms = batched_nms
    root.transforms = types.ModuleType("torchvision.transforms")
    root.transforms.functional = types.ModuleType("torchvision.transforms.functional")
    root.transforms.functional.to_tensor = lambda picture: torch.as_tensor(np.asarray(picture)).permute(2, 0, 1) / 255
    return root


def standin_modules(torch) -> dict[str, types.ModuleType]:
    """{module name: module} to put into sys.modules when torchvision is not installed."""
    root = torchvision_standin(torch)
    return {"torchvision": root, "torchvision.ops": root.ops, "torchvision.ops.boxes": root.ops.boxes,
            "torchvision.transforms": root.transforms, "torchvision.transforms.functional": root.transforms.functional}


def facenet_detector() -> Callable[[np.ndarray], np.ndarray] | None:
    if importlib.util.find_spec("facenet_pytorch") is None or importlib.util.find_spec("torch") is None:
        return None
    import torch

    if importlib.util.find_spec("torchvision") is None:
        sys.modules.update(standin_modules(torch))
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
    from facenet_pytorch.models.utils.detect_face import detect_face

    nets = PNet(), RNet(), ONet()

    def run(image: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            boxes, _ = detect_face(image, 20, *nets, [0.6, 0.7, 0.7], 0.709, "cpu")
        return np.asarray(boxes[0], np.float32).reshape(-1, 5)[:, :4]

    return run


def haar_detector() -> Callable[[np.ndarray], np.ndarray] | None:
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not folder:
        return None  # OpenCV 5.x wheels ship no cascades
    frontal = cv2.CascadeClassifier(folder + "haarcascade_frontalface_default.xml")
    profile = cv2.CascadeClassifier(folder + "haarcascade_profileface.xml")

    def run(image: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        width, found = gray.shape[1], []
        for cascade, flipped in ((frontal, False), (profile, False), (profile, True)):
            for x, y, w, h in cascade.detectMultiScale(gray[:, ::-1] if flipped else gray, 1.1, 5, minSize=(20, 20)):
                x = width - x - w if flipped else x  # the profile cascade sees one side: run it mirrored too
                found.append([x, y, x + w, y + h])
        return np.array(found, np.float32).reshape(-1, 4)

    return run


def dlib_detector() -> Callable[[np.ndarray], np.ndarray] | None:
    if importlib.util.find_spec("dlib") is None:
        return None
    import dlib

    hog = dlib.get_frontal_face_detector()

    def run(image: np.ndarray) -> np.ndarray:
        return np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in hog(image, 1)], np.float32).reshape(-1, 4)

    return run


def compare_detectors(testdata: pathlib.Path) -> list[dict]:
    """A row per available detector: AFLW2000 faces found (of 16), BIWI found, ms per image."""
    data = samples(testdata)
    ours = mtcnn.MTCNN()
    candidates = {"jaxpose MTCNN (JAX/Flax, CPU)": lambda image: ours(image).boxes,
                  "facenet-pytorch MTCNN (torch CPU)": facenet_detector(),
                  "OpenCV 4.x Haar frontal + profile": haar_detector(), "dlib HOG (frontal)": dlib_detector()}
    rows = [_measure(name, fn, data) for name, fn in candidates.items() if fn is not None]
    aflw = [image for name, image, _ in data if name.endswith(".jpg")]
    ours.detect(aflw)  # compile the batches
    start = time.perf_counter()
    batched = ours.detect(aflw)
    ms = (time.perf_counter() - start) * 1000 / len(aflw)
    found = sum(detect.match_box(box, d.boxes, 0.4) is not None for (_, _, box), d in zip(data, batched))
    rows.append({"detector": f"jaxpose MTCNN, the 16 AFLW2000 images in batches of {ours.batch_size}",
                 "aflw2000": found, "biwi": "", "ms_per_image": ms})
    return rows


def _measure(name: str, fn: Callable, data) -> dict:
    for _, image, _ in data:
        fn(image)  # warm-up: compilations, caches
    start, found = time.perf_counter(), []
    for _, image, _ in data:
        found.append(fn(image))
    ms = (time.perf_counter() - start) * 1000 / len(data)
    hits = [detect.match_box(box, boxes, 0.4) is not None for (_, _, box), boxes in zip(data, found)]
    return {"detector": name, "aflw2000": sum(hits[:-1]), "biwi": "yes" if hits[-1] else "no", "ms_per_image": ms}


# --- jaxpose predict throughput ---------------------------------------------------------------------


def predict_throughput(config, workdir: str, testdata: pathlib.Path, repeats: int = 4, frames: int = 48) -> dict:
    """faces/s on the AFLW2000 images (x repeats) and frames/s on a BIWI-frame video, after a warm-up."""
    from jaxpose.inference import run
    from jaxpose.inference.pose import PoseModel

    model = PoseModel(config, workdir)
    options = run.Options(progress=False, print_faces=False)
    images = sorted((testdata / "aflw2000").glob("*.jpg"))
    run.predict(config, workdir, images, options, model=model)  # warm-up: compilations
    photos = run.predict(config, workdir, images * repeats, options, model=model)
    with tempfile.TemporaryDirectory() as tmp:
        clip = pathlib.Path(tmp) / "clip.mp4"
        frame = cv2.imread(str(testdata / "biwi" / "hpdb" / "01" / "frame_00003_rgb.png"))
        writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25, frame.shape[1::-1])
        for i in range(frames):
            writer.write(np.roll(frame, 2 * (i % 20), axis=1))
        writer.release()
        run.predict(config, workdir, [clip], run.Options(progress=False, max_frames=16), model=model)
        clip_run = run.predict(config, workdir, [clip], run.Options(progress=False), model=model)
    return {"images": photos.frames, "faces": photos.faces, "faces_per_s": photos.faces / photos.seconds,
            "images_per_s": photos.frames / photos.seconds, "video_frames": clip_run.frames,
            "frames_per_s": clip_run.frames / clip_run.seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("detectors", "predict"))
    parser.add_argument("--testdata", default=str(TESTDATA), help=f"default {TESTDATA}")
    parser.add_argument("--config", help="predict: the experiment of the checkpoint")
    parser.add_argument("--workdir", help="predict: a trained or converted checkpoint")
    args, overrides = parser.parse_known_args(argv)
    testdata = pathlib.Path(args.testdata)
    if args.what == "detectors":
        print("| detector | AFLW2000 faces found (of 16) | BIWI frame | ms / image |\n|---|---|---|---|")
        for row in compare_detectors(testdata):
            print(f"| {row['detector']} | {row['aflw2000']} | {row['biwi']} | {row['ms_per_image']:.0f} |")
        return 0
    from jaxpose.config import load_config, override_args

    config = load_config(args.config, override_args(overrides))
    result = predict_throughput(config, args.workdir, testdata)
    print(f"images: {result['images']} AFLW2000 photos (450 x 450), {result['faces']} faces: "
          f"{result['faces_per_s']:.1f} faces/s ({result['images_per_s']:.1f} images/s); "
          f"video: {result['video_frames']} frames of 640 x 480: {result['frames_per_s']:.1f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
