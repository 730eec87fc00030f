"""Per-parameter-group optimisation (train.make_optimizer's lr_multipliers) and frozen BatchNorm statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config

from jaxpose import checkpoint, train
from jaxpose.config import base_config
from jaxpose.models import build_model

HOPENET_GROUPS = {"backbone/conv1": 0.0, "backbone/bn1": 0.0, "head": 5.0}  # deep-head-pose train_hopenet.py


def _tiny_variables(freeze: str = ""):
    config = base_config()
    config.model.name = "resnet_tiny"
    config.model.freeze_batch_stats = freeze
    model = build_model(config.model)
    images = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, 32, 3)), jnp.float32)
    return model, model.init(jax.random.key(0), images, train=False), images


def _optimizer(name: str, multipliers: dict, lr: float = 1e-3):
    cfg = base_config().optimizer
    cfg.name, cfg.lr, cfg.lr_multipliers = name, lr, multipliers
    return train.make_optimizer(cfg, steps_per_epoch=10, total_steps=100)


def _step(tx, params, grads):
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)


def _by_path(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(v)
            for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_groups_are_longest_whole_component_prefixes():
    params = {"backbone": {"conv1": {"kernel": 0}, "layer1_0": {"bn1": {"scale": 0}}},
              "head": {"fc_yaw": {"kernel": 0}, "fc_yaw_66": {"kernel": 0}}}
    labels = _by_path(train.parameter_groups(params, {"backbone": 1, "backbone/conv1": 0, "head/fc_yaw": 5}))
    assert {k: str(v) for k, v in labels.items()} == {
        "backbone/conv1/kernel": "backbone/conv1", "backbone/layer1_0/bn1/scale": "backbone",
        "head/fc_yaw/kernel": "head/fc_yaw", "head/fc_yaw_66/kernel": ""}


def test_adam_frozen_groups_stay_and_multiplied_groups_move_by_the_multiplier():
    """Adam's first step moves every parameter with a gradient >> eps by lr: the group's by m * lr."""
    _, variables, _ = _tiny_variables()
    params = variables["params"]
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    before, after = _by_path(params), _by_path(_step(_optimizer("adam", HOPENET_GROUPS), params, grads))
    for name in before:
        moved = np.abs(after[name] - before[name])
        expected = 0.0 if name.startswith(("backbone/conv1/", "backbone/bn1/")) else 5e-3 if name.startswith("head/") else 1e-3
        np.testing.assert_allclose(moved, expected, rtol=1e-4, atol=1e-9, err_msg=name)


def test_sgd_multiplied_updates_are_the_multiple_of_one_group():
    _, variables, _ = _tiny_variables()
    params = variables["params"]
    grads = jax.tree.map(lambda p: jnp.asarray(np.random.default_rng(p.size).normal(size=p.shape), p.dtype), params)
    def updates(multipliers):
        tx = _optimizer("sgd", multipliers)
        return _by_path(tx.update(grads, tx.init(params), params)[0])

    plain = updates({})
    grouped = updates({"head": 5.0, "backbone/layer1_0": 0.5, "backbone/conv1": 0.0})
    for name in plain:
        m = 5.0 if name.startswith("head/") else 0.5 if name.startswith("backbone/layer1_0/") else \
            0.0 if name.startswith("backbone/conv1/") else 1.0
        assert np.abs(plain[name]).max() > 0, name
        np.testing.assert_allclose(grouped[name], m * plain[name], rtol=1e-6, atol=0, err_msg=name)


def test_unknown_prefix_is_one_line_naming_it():
    _, variables, _ = _tiny_variables()
    tx = _optimizer("adam", {"backbone/stem": 0.0, "head": 5.0})
    with pytest.raises(ValueError, match=r"^optimizer.lr_multipliers: 'backbone/stem' matches no parameter; "
                                         r"parameter paths start with backbone/bn1, backbone/conv1, ") as info:
        tx.init(variables["params"])
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="multipliers >= 0"):
        _optimizer("adam", {"head": -1.0})


def test_no_multipliers_is_the_plain_optimizer():
    _, variables, _ = _tiny_variables()
    state = _optimizer("adam", {}).init(variables["params"])
    assert isinstance(state[0], optax.ScaleByAdamState)  # no partition: checkpoints of earlier runs still load


@pytest.mark.parametrize("freeze, frozen", [
    ("backbone", lambda name: True),
    # deep-head-pose: the blocks' bn* in inference mode, the stem's bn1 and the shortcut BatchNorms training.
    ("blocks", lambda name: name.startswith("layer") and "downsample" not in name),
    ("", lambda name: False),
])
def test_freeze_batch_stats(freeze, frozen):
    model, variables, images = _tiny_variables(freeze)
    outputs, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
    before, after = _by_path(variables["batch_stats"]), _by_path(updates["batch_stats"])
    assert before.keys() == after.keys()  # the whole collection comes back, frozen layers unchanged in it
    for name in before:
        assert np.array_equal(before[name], after[name]) == frozen(name.removeprefix("backbone/")), name
    if freeze == "backbone":  # every BatchNorm normalises with its running statistics: the inference output
        inference = model.apply(variables, images, train=False)
        np.testing.assert_allclose(outputs["pose"], inference["pose"], atol=1e-5)


def test_freeze_batch_stats_needs_a_resnet():
    config = base_config().model
    config.name, config.freeze_batch_stats = "fsanet", "backbone"
    with pytest.raises(ValueError, match="applies to ResNet backbones"):
        build_model(config)
    config.name, config.freeze_batch_stats = "resnet_tiny", "all"
    model = build_model(config)
    with pytest.raises(ValueError, match="unknown freeze_batch_stats 'all'"):
        model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)


def test_training_keeps_frozen_groups_and_statistics(tiny_data_dir, fast_compile, tmp_path):
    """Two real train steps: the frozen stem does not move, the frozen statistics do not change."""
    config = tiny_config(tiny_data_dir, num_train_steps=2, checkpoint_every=100, eval_on=(),
                         **{"optimizer.lr_multipliers": HOPENET_GROUPS, "model.freeze_batch_stats": "blocks"})
    setup = train.Setup(config, training=True)
    initial = jax.device_get(train.init_variables(config, setup.model, setup.mesh))
    train.train_and_evaluate(config, tmp_path)
    trained = checkpoint.restore_model(tmp_path, None)
    params, stats = _by_path(trained["params"]), _by_path(trained["batch_stats"])
    for name, value in _by_path(initial["params"]).items():
        assert np.array_equal(params[name], value) == name.startswith(("backbone/conv1/", "backbone/bn1/")), name
    for name, value in _by_path(initial["batch_stats"]).items():
        in_block = name.startswith("backbone/layer") and "downsample" not in name
        assert np.array_equal(stats[name], value) == in_block, name


@pytest.mark.parametrize("name, clip", [("adam", 0.0), ("sgd", 0.0), ("adamw", 1.0)])
def test_flattened_optimizer_state_gives_the_same_updates(name, clip):
    """optimizer.flatten keeps one vector per moment: fewer state arrays, the same three steps of updates."""
    _, variables, _ = _tiny_variables()
    params = variables["params"]
    rng = np.random.default_rng(0)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params) for _ in range(3)]
    results = {}
    for flatten in (False, True):
        cfg = base_config().optimizer
        cfg.name, cfg.grad_clip, cfg.flatten, cfg.weight_decay = name, clip, flatten, 1e-2
        tx = train.make_optimizer(cfg, steps_per_epoch=10, total_steps=100)
        p, state = params, tx.init(params)
        for g in grads:
            updates, state = tx.update(g, state, p)
            p = optax.apply_updates(p, updates)
        results[flatten] = (p, len(jax.tree.leaves(state)))
    assert results[True][1] < results[False][1] / 3
    for a, b in zip(jax.tree.leaves(results[False][0]), jax.tree.leaves(results[True][0])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_flatten_refuses_lr_multipliers():
    cfg = base_config().optimizer
    cfg.flatten, cfg.lr_multipliers = True, {"head": 5.0}
    with pytest.raises(ValueError, match="optimizer.flatten=True does not combine with optimizer.lr_multipliers"):
        train.make_optimizer(cfg, steps_per_epoch=10, total_steps=100)


def test_resume_with_another_optimizer_layout_is_one_clear_error(tiny_data_dir, fast_compile, tmp_path):
    """A workdir written without optimizer.flatten, resumed with it: orbax's many-line structure diff becomes
    one error naming the checkpoint and the settings that must match."""
    train.train(tiny_config(tiny_data_dir, num_train_steps=2), tmp_path / "w")
    flattened = tiny_config(tiny_data_dir, num_train_steps=4, **{"optimizer.flatten": True})
    with pytest.raises(ValueError, match=r"checkpoints/2: this checkpoint's model or optimizer state does not fit "
                                         r"the config \(model, optimizer.name, optimizer.flatten"):
        train.train(flattened, tmp_path / "w")
