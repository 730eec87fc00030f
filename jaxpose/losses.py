"""Every loss term of jaxpose as a pure function, and the registry `LOSSES`.

Each loss maps model outputs and labels to per-example values of shape (B,)
(per pair, (N,), for the pairwise RankPose terms), summed over the three
angles (yaw, pitch, roll); rotation terms compare whole rotations (the
geodesic angle of 6DRepNet, quaternion distances) against labels converted
from (yaw, pitch, roll) by `jaxpose.angles`. Angles are in the caller's unit; binned terms take
`logits` of shape (B, 3, K) over K equal bins of [lo, hi] (see
`jaxpose.angles`). Everything is computed in float32, whatever the logits'
dtype, because bf16 softmax/log-sum-exp loses the small probabilities that
the cross-entropy and KL terms depend on.

The registry ties a term to the model output it consumes, so any loss works
with any model that produces that output:

    total, parts = total_loss(outputs, labels_deg, [("gld", 1.0, {"alpha": 0.1}),
                                                    ("mae", 0.1, {})])

`total_loss` reduces each term over the batch by its mean, or by its sum
with the option {"reduction": "sum"} (GLD's Eq. 5 sums two of its terms).

Adding a loss = one function here + one `LOSSES` entry.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxpose import angles as angles_lib

# --- helpers -------------------------------------------------------------------


def _f32(x: jax.Array) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def _check_binned(logits: jax.Array, angles: jax.Array, name: str) -> None:
    """Shape check at trace time: logits (B, 3, K), angles (B, 3)."""
    if logits.ndim != 3 or logits.shape[1] != 3:
        raise ValueError(f"{name}: logits must have shape (B, 3, K), got {logits.shape}")
    if tuple(angles.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"{name}: angles must have shape {logits.shape[:2]}, got {angles.shape}")


def _check_pairs(name: str, *arrays: jax.Array) -> None:
    shapes = {tuple(a.shape) for a in arrays}
    if len(shapes) != 1 or len(arrays[0].shape) != 2 or arrays[0].shape[-1] != 3:
        raise ValueError(f"{name}: all inputs must share one shape (N, 3), got {sorted(shapes)}")


def _safe_norm(squared: jax.Array) -> jax.Array:
    """sqrt with a zero (sub)gradient at 0: d sqrt(s)/ds is infinite at s = 0,
    which happens exactly when the prediction equals the target."""
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


# --- binned classification (Hopenet, hybrid) --------------------------------------


def binned_ce(logits: jax.Array, angles: jax.Array, *, lo: float = -99.0, hi: float = 99.0) -> jax.Array:
    """Cross-entropy against the bin containing each angle.

    logits (B, 3, K) over K equal bins of [lo, hi]; angles (B, 3).
    Returns (B,) = sum_{angle} -log softmax(logits)[bin(angle)], with
    bin(angle) = floor((angle - lo) / width) clipped to [0, K-1].
    The classification half of Ruiz et al. 2018 ("Fine-Grained Head Pose
    Estimation Without Keypoints", Eq. 1's cross-entropy term).
    """
    logits = _f32(logits)
    _check_binned(logits, angles, "binned_ce")
    target = angles_lib.angle_to_bin(angles, lo, hi, logits.shape[-1])
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, target[..., None], axis=-1)[..., 0]
    return nll.sum(axis=-1)


def expectation_mse(
    logits: jax.Array, angles: jax.Array, *, lo: float = -99.0, hi: float = 99.0
) -> jax.Array:
    """Squared error of the softmax expectation over bin centres.

    logits (B, 3, K); angles (B, 3). Returns (B,) =
    sum_{angle} (sum_k softmax(logits)_k * c_k - angle)^2, c_k the centre of
    bin k. The regression half of Ruiz et al. 2018 (the original code decodes
    with left edges; jaxpose decodes with centres everywhere).
    """
    logits = _f32(logits)
    _check_binned(logits, angles, "expectation_mse")
    pred = angles_lib.decode_expectation(logits, lo, hi)
    return jnp.sum((pred - _f32(angles)) ** 2, axis=-1)


def hopenet_loss(
    logits: jax.Array, angles: jax.Array, *, alpha: float = 1.0, lo: float = -99.0, hi: float = 99.0
) -> jax.Array:
    """Hopenet's multi-loss: binned_ce + alpha * expectation_mse.

    logits (B, 3, K); angles (B, 3) -> (B,). Ruiz, Chong, Rehg 2018,
    "Fine-Grained Head Pose Estimation Without Keypoints", Eq. 1:
    L = H(y, y_hat) + alpha * MSE(y, y_hat), per angle, summed over angles.
    """
    ce = binned_ce(logits, angles, lo=lo, hi=hi)
    return ce + alpha * expectation_mse(logits, angles, lo=lo, hi=hi)


def hybrid_loss(
    logits_per_granularity: Sequence[jax.Array],
    angles: jax.Array,
    *,
    betas: Sequence[float] = (7.0, 5.0, 3.0, 1.0, 1.0),
    alpha: float = 2.0,
    lo: float = -99.0,
    hi: float = 99.0,
) -> jax.Array:
    """Hybrid coarse-fine classification loss.

    logits_per_granularity: sequence of (B, 3, K_i), finest first (default
    model: 198, 66, 18, 6, 2 bins over [-99, 99]); angles (B, 3) -> (B,) =
    sum_i beta_i * binned_ce(logits_i) + alpha * expectation_mse(logits_0).
    Wang et al. 2019, "A Hybrid Coarse-Fine Classification for Head Pose
    Estimation", Eq. 1. The public reference code adds the 2-bin *pitch*
    cross-entropy to the roll loss (a copy-paste slip); this implements the
    paper, each angle with its own heads.
    """
    if len(logits_per_granularity) != len(betas):
        raise ValueError(
            f"hybrid_loss: {len(logits_per_granularity)} granularities of logits but "
            f"{len(betas)} betas {tuple(betas)}"
        )
    total = alpha * expectation_mse(logits_per_granularity[0], angles, lo=lo, hi=hi)
    for beta, logits in zip(betas, logits_per_granularity):
        total = total + beta * binned_ce(logits, angles, lo=lo, hi=hi)
    return total


# --- Gaussian label distribution learning -----------------------------------------


def _gld_log_target(
    angles: jax.Array, num_bins: int, lo: float, hi: float, sigma: float, normalized: bool
) -> jax.Array:
    """log of `gld_target`, computed directly so that tiny probabilities stay
    finite in log space (the KL term needs log D, and exp underflows)."""
    a = angles_lib.angle_to_bin(angles, lo, hi, num_bins).astype(jnp.float32)[..., None]
    l = jnp.arange(num_bins, dtype=jnp.float32)
    exponent = -((l - a) ** 2) / (2.0 * sigma**2)
    # Both modes are a softmax over l: of the Gaussian exponent itself (a
    # normalised discretised Gaussian) or, as in the paper, of gaussian / sigma.
    scores = exponent if normalized else jnp.exp(exponent) / sigma
    return jax.nn.log_softmax(scores, axis=-1)


def gld_target(
    angles: jax.Array,
    *,
    num_bins: int = 66,
    lo: float = -99.0,
    hi: float = 99.0,
    sigma: float = 4.0,
    normalized: bool = True,
) -> jax.Array:
    """Gaussian label distributions D, shape (B, 3, num_bins), each summing to 1.

    angles (B, 3). With a = the bin index of the true angle, l = 0..K-1:

    * `normalized=True` (the default): the discretised Gaussian
      d_l = exp(-(l - a)^2 / (2 sigma^2)) / sum_l' exp(-(l' - a)^2 / (2 sigma^2)).
      For K=66, sigma=4, a=33 the peak is 0.0997, 74% of the mass lies
      within 4 bins of a, and far bins get ~1e-16.
    * `normalized=False`: Liu et al. 2019, "Facial Pose Estimation by Deep
      Learning from Label Distributions", Eq. 1-3, literally:
      g_l = exp(-(l - a)^2 / (2 sigma^2)) / sigma and d_l = softmax_l(g_l).
      Since g_l lies in [0, 1/sigma], this is very flat: for the same setting
      the peak is 0.0187, the floor 0.0145 (uniform = 0.0152), and only 16%
      of the mass lies within 4 bins of a. A model matching it decodes
      towards 0 (a 60-degree yaw to 2.5 degrees), while the paper reports
      accurate poses at alpha = 0; the normalised Gaussian is the reading
      that fits its results, hence the default.
    """
    return jnp.exp(_gld_log_target(angles, num_bins, lo, hi, sigma, normalized))


def gld_loss(
    logits: jax.Array,
    angles: jax.Array,
    *,
    alpha: float = 0.0,
    sigma: float = 4.0,
    normalized: bool = True,
    lo: float = -99.0,
    hi: float = 99.0,
) -> jax.Array:
    """GLD multi-loss: L_Eu + L_KL (+ alpha * expectation_mse), per example.

    logits (B, 3, K), F = softmax(logits); D = gld_target(angles, normalized=)
    (B, 3, K). Returns (B,) = sum_{angle} [ ||D - F||_2 + KL(D || F) ]
    + alpha * expectation_mse(logits, angles), with
    KL(D || F) = sum_l D_l (log D_l - log F_l). Liu et al. 2019, "Facial Pose
    Estimation by Deep Learning from Label Distributions", Eq. 5:
    L = L_Eu + L_KL + alpha L_MSE.

    Reductions: the paper's L_Eu and L_KL are *sums* over the batch, its
    L_MSE a mean, so with the default per-term mean (`total_loss`) the alpha
    here is the paper's alpha divided by the batch size. The paper's Eq. 5 as
    written is two config terms (experiments/gld_300wlp.py):
    {"gld": {"reduction": "sum"}, "expectation_mse": {"weight": paper_alpha}}.
    log F comes from log_softmax so the KL stays finite at extreme logits;
    the Euclidean norm uses a safe sqrt so its gradient is finite at D == F.
    """
    logits = _f32(logits)
    _check_binned(logits, angles, "gld_loss")
    log_d = _gld_log_target(angles, logits.shape[-1], lo, hi, sigma, normalized)
    d = jnp.exp(log_d)
    log_f = jax.nn.log_softmax(logits, axis=-1)
    euclid = _safe_norm(jnp.sum((d - jnp.exp(log_f)) ** 2, axis=-1))
    kl = jnp.sum(d * (log_d - log_f), axis=-1)
    per_example = jnp.sum(euclid + kl, axis=-1)
    return per_example + alpha * expectation_mse(logits, angles, lo=lo, hi=hi)


# --- regression (FSA-Net, RankPose) ------------------------------------------------


def mae_loss(pred: jax.Array, angles: jax.Array) -> jax.Array:
    """sum_{angle} |pred - angles|: (B, 3), (B, 3) -> (B,). FSA-Net's objective
    (Yang et al. 2019, "FSA-Net: Learning Fine-Grained Structure Aggregation
    for Head Pose Estimation from a Single Image")."""
    _check_pairs("mae_loss", pred, angles)
    return jnp.sum(jnp.abs(_f32(pred) - _f32(angles)), axis=-1)


def mse_loss(pred: jax.Array, angles: jax.Array) -> jax.Array:
    """sum_{angle} (pred - angles)^2: (B, 3), (B, 3) -> (B,). Direct regression of
    the angles with a squared error: Hopenet's "regression only" baseline (Ruiz
    et al. 2018; official code/train_resnet50_regression.py, a linear layer
    on ResNet-50 features trained with nn.MSELoss, whose mean over the 3
    angles is 1/3 of this sum)."""
    _check_pairs("mse_loss", pred, angles)
    return jnp.sum((_f32(pred) - _f32(angles)) ** 2, axis=-1)


def ranking_loss(
    pred1: jax.Array, pred2: jax.Array, angles1: jax.Array, angles2: jax.Array
) -> jax.Array:
    """RankPose's ranking loss on N pairs: (N, 3) x 4 -> (N,).

    sum_d max(0, -sgn(t2_d - t1_d) * (y2_d - y1_d)), t the labels, y the
    predictions (Dai et al. 2020, "RankPose: Learning Generalised Feature with
    Rank Supervision for Head Pose Estimation", Eq. 5-6). Zero when the
    predicted order agrees with the true one; grows linearly with the
    predicted gap when it does not; tied labels contribute nothing.
    """
    _check_pairs("ranking_loss", pred1, pred2, angles1, angles2)
    order = jnp.sign(_f32(angles2) - _f32(angles1))
    return jnp.sum(jax.nn.relu(-order * (_f32(pred2) - _f32(pred1))), axis=-1)


def rankpose_loss(
    pred1: jax.Array, pred2: jax.Array, angles1: jax.Array, angles2: jax.Array, *, beta: float = 0.5
) -> jax.Array:
    """RankPose total loss on N pairs: (N, 3) x 4 -> (N,).

    beta * (||t1 - y1||^2 + ||t2 - y2||^2) + (1 - beta) * ranking_loss
    (Dai et al. 2020, Eq. 4 and 7), t the labels, y the predictions, in the
    unit of the regression head (radians for RankPose's bounded outputs).
    """
    _check_pairs("rankpose_loss", pred1, pred2, angles1, angles2)
    mse = jnp.sum((_f32(angles1) - _f32(pred1)) ** 2, -1)
    mse = mse + jnp.sum((_f32(angles2) - _f32(pred2)) ** 2, -1)
    return beta * mse + (1.0 - beta) * ranking_loss(pred1, pred2, angles1, angles2)


# --- rotations (6DRepNet, quaternions) ----------------------------------------------

GEODESIC_EPS = 1e-7  # 6DRepNet's loss.py GeodesicLoss(eps=1e-7)
QUATERNION_KINDS = ("angle", "inner")


def _check_rotations(name: str, pred: jax.Array, true: jax.Array, shape: tuple[int, ...]) -> None:
    if pred.shape != true.shape or pred.ndim != len(shape) + 1 or tuple(pred.shape[1:]) != shape:
        raise ValueError(f"{name}: pred and true must both have shape (B, {', '.join(map(str, shape))}), "
                         f"got {pred.shape} and {true.shape}")


def geodesic_loss(pred_matrix: jax.Array, true_matrix: jax.Array, *, eps: float = GEODESIC_EPS) -> jax.Array:
    """Geodesic distance on SO(3) in radians: (B, 3, 3), (B, 3, 3) -> (B,).

    theta = arccos(clamp((tr(R_pred^T R_true) - 1) / 2, -1 + eps, 1 - eps)),
    the angle of the rotation taking one matrix to the other (Hempel et al.
    2022, "6D Rotation Representation for Unconstrained Head Pose
    Estimation", Eq. 6; official loss.py with eps = 1e-7, there averaged over
    the batch). The clamp keeps the gradient finite: d arccos(c)/dc =
    -1 / sqrt(1 - c^2) is infinite at c = +-1, i.e. at theta = 0 and 180
    degrees; clamped, it is 0 there (the clip's own gradient) and at most
    1 / sqrt(2 eps) just inside. In the registry the labels (B, 3) degrees
    become matrices with `angles.euler_to_matrix`; the geodesic distance
    is the same in any Euler convention (it is invariant to conjugation).
    """
    pred, true = _f32(pred_matrix), _f32(true_matrix)
    _check_rotations("geodesic_loss", pred, true, (3, 3))
    return angles_lib.rotation_angle_between(pred, true, eps)


def quaternion_loss(
    pred_quaternion: jax.Array, true_quaternion: jax.Array, *, kind: str = "angle", eps: float = GEODESIC_EPS
) -> jax.Array:
    """Distance of unit quaternions (w, x, y, z), blind to their sign: (B, 4), (B, 4) -> (B,).

    With d = |<q_pred, q_true>| (both normalised here; q and -q are one rotation):
    * "angle": 2 arccos(clamp(d, 0, 1 - eps)) radians, the rotation angle
      between them, equal to `geodesic_loss` of their matrices (Huynh 2009,
      "Metrics for 3D Rotations: Comparison and Analysis", Phi_3 = arccos d,
      here doubled to the rotation angle);
    * "inner": 1 - d (Huynh 2009, Phi_4), smooth but flat near 0: its
      gradient vanishes as the rotations agree.
    QuatNet (Hsu et al. 2019) and WQuatNet (Algabri et al. 2025) regress
    quaternions; WQuatNet's own two loss functions were not available to check
    here, so these are the metric-based forms of Huynh 2009. The labels
    (B, 3) degrees become quaternions with `angles.euler_to_quaternion`.
    """
    if kind not in QUATERNION_KINDS:
        raise ValueError(f"quaternion_loss: unknown kind {kind!r}; valid: {', '.join(QUATERNION_KINDS)}")
    pred, true = _f32(pred_quaternion), _f32(true_quaternion)
    _check_rotations("quaternion_loss", pred, true, (4,))
    inner = jnp.abs(jnp.sum(angles_lib.unit_vector(pred) * angles_lib.unit_vector(true), axis=-1))
    if kind == "inner":
        return 1.0 - inner
    return 2.0 * jnp.arccos(jnp.clip(inner, 0.0, 1.0 - eps))


# --- registry ------------------------------------------------------------------

_UNITS = ("degrees", "radians")
# The form a term's targets take: the (B, 3) angles in `unit`, or the rotation they describe.
_TARGETS = {
    "angles": None,
    "matrix": angles_lib.euler_to_matrix,  # (B, 3, 3)
    "quaternion": angles_lib.euler_to_quaternion,  # (B, 4), w >= 0
}
# How total_loss reduces a term's per-example (per-pair) values over the batch.
REDUCTIONS = ("mean", "sum")


@dataclasses.dataclass(frozen=True)
class LossTerm:
    """A loss function bound to the model output it consumes.

    fn: the loss; called as fn(output, targets, **kwargs) -> (B,), or, when
      `pairwise`, fn(out1, out2, targets1, targets2, **kwargs) -> (N,) with the
      batch of 2N split into its first and second halves (RankPose pairs).
    output_key: the key of the model's output dict it reads ("logits",
      "logits_multi", "regression", "pose", "rotation" or "quaternion").
    unit: the unit its targets must be in; labels arrive in degrees and are
      converted with jnp.radians for "radians" terms.
    target: "angles" (the labels, in `unit`), "matrix" or "quaternion": the
      (B, 3) degree labels converted inside the loss by jaxpose.angles, so
      datasets and pipelines keep one label format.

    Every term also takes the option "reduction" (`REDUCTIONS`), applied by
    `total_loss`, not by fn.
    """

    fn: Callable[..., jax.Array]
    output_key: str
    pairwise: bool = False
    unit: str = "degrees"
    target: str = "angles"

    def __post_init__(self) -> None:
        if self.unit not in _UNITS:
            raise ValueError(f"LossTerm unit must be one of {_UNITS}, got {self.unit!r}")
        if self.target not in _TARGETS:
            raise ValueError(f"LossTerm target must be one of {tuple(_TARGETS)}, got {self.target!r}")

    def options(self) -> tuple[str, ...]:
        """The keyword options the loss accepts (what a config may set)."""
        params = inspect.signature(self.fn).parameters.values()
        return (*(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY), "reduction")


LOSSES: dict[str, LossTerm] = {
    "binned_ce": LossTerm(binned_ce, "logits"),
    "expectation_mse": LossTerm(expectation_mse, "logits"),
    "hopenet": LossTerm(hopenet_loss, "logits"),
    "gld": LossTerm(gld_loss, "logits"),
    "hybrid": LossTerm(hybrid_loss, "logits_multi"),
    "mae": LossTerm(mae_loss, "pose"),
    "mse": LossTerm(mse_loss, "pose"),
    "ranking": LossTerm(ranking_loss, "regression", pairwise=True, unit="radians"),
    "rankpose": LossTerm(rankpose_loss, "regression", pairwise=True, unit="radians"),
    "geodesic": LossTerm(geodesic_loss, "rotation", target="matrix"),
    "quaternion": LossTerm(quaternion_loss, "quaternion", target="quaternion"),
}


def get_loss(name: str) -> LossTerm:
    """The registered loss term called `name`; ValueError listing valid names."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


def _halves(tree: Any, name: str) -> tuple[Any, Any]:
    """Split every array's batch axis into first and second halves (pair members)."""
    sizes = {x.shape[0] for x in jax.tree.leaves(tree)}
    if len(sizes) != 1 or next(iter(sizes)) % 2:
        raise ValueError(
            f"loss term {name!r} is pairwise: needs an even batch of 2N images, got sizes {sorted(sizes)}"
        )
    half = next(iter(sizes)) // 2
    return jax.tree.map(lambda x: x[:half], tree), jax.tree.map(lambda x: x[half:], tree)


def term_values(
    name: str, outputs: Mapping[str, Any], angles: jax.Array, kwargs: Mapping[str, Any] | None = None
) -> jax.Array:
    """Per-example values of one registered term: (B,), or (N,) for pairwise terms.

    outputs: the model's output dict; angles: (B, 3) labels in degrees.
    A "reduction" in kwargs is accepted and ignored (`total_loss` applies it).
    """
    term = get_loss(name)
    kwargs = dict(kwargs.items()) if kwargs is not None else {}
    kwargs.pop("reduction", None)
    unknown = sorted(set(kwargs) - set(term.options()))
    if unknown:
        raise ValueError(
            f"loss term {name!r}: unknown option(s) {unknown}; valid options: {list(term.options())}"
        )
    if term.output_key not in outputs:
        raise ValueError(
            f"loss term {name!r} needs model output {term.output_key!r}; "
            f"the model produces {sorted(outputs)}"
        )
    angles = _f32(angles)
    if angles.ndim != 2 or angles.shape[-1] != 3:
        raise ValueError(
            f"loss term {name!r}: labels must have shape (B, 3) in degrees, got {angles.shape}"
        )
    targets = jnp.radians(angles) if term.unit == "radians" else angles
    if _TARGETS[term.target] is not None:
        targets = _TARGETS[term.target](angles)
    output = outputs[term.output_key]
    if term.pairwise:
        (out1, tgt1), (out2, tgt2) = _halves((output, targets), name)
        return term.fn(out1, out2, tgt1, tgt2, **kwargs)
    return term.fn(output, targets, **kwargs)


def _parse_term(spec: Sequence[Any]) -> tuple[str, Any, Mapping[str, Any]]:
    if isinstance(spec, str) or len(spec) not in (2, 3):
        raise ValueError(f"loss term must be (name, weight) or (name, weight, kwargs), got {spec!r}")
    return spec[0], spec[1], (spec[2] if len(spec) == 3 else {})


def total_loss(
    outputs: Mapping[str, Any], angles: jax.Array, terms: Sequence[Sequence[Any]], *, axis_name: str | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted sum of per-term reductions over examples (pairs for pairwise terms).

    outputs: the model's output dict; angles: (B, 3) labels in degrees;
    terms: [(name, weight, kwargs), ...] as written in an experiment config,
    e.g. [("hopenet", 1.0, {"alpha": 2.0})]. kwargs["reduction"] (default
    "mean") reduces the term's per-example values over the batch: "mean", or
    "sum" for papers whose loss sums over the batch (GLD's L_Eu + L_KL), so
    that weights relative to mean terms mean what the paper says. A config
    writes it as `config.losses.<name>.reduction = "sum"`.
    axis_name: in a per-device step (shard_map) whose gradients are then
    averaged over `axis_name`, "sum" terms are multiplied by its size, so that
    the average is the sum over the global batch, as without it.
    Returns (sum_t weight_t * reduced_t, {name: reduced_t}); the dict holds
    the unweighted reductions (a name repeated in `terms` gets its index appended).
    """
    if not terms:
        raise ValueError("total_loss: no loss terms given")
    total = jnp.zeros((), jnp.float32)
    parts: dict[str, jax.Array] = {}
    for index, spec in enumerate(terms):
        name, weight, kwargs = _parse_term(spec)
        reduction = kwargs.get("reduction", "mean")
        if reduction not in REDUCTIONS:
            raise ValueError(f"loss term {name!r}: unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
        values = term_values(name, outputs, angles, kwargs)
        reduced = jnp.sum(values) if reduction == "sum" else jnp.mean(values)
        if reduction == "sum" and axis_name is not None:
            reduced = reduced * jax.lax.psum(1, axis_name)
        parts[name if name not in parts else f"{name}_{index}"] = reduced
        total = total + weight * reduced
    return total, parts
