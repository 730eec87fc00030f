"""bf16 where it pays: the accelerator configs' convolutions run in bf16, their losses in float32."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

from jaxpose import bench, sharding, train
from jaxpose.config import load_config
from jaxpose.models import build_model

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"
# StableHLO (what the program asks for, before XLA:CPU computes bf16 in float32): a convolution's result type.
_CONV_RESULT = re.compile(r"stablehlo\.convolution.*-> tensor<[^>]*x([a-z]+[0-9]+)>")


def test_matmul_dtypes_reads_cpu_and_gpu_hlo():
    text = "\n".join([
        "  %convolution.3 = f32[8,32,32,16]{3,2,1,0} convolution(f32[8,32,32,3]{3,2,1,0} %p0, f32[3,3,3,16] %p1)",
        "  %dot.1 = bf16[8,66]{1,0} dot(bf16[8,512]{1,0} %a, bf16[512,66]{1,0} %b)",
        '  %cc = (bf16[8,16,32,32]{3,2,1,0}, u8[0]{0}) custom-call(%x, %w), custom_call_target="__cudnn$convForward"',
        '  %g = (bf16[8,66]{1,0}, s8[4]{0}) custom-call(%a, %b), custom_call_target="__cublas$gemm"',
        "  %add.2 = bf16[8,66]{1,0} add(%dot.1, %bias)",
    ])
    assert bench.matmul_dtypes(text) == {"f32": 1, "bf16": 3}


def _lowered_step(config) -> str:
    """The StableHLO of the config's jitted train step (host placement, batch 2), not compiled."""
    config.batch_size, config.init_from, config.data.pipeline = 2, "none", "host"
    mesh = sharding.make_mesh(1)
    model = build_model(config.model)
    state = train.create_state(model, train.init_variables(config, model, mesh),
                               train.make_optimizer(config.optimizer, 10, 10), mesh)
    step = train.jit_train_step(config, mesh, sharding.replicated(mesh), placement="host", num_steps=1)
    batch = sharding.put_batch(bench.random_batch(config, np.random.default_rng(0)), mesh)
    lowered = step.lower(state, batch)
    loss = lowered.out_info[1]["loss"]
    assert str(loss.dtype) == "float32"  # losses reduce in float32 (losses._f32)
    return lowered.as_text()


@pytest.mark.parametrize("name, overrides, least", [
    # FSA-Net: the streams and the stage fusion in bf16; scoring, mapping, capsules and SSR in float32.
    ("fsanet_caps_1x1.py", {}, 0.9),
    # The ResNet-50 recipe on a tiny ResNet (same layers, same dtype handling): every convolution in bf16.
    ("hopenet_300wlp.py", {"model.name": "resnet_tiny", "data.image_size": 32, "model.freeze_batch_stats": "",
                           "optimizer.lr_multipliers": {}}, 1.0),
])
def test_accelerator_configs_convolve_in_bf16(name, overrides, least):
    config = load_config(EXPERIMENTS / name, overrides)
    assert config.model.dtype == "bfloat16"
    dtypes = _CONV_RESULT.findall(_lowered_step(config))
    assert dtypes, name
    assert dtypes.count("bf16") / len(dtypes) >= least, (name, sorted(set(dtypes)), dtypes.count("bf16"), len(dtypes))
