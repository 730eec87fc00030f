"""TrainState, the jitted train and eval steps, and the train / eval loops.

`train_step` is a module-level pure function; its settings are bound with
functools.partial and it is jitted with explicit shardings (batch split on
the mesh's `data` axis, state replicated) and the state donated.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import time
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from input_pipeline import canvases, device_augment, pipeline
from jaxpose import checkpoint, losses, metrics, monitor, sharding
from jaxpose.models import build_model

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


class TrainState(train_state.TrainState):
    batch_stats: Any = None


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class TrainingStopped(SystemExit):
    """SIGTERM or Ctrl-C stopped training after checkpointing `step`.

    A SystemExit with status 0: a program that does not catch it ends cleanly,
    through `except Exception` handlers such as the CLI's; the same command resumes.
    """

    def __init__(self, step: int):
        super().__init__(0)
        self.step = step


def preprocess(images: jax.Array, normalize: str) -> jax.Array:
    """uint8 images from the pipeline -> float32 model input, on the device.

    "imagenet": RGB standardised with the ImageNet mean/std (torchvision
    weights); "bgr255": raw 0-255 values (the official FSA-Net weights).
    """
    images = images.astype(jnp.float32)
    if normalize == "imagenet":
        return (images - IMAGENET_MEAN) / IMAGENET_STD
    if normalize == "bgr255":
        return images
    raise ValueError(f"unknown normalize {normalize!r}; valid: imagenet, bgr255")


def loss_terms(config: ml_collections.ConfigDict) -> list[tuple[str, float, dict]]:
    """config.losses {name: {weight, **kwargs}} -> [(name, weight, kwargs)] for losses.total_loss.

    Binned terms default to the head's bin range (head_kwargs lo/hi), so a
    head over other bins never meets a loss assuming [-99, 99].
    """
    head_range = {k: config.model.head_kwargs[k] for k in ("lo", "hi") if k in config.model.get("head_kwargs", {})}
    terms = []
    for name, spec in config.losses.items():
        kwargs = dict(spec)
        weight = float(kwargs.pop("weight", 1.0))
        options = losses.get_loss(name).options()
        kwargs = {**{k: v for k, v in head_range.items() if k in options}, **kwargs}
        terms.append((name, weight, kwargs))
    return terms


# --- optimizer ----------------------------------------------------------------


def learning_rate_schedule(cfg: Any, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """"constant", "cosine" (decay to 0 over the run) or "step" (x factor every N epochs), after a linear warm-up."""
    if cfg.schedule == "constant":
        main = optax.constant_schedule(cfg.lr)
    elif cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(cfg.lr, max(1, total_steps - cfg.warmup_steps))
    elif cfg.schedule == "step":
        every = max(1, int(cfg.step_epochs * steps_per_epoch))
        boundaries = {every * i: cfg.step_factor for i in range(1, total_steps // every + 1)}
        main = optax.piecewise_constant_schedule(cfg.lr, boundaries)
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: constant, cosine, step")
    if cfg.warmup_steps <= 0:
        return main
    warmup = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
    return optax.join_schedules([warmup, main], [cfg.warmup_steps])


def make_optimizer(cfg: Any, steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
    """config.optimizer -> an optax transformation: Adam / AdamW / SGD (Nesterov) on the schedule, after
    optional global-norm clipping, with per-group learning-rate multipliers (`cfg.lr_multipliers`,
    see `parameter_groups`; empty: one group, the plain optimizer)."""
    schedule = learning_rate_schedule(cfg, steps_per_epoch, total_steps)
    optimizers = {
        "adam": lambda: optax.adam(schedule, b1=cfg.b1, b2=cfg.b2),
        "adamw": lambda: optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay),
        "sgd": lambda: optax.sgd(schedule, momentum=cfg.momentum, nesterov=True),
    }
    if cfg.name not in optimizers:
        raise ValueError(f"unknown optimizer {cfg.name!r}; valid: {', '.join(optimizers)}")
    multipliers = {str(k): float(v) for k, v in dict(cfg.get("lr_multipliers") or {}).items()}
    tx = grouped_optimizer(optimizers[cfg.name], multipliers) if multipliers else optimizers[cfg.name]()
    tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), tx) if cfg.grad_clip > 0 else tx
    if not cfg.get("flatten"):
        return tx
    if multipliers:
        raise ValueError("optimizer.flatten=True does not combine with optimizer.lr_multipliers (the groups need "
                         "the parameter tree); set one of them")
    # The optimizer state as one vector per moment instead of one array per parameter: a dispatch of the
    # train step hands the runtime fewer arrays (FSA-Net: 352 -> 140 state arrays, about 1.7x less host time
    # per dispatch, measured on CPU; BENCHMARKS.md). Same updates: the optimizers here are elementwise.
    return optax.flatten(tx)


def grouped_optimizer(make: Callable[[], optax.GradientTransformation],
                      multipliers: dict[str, float]) -> optax.GradientTransformation:
    """One optimizer per parameter group (optax.partition), its updates scaled by the group's multiplier.

    Scaling the update by m is the learning rate times m for Adam, AdamW (its
    decay included, as a PyTorch param group's lr) and SGD: what the official
    PyTorch code's param groups do. m = 0 freezes the group (optax.set_to_zero,
    no optimizer state). Parameters under no prefix form the group "" at x1.
    """
    for prefix, m in multipliers.items():
        if not prefix or m < 0:
            raise ValueError(f"optimizer.lr_multipliers: {prefix!r}: {m} (prefixes are parameter paths, multipliers >= 0)")

    def group(m: float) -> optax.GradientTransformation:
        if m == 0:
            return optax.set_to_zero()
        return make() if m == 1 else optax.chain(make(), optax.scale(m))

    transforms = {"": make(), **{prefix: group(m) for prefix, m in multipliers.items()}}
    return optax.partition(transforms, lambda params: parameter_groups(params, multipliers))


def parameter_groups(params: Any, prefixes) -> Any:
    """The group of each parameter: the longest of `prefixes` its path ("backbone/conv1/kernel") starts
    with, in whole path components ("head/fc_yaw" does not hold "head/fc_yaw_66"), or "" for none.

    A prefix that holds no parameter is a ValueError naming it (a typo would otherwise train at x1).
    """
    ordered = sorted((p.strip("/") for p in prefixes), key=len, reverse=True)
    original = {p.strip("/"): p for p in prefixes}
    used, paths = set(), []

    def label(path, _):
        name = "/".join(str(getattr(part, "key", part)) for part in path)
        paths.append(name)
        for prefix in ordered:
            if name == prefix or name.startswith(prefix + "/"):
                used.add(prefix)
                return original[prefix]
        return ""

    labels = jax.tree_util.tree_map_with_path(label, params)
    unknown = [original[p] for p in ordered if p not in used]
    if unknown:
        tops = sorted({"/".join(name.split("/")[:2]) for name in paths})
        raise ValueError(f"optimizer.lr_multipliers: {unknown[0]!r} matches no parameter; "
                         f"parameter paths start with {', '.join(tops[:12])}{', ...' if len(tops) > 12 else ''}")
    return labels


# --- state ----------------------------------------------------------------------


def _init_fn(config, model: nn.Module):
    size = config.data.image_size

    def init(rng):
        variables = model.init(rng, jnp.zeros((1, size, size, 3), jnp.float32), train=False)
        return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}

    return init


def init_variables(config, model: nn.Module, mesh) -> dict:
    """{"params", "batch_stats"} from config.seed, created directly on the mesh (replicated)."""
    # Runs once: skipping XLA's expensive passes cuts its compile from ~20 s to ~2 s on CPU.
    cheap = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    init = jax.jit(_init_fn(config, model), out_shardings=sharding.replicated(mesh), compiler_options=cheap)
    return init(jax.random.PRNGKey(config.seed))


def merge_pretrained(variables: dict, pretrained: dict, source: str) -> tuple[dict, int]:
    """Replaces the leaves of `variables` found in `pretrained` (same path and shape); returns the count.

    Pretrained trees may cover part of the model (a torchvision backbone
    without the pose head); a leaf of another shape or an unknown path is an error.
    """
    target = flax.traverse_util.flatten_dict(variables, sep="/")
    loaded = flax.traverse_util.flatten_dict(pretrained, sep="/")
    for key, value in loaded.items():
        if key not in target:
            raise ValueError(f"{source}: tensor {key!r} does not exist in the model")
        if tuple(value.shape) != tuple(target[key].shape):
            raise ValueError(f"{source}: tensor {key!r} has shape {tuple(value.shape)}, the model needs {tuple(target[key].shape)}")
        target[key] = jax.device_put(value, target[key].sharding).astype(target[key].dtype)
    return flax.traverse_util.unflatten_dict(target, sep="/"), len(loaded)


def create_state(model: nn.Module, variables: dict, tx, mesh) -> TrainState:
    def create(v):
        return TrainState.create(apply_fn=model.apply, params=v["params"], tx=tx, batch_stats=v["batch_stats"])

    return jax.jit(create, out_shardings=sharding.replicated(mesh))(variables)


# --- steps ----------------------------------------------------------------------

PLACEMENTS = ("host", "memmap", "device")
PARALLELISMS = ("gspmd", "per_device")


def train_step(state: TrainState, inputs: Any, *, normalize: str, terms, make_batch: Callable,
               axis_name: str | None = None, learning_rate: Callable | None = None) -> tuple[TrainState, dict]:
    """One optimisation step; `make_batch(step, inputs)` gives {"image" (B, S, S, 3), "pose" (B, 3) degrees}.

    With `axis_name` this is the per-device (pmap-style) step run inside
    shard_map: BatchNorm normalises with its device's batch statistics, and the
    gradients, the running BatchNorm statistics and the metrics are averaged
    over the devices. Averaging the running statistics every step equals the
    flax ImageNet example's averaging before evaluation: they are exponential
    moving averages, which commute with the mean over devices.

    learning_rate: the optimizer's schedule (`learning_rate_schedule`); when
    given, the metrics hold the base rate this step trained with (optax's
    count is the step before the update; optimizer.lr_multipliers scale it per
    group) - computed here, in the program, rather than by the host at each log.
    """
    batch = make_batch(state.step, inputs)
    images = preprocess(batch["image"], normalize)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        outputs, updates = state.apply_fn(variables, images, train=True, mutable=["batch_stats"])
        loss, per_term = losses.total_loss(outputs, batch["pose"], terms, axis_name=axis_name)
        return loss, (per_term, updates.get("batch_stats", {}), outputs["pose"])

    (loss, (per_term, batch_stats, pose)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    step_metrics = {
        "loss": loss,
        **{f"loss_{name}": value for name, value in per_term.items()},
        "mae": jnp.mean(jnp.abs(pose.astype(jnp.float32) - batch["pose"])),
    }
    if axis_name is not None:
        grads, batch_stats, step_metrics = mean_over_devices((grads, batch_stats, step_metrics), axis_name)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    step_metrics["grad_norm"] = optax.tree.norm(grads)
    step_metrics["param_norm"] = optax.tree.norm(state.params)
    if learning_rate is not None:
        step_metrics["learning_rate"] = jnp.asarray(learning_rate(state.step), jnp.float32)
    return new_state, step_metrics


def mean_over_devices(tree: Any, axis_name: str) -> Any:
    """lax.pmean of a whole pytree as ONE all-reduce of its leaves raveled into a vector.

    A pmean of the tree itself is lowered to one all-reduce per leaf (about
    40 for a small ResNet, measured on 8 CPU devices), each with its own
    launch and latency; XLA:GPU's combiner merges them, XLA:CPU does not.
    """
    flat, unravel = jax.flatten_util.ravel_pytree(tree)
    return unravel(jax.lax.pmean(flat, axis_name))


def several_steps(state: TrainState, inputs: Any, *, step: Callable, num_steps: int, stacked: bool):
    """`num_steps` train steps in one program (lax.scan); metrics come back per step, stacked on axis 0.

    stacked: inputs hold one batch per step on axis 0 (host, memmap); else the
    same inputs (the device-resident canvases) serve every step.
    """
    def body(state, per_step):
        return step(state, per_step if stacked else inputs)

    # XLA:CPU runs a rolled scan of a train step about 8x slower per step than the same step alone (ResNet-10,
    # FSA-Net; measured in BENCHMARKS.md), unrolled at the step's speed: unroll there, keep the loop elsewhere.
    unroll = num_steps if jax.default_backend() == "cpu" else 1
    return jax.lax.scan(body, state, inputs if stacked else None, length=num_steps, unroll=unroll)


def eval_step(variables: dict, images: jax.Array, *, model: nn.Module, normalize: str) -> jax.Array:
    """(B, 3) predicted (yaw, pitch, roll) degrees."""
    return model.apply(variables, preprocess(images, normalize), train=False)["pose"]


def make_batch_fn(config, mesh, placement: str, *, per_device: bool) -> Callable:
    """(step, inputs) -> training batch, for a placement (see `pipeline`); runs inside the jitted step.

    host: the inputs are the batch. memmap: the inputs are canvases and labels,
    augmented here. device: the inputs are this run's resident canvases, from
    which each device samples its rows, then augmented here. Per-example
    augmentation keys depend on the step and the example's global position only.
    """
    pairs, devices = config.data.pairs, mesh.size
    key = jax.random.PRNGKey(config.seed)
    augment_key, sample_key = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
    spec = device_augment.AugmentSpec.from_config(config.data)

    def finish(batch):
        # Rows arrive per device as [its firsts; its seconds]; the global (GSPMD) loss wants [firsts; seconds].
        if pairs and not per_device:
            return jax.tree.map(lambda x: pipeline.global_pairs_order(x, devices), batch)
        return batch

    def augment(step, rows):
        count = rows["canvas"].shape[0]
        positions = jnp.arange(count)
        if per_device:
            positions = positions + jax.lax.axis_index(sharding.DATA_AXIS) * count
        labels = {k: rows[k] for k in pipeline.CANVAS_LABELS}
        return device_augment.augment(rows["canvas"], labels, augment_key, positions, step, spec)

    if placement == "host":
        return lambda step, batch: finish(batch)
    if placement == "memmap":
        return lambda step, rows: finish(augment(step, rows))
    examples = config.batch_size // devices // (2 if pairs else 1)
    sample = functools.partial(pipeline.sample_local, key=sample_key, examples=examples, pairs=pairs,
                               axis_name=sharding.DATA_AXIS)
    if not per_device:
        sample = jax.shard_map(sample, mesh=mesh, in_specs=(P(), P(sharding.DATA_AXIS)), out_specs=P(sharding.DATA_AXIS))
    return lambda step, resident: finish(augment(step, sample(step, resident)))


def jit_train_step(config, mesh, state_sharding, *, placement: str = "host", num_steps: int = 1,
                   learning_rate: Callable | None = None):
    """The jitted train step for a placement and config.parallelism, running `num_steps` steps per call.

    Inputs: one batch (host, memmap), `num_steps` batches stacked on axis 0 when
    num_steps > 1, or the resident canvases (device). The state is donated.
    learning_rate: the schedule whose value each step reports (`train_step`).
    """
    per_device = _check_choice("parallelism", config.parallelism, PARALLELISMS) == "per_device"
    step = functools.partial(
        train_step, normalize=config.data.normalize, terms=loss_terms(config),
        make_batch=make_batch_fn(config, mesh, placement, per_device=per_device),
        axis_name=sharding.DATA_AXIS if per_device else None, learning_rate=learning_rate,
    )
    stacked = num_steps > 1 and placement != "device"
    if num_steps > 1:
        step = functools.partial(several_steps, step=step, num_steps=num_steps, stacked=placement != "device")
    data_spec = P(None, sharding.DATA_AXIS) if stacked else P(sharding.DATA_AXIS)
    if per_device:
        step = jax.shard_map(step, mesh=mesh, in_specs=(P(), data_spec), out_specs=(P(), P()))
    return jax.jit(
        step,
        in_shardings=(state_sharding, NamedSharding(mesh, data_spec)),
        out_shardings=(state_sharding, sharding.replicated(mesh)),
        donate_argnums=0,
    )


def _check_choice(key: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ValueError(f"config key {key!r} is {value!r}; valid: {', '.join(valid)}")
    return value


# --- loops ----------------------------------------------------------------------


NO_INIT = "none"  # config.init_from value: train from scratch even where the config requires an init


def init_source(config) -> str | None:
    """The workdir config.init_from names, or None for "" and "none" (the seed's random initialisation)."""
    source = str(config.get("init_from") or "")
    return None if source.lower() in ("", NO_INIT) else source


TORCHVISION_FILES = {"resnet50": "resnet50-0676ba61.pth"}  # torchvision's ImageNet weights (IMAGENET1K_V1)


def check_init(config) -> None:
    """Configs fine-tuning ImageNet weights (config.require_init) refuse to start without init_from."""
    if config.get("require_init") and not str(config.get("init_from") or ""):
        name = config.model.name
        src, workdir = TORCHVISION_FILES.get(name, f"<torchvision {name} .pth>"), f"runs/{name}_imagenet"
        raise ValueError(
            f"this config fine-tunes ImageNet weights and config.init_from is empty: run `jaxpose convert "
            f"torchvision-resnet {src} --workdir {workdir}` and add --config.init_from={workdir} "
            f"(or --config.init_from=none to train from scratch)"
        )


class Setup:
    """What the loops derive from a config: mesh, model, initial variables and, for training, the optimizer."""

    def __init__(self, config: ml_collections.ConfigDict, *, training: bool, cache: canvases.Canvases | None = None):
        """cache: canvases to train on instead of the config's (benchmarks on random canvases)."""
        from jaxpose.config import validate, validate_run

        if training:  # before anything else, the dataset checks included
            check_init(config)
        validate(config, devices=jax.device_count(), processes=jax.process_count(), training=training)  # before any compile
        self.mesh = sharding.make_mesh(config.get("num_devices") or None)
        self.replicated = sharding.replicated(self.mesh)
        self.batch_per_process = sharding.check_batch_size(config.batch_size, self.mesh)
        self.model = build_model(config.model)
        # Shapes only (no compile): enough to restore a checkpoint for eval and predict.
        shapes = _model_shapes(config, self.model)
        self.abstract_variables = checkpoint.abstract_with_sharding(shapes, self.replicated)
        if not training:
            return
        self.placement = _check_choice("data.pipeline", config.data.pipeline, PLACEMENTS)
        _check_choice("parallelism", config.parallelism, PARALLELISMS)
        # Fails fast when the dataset (or its canvases) is missing.
        if self.placement == "host":
            num_examples = pipeline.train_size(config.data)
        else:
            self.cache = cache if cache is not None else canvases.ensure_cache(config.data)
            num_examples = pipeline.process_shard(len(self.cache))[1]
        examples_per_step = self.batch_per_process // 2 if config.data.pairs else self.batch_per_process
        self.steps_per_epoch = max(1, num_examples // examples_per_step)
        self.total_steps = config.num_train_steps or int(config.num_epochs * self.steps_per_epoch)
        validate_run(config, records=num_examples, examples_per_step=examples_per_step,
                     steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps)
        variables = init_variables(config, self.model, self.mesh)  # the first compile
        if init_source(config):
            pretrained = checkpoint.restore_model(config.init_from, None)
            variables, count = merge_pretrained(variables, pretrained, config.init_from)
            print(f"initialised {count} tensors from {config.init_from}")
        tx = make_optimizer(config.optimizer, self.steps_per_epoch, self.total_steps)
        self.state = create_state(self.model, variables, tx, self.mesh)

    def abstract_state(self):
        return checkpoint.abstract_with_sharding(self.state, self.replicated)

    def make_feed(self, config):
        """The training input of config.data.pipeline (see `pipeline`'s feeds)."""
        if self.placement == "host":
            return pipeline.HostFeed(config.data, self.batch_per_process, config.seed, self.mesh)
        if self.placement == "memmap":
            return pipeline.MemmapFeed(self.cache, self.batch_per_process, config.seed, self.mesh, pairs=config.data.pairs)
        return pipeline.DeviceFeed(self.cache, self.mesh, pairs=config.data.pairs)


def _model_shapes(config, model: nn.Module) -> dict:
    """The variables' shapes (traced, not compiled); the model's own checks of its options and input
    size fail here, before any compile, as one line naming the config keys."""
    try:
        return jax.eval_shape(_init_fn(config, model), jax.ShapeDtypeStruct((2,), jnp.uint32))  # a key's shape
    except (ValueError, TypeError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"config keys 'model.kwargs', 'model.head_kwargs' or 'data.image_size' of model "
                         f"{config.model.name!r} (image_size {config.data.image_size}): {message}") from e


def dispatch_schedule(start: int, total: int, steps_per_dispatch: int, boundaries: tuple[int, ...]) -> list[tuple[int, int]]:
    """(steps done before, steps) of each dispatch from `start` to `total`: `steps_per_dispatch` at a
    time, cut short so that every multiple of a boundary (log, checkpoint) ends a dispatch."""
    schedule, step = [], start
    while step < total:
        stop = min([total] + [(step // every + 1) * every for every in boundaries if every > 0])
        schedule.append((step, min(steps_per_dispatch, stop - step)))
        step += schedule[-1][1]
    return schedule


def _write_json(path: pathlib.Path, payload: Any) -> None:
    """Written by process 0 alone: every process of a job holds the same (replicated, gathered) values."""
    if not sharding.is_primary():
        return
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _flush(pending: list[tuple[int, int, dict]], log_file, since: float, images: int,
           run_monitor: monitor.Monitor | None = None) -> dict:
    """Fetches the metrics of the dispatches since the last flush, stops on a non-finite loss, logs the last step.

    pending: (steps done before, steps, metrics); a dispatch of several steps
    holds one value per step. Fetching waits for the queued steps, so images/s
    counts finished work. run_monitor writes every step to TensorBoard
    (metrics.jsonl gets the last one).
    """
    fetched = jax.device_get([m for _, _, m in pending])
    seconds = time.perf_counter() - since
    per_step = []
    for (first, count, _), values in zip(pending, fetched):
        for i in range(count):
            per_step.append((first + i + 1, values if count == 1 else {k: v[i] for k, v in values.items()}))
    for step, values in per_step:
        if not math.isfinite(float(values["loss"])):
            details = ", ".join(f"{k}={float(v):.4g}" for k, v in values.items())
            raise NonFiniteLossError(f"non-finite loss at step {step}: {details}")
    step, values = per_step[-1]
    record = {"step": step, **{k: float(v) for k, v in values.items()}, "images_per_sec": images / seconds}
    log_file.write(json.dumps(record) + "\n")
    log_file.flush()
    if run_monitor is not None:
        run_monitor.write_steps(per_step, record["images_per_sec"])
    pending.clear()
    return record


def _log_path(workdir: pathlib.Path) -> str:
    """metrics.jsonl for process 0; the other processes of a job log the same records into the void."""
    return str(workdir / "metrics.jsonl") if sharding.is_primary() else os.devnull


def _rewind_metrics(path: pathlib.Path, step: int) -> None:
    """Drops records of steps after `step` (logged by a run killed before its next checkpoint): they are redone."""
    if not sharding.is_primary() or not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.endswith("\n") and json.loads(line)["step"] <= step]  # a torn last line too
    if len(kept) < len(lines):
        path.write_text("".join(kept))
        print(f"{path.name}: dropped {len(lines) - len(kept)} records after step {step}, which will be redone")


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> tuple[TrainState, Setup]:
    """Trains in workdir to setup.total_steps, resuming from its newest intact checkpoint; (state, setup).

    SIGTERM or Ctrl-C: the step reached at the next dispatch boundary is
    checkpointed (with the data position) and logged, then TrainingStopped is
    raised. Damaged newer checkpoints are set aside with a warning first
    (`checkpoint.set_aside_damaged`); an unwritable or too full workdir fails
    before the first step.
    """
    workdir = pathlib.Path(workdir)
    checkpoint.check_writable(workdir)
    setup = Setup(config, training=True)  # validates the config: a rejected one leaves no config.json
    _write_json(workdir / "config.json", config.to_dict())
    checkpoint.check_free_space(workdir, setup.state)
    feed = setup.make_feed(config)
    with checkpoint.StopRequest() as stop:
        checkpoint.set_aside_damaged(workdir)
        mngr = checkpoint.manager(workdir)
        try:
            state = _resume(mngr, setup, feed, workdir)
            state = train_loop(config, setup, state, feed, mngr, workdir, stop=stop)
        finally:
            feed.close()
            mngr.close()  # waits for the last save: a stopped run exits with its checkpoint complete
    if stop.requested:  # also a signal during that last wait: the user wants the program gone, not evaluated
        _report_stop(stop, int(state.step), mngr.directory)
    return state, setup


def _resume(mngr, setup: Setup, feed, workdir: pathlib.Path) -> TrainState:
    """setup.state, or the state of workdir's latest checkpoint (the feed's data position restored too)."""
    if not checkpoint.is_training_checkpoint(mngr):
        return setup.state
    state = checkpoint.restore_training(mngr, setup.abstract_state())
    print(f"resumed from {mngr.directory} at step {int(state.step)}")
    _rewind_metrics(workdir / "metrics.jsonl", int(state.step))
    return state


def _report_stop(stop: checkpoint.StopRequest, step: int, directory) -> None:
    after = f", {time.monotonic() - stop.received_at:.1f} s after the signal" if stop.received_at else ""
    print(f"stopped by {stop.signal_name} at step {step}{after}: checkpoint saved in {directory}; "
          "run the same command to resume")
    raise TrainingStopped(step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
    """Trains (resuming from the latest checkpoint in workdir), then evaluates; returns the eval results."""
    workdir = pathlib.Path(workdir)
    state, setup = train(config, workdir)
    return evaluate(config, workdir, variables=checkpoint.model_variables(state), setup=setup, step=int(state.step))


def train_loop(config, setup, state, feed, mngr, workdir, step_fns: dict[int, Callable] | None = None,
               stop: checkpoint.StopRequest | None = None):
    """Runs the dispatches from the state's step to setup.total_steps; logs and checkpoints at the configured steps.

    step_fns: the jitted programs by dispatch length, kept by a caller that runs
    the loop again (a benchmark's warm-up) so that nothing recompiles. stop:
    when it is reached after a dispatch, that step is logged and checkpointed,
    stop.step is set to it and the loop ends (steps are exact: a dispatch is
    never cut).
    """
    start = int(state.step)
    schedule = dispatch_schedule(start, setup.total_steps, config.steps_per_dispatch,
                                 (config.log_every, config.checkpoint_every))
    feed.start(schedule)
    step_fns = {} if step_fns is None else step_fns  # one compiled program per dispatch length
    pending, images, tick = [], 0, time.perf_counter()
    learning_rate = learning_rate_schedule(config.optimizer, setup.steps_per_epoch, setup.total_steps)
    run_monitor = monitor.Monitor(workdir, start_step=start, profile_steps=config.get("profile_steps", 0))
    with run_monitor, open(_log_path(workdir), "a") as log_file, tqdm(
        total=setup.total_steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
        disable=not sharding.is_primary(),
    ) as bar:
        for dispatch, (first, count) in enumerate(schedule, 1):
            if count not in step_fns:
                step_fns[count] = jit_train_step(config, setup.mesh, setup.replicated, placement=setup.placement,
                                                 num_steps=count, learning_rate=learning_rate)
            state, step_metrics = step_fns[count](state, feed.get(count))
            pending.append((first, count, step_metrics))
            images += count * config.batch_size
            bar.update(count)
            step = first + count
            run_monitor.after_dispatch(step, state)
            stopping = stop is not None and stop.reached(dispatch)  # every dispatch: counted by all processes
            save_now = step % config.checkpoint_every == 0 or step == setup.total_steps or stopping
            if step % config.log_every == 0 or save_now:
                record = _flush(pending, log_file, tick, images, run_monitor)
                bar.set_postfix(loss=f"{record['loss']:.3f}", mae=f"{record['mae']:.2f}", img_s=f"{record['images_per_sec']:.0f}")
                images, tick = 0, time.perf_counter()
            if save_now:
                checkpoint.save(mngr, step, state)
            if stopping:
                stop.step = step
                break
    return state


def predict(config, variables: dict, setup: Setup, dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, labels), each (N, 3) degrees, over every record of dataset/split (all processes)."""
    data_cfg = ml_collections.ConfigDict(config.data.to_dict())
    data_cfg.name = dataset
    step = _jitted_eval_step(setup, config.data.normalize)
    preds, labels = [], []
    for batch, valid in pipeline.eval_batches(data_cfg, split, setup.batch_per_process):
        pred = step(variables, sharding.put_batch({"image": batch["image"]}, setup.mesh)["image"])
        local = np.concatenate([np.asarray(s.data) for s in pred.addressable_shards])  # this process's rows
        preds.append(local[:valid])
        labels.append(batch["pose"][:valid])
    preds, labels = np.concatenate(preds), np.concatenate(labels)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        preds, labels = (np.concatenate(list(multihost_utils.process_allgather(x))) for x in (preds, labels))
    return preds, labels


def _jitted_eval_step(setup: Setup, normalize: str) -> Callable:
    """setup's jitted eval step, made once per (setup, normalize): a sweep over datasets and
    degradation factors compiles it once (a new jax.jit of a new partial would retrace)."""
    steps = setup.__dict__.setdefault("eval_steps", {})
    if normalize not in steps:
        step = functools.partial(eval_step, model=setup.model, normalize=normalize)
        steps[normalize] = jax.jit(step, out_shardings=sharding.batch_sharding(setup.mesh))
    return steps[normalize]


def _dataset_report(workdir: pathlib.Path, dataset: str, split: str, preds: np.ndarray, labels: np.ndarray) -> dict:
    """MAE and rotation-error row, cumulative error curves (JSON + PNG) and, on AFW, the yaw accuracy."""
    afw = dataset.split("/")[0] == "afw"  # AFW labels only yaw: no rotation to compare
    rotation = {} if afw else metrics.rotation_errors(preds, labels)
    row = {**metrics.mae(preds, labels), **rotation, "num_images": int(len(labels))}
    stem = f"ced_{dataset.replace('/', '-')}_{split}"
    curves = metrics.cumulative_error_curves(preds, labels)
    _write_json(workdir / f"{stem}.json", {k: np.asarray(v).tolist() for k, v in curves.items()})
    if sharding.is_primary():
        metrics.save_cumulative_error_plot(curves, workdir / f"{stem}.png")
    if afw:
        row.update(metrics.afw_yaw_accuracy(preds[:, 0], labels[:, 0]))
    return row


def _built_datasets(config) -> list[tuple[str, str]]:
    """The (dataset, split) pairs of config.eval_on that are built; each one that is not is reported.

    Checked before any compile. A config may list test sets a user has not
    downloaded (BIWI, say): those are skipped with a line saying how to build
    them; with none built at all, the first one's error is raised.
    """
    eval_on = config.eval_on or ((config.data.name, config.data.eval_split),)
    built, errors = [], []
    for dataset, split in eval_on:
        try:
            pipeline.data_source(ml_collections.ConfigDict({**config.data.to_dict(), "name": dataset}), split)
            built.append((dataset, split))
        except FileNotFoundError as e:
            errors.append(e)
            print(f"skipped {dataset}:{split}: {e}")
    if not built:
        raise errors[0]
    return built


def evaluate(config, workdir, *, variables: dict | None = None, setup: Setup | None = None,
             ensemble: tuple = (), step: int | None = None) -> dict:
    """The papers' MAE table on every (dataset, split) of config.eval_on; writes workdir/eval.json.

    Also writes cumulative error curves (ced_<dataset>_<split>.json/.png),
    the table to TensorBoard at `step` (default: the latest checkpoint's)
    and, for AFW, the yaw accuracy at 15 and 30 degrees. ensemble: more
    workdirs (trained or converted, each with its own config, see
    `member_config`): the mean pose of all the models is evaluated (e.g.
    FSA-Caps-Fusion), and the reports go to workdir/ensemble/ with ensemble.json.
    """
    workdir = pathlib.Path(workdir)
    eval_on = _built_datasets(config)
    members = ensemble_members(config, workdir, ensemble, variables=variables, setup=setup)
    out = _report_dir(workdir, members)
    results = {}
    for dataset, split in eval_on:
        preds, labels = predict_mean(members, dataset, split)
        results[f"{dataset}:{split}"] = _dataset_report(out, dataset, split, preds, labels)
    _write_json(out / "eval.json", results)
    monitor.write_eval(out, results, monitor.checkpoint_step(workdir) if step is None else step)
    print(metrics.format_mae_table(results))
    for name, row in results.items():
        if "acc_15" in row:
            print(f"{name} yaw accuracy: {100 * row['acc_15']:.1f}% within 15 deg, {100 * row['acc_30']:.1f}% within 30 deg")
    return results


# --- ensembles and test-time degradation ------------------------------------------


@dataclasses.dataclass
class Member:
    """One model of an evaluation: its workdir, config, Setup and restored variables."""

    workdir: pathlib.Path
    config: ml_collections.ConfigDict
    setup: Setup
    variables: dict
    config_source: str  # "--config", "config.json" or "converted.json"


# Settings every ensemble member takes from the main config, so that all read the same records.
SHARED_EVAL_KEYS = ("data.data_dir", "data.eval_downsample", "batch_size", "num_devices")


def member_config(config: ml_collections.ConfigDict, workdir) -> ml_collections.ConfigDict:
    """The config that runs `workdir`'s checkpoint as an ensemble member of an evaluation with `config`.

    workdir/config.json (written by `jaxpose train`: the resolved config it
    trained with) if present, else `config` with workdir/converted.json's
    "config" fields (converted weights; model kwargs and head_kwargs
    replaced when it sets them). Members keep their own model and
    preprocessing (crop, size, channels, normalisation) and take
    SHARED_EVAL_KEYS from `config`; the test sets are `config`'s.
    """
    from jaxpose.config import apply_overrides

    workdir = pathlib.Path(workdir)
    if not workdir.is_dir():
        raise FileNotFoundError(f"ensemble workdir not found: {workdir}")
    if (workdir / "config.json").is_file():
        member = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    elif (workdir / "converted.json").is_file():
        fields = json.loads((workdir / "converted.json").read_text())["config"]  # init_from: workdir itself
        member = ml_collections.ConfigDict(config.to_dict())
        for group in ("kwargs", "head_kwargs"):
            if any(key.startswith(f"model.{group}.") for key in fields):
                member.model[group] = ml_collections.ConfigDict()
        member = apply_overrides(member, fields)
    else:
        raise FileNotFoundError(f"{workdir}: no config.json (written by `jaxpose train`) or converted.json "
                                "(written by `jaxpose convert`) saying which model it holds")
    for key in SHARED_EVAL_KEYS:
        *parents, leaf = key.split(".")
        source, target = config, member
        for part in parents:
            source, target = source[part], target[part]
        target[leaf] = source.get(leaf, 1 if leaf == "eval_downsample" else 0)
    return member


def ensemble_members(config, workdir, ensemble=(), *, variables: dict | None = None,
                     setup: Setup | None = None) -> list[Member]:
    """workdir's model with `config` (and the given variables/setup, if any), then each ensemble workdir's
    with its own `member_config`; checkpoints restored. Configs are copies: sweeps may change them."""
    main = ml_collections.ConfigDict(config.to_dict())
    setup = setup or Setup(main, training=False)
    if variables is None:
        variables = checkpoint.restore_model(workdir, setup.abstract_variables)
    members = [Member(pathlib.Path(workdir), main, setup, variables, "--config")]
    for other in ensemble:
        member = member_config(config, other)
        member_setup = Setup(member, training=False)
        source = "config.json" if (pathlib.Path(other) / "config.json").is_file() else "converted.json"
        members.append(Member(pathlib.Path(other), member, member_setup,
                              checkpoint.restore_model(other, member_setup.abstract_variables), source))
    return members


def predict_mean(members: list[Member], dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean prediction of the members, labels), each (N, 3) degrees; one member: its prediction."""
    outputs = [predict(m.config, m.variables, m.setup, dataset, split) for m in members]
    labels = outputs[0][1]
    for member, (_, other) in zip(members[1:], outputs[1:]):
        if other.shape != labels.shape or not np.allclose(other, labels, atol=1e-3):
            raise ValueError(f"ensemble member {member.workdir} read other records of {dataset}:{split} "
                             f"({len(other)} vs {len(labels)} labels): give every member the same data")
    if len(outputs) == 1:
        return outputs[0]
    return np.mean([preds for preds, _ in outputs], axis=0), labels


def _report_dir(workdir: pathlib.Path, members: list[Member]) -> pathlib.Path:
    """workdir for one model; workdir/ensemble/ (with ensemble.json naming the members) for several."""
    if len(members) == 1:
        return workdir
    out = workdir / "ensemble"
    out.mkdir(exist_ok=True)
    _write_json(out / "ensemble.json", {"members": [
        {"workdir": str(m.workdir.resolve()), "config": m.config_source, "model": m.config.model.to_dict()}
        for m in members]})
    return out


def evaluate_downsampled(config, workdir, factors, *, ensemble: tuple = ()) -> dict:
    """Hopenet's low-resolution study (Ruiz et al. 2018, Fig. 8): MAE per test-time downsampling factor.

    For each factor f every test crop is degraded as data.eval_downsample = f
    does (nearest-neighbour down- and up-sampling at its source resolution,
    `input_pipeline.augment.downsampled_crop`), for every member of
    `ensemble` too. Writes lowres_<dataset>_<split>.json ({"factors", "yaw",
    "pitch", "roll", "mean", "num_images"}) and .png into workdir (into
    workdir/ensemble/ with an ensemble); returns {"<dataset>:<split>": that dict}.
    """
    factors = [int(f) for f in factors]
    if not factors or min(factors) < 1:
        raise ValueError(f"downsampling factors must be integers >= 1, got {factors}")
    workdir = pathlib.Path(workdir)
    eval_on = _built_datasets(config)
    members = ensemble_members(config, workdir, ensemble)
    out = _report_dir(workdir, members)
    curves, rows = {}, {}
    for factor in factors:
        for member in members:
            member.config.data.eval_downsample = factor
        for dataset, split in eval_on:
            preds, labels = predict_mean(members, dataset, split)
            row = rows[f"{dataset}:{split} x{factor}"] = metrics.mae(preds, labels)
            curve = curves.setdefault((dataset, split), {"factors": [], "num_images": int(len(labels))})
            curve["factors"].append(factor)
            for name in (*metrics.ANGLE_NAMES, "mean"):
                curve.setdefault(name, []).append(row[name])
    for (dataset, split), curve in curves.items():
        stem = f"lowres_{dataset.replace('/', '-')}_{split}"
        _write_json(out / f"{stem}.json", curve)
        if sharding.is_primary():
            metrics.save_downsample_plot(curve, out / f"{stem}.png")
    print(metrics.format_mae_table(rows))
    return {f"{dataset}:{split}": curve for (dataset, split), curve in curves.items()}
