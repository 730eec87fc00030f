"""Training placements (host, memmap, device), several steps per dispatch and the per-device step."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from conftest import tiny_config

from input_pipeline import canvases, pipeline
from jaxpose import checkpoint, sharding, train
from jaxpose.models import build_model


def _params(workdir):
    return checkpoint.restore_model(workdir, None)["params"]


def _assert_trees_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


def test_dispatch_schedule_ends_a_dispatch_at_every_boundary():
    assert train.dispatch_schedule(0, 10, 4, (5, 100)) == [(0, 4), (4, 1), (5, 4), (9, 1)]
    assert train.dispatch_schedule(3, 8, 2, (4,)) == [(3, 1), (4, 2), (6, 2)]
    assert train.dispatch_schedule(8, 8, 4, (2,)) == []
    assert train.dispatch_schedule(0, 6, 1, (0,)) == [(i, 1) for i in range(6)]


def _state_and_batch(config, mesh, *, steps: int):
    model = build_model(config.model)
    tx = train.make_optimizer(config.optimizer, 10, 10)
    state = train.create_state(model, train.init_variables(config, model, mesh), tx, mesh)
    rng = np.random.default_rng(0)
    batches = [{"image": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
                "pose": rng.uniform(-90, 90, (8, 3)).astype(np.float32)} for _ in range(steps)]
    return state, batches


@pytest.mark.parametrize("parallelism", ["gspmd", "per_device"])
def test_k_single_steps_equal_one_dispatch_of_k(tiny_data_dir, fast_compile, parallelism):
    config = tiny_config(tiny_data_dir, parallelism=parallelism, **{"optimizer.warmup_steps": 4})
    mesh = sharding.make_mesh()
    state, batches = _state_and_batch(config, mesh, steps=3)
    # The step's reported learning rate: optax's count before the update (the schedule of _state_and_batch).
    schedule = train.learning_rate_schedule(config.optimizer, 10, 10)
    expected_rates = [float(schedule(count)) for count in range(3)]
    assert expected_rates[0] != expected_rates[2]  # warm-up: a rate reported at the wrong count would show
    single = train.jit_train_step(config, mesh, sharding.replicated(mesh), learning_rate=schedule)
    one_by_one, losses, rates = state, [], []
    for batch in batches:
        one_by_one, metrics = single(one_by_one, sharding.put_batch(batch, mesh))
        losses.append(float(metrics["loss"]))
        rates.append(float(metrics["learning_rate"]))
    np.testing.assert_allclose(rates, expected_rates, rtol=1e-6)
    state, _ = _state_and_batch(config, mesh, steps=0)
    several = train.jit_train_step(config, mesh, sharding.replicated(mesh), num_steps=3, learning_rate=schedule)
    stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}
    together, metrics = several(state, sharding.put_batch(stacked, mesh, leading_steps=True))
    assert int(together.step) == 3 and metrics["loss"].shape == (3,)
    np.testing.assert_allclose(np.asarray(metrics["loss"]), losses, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(metrics["learning_rate"]), expected_rates, rtol=1e-6)
    _assert_trees_close(one_by_one.params, together.params, atol=1e-6)
    _assert_trees_close(one_by_one.batch_stats, together.batch_stats, atol=1e-6)


def test_per_device_equals_gspmd_on_one_device(tiny_data_dir, fast_compile):
    results = []
    for parallelism in ("gspmd", "per_device"):
        config = tiny_config(tiny_data_dir, parallelism=parallelism)
        mesh = sharding.make_mesh(1)
        state, batches = _state_and_batch(config, mesh, steps=2)
        step = train.jit_train_step(config, mesh, sharding.replicated(mesh))
        for batch in batches:
            state, _ = step(state, sharding.put_batch(batch, mesh))
        results.append(jax.device_get((state.params, state.batch_stats)))
    _assert_trees_close(results[0], results[1], atol=1e-6)


@pytest.mark.parametrize("placement", ["memmap", "device"])
def test_canvas_placements_train_resume_and_log_exact_steps(tiny_data_dir, fast_compile, tmp_path, placement):
    overrides = {"data.pipeline": placement, "data.scale": (0.9, 1.1), "data.shift": 0.05, "steps_per_dispatch": 2,
                 "checkpoint_every": 3, "log_every": 1}
    straight = tmp_path / "straight"
    results = train.train_and_evaluate(tiny_config(tiny_data_dir, num_train_steps=6, **overrides), straight)
    assert np.isfinite(results["synthetic_heads/tiny:test"]["mean"])
    interrupted = tmp_path / "interrupted"
    train.train_and_evaluate(tiny_config(tiny_data_dir, num_train_steps=3, **overrides), interrupted)
    train.train_and_evaluate(tiny_config(tiny_data_dir, num_train_steps=6, **overrides), interrupted)  # resumes at 3
    _assert_trees_close(_params(straight), _params(interrupted), atol=1e-6)
    steps = [json.loads(line)["step"] for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not (straight / "checkpoints" / "6" / "data").exists()  # the data position is the step


def test_host_placement_with_several_steps_per_dispatch_equals_single_steps(tiny_data_dir, fast_compile, tmp_path):
    runs = {}
    for k in (1, 3):
        workdir = tmp_path / f"k{k}"
        train.train_and_evaluate(tiny_config(tiny_data_dir, num_train_steps=4, steps_per_dispatch=k), workdir)
        runs[k] = workdir
    _assert_trees_close(_params(runs[1]), _params(runs[3]), atol=1e-6)
    logs = [[json.loads(line) for line in (runs[k] / "metrics.jsonl").read_text().splitlines()] for k in (1, 3)]
    assert [r["step"] for r in logs[1]] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["loss"] for r in logs[0]], [r["loss"] for r in logs[1]], rtol=1e-6)


def test_memmap_batches_are_a_function_of_the_step(tiny_data_dir):
    config = tiny_config(tiny_data_dir, **{"data.pipeline": "memmap"})
    cache = canvases.ensure_cache(config.data)
    a = pipeline.CanvasBatches(cache, 8, seed=0, pairs=False, local_devices=1)
    b = pipeline.CanvasBatches(cache, 8, seed=0, pairs=False, local_devices=1)
    np.testing.assert_array_equal(a[5]["canvas"], b[5]["canvas"])
    np.testing.assert_array_equal(a[5]["pose"], cache.pose[np.asarray(a.batches[5])])
    seen = np.concatenate([np.asarray(a.batches[s]) for s in range(6)])  # 48 records = 6 batches: one epoch
    assert sorted(seen.tolist()) == list(range(len(cache)))
    assert not np.array_equal(a[0]["pose"], pipeline.CanvasBatches(cache, 8, seed=1, pairs=False, local_devices=1)[0]["pose"])


def test_pairs_share_identity_in_every_placement(tiny_data_dir):
    config = tiny_config(tiny_data_dir, **{"data.pipeline": "memmap", "data.pairs": True})
    cache = canvases.ensure_cache(config.data)
    batch = pipeline.CanvasBatches(cache, 8, seed=0, pairs=True, local_devices=1)[0]
    identity = {tuple(p): i for p, i in zip(cache.pose.tolist(), cache.identity)}
    ids = [identity[tuple(p)] for p in batch["pose"].tolist()]
    assert ids[:4] == ids[4:]
    table, count = pipeline.partner_table(cache.identity)
    for i in range(len(cache)):
        assert all(cache.identity[table[i, j]] == cache.identity[i] and table[i, j] != i for j in range(count[i]))
    mesh = sharding.make_mesh(1)
    resident, used = pipeline.resident_canvases(cache, mesh, pairs=True)
    assert used == len(cache)
    rows = jax.jit(jax.shard_map(
        lambda step, local: pipeline.sample_local(step, local, jax.random.PRNGKey(0), 4, pairs=True, axis_name="data"),
        mesh=mesh, in_specs=(jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec("data")),
        out_specs=jax.sharding.PartitionSpec("data")))(0, resident)
    ids = [identity[tuple(p)] for p in np.asarray(rows["pose"]).tolist()]
    assert ids[:4] == ids[4:]


def test_pairs_by_device_round_trips():
    batch = {"x": np.arange(16)}  # [firsts 0..7; seconds 8..15]
    per_device = pipeline.pairs_by_device(batch, 2)["x"]
    assert per_device.tolist() == [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15]
    assert np.asarray(pipeline.global_pairs_order(per_device, 2)).tolist() == list(range(16))


ALL_REDUCES = textwrap.dedent(
    """
    import jax, numpy as np
    from jaxpose import sharding, train
    from jaxpose.config import base_config
    from jaxpose.models import build_model

    assert jax.device_count() == 8
    counts, params = {}, {}
    for parallelism in ("gspmd", "per_device"):
        config = base_config()
        config.model.name, config.data.image_size, config.batch_size = "resnet_tiny", 32, 16
        config.parallelism = parallelism
        mesh = sharding.make_mesh()
        model = build_model(config.model)
        state = train.create_state(model, train.init_variables(config, model, mesh),
                                   train.make_optimizer(config.optimizer, 10, 10), mesh)
        rng = np.random.default_rng(0)
        batch = sharding.put_batch({"image": rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
                                    "pose": rng.uniform(-90, 90, (16, 3)).astype(np.float32)}, mesh)
        step = train.jit_train_step(config, mesh, sharding.replicated(mesh))
        hlo = step.lower(state, batch).compile().as_text()
        counts[parallelism] = sum(line.count(" all-reduce(") + line.count(" all-reduce-start(") for line in hlo.splitlines())
        state, _ = step(state, batch)
        params[parallelism] = jax.device_get(state.params)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(params["gspmd"]), jax.tree.leaves(params["per_device"])))
    print("ALL_REDUCES", counts["gspmd"], counts["per_device"], "param diff", diff)
    """
)


def test_all_reduces_of_both_parallelisms_on_8_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", ALL_REDUCES], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("ALL_REDUCES"))
    gspmd, per_device = (int(v) for v in line.split()[1:3])
    print(line)
    # GSPMD's global BatchNorm reduces statistics over the devices in every BN layer, forward and backward;
    # the per-device step reduces only the gradients, the running statistics and the metrics.
    assert per_device < gspmd, line
    assert per_device <= 4, line
