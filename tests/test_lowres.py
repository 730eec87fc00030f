"""Hopenet's low-resolution study: nearest-neighbour degradation in evaluation and training.

The MAE-per-factor sweep runs in tests/test_evaluate.py (it shares that module's trained tiny models).
"""

import pathlib

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

from input_pipeline import augment, canvases, crops, pipeline
from jaxpose import metrics
from jaxpose.config import load_config

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def test_downsample_nearest_by_hand_and_as_pil():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4, 1).repeat(3, -1)
    # PIL NEAREST samples pixel centres: 4 -> 2 keeps source pixels 1 and 3, 2 -> 4 repeats each twice.
    expected = np.array([[5, 5, 7, 7], [5, 5, 7, 7], [13, 13, 15, 15], [13, 13, 15, 15]])
    np.testing.assert_array_equal(augment.downsample_nearest(image, 2)[..., 0], expected)
    # 7 px by 3: 7 // 3 = 2 px (source pixels 1 and 5), back to 7 as PIL does: 1 1 1 1 5 5 5.
    row = np.arange(7, dtype=np.uint8)[None, :, None].repeat(2, 0).repeat(3, -1)
    np.testing.assert_array_equal(augment.downsample_nearest(row, 3)[0, :, 0], [1, 1, 1, 1, 5, 5, 5])
    rng = np.random.default_rng(0)
    for (h, w), f in [((301, 257), 3), ((97, 130), 11), ((64, 64), 16), ((50, 33), 7)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pil = Image.fromarray(image).resize((w // f, h // f), Image.NEAREST).resize((w, h), Image.NEAREST)
        np.testing.assert_array_equal(augment.downsample_nearest(image, f), np.asarray(pil))  # deep-head-pose's code
    assert augment.downsample_nearest(image, 100).shape == image.shape  # at least 1 px in between


def test_downsampled_crop_degrades_the_source_crop():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (200, 180, 3), dtype=np.uint8)
    for region in ([10.3, 20.6, 150.2, 190.7], [-30, -10, 170, 230]):  # inside; beyond the image (black)
        region = np.array(region, np.float32)
        for convention in ("hopenet", "fsanet"):
            plain = crops.crop_resize(image, region, 64, convention=convention)
            np.testing.assert_array_equal(augment.downsampled_crop(image, region, 64, convention, 1), plain)
    # Factor 4 on the 140 x 170 source cut [10, 21, 150, 191): NN to 35 x 42, back, then the usual resize.
    region = np.array([10.3, 20.6, 150.2, 190.7], np.float32)
    cut = image[21:191, 10:150]
    small = np.asarray(Image.fromarray(cut).resize((35, 42), Image.NEAREST).resize((140, 170), Image.NEAREST))
    expected = crops.crop_resize(small, np.array([0, 0, 140, 170], np.float32), 64, convention="hopenet")
    np.testing.assert_array_equal(augment.downsampled_crop(image, region, 64, "hopenet", 4), expected)
    # An image decoded at 1/2 scale: the 70 x 85 cut goes through the source's 140 // 4, 170 // 4 = 35 x 42.
    half = augment.downsampled_crop(image, region / 2, 64, "hopenet", 4, source_scale=2.0)
    cut = image[10:95, 5:75]
    small = np.asarray(Image.fromarray(cut).resize((35, 42), Image.NEAREST).resize((70, 85), Image.NEAREST))
    np.testing.assert_array_equal(half, crops.crop_resize(small, np.array([0, 0, 70, 85], np.float32), 64))


def test_prepare_eval_downsample_and_training_schedule(tiny_data_dir):
    config = tiny_config(tiny_data_dir)
    record = pipeline.data_source(config.data, "test")[0]
    plain = augment.prepare(record, config.data)["image"]
    config.data.eval_downsample = 4
    degraded = augment.prepare(record, config.data)["image"]
    assert not np.array_equal(plain, degraded)
    image = augment.decode_image(record["image"])
    region = augment.crop_region(record, image.shape, config.data, None)
    expected = augment.downsampled_crop(image, region, 32, config.data.crop, 4)
    np.testing.assert_array_equal(degraded, expected)
    config.data.eval_downsample = 0
    with pytest.raises(ValueError, match="eval_downsample must be an integer >= 1"):
        augment.prepare(record, config.data)
    # Training: each image's factor uniformly from downsample_factors (rng); never at evaluation.
    config.data.eval_downsample = 1
    config.data.downsample_factors = (1, 6, 11, 16)
    rng = np.random.default_rng(0)
    drawn = [augment.downsample_factor(config.data, rng) for _ in range(4000)]
    assert set(drawn) == {1, 6, 11, 16} and abs(drawn.count(6) / 4000 - 0.25) < 0.03
    assert augment.downsample_factor(config.data, None) == 1
    assert augment.prepare(record, config.data, np.random.default_rng(3))["image"].shape == (32, 32, 3)
    config.data.downsample_prob = 0.5
    with pytest.raises(ValueError, match="downsample_factors .* or data.downsample_prob, not both"):
        augment.downsample_factor(config.data, rng)
    with pytest.raises(ValueError, match="host pipeline only"):
        canvases.ensure_cache(config.data)


def test_lowres_experiment_is_the_official_schedule():
    config = load_config(EXPERIMENTS / "hopenet_lowres_300wlp.py")
    assert tuple(config.data.downsample_factors) == (1, 6, 11, 16) and config.data.downsample_prob == 0
    assert config.data.pipeline == "host" and config.data.eval_downsample == 1


def test_downsample_plot_needs_factors(tmp_path):
    with pytest.raises(ValueError, match="needs 'factors'"):
        metrics.save_downsample_plot({"mean": [1.0]}, tmp_path / "x.png")
