"""BIWI 8-fold cross-validation, the user's split lists, FSA-Net's detector protocol and the fold summary.

Builds run on copies (symlinks) of the sample frame of ../shared/testdata/biwi
arranged as several sequences and frames; the pose and geometric box of every
copy are those of the sample frame.
"""

from __future__ import annotations

import json
import math
import pathlib

import cv2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import tiny_config
from input_pipeline import crops
from input_pipeline.datasets import biwi, registry
from input_pipeline.datasets.build import build_dataset
from jaxpose import cli, crossval, train
from jaxpose.config import apply_overrides, load_sweep

EXPERIMENT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "hybrid_biwi_cv8.py"


def fake_biwi(testdata: pathlib.Path, root: pathlib.Path, sequences, frames=(3,)) -> pathlib.Path:
    """root/hpdb/<seq>/frame_<n>_{rgb.png,pose.txt} + rgb.cal, all links to the sample frame of sequence 01."""
    sample = testdata / "biwi" / "hpdb" / "01"
    for sequence in sequences:
        folder = root / "hpdb" / sequence
        folder.mkdir(parents=True)
        (folder / "rgb.cal").symlink_to(sample / "rgb.cal")
        for number in frames:
            for suffix in ("rgb.png", "pose.txt"):
                (folder / f"frame_{number:05d}_{suffix}").symlink_to(sample / f"frame_00003_{suffix}")
    return root


def records(name: str, data_dir: pathlib.Path, split: str) -> list[dict]:
    decoders = {"image": tfds.decode.SkipDecoding()}
    source = registry.get_builder(name, data_dir).as_data_source(decoders=decoders)[split]
    return [source[i] for i in range(len(source))]


def names(rows: list[dict]) -> list[str]:
    return sorted(row["filename"].decode() if isinstance(row["filename"], bytes) else row["filename"] for row in rows)


# --- the folds ----------------------------------------------------------------------------


def test_cv8_folds_partition_the_sequences_and_the_people():
    folds = biwi.CV8_FOLDS
    assert len(folds) == 8 and all(len(fold) == 3 for fold in folds)
    assert sorted(s for fold in folds for s in fold) == list(biwi.SEQUENCES)
    assert folds[0] == ("01", "10", "23")  # the hybrid code's published test split (tools/BIWI_test.txt)
    people = [{biwi.SUBJECTS[s] for s in fold} for fold in folds]
    # 24 sequences of 20 people, none in two folds
    assert sum(len(p) for p in people) == len(set().union(*people)) == 20
    for k, fold in enumerate(folds, 1):
        config = biwi.config_from_name(f"cv8_fold{k}")
        assert config.test_sequences == fold and not config.detections and not config.split_lists
    assert biwi.config_from_name("cv8_fold4_detections").detections
    for bad in ("cv8_fold0", "cv8_fold9", "cv8_fold10", "cv8", "lists_test_01", "protocol1_test_01"):
        with pytest.raises(ValueError, match=f"unknown biwi config '{bad}'.*cv8_fold1 ... cv8_fold8, lists"):
            biwi.config_from_name(bad)


def test_cv8_fold_builds_split_by_sequence(testdata, tmp_path):
    source = fake_biwi(testdata, tmp_path / "src", ["01", "02"])
    report = build_dataset("biwi/cv8_fold1", source, tmp_path / "data")
    assert report["splits"] == {"test": 1, "train": 1} and report["skipped"] == {}
    assert report["test_sequences"] == ["01", "10", "23"] and len(report["train_sequences"]) == 21
    assert report["protocol"].startswith("8-fold cross-validation: test sequences 01 10 23")
    assert names(records("biwi/cv8_fold1", tmp_path / "data", "test")) == ["hpdb/01/frame_00003_rgb.png"]
    report = build_dataset("biwi/cv8_fold2", source, tmp_path / "data")
    assert names(records("biwi/cv8_fold2", tmp_path / "data", "test")) == ["hpdb/02/frame_00003_rgb.png"]
    assert names(records("biwi/cv8_fold2", tmp_path / "data", "train")) == ["hpdb/01/frame_00003_rgb.png"]


def test_the_experiment_sweeps_the_eight_folds_each_scored_on_its_own_test_split():
    sweep = load_sweep(EXPERIMENT)
    assert sweep == [{"data.name": f"biwi/cv8_fold{k}"} for k in range(1, 9)]
    from jaxpose.config import load_config

    config = load_config(EXPERIMENT)
    assert config.eval_on == () and (config.data.train_split, config.data.eval_split) == ("train", "test")
    assert not config.data.flip and config.data.blur_prob == 0  # the hybrid code's BIWI_multi: no augmentation


# --- the user's split lists ------------------------------------------------------------------


def test_split_lists_assign_frames_and_count_the_rest(testdata, tmp_path, capsys):
    source = fake_biwi(testdata, tmp_path / "src", ["01", "02", "23"], frames=(3, 4))
    train_list, test_list = tmp_path / "BIWI_train.txt", tmp_path / "BIWI_test.txt"
    train_list.write_bytes(b"02/frame_00003\r\n02/frame_00004\r\n")  # the official files have CRLF lines
    test_list.write_text("01/frame_00003\n23/frame_00003\n23/frame_00099")
    lists = {"train": train_list, "test": test_list}
    report = build_dataset("biwi/lists", source, tmp_path / "data", split_lists=lists)
    assert report["splits"] == {"train": 2, "test": 2}
    assert report["split_lists"]["test"] == {"listed": 3, "found": 2, "missing": 1,
                                             "missing_examples": ["23/frame_00099"]}
    assert report["split_lists"]["frames_in_no_list"] == 2  # 01/frame_00004, 23/frame_00004
    assert report["inputs"]["split_list_test"]["sha256"] == biwi.sha256(test_list)
    assert "split lists: train 2 of 2 listed, test 2 of 3 listed found; 2 frames of the source in no list" in (
        capsys.readouterr().out)
    assert names(records("biwi/lists", tmp_path / "data", "test")) == [
        "hpdb/01/frame_00003_rgb.png", "hpdb/23/frame_00003_rgb.png"]
    build_dataset("biwi/lists", source, tmp_path / "data", split_lists=lists)  # same lists: reused
    test_list.write_text("01/frame_00003\n")
    with pytest.raises(ValueError, match="built from another split_list_test .* give --overwrite"):
        build_dataset("biwi/lists", source, tmp_path / "data", split_lists=lists)
    report = build_dataset("biwi/lists", source, tmp_path / "data", split_lists=lists, overwrite=True)
    assert report["splits"] == {"train": 2, "test": 1}


def test_split_list_errors_name_the_file_and_line(testdata, tmp_path):
    source = fake_biwi(testdata, tmp_path / "src", ["01"])
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("01/frame_00003\n")
    bad.write_text("01/frame_00003\nimage00042\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: 'image00042' names no BIWI frame"):
        build_dataset("biwi/lists", source, tmp_path / "a", split_lists={"test": bad})
    bad.write_text("01/frame_00003\n\n01/frame_00003\n")
    with pytest.raises(ValueError, match=r"bad\.txt:3: '01/frame_00003' is listed twice"):
        build_dataset("biwi/lists", source, tmp_path / "b", split_lists={"test": bad})
    with pytest.raises(ValueError, match=r"good\.txt and .*good\.txt both list 1 frames, e\.g\. 01/frame_00003"):
        build_dataset("biwi/lists", source, tmp_path / "c", split_lists={"train": good, "test": good})
    with pytest.raises(ValueError, match="split lists build the config biwi/lists, not biwi/protocol1"):
        build_dataset("biwi/protocol1", source, tmp_path / "d", split_lists={"test": good})
    with pytest.raises(ValueError, match="split lists name the splits train, test"):
        build_dataset("biwi/lists", source, tmp_path / "e", split_lists={"val": good})
    with pytest.raises(ValueError, match="biwi/lists needs frame lists"):
        build_dataset("biwi/lists", source, tmp_path / "f")


def test_data_build_command_reads_split_lists(testdata, tmp_path, capsys):
    source = fake_biwi(testdata, tmp_path / "src", ["01", "10"])
    (tmp_path / "test.txt").write_text("01/frame_00003\n")
    (tmp_path / "train.txt").write_text("10/frame_00003\n")
    build = ["data", "build", "biwi/lists", "--source", str(source), "--data_dir", str(tmp_path / "data")]
    assert cli.main([*build, "--split_list", f"test={tmp_path / 'test.txt'}",
                     "--split_list", f"train={tmp_path / 'train.txt'}"]) == 0
    out = capsys.readouterr().out
    records_line = next(line for line in out.splitlines() if line.strip().startswith("records:"))
    assert "biwi/lists: " in out and "train 1" in records_line and "test 1" in records_line
    assert "split lists: test 1 of 1 listed, train 1 of 1 listed found; 0 frames of the source in no list" in out
    assert cli.main([*build, "--split_list", "test"]) == 1
    assert capsys.readouterr().err.strip() == (
        "jaxpose: error: --split_list test: expected SPLIT=FILE, each split once (e.g. test=BIWI_test.txt)")


# --- detections ------------------------------------------------------------------------------


def test_read_detections_reads_predict_csvs_and_plain_rows(tmp_path):
    predict = tmp_path / "predict.csv"  # the columns of `jaxpose predict --output F.csv`
    predict.write_text(
        "path,frame,x_min,y_min,x_max,y_max,score,yaw,pitch,roll,track,error\n"
        "/data/2024/hpdb/01/frame_00003_rgb.png,,300.0,200.0,380.0,300.0,0.9812,1,2,3,,\n"
        "/data/2024/hpdb/01/frame_00003_rgb.png,,10.0,20.0,30.0,40.0,0.3,,,,,\n"
        "/data/2024/hpdb/01/frame_00004_rgb.png,,,,,,,,,,,no face found\n")
    table = biwi.read_detections(predict)
    assert sorted(table) == [("01", 3), ("01", 4)]  # the digits of "2024/" are not a sequence
    (box, score), (_, low) = table[("01", 3)]
    np.testing.assert_array_equal(box, [300, 200, 380, 300])
    assert (score, low) == (0.9812, 0.3)
    assert table[("01", 4)][0][0] is None and math.isnan(table[("01", 4)][0][1])
    plain = tmp_path / "plain.csv"
    plain.write_text("01/00003,300,200,380,300\n02\\frame_00007_rgb.png,1,2,3,4,0.95\n")
    table = biwi.read_detections(plain)
    assert math.isnan(table[("01", 3)][0][1]) and table[("02", 7)][0][1] == 0.95
    for row, message in [("01/00003,300,200,380,300\nphoto.jpg,1,2,3,4",
                          r"plain\.csv:2: 'photo\.jpg' names no BIWI frame"),
                         ("01/00003,300,200", r"plain\.csv:1: expected 'SEQ/frame_NNNNN_rgb\.png,x_min"),
                         ("01/00003,300,200,300,250", r"plain\.csv:1: box .* has no area"),
                         ("01/00003,300,200,nan,250", r"plain\.csv:1: box .* not finite")]:
        plain.write_text(row)
        with pytest.raises(ValueError, match=message):
            biwi.read_detections(plain)
    with pytest.raises(FileNotFoundError, match="detections CSV .*missing.csv not found"):
        biwi.read_detections(tmp_path / "missing.csv")


def test_resolve_detections_follows_fsanet_rules():
    box = lambda x, y=200, w=80, h=100: np.array([x, y, x + w, y + h], np.float64)  # noqa: E731
    table = {
        ("01", 1): [(box(300), 0.95)],  # kept; the enlarged box's left edge: int(300 - 0.4 * 80) = 268
        ("01", 2): [(box(300), 0.99), (box(500, 350, 60, 70), 0.99)],  # picks the 2nd (corner 476, 322 nearest
        # (426.7, 320)), which jumped 476 - 268 >= 80 px: dropped
        ("01", 3): [(box(300), 0.5)],  # below FSA-Net's 0.9
        ("01", 4): [(None, math.nan)],  # listed, nothing found
        ("01", 6): [(box(330), math.nan)],  # no score: taken; 298 - 268 = 30 px from the last kept frame (1)
        ("01", 7): [(box(380), 0.91)],  # 348 - 298 = 50 px: kept
        ("01", 8): [(box(460), 0.92)],  # 428 - 348 = 80 px: dropped (FSA-Net keeps < 80)
        ("02", 1): [(box(500), 0.97)],  # another sequence: its own track
        ("03", 1): [(box(1), 0.99)],  # no such frame in the source
    }
    frames = [("01", n) for n in range(1, 9)] + [("02", 1)]
    resolved, counts = biwi.resolve_detections(frames, table)
    reasons = {key: value for key, value in resolved.items() if isinstance(value, str)}
    assert reasons == {("01", 2): biwi.DETECTION_JUMP, ("01", 3): biwi.LOW_SCORE, ("01", 4): biwi.NO_DETECTION,
                       ("01", 5): biwi.NO_DETECTION, ("01", 8): biwi.DETECTION_JUMP}
    # Stored: the detector box scaled by 9/11 about its centre.
    np.testing.assert_allclose(resolved[("01", 1)], [340 - 40 * 9 / 11, 250 - 50 * 9 / 11,
                                                     340 + 40 * 9 / 11, 250 + 50 * 9 / 11], atol=1e-4)
    np.testing.assert_allclose(resolved[("02", 1)][[0, 2]], [540 - 40 * 9 / 11, 540 + 40 * 9 / 11], atol=1e-4)
    assert counts == {"frames not in the CSV": 1, "frames listed without a box": 1, "boxes without score": 1,
                      "frames with several detections": 1, "rows for frames not in the source": 1}


def test_detector_protocol_cuts_fsanets_region_and_reports_both_protocols(testdata, tmp_path, capsys):
    source = fake_biwi(testdata, tmp_path / "src", ["01"], frames=(3, 4))
    detections = tmp_path / "mtcnn.csv"
    x0, y0, x1, y1 = 301.5, 212.9, 384.7, 319.0  # jaxpose.inference's MTCNN on the sample frame
    detections.write_text(f"path,x_min,y_min,x_max,y_max,score\n01/frame_00003_rgb.png,{x0},{y0},{x1},{y1},0.99\n")
    report = build_dataset("biwi/protocol1", source, tmp_path / "data", detections=detections)
    assert report["splits"] == {"test": 1} and report["skipped"] == {biwi.NO_DETECTION: 1}
    assert report["geometric_box_kept"] == {"test": 2}
    line = ("boxes: the detector protocol keeps 1 of 2 frames (no detection 1); "
            "the geometric-box protocol keeps 2 of the same 2")
    assert report["summary"] == [line] and line in capsys.readouterr().out
    # FSA-Net's crop convention on the stored box, in source pixels, is FSA-Net's BIWI region (box + 0.4).
    (record,) = records("biwi/protocol1_detections", tmp_path / "data", "test")
    image = cv2.imdecode(np.frombuffer(record["image"], np.uint8), cv2.IMREAD_COLOR)
    region = crops.fsanet_crop(record["box"], image.shape, bounds=record["source_box"])
    origin = -record["source_box"][:2]  # lossless test crops are not scaled: stored = source - origin
    w, h = x1 - x0, y1 - y0
    official = [int(x0 - 0.4 * w), int(y0 - 0.4 * h), int(x1 + 0.4 * w) + 1, int(y1 + 0.4 * h) + 1]  # end inclusive
    np.testing.assert_allclose(region + np.tile(origin, 2), official, atol=2)
    # Frames whose detections all score <= 0.9 are dropped and counted.
    detections.write_text(f"01/frame_00003_rgb.png,{x0},{y0},{x1},{y1},0.85\n")
    with pytest.raises(ValueError, match=r"no valid record .*'detections below score 0\.9': 1, 'no detection': 1"):
        build_dataset("biwi/protocol1", source, tmp_path / "other", detections=detections)
    # Another CSV under the same name is refused unless --overwrite.
    with pytest.raises(ValueError, match="built from another detections .* give --overwrite"):
        build_dataset("biwi/protocol1", source, tmp_path / "data", detections=detections)


class FakeDetector:
    """Finds one face in the first image it is given and none afterwards; records what it saw."""

    def __init__(self):
        self.seen = []

    def detect(self, images):
        found = []
        for image in images:
            self.seen.append(image)
            boxes = [[301.5, 212.9, 384.7, 319.0]] if len(self.seen) == 1 else np.zeros((0, 4))
            found.append(type("Found", (), {"boxes": np.array(boxes), "scores": np.full(len(boxes), 0.97)}))
        return found


def test_write_detections_feeds_the_detector_protocol(testdata, tmp_path):
    source = fake_biwi(testdata, tmp_path / "src", ["01"], frames=(3, 4))
    output = tmp_path / "found.csv"
    detector = FakeDetector()
    counts = biwi.write_detections(source, detector, output, batch_size=1)
    assert counts == {"frames": 2, "boxes": 1, "frames without a face": 1}
    rgb = cv2.imread(str(testdata / "biwi/hpdb/01/frame_00003_rgb.png"))[:, :, ::-1]
    np.testing.assert_array_equal(detector.seen[0], rgb)  # detectors get RGB, as jaxpose.inference's
    assert output.read_text().splitlines() == [
        "path,x_min,y_min,x_max,y_max,score", "01/frame_00003_rgb.png,301.5,212.9,384.7,319.0,0.9700",
        "01/frame_00004_rgb.png,,,,,"]
    report = build_dataset("biwi/protocol1", source, tmp_path / "data", detections=output)
    assert report["splits"] == {"test": 1} and report["skipped"] == {biwi.NO_DETECTION: 1}
    assert report["detections"]["frames listed without a box"] == 1


# --- the fold summary ------------------------------------------------------------------------


def _fold_run(run: pathlib.Path, fold: int, row: dict | None) -> None:
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"data": {"name": f"biwi/cv8_fold{fold}", "eval_split": "test"}}))
    if row is not None:
        (run / "eval.json").write_text(json.dumps({f"biwi/cv8_fold{fold}:test": row, "aflw2000:test": {}}))


def test_crossval_summary_by_hand(tmp_path, capsys):
    runs = tmp_path / "name=biwi"  # `jaxpose sweep` names runs by their overrides: name=biwi/cv8_foldK
    _fold_run(runs / "cv8_fold1", 1, {"yaw": 4, "pitch": 5, "roll": 3, "mean": 4, "num_images": 100})
    _fold_run(runs / "cv8_fold2", 2, {"yaw": 2, "pitch": 3, "roll": 1, "mean": 2, "num_images": 300})
    _fold_run(tmp_path / "name=biwi" / "cv8_fold3", 3, None)  # still training
    (tmp_path / "name=biwi" / "cv8_fold1" / "ensemble").mkdir()
    (tmp_path / "name=biwi" / "cv8_fold1" / "ensemble" / "eval.json").write_text("{}")
    summary = crossval.summarize(tmp_path, expected=8)
    assert list(summary["folds"]) == ["biwi/cv8_fold1:test", "biwi/cv8_fold2:test"]
    assert summary["mean_of_folds"] == {"yaw": 3.0, "pitch": 4.0, "roll": 2.0, "mean": 3.0}
    assert summary["all_frames"] == {"yaw": 2.5, "pitch": 3.5, "roll": 1.5, "mean": 2.5}  # (100 x 4 + 300 x 2) / 400
    assert summary["num_images"] == 400 and summary["missing"] == 6
    assert [line.split(": ", 1)[1] for line in summary["not_scored"]] == [
        "no eval.json (not evaluated yet)", "eval.json without config.json (not a fold run)"]
    assert json.loads((tmp_path / "cv_summary.json").read_text()) == summary
    assert crossval.main([str(tmp_path), "8"]) == 0
    out = capsys.readouterr().out
    assert "mean of 2 folds" in out and "all 400 frames" in out and "6 fold(s) missing" in out
    _fold_run(tmp_path / "again", 2, {"yaw": 1, "pitch": 1, "roll": 1, "mean": 1, "num_images": 5})
    with pytest.raises(ValueError, match="two runs of the fold biwi/cv8_fold2:test"):
        crossval.summarize(tmp_path)
    assert crossval.main([str(tmp_path / "none")]) == 1


def test_a_cv8_sweep_run_trains_on_the_other_folds_and_is_scored_on_its_own(testdata, tmp_path, fast_compile):
    """The sweep's fold-2 run end to end on a tiny model: trained on sequences 01 and 10, scored on 02."""
    source = fake_biwi(testdata, tmp_path / "src", ["01", "02", "10"], frames=(3, 4))
    data_dir, overrides = tmp_path / "data", load_sweep(EXPERIMENT)[1]
    build_dataset(overrides["data.name"], source, data_dir)
    config = apply_overrides(tiny_config(data_dir, **{"data.crop": "box", "batch_size": 4, "num_train_steps": 1}),
                             overrides)
    config.eval_on = ()
    train.train_and_evaluate(config, tmp_path / "runs" / "cv8_fold2")
    summary = crossval.summarize(tmp_path / "runs", expected=8)
    assert list(summary["folds"]) == ["biwi/cv8_fold2:test"] and summary["missing"] == 7
    assert summary["num_images"] == 2  # sequence 02's two frames; the 4 of 01 and 10 trained
    assert all(np.isfinite(summary["mean_of_folds"][k]) for k in crossval.KEYS)
