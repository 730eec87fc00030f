"""`jaxpose export`: a checkpoint as an ONNX model or a serialized StableHLO module, with its input contract.

    contract = export(config, workdir, "onnx", "fsanet.onnx")   # also writes fsanet.onnx.json

The checkpoint of `workdir` (trained, or written by `jaxpose convert`) is
restored exactly as `jaxpose predict` and `jaxpose eval` restore it, and
wrapped as one function of raw face crops:

    pose(image: uint8 (B, S, S, 3), 0-255, the config's channel order) -> float32 (B, 3) degrees

with the config's normalisation inside (`train.eval_step`), so a user feeds
the crops that `inference.pose.prepare_face` cuts and nothing else. The batch B
is symbolic in both formats. OUT + ".json" (`contract`) says what the input
must be: size, channel order, dtype and range, the crop convention, the
outputs, the source checkpoint and step, the jaxpose version.

Both formats run the model in float32: parameters are float32 in every
config, and bf16 compute (`model.dtype`) is an accelerator training setting
that ONNX runtimes do not support for every operator.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from input_pipeline import augment, crops
from jaxpose import checkpoint, train
from jaxpose.models import MODELS

FORMATS = ("onnx", "stablehlo")
INPUT_NAME, OUTPUT_NAME = "image", "pose"
BATCH = "batch"  # the name of the symbolic batch dimension in both formats
ONNX_OPSET = 21  # onnxruntime >= 1.20 runs it
# A StableHLO module serialized for these platforms runs on any of them (`Exported.call` picks the current one).
STABLEHLO_PLATFORMS = ("cpu", "cuda", "tpu")
# jax2onnx without its declared dependencies, which pin orbax-checkpoint below jaxpose's (README, "Export").
ONNX_INSTALL = "pip install 'jaxpose[export]' && pip install --no-deps jax2onnx==0.17.1 (as `make test` does)"


def export(config: ml_collections.ConfigDict, workdir: str | os.PathLike, fmt: str,
           out: str | os.PathLike) -> dict[str, Any]:
    """Writes `workdir`'s latest checkpoint to `out` in `fmt` ("onnx" or "stablehlo") and its contract to
    `out` + ".json"; returns the contract. Bad arguments fail before anything is traced."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    out = pathlib.Path(out)
    check_writable(out)
    if fmt == "onnx":
        require_onnx()
    pose, step, run_config = pose_function(config, workdir)
    image = input_spec(run_config.data.image_size)
    start = time.perf_counter()
    runtime = (write_onnx if fmt == "onnx" else write_stablehlo)(pose, image, out)
    seconds = time.perf_counter() - start
    record = contract(run_config, workdir, step, fmt, out)
    record["runtime"] = runtime
    record["export_seconds"] = round(seconds, 2)
    text = json.dumps(record, indent=2) + "\n"
    _write_atomic(contract_path(out), text.encode())
    return json.loads(text)  # what the file says (tuples as lists)


def contract_path(out: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(f"{out}.json")


def check_writable(out: pathlib.Path) -> None:
    """OUT and OUT.json can be created: checked by writing a probe, since permissions alone do not say
    (root, read-only mounts)."""
    if out.is_dir():
        raise ValueError(f"output {out} is a folder; give a file name, e.g. {out / 'model.onnx'}")
    folder = out.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {folder} does not exist (or is not a folder)")
    probe = folder / f".{out.name}.jaxpose-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"\0")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"output {out} is not writable ({e.strerror or e})") from None


def require_onnx() -> None:
    """The ONNX route's packages are an optional extra: say how to install them, before any work."""
    try:
        import jax2onnx  # noqa: F401
        import onnx  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"ONNX export needs the jax2onnx and onnx packages ({e.name or e} is not "
                           f"installed): {ONNX_INSTALL}") from None


# --- the function that is exported ---------------------------------------------------------


def export_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with float32 compute and, for FSA-Net / SSR-Net-MD, the depthwise convolutions as grouped
    convolutions (ONNX `Conv` with group = C; the "shifts" formulation, chosen on CPU for training speed,
    is the same arithmetic in a sum of padded slices). Same variables: the checkpoint restores unchanged."""
    run_config = ml_collections.ConfigDict(config.to_dict())
    run_config.model.dtype = "float32"
    if run_config.model.name in ("fsanet", "ssrnet_md"):
        kwargs = dict(run_config.model.get("kwargs", {}))
        run_config.model.kwargs = ml_collections.ConfigDict({**kwargs, "depthwise": "conv"})
    return run_config


def pose_function(config: ml_collections.ConfigDict, workdir: str | os.PathLike
                  ) -> tuple[Callable[[jax.Array], jax.Array], int, ml_collections.ConfigDict]:
    """(pose(uint8 images) -> float32 (B, 3) degrees with the restored variables as constants, the
    checkpoint's step, the config it runs with), restored as `inference.pose` restores a member."""
    workdir = pathlib.Path(workdir)
    if not (workdir / "checkpoints").is_dir():
        raise FileNotFoundError(f"{workdir}: no checkpoints (train, or `jaxpose convert` weights into it, first)")
    run_config = export_config(config)
    setup = train.Setup(run_config, training=False)
    # On the host: the exported program holds them as constants, not as device buffers of this process.
    variables = jax.device_get(checkpoint.restore_model(workdir, setup.abstract_variables))
    step, _ = checkpoint.newest_intact(workdir / "checkpoints")  # the one restore_model just read
    model, normalize = setup.model, run_config.data.normalize

    def pose(image: jax.Array) -> jax.Array:
        return train.eval_step(variables, image, model=model, normalize=normalize).astype(jnp.float32)

    return pose, int(step), run_config


def input_spec(image_size: int) -> jax.ShapeDtypeStruct:
    (batch,) = jax.export.symbolic_shape(BATCH)
    return jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.uint8)


# --- StableHLO -----------------------------------------------------------------------------


def write_stablehlo(pose: Callable, image: jax.ShapeDtypeStruct, out: pathlib.Path) -> dict[str, Any]:
    """`jax.export` with the symbolic batch; `jax.export.deserialize(data).call(x)` runs it."""
    exported = jax.export.export(jax.jit(pose), platforms=STABLEHLO_PLATFORMS)(image)
    _write_atomic(out, bytes(exported.serialize()))
    return {"platforms": list(exported.platforms), "calling_convention_version": exported.calling_convention_version,
            "run": "jax.export.deserialize(bytearray(open(path, 'rb').read())).call(crops)"}


# --- ONNX ----------------------------------------------------------------------------------


def write_onnx(pose: Callable, image: jax.ShapeDtypeStruct, out: pathlib.Path) -> dict[str, Any]:
    """jax2onnx on the model's primitives, pooling made 2-D (`_pools_to_2d`), checked by onnx."""
    import onnx
    from jax.extend.core import jaxpr_as_fun

    with _quiet_plugin_discovery():
        import jax2onnx
    # Traced here, outside jax2onnx: during its own trace jax2onnx 0.17.1 replaces flax.linen.max_pool and
    # avg_pool by functions that take the window only as a keyword and padding only as a string, which
    # the models' positional calls and ResNet's explicit (1, 1) padding do not fit. jax2onnx converts the
    # primitives of this jaxpr instead; the symbolic batch is the same object in both traces.
    closed = jax.make_jaxpr(pose)(image)
    with _quiet_plugin_discovery():
        model = jax2onnx.to_onnx(lambda x: jaxpr_as_fun(closed)(x)[0], [image],
                                 model_name="jaxpose", opset=ONNX_OPSET, input_names=[INPUT_NAME],
                                 output_names=[OUTPUT_NAME])
    _pools_to_2d(model.graph)
    onnx.checker.check_model(model, full_check=True)
    _write_atomic(out, model.SerializeToString())
    return {"opset": ONNX_OPSET, "exporter": f"jax2onnx {_version('jax2onnx')}",
            "run": "onnxruntime.InferenceSession(path).run(None, {'image': crops})[0]"}


@contextlib.contextmanager
def _quiet_plugin_discovery():
    """jax2onnx imports its plugins for Equinox, dm-pix and other libraries on first use and logs a warning
    with a traceback for each one missing (jaxpose models use none of them); onnx_ir warns of the untyped
    shape constants jax2onnx builds. The result is checked by onnx's checker instead (and by the tests,
    against jaxpose, in onnxruntime)."""
    loggers = [logging.getLogger(name) for name in ("jax2onnx.plugins.plugin_system", "onnx_ir.serde")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _pools_to_2d(graph) -> None:
    """Rewrites each MaxPool that pools an NHWC tensor over all four dimensions as a 2-D NCHW MaxPool.

    jax2onnx lowers lax.reduce_window_max with window (1, kh, kw, 1) to a MaxPool over 4 "spatial"
    dimensions of the NHWC tensor unsqueezed to (1, 1, B, H, W, C); onnxruntime runs pooling of 1 to 3
    spatial dimensions only. Same input and output names: Squeeze, Transpose, MaxPool, Transpose, Unsqueeze.
    """
    import onnx
    from onnx import helper

    nodes = list(graph.node)
    del graph.node[:]
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kernel, strides = list(attrs.get("kernel_shape", [])), list(attrs.get("strides", [1, 1, 1, 1]))
        pads = list(attrs.get("pads", [0] * 8))
        nhwc = (node.op_type == "MaxPool" and len(kernel) == 4 and kernel[0] == kernel[3] == 1
                and strides[0] == strides[3] == 1 and pads[0] == pads[3] == pads[4] == pads[7] == 0
                and set(attrs) <= {"kernel_shape", "strides", "pads"})
        if not nhwc:
            graph.node.append(node)
            continue
        name, (x,), (y,) = node.name or node.output[0], node.input, node.output
        axes = f"{name}_axes01"
        graph.initializer.append(onnx.numpy_helper.from_array(np.array([0, 1], np.int64), axes))
        graph.node.extend([
            helper.make_node("Squeeze", [x, axes], [f"{name}_nhwc"]),
            helper.make_node("Transpose", [f"{name}_nhwc"], [f"{name}_nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("MaxPool", [f"{name}_nchw"], [f"{name}_pooled"], kernel_shape=kernel[1:3],
                             strides=strides[1:3], pads=[pads[1], pads[2], pads[5], pads[6]]),
            helper.make_node("Transpose", [f"{name}_pooled"], [f"{name}_out"], perm=[0, 2, 3, 1]),
            helper.make_node("Unsqueeze", [f"{name}_out", axes], [y]),
        ])


# --- the contract --------------------------------------------------------------------------


CROP_RULES = {
    "hopenet": "Hopenet's test crop: the face box enlarged by k (as the published code, bottom by 0.6 k)",
    "hopenet_train": "Hopenet's training crop: a square of 224/240 of the box enlarged by k",
    "fsanet": "FSA-Net's crop: the face box enlarged by 0.6 of its width and height on every side, clipped to the image",
    "box": "the face box itself",
}


def contract(config: ml_collections.ConfigDict, workdir: str | os.PathLike, step: int, fmt: str,
             out: pathlib.Path) -> dict[str, Any]:
    """What the exported model takes and returns, and where it came from (written as OUT.json)."""
    data, size = config.data, config.data.image_size
    channels = "BGR" if data.channels == "bgr" else "RGB"
    mean, std = (np.round(v, 3).tolist() for v in (train.IMAGENET_MEAN, train.IMAGENET_STD))
    normalization = {"imagenet": f"(x - {mean}) / {std} per {channels} channel (ImageNet's, on 0-255)",
                     "bgr255": "none (the raw 0-255 values)"}[data.normalize]
    convention = augment.eval_convention(data)
    crop = {"convention": convention, "rule": CROP_RULES.get(convention, convention),
            "resize": f"{crops.RESIZE.get(data.crop, '?')} ({data.crop} convention) to {size} x {size}",
            "jaxpose": "jaxpose.inference.pose.prepare_face(rgb_image, (x_min, y_min, x_max, y_max), config.data)"}
    if convention.startswith("hopenet"):
        crop["k"] = float(data.eval_crop_k)
    return {
        "format": fmt,
        "file": out.name,
        "file_bytes": out.stat().st_size,
        "input": {
            "name": INPUT_NAME, "shape": [BATCH, size, size, 3], "layout": "NHWC", "dtype": "uint8",
            "value_range": [0, 255], "channel_order": channels,
            "normalization": f"inside the model: {normalization}; feed raw crops", "crop": crop,
        },
        "outputs": [{"name": OUTPUT_NAME, "shape": [BATCH, 3], "dtype": "float32",
                     "meaning": ["yaw", "pitch", "roll"], "units": "degrees"}],
        "model": _model_record(config.model),
        "checkpoint": {"workdir": str(pathlib.Path(workdir).resolve()), "step": step},
        "jaxpose_version": _version("jaxpose"),
        "jax_version": jax.__version__,
    }


def _model_record(model: ml_collections.ConfigDict) -> dict[str, Any]:
    record = {"name": model.name, "kwargs": model.get("kwargs", ml_collections.ConfigDict()).to_dict()}
    if MODELS[model.name][1]:  # a backbone with a head; FSA-Net and SSR-Net-MD have their own
        record.update(head=model.head, head_kwargs=model.get("head_kwargs", ml_collections.ConfigDict()).to_dict())
    record["compute_dtype"] = "float32"
    return record


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _write_atomic(path: pathlib.Path, payload: bytes) -> None:
    """Whole or not at all: an interrupted export leaves no truncated model behind."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_bytes(payload)
        os.replace(partial, path)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise ValueError(f"cannot write {path} ({e.strerror or e})") from None
