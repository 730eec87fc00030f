"""Published weights in jaxpose: converters and `convert` to a checkpoint.

This module is the public API for pretrained weights (`jaxpose convert`;
`jaxpose predict` on photos and videos is `jaxpose.inference`):
* shared: `Predictor` (a flax model, its variables and one jitted apply).
* FSA-Net: the official Keras 2.2 HDF5 weights of FSA-Net (Yang et al., CVPR
  2019) -> `jaxpose.models.fsanet.FSANet` variables (`load_fsanet_keras`,
  `fsanet_fusion`).
* PyTorch (re-exported from `jaxpose.pretrained_torch`): torchvision ResNets
  (`resnet_from_torchvision`) and the original Hopenet (`hopenet_from_torch`).
* `convert(kind, src, workdir)`: any of the above -> a model-only checkpoint
  that `jaxpose eval`, `jaxpose predict` and `config.init_from` read, plus
  `converted.json` with the config overrides that run it.

HDF5 files are read with h5py as plain arrays; nothing in them is executed.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import h5py
import jax
import jax.numpy as jnp
import numpy as np

from jaxpose import checkpoint, pretrained_torch
from jaxpose.models.fsanet import FSANet, FSANetFusion
from jaxpose.pretrained_torch import hopenet_from_torch, hopenet_model, resnet_from_torchvision

__all__ = [
    "CONVERT_KINDS", "FSANET_INPUT_SIZE", "Predictor", "convert", "fsanet_config", "fsanet_fusion",
    "fsanet_keras_variables", "fsanet_settings", "hopenet_from_torch", "hopenet_model", "load_fsanet_keras",
    "resnet_from_torchvision",
]

PathLike = str | os.PathLike

# --- shared -------------------------------------------------------------------


def _apply_pose(model: nn.Module, variables: Any, images: jax.Array) -> jax.Array:
    return model.apply(variables, images, train=False)["pose"].astype(jnp.float32)


class Predictor:
    """Pose of a batch of crops with a converted model: `predictor(crops) -> (B, 3)` numpy degrees.

    crops: (B, S, S, 3) uint8 or float, prepared exactly as the original model
    takes them (for FSA-Net: 64 x 64 BGR, values 0-255, no normalisation).
    `.model` is the flax module, `.variables` its variables; the apply is
    jitted once (recompiled only for a new batch size).
    """

    def __init__(self, model: nn.Module, variables: Any, input_size: int, name: str = ""):
        self.model = model
        self.variables = jax.device_put(variables)
        self.input_size = input_size
        self.name = name
        self._apply = jax.jit(functools.partial(_apply_pose, model))

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        x = np.asarray(crops)
        size = self.input_size
        if x.ndim != 4 or x.shape[1:] != (size, size, 3):
            raise ValueError(f"{self.name or 'Predictor'}: crops must be (B, {size}, {size}, 3), got {x.shape}")
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise ValueError(f"{self.name or 'Predictor'}: crops must be uint8 or float, got {x.dtype}")
        return np.asarray(self._apply(self.variables, jnp.asarray(x, jnp.float32)))

    def __repr__(self) -> str:
        return f"Predictor({self.name or type(self.model).__name__}, input {self.input_size}px)"


# --- FSA-Net (official Keras weights) -------------------------------------------

FSANET_INPUT_SIZE = 64
_FSANET_NAME = re.compile(
    r"fsanet_(?P<prefix>var_|noS_)?(?P<aggregation>capsule|netvlad|metric)"
    r"_(?P<num_capsule>\d+)_(?P<dim_capsule>\d+)_(?P<routings>\d+)_(?P<num_primcaps>\d+)_(?P<m_dim>\d+)"
)
_SCORING_OF_PREFIX = {None: "conv", "var_": "var", "noS_": "none"}
_AGGREGATION_GROUP = {"capsule": "ssr_Cap_model", "netvlad": "ssr_Agg_model", "metric": "ssr_Metric_model"}


def fsanet_settings(h5_path: PathLike) -> dict[str, Any]:
    """FSANet keyword arguments from an official file name.

    `fsanet_{scoring}{aggregation}_{num_capsule}_{dim_capsule}_{routings}_{num_primcaps}_{m_dim}.h5`,
    scoring prefix "" (1x1 conv), "var_" or "noS_" (no fine-grained mapping).
    """
    stem = pathlib.Path(h5_path).name.split(".")[0]
    match = _FSANET_NAME.fullmatch(stem)
    if match is None:
        raise ValueError(
            f"{h5_path}: file name does not name an FSA-Net variant; expected "
            "fsanet_[var_|noS_]{capsule|netvlad|metric}_<caps>_<dim>_<routings>_<primcaps>_<m>.h5"
        )
    settings = {key: int(value) for key, value in match.groupdict().items()
                if key not in ("prefix", "aggregation")}
    settings["scoring"] = _SCORING_OF_PREFIX[match["prefix"]]
    settings["aggregation"] = match["aggregation"]
    return settings


class _KerasWeights:
    """The tensors of a Keras HDF5 weights file: {sub-model: {"layer/weight:0": array}}."""

    def __init__(self, path: PathLike):
        self.path = str(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        try:
            handle = h5py.File(path, "r")
        except OSError as error:
            raise ValueError(f"{path}: not an HDF5 file ({error})") from None
        with handle:
            root = handle["model_weights"] if "model_weights" in handle else handle
            if "layer_names" not in root.attrs:
                raise ValueError(f"{path}: not a Keras weights file (no 'layer_names' attribute)")
            self.groups = {_text(name): self._read_group(root[_text(name)]) for name in root.attrs["layer_names"]}
        self.used: set[tuple[str, str]] = set()

    @staticmethod
    def _read_group(group: h5py.Group) -> dict[str, np.ndarray]:
        # A name listed but absent is left out here and reported by `take` as a missing tensor.
        names = (_text(name) for name in group.attrs.get("weight_names", []))
        return {name: np.asarray(group[name]) for name in names if name in group}

    def numbered(self, group: str, prefix: str, count: int) -> list[str]:
        """The `count` layers named prefix_N in `group`, by N (Keras numbers layers in creation order)."""
        names = {key.split("/")[0] for key in self.group(group)}
        found = sorted((n for n in names if re.fullmatch(rf"{prefix}_\d+", n)), key=lambda n: int(n.rsplit("_", 1)[1]))
        if len(found) != count:
            raise ValueError(f"{self.path}: {group} has {len(found)} '{prefix}_N' layers, expected {count}")
        return found

    def group(self, name: str) -> dict[str, np.ndarray]:
        if name not in self.groups:
            raise ValueError(f"{self.path}: missing tensor group {name!r} (has {', '.join(self.groups)})")
        return self.groups[name]

    def take(self, group: str, key: str) -> np.ndarray:
        tensors = self.group(group)
        if key not in tensors:
            raise ValueError(f"{self.path}: missing tensor {group}/{key}")
        self.used.add((group, key))
        return tensors[key]

    def check_all_used(self) -> None:
        for group, tensors in self.groups.items():
            for key in tensors:
                if (group, key) not in self.used:
                    raise ValueError(f"{self.path}: unexpected tensor {group}/{key} (file and variant disagree)")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# A mapping entry: flax (collection, *path) -> (Keras group, "layer/weight:0", transform or None).
_Mapping = dict[tuple[str, ...], tuple[str, str, Callable[[np.ndarray], np.ndarray] | None]]


def _depthwise(kernel: np.ndarray) -> np.ndarray:
    # Keras (3, 3, C, 1) -> flax grouped conv (3, 3, 1, C).
    return np.transpose(kernel, (0, 1, 3, 2))


def _dense(mapping: _Mapping, path: tuple[str, ...], group: str, layer: str) -> None:
    mapping[("params", *path, "kernel")] = (group, f"{layer}/kernel:0", None)
    mapping[("params", *path, "bias")] = (group, f"{layer}/bias:0", None)


def _trunk_mapping(weights: _KerasWeights) -> _Mapping:
    """ssr_G_model: separable convs 1-7 (+ BN 1-7) are B_R, 8-14 B_T; conv2d 1-6 pair (tanh, relu) per stage."""
    g, mapping = "ssr_G_model", {}
    seps = weights.numbered(g, "separable_conv2d", 14)
    norms = weights.numbered(g, "batch_normalization", 14)
    for i, (sep, norm) in enumerate(zip(seps, norms)):
        block = ("streams", f"{'relu' if i < 7 else 'tanh'}_{i % 7}")
        mapping[("params", *block, "depthwise", "kernel")] = (g, f"{sep}/depthwise_kernel:0", _depthwise)
        mapping[("params", *block, "pointwise", "kernel")] = (g, f"{sep}/pointwise_kernel:0", None)
        mapping[("params", *block, "pointwise", "bias")] = (g, f"{sep}/bias:0", None)
        for collection, name, keras in (("params", "scale", "gamma"), ("params", "bias", "beta"),
                                        ("batch_stats", "mean", "moving_mean"),
                                        ("batch_stats", "var", "moving_variance")):
            mapping[(collection, *block, "bn", name)] = (g, f"{norm}/{keras}:0", None)
    convs = weights.numbered(g, "conv2d", 6)
    for k in range(3):
        for j, stream in enumerate(("tanh", "relu")):
            _dense(mapping, (f"stage{k + 1}_{stream}",), g, convs[2 * k + j])
    return mapping


def _head_mapping(weights: _KerasWeights, settings: dict[str, Any]) -> _Mapping:
    """ssr_S_model (scoring, M_k and C), the aggregation sub-model and the stage heads."""
    mapping: _Mapping = {}
    if settings["scoring"] != "none":
        s = "ssr_S_model"
        if settings["scoring"] == "conv":
            _dense(mapping, ("mapping", "score_conv"), s, weights.numbered(s, "conv2d", 1)[0])
        right, left = weights.numbered(s, "dense", 2)
        _dense(mapping, ("mapping", "sr_dense"), s, right)
        _dense(mapping, ("mapping", "sl_dense"), s, left)
    aggregation = settings["aggregation"]
    a = _AGGREGATION_GROUP[aggregation]
    if aggregation == "capsule":
        mapping[("params", "capsule", "W")] = (a, "caps/W:0", None)
    elif aggregation == "netvlad":
        layer = weights.numbered(a, "net_vlad", 1)[0]
        for name, keras in (("cluster_kernel", "W1"), ("cluster_bias", "B1"),
                            ("cluster_centers", "W2"), ("projection", "H1")):
            mapping[("params", "netvlad", name)] = (a, f"{layer}/kernel_{keras}:0", None)
    else:
        first, second = weights.numbered(a, "mat_mul_layer", 2)
        mapping[("params", "metric", "feature_kernel")] = (a, f"{first}/kernel_type1:0", None)
        mapping[("params", "metric", "capsule_kernel")] = (a, f"{second}/kernel_type2:0", None)
    f = "ssr_F_Cap_model" if "ssr_F_Cap_model" in weights.groups else "ssr_F_model"
    for k, pred in enumerate(weights.numbered(f, "dense", 3), start=1):
        _dense(mapping, ("heads", f"pred_{k}"), f, pred)
        _dense(mapping, ("heads", f"delta_{k}"), f, f"delta_s{k}")
        _dense(mapping, ("heads", f"local_{k}"), f, f"local_delta_stage{k}")
    return mapping


def fsanet_keras_variables(h5_path: PathLike, model: FSANet) -> dict[str, Any]:
    """{"params", "batch_stats"} of `model` from an official FSA-Net Keras HDF5 weights file.

    Every flax variable must come from one tensor of the right shape and every
    tensor of the file must be used; otherwise a one-line ValueError names the
    file and the tensor.
    """
    weights = _KerasWeights(h5_path)
    settings = {"scoring": model.scoring, "aggregation": model.aggregation}
    mapping = {**_trunk_mapping(weights), **_head_mapping(weights, settings)}
    images = jax.ShapeDtypeStruct((1, FSANET_INPUT_SIZE, FSANET_INPUT_SIZE, 3), jnp.float32)
    template = flax.traverse_util.flatten_dict(
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images))
    flat = {}
    for path, spec in template.items():
        if path not in mapping:
            raise ValueError(f"{h5_path}: no tensor maps to variable {'/'.join(path)}")
        group, key, transform = mapping[path]
        value = weights.take(group, key)
        value = transform(value) if transform else value
        if value.shape != spec.shape:
            raise ValueError(f"{h5_path}: tensor {group}/{key} has shape {value.shape}, "
                             f"expected {spec.shape} for {'/'.join(path)}")
        if not np.all(np.isfinite(value)):
            # The published fsanet_var_netvlad weights are NaN throughout (a diverged run).
            raise ValueError(f"{h5_path}: tensor {group}/{key} has {np.sum(~np.isfinite(value))} "
                             "non-finite values")
        flat[path] = jnp.asarray(value, jnp.float32)
    weights.check_all_used()
    return flax.traverse_util.unflatten_dict(flat)


def _fsanet_model(h5_path: PathLike, dtype: Any) -> FSANet:
    return FSANet(**fsanet_settings(h5_path), dtype=dtype)


def load_fsanet_keras(h5_path: PathLike, dtype: Any = jnp.float32) -> Predictor:
    """Predictor of an official FSA-Net weights file (variant from its name, e.g. fsanet_var_capsule_3_16_2_21_5.h5).

    Takes 64 x 64 BGR crops with values 0-255 (FSA-Net's AFLW2000 crop: the
    landmark box enlarged by 0.6 of its size on every side); returns
    (B, 3) (yaw, pitch, roll) degrees.
    """
    model = _fsanet_model(h5_path, dtype)
    variables = fsanet_keras_variables(h5_path, model)
    return Predictor(model, variables, FSANET_INPUT_SIZE, name=pathlib.Path(h5_path).stem)


def fsanet_fusion(h5_paths: Sequence[PathLike], dtype: Any = jnp.float32) -> Predictor:
    """Predictor averaging the poses of several official variants.

    FSA-Caps-Fusion is the mean of capsule, var_capsule and noS_capsule.
    """
    if not h5_paths:
        raise ValueError("fsanet_fusion: no weight files given")
    models = [_fsanet_model(path, dtype) for path in h5_paths]
    members = [fsanet_keras_variables(path, model) for path, model in zip(h5_paths, models)]
    variables = {collection: {f"variants_{i}": member[collection] for i, member in enumerate(members)
                              if collection in member}
                 for collection in ("params", "batch_stats")}
    names = "+".join(pathlib.Path(path).stem for path in h5_paths)
    return Predictor(FSANetFusion(tuple(models)), variables, FSANET_INPUT_SIZE, name=f"fusion({names})")


# --- convert: a model-only checkpoint + converted.json -----------------------------

CONVERT_KINDS = ("fsanet-keras", *pretrained_torch.CONVERTERS)


def fsanet_config(settings: dict[str, Any]) -> dict[str, Any]:
    """Config fields (dotted keys) that run an official FSA-Net variant as released.

    settings: `fsanet_settings(path)`. The official model takes 64 x 64 BGR
    crops with raw 0-255 values, cut with FSA-Net's ad = 0.6 crop.
    """
    return {
        "model.name": "fsanet",
        **{f"model.kwargs.{key}": value for key, value in settings.items()},
        "data.image_size": FSANET_INPUT_SIZE,
        "data.crop": "fsanet",
        "data.channels": "bgr",
        "data.normalize": "bgr255",
        "model.dtype": "float32",  # the released precision (experiments/fsanet_caps_1x1.py trains in bf16)
    }


def _convert_fsanet(src: pathlib.Path, workdir: pathlib.Path) -> pathlib.Path:
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    settings = fsanet_settings(src)
    variables = fsanet_keras_variables(src, FSANet(**settings))  # validates every tensor before writing
    return checkpoint.save_converted(
        workdir, variables, kind="fsanet-keras", source=src, config=fsanet_config(settings), variant=settings
    )


def convert(kind: str, src: PathLike, workdir: PathLike) -> pathlib.Path:
    """Converts published weights `src` into a model-only checkpoint of `workdir`; returns its directory.

    kind: "fsanet-keras" (an official FSA-Net .h5, variant from its name),
    "torchvision-resnet" (ImageNet backbone, depth from the file) or "hopenet"
    (an original Hopenet .pkl state_dict). Also writes workdir/converted.json:
    source, sha256, the variant or depth, and the config fields that run the
    weights ("config": {dotted key: value}, and as "overrides", the
    `--config.key=value` flags, including init_from for fine-tuning). A
    workdir that already holds checkpoints is refused (FileExistsError).
    """
    src, workdir = pathlib.Path(src).resolve(), pathlib.Path(workdir).resolve()
    if kind == "fsanet-keras":
        return _convert_fsanet(src, workdir)
    if kind in pretrained_torch.CONVERTERS:
        return pretrained_torch.convert(kind, src, workdir)
    raise ValueError(f"unknown conversion kind {kind!r}; valid: {', '.join(CONVERT_KINDS)}")
