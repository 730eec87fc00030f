"""Converters from PyTorch state_dicts to jaxpose variables.

* torchvision ResNet-18/34/50/101 (ImageNet initialisation for any
  experiment): `resnet_from_torchvision` -> {"params": {"backbone"}, "batch_stats": {"backbone"}};
  the ImageNet `fc` layer is dropped (the pose head is new).
* Original Hopenet checkpoints (Ruiz et al., CVPRW 2018, github.com/natanielruiz/deep-head-pose):
  `hopenet_from_torch` -> variables of `hopenet_model()`, a ResNet-50 with
  `BinnedHead(granularities=(66,), left_edge=True)`; the original decodes
  `sum_k softmax_k * k * 3 - 99`, the left edge of each 3-degree bin.
* `convert(kind, src, workdir)` writes either as a model-only checkpoint
  (`jaxpose eval` and `config.init_from` read it) plus `converted.json`.

Files are read with `torch.load(..., weights_only=True)`: tensors and plain
containers only, no code from the file runs. torch is an optional dependency,
imported only here.

Names map one to one because jaxpose's ResNet follows torchvision's layout:
`layer2_0/downsample_conv/kernel` <- `layer2.0.downsample.0.weight`; conv
kernels OIHW -> HWIO, Linear (out, in) -> Dense (in, out), BatchNorm weight /
bias / running_mean / running_var -> scale / bias / mean / var.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxpose import checkpoint
from jaxpose.models import PoseModel, get_head, get_model
from jaxpose.models.resnet import RESNETS

PathLike = str | os.PathLike
StateDict = Mapping[str, np.ndarray]

DEPTHS = (18, 34, 50, 101)
HOPENET_BINS = 66
# torchvision's pooled-feature classifier, Hopenet's unused fine-tuning layer.
_TORCHVISION_IGNORED = ("fc.",)
_HOPENET_IGNORED = ("fc_finetune.",)
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_MODULE_NAMES = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}

# --- reading a state_dict -------------------------------------------------------


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError("reading PyTorch weights needs torch: pip install torch") from None
    return torch


def load_state_dict(path: PathLike) -> dict[str, np.ndarray]:
    """A PyTorch state_dict file as {name: float32 numpy array}, read as data only.

    A DataParallel `module.` prefix is removed; `num_batches_tracked` counters
    are dropped; a training checkpoint {"state_dict": {...}, ...} is unwrapped.
    Anything else (not a torch file, a pickled module, non-tensor entries) is
    a ValueError naming the file.
    """
    torch = _import_torch()
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types (UnpicklingError, RuntimeError, EOFError...)
        raise ValueError(f"{path}: not a PyTorch state_dict readable as data ({_load_failure(error)})") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{path}: not a state_dict (a non-empty dict of tensors), found {type(obj).__name__}")
    state = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor; not a state_dict")
        if not name.endswith("num_batches_tracked"):
            state[name] = value.detach().to(torch.float32).numpy()
    if all(name.startswith("module.") for name in state):
        state = {name[len("module."):]: value for name, value in state.items()}
    return state


def _load_failure(error: Exception) -> str:
    text = str(error).strip()
    if "Weights only load failed" in text:
        # torch's own advice (weights_only=False) would run code from the file; ask for a state_dict instead.
        return "it holds Python objects besides tensors, e.g. a whole pickled model; save model.state_dict() instead"
    return text.splitlines()[0][:200] if text else type(error).__name__


# --- name and layout mapping ------------------------------------------------------


def torch_name(path: tuple[str, ...]) -> str:
    """The torch tensor name of a flax variable path (collection excluded).

    ("backbone", "layer2_0", "downsample_conv", "kernel") -> "layer2.0.downsample.0.weight";
    ("head", "fc_yaw", "kernel") -> "fc_yaw.weight". The PoseModel wrappers
    "backbone" and "head" have no torch counterpart.
    """
    *modules, leaf = path
    modules = [_MODULE_NAMES.get(m, m) for m in modules if m not in ("backbone", "head")]
    names = [re.sub(r"^(layer\d+)_(\d+)$", r"\1.\2", m) for m in modules]
    return ".".join(names + [_LEAF_NAMES[leaf]])


def _torch_shape(flax_shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    """Conv HWIO -> OIHW, Dense (in, out) -> (out, in); other leaves keep their shape."""
    if leaf == "kernel" and len(flax_shape) == 4:
        return tuple(flax_shape[i] for i in (3, 2, 0, 1))
    if leaf == "kernel" and len(flax_shape) == 2:
        return flax_shape[::-1]
    return tuple(flax_shape)


def _to_flax(array: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and array.ndim == 4:
        return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
    if leaf == "kernel" and array.ndim == 2:
        return np.ascontiguousarray(array.T)
    return array


def _first_of(names: list[str]) -> str:
    return f"{names[0]!r}" + (f" (and {len(names) - 1} more)" if len(names) > 1 else "")


def _convert(state: StateDict, template: Any, source: str, what: str, ignored: tuple[str, ...]) -> dict:
    """Fills every leaf of `template` (shapes) from `state`; missing, misshapen or unused tensors are errors."""
    leaves = {path: (torch_name(path[1:]), spec) for path, spec in flax.traverse_util.flatten_dict(template).items()}
    missing = [name for name, _ in leaves.values() if name not in state]
    if missing:
        raise ValueError(f"{source}: missing tensor {_first_of(missing)}, needed by a {what}")
    converted = {}
    for path, (name, spec) in leaves.items():
        expected = _torch_shape(tuple(spec.shape), path[-1])
        if tuple(state[name].shape) != expected:
            found = tuple(state[name].shape)
            raise ValueError(f"{source}: tensor {name!r} has shape {found}, a {what} needs {expected}")
        converted[path] = _to_flax(state[name], path[-1])
    used = {name for name, _ in leaves.values()}
    unused = sorted(n for n in state if n not in used and not n.startswith(ignored))
    if unused:
        raise ValueError(f"{source}: unexpected tensor {_first_of(unused)} for a {what}")
    return flax.traverse_util.unflatten_dict(converted)


def _shapes(model: nn.Module) -> dict:
    # Abstract init: shapes only, no compilation or memory for the weights.
    images = jnp.zeros((1, 64, 64, 3), jnp.float32)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, train=False))


# --- torchvision ResNet -------------------------------------------------------------


def infer_resnet_depth(state: Mapping[str, Any], source: str = "state_dict") -> int:
    """18, 34, 50 or 101 from the tensor names: blocks per stage and whether blocks have conv3."""
    blocks: dict[int, set[int]] = {stage: set() for stage in (1, 2, 3, 4)}
    for name in state:
        match = re.match(r"layer([1-4])\.(\d+)\.", name)
        if match:
            blocks[int(match[1])].add(int(match[2]))
    stage_sizes = tuple(len(blocks[stage]) for stage in (1, 2, 3, 4))
    block = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    for depth in DEPTHS:
        spec = RESNETS[f"resnet{depth}"]
        if tuple(spec["stage_sizes"]) == stage_sizes and spec["block"] == block:
            return depth
    raise ValueError(
        f"{source}: {block} blocks per stage {stage_sizes} are not a torchvision ResNet-{'/'.join(map(str, DEPTHS))}"
    )


def _check_depth(depth: int) -> None:
    if depth not in DEPTHS:
        raise ValueError(f"ResNet depth {depth} not supported; valid: {', '.join(map(str, DEPTHS))}")


def resnet_state_to_variables(state: StateDict, depth: int, source: str = "state_dict") -> dict:
    """A torchvision ResNet state_dict (numpy) -> {"params": {"backbone"}, "batch_stats": {"backbone"}}."""
    _check_depth(depth)
    shapes = _shapes(get_model(f"resnet{depth}"))
    template = {collection: {"backbone": tree} for collection, tree in shapes.items()}
    return _convert(state, template, source, f"torchvision ResNet-{depth}", _TORCHVISION_IGNORED)


def resnet_from_torchvision(path: PathLike, depth: int) -> dict:
    """torchvision ResNet-{18,34,50,101} weights (.pth) -> jaxpose backbone variables.

    Returns {"params": {"backbone": ...}, "batch_stats": {"backbone": ...}}
    (numpy float32) for `get_model(f"resnet{depth}")`; the ImageNet `fc` is
    ignored. The weights expect RGB input standardised with the ImageNet
    mean/std (data.normalize = "imagenet").
    """
    _check_depth(depth)
    return resnet_state_to_variables(load_state_dict(path), depth, str(path))


# --- original Hopenet -------------------------------------------------------------------


def hopenet_model(depth: int = 50, dtype: Any = jnp.float32) -> PoseModel:
    """Hopenet as released: ResNet-`depth` + three Linear(C, 66) heads, left-edge decoding."""
    _check_depth(depth)
    head = get_head("binned", granularities=(HOPENET_BINS,), lo=-99.0, hi=99.0, left_edge=True, dtype=dtype)
    return PoseModel(backbone=get_model(f"resnet{depth}", dtype=dtype), head=head)


def hopenet_state_to_variables(state: StateDict, source: str = "state_dict") -> tuple[dict, int]:
    """A Hopenet state_dict (numpy, `module.` already stripped) -> (variables of hopenet_model(depth), depth)."""
    depth = infer_resnet_depth(state, source)
    template = _shapes(hopenet_model(depth))
    return _convert(state, template, source, f"Hopenet (ResNet-{depth})", _HOPENET_IGNORED), depth


def hopenet_from_torch(path: PathLike) -> dict:
    """Original Hopenet weights (e.g. hopenet_robust_alpha1.pkl) -> variables of `hopenet_model()`.

    {"params": {"backbone": ..., "head": {"fc_yaw": {"kernel", "bias"}, "fc_pitch": ..., "fc_roll": ...}},
    "batch_stats": {"backbone": ...}}. The backbone depth is read from the
    file (50 for the released weights); `fc_finetune` is unused by the
    original inference and ignored. Input: RGB 224x224 Hopenet loose crops
    (k = 0.2), ImageNet mean/std; at 224 px the original AvgPool2d(7) equals
    jaxpose's global average pool.
    """
    return hopenet_state_to_variables(load_state_dict(path), str(path))[0]


# --- convert: checkpoint + converted.json ------------------------------------------------


def _torchvision_entry(state: StateDict, source: str) -> tuple[dict, dict]:
    depth = infer_resnet_depth(state, source)
    variables = resnet_state_to_variables(state, depth, source)
    config = {"model.name": f"resnet{depth}", "data.normalize": "imagenet", "data.channels": "rgb"}
    return variables, {"depth": depth, "config": config}


def _hopenet_entry(state: StateDict, source: str) -> tuple[dict, dict]:
    variables, depth = hopenet_state_to_variables(state, source)
    config = {
        "model.name": f"resnet{depth}",
        "model.head": "binned",
        "model.head_kwargs.granularities": [HOPENET_BINS],
        "model.head_kwargs.lo": -99.0,
        "model.head_kwargs.hi": 99.0,
        "model.head_kwargs.left_edge": True,
        "data.normalize": "imagenet",
        "data.channels": "rgb",
        "data.image_size": 224,
        "data.crop": "hopenet",
        "data.eval_crop_k": 0.2,
    }
    return variables, {"depth": depth, "config": config}


CONVERTERS: dict[str, Callable[[StateDict, str], tuple[dict, dict]]] = {
    "torchvision-resnet": _torchvision_entry,
    "hopenet": _hopenet_entry,
}


def convert(kind: str, src: PathLike, workdir: PathLike) -> pathlib.Path:
    """Converts `src` (a PyTorch state_dict of `kind`) into a model-only checkpoint of `workdir`.

    kind: "torchvision-resnet" (depth read from the file) or "hopenet".
    Writes workdir/checkpoints (via `checkpoint.save_model`) and
    workdir/converted.json: source path, sha256, kind, depth, tensor count and
    the config fields an experiment needs ("config": {dotted key: value},
    also as "overrides" command-line flags, including init_from). Returns the
    checkpoint directory. A workdir that already holds checkpoints is refused.
    """
    if kind not in CONVERTERS:
        raise ValueError(f"unknown conversion kind {kind!r}; valid: {', '.join(CONVERTERS)}")
    src = pathlib.Path(src).resolve()
    variables, info = CONVERTERS[kind](load_state_dict(src), str(src))
    return checkpoint.save_converted(workdir, variables, kind=kind, source=src, config=info["config"], depth=info["depth"])
