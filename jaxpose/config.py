"""Experiment configs: the defaults every experiment starts from, loading, overrides.

An experiment is a Python file in experiments/ with `get_config()` returning
an ml_collections.ConfigDict (and optionally `get_sweep()` returning a list
of override dicts). Command-line overrides look like
`--config.optimizer.lr=1e-4`; an unknown key is an error naming it.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import sys
from types import ModuleType
from typing import Any

import ml_collections

from input_pipeline.datasets import registry

DEFAULT_DATA_DIR = str(registry.DEFAULT_DATA_DIR)


def base_config() -> ml_collections.ConfigDict:
    """All settings with their defaults (a Hopenet ResNet-18 on synthetic_heads)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_devices = 0  # 0: every device of the host(s)
    c.batch_size = 64  # global, in images (a RankPose batch of N pairs is 2N images)
    c.num_epochs = 1.0
    c.num_train_steps = 0  # > 0 overrides num_epochs
    c.log_every = 50
    c.checkpoint_every = 500
    c.init_from = ""  # a workdir whose checkpointed params (and batch_stats) initialise the model; "none": none
    # True: training refuses an empty init_from (the ImageNet-initialised papers); "none" trains from scratch.
    c.require_init = False
    c.eval_on = ()  # ((dataset, split), ...); empty: (data.name, data.eval_split)
    c.steps_per_dispatch = 1  # train steps per jitted call (lax.scan); logging and checkpoints stay exact
    c.parallelism = "gspmd"  # or "per_device": shard_map step, local BatchNorm, averaged gradients (pmap-style)

    c.data = d = ml_collections.ConfigDict()
    d.name = "synthetic_heads"
    d.data_dir = DEFAULT_DATA_DIR
    d.train_split = "train"
    d.eval_split = "test"
    d.image_size = 64
    d.crop = "hopenet"  # input_pipeline.crops.CROPS
    d.eval_crop = ""  # the evaluation transform's convention; "": data.crop
    d.crop_k = (0.2, 0.4)  # Hopenet's random loose-crop margin in training
    d.eval_crop_k = 0.2
    d.scale = (1.0, 1.0)  # random crop scale range
    d.shift = 0.0  # random crop shift, fraction of the crop size
    d.flip = True
    d.downsample_prob = 0.0
    d.downsample_max = 1.0
    # Hopenet's low-resolution training (host pipeline): each image's factor drawn uniformly from these,
    # nearest-neighbour down/up-sampling at the crop's source resolution; (): off (official: (1, 6, 11, 16)).
    d.downsample_factors = ()
    d.eval_downsample = 1  # evaluation crops degraded the same way by this factor (Hopenet Fig. 8); 1: none
    d.blur_prob = 0.0
    d.blur_max_sigma = 1.5
    d.noise_prob = 0.0
    d.noise_std = 0.0  # in 0-255 pixel units
    d.channels = "rgb"  # "bgr" for the official FSA-Net weights
    d.normalize = "imagenet"  # or "bgr255"
    d.pairs = False  # RankPose same-identity pairs
    # Where training images are made (input_pipeline.pipeline): "host" decodes and augments each image on
    # the host (grain); "memmap" gathers decoded canvases (`jaxpose data cache`) from a memory map and
    # augments on the device; "device" keeps the canvases on the devices and samples there.
    d.pipeline = "host"
    d.canvas_size = 0  # canvases' side for memmap/device; 0: input_pipeline.canvases.default_canvas_size
    # grain worker processes for the host pipeline (each runs num_threads reader threads, OpenCV
    # single-threaded): 0 = none, the reader threads run in the training process; -1 = auto: one per
    # CPU this process may use less one for the training process, 0 on 2 CPUs or fewer, where a worker
    # measured no faster than the threads (input_pipeline.augment.num_workers).
    d.num_workers = 0
    d.num_threads = 2
    d.prefetch = 4

    c.model = m = ml_collections.ConfigDict()
    m.name = "resnet18"
    m.dtype = "float32"
    m.kwargs = ml_collections.ConfigDict()
    m.head = "binned"
    m.head_kwargs = ml_collections.ConfigDict({"granularities": (66,), "lo": -99.0, "hi": 99.0})
    # BatchNorm layers of a ResNet backbone kept in inference mode while training (running statistics
    # used and not updated; scale and bias still trained): "" none, "backbone" all of them, "blocks" the
    # residual blocks' bn1-bn3 only (deep-head-pose's train_hopenet.py; see models.resnet.ResNet).
    m.freeze_batch_stats = ""

    # name -> {"weight": w, **loss kwargs}; the train step sums weight * mean(term) over the terms, or
    # weight * sum(term) for a term with "reduction": "sum" (a paper's sum over the batch; losses.total_loss).
    c.losses = ml_collections.ConfigDict({"hopenet": {"weight": 1.0, "alpha": 1.0}})

    c.optimizer = o = ml_collections.ConfigDict()
    o.name = "adam"
    o.lr = 1e-3
    o.b1 = 0.9
    o.b2 = 0.999
    o.momentum = 0.9
    o.weight_decay = 0.0
    o.schedule = "constant"  # constant | cosine | step
    o.warmup_steps = 0
    o.step_epochs = 30.0
    o.step_factor = 0.1
    o.grad_clip = 0.0
    # Parameter-path prefix ("backbone/conv1", "head") -> learning-rate multiplier, 0 = frozen; the longest
    # matching prefix wins, other parameters keep x1 (jaxpose.train.make_optimizer). Empty: one group.
    o.lr_multipliers = ml_collections.ConfigDict()
    return c


def _load_module(path: str | pathlib.Path) -> ModuleType:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    # Let experiment files import their siblings as `experiments.<name>`.
    root = str(path.resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"_jaxpose_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path} has no get_config()")
    return module


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as resnet50


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """Sets dotted keys ("optimizer.lr") on config; unknown keys and wrong types raise ValueError."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for i, part in enumerate(parents):
            if part not in node:
                raise ValueError(f"unknown config key {'.'.join(parents[: i + 1])!r}")
            node = node[part]
        if not isinstance(node, ml_collections.ConfigDict) or (leaf not in node and not _open_dict(parents)):
            raise ValueError(f"unknown config key {key!r}")
        value = _parse_value(value) if isinstance(value, str) else value
        try:
            node[leaf] = value
        except TypeError as e:
            raise ValueError(f"config key {key!r}: {e}") from None
    return config


def _open_dict(parents: list[str]) -> bool:
    """Keyword-argument dicts accept new keys (model.kwargs.x, losses.gld.sigma, optimizer.lr_multipliers.head, ...)."""
    return bool(parents) and (parents[-1] in ("kwargs", "head_kwargs", "lr_multipliers") or parents[0] == "losses")


def override_args(extra: list[str]) -> dict[str, str]:
    """["--config.a.b=1", "--config.c", "2"] -> {"a.b": "1", "c": "2"}; anything else is an error."""
    overrides, i = {}, 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--config."):
            raise ValueError(f"unrecognized argument {arg!r} (overrides look like --config.optimizer.lr=1e-4)")
        key, has_value, value = arg[len("--config.") :].partition("=")
        if not has_value:
            if i + 1 >= len(extra):
                raise ValueError(f"missing value for {arg}")
            i, value = i + 1, extra[i + 1]
        overrides[key] = value
        i += 1
    return overrides


def load_config(path: str | pathlib.Path, overrides: dict[str, Any] | None = None) -> ml_collections.ConfigDict:
    """get_config() of an experiment file with overrides applied."""
    config = _load_module(path).get_config()
    return apply_overrides(config, overrides or {})


def load_sweep(path: str | pathlib.Path) -> list[dict[str, Any]]:
    module = _load_module(path)
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"{path} has no get_sweep()")
    return list(module.get_sweep())
