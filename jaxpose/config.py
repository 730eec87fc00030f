"""Experiment configs: the defaults every experiment starts from, loading, overrides.

An experiment is a Python file in experiments/ with `get_config()` returning
an ml_collections.ConfigDict (and optionally `get_sweep()` returning a list
of override dicts). Command-line overrides look like
`--config.optimizer.lr=1e-4`; an unknown key is an error naming it.
"""

from __future__ import annotations

import ast
import dataclasses
import fnmatch
import importlib.util
import math
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
    # N > 0: an XLA profile (jax.profiler trace) of N train steps, starting after the run's first dispatch
    # (which compiles and warms up) and rounded up to whole dispatches, written by process 0 to
    # <workdir>/plugins/profile/<time>/: `tensorboard --logdir <workdir>`, Profile tab (needs the
    # tensorboard-plugin-profile package). A count, not a (start, stop) pair: the steps worth seeing are
    # the steady ones, wherever the run starts or resumes. 0: no profile.
    c.profile_steps = 0

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
    # Optimizer state as flat vectors (optax.flatten): fewer arrays per dispatch; not with lr_multipliers.
    o.flatten = False
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
        except TypeError as e:  # a value of another type (ml_collections keeps a key's type)
            rule = rule_for(key)
            raise (_bad(key, value, rule.describe()) if rule else ValueError(f"config key {key!r}: {e}")) from None
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


# --- validation: every setting checked before anything compiles ------------------------------------------
#
# A bad value is one line naming the key and its valid values (`jaxpose: error: ...`, exit status 1) before
# the first compile, instead of a traceback minutes into a run. `validate` runs in train.Setup (train, eval,
# predict); `validate_run` once the training set's size is known. Every numeric key needs a rule here
# (tests/test_config_validation.py fails on one without).


@dataclasses.dataclass(frozen=True)
class Range:
    """Finite numbers in [lo, hi] (an end excluded where open_lo / open_hi), integers only where `integer`;
    `also`: special values allowed besides (0 = "all devices", -1 = "auto")."""

    lo: float = -math.inf
    hi: float = math.inf
    integer: bool = False
    open_lo: bool = False
    open_hi: bool = False
    also: tuple = ()

    def holds(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if value in self.also:
            return True
        if (self.integer and not isinstance(value, int)) or not math.isfinite(value):
            return False
        above = self.lo < value if self.open_lo else self.lo <= value
        return above and (value < self.hi if self.open_hi else value <= self.hi)

    def describe(self) -> str:
        kind, lo, hi = "an integer" if self.integer else "a finite number", _number(self.lo), _number(self.hi)
        if self.lo > -math.inf and self.hi < math.inf:
            text = f"{kind} in {'(' if self.open_lo else '['}{lo}, {hi}{')' if self.open_hi else ']'}"
        elif self.lo > -math.inf:
            text = f"{kind} {'>' if self.open_lo else '>='} {lo}"
        elif self.hi < math.inf:
            text = f"{kind} {'<' if self.open_hi else '<='} {hi}"
        else:
            text = kind
        return " or ".join([*map(_number, self.also), text])


def _number(value: float) -> str:
    """2147483647 in full, 0.001 as such (`:g` alone would write 2.14748e+09)."""
    return str(int(value)) if math.isfinite(value) and float(value).is_integer() else f"{value:g}"


@dataclasses.dataclass(frozen=True)
class Each:
    """A tuple (or list, from JSON) of values in `item`: exactly `length` of them where given (at least one
    where `nonempty`), non-decreasing where `ordered` (a (lo, hi) range)."""

    item: Range
    length: int | None = None
    ordered: bool = False
    nonempty: bool = False

    def holds(self, value: Any) -> bool:
        if not isinstance(value, (tuple, list)) or (self.length is not None and len(value) != self.length):
            return False
        if self.nonempty and not value:
            return False
        return all(map(self.item.holds, value)) and (not self.ordered or list(value) == sorted(value))

    def describe(self) -> str:
        if self.length == 2 and self.ordered:
            return f"a pair (lo, hi) with lo <= hi, each {self.item.describe()}"
        what = f"a tuple of {self.length}" if self.length else f"a {'non-empty ' if self.nonempty else ''}tuple"
        return f"{what} of values each {self.item.describe()}"


@dataclasses.dataclass(frozen=True)
class Option:
    """An open dict's numeric options (model kwargs, loss kwargs): integers in `integer`, other numbers in
    `number`, tuples of them alike; names and flags are left to the model's or loss's own checks (for the
    model in train.Setup, before any compile)."""

    integer: Range = Range()
    number: Range = Range()

    def holds(self, value: Any) -> bool:
        if isinstance(value, (tuple, list)):
            return all(map(self.holds, value))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        return (self.integer if isinstance(value, int) else self.number).holds(value)

    def describe(self) -> str:
        if self.integer == self.number:
            return f"{self.number.describe()} (or a tuple of such)"
        return f"{self.integer.describe()} (sizes, counts), else {self.number.describe()} (or a tuple of such)"


PROBABILITY = Range(0, 1)
COUNT = Range(1, integer=True)
MAX_IMAGE_SIZE = 1024  # face crops; beyond, a batch only exhausts memory
RULES: dict[str, Any] = {
    "seed": Range(0, 2**31 - 1, integer=True),  # grain and numpy take unsigned 32-bit seeds (and seed + 1)
    "num_devices": Range(0, integer=True),  # 0: all; the upper end is checked against the devices
    "batch_size": COUNT,
    "num_epochs": Range(0, open_lo=True),
    "num_train_steps": Range(0, integer=True),  # 0: num_epochs decides
    "log_every": COUNT,
    "checkpoint_every": COUNT,
    "steps_per_dispatch": COUNT,  # and at most the run's steps (validate_run)
    "profile_steps": Range(0, integer=True),
    "data.image_size": Range(8, MAX_IMAGE_SIZE, integer=True),  # 8: input_pipeline.canvases.MIN_IMAGE_SIZE
    # Crops are cut with black padding as large as they reach (crops.crop_resize): these keep a region
    # within a few box sizes of the face (Hopenet's k is 0.2-0.4, a scale near 1, a shift of ~0.1).
    "data.crop_k": Each(Range(0, 1), length=2, ordered=True),
    "data.eval_crop_k": Range(0, 1),
    "data.scale": Each(Range(0.25, 4), length=2, ordered=True),  # a quarter of the box: still pixels
    "data.shift": Range(0, 1),
    "data.downsample_prob": PROBABILITY,
    "data.downsample_max": Range(1),
    "data.downsample_factors": Each(Range(1, MAX_IMAGE_SIZE, integer=True)),
    "data.eval_downsample": Range(1, MAX_IMAGE_SIZE, integer=True),
    "data.blur_prob": PROBABILITY,
    # Blur kernels are 6 sigma wide (cv2 on the host, a convolution on the device): wider ones leave no face.
    "data.blur_max_sigma": Range(0, 50),
    "data.noise_prob": PROBABILITY,
    "data.noise_std": Range(0, 255),  # grey levels
    "data.canvas_size": Range(0, 4 * MAX_IMAGE_SIZE, integer=True),  # 0: default; else >= image_size
    "data.num_workers": Range(0, 256, integer=True, also=(-1,)),  # -1: auto
    "data.num_threads": Range(0, 256, integer=True),
    "data.prefetch": Range(0, 4096, integer=True),
    "model.head_kwargs.granularities": Each(Range(2, 3600, integer=True), nonempty=True),  # bins per angle
    "model.head_kwargs.lo": Range(),
    "model.head_kwargs.hi": Range(),  # > lo
    "model.head_kwargs.*": Option(integer=Range(1, 4096, integer=True)),
    "model.kwargs.*": Option(integer=Range(1, 4096, integer=True)),
    "losses.*.weight": Range(0),
    "losses.*.*": Option(),
    "optimizer.lr": Range(0, open_lo=True),
    "optimizer.b1": Range(0, 1, open_hi=True),
    "optimizer.b2": Range(0, 1, open_hi=True),
    "optimizer.momentum": Range(0, 1, open_hi=True),
    "optimizer.weight_decay": Range(0),
    "optimizer.warmup_steps": Range(0, integer=True),
    "optimizer.step_epochs": Range(0, open_lo=True),
    "optimizer.step_factor": Range(0, open_lo=True),
    "optimizer.grad_clip": Range(0),  # 0: no clipping
    "optimizer.lr_multipliers.*": Range(0),  # 0: frozen
}


def rule_for(key: str):
    """The rule of a dotted key: its own, else the first matching pattern of RULES; None for none."""
    if key in RULES:
        return RULES[key]
    return next((rule for pattern, rule in RULES.items() if "*" in pattern and fnmatch.fnmatchcase(key, pattern)), None)


def flat_items(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """{dotted key: value} of every leaf."""
    def walk(node: dict, prefix: str):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return dict(walk(config.to_dict(), ""))


def _bad(key: str, value: Any, valid: str) -> ValueError:
    return ValueError(f"config key {key!r} is {value!r}; valid: {valid}")


def validate(config: ml_collections.ConfigDict, *, devices: int, processes: int, training: bool = True) -> None:
    """Raises a one-line ValueError naming the first bad key and its valid values; nothing compiles.

    devices, processes: those of the job (jax.device_count(), jax.process_count()). Checks every key
    with a rule, the batch's split over devices and processes, the input size for the model and, for
    datasets already built, the split names (the training split only when training: an evaluation of a
    recipe reads its test sets alone).
    """
    for key, value in flat_items(config).items():
        rule = rule_for(key)
        if rule is not None and value is not None and not rule.holds(value):
            raise _bad(key, value, rule.describe())
    _check_layout(config, devices, processes)
    _check_image_size(config)
    _check_ranges(config)
    _check_splits(config, training)


def _check_layout(config, devices: int, processes: int) -> None:
    """num_devices among the devices; the batch split evenly over the mesh's devices (so over processes)."""
    requested = config.get("num_devices", 0)
    if processes > 1 and requested not in (0, devices):
        raise _bad("num_devices", requested, f"0 or {devices} (every device: the mesh spans all {processes} processes)")
    if requested > devices:
        raise _bad("num_devices", requested, f"0 (all) to {devices} (the devices available)")
    mesh = requested or devices
    step = 2 * mesh if config.data.get("pairs") else mesh
    if config.batch_size % step:
        layout = f"{processes} processes x {mesh // processes} devices" if processes > 1 else f"{mesh} devices"
        pairs = ", x2 for RankPose pairs" if config.data.get("pairs") else ""
        raise _bad("batch_size", config.batch_size, f"a positive multiple of {step} ({layout}{pairs})")


# Input sides the models' shape checks accept (jaxpose.models.fsanet): their trunks pool by 2, 3 times
# (FSA-Net's stage maps are H/8) or 4 times (SSR-Net-MD); the ResNets take any size.
IMAGE_SIZE_MULTIPLE = {"fsanet": 8, "ssrnet_md": 16}


def _check_image_size(config) -> None:
    size, name = config.data.image_size, config.model.name
    kwargs = dict(config.model.get("kwargs") or {})
    primary = kwargs.get("num_primcaps")
    if name == "fsanet" and kwargs.get("scoring") == "none" and primary:
        # Without scoring the 3 (H/8)^2 pixel features are the primary capsules: one size fits.
        side = 8 * math.isqrt(primary // 3)
        if 3 * (side // 8) ** 2 != primary:
            raise _bad("model.kwargs.num_primcaps", primary, "3 (H/8)^2 with scoring 'none' (192 at 64 px)")
        if size != side:
            raise _bad("data.image_size", size, f"{side} (fsanet with scoring 'none' and num_primcaps {primary})")
    multiple = IMAGE_SIZE_MULTIPLE.get(name, 1)
    if size % multiple:
        raise _bad("data.image_size", size, f"a multiple of {multiple} in [8, {MAX_IMAGE_SIZE}] for model {name}")


def _check_ranges(config) -> None:
    """Settings that bound each other."""
    head = config.model.get("head_kwargs") or {}
    if "lo" in head and "hi" in head and not head["lo"] < head["hi"]:
        raise _bad("model.head_kwargs.hi", head["hi"], f"a finite number > model.head_kwargs.lo ({head['lo']:g})")
    data = config.data
    if data.get("canvas_size") and data.canvas_size < data.image_size:
        raise _bad("data.canvas_size", data.canvas_size, f"0 (default) or an integer in [{data.image_size} "
                   f"(data.image_size), {4 * MAX_IMAGE_SIZE}]")
    if data.get("downsample_factors") and data.get("downsample_prob", 0) > 0:
        raise _bad("data.downsample_prob", data.downsample_prob, "0 when data.downsample_factors is set "
                   "(Hopenet's nearest-neighbour schedule or the random down-sampling, not both)")


def dataset_splits(name: str, data_dir: str) -> list[str] | None:
    """The split names of a built dataset; None where it is not built (its loader says how to build it)."""
    builder = registry.get_builder(name, data_dir)
    if not pathlib.Path(builder.data_dir, "dataset_info.json").exists():
        return None
    return list(builder.info.splits.keys())


def _check_splits(config, training: bool) -> None:
    data = config.data
    # (key, shown value, dataset, split) of every split a run reads
    checks = [("data.train_split", data.train_split, data.name, data.train_split)] if training else []
    eval_on = config.get("eval_on") or ()
    if not eval_on:
        checks.append(("data.eval_split", data.eval_split, data.name, data.eval_split))
    for entry in eval_on:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and all(isinstance(s, str) for s in entry)):
            raise _bad("eval_on", tuple(eval_on), "((dataset, split), ...), e.g. (('aflw2000', 'test'),)")
        checks.append(("eval_on", tuple(entry), *entry))
    for key, value, name, split in checks:
        if name.split("/")[0] not in registry.DATASETS:
            raise _bad("data.name" if key.startswith("data.") else key, name, ", ".join(registry.DATASETS))
        splits = dataset_splits(name, data.data_dir)
        if splits is not None and split not in splits:
            raise _bad(key, value, f"{', '.join(splits)} (the splits of {name})")


def validate_run(config: ml_collections.ConfigDict, *, records: int, examples_per_step: int,
                 steps_per_epoch: int, total_steps: int) -> None:
    """The checks that need the training set's size (this process's `records`; `examples_per_step`, the
    process's share of a step: images, or pairs with data.pairs): a batch within the set, at least one
    step, no dispatch longer than the run."""
    if examples_per_step > records:
        images = records * config.batch_size // examples_per_step
        raise _bad("batch_size", config.batch_size, f"at most {images} (the training records of "
                   f"{config.data.name}:{config.data.train_split}{', as pairs' if config.data.pairs else ''})")
    if total_steps < 1:
        raise _bad("num_epochs", config.num_epochs, f"a number >= {1 / steps_per_epoch:.4g} (one step; an epoch "
                   f"is {steps_per_epoch} steps), or num_train_steps > 0")
    if config.steps_per_dispatch > total_steps:
        raise _bad("steps_per_dispatch", config.steps_per_dispatch,
                   f"an integer in [1, {total_steps}] (the run's steps)")
