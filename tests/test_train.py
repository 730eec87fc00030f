import json

import jax
import numpy as np
import pytest
from conftest import tiny_config

from jaxpose import checkpoint, train


def _params(workdir):
    return checkpoint.restore_model(workdir, None)["params"]


def test_train_checkpoint_resume_equals_uninterrupted(tiny_data_dir, fast_compile, tmp_path):
    straight = tmp_path / "straight"
    results = train.train_and_evaluate(tiny_config(tiny_data_dir, num_train_steps=6), straight)
    interrupted = tmp_path / "interrupted"
    train.train_and_evaluate(tiny_config(tiny_data_dir, num_train_steps=4), interrupted)
    train.train_and_evaluate(tiny_config(tiny_data_dir, num_train_steps=6), interrupted)  # resumes at 4
    for a, b in zip(jax.tree.leaves(_params(straight)), jax.tree.leaves(_params(interrupted))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    steps = [json.loads(line)["step"] for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert json.loads((straight / "eval.json").read_text()) == results
    row = results["synthetic_heads/tiny:test"]
    assert row["num_images"] == 24 and set(row) >= {"yaw", "pitch", "roll", "mean"}
    assert json.loads((straight / "config.json").read_text())["num_train_steps"] == 6


def test_non_finite_loss_stops_with_the_step(tiny_data_dir, fast_compile, tmp_path):
    config = tiny_config(tiny_data_dir, num_train_steps=8, checkpoint_every=100, **{"optimizer.lr": 1e30})
    with pytest.raises(train.NonFiniteLossError, match=r"non-finite loss at step \d+: .*grad_norm="):
        train.train_and_evaluate(config, tmp_path)


def test_evaluate_restores_the_trained_model(tiny_data_dir, fast_compile, tmp_path):
    config = tiny_config(tiny_data_dir, num_train_steps=2)
    trained = train.train_and_evaluate(config, tmp_path)
    assert train.evaluate(config, tmp_path) == trained


def test_init_from_merges_a_partial_tree_and_rejects_mismatches(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir)
    setup = train.Setup(config, training=False)
    variables = jax.device_get(train.init_variables(config, setup.model, setup.mesh))
    backbone_only = {"params": {"backbone": jax.tree.map(np.ones_like, variables["params"]["backbone"])}}
    merged, count = train.merge_pretrained(train.init_variables(config, setup.model, setup.mesh), backbone_only, "src")
    assert count == len(jax.tree.leaves(backbone_only))
    assert all(np.all(np.asarray(x) == 1) for x in jax.tree.leaves(merged["params"]["backbone"]))
    np.testing.assert_array_equal(merged["params"]["head"]["fc_yaw"]["kernel"], variables["params"]["head"]["fc_yaw"]["kernel"])
    bad = {"params": {"head": {"fc_yaw": {"kernel": np.zeros((3, 3))}}}}
    with pytest.raises(ValueError, match="src: tensor 'params/head/fc_yaw/kernel' has shape"):
        train.merge_pretrained(variables, bad, "src")


def test_learning_rate_schedules():
    from jaxpose.config import base_config

    cfg = base_config().optimizer
    cfg.schedule, cfg.step_epochs, cfg.lr = "step", 2, 1.0
    schedule = train.learning_rate_schedule(cfg, steps_per_epoch=10, total_steps=60)
    assert [float(schedule(s)) for s in (0, 19, 20, 40)] == pytest.approx([1.0, 1.0, 0.1, 0.01])
    cfg.schedule, cfg.warmup_steps = "cosine", 10
    schedule = train.learning_rate_schedule(cfg, steps_per_epoch=10, total_steps=110)
    assert [float(schedule(s)) for s in (0, 5, 10, 60, 110)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0], abs=1e-6)
