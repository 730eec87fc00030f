"""FSA-Net and SSR-Net-MD: shapes, sizes, the formulas checked by hand, gradients, jit."""

import flax.linen as nn
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpose.models import fsanet
from jaxpose.models.fsanet import (
    AGGREGATIONS,
    DEPTHWISE,
    SCORINGS,
    FSANet,
    MetricAggregation,
    NetVLADAggregation,
    SSRNetMD,
    StructureMapping,
    caps_fusion,
    dynamic_routing,
    depthwise_conv,
    resolve_depthwise,
    squash,
    ssr_decode,
)
from jaxpose.pretrained import fsanet_keras_variables


# Every test here compiles small programs: skip XLA's optimisation passes (conftest.fast_compile).
pytestmark = pytest.mark.usefixtures("fast_compile")

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
                                    {"scoring": "none", "num_primcaps": 21}, {"depthwise": "fft"}])
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


# --- depthwise formulations and pooling -----------------------------------------------------------


def _relative(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.maximum(jnp.max(jnp.abs(b)), 1e-30))


@pytest.mark.parametrize("x_shape,kernel_hw", [
    ((2, 8, 8, 5), (3, 3)),    # the FSA-Net case
    ((3, 5, 7, 3), (3, 3)),    # odd, non-square image, 3 channels like the first block
    ((2, 6, 9, 4), (2, 2)),    # even kernel: 'SAME' pads 0 before, 1 after
    ((1, 7, 6, 2), (5, 3)),
    ((2, 4, 4, 3), (1, 1)),
])
def test_depthwise_formulations_equal_lax_conv(x_shape, kernel_hw):
    """Forward and both gradients of every formulation vs lax.conv_general_dilated (feature_group_count = C)."""
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], x_shape)
    kernel = jax.random.normal(keys[1], (*kernel_hw, 1, x_shape[-1]))
    cotangent = jax.random.normal(keys[2], x_shape)
    reference = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                             feature_group_count=x_shape[-1])
    ref_out, ref_vjp = jax.vjp(lambda a, k: depthwise_conv(a, k, "conv"), x, kernel)
    np.testing.assert_array_equal(ref_out, reference)
    ref_dx, ref_dk = ref_vjp(cotangent)
    for method in ("conv", "shifts"):
        out, vjp = jax.vjp(lambda a, k: depthwise_conv(a, k, method), x, kernel)
        dx, dk = vjp(cotangent)
        assert out.shape == x_shape and out.dtype == jnp.float32
        for got, want in ((out, reference), (dx, ref_dx), (dk, ref_dk)):
            assert _relative(got, want) < 1e-5, (method, _relative(got, want))
        jitted = jax.jit(lambda a, k: depthwise_conv(a, k, method))(x, kernel)
        np.testing.assert_allclose(jitted, out, rtol=1e-5, atol=1e-5)


def test_depthwise_bfloat16_accumulates_in_float32():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16)) * 100
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 1, 16))
    exact = depthwise_conv(x, kernel, "conv")
    low = depthwise_conv(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16), "shifts")
    assert low.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(low)))
    # bf16 inputs (8-bit mantissa) and one rounding of the float32 sum
    assert _relative(low.astype(jnp.float32), exact) < 2e-2


def test_depthwise_auto_picks_by_backend(monkeypatch):
    assert set(DEPTHWISE) == {"auto", "conv", "shifts"}
    assert resolve_depthwise("conv") == "conv" and resolve_depthwise("shifts") == "shifts"
    for backend, method in (("cpu", "shifts"), ("gpu", "conv"), ("tpu", "conv")):
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        assert resolve_depthwise("auto") == method
    with pytest.raises(ValueError, match="unknown depthwise formulation 'fft'"):
        resolve_depthwise("fft")


@pytest.mark.parametrize("model_cls", [FSANet, SSRNetMD])
def test_depthwise_keeps_the_parameter_tree(model_cls):
    """Same variable names and shapes whichever formulation runs (checkpoints, official weights)."""
    images = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
    trees = [jax.eval_shape(lambda x, m=m: model_cls(depthwise=m).init(jax.random.key(0), x, train=False), images)
             for m in DEPTHWISE]
    for tree in trees[1:]:
        assert jax.tree.structure(tree) == jax.tree.structure(trees[0])
        assert [leaf.shape for leaf in jax.tree.leaves(tree)] == [leaf.shape for leaf in jax.tree.leaves(trees[0])]
    kernel = trees[0]["params"]["streams"]["relu_1"]["depthwise"]["kernel"]
    assert kernel.shape == (3, 3, 1, 16)


class _NNConvBlock(nn.Module):
    """The separable block as first written, with nn.Conv(feature_group_count=C) for the depthwise step."""

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x = nn.Conv(c, (3, 3), padding="SAME", feature_group_count=c, use_bias=False,
                    kernel_init=nn.initializers.glorot_uniform(), name="depthwise")(x)
        x = nn.Conv(32, (1, 1), kernel_init=nn.initializers.glorot_uniform(), name="pointwise")(x)
        return jax.nn.relu(nn.BatchNorm(use_running_average=True, momentum=0.99, epsilon=1e-3, name="bn")(x))


@pytest.mark.parametrize("method", DEPTHWISE)
def test_sepconv_block_same_variables_and_outputs_as_nn_conv(method):
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 16))
    old = _NNConvBlock().init(jax.random.key(3), x)
    new = fsanet.SepConvBlock(32, "relu", depthwise=method).init(jax.random.key(3), x, train=False)
    assert jax.tree.structure(new) == jax.tree.structure(old)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(old)):
        np.testing.assert_array_equal(a, b)  # same names, shapes and initial values
    got = fsanet.SepConvBlock(32, "relu", depthwise=method).apply(old, x, train=False)
    np.testing.assert_allclose(got, _NNConvBlock().apply(old, x), rtol=1e-5, atol=1e-5)


def test_fsanet_shifts_equal_conv_train_and_eval():
    """Whole model, depthwise "shifts" vs "conv": poses, updated batch statistics and parameter gradients."""
    images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3)) * 255
    models = {m: FSANet(scoring="conv", aggregation="capsule", depthwise=m) for m in ("conv", "shifts")}
    variables = _variables(models["conv"], images, train=False)
    poses = {m: model.apply(variables, images, train=False)["pose"] for m, model in models.items()}
    np.testing.assert_allclose(poses["shifts"], poses["conv"], rtol=1e-5, atol=1e-4)
    grads, stats = {}, {}
    for m, model in models.items():
        fn = jax.jit(jax.value_and_grad(_pose_loss(model, variables, images))).lower(variables["params"])
        _, grads[m] = fn.compile(FAST_COMPILE)(variables["params"])
        stats[m] = model.apply(variables, images, train=True, mutable=["batch_stats"])[1]["batch_stats"]
    # A pointwise bias feeds a training-mode BatchNorm, which subtracts it again: its exact gradient is 0
    # and both formulations give rounding noise there, far below the other gradients.
    largest = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads["conv"]))
    for (path, b), a in zip(jax.tree_util.tree_flatten_with_path(grads["conv"])[0], jax.tree.leaves(grads["shifts"])):
        error = float(jnp.max(jnp.abs(a - b)))
        if "pointwise" in jax.tree_util.keystr(path) and path[-1].key == "bias":
            assert error < 1e-6 * largest
        else:  # 1.6e-5 at most here: rounding through 14 BatchNorms and the routing
            assert error < 1e-4 * float(jnp.max(jnp.abs(b))), jax.tree_util.keystr(path)
    for a, b in zip(jax.tree.leaves(stats["shifts"]), jax.tree.leaves(stats["conv"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_fsanet_bfloat16_shifts_finite():
    images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3)) * 255
    model = FSANet(scoring="var", aggregation="capsule", dtype=jnp.bfloat16, depthwise="shifts")
    variables = _variables(model, images, train=False)
    pose = jax.jit(lambda v, x: model.apply(v, x, train=False)["pose"])(variables, images)
    assert pose.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(pose)))
    grad_fn = jax.jit(jax.grad(_pose_loss(model, variables, images))).lower(variables["params"])
    grads = grad_fn.compile(FAST_COMPILE)(variables["params"])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_official_weights_same_pose_with_either_depthwise(testdata):
    """The official FSA-Caps 1x1 weights: depthwise "shifts" and "conv" predict the same poses (0-255 input)."""
    images = jax.random.uniform(jax.random.key(5), (4, 64, 64, 3)) * 255
    h5 = testdata / "fsanet_keras" / OFFICIAL_FILES[("conv", "capsule")]
    poses = {}
    for method in ("conv", "shifts"):
        model = FSANet(scoring="conv", aggregation="capsule", num_primcaps=21, depthwise=method)
        variables = fsanet_keras_variables(h5, model)
        poses[method] = jax.jit(lambda v, x, model=model: model.apply(v, x, train=False)["pose"])(variables, images)
    assert bool(jnp.all(jnp.isfinite(poses["conv"])))
    np.testing.assert_allclose(poses["shifts"], poses["conv"], atol=1e-3)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_equals_flax_pooling_values_and_gradients(kind):
    """The reshape pools equal nn.max_pool / nn.avg_pool (2x2, stride 2), gradients included: with ties the
    max routes the whole gradient to the window's first maximum, as reduce_window does."""
    rng = np.random.default_rng(0)
    ties = jnp.asarray(rng.integers(0, 3, (2, 8, 6, 3)), jnp.float32)  # many equal values per window
    smooth = jnp.asarray(rng.normal(size=(2, 8, 6, 3)), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=(2, 4, 3, 3)), jnp.float32)
    flax_pool = nn.max_pool if kind == "max" else nn.avg_pool
    reference = lambda x: flax_pool(x, (2, 2), strides=(2, 2))
    for x in (ties, smooth):
        out, vjp = jax.vjp(lambda a: fsanet._pool(kind, a), x)
        ref_out, ref_vjp = jax.vjp(reference, x)
        np.testing.assert_allclose(out, ref_out, rtol=1e-6)
        np.testing.assert_allclose(vjp(cotangent)[0], ref_vjp(cotangent)[0], rtol=1e-6)
        tangent = jax.jvp(lambda a: fsanet._pool(kind, a), (x,), (x * 0.5 + 1,))[1]
        np.testing.assert_allclose(tangent, jax.jvp(reference, (x,), (x * 0.5 + 1,))[1], rtol=1e-6)
    if kind == "max":
        grad = jax.grad(lambda a: jnp.sum(fsanet._pool("max", a)))(jnp.ones((1, 2, 2, 1)))
        np.testing.assert_array_equal(grad[0, :, :, 0], [[1, 0], [0, 0]])
