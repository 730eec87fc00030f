"""Decoded training canvases: exact pixels and labels, crash safety, skipped records, the CLI."""

import shutil
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import error_line

from input_pipeline import canvases, pipeline
from input_pipeline.datasets import features
from jaxpose import cli
from jaxpose.config import base_config

TINY = "synthetic_heads/tiny"


@pytest.fixture(autouse=True)
def no_caches_left(tiny_data_dir):
    """Every test starts without canvases in the shared session data_dir, and leaves none."""
    shutil.rmtree(tiny_data_dir / "canvases", ignore_errors=True)
    yield
    shutil.rmtree(tiny_data_dir / "canvases", ignore_errors=True)


@pytest.fixture(scope="module")
def records(tiny_data_dir) -> list[dict]:
    """The 48 train records of synthetic_heads/tiny, images still encoded."""
    source = pipeline.data_source(canvases._DataConfig(TINY, str(tiny_data_dir)), "train")
    return [source[i] for i in range(len(source))]


def build_and_load(data_dir, image_size, canvas_size=None, **kwargs) -> canvases.Canvases:
    report = canvases.build_cache(TINY, data_dir, "train", image_size, canvas_size, **kwargs)
    return canvases.load_cache(report["path"])


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def test_canvas_at_64px_is_the_stored_image_with_the_records_labels(tiny_data_dir, records):
    cache = build_and_load(tiny_data_dir, 64)
    assert cache.images.shape == (48, 128, 128, 3) and cache.images.dtype == np.uint8
    for i, record in enumerate(records):
        np.testing.assert_array_equal(cache.images[i], features.decode_image(record["image"]))
        for key in ("box", "source_box", "pose"):
            np.testing.assert_array_equal(getattr(cache, key)[i], record[key])
        assert cache.identities[cache.identity[i]] == text(record["identity"])
    np.testing.assert_array_equal(cache.canvas_scale, np.ones((48, 2), np.float32))
    np.testing.assert_array_equal(cache.record_index, np.arange(48))
    assert set(cache.labels()) == {"box", "source_box", "canvas_scale", "pose", "identity"}
    assert cache.meta["num_records"] == cache.meta["num_source_records"] == len(cache) == 48
    assert cache.meta["skipped"] == {} and cache.meta["canvas_size"] == 128


def test_canvas_80_is_cv2_resize_of_the_stored_image(tiny_data_dir, records):
    cache = build_and_load(tiny_data_dir, 32, 80)
    assert cache.images.shape == (48, 80, 80, 3)
    for i in (0, 17, 47):
        image = features.decode_image(records[i]["image"])
        expected = cv2.resize(image, (80, 80), interpolation=cv2.INTER_AREA)  # shrinking 128 -> 80
        np.testing.assert_array_equal(cache.images[i], expected)
    np.testing.assert_allclose(cache.canvas_scale, np.full((48, 2), 80 / 128, np.float32))


def test_upscaling_uses_linear_and_anisotropic_scale():
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8)
    expected = cv2.resize(image, (50, 50), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(canvases.to_canvas(image, 50), expected)
    # 40 px wide shrinks to 35 while 30 px high grows: INTER_AREA as soon as one side shrinks.
    expected = cv2.resize(image, (35, 35), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(canvases.to_canvas(image, 35), expected)


def test_loaded_canvases_are_a_read_only_memmap(tiny_data_dir):
    cache = build_and_load(tiny_data_dir, 64)
    assert isinstance(cache.images, np.memmap) and not cache.images.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        cache.images[0, 0, 0, 0] = 1


def test_existing_cache_is_reused_unless_overwrite(tiny_data_dir, capsys):
    first = canvases.build_cache(TINY, tiny_data_dir, "train", 64)
    assert not first["reused"]
    assert canvases.build_cache(TINY, tiny_data_dir, "train", 64)["reused"]
    assert "already built, reused" in capsys.readouterr().out
    assert not canvases.build_cache(TINY, tiny_data_dir, "train", 64, overwrite=True)["reused"]


def test_interrupted_build_leaves_no_loadable_cache(tiny_data_dir, monkeypatch):
    write = canvases._write_canvas

    def write_then_crash(images, position, canvas):
        if position == 5:
            raise KeyboardInterrupt  # as a user's Ctrl-C in the middle of the build
        write(images, position, canvas)

    monkeypatch.setattr(canvases, "_write_canvas", write_then_crash)
    directory = canvases.cache_dir(tiny_data_dir, TINY, "train", 64, 128)
    with pytest.raises(KeyboardInterrupt):
        canvases.build_cache(TINY, tiny_data_dir, "train", 64)
    with pytest.raises(FileNotFoundError, match="no complete canvas cache"):
        canvases.load_cache(directory)
    assert list(directory.parent.iterdir()) == []  # the partial build is gone too
    monkeypatch.setattr(canvases, "_write_canvas", write)
    assert len(build_and_load(tiny_data_dir, 64)) == 48


def test_partial_build_of_a_dead_process_is_removed(tiny_data_dir):
    directory = canvases.cache_dir(tiny_data_dir, TINY, "train", 64, 128)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = directory.with_name(f".{directory.name}.partial-{socket.gethostname()}-{dead.pid}")
    (stale / "junk").mkdir(parents=True)
    build_and_load(tiny_data_dir, 64)
    assert not stale.exists()


@pytest.mark.parametrize("num_workers", [1, 3])
def test_corrupted_records_are_skipped_counted_and_named(tiny_data_dir, records, monkeypatch, num_workers):
    # With 3 workers on tasks of 5 records the thread pool runs (tiny is below
    # PARALLEL_MIN_RECORDS) and must keep the index order.
    monkeypatch.setattr(canvases, "PARALLEL_MIN_RECORDS", 0)
    monkeypatch.setattr(canvases, "RECORDS_PER_TASK", 5)
    real_source = pipeline.data_source

    class Truncated:
        """The real source with the image bytes of records 3 and 10 cut in half."""

        def __init__(self, source):
            self.source = source

        def __len__(self):
            return len(self.source)

        def __getitem__(self, index):
            record = dict(self.source[index])
            if index in (3, 10):
                record["image"] = record["image"][: len(record["image"]) // 2]
            return record

    monkeypatch.setattr(pipeline, "data_source", lambda cfg, split: Truncated(real_source(cfg, split)))
    cv2_threads = cv2.getNumThreads()
    report = canvases.build_cache(TINY, tiny_data_dir, "train", 64, num_workers=num_workers)
    assert cv2.getNumThreads() == cv2_threads  # the pool's setNumThreads(1) is undone
    assert report["num_records"] == 46 and report["num_source_records"] == 48
    names = [text(records[i]["filename"]) for i in (3, 10)]
    assert report["skipped"] == {canvases.UNREADABLE_IMAGE: {"count": 2, "examples": names}}
    cache = canvases.load_cache(report["path"])
    kept = [i for i in range(48) if i not in (3, 10)]
    assert cache.images.shape == (46, 128, 128, 3)  # the file was cut to the kept records
    np.testing.assert_array_equal(cache.record_index, kept)
    for position, index in enumerate(kept):
        np.testing.assert_array_equal(cache.images[position], features.decode_image(records[index]["image"]))
        np.testing.assert_array_equal(cache.pose[position], records[index]["pose"])


def test_nonfinite_labels_are_skipped_and_all_bad_is_an_error(records):
    record = dict(records[0], pose=np.array([np.nan, 0, 0], np.float32))
    assert canvases.decode_record(record, 0, 64).skip_reason == canvases.NONFINITE_POSE
    record = dict(records[0], box=np.array([0, 0, np.inf, 1], np.float32))
    assert canvases.decode_record(record, 0, 64).skip_reason == canvases.NONFINITE_BOX
    assert canvases.decode_record(dict(records[0], image=b""), 0, 64).skip_reason == canvases.EMPTY_IMAGE


def test_all_records_unreadable_raises_and_leaves_nothing(tiny_data_dir, records, monkeypatch):
    class Garbage:
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return dict(records[index], image=b"not an image")

    monkeypatch.setattr(pipeline, "data_source", lambda cfg, split: Garbage())
    with pytest.raises(ValueError, match="no record of synthetic_heads/tiny train could be cached .unreadable image 4"):
        canvases.build_cache(TINY, tiny_data_dir, "train", 64)
    assert not any(p.is_file() for p in (tiny_data_dir / "canvases").rglob("*"))


def test_identity_ids_group_equal_texts_in_order_of_first_appearance(tiny_data_dir, records):
    cache = build_and_load(tiny_data_dir, 64)
    texts = [text(r["identity"]) for r in records]
    assert len(set(texts)) < len(texts)  # the tiny split has several images per identity
    assert cache.identity.dtype == np.int32
    assert cache.identities == list(dict.fromkeys(texts))
    for i in range(48):
        for j in range(48):
            assert (cache.identity[i] == cache.identity[j]) == (texts[i] == texts[j])


def test_cache_dir_nests_the_name_and_version(tiny_data_dir):
    directory = canvases.cache_dir(tiny_data_dir, TINY, "train", 224, 448)
    assert directory == tiny_data_dir / "canvases" / "synthetic_heads" / "tiny" / "1.2.0" / "train-224px-c448"
    assert canvases.default_canvas_size(64) == 128 and canvases.default_canvas_size(224) == 448


def test_ensure_cache_builds_generated_data_and_names_the_command_for_real_data(tiny_data_dir, tmp_path, capsys):
    data = base_config().data
    data.name, data.data_dir, data.image_size = TINY, str(tiny_data_dir), 32
    cache = canvases.ensure_cache(data)
    assert "first use only" in capsys.readouterr().out
    assert cache.images.shape == (48, 64, 64, 3)
    assert canvases.ensure_cache(data).meta == cache.meta  # loaded, not rebuilt
    data.name, data.data_dir, data.image_size = "aflw2000", str(tmp_path), 64
    with pytest.raises(FileNotFoundError) as error:
        canvases.ensure_cache(data)
    # Not built at all: both steps, in order.
    assert str(error.value).startswith(f"dataset 'aflw2000' is not built in {tmp_path}")
    assert str(error.value).endswith(f"run `jaxpose data build aflw2000 --source DIR --data_dir {tmp_path}`, "
                                     f"then `jaxpose data cache aflw2000 --image_size 64 --data_dir {tmp_path}`")
    data.canvas_size = 100  # not the default 2 x 64: the command must name it
    with pytest.raises(FileNotFoundError, match=f"--image_size 64 --canvas_size 100 --data_dir {tmp_path}`"):
        canvases.ensure_cache(data)


def test_cli_data_cache_prints_the_report(tiny_data_dir, capsys):
    assert cli.main(["data", "cache", TINY, "--image_size", "32", "--canvas_size", "40",
                     "--data_dir", str(tiny_data_dir)]) == 0
    out = capsys.readouterr().out
    directory = canvases.cache_dir(tiny_data_dir, TINY, "train", 32, 40)
    assert "48 of 48 records cached as 40x40 canvases for 32 px" in out
    assert "skipped: none" in out and "size on disk: 0.2 MB" in out and f"path: {directory}" in out
    assert len(canvases.load_cache(directory)) == 48


def test_cli_data_cache_errors(tiny_data_dir, tmp_path, capsys):
    line = error_line(capsys, ["data", "cache", "aflw2000", "--image_size", "64", "--data_dir", tmp_path])
    assert "dataset 'aflw2000' is not built" in line and "jaxpose data build aflw2000" in line
    line = error_line(capsys, ["data", "cache", "nope", "--image_size", "64", "--data_dir", tmp_path])
    assert "unknown dataset 'nope'" in line
    line = error_line(capsys, ["data", "cache", TINY, "--image_size", "4", "--data_dir", tiny_data_dir])
    assert line == "jaxpose: error: image_size must be at least 8 px, got 4"
    line = error_line(capsys, ["data", "cache", TINY, "--image_size", "64", "--canvas_size", "32",
                               "--data_dir", tiny_data_dir])
    assert line == "jaxpose: error: canvas_size (32) must be at least image_size (64)"
    line = error_line(capsys, ["data", "cache", TINY, "--image_size", "64", "--split", "val",
                               "--data_dir", tiny_data_dir])
    assert "has no split 'val'" in line
    assert not (tmp_path / "canvases").exists()
