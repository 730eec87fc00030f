import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io

from jaxpose import angles


def test_hopenet_bins_are_3_degrees_over_pm99():
    edges = angles.bin_edges(*angles.HOPENET_BINS)
    assert len(edges) == 67 and edges[0] == -99 and edges[-1] == 99
    np.testing.assert_allclose(np.diff(edges), 3.0)
    np.testing.assert_allclose(angles.bin_centers(-99, 99, 66)[:2], [-97.5, -94.5])


@pytest.mark.parametrize(
    "angle, expected",
    [(-99.0, 0), (-96.01, 0), (-96.0, 1), (0.0, 33), (-0.01, 32), (98.99, 65), (99.0, 65), (150.0, 65), (-150.0, 0)],
)
def test_angle_to_bin_edges(angle, expected):
    assert int(angles.angle_to_bin(jnp.float32(angle), -99, 99, 66)) == expected


def test_angle_to_bin_any_grid():
    np.testing.assert_array_equal(angles.angle_to_bin(jnp.array([-1.0, -0.5, 0.49, 0.5, 1.0]), -1, 1, 4), [0, 1, 2, 3, 3])


def test_decode_expectation_centre_and_left_edge():
    logits = jnp.full((66,), -1e9).at[33].set(0.0)  # all mass on bin 33 = [0, 3)
    assert float(angles.decode_expectation(logits, -99, 99)) == pytest.approx(1.5)
    assert float(angles.decode_expectation(logits, -99, 99, left_edge=True)) == pytest.approx(0.0)
    # Uniform probabilities over the symmetric grid decode to 0; half/half to the midpoint.
    assert float(angles.decode_expectation(jnp.zeros(66), -99, 99)) == pytest.approx(0.0, abs=1e-4)
    two = jnp.full((66,), -1e9).at[jnp.array([0, 65])].set(0.0)
    assert float(angles.decode_expectation(two, -99, 99, left_edge=True)) == pytest.approx((-99 + 96) / 2)


def test_decode_expectation_jit_matches_eager_and_batches():
    logits = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 66)) * 3
    eager = angles.decode_expectation(logits, -99, 99)
    jitted = jax.jit(lambda x: angles.decode_expectation(x, -99, 99))(logits)
    assert eager.shape == (4, 3)
    np.testing.assert_allclose(eager, jitted, rtol=1e-6, atol=1e-4)


def test_euler_matrix_round_trip_and_orthonormal():
    rng = np.random.default_rng(0)
    poses = np.stack([rng.uniform(-89, 89, 200), rng.uniform(-89, 89, 200), rng.uniform(-179, 179, 200)], -1)
    matrices = angles.euler_to_matrix(poses)
    np.testing.assert_allclose(matrices @ np.swapaxes(matrices, -1, -2), np.broadcast_to(np.eye(3), (200, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(matrices), 1.0, atol=1e-12)
    np.testing.assert_allclose(angles.matrix_to_euler(matrices), poses, atol=1e-9)


def test_euler_signs_follow_the_documented_convention():
    nose, top = np.array([0, 0, -1.0]), np.array([0, -1.0, 0])  # camera frame: x right, y down
    assert (angles.euler_to_matrix([30, 0, 0]) @ nose)[0] < 0  # yaw > 0: nose to image-left
    assert (angles.euler_to_matrix([0, 30, 0]) @ nose)[1] < 0  # pitch > 0: looks up
    assert (angles.euler_to_matrix([0, 0, 30]) @ top)[0] > 0  # roll > 0: top to image-right


def test_flip_negates_yaw_and_roll_and_is_an_involution():
    pose = np.array([[10.0, -20.0, 30.0]], np.float32)
    np.testing.assert_array_equal(angles.flip_horizontal(pose), [[-10.0, -20.0, -30.0]])
    np.testing.assert_array_equal(angles.flip_horizontal(angles.flip_horizontal(pose)), pose)
    # The mirror of a rotation M R M (M = diag(-1, 1, 1)) has the flipped Euler angles.
    mirror = np.diag([-1.0, 1.0, 1.0])
    r = angles.euler_to_matrix(pose[0])
    np.testing.assert_allclose(angles.matrix_to_euler(mirror @ r @ mirror), angles.flip_horizontal(pose[0]), atol=1e-5)


def test_pose_para_conversion_on_aflw2000_and_300wlp_fixtures(testdata):
    for mat_path in [testdata / "aflw2000" / "image00050.mat", testdata / "300w_lp" / "IBUG_image_008_1_0.mat"]:
        pose_para = scipy.io.loadmat(mat_path)["Pose_Para"]
        expected = np.degrees(pose_para[0, [1, 0, 2]])
        np.testing.assert_allclose(angles.from_pose_para(pose_para)[0], expected, rtol=1e-6)
    # image00050: yaw 0.9, pitch -4.7, roll 5.6 (README of the fixtures).
    pose = angles.from_pose_para(scipy.io.loadmat(testdata / "aflw2000" / "image00050.mat")["Pose_Para"])[0]
    np.testing.assert_allclose(pose, [0.9, -4.7, 5.6], atol=0.06)


def test_biwi_conversion_on_fixture(testdata):
    rotation = np.loadtxt(testdata / "biwi" / "hpdb" / "01" / "frame_00003_pose.txt", max_rows=3)
    np.testing.assert_allclose(angles.from_biwi_rotation(rotation), [3.3, 7.6, -1.6], atol=0.05)


def test_protocol_range():
    np.testing.assert_array_equal(angles.in_protocol_range(np.array([[99, 0, 0], [99.01, 0, 0], [0, -120, 0]])), [True, False, False])
