"""The host path's speed-ups: reduced-scale JPEG decoding in training, single-threaded OpenCV in workers, auto workers."""

from __future__ import annotations

import math
import os
import signal

from absl import flags
import cv2
import grain
import numpy as np
import pytest
from conftest import tiny_config

from input_pipeline import augment, crops, pipeline
from input_pipeline.datasets.build import build_dataset
from input_pipeline.datasets.features import decode_image, encode_png
from jaxpose.config import base_config


@pytest.fixture(scope="module")
def lp_record(testdata, tmp_path_factory) -> dict:
    """The 300W-LP fixture's training record (a ~441 x 320 JPEG around a 128 px face, as every 300W-LP record)."""
    data_dir = tmp_path_factory.mktemp("lp")
    build_dataset("the300w_lp", testdata / "300w_lp", data_dir)
    cfg = base_config().data
    cfg.name, cfg.data_dir = "the300w_lp", str(data_dir)
    return pipeline.data_source(cfg, "train")[0]


def data_cfg(**fields):
    cfg = base_config().data
    cfg.flip = False
    for key, value in fields.items():
        cfg[key] = value
    return cfg


def full_resolution(record: dict, cfg, seed: int) -> np.ndarray:
    """The training crop of `seed` cut from the fully decoded image (the path before reduced decoding)."""
    image = decode_image(record["image"])
    region = augment.crop_region(record, image.shape, cfg, np.random.default_rng(seed))
    return crops.crop_resize(image, region, cfg.image_size, convention=cfg.crop)


@pytest.fixture
def decode_flags(monkeypatch) -> list[int]:
    """The flags of every cv2.imdecode call."""
    flags, imdecode = [], cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda buf, flag: flags.append(flag) or imdecode(buf, flag))
    return flags


def test_jpeg_shape_reads_the_header(lp_record, tiny_data_dir):
    records = [lp_record, pipeline.data_source(tiny_config(tiny_data_dir).data, "train")[0]]
    for record in records:
        assert augment.jpeg_shape(record["image"]) == decode_image(record["image"]).shape[:2]
        for r in (2, 4, 8):  # libjpeg's DCT scaling gives ceil(H / r) x ceil(W / r)
            shape = augment.jpeg_shape(record["image"])
            assert augment._decode(record["image"], r).shape[:2] == tuple(math.ceil(s / r) for s in shape)
    assert augment.jpeg_shape(encode_png(np.zeros((5, 7, 3), np.uint8))) is None


def test_reduced_decoding_is_within_tolerance_of_full_decoding(lp_record):
    """300W-LP at 64 px, Hopenet crop: the reduced crops differ by 2.4 grey levels on average (measured over
    400 draws, largest 4.6); a full-resolution crop moved by one pixel differs by about 4."""
    cfg = data_cfg(image_size=64, crop="hopenet")
    seen, diffs = set(), []
    for seed in range(24):
        region = augment.crop_region(lp_record, (*augment.jpeg_shape(lp_record["image"]), 3), cfg,
                                     np.random.default_rng(seed))
        seen.add(augment.reduction(region, 64))
        reduced = augment.prepare(lp_record, cfg, np.random.default_rng(seed))["image"]
        diff = np.abs(reduced.astype(int) - full_resolution(lp_record, cfg, seed)).mean()
        assert diff <= 6.0, (seed, diff)
        diffs.append(diff)
    assert seen == {2, 4}
    assert np.mean(diffs) <= 3.5


def test_reduction_never_shrinks_the_crop_below_image_size(lp_record, monkeypatch):
    rng = np.random.default_rng(0)
    for _ in range(2000):
        size = int(rng.integers(8, 256))
        x0, y0 = rng.uniform(-100, 400, 2)
        region = np.array([x0, y0, x0 + rng.uniform(1, 1500), y0 + rng.uniform(1, 1500)], np.float32)
        r = augment.reduction(region, size)
        sides = lambda r: np.diff(np.array([round(float(v) / r) for v in region]).reshape(2, 2), axis=0).min()
        assert r == 1 or sides(r) >= size
        assert r == 8 or sides(2 * r) < size  # the largest such r
    # Through prepare: every cut region keeps image_size pixels on its shorter side (or was not reduced).
    cut = []
    crop_resize = crops.crop_resize
    monkeypatch.setattr(crops, "crop_resize", lambda image, box, size, **kw: cut.append(
        (image.shape, min(round(float(box[2])) - round(float(box[0])), round(float(box[3])) - round(float(box[1])))))
        or crop_resize(image, box, size, **kw))
    for size in (32, 64, 100, 224):
        for seed in range(10):
            augment.prepare(lp_record, data_cfg(image_size=size, scale=(0.8, 1.2)), np.random.default_rng(seed))
            shape, side = cut.pop()
            assert shape[:2] == (320, 441) or side >= size, (size, seed, shape, side)


def test_unreduced_paths_decode_at_full_resolution(lp_record, tiny_data_dir, decode_flags):
    cfg = data_cfg(image_size=64)
    augment.prepare(lp_record, cfg)  # evaluation
    augment.prepare(lp_record, data_cfg(image_size=64, crop="fsanet"), np.random.default_rng(0))
    augment.prepare(lp_record, data_cfg(image_size=224), np.random.default_rng(0))  # r = 1
    png = dict(lp_record, image=encode_png(decode_image(lp_record["image"])[..., ::-1]))
    for seed in range(4):
        augment.prepare(png, cfg, np.random.default_rng(seed))
    assert decode_flags and set(decode_flags) == {cv2.IMREAD_COLOR}
    augment.prepare(lp_record, cfg, np.random.default_rng(0))
    assert decode_flags[-1] in (cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_COLOR_4)
    # Where r = 1 (synthetic_heads/tiny: a 128 px image, a ~100 px crop), training pixels are unchanged.
    tiny = tiny_config(tiny_data_dir, **{"data.image_size": 64}).data
    record = pipeline.data_source(tiny, "train")[0]
    got = augment.prepare(record, tiny, np.random.default_rng(3))["image"]
    image = decode_image(record["image"])
    rng = np.random.default_rng(3)
    expected = crops.crop_resize(image, augment.crop_region(record, image.shape, tiny, rng), 64)
    if rng.random() < 0.5:
        expected = expected[:, ::-1]
    np.testing.assert_array_equal(got, expected)


def test_num_workers_auto(monkeypatch):
    assert augment.num_workers(-1) >= (1 if len(os.sched_getaffinity(0)) > 2 else 0)
    assert augment.num_workers(0) == 0 and augment.num_workers(3) == 3
    with pytest.raises(ValueError, match="num_workers"):
        augment.num_workers(-2)
    for cpus, workers in ((16, 15), (4, 3), (3, 2), (2, 0), (1, 0)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, cpus=cpus: set(range(cpus)))
        assert augment.num_workers(-1) == workers, cpus


def test_train_dataset_passes_worker_count_and_opencv_hook(tiny_data_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(grain.IterDataset, "mp_prefetch", lambda self, options, **kw: calls.append((options, kw)) or self)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    config = tiny_config(tiny_data_dir, **{"data.num_workers": -1})
    pipeline.train_dataset(config.data, config.batch_size, 0)
    ((options, kwargs),) = calls
    assert options.num_workers == 7
    assert kwargs["worker_init_fn"] is augment.init_worker


def _worker_settings(_):
    """(OpenCV threads, whether Ctrl-C is ignored) in the process that runs it."""
    return np.array([cv2.getNumThreads(), signal.getsignal(signal.SIGINT) == signal.SIG_IGN], np.int32)


def test_worker_hook_runs_in_grain_workers():
    """Workers run OpenCV single-threaded and ignore Ctrl-C (the training process stops at a checkpoint)."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # grain's workers read absl flags (google/grain#1355), as train_dataset
    ds = grain.MapDataset.range(4).map(_worker_settings).to_iter_dataset()
    it = iter(ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=1), worker_init_fn=augment.init_worker))
    try:
        assert [next(it).tolist() for _ in range(4)] == [[1, 1]] * 4
    finally:
        it.close()
