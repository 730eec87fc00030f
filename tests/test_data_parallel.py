"""One train step on 4 fake CPU devices equals one step on 1 device (run in a subprocess:
the device count is fixed when JAX starts)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    from jaxpose import sharding, train
    from jaxpose.config import base_config
    from jaxpose.models import build_model

    assert jax.device_count() == 4, jax.devices()
    config = base_config()
    config.model.name = "resnet_tiny"
    config.data.image_size = 32
    config.losses = {"hopenet": {"weight": 1.0, "alpha": 1.0}}
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
             "pose": rng.uniform(-90, 90, (8, 3)).astype(np.float32)}

    def one_step(num_devices):
        mesh = sharding.make_mesh(num_devices)
        tx = train.make_optimizer(config.optimizer, 10, 10)
        model = build_model(config.model)
        state = train.create_state(model, train.init_variables(config, model, mesh), tx, mesh)
        step = train.jit_train_step(config, mesh, sharding.replicated(mesh))
        state, metrics = step(state, sharding.put_batch(batch, mesh))
        return jax.device_get(((state.params, state.batch_stats), metrics["loss"]))

    (one, loss_one), (four, loss_four) = one_step(1), one_step(4)
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four))]
    print("max abs difference", max(diffs), "loss", loss_one, loss_four)
    assert max(diffs) < 1e-5, max(diffs)  # params and BatchNorm statistics
    assert abs(loss_one - loss_four) <= 1e-6 * abs(loss_one), (loss_one, loss_four)  # ~5e3: relative
    """
)


def test_four_devices_equal_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "max abs difference" in result.stdout
