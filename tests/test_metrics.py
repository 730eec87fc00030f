"""Metrics against hand-computed values."""

import numpy as np
import pytest

from jaxpose import metrics

PRED = np.array([[10.0, 0.0, -5.0], [0.0, 4.0, 1.0], [-20.0, 2.0, 0.0], [30.0, -3.0, 2.0]])
TRUE = np.array([[12.0, 1.0, -5.0], [0.0, 0.0, 0.0], [-10.0, 2.0, 3.0], [31.0, -3.0, 0.0]])
# Absolute errors:  yaw 2, 0, 10, 1   pitch 1, 4, 0, 0   roll 0, 1, 3, 2
# Per-sample mean error: 1, 5/3, 13/3, 1


def test_mae_hand():
    result = metrics.mae(PRED, TRUE)
    assert result["yaw"] == pytest.approx(13 / 4)
    assert result["pitch"] == pytest.approx(5 / 4)
    assert result["roll"] == pytest.approx(6 / 4)
    assert result["mean"] == pytest.approx((13 / 4 + 5 / 4 + 6 / 4) / 3)
    assert set(result) == {"yaw", "pitch", "roll", "mean"}


def test_mae_shape_errors():
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        metrics.mae(PRED, TRUE[:, :2])
    with pytest.raises(ValueError, match="empty"):
        metrics.mae(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-finite values: 1 in pred"):
        metrics.mae(np.where(PRED == 10.0, np.nan, PRED), TRUE)


def test_cumulative_error_curves_hand():
    curves = metrics.cumulative_error_curves(PRED, TRUE, thresholds=[0, 1, 2, 5, 10])
    np.testing.assert_allclose(curves["thresholds"], [0, 1, 2, 5, 10])
    # yaw errors 2, 0, 10, 1: <=0: 1/4, <=1: 2/4, <=2: 3/4, <=5: 3/4, <=10: 4/4.
    np.testing.assert_allclose(curves["yaw"], [0.25, 0.5, 0.75, 0.75, 1.0])
    # pitch errors 1, 4, 0, 0.
    np.testing.assert_allclose(curves["pitch"], [0.5, 0.75, 0.75, 1.0, 1.0])
    # roll errors 0, 1, 3, 2.
    np.testing.assert_allclose(curves["roll"], [0.25, 0.5, 0.75, 1.0, 1.0])
    # per-sample mean errors 1, 5/3, 13/3, 1.
    np.testing.assert_allclose(curves["mean"], [0.0, 0.5, 0.75, 1.0, 1.0])


def test_cumulative_error_default_thresholds():
    curves = metrics.cumulative_error_curves(PRED, TRUE)
    np.testing.assert_array_equal(curves["thresholds"], np.arange(31))
    assert curves["yaw"][-1] == 1.0 and curves["yaw"].shape == (31,)
    assert np.all(np.diff(curves["mean"]) >= 0)


def test_round_to_step_symmetric():
    np.testing.assert_array_equal(
        metrics.round_to_step([7.4, 7.5, -7.5, 22.5, -22.6, 0.0, 89.0]), [0, 15, -15, 30, -30, 0, 90]
    )


def test_afw_yaw_accuracy_hand():
    pred = np.array([3.0, 20.0, -40.0, 60.0, -89.0])
    true = np.array([0.0, 0.0, -15.0, 90.0, -45.0])
    # Rounded predictions: 0, 15, -45, 60, -90.
    # Errors vs truth:     0, 15,  30, 30,  45.
    result = metrics.afw_yaw_accuracy(pred, true)
    assert result == {"acc_15": pytest.approx(2 / 5), "acc_30": pytest.approx(4 / 5)}


def test_afw_round_truth_option():
    pred = np.array([8.0, 0.0])
    true = np.array([14.0, 8.0])  # continuous labels: rounded to 15, 15
    # Without rounding the truth: |15 - 14| = 1, |0 - 8| = 8 -> both within 10.
    assert metrics.afw_yaw_accuracy(pred, true, thresholds=(10,)) == {"acc_10": 1.0}
    # Rounded truth: |15 - 15| = 0, |0 - 15| = 15 -> one of two within 10 (and 7.5).
    assert metrics.afw_yaw_accuracy(pred, true, thresholds=(10, 7.5), round_truth=True) == {
        "acc_10": 0.5,
        "acc_7.5": 0.5,
    }


def test_afw_shape_error():
    with pytest.raises(ValueError, match=r"shape \(N,\)"):
        metrics.afw_yaw_accuracy(np.zeros((3, 3)), np.zeros((3, 3)))


def test_save_cumulative_error_plot(tmp_path):
    curves = metrics.cumulative_error_curves(PRED, TRUE)
    path = metrics.save_cumulative_error_plot(curves, tmp_path / "sub" / "ced.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (400, 500)
    with pytest.raises(ValueError, match="'thresholds'"):
        metrics.save_cumulative_error_plot({"yaw": curves["yaw"]}, tmp_path / "x.png")


def test_format_mae_table():
    results = {
        "AFLW2000 hopenet": {"yaw": 6.47, "pitch": 6.559, "roll": 5.436, "mean": 6.156},
        "BIWI": metrics.mae(PRED, TRUE),
    }
    table = metrics.format_mae_table(results)
    lines = table.splitlines()
    assert lines[0].split() == ["Method", "Yaw", "Pitch", "Roll", "MAE"]
    assert lines[1].split() == ["AFLW2000", "hopenet", "6.47", "6.56", "5.44", "6.16"]
    assert lines[2].split() == ["BIWI", "3.25", "1.25", "1.50", "2.00"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    with pytest.raises(ValueError, match="missing keys"):
        metrics.format_mae_table({"x": {"yaw": 1.0}})
