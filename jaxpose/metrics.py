"""Evaluation metrics of the head pose papers (numpy, host side).

Inputs are (N, 3) arrays of (yaw, pitch, roll) in degrees: predictions and
ground truth for a whole evaluation set (eval concatenates the batches).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

ANGLE_NAMES = ("yaw", "pitch", "roll")


def _pose_pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, np.float64)
    true = np.asarray(true, np.float64)
    if pred.shape != true.shape or pred.ndim != 2 or pred.shape[-1] != 3:
        raise ValueError(f"pred and true must both have shape (N, 3), got {pred.shape} and {true.shape}")
    if pred.shape[0] == 0:
        raise ValueError("pred and true are empty: no samples to evaluate")
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(true))):
        bad_pred, bad_true = int(np.sum(~np.isfinite(pred))), int(np.sum(~np.isfinite(true)))
        raise ValueError(f"non-finite values: {bad_pred} in pred, {bad_true} in true")
    return pred, true


def mae(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Mean absolute error per angle, in degrees (the papers' table).

    pred, true: (N, 3). Returns {"yaw", "pitch", "roll", "mean"} with
    mean = (yaw + pitch + roll) / 3 (the "MAE" column of Hopenet, FSA-Net,
    RankPose, ...). Plain differences, no wrap-around: the protocol keeps
    angles within [-99, 99].
    """
    pred, true = _pose_pair(pred, true)
    per_angle = np.mean(np.abs(pred - true), axis=0)
    result = {name: float(value) for name, value in zip(ANGLE_NAMES, per_angle)}
    result["mean"] = float(np.mean(per_angle))
    return result


def cumulative_error_curves(
    pred: np.ndarray, true: np.ndarray, thresholds: Sequence[float] | np.ndarray = np.arange(0, 31)
) -> dict[str, np.ndarray]:
    """Fraction of samples whose absolute error is <= t, for each threshold t.

    pred, true: (N, 3); thresholds: (T,) degrees. Returns {"thresholds": (T,),
    "yaw", "pitch", "roll": (T,) fractions per angle, "mean": (T,) fraction of
    samples whose mean absolute error over the three angles is <= t}.
    """
    pred, true = _pose_pair(pred, true)
    thresholds = np.asarray(thresholds, np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D sequence, got shape {thresholds.shape}")
    errors = np.abs(pred - true)

    def curve(err: np.ndarray) -> np.ndarray:
        return np.mean(err[:, None] <= thresholds[None, :], axis=0)

    curves = {name: curve(errors[:, i]) for i, name in enumerate(ANGLE_NAMES)}
    curves["mean"] = curve(errors.mean(axis=1))
    curves["thresholds"] = thresholds
    return curves


def round_to_step(values: np.ndarray, step: float = 15.0) -> np.ndarray:
    """Round to the nearest multiple of `step`, halves away from zero.

    np.round would send 7.5 to 0 but 22.5 to 30 (half to even); rounding
    halves away from zero keeps the rule symmetric in the sign of yaw.
    """
    values = np.asarray(values, np.float64)
    return np.sign(values) * np.floor(np.abs(values) / step + 0.5) * step


def afw_yaw_accuracy(
    pred_yaw: np.ndarray,
    true_yaw: np.ndarray,
    *,
    thresholds: Sequence[float] = (15.0, 30.0),
    step: float = 15.0,
    round_truth: bool = False,
) -> dict[str, float]:
    """AFW yaw accuracy: fraction of faces with |round15(pred) - true| <= t.

    pred_yaw, true_yaw: (N,) degrees. Returns {"acc_15": ..., "acc_30": ...}
    (one key per threshold, "acc_<t>" with t written without trailing zeros).

    Protocol (Zhu & Ramanan 2012, "Face Detection, Pose Estimation, and
    Landmark Localization in the Wild", which introduced AFW and its
    "within 15 degrees" yaw accuracy, followed by later CNN papers): the AFW
    ground truth is a discretised viewpoint annotated every 15 degrees from
    -90 to 90, so it is used as given; the continuous prediction is rounded
    to the nearest 15-degree view. Then "within 15" means the predicted view
    is the annotated view or an adjacent one. `round_truth=True` also
    rounds the ground truth, for continuous labels (e.g. AFLW) evaluated the
    same way.
    """
    pred = np.asarray(pred_yaw, np.float64)
    true = np.asarray(true_yaw, np.float64)
    if pred.shape != true.shape or pred.ndim != 1 or pred.size == 0:
        raise ValueError(
            f"pred_yaw and true_yaw must both have shape (N,) with N > 0, got {pred.shape} and {true.shape}"
        )
    if round_truth:
        true = round_to_step(true, step)
    error = np.abs(round_to_step(pred, step) - true)
    # A tiny tolerance so that float labels such as 15.000001 count as on the grid.
    return {f"acc_{float(t):g}": float(np.mean(error <= float(t) + 1e-6)) for t in thresholds}


def save_cumulative_error_plot(
    curves: Mapping[str, np.ndarray], path: str | pathlib.Path
) -> pathlib.Path:
    """Plot the curves of `cumulative_error_curves` to a PNG file (Agg backend).

    Draws every angle present among yaw/pitch/roll/mean against
    curves["thresholds"]; returns the written path.
    """
    # The Agg canvas directly, not pyplot: no global backend switch, no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if "thresholds" not in curves:
        raise ValueError(f"curves need a 'thresholds' entry; got keys {sorted(curves)}")
    names = [name for name in (*ANGLE_NAMES, "mean") if name in curves]
    if not names:
        raise ValueError(f"curves have none of {(*ANGLE_NAMES, 'mean')}; got keys {sorted(curves)}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name in names:
        ax.plot(curves["thresholds"], np.asarray(curves[name]) * 100.0, label=name)
    ax.set_xlabel("absolute error threshold (degrees)")
    ax.set_ylabel("samples within threshold (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def save_downsample_plot(curve: Mapping[str, Sequence[float]], path: str | pathlib.Path) -> pathlib.Path:
    """Plot MAE against the test-time downsampling factor (Hopenet's Fig. 8) to a PNG file (Agg backend).

    curve: {"factors": [f, ...], "yaw" | "pitch" | "roll" | "mean": [MAE per factor]}; returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [name for name in (*ANGLE_NAMES, "mean") if name in curve]
    if "factors" not in curve or not names:
        raise ValueError(f"curve needs 'factors' and some of {(*ANGLE_NAMES, 'mean')}; got keys {sorted(curve)}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name in names:
        ax.plot(curve["factors"], curve[name], marker="o", label=name)
    ax.set_xlabel("downsampling factor (nearest neighbour)")
    ax.set_ylabel("MAE (degrees)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def format_mae_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """The papers' MAE table as text: one row per name, columns Yaw Pitch Roll MAE.

    results: {row name: mae(...) dict}; values printed with 2 decimals.
    """
    missing = {row: [k for k in (*ANGLE_NAMES, "mean") if k not in r] for row, r in results.items()}
    missing = {row: keys for row, keys in missing.items() if keys}
    if missing:
        raise ValueError(f"format_mae_table: rows missing keys {missing} (expected the dict of mae())")
    width = max([len("Method"), *(len(name) for name in results)])
    lines = [f"{'Method':<{width}}  {'Yaw':>6}  {'Pitch':>6}  {'Roll':>6}  {'MAE':>6}"]
    for name, row in results.items():
        values = "  ".join(f"{row[k]:>6.2f}" for k in (*ANGLE_NAMES, "mean"))
        lines.append(f"{name:<{width}}  {values}")
    return "\n".join(lines)
