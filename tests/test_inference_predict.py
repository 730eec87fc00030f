"""`jaxpose predict` on raw photos and videos (jaxpose.inference.run) with the official FSA-Net weights:
accuracy from full AFLW2000 images, outputs, drawings, videos and tracks, user detectors, bad input."""

import csv
import json
import pathlib

import cv2
import numpy as np
import pytest
from test_inference_mtcnn import aflw, biwi_frame  # noqa: F401  (module fixtures)

from jaxpose import cli, pretrained
from jaxpose.config import load_config
from jaxpose.inference import detect, run, video
from jaxpose.inference.pose import PoseModel, prepare_face

WEIGHTS = "fsanet_capsule_3_16_2_21_5"
EXPERIMENT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "fsanet_caps_1x1.py"


@pytest.fixture(scope="module")
def converted(testdata, tmp_path_factory):
    """(workdir, `--config.*` overrides) of the converted official FSA-Caps 1x1 weights."""
    workdir = tmp_path_factory.mktemp("fsanet") / "w"
    pretrained.convert("fsanet-keras", testdata / "fsanet_keras" / f"{WEIGHTS}.h5", workdir)
    return workdir, json.loads((workdir / "converted.json").read_text())["overrides"]


@pytest.fixture(scope="module")
def config(converted):
    overrides = dict(flag.removeprefix("--config.").split("=", 1) for flag in converted[1])
    return load_config(EXPERIMENT, overrides)


@pytest.fixture(scope="module")
def model(config, converted):
    return PoseModel(config, converted[0])


def predict_cli(converted, *args) -> int:
    workdir, overrides = converted
    argv = ["predict", "--config", EXPERIMENT, "--workdir", workdir, *overrides, "--no_progress", *args]
    return cli.main([str(a) for a in argv])


def read_csv(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == run.ROW_KEYS
        return list(reader)


def pose_of(row: dict) -> np.ndarray:
    return np.array([float(row[k]) for k in ("yaw", "pitch", "roll")])


def box_of(row: dict) -> np.ndarray:
    return np.array([float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max")], np.float32)


def test_raw_photo_accuracy_output_and_drawings(converted, aflw, tmp_path, capsys):  # noqa: F811
    """The 16 full AFLW2000 photos (not crops): MTCNN boxes, the FSA-Net crop around them, one batch.

    Each image's labelled face is the detection overlapping its landmark box
    most; the mean MAE stays below 6 degrees (4.36 from the landmark boxes).
    """
    paths, images, landmark_boxes, labels = aflw
    output, drawn = tmp_path / "poses.csv", tmp_path / "drawn"
    assert predict_cli(converted, *paths, "--output", output, "--draw", drawn, "--cube") == 0
    rows = read_csv(output)
    errors, found = [], 0
    for path, box, label in zip(paths, landmark_boxes, labels):
        faces = [r for r in rows if r["path"] == str(path) and not r["error"]]
        index = detect.match_box(box, np.array([box_of(r) for r in faces]).reshape(-1, 4), min_iou=0.4)
        if index is not None:
            found += 1
            errors.append(np.abs(pose_of(faces[index]) - label))
            assert faces[index]["frame"] == "" and 0.9 < float(faces[index]["score"]) <= 1
    mae = np.mean(errors, axis=0)
    with capsys.disabled():  # the number the README states
        print(f"\nraw photos: {found} of 16 faces, MAE yaw {mae[0]:.2f} pitch {mae[1]:.2f} roll {mae[2]:.2f} "
              f"mean {mae.mean():.2f} degrees")
    assert found >= 15 and mae.mean() < 6.0
    out = capsys.readouterr().out
    assert "processed 16 of 16 inputs (0 failed)" in out and f"wrote {len(rows)} rows to {output}" in out
    for path, image in zip(paths, images):
        picture = cv2.imread(str(drawn / path.name))
        assert picture.shape == image.shape and not np.array_equal(picture[..., ::-1], image)


def test_given_boxes_and_face_crops(converted, aflw, tmp_path):  # noqa: F811
    """--boxes CSV and --crops (the existing ways) give the poses of the same crops as the Python API."""
    paths, images, landmark_boxes, _ = aflw
    boxes_csv = tmp_path / "faces.csv"
    boxes_csv.write_text("path,x_min,y_min,x_max,y_max\n" + "".join(
        f"{p},{','.join(f'{v:g}' for v in b)}\n" for p, b in zip(paths[:3], landmark_boxes[:3])))
    assert predict_cli(converted, "--boxes", boxes_csv, "--output", tmp_path / "boxes.csv") == 0
    rows = read_csv(tmp_path / "boxes.csv")
    assert [r["path"] for r in rows] == [str(p) for p in paths[:3]] and all(r["score"] == "" for r in rows)
    np.testing.assert_allclose([box_of(r) for r in rows], landmark_boxes[:3], atol=0.06)
    # The model's input for each box, saved as a crop, gives the same pose with --crops.
    config = load_config(EXPERIMENT, dict(f.removeprefix("--config.").split("=", 1) for f in converted[1]))
    for i in range(3):
        crop = prepare_face(images[i], landmark_boxes[i], config.data)  # BGR (FSA-Net)
        cv2.imwrite(str(tmp_path / f"crop{i}.png"), crop)
    crops = [tmp_path / f"crop{i}.png" for i in range(3)]
    assert predict_cli(converted, *crops, "--crops", "--output", tmp_path / "crops.jsonl") == 0
    records = [json.loads(line) for line in (tmp_path / "crops.jsonl").read_text().splitlines()]
    assert [list(r) for r in records] == [list(run.ROW_KEYS)] * 3 and records[0]["x_min"] is None
    np.testing.assert_allclose([[r["yaw"], r["pitch"], r["roll"]] for r in records],
                               [pose_of(r) for r in rows], atol=2e-3)


def center_box(image: np.ndarray) -> np.ndarray:
    """A user's detector for the CLI test: one box (with score) in the middle of the image."""
    h, w = image.shape[:2]
    return np.array([[0.3 * w, 0.25 * h, 0.7 * w, 0.75 * h, 0.5]])


def test_user_detector(converted, model, config, aflw, tmp_path):  # noqa: F811
    paths = aflw[0][:2]
    assert predict_cli(converted, *paths, "--detector", "test_inference_predict:center_box",
                       "--output", tmp_path / "user.csv") == 0
    rows = read_csv(tmp_path / "user.csv")
    assert [r["score"] for r in rows] == ["0.5000", "0.5000"]
    np.testing.assert_allclose(box_of(rows[0]), [135, 112.5, 315, 337.5])

    def flaky(image):  # fails on the second image only
        if np.array_equal(image, aflw[1][1]):
            raise RuntimeError("model server down")
        return [[100, 100, 300, 300]]

    options = run.Options(detector=flaky, output=str(tmp_path / "flaky.csv"), progress=False)
    summary = run.predict(config, converted[0], paths, options, model=model)
    rows = read_csv(tmp_path / "flaky.csv")
    assert summary.processed == 1 and summary.failed == 1
    assert rows[1]["error"] == "detector failed: RuntimeError: model server down" and rows[0]["yaw"]


def _bad_inputs(folder: pathlib.Path, image: np.ndarray) -> dict[str, pathlib.Path]:
    """A folder of inputs, good and bad, made from one RGB face image."""
    bgr = image[..., ::-1]
    files = {name: folder / name for name in ("good.png", "gray.png", "rgba.png", "sixteen.png", "noface.png",
                                               "big.png", "empty.jpg", "text.jpg", "notes.txt", "broken.mp4")}
    cv2.imwrite(str(files["good.png"]), bgr)
    cv2.imwrite(str(files["gray.png"]), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(files["rgba.png"]), np.dstack([bgr, np.full(image.shape[:2], 128, np.uint8)]))
    cv2.imwrite(str(files["sixteen.png"]), bgr.astype(np.uint16) * 257)
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    cv2.imwrite(str(files["noface.png"]), cv2.GaussianBlur(noise, (0, 0), 3))
    cv2.imwrite(str(files["big.png"]), np.zeros((1000, 1200, 3), np.uint8))
    files["empty.jpg"].write_bytes(b"")
    files["text.jpg"].write_text("not a picture")
    files["notes.txt"].write_text("a note")
    files["broken.mp4"].write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    return files


def test_bad_inputs_are_reported_and_skipped(converted, model, config, aflw, tmp_path, capsys):  # noqa: F811
    files = _bad_inputs(tmp_path, aflw[1][0])
    inputs = [*files.values(), tmp_path / "missing.jpg"]
    output = tmp_path / "rows.jsonl"
    options = run.Options(output=str(output), draw=str(tmp_path / "drawn"), max_pixels=1_000_000, progress=False)
    summary = run.predict(config, converted[0], inputs, options, model=model)
    rows = {pathlib.Path(r["path"]).name: r for r in map(json.loads, output.read_text().splitlines())}
    reasons = {name: rows[name]["error"] for name in rows}
    assert reasons["empty.jpg"] == "empty file" and reasons["missing.jpg"] == "no such file or folder"
    assert reasons["text.jpg"] == reasons["notes.txt"] == "not an image (OpenCV cannot decode it)"
    assert reasons["big.png"] == "image too large: 1200 x 1000 pixels (limit 1,000,000)"
    assert reasons["broken.mp4"].startswith("cannot open video") and reasons["noface.png"] == "no face found"
    assert summary.processed == 5 and summary.failed == 6 and summary.inputs == 11
    good = np.array([rows["good.png"][k] for k in ("yaw", "pitch", "roll")])
    for name in ("rgba.png", "sixteen.png"):  # alpha dropped, 16 bits scaled back: the very same pixels
        np.testing.assert_allclose([rows[name][k] for k in ("yaw", "pitch", "roll")], good, atol=1e-3)
    assert rows["gray.png"]["yaw"] is not None and rows["gray.png"]["error"] is None
    err = capsys.readouterr().err
    assert f"skipped {files['empty.jpg']}: empty file" in err and f"{files['noface.png']}: no face found" in err
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == ["good.png", "gray.png", "noface.png",
                                                                     "rgba.png", "sixteen.png"]
    # Nothing usable: an error naming the count, after a message per input (camera 7 does not exist here).
    bad = run.Options(camera=7, progress=False)
    with pytest.raises(RuntimeError, match="none of the 3 inputs could be processed"):
        run.predict(config, converted[0], [files["empty.jpg"], files["broken.mp4"]], bad, model=model)
    assert "skipped camera:7: cannot open camera 7" in capsys.readouterr().err
    assert predict_cli(converted, files["text.jpg"]) == 1
    assert "jaxpose: error: none of the 1 inputs could be processed" in capsys.readouterr().err


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "locked.jpg"
    path.write_bytes(b"\xff\xd8 some bytes")

    def denied(*args, **kwargs):  # as root, chmod cannot make a file unreadable: the read fails here instead
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(np, "fromfile", denied)
    with pytest.raises(run.InputError, match=r"cannot read the file \(Permission denied\)"):
        run.load_image(path)


def _write_video(path: pathlib.Path, frame: np.ndarray, count: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, frame.shape[1::-1])
    for i in range(count):
        writer.write(np.roll(frame[..., ::-1], 3 * i, axis=1))  # the head moves right 3 px a frame
    writer.release()


def test_video_tracks_smoothing_and_drawing(converted, model, config, biwi_frame, tmp_path):  # noqa: F811
    clip = tmp_path / "clip.mp4"
    _write_video(clip, biwi_frame[0], 6)
    raw, smooth = tmp_path / "raw.csv", tmp_path / "smooth.csv"
    options = run.Options(output=str(raw), frame_batch=3, progress=False)  # two detection batches
    assert run.predict(config, converted[0], [clip], options, model=model).frames == 6
    options = run.Options(output=str(smooth), smooth=0.5, frame_batch=3, draw=str(tmp_path / "drawn"), progress=False)
    run.predict(config, converted[0], [clip], options, model=model)
    faces = [[r for r in read_csv(f) if r["track"] == "0"] for f in (raw, smooth)]
    assert [r["frame"] for r in faces[0]] == [str(i) for i in range(6)] == [r["frame"] for r in faces[1]]
    assert all(abs(box_of(r)[0] - box_of(faces[0][0])[0] - 3 * i) < 4 for i, r in enumerate(faces[0]))
    predicted, smoothed = (np.array([pose_of(r) for r in f]) for f in faces)
    expected = [predicted[0]]
    for pose in predicted[1:]:
        expected.append(0.5 * expected[-1] + 0.5 * pose)
    np.testing.assert_allclose(smoothed, expected, atol=2e-3)
    capture = cv2.VideoCapture(str(tmp_path / "drawn" / "clip.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 6 and capture.get(cv2.CAP_PROP_FRAME_WIDTH) == 640
    capture.release()


def test_tracker_by_hand():
    tracker = video.Tracker(smooth=0.5, max_gap=1)
    ids, poses = tracker.update(np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([[10.0, 0, 0], [0, 0, 0]]))
    assert ids.tolist() == [0, 1]
    # The faces swap places in the list; IoU keeps their tracks. Track 0 is smoothed: 0.5 * 10 + 0.5 * 20.
    ids, poses = tracker.update(np.array([[51, 50, 61, 60], [1, 0, 11, 10]]), np.array([[4.0, 0, 0], [20.0, 0, 0]]))
    assert ids.tolist() == [1, 0] and poses[:, 0].tolist() == [2.0, 15.0]
    tracker.update(np.zeros((0, 4)), np.zeros((0, 3)))
    tracker.update(np.zeros((0, 4)), np.zeros((0, 3)))  # two frames unseen > max_gap: the tracks end
    ids, poses = tracker.update(np.array([[0, 0, 10, 10]]), np.array([[30.0, 0, 0]]))
    assert ids.tolist() == [2] and poses[0, 0] == 30.0
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        video.Tracker(smooth=1.0)


def test_argument_errors(converted, capsys, tmp_path):
    for args, message in [(["x.jpg", "--boxes", "b.csv"], "not both"), (["--crops", "--boxes", "b.csv"], "exclude"),
                          ([], "no images: name image files or folders"),
                          (["x.jpg", "--output", tmp_path / "a.txt"], "use a .csv or .jsonl file"),
                          (["x.jpg", "--detector", "nowhere:fn"], "detector 'nowhere:fn': No module named")]:
        assert predict_cli(converted, *args) == 1
        assert message in capsys.readouterr().err, args
