"""Evaluation metrics of the head pose papers (numpy, host side).

Inputs are (N, 3) arrays of (yaw, pitch, roll) in degrees: predictions and
ground truth for a whole evaluation set (eval concatenates the batches).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from jaxpose import angles as angles_lib

ANGLE_NAMES = ("yaw", "pitch", "roll")
# TriNet's three vectors: the columns of R (jaxpose.angles): the subject's left, down, and front (the
# nose direction is -R e_z, the angle between two columns is the same as between their negatives).
VECTOR_NAMES = ("vector_left", "vector_down", "vector_front")
ROTATION_KEYS = ("geodesic", *VECTOR_NAMES, "mae_v")


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


def geodesic_errors(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per sample, the angle in degrees of the rotation between predicted and true pose: (N,).

    pred, true: (N, 3) (yaw, pitch, roll) degrees, each mapped to its matrix
    by `angles.euler_to_matrix` (defined for every model, whatever its head);
    theta = arccos((tr(R_pred^T R_true) - 1) / 2), the geodesic distance on
    SO(3) that 6DRepNet (Hempel et al. 2022) trains on. Unlike the Euler MAE it
    does not double-count the one rotation that pitch and roll share near
    |yaw| = 90 degrees.
    """
    pred, true = _pose_pair(pred, true)
    matrices = angles_lib.euler_to_matrix(pred), angles_lib.euler_to_matrix(true)
    return np.degrees(angles_lib.rotation_angle_between(*matrices))


def vector_errors(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per sample, the angle in degrees between corresponding columns of the two matrices: (N, 3).

    Columns: the head's left, down and front vectors (VECTOR_NAMES), as TriNet
    (Cao et al. 2021, "A Vector-based Representation to Enhance Head Pose
    Estimation") reports them: arccos(<v_pred, v_true>) per vector.
    """
    pred, true = _pose_pair(pred, true)
    cosines = np.sum(angles_lib.euler_to_matrix(pred) * angles_lib.euler_to_matrix(true), axis=-2)  # column dots
    return np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0)))


def rotation_errors(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Mean rotation errors in degrees: {"geodesic", "vector_left", "vector_down", "vector_front", "mae_v"}.

    pred, true: (N, 3). "geodesic": mean of `geodesic_errors`; the vector
    keys: mean of each column of `vector_errors`; "mae_v": their mean (TriNet's MAEV).
    """
    vectors = np.mean(vector_errors(pred, true), axis=0)
    result = {"geodesic": float(np.mean(geodesic_errors(pred, true)))}
    result.update({name: float(value) for name, value in zip(VECTOR_NAMES, vectors)})
    result["mae_v"] = float(np.mean(vectors))
    return result


def cumulative_error_curves(
    pred: np.ndarray, true: np.ndarray, thresholds: Sequence[float] | np.ndarray = np.arange(0, 31)
) -> dict[str, np.ndarray]:
    """Fraction of samples whose absolute error is <= t, for each threshold t.

    pred, true: (N, 3); thresholds: (T,) degrees. Returns {"thresholds": (T,),
    "yaw", "pitch", "roll": (T,) fractions per angle, "mean": (T,) fraction of
    samples whose mean absolute error over the three angles is <= t,
    "geodesic": (T,) fraction whose `geodesic_errors` is <= t}.
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
    curves["geodesic"] = curve(geodesic_errors(pred, true))
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

    Draws every curve present among yaw/pitch/roll/mean/geodesic against
    curves["thresholds"]; returns the written path.
    """
    if "thresholds" not in curves:
        raise ValueError(f"curves need a 'thresholds' entry; got keys {sorted(curves)}")
    names = [name for name in (*ANGLE_NAMES, "mean", "geodesic") if name in curves]
    if not names:
        raise ValueError(f"curves have none of {(*ANGLE_NAMES, 'mean', 'geodesic')}; got keys {sorted(curves)}")

    def draw(ax):
        for name in names:
            style = "--" if name == "geodesic" else "-"  # a rotation's error, not an angle's: set apart
            ax.plot(curves["thresholds"], np.asarray(curves[name]) * 100.0, style, label=name)
        ax.set_xlabel("error threshold (degrees)")
        ax.set_ylabel("samples within threshold (%)")
        ax.set_ylim(0, 100)
        ax.legend(loc="lower right")

    return _save_plot(draw, path)


def save_downsample_plot(curve: Mapping[str, Sequence[float]], path: str | pathlib.Path) -> pathlib.Path:
    """Plot MAE against the test-time downsampling factor (Hopenet's Fig. 8) to a PNG file (Agg backend).

    curve: {"factors": [f, ...], "yaw" | "pitch" | "roll" | "mean": [MAE per factor]}; returns the path.
    """
    names = [name for name in (*ANGLE_NAMES, "mean") if name in curve]
    if "factors" not in curve or not names:
        raise ValueError(f"curve needs 'factors' and some of {(*ANGLE_NAMES, 'mean')}; got keys {sorted(curve)}")

    def draw(ax):
        for name in names:
            ax.plot(curve["factors"], curve[name], marker="o", label=name)
        ax.set_xlabel("downsampling factor (nearest neighbour)")
        ax.set_ylabel("MAE (degrees)")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left")

    return _save_plot(draw, path)


def _save_plot(draw: Callable, path: str | pathlib.Path) -> pathlib.Path:
    """One 5x4-inch gridded axes drawn by draw(ax), written as PNG to path (parents created)."""
    # The Agg canvas directly, not pyplot: no global backend switch, no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    draw(ax)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def format_mae_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """The papers' MAE table as text: one row per name, columns Yaw Pitch Roll MAE.

    results: {row name: mae(...) dict}; values printed with 2 decimals. When
    any row has the `rotation_errors` keys, two columns follow: Geod. (mean
    geodesic error) and MAEv (TriNet's mean vector error); "-" where a row lacks them.
    """
    missing = {row: [k for k in (*ANGLE_NAMES, "mean") if k not in r] for row, r in results.items()}
    missing = {row: keys for row, keys in missing.items() if keys}
    if missing:
        raise ValueError(f"format_mae_table: rows missing keys {missing} (expected the dict of mae())")
    columns = [("Yaw", "yaw"), ("Pitch", "pitch"), ("Roll", "roll"), ("MAE", "mean")]
    if any("geodesic" in row for row in results.values()):
        columns += [("Geod.", "geodesic"), ("MAEv", "mae_v")]
    width = max([len("Method"), *(len(name) for name in results)])
    lines = [f"{'Method':<{width}}  " + "  ".join(f"{title:>6}" for title, _ in columns)]
    for name, row in results.items():
        values = "  ".join(f"{row[k]:>6.2f}" if k in row else f"{'-':>6}" for _, k in columns)
        lines.append(f"{name:<{width}}  {values}")
    return "\n".join(lines)
