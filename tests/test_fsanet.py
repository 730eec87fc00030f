"""FSA-Net and SSR-Net-MD: shapes, sizes, the formulas checked by hand, gradients, jit."""

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpose.models.fsanet import (
    AGGREGATIONS,
    SCORINGS,
    FSANet,
    MetricAggregation,
    NetVLADAggregation,
    SSRNetMD,
    StructureMapping,
    caps_fusion,
    dynamic_routing,
    squash,
    ssr_decode,
)

IMAGES = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
# Model sizes (MB) in the FSA-Net paper's AFLW2000 comparison table.
PAPER_MB = {"ssrnet_md": 1.1, "fsa_caps_fusion": 5.1}
# XLA CPU spends most of a test's time optimising the backward pass; these checks need no speed.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
OFFICIAL_FILES = {
    ("conv", "capsule"): "fsanet_capsule_3_16_2_21_5.h5",
    ("var", "capsule"): "fsanet_var_capsule_3_16_2_21_5.h5",
    ("none", "capsule"): "fsanet_noS_capsule_3_16_2_192_5.h5",
    ("conv", "netvlad"): "fsanet_netvlad_3_16_2_21_5.h5",
    ("var", "netvlad"): "fsanet_var_netvlad_3_16_2_21_5.h5",
    ("conv", "metric"): "fsanet_metric_3_16_2_21_5.h5",
}


def _shapes(model, images=IMAGES):
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    outputs = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
    return variables, outputs


def _variables(model, *inputs, scale: float = 0.2, **kwargs):
    """Variables of `model` filled from numpy, without compiling an init (slow on CPU).

    BatchNorm scale and running variance 1, running mean 0, everything else N(0, scale^2).
    """
    shapes = jax.eval_shape(lambda *x: model.init(jax.random.key(0), *x, **kwargs), *inputs)
    rng = np.random.default_rng(0)
    constants = {"scale": 1.0, "var": 1.0, "mean": 0.0}

    def fill(path, leaf):
        name = path[-1].key
        value = np.full(leaf.shape, constants[name]) if name in constants else rng.normal(size=leaf.shape) * scale
        return jnp.asarray(value, jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _count(variables) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables))


@pytest.mark.parametrize("scoring", SCORINGS)
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_output_shape_every_variant(scoring, aggregation):
    _, outputs = _shapes(FSANet(scoring=scoring, aggregation=aggregation))
    assert set(outputs) == {"pose"}
    assert outputs["pose"].shape == (2, 3) and outputs["pose"].dtype == jnp.float32


def test_bf16_compute_keeps_float32_params_and_output():
    variables, outputs = _shapes(FSANet(dtype=jnp.bfloat16))
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert outputs["pose"].dtype == jnp.float32


@pytest.mark.parametrize("variant", sorted(OFFICIAL_FILES))
def test_param_count_equals_official_h5(variant, testdata):
    with h5py.File(testdata / "fsanet_keras" / OFFICIAL_FILES[variant], "r") as handle:
        official = []
        handle.visititems(lambda _, obj: official.append(obj.size) if isinstance(obj, h5py.Dataset) else None)
    variables, _ = _shapes(FSANet(scoring=variant[0], aggregation=variant[1]))
    assert _count(variables) == sum(official)


def test_model_sizes_close_to_paper():
    """float32 parameters vs the paper's file sizes (HDF5 adds a few % of overhead, never less)."""
    fusion, _ = _shapes(caps_fusion())
    ssr, _ = _shapes(SSRNetMD())
    for name, variables in (("fsa_caps_fusion", fusion), ("ssrnet_md", ssr)):
        ratio = _count(variables) * 4 / 1e6 / PAPER_MB[name]
        assert 0.8 < ratio <= 1.0, (name, ratio)


def test_ssrnet_md_layers_match_official_config():
    """Parameter count of the official ssrnet_mt.json layer list, derived layer by layer."""
    widths = (3, 16, 32, 32, 64, 64, 128, 128)
    stream = sum(9 * cin + cin * cout + cout + 4 * cout for cin, cout in zip(widths, widths[1:]))
    fusion = 2 * sum(cin * 64 + 64 for cin in (128, 64, 32))  # conv2d_1..6 (1x1, 64)
    flat = (4 * 4 * 64, 4 * 4 * 64, 8 * 8 * 64)  # pooled stage maps at 64 px
    heads = sum(f * 9 + 9 + 2 * (f * 6 + 6 + 6 * 3 + 3) for f in flat)
    variables, outputs = _shapes(SSRNetMD())
    assert _count(variables) == 2 * stream + fusion + heads
    assert outputs["pose"].shape == (2, 3)


def test_ssr_decode_by_hand():
    p = [jnp.array([[[0.2, 0.5, 0.3]]]), jnp.array([[[1.0, 0.0, 0.0]]]), jnp.array([[[0.0, 0.0, 1.0]]])]
    eta = [jnp.array([[0.1]]), jnp.array([[-0.5]]), jnp.array([[0.0]])]
    delta = [jnp.array([[0.2]]), jnp.array([[0.0]]), jnp.array([[-0.5]])]
    # stage 1: (-0.9*0.2 + 0.1*0.5 + 1.1*0.3) / (3*1.2); stage 2: -1.5 / (3.6*3); stage 3: 1 / (10.8*3*0.5)
    expected = 99 * (0.2 / 3.6 - 1.5 / 10.8 + 1 / 16.2)
    np.testing.assert_allclose(ssr_decode(p, eta, delta), [[expected]], rtol=1e-6)
    np.testing.assert_allclose(jax.jit(ssr_decode)(p, eta, delta), [[expected]], rtol=1e-6)


def test_squash_by_hand():
    v = squash(jnp.array([[3.0, 4.0]]))
    np.testing.assert_allclose(v, [[3 * 5 / 26, 4 * 5 / 26]], rtol=1e-6)  # |s|^2/(1+|s|^2) * s/|s|


def _routing_reference(u_hat: np.ndarray, routings: int) -> np.ndarray:
    """Per-example loops over capsules, as in Sabour et al. Procedure 1."""
    out = np.zeros((u_hat.shape[0], u_hat.shape[1], u_hat.shape[3]))
    for b in range(u_hat.shape[0]):
        logits = np.zeros(u_hat.shape[1:3])
        for r in range(routings):
            c = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
            for j in range(u_hat.shape[1]):
                s = (c[j][:, None] * u_hat[b, j]).sum(0)
                out[b, j] = s * (s @ s) / (1 + s @ s) / np.sqrt(s @ s + 1e-7)
            if r < routings - 1:
                logits = logits + np.einsum("jd,jid->ji", out[b], u_hat[b])
    return out


@pytest.mark.parametrize("routings", [1, 2, 3])
def test_dynamic_routing_matches_reference(routings):
    u_hat = np.random.default_rng(0).normal(size=(2, 3, 5, 4))
    got = dynamic_routing(jnp.asarray(u_hat, jnp.float32), routings)
    np.testing.assert_allclose(got, _routing_reference(u_hat, routings), rtol=2e-5, atol=1e-6)


def test_structure_mapping_rows_are_l1_normalised():
    """With zero kernels M_k and C are constant, so every primary capsule is the mean pixel feature."""
    maps = jax.random.normal(jax.random.key(1), (2, 3, 2, 2, 4))
    mapping = StructureMapping("conv", caps_per_stage=7, m_dim=5)
    variables = _variables(mapping, maps)
    variables = jax.tree.map(lambda a: jnp.zeros_like(a) if a.ndim > 1 else jnp.full_like(a, 0.3), variables)
    capsules = jax.jit(mapping.apply)(variables, maps)
    assert capsules.shape == (2, 21, 4)
    mean_pixel = maps.reshape(2, 12, 4).mean(1, keepdims=True)
    np.testing.assert_allclose(capsules, np.broadcast_to(mean_pixel, (2, 21, 4)), rtol=1e-5, atol=1e-6)
    pixels = StructureMapping("none", 7, 5).apply({}, maps)
    np.testing.assert_array_equal(pixels, maps.reshape(2, 12, 4))


def test_netvlad_matches_loupe_steps():
    x = np.random.default_rng(1).normal(size=(2, 6, 4)).astype(np.float32)
    layer = NetVLADAggregation(num_capsule=3, dim_capsule=2)
    variables = _variables(layer, x, scale=0.5)
    p = {k: np.asarray(v) for k, v in variables["params"].items()}
    # LOUPE: softmax assignment, residual sums (D, K), intra- then global L2 norm, projection.
    logits = x @ p["cluster_kernel"] + p["cluster_bias"]
    assign = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    vlad = np.transpose(np.transpose(assign, (0, 2, 1)) @ x, (0, 2, 1))
    vlad = vlad - assign.sum(1, keepdims=True) * p["cluster_centers"]
    vlad = vlad / np.linalg.norm(vlad, axis=1, keepdims=True)
    vlad = vlad.reshape(2, 12)
    vlad = vlad / np.linalg.norm(vlad, axis=1, keepdims=True)
    expected = (vlad @ p["projection"]).reshape(2, 3, 2)
    np.testing.assert_allclose(jax.jit(layer.apply)(variables, x), expected, rtol=1e-4, atol=1e-5)


def test_metric_aggregation_by_matmuls():
    x = np.random.default_rng(2).normal(size=(2, 6, 4)).astype(np.float32)
    layer = MetricAggregation(num_capsule=3, dim_capsule=2)
    variables = _variables(layer, x)
    p = variables["params"]
    expected = np.transpose(np.transpose(x @ p["feature_kernel"], (0, 2, 1)) @ p["capsule_kernel"], (0, 2, 1))
    np.testing.assert_allclose(jax.jit(layer.apply)(variables, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"scoring": "uniform"}, {"aggregation": "mean"}, {"num_capsule": 4},
                                    {"scoring": "none", "num_primcaps": 21}])
def test_bad_settings_raise(kwargs):
    with pytest.raises(ValueError, match="FSANet"):
        _shapes(FSANet(**kwargs))


def _pose_loss(model, variables, images):
    def loss(params):
        out, _ = model.apply({**variables, "params": params}, images, train=True, mutable=["batch_stats"])
        return jnp.mean(jnp.abs(out["pose"] - jnp.array([10.0, -5.0, 3.0])))

    return loss


def test_gradients_finite():
    """Training gradients on one tiny batch (16 px keeps the CPU compile short)."""
    images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3)) * 255
    model = FSANet(scoring="var", aggregation="capsule")
    variables = _variables(model, images, train=False)
    grad_fn = jax.jit(jax.grad(_pose_loss(model, variables, images))).lower(variables["params"])
    grads = grad_fn.compile(FAST_COMPILE)(variables["params"])
    leaves = jax.tree.leaves(grads)
    assert len(leaves) == len(jax.tree.leaves(variables["params"]))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert all(float(jnp.sum(jnp.abs(g))) > 0 for g in leaves)


def test_jit_equals_eager():
    model = FSANet(scoring="conv", aggregation="netvlad")
    images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3)) * 255
    variables = _variables(model, images, train=False)
    eager = model.apply(variables, images, train=False)["pose"]
    jitted = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)["pose"]
    assert bool(jnp.all(jnp.isfinite(eager)))
    np.testing.assert_allclose(jitted, eager, rtol=1e-4, atol=1e-3)
