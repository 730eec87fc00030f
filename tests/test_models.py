import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpose import models
from jaxpose.config import base_config
from jaxpose.models.heads import BinnedHead, RegressionHead


# Every test here compiles small programs: skip XLA's optimisation passes (conftest.fast_compile).
pytestmark = pytest.mark.usefixtures("fast_compile")


def _count(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name, expected", [("resnet18", 11_176_512), ("resnet50", 23_508_032)])
def test_resnet_parameter_counts_match_torchvision_without_fc(name, expected):
    model = models.get_model(name)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)), train=False))
    assert _count(variables["params"]) == expected  # torchvision's count minus its 1000-way fc


def test_pose_model_outputs_and_bf16_compute_keeps_float32_params():
    config = base_config()
    config.model.name, config.model.dtype = "resnet_tiny", "bfloat16"
    config.model.head_kwargs.granularities = (66, 18)
    model = models.build_model(config.model)
    images = jnp.zeros((2, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), images, train=False)
    assert {x.dtype for x in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float32)}
    out = model.apply(variables, images, train=False)
    assert out["logits"].shape == (2, 3, 66) and out["pose"].shape == (2, 3)
    assert [x.shape for x in out["logits_multi"]] == [(2, 3, 66), (2, 3, 18)]
    assert out["logits"].dtype == jnp.float32
    assert set(variables["params"]["head"]) == {"fc_yaw", "fc_pitch", "fc_roll", "fc_yaw_18", "fc_pitch_18", "fc_roll_18"}


@pytest.mark.parametrize("kind", ["dot", "linear", "cosine", "arccos"])
def test_regression_head_bounds_and_units(kind):
    features = jax.random.normal(jax.random.PRNGKey(1), (16, 8)) * 100
    head = RegressionHead(kind=kind)
    variables = head.init(jax.random.PRNGKey(0), features)
    out = head.apply(variables, features)
    np.testing.assert_allclose(out["pose"], np.degrees(out["regression"]), rtol=1e-5)
    if kind not in ("dot", "linear"):
        assert np.all(np.abs(out["regression"]) <= np.pi / 2 + 1e-6)
    grads = jax.grad(lambda v: head.apply(v, features)["regression"].sum())(variables)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_regression_head_equations_by_hand():
    f = jnp.array([[3.0, 4.0]])  # |F| = 5
    w = jnp.array([[1.0, 0.0, 3.0], [0.0, 1.0, 4.0]])  # columns: e1, e2, (3, 4)
    variables = {"params": {"kernel": w}}
    cosine = RegressionHead(kind="cosine").apply(variables, f)["regression"]
    np.testing.assert_allclose(cosine, [[0.6 * np.pi / 2, 0.8 * np.pi / 2, 1.0 * np.pi / 2]], rtol=1e-5)
    arccos = RegressionHead(kind="arccos").apply(variables, f)["regression"]
    np.testing.assert_allclose(arccos[0, :2], [np.arccos(0.6) - np.pi / 2, np.arccos(0.8) - np.pi / 2], rtol=1e-5)
    # "linear": W^T F + b in degrees (Hopenet's regression baseline): (3, 4, 9 + 16) + (1, 2, 3).
    linear = RegressionHead(kind="linear").apply({"params": {"kernel": w, "bias": jnp.array([1.0, 2.0, 3.0])}}, f)
    np.testing.assert_allclose(linear["pose"], [[4.0, 6.0, 28.0]], rtol=1e-6)
    np.testing.assert_allclose(linear["regression"], np.radians([[4.0, 6.0, 28.0]]), rtol=1e-6)


def test_binned_head_left_edge_decoding():
    head = BinnedHead(left_edge=True)
    features = jnp.ones((1, 4))
    variables = head.init(jax.random.PRNGKey(0), features)
    out = head.apply(variables, features)
    centre = BinnedHead().apply(variables, features)["pose"]
    np.testing.assert_allclose(out["pose"] + 1.5, centre, atol=1e-4)  # left edge = centre - width / 2


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet7'.*resnet18"):
        models.get_model("resnet7")
    with pytest.raises(ValueError, match="unknown head 'mlp'.*binned"):
        models.get_head("mlp")
