"""Rotations: conversions, flips, rotation heads, geodesic / quaternion losses, rotation metrics, augmentation.

Reference values are written out by hand (rotations by known angles about one
axis) or come from scipy's independent Rotation class, never from the code
under test. The augmentation tests prove that the label flip of both input
paths (yaw and roll negated) is the mirrored rotation F R F, F = diag(-1, 1, 1),
and that crops, zoom and shift leave the label alone.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from test_experiments import EXPERIMENTS, RESNET_TINY, TINY

from input_pipeline import augment, pipeline
from input_pipeline import device_augment as da
from jaxpose import angles, losses, metrics, train
from jaxpose import config as config_lib
from jaxpose.models import build_model
from jaxpose.models.resnet import RESNETS

S45, C30 = math.sqrt(0.5), math.cos(math.radians(30))
RY90 = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]  # yaw 90: about y
RX_MINUS90 = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]  # pitch 90 = Rx(-90)
RZ90 = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # roll 90: about z


def _rz(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _random_poses(n: int, seed: int = 0, yaw_limit: float = 89.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-yaw_limit, yaw_limit, n), rng.uniform(-89, 89, n), rng.uniform(-179, 179, n)], -1)


def _scipy_quaternions(matrices: np.ndarray) -> np.ndarray:
    """scipy's (x, y, z, w) as (w, x, y, z) with w >= 0."""
    q = Rotation.from_matrix(matrices).as_quat()
    q = np.concatenate([q[:, 3:], q[:, :3]], -1)
    return np.where(q[:, :1] < 0, -q, q)


def _finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


# --- conversions: hand values ---------------------------------------------------------------


@pytest.mark.parametrize("pose, matrix", [((90, 0, 0), RY90), ((0, 90, 0), RX_MINUS90), ((0, 0, 90), RZ90)])
def test_euler_to_matrix_hand(pose, matrix):
    np.testing.assert_allclose(angles.euler_to_matrix(pose), matrix, atol=1e-15)
    np.testing.assert_allclose(angles.euler_to_matrix(jnp.asarray(pose, jnp.float32)), matrix, atol=1e-6)


@pytest.mark.parametrize(
    "pose, quaternion",
    [
        ((90, 0, 0), (S45, 0, S45, 0)),  # 90 about y
        ((0, 90, 0), (S45, -S45, 0, 0)),  # -90 about x
        ((0, 0, 60), (C30, 0, 0, 0.5)),  # 60 about z: (cos 30, 0, 0, sin 30)
        ((0, 0, -60), (C30, 0, 0, -0.5)),
        ((0, 0, 180), (0, 0, 0, 1)),  # w = 0: either sign is canonical; this one comes out
    ],
)
def test_euler_to_quaternion_hand(pose, quaternion):
    np.testing.assert_allclose(angles.euler_to_quaternion(pose), quaternion, atol=1e-12)
    # Back to Euler angles: the same rotation (at |yaw| = 90 or roll 180 the triple itself is not unique).
    back = angles.euler_to_matrix(angles.quaternion_to_euler(quaternion))
    np.testing.assert_allclose(back, angles.euler_to_matrix(pose), atol=1e-12)


def test_quaternion_of_a_half_turn_about_x_by_hand():
    # diag(1, -1, -1): w^2 = (1 + trace) / 4 = 0, x^2 = (1 + 1 + 1 + 1) / 4 = 1.
    np.testing.assert_allclose(angles.matrix_to_quaternion(np.diag([1.0, -1.0, -1.0])), [0, 1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(angles.quaternion_to_matrix([0, 2.0, 0, 0]), np.diag([1.0, -1.0, -1.0]), atol=1e-15)


def test_unit_vector_hand_zero_and_gradient():
    # (3, 4) / 5; a zero vector stays zero (no division by 0) with a finite gradient there.
    np.testing.assert_allclose(angles.unit_vector([[3.0, 4.0], [0.0, 0.0]]), [[0.6, 0.8], [0, 0]], atol=1e-15)
    unit = angles.unit_vector(jnp.array([3.0, 4.0]))
    assert unit.dtype == jnp.float32
    np.testing.assert_allclose(unit, [0.6, 0.8], rtol=1e-6)
    grad = jax.grad(lambda v: angles.unit_vector(v)[0])(jnp.zeros(4))
    assert np.isfinite(np.asarray(grad)).all()


def test_rotation_6d_hand():
    # The first two columns of Rz(90): (0, 1, 0), (-1, 0, 0).
    np.testing.assert_array_equal(angles.matrix_to_rotation_6d(np.array(RZ90, float)), [0, 1, 0, -1, 0, 0])
    # a1 = (2, 0, 0), a2 = (1, 3, 0): c1 = e_x, c3 = c1 x a2 / |.| = e_z, c2 = c3 x c1 = e_y.
    np.testing.assert_allclose(angles.rotation_6d_to_matrix([2, 0, 0, 1, 3, 0]), np.eye(3), atol=1e-15)
    # a1 = (0, 0, 5), a2 = (1, 1, 0): c1 = e_z, c3 = (-1, 1, 0) / sqrt 2, c2 = (1, 1, 0) / sqrt 2.
    expected = np.stack([[0, 0, 1], [S45, S45, 0], [-S45, S45, 0]], -1)
    np.testing.assert_allclose(angles.rotation_6d_to_matrix([0, 0, 5, 1, 1, 0]), expected, atol=1e-15)


# --- conversions: round trips, scipy, namespaces --------------------------------------------


def test_round_trips_float64():
    poses = _random_poses(300)
    matrices = angles.euler_to_matrix(poses)
    np.testing.assert_allclose(angles.quaternion_to_euler(angles.euler_to_quaternion(poses)), poses, atol=1e-9)
    np.testing.assert_allclose(angles.rotation_6d_to_matrix(angles.matrix_to_rotation_6d(matrices)), matrices, atol=1e-14)
    # Every rotation (all of SO(3), not only Euler ranges) through quaternions, against scipy.
    every = Rotation.random(500, random_state=3).as_matrix()
    quaternions = angles.matrix_to_quaternion(every)
    np.testing.assert_allclose(quaternions, _scipy_quaternions(every), atol=1e-12)
    np.testing.assert_allclose(angles.quaternion_to_matrix(quaternions), every, atol=1e-14)
    assert np.all(quaternions[:, 0] >= 0)


def test_jax_in_gives_float32_jax_out_and_matches_numpy():
    poses = _random_poses(64, seed=1)
    cases = {
        "euler_to_matrix": (angles.euler_to_matrix, poses),
        "matrix_to_euler": (angles.matrix_to_euler, angles.euler_to_matrix(poses)),
        "euler_to_quaternion": (angles.euler_to_quaternion, poses),
        "quaternion_to_euler": (angles.quaternion_to_euler, angles.euler_to_quaternion(poses)),
        "rotation_6d_to_matrix": (angles.rotation_6d_to_matrix, angles.matrix_to_rotation_6d(angles.euler_to_matrix(poses))),
        "flip_rotation": (angles.flip_rotation, angles.euler_to_matrix(poses)),
    }
    for name, (fn, x) in cases.items():
        host = fn(x)
        assert isinstance(host, np.ndarray) and host.dtype == np.float64, name
        eager = fn(jnp.asarray(x, jnp.float32))
        jitted = jax.jit(fn)(jnp.asarray(x, jnp.float32))
        assert isinstance(eager, jax.Array) and eager.dtype == jnp.float32, name
        np.testing.assert_allclose(eager, jitted, atol=5e-4 if "euler" in name else 2e-5, err_msg=name)
        np.testing.assert_allclose(eager, host, atol=5e-4 if "euler" in name else 5e-6, err_msg=name)


def test_gradients_finite_at_identity_half_turn_and_gimbal_lock():
    poses = jnp.asarray([[0.0, 0.0, 0.0], [0.0, 0.0, 180.0], [90.0, 20.0, -10.0], [-90.0, 0.0, 0.0]])
    for fn in (angles.euler_to_quaternion, lambda p: angles.matrix_to_euler(angles.euler_to_matrix(p))):
        assert _finite(jax.jit(jax.grad(lambda p: jnp.sum(fn(p) ** 2)))(poses))
    # The exact matrix of yaw 90 (R12 = R22 = 0: atan2(0, 0)), and a zero 6D output.
    assert _finite(jax.jit(jax.grad(lambda r: jnp.sum(angles.matrix_to_euler(r))))(jnp.asarray(RY90, jnp.float32)))
    assert _finite(jax.jit(jax.grad(lambda x: jnp.sum(angles.rotation_6d_to_matrix(x))))(jnp.zeros(6)))


# --- flips -------------------------------------------------------------------------------


def test_flip_rotation_is_the_yaw_roll_negation():
    poses = _random_poses(200, seed=2, yaw_limit=179.0)  # any pose, past gimbal lock too
    flipped = angles.flip_rotation(angles.euler_to_matrix(poses))
    np.testing.assert_allclose(flipped, angles.euler_to_matrix(angles.flip_horizontal(poses)), atol=1e-12)
    f = np.diag([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(flipped, f @ angles.euler_to_matrix(poses) @ f, atol=1e-15)
    np.testing.assert_allclose(np.linalg.det(flipped), 1.0, atol=1e-12)
    np.testing.assert_allclose(angles.flip_rotation(flipped), angles.euler_to_matrix(poses), atol=1e-15)


def _assert_flipped_labels(before: np.ndarray, after: np.ndarray) -> None:
    np.testing.assert_allclose(
        angles.euler_to_matrix(after), angles.flip_rotation(angles.euler_to_matrix(before)), atol=1e-6
    )


def test_host_augmentation_flips_rotation_labels_and_crops_keep_them(tiny_data_dir):
    """augment.prepare: the same seed with and without flip cuts the same crop (scale, shift, margin);
    where the flip fired the image is the mirror and the label's matrix is F R F, else the label is the record's."""
    cfg = config_lib.base_config().data
    cfg.name, cfg.data_dir, cfg.image_size = "synthetic_heads/tiny", str(tiny_data_dir), 32
    cfg.scale, cfg.shift, cfg.crop_k = (0.8, 1.2), 0.1, (0.2, 0.4)
    record = pipeline.data_source(cfg, "train")[3]
    label = np.asarray(record["pose"], np.float32)
    assert abs(label[0]) > 1 and abs(label[2]) > 1  # a pose whose flip changes the matrix
    flips = []
    for seed in range(10):
        cfg.flip = True
        on = augment.prepare(record, cfg, np.random.default_rng(seed))
        cfg.flip = False
        off = augment.prepare(record, cfg, np.random.default_rng(seed))
        np.testing.assert_array_equal(off["pose"], label)  # crop, zoom and shift: a translation and a scale
        flipped = not np.array_equal(on["pose"], label)
        flips.append(flipped)
        if flipped:
            np.testing.assert_array_equal(on["image"], off["image"][:, ::-1])
            _assert_flipped_labels(label, on["pose"])
        else:
            np.testing.assert_array_equal(on["image"], off["image"])
    assert any(flips) and not all(flips)


def test_device_augmentation_flips_rotation_labels_and_crops_keep_them(fast_compile):
    batch, size = 8, 48
    rng = np.random.default_rng(0)
    labels = {"box": np.tile(np.float32([14.2, 12.5, 30.8, 33.1]), (batch, 1)),
              "source_box": np.tile(np.float32([0, 0, size, size]), (batch, 1)),
              "canvas_scale": np.ones((batch, 2), np.float32),
              "pose": _random_poses(batch, seed=5).astype(np.float32)}
    canvases = rng.integers(0, 256, (batch, size, size, 3), np.uint8)
    spec = da.AugmentSpec(image_size=32, crop="hopenet", scale=(0.8, 1.2), shift=0.1, flip=True)
    key, positions = jax.random.key(3), jnp.arange(batch, dtype=jnp.int32)
    out = jax.jit(da.augment, static_argnames=("spec", "train"))(canvases, labels, key, positions, 0, spec)
    flip = np.asarray(da.draw(key, spec, batch, step=0, positions=positions)["flip"])
    assert flip.any() and not flip.all()
    pose = np.asarray(out["pose"])
    np.testing.assert_array_equal(pose[~flip], labels["pose"][~flip])
    _assert_flipped_labels(labels["pose"][flip], pose[flip])


# --- heads -------------------------------------------------------------------------------


@pytest.mark.parametrize("head, key, size", [("rotation_6d", "rotation_6d", 6), ("quaternion", "quaternion", 4)])
def test_rotation_heads_on_resnets(head, key, size):
    """Heads read pooled features only; both ResNet block types (basic, bottleneck) in bf16 shown here."""
    images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    assert {"resnet_tiny", "resnet18", "resnet50"} <= set(RESNETS)
    for name in ("resnet_tiny", "resnet18", "resnet50"):
        cfg = config_lib.base_config().model
        cfg.name, cfg.head, cfg.head_kwargs, cfg.dtype = name, head, {}, "bfloat16"
        model = build_model(cfg)
        variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
        out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
        assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
            key: ((2, size), jnp.float32), "rotation": ((2, 3, 3), jnp.float32), "pose": ((2, 3), jnp.float32)
        }, name


@pytest.mark.parametrize("head", ["rotation_6d", "quaternion"])
def test_rotation_head_values(head, fast_compile):
    cfg = config_lib.base_config().model
    cfg.name, cfg.head, cfg.head_kwargs = "resnet_tiny", head, {}
    model = build_model(cfg)
    images = jax.random.uniform(jax.random.key(1), (3, 32, 32, 3))
    variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    head = {name: {**layer, "kernel": jnp.zeros_like(layer["kernel"])} for name, layer in variables["params"]["head"].items()}
    bias_only = {**variables, "params": {**variables["params"], "head": head}}
    start = apply(bias_only, images)  # the initial bias alone: the identity
    np.testing.assert_allclose(start["rotation"], np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-6)
    np.testing.assert_allclose(start["pose"], 0.0, atol=1e-5)
    out = apply(variables, images)
    r = np.asarray(out["rotation"], np.float64)
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)
    np.testing.assert_allclose(out["pose"], angles.matrix_to_euler(r), atol=1e-3)


# --- losses ------------------------------------------------------------------------------


@pytest.mark.parametrize("degrees", [5.0, 30.0, 90.0, 150.0])
def test_geodesic_loss_hand(degrees):
    # R_true = Rz(a) R_pred: the rotation between them is a about z whatever R_pred is.
    pred = angles.euler_to_matrix(np.array([[20.0, -10.0, 40.0], [0.0, 0.0, 0.0]]))
    true = _rz(degrees) @ pred
    got = losses.geodesic_loss(jnp.asarray(pred), jnp.asarray(true))
    assert got.shape == (2,)
    np.testing.assert_allclose(got, [math.radians(degrees)] * 2, atol=2e-4)
    jitted = jax.jit(losses.geodesic_loss)(jnp.asarray(pred), jnp.asarray(true))
    np.testing.assert_allclose(jitted, got, rtol=1e-6)


def test_geodesic_loss_clamp_and_gradients_at_0_and_180_degrees():
    # At identity the clamp leaves arccos(1 - eps) = sqrt(2 eps) (float32: 1 - 1e-7 rounds to 1 - 2^-23).
    identity = jnp.eye(3)[None]
    assert float(losses.geodesic_loss(identity, identity)[0]) == pytest.approx(math.acos(1 - 2**-23), rel=1e-3)
    half_turn = jnp.asarray(np.diag([1.0, -1.0, -1.0]), jnp.float32)[None]
    assert float(losses.geodesic_loss(half_turn, identity)[0]) == pytest.approx(math.pi, abs=1e-3)
    six = jnp.asarray([[1.0, 0, 0, 0, 1, 0], [1.0, 0, 0, 0, -1, 0]])  # I and Rx(180)
    through_6d = jax.jit(jax.grad(lambda x, t: losses.geodesic_loss(angles.rotation_6d_to_matrix(x), t).sum()))
    for target in (identity, half_turn):
        assert _finite(through_6d(six, jnp.broadcast_to(target, (2, 3, 3))))
    poses = jnp.asarray([[0.0, 0.0, 0.0], [0.0, 0.0, 180.0]])  # through Euler predictions too
    grad = jax.grad(lambda p: losses.geodesic_loss(angles.euler_to_matrix(p), jnp.tile(identity, (2, 1, 1))).sum())
    assert _finite(jax.jit(grad)(poses))


def test_quaternion_loss_hand_sign_blind_and_equal_to_geodesic():
    half = math.radians(40.0)  # a 80-degree turn about z
    q_true = jnp.asarray([[math.cos(half), 0, 0, math.sin(half)]])
    identity = jnp.asarray([[1.0, 0, 0, 0]])
    np.testing.assert_allclose(losses.quaternion_loss(identity, q_true), [math.radians(80)], atol=1e-6)
    np.testing.assert_allclose(losses.quaternion_loss(-identity, q_true), [math.radians(80)], atol=1e-6)
    np.testing.assert_allclose(losses.quaternion_loss(identity * 3, q_true, kind="inner"), [1 - math.cos(half)], atol=1e-6)
    poses = _random_poses(16, seed=4)
    pred, true = poses, poses[::-1]
    by_quaternion = losses.quaternion_loss(jnp.asarray(angles.euler_to_quaternion(pred), jnp.float32),
                                           jnp.asarray(angles.euler_to_quaternion(true), jnp.float32))
    np.testing.assert_allclose(by_quaternion, angles.rotation_angle_between(
        angles.euler_to_matrix(pred), angles.euler_to_matrix(true)), atol=2e-3)
    with pytest.raises(ValueError, match="unknown kind"):
        losses.quaternion_loss(identity, q_true, kind="l2")
    q = jnp.asarray([[1.0, 0, 0, 0], [-1.0, 0, 0, 0], [0.0, 0, 0, 1]])  # 0, 0 and 180 degrees from identity
    assert _finite(jax.jit(jax.grad(lambda x: losses.quaternion_loss(x, jnp.tile(identity, (3, 1))).sum()))(q))


def test_rotation_terms_mix_with_euler_terms_through_the_registry():
    """{"geodesic": 1, "mae": 0.1}: the labels (degrees) become matrices inside the loss; "mae" reads the
    decoded Euler angles ("pose")."""
    labels = np.array([[30.0, 0.0, 0.0], [0.0, -20.0, 10.0]], np.float32)
    pred_pose = np.array([[0.0, 0.0, 0.0], [0.0, -20.0, 10.0]], np.float32)
    outputs = {"rotation": jnp.asarray(angles.euler_to_matrix(pred_pose), jnp.float32), "pose": jnp.asarray(pred_pose),
               "quaternion": jnp.asarray(angles.euler_to_quaternion(pred_pose), jnp.float32)}
    total, parts = jax.jit(lambda o, y: losses.total_loss(o, y, [("geodesic", 1.0), ("mae", 0.1), ("quaternion", 2.0)]))(
        outputs, jnp.asarray(labels))
    # geodesic: 30 degrees on example 0, ~0 (the clamp) on example 1; mae: 30 on example 0.
    assert float(parts["geodesic"]) == pytest.approx(math.radians(30) / 2, abs=1e-3)
    assert float(parts["mae"]) == pytest.approx(15.0, abs=1e-4)
    assert float(parts["quaternion"]) == pytest.approx(math.radians(30) / 2, abs=1e-3)
    assert float(total) == pytest.approx(float(parts["geodesic"]) + 1.5 + 2 * float(parts["quaternion"]), rel=1e-6)
    with pytest.raises(ValueError, match="needs model output 'rotation'"):
        losses.total_loss({"logits": jnp.zeros((2, 3, 66)), "pose": outputs["pose"]}, labels, [("geodesic", 1.0)])


# --- metrics -----------------------------------------------------------------------------


def test_rotation_metrics_hand():
    pred = np.array([[30.0, 0.0, 0.0], [0.0, 0.0, 10.0], [0.0, 40.0, 0.0]])
    true = np.zeros((3, 3))
    np.testing.assert_allclose(metrics.geodesic_errors(pred, true), [30, 10, 40], atol=1e-9)
    # yaw turns left and front (about y), roll left and down (about z), pitch down and front (about x).
    np.testing.assert_allclose(metrics.vector_errors(pred, true), [[30, 0, 30], [10, 10, 0], [0, 40, 40]], atol=1e-6)
    result = metrics.rotation_errors(pred, true)
    assert list(result) == list(metrics.ROTATION_KEYS)
    assert result["geodesic"] == pytest.approx(80 / 3)
    assert result["mae_v"] == pytest.approx(160 / 9)
    # Gimbal lock: (90, 20, 0) and (90, 0, -20) are one rotation; the Euler MAE counts 40 / 3 degrees.
    np.testing.assert_allclose(metrics.geodesic_errors(np.array([[90.0, 20.0, 0.0]]), np.array([[90.0, 0.0, -20.0]])), [0.0], atol=1e-6)


def test_geodesic_curve_and_table_columns():
    pred, true = np.array([[30.0, 0.0, 0.0], [0.0, 0.0, 10.0]]), np.zeros((2, 3))
    curves = metrics.cumulative_error_curves(pred, true, thresholds=[0, 10, 29, 30])
    np.testing.assert_allclose(curves["geodesic"], [0.0, 0.5, 0.5, 1.0])
    row = {**metrics.mae(pred, true), **metrics.rotation_errors(pred, true)}
    lines = metrics.format_mae_table({"with": row, "euler only": metrics.mae(pred, true)}).splitlines()
    assert lines[0].split() == ["Method", "Yaw", "Pitch", "Roll", "MAE", "Geod.", "MAEv"]
    assert lines[1].split()[-2:] == ["20.00", "13.33"] and lines[2].split()[-2:] == ["-", "-"]


# --- training through the real pipeline ------------------------------------------------------


def test_quaternion_head_trains_with_a_mixed_loss(tiny_data_dir, fast_compile, tmp_path):
    """The quaternion head with {"quaternion": 1, "mae": 0.01} (the 6D head: test_experiments.METHODS)."""
    overrides = {**TINY, **RESNET_TINY, "data.data_dir": str(tiny_data_dir), "model.head": "quaternion",
                 "losses": {"quaternion": {"weight": 1.0}, "mae": {"weight": 0.01}}}
    config = config_lib.load_config(EXPERIMENTS / "synthetic_6d.py", overrides)
    (row,) = train.train_and_evaluate(config, tmp_path).values()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    loss = np.array([r["loss"] for r in records])
    assert len(loss) == 30 and np.all(np.isfinite(loss))
    assert loss[-5:].mean() < 0.8 * loss[:5].mean(), loss
    assert {"loss_quaternion", "loss_mae"} <= set(records[-1])
    assert set(metrics.ROTATION_KEYS) <= set(row) and all(math.isfinite(v) for v in row.values())
