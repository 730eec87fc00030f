"""input_pipeline.crops conventions against boxes computed by hand, and the host path's use of them."""

from __future__ import annotations

import numpy as np
import pytest

from input_pipeline import augment, crops
from input_pipeline.datasets.build import loose_region
from jaxpose.config import base_config

BOX = np.float32([100, 50, 200, 170])  # 100 x 120


class ScriptedRng:
    """Stands in for np.random.Generator in augment.crop_region: returns the given draws in call order."""

    def __init__(self, *values):
        self.values = list(values)

    def uniform(self, low=0.0, high=1.0, size=None):
        return self.values.pop(0)


def data_cfg(**fields):
    cfg = base_config().data
    for key, value in fields.items():
        cfg[key] = value
    return cfg


def test_hopenet_test_crop_by_hand():
    # k = 0.25, in place: x_min = 100 - 0.5 * 100 = 50, y_min = 50 - 0.5 * 120 = -10,
    # x_max = 200 + 0.5 * (200 - 50) = 275, y_max = 170 + 0.15 * (170 + 10) = 197.
    np.testing.assert_allclose(crops.crop_box("hopenet", BOX, (300, 300, 3), k=0.25), [50, -10, 275, 197])


def test_hopenet_train_crop_by_hand():
    # k = 0.25, in place: x_min = 100 - 0.15 * 100 = 85, y_min = 50 - 0.5 * 120 = -10,
    # x_max = 200 + 0.15 * (200 - 85) = 217.25, y_max = 170 + 0.15 * (170 + 10) = 197: 132.25 x 207.
    # Scale(240) + RandomCrop(224): a square of side 224/240 * 132.25 = 123.4333 in it.
    side = 123.43333
    centred = crops.crop_box("hopenet_train", BOX, (300, 300, 3), k=0.25)
    np.testing.assert_allclose(centred, [89.40833, 31.78333, 212.84167, 155.21667], atol=1e-3)
    np.testing.assert_allclose(centred[2:] - centred[:2], [side, side], atol=1e-3)
    corners = {(0, 0): [85, -10], (1, 0): [217.25 - side, -10], (0, 1): [85, 197 - side], (1, 1): [217.25 - side, 197 - side]}
    for offset, low in corners.items():
        region = crops.crop_box("hopenet_train", BOX, (300, 300, 3), k=0.25, offset=offset)
        np.testing.assert_allclose(region, [*low, low[0] + side, low[1] + side], atol=1e-3)
    # A box wider than tall: the square follows the (widened) height.
    wide = crops.hopenet_train_crop(np.float32([0, 0, 300, 60]), k=0.2, offset=(0.5, 0.5))
    # x: -36 .. 300 + 0.12 * 336 = 340.32 (376.32 wide); y: -24 .. 60 + 0.12 * 84 = 70.08 (94.08 tall).
    side = 224 / 240 * 94.08
    np.testing.assert_allclose(wide, [-36 + (376.32 - side) / 2, -24 + (94.08 - side) / 2,
                                      -36 + (376.32 + side) / 2, -24 + (94.08 + side) / 2], atol=1e-3)
    assert crops.RESIZE["hopenet_train"] == crops.RESIZE["hopenet"] == "area"  # PIL bilinear, as Hopenet


def test_stored_training_crops_cover_hopenet_train():
    """datasets.build.loose_region stores the Hopenet k = 0.4 test-style crop (and more), which holds every
    hopenet_train square for k in [0.2, 0.4] and any offset: no rebuild is needed for the new crop."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        low = rng.uniform(0, 400, 2)
        box = np.concatenate([low, low + rng.uniform(20, 300, 2)]).astype(np.float32)
        widest = crops.hopenet_crop(box, k=0.4)
        stored = loose_region(box)
        region = crops.hopenet_train_crop(box, k=rng.uniform(0.2, 0.4), offset=rng.uniform(0, 1, 2))
        for outer in (widest, stored):
            assert np.all(region[:2] >= outer[:2] - 1e-3) and np.all(region[2:] <= outer[2:] + 1e-3)
        # Strictly wider left and right; the same top and bottom margins (2k, 0.6k) at k = 0.4.
        train_box = crops.hopenet_train_crop(box, k=0.4, offset=(0, 0))
        assert widest[0] < train_box[0]


def test_host_crop_region_draws_k_then_offset():
    cfg = data_cfg(crop="hopenet_train", eval_crop="hopenet")
    record = {"box": BOX}
    region = augment.crop_region(record, (300, 300, 3), cfg, ScriptedRng(0.25, np.array([0.0, 1.0]), 1.0, np.zeros(2)))
    np.testing.assert_allclose(region, [85, 197 - 123.43333, 85 + 123.43333, 197], atol=1e-3)
    # A real generator: the same values as drawing them in that order.
    rng, replay = np.random.default_rng(5), np.random.default_rng(5)
    k, offset = replay.uniform(0.2, 0.4), replay.uniform(size=2)
    np.testing.assert_allclose(augment.crop_region(record, (300, 300, 3), cfg, rng),
                               crops.hopenet_train_crop(BOX, k, offset), rtol=1e-6)


def test_evaluation_uses_eval_crop():
    record = {"box": BOX}
    with_eval = data_cfg(crop="hopenet_train", eval_crop="hopenet", eval_crop_k=0.25)
    np.testing.assert_allclose(augment.crop_region(record, (300, 300, 3), with_eval, None), [50, -10, 275, 197])
    centred = data_cfg(crop="hopenet_train", eval_crop="", eval_crop_k=0.25)
    np.testing.assert_allclose(augment.crop_region(record, (300, 300, 3), centred, None),
                               crops.hopenet_train_crop(BOX, 0.25), atol=1e-4)


def test_other_conventions_draw_no_offset():
    """The host's random stream is unchanged for the other conventions: k, then scale and shift only."""
    for convention in ("hopenet", "fsanet", "box"):
        rng = ScriptedRng(0.3, 1.0, np.zeros(2))
        augment.crop_region({"box": BOX, "source_box": np.float32([0, 0, 300, 300])}, (300, 300, 3),
                            data_cfg(crop=convention), rng)
        assert rng.values == []


def test_unknown_convention_is_an_error():
    with pytest.raises(ValueError, match="hopenet_train"):
        crops.crop_box("nope", BOX, (300, 300, 3))
