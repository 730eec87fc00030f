"""PyTorch references of jaxpose.bench_torch: same parameters as jaxpose's models, finite outputs, they train.

jaxpose's side is traced with `jax.eval_shape` only (no ResNet-50 is initialised).
Counts compare like with like: torch parameters vs jaxpose "params", torch
BatchNorm running means/variances (buffers) vs jaxpose "batch_stats".
"""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from jaxpose import bench_torch  # noqa: E402
from jaxpose.config import load_config  # noqa: E402
from jaxpose.models import build_model  # noqa: E402

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
FSA_CAPS_1X1_OFFICIAL = 238_471  # every array of the official FSA-Caps 1x1 .h5, BN moving statistics included

CASES = {
    "resnet10_w24": ("synthetic_hopenet.py", {}),
    "resnet50_224": ("hopenet_300wlp.py", {}),
    "fsanet_caps_1x1": ("synthetic_fsanet.py", {}),
    "fsanet_var_netvlad": ("synthetic_fsanet.py", {"model.kwargs.scoring": "var",
                                                   "model.kwargs.aggregation": "netvlad"}),
    "fsanet_wo_metric": ("synthetic_fsanet.py", {"model.kwargs.scoring": "none", "model.kwargs.num_primcaps": None,
                                                 "model.kwargs.aggregation": "metric"}),
    "ssrnet_md": ("synthetic_ssrnet_md.py", {}),
    "hybrid_resnet": ("synthetic_hybrid.py", {}),
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These tiny steps need no parallelism; two OpenMP threads spin-waiting on a busy 2-core machine run
    them up to 10x slower (torch's default OMP_WAIT_POLICY)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _config(case: str):
    name, overrides = CASES[case]
    return load_config(EXPERIMENTS / name, overrides)


def _jax_sizes(config) -> tuple[list[int], list[int]]:
    """Sorted element counts of jaxpose's params and batch_stats leaves."""
    model, size = build_model(config.model), config.data.image_size
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    sizes = lambda tree: sorted(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))  # noqa: E731
    return sizes(variables["params"]), sizes(variables.get("batch_stats", {}))


def _batch(config, n: int, size: int | None = None, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    size = size or config.data.image_size
    return {"image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
            "pose": rng.uniform(-90, 90, (n, 3)).astype(np.float32)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_parameter_count_and_layer_sizes_equal_jaxpose(case):
    """Same total and the same multiset of tensor sizes (layouts differ: NHWC/HWIO vs NCHW/OIHW)."""
    config = _config(case)
    reference = bench_torch.build_reference(config)
    params, batch_stats = _jax_sizes(config)
    assert bench_torch.parameter_count(reference) == sum(params)
    assert sorted(p.numel() for p in reference.parameters()) == params
    stats = sorted(b.numel() for n, b in reference.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert stats == batch_stats
    assert bench_torch.parameter_count(reference, include_batch_stats=True) == sum(params) + sum(batch_stats)


def test_fsanet_caps_1x1_matches_official_count():
    reference = bench_torch.build_reference(_config("fsanet_caps_1x1"))
    assert bench_torch.parameter_count(reference) == 236_615
    assert bench_torch.parameter_count(reference, include_batch_stats=True) == FSA_CAPS_1X1_OFFICIAL


@pytest.mark.parametrize("case, size", [("resnet10_w24", None), ("resnet50_224", 64), ("fsanet_caps_1x1", None),
                                        ("ssrnet_md", None), ("hybrid_resnet", None)])
def test_forward_finite_outputs_of_jaxpose_shapes(case, size):
    config = _config(case)
    reference = bench_torch.build_reference(config).eval()
    images, _ = bench_torch.to_device(config, _batch(config, 3, size), torch.device("cpu"))
    with torch.no_grad():
        outputs = reference(images)
    assert outputs["pose"].shape == (3, 3) and outputs["pose"].dtype == torch.float32
    assert torch.isfinite(outputs["pose"]).all()
    if config.model.name.startswith("resnet"):
        granularities = config.model.head_kwargs.granularities
        assert outputs["logits"].shape == (3, 3, granularities[0])
        assert [tuple(x.shape) for x in outputs["logits_multi"]] == [(3, 3, k) for k in granularities]


@pytest.mark.parametrize("case", ["resnet10_w24", "fsanet_caps_1x1"])
def test_loss_decreases_on_a_fixed_batch(case):
    torch.manual_seed(0)
    config = _config(case)
    _, step = bench_torch.make_train_step(config, "cpu")
    images, pose = bench_torch.to_device(config, _batch(config, 4), torch.device("cpu"))
    history = [float(step(images, pose)) for _ in range(5)]
    assert all(math.isfinite(v) for v in history), history
    assert history[-1] < history[0], history


def test_hopenet_loss_by_hand():
    """One angle row per example: CE against bin floor((a - lo) / width) + alpha * (expectation - a)^2."""
    logits = torch.tensor([[[0.0, 1.0, 2.0]] * 3])
    angles = torch.tensor([[-50.0, 10.0, 80.0]])
    p = torch.softmax(logits[0, 0], -1)
    expectation = float(p @ torch.tensor([-66.0, 0.0, 66.0]))
    ce = -torch.log(p)
    expected = sum(float(ce[b]) + 2.0 * (expectation - a) ** 2 for b, a in ((0, -50.0), (1, 10.0), (2, 80.0)))
    value = bench_torch.hopenet_loss(logits, angles, alpha=2.0, lo=-99.0, hi=99.0)
    np.testing.assert_allclose(value.numpy(), [expected], rtol=1e-5)


def test_reference_loss_matches_jaxpose_total_loss():
    from jaxpose import losses, train

    config = _config("hybrid_resnet")
    rng = np.random.default_rng(1)
    granularities = config.model.head_kwargs.granularities
    logits = [rng.normal(size=(4, 3, k)).astype(np.float32) for k in granularities]
    pose = rng.uniform(-95, 95, (4, 3)).astype(np.float32)
    outputs = {"logits": logits[0], "logits_multi": tuple(logits), "pose": pose[::-1].copy()}
    expected, _ = losses.total_loss(outputs, pose, train.loss_terms(config))
    torch_outputs = {"logits": torch.from_numpy(logits[0]), "logits_multi": [torch.from_numpy(x) for x in logits],
                     "pose": torch.from_numpy(outputs["pose"])}
    value = bench_torch.reference_loss(config)(torch_outputs, torch.from_numpy(pose))
    np.testing.assert_allclose(float(value), float(expected), rtol=1e-5)


def test_images_per_sec_runs_on_the_given_batch():
    config = _config("fsanet_caps_1x1")
    rate = bench_torch.torch_images_per_sec(config, _batch(config, 4), steps=1, device="cpu", warmup=1)
    assert math.isfinite(rate) and rate > 0


def test_uncovered_configs_raise_naming_what_is_covered():
    rankpose = load_config(EXPERIMENTS / "synthetic_rankpose.py")
    with pytest.raises(ValueError, match="covered: models"):
        bench_torch.build_reference(rankpose)
    gld = load_config(EXPERIMENTS / "synthetic_gld.py")
    with pytest.raises(ValueError, match="loss 'gld'.*covered"):
        bench_torch.reference_loss(gld)


@pytest.mark.parametrize("case", ["resnet10_w24", "fsanet_caps_1x1"])
def test_mixed_precision_step_is_finite(case):
    """The CUDA recipe (bfloat16 autocast + channels_last), run on the CPU: finite loss, float32 pose."""
    config = _config(case)
    model, step = bench_torch.make_train_step(config, "cpu", mixed_precision=True)
    images, pose = bench_torch.to_device(config, _batch(config, 2), torch.device("cpu"), channels_last=True)
    assert math.isfinite(float(step(images, pose)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(images)["pose"].dtype == torch.float32


def test_fsanet_kwargs_of_implementation_only_are_ignored_unknown_ones_raise():
    config = _config("fsanet_caps_1x1")
    config.model.kwargs = {**dict(config.model.kwargs), "depthwise": "shifts"}  # jaxpose's CPU formulation choice
    assert bench_torch.parameter_count(bench_torch.build_reference(config)) == 236_615
    config.model.kwargs = {**dict(config.model.kwargs), "attention_heads": 4}
    with pytest.raises(ValueError, match="attention_heads"):
        bench_torch.build_reference(config)
