"""`jaxpose export` (jaxpose.export): ONNX in onnxruntime and StableHLO through jax.export against jaxpose's own
predictions, the official FSA-Net weights on real AFLW2000 crops, tiny ResNet and SSR-Net-MD checkpoints,
the input contract beside each file, and the one-line errors."""

import importlib.metadata
import json
import os
import pathlib
import sys

import cv2
import jax
import ml_collections
import numpy as np
import pytest
import scipy.io

from conftest import tiny_config
from input_pipeline import crops
from jaxpose import checkpoint, cli, export, pretrained, train
from jaxpose.angles import from_pose_para
from jaxpose.config import load_config
from jaxpose.inference.pose import Face, PoseModel, prepare_face

ROOT = pathlib.Path(__file__).resolve().parents[1]
FSANET = "fsanet_capsule_3_16_2_21_5"
TOLERANCE = 0.01  # degrees: exported vs jaxpose


def _onnxruntime():
    """onnxruntime, which `make test` installs (the `export` extra): missing fails under CI, skips elsewhere."""
    if os.environ.get("CI"):
        import onnxruntime
        return onnxruntime
    return pytest.importorskip("onnxruntime")


def run_onnx(path: pathlib.Path, images: np.ndarray) -> np.ndarray:
    session = _onnxruntime().InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["pose"], {"image": images})[0]


def run_stablehlo(path: pathlib.Path, images: np.ndarray) -> np.ndarray:
    return np.asarray(jax.export.deserialize(bytearray(path.read_bytes())).call(images))


def export_cli(config_file, workdir, fmt, out, *overrides) -> int:
    return cli.main([str(a) for a in ["export", "--config", config_file, "--workdir", workdir, *overrides,
                                      "--format", fmt, out]])


# --- the official FSA-Net weights on the 16 AFLW2000 samples -----------------------------------


@pytest.fixture(scope="module")
def fsanet(testdata, tmp_path_factory):
    """(workdir, --config.* overrides, config) of the converted official FSA-Caps 1x1 weights."""
    workdir = tmp_path_factory.mktemp("fsanet") / "w"
    pretrained.convert("fsanet-keras", testdata / "fsanet_keras" / f"{FSANET}.h5", workdir)
    overrides = json.loads((workdir / "converted.json").read_text())["overrides"]
    config = load_config(ROOT / "experiments" / "fsanet_caps_1x1.py",
                         dict(flag.removeprefix("--config.").split("=", 1) for flag in overrides))
    return workdir, overrides, config


@pytest.fixture(scope="module")
def aflw(testdata, fsanet):
    """(crops (16, 64, 64, 3) uint8 BGR as prepare_face cuts them, jaxpose predict's poses, labels)."""
    _, _, config = fsanet
    faces, labels = [], []
    for jpg in sorted((testdata / "aflw2000").glob("*.jpg")):
        mat = scipy.io.loadmat(jpg.with_suffix(".mat"))
        image = cv2.cvtColor(cv2.imread(str(jpg)), cv2.COLOR_BGR2RGB)
        faces.append(Face(image, crops.landmark_box(mat["pt2d"].T, rule="fsanet")))
        labels.append(from_pose_para(mat["Pose_Para"][0]))
    assert len(faces) == 16
    poses, errors = PoseModel(config, fsanet[0]).predict(faces)  # the `jaxpose predict` path
    assert errors == [None] * 16
    inputs = np.stack([prepare_face(f.image, f.box, config.data) for f in faces])
    return inputs, poses, np.stack(labels)


@pytest.fixture(scope="module")
def fsanet_files(fsanet, tmp_path_factory):
    """{format: path} of the FSA-Net export through the command line."""
    workdir, overrides, _ = fsanet
    folder, files = tmp_path_factory.mktemp("export"), {}
    for fmt, name in (("onnx", "fsanet.onnx"), ("stablehlo", "fsanet.stablehlo")):
        files[fmt] = folder / name
        assert export_cli(ROOT / "experiments" / "fsanet_caps_1x1.py", workdir, fmt, files[fmt], *overrides) == 0
    return files


def test_onnx_matches_jaxpose_on_aflw2000(fsanet_files, aflw):
    """onnxruntime on the real crops: the jaxpose angles within 0.01 degrees, at batch 16, 5 and 11 (one
    file: the batch is dynamic), and so the paper's accuracy (mean MAE 4.36 on these 16)."""
    inputs, poses, labels = aflw
    session = _onnxruntime().InferenceSession(str(fsanet_files["onnx"]), providers=["CPUExecutionProvider"])
    (image,), (pose,) = session.get_inputs(), session.get_outputs()
    assert (image.name, image.shape, image.type) == ("image", ["batch", 64, 64, 3], "tensor(uint8)")
    assert (pose.name, pose.shape, pose.type) == ("pose", ["batch", 3], "tensor(float)")
    whole = session.run(None, {"image": inputs})[0]
    parts = np.concatenate([session.run(None, {"image": inputs[:5]})[0], session.run(None, {"image": inputs[5:]})[0]])
    for got in (whole, parts):
        assert got.shape == (16, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got, poses, rtol=0, atol=TOLERANCE)
    assert np.mean(np.abs(whole - labels)) == pytest.approx(4.36, abs=0.01)


def test_stablehlo_round_trip_on_aflw2000(fsanet_files, aflw):
    inputs, poses, _ = aflw
    exported = jax.export.deserialize(bytearray(fsanet_files["stablehlo"].read_bytes()))
    (aval,) = exported.in_avals
    assert not isinstance(aval.shape[0], int) and aval.shape[1:] == (64, 64, 3) and aval.dtype == np.uint8
    assert set(exported.platforms) == {"cpu", "cuda", "tpu"}
    for batch in (inputs, inputs[:3]):
        got = np.asarray(exported.call(batch))
        np.testing.assert_allclose(got, poses[: len(batch)], rtol=0, atol=TOLERANCE)


def test_fsanet_contract(fsanet, fsanet_files):
    workdir = fsanet[0]
    for fmt, path in fsanet_files.items():
        record = json.loads(export.contract_path(path).read_text())
        assert record["format"] == fmt and record["file"] == path.name
        assert record["file_bytes"] == path.stat().st_size
        assert record["input"] == {
            **record["input"], "name": "image", "shape": ["batch", 64, 64, 3], "layout": "NHWC", "dtype": "uint8",
            "value_range": [0, 255], "channel_order": "BGR"}
        assert record["input"]["normalization"].startswith("inside the model: none")
        assert record["input"]["crop"]["convention"] == "fsanet" and "k" not in record["input"]["crop"]
        assert record["outputs"] == [{"name": "pose", "shape": ["batch", 3], "dtype": "float32",
                                      "meaning": ["yaw", "pitch", "roll"], "units": "degrees"}]
        assert record["model"]["name"] == "fsanet" and "head" not in record["model"]
        assert record["model"]["kwargs"]["scoring"] == "conv"
        assert record["checkpoint"] == {"workdir": str(workdir.resolve()), "step": 0}
        assert record["jaxpose_version"] == importlib.metadata.version("jaxpose")
    assert json.loads(export.contract_path(fsanet_files["onnx"]).read_text())["runtime"]["opset"] == export.ONNX_OPSET


# --- tiny randomly initialised checkpoints: ResNet heads and SSR-Net-MD ------------------------


def random_checkpoint(config, workdir: pathlib.Path, step: int) -> pathlib.Path:
    setup = train.Setup(config, training=False)
    variables = train.init_variables(config, setup.model, setup.mesh)
    checkpoint.save_model(workdir, variables, step=step)
    return workdir


def resnet_config(head: str, head_kwargs: dict):
    config = tiny_config("unused")  # resnet_tiny at 32 px, ImageNet normalisation, RGB
    config.model.head, config.model.head_kwargs = head, ml_collections.ConfigDict(head_kwargs)
    return config


TINY = {
    "resnet_binned": lambda: resnet_config("binned", {"granularities": (198, 66, 18, 6, 2), "lo": -99.0, "hi": 99.0}),
    "resnet_regression": lambda: resnet_config("regression", {"kind": "arccos"}),
    "resnet_rotation_6d": lambda: resnet_config("rotation_6d", {}),
    "resnet_quaternion": lambda: resnet_config("quaternion", {}),
    "ssrnet_md": lambda: load_config(ROOT / "experiments" / "synthetic_ssrnet_md.py", {}),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_models_both_formats(name, tmp_path, fast_compile):
    """Random weights: the exported files give the jaxpose predictions on the same random crops at two batch
    sizes; the contract names the checkpoint's step, channel order and normalisation."""
    config = TINY[name]()
    workdir = random_checkpoint(config, tmp_path / "w", step=7)
    size = config.data.image_size
    images = np.random.default_rng(0).integers(0, 256, (6, size, size, 3), dtype=np.uint8)
    expected = PoseModel(config, workdir).members[0].predict(images)
    assert np.std(expected, axis=0).min() > 1e-3  # the inputs matter: a constant model would pass nothing
    for fmt, run in (("onnx", run_onnx), ("stablehlo", run_stablehlo)):
        record = export.export(config, workdir, fmt, tmp_path / f"{name}.{fmt}")
        for batch in (images, images[:2]):
            # 1e-3 degrees (the issue asks 0.01): float32 reassociation moves atan2 of the rotation heads'
            # random, near-gimbal-lock outputs by up to ~1.2e-4 degrees.
            np.testing.assert_allclose(run(tmp_path / f"{name}.{fmt}", batch), expected[: len(batch)], rtol=0, atol=1e-3)
        assert record["checkpoint"]["step"] == 7 and record["input"]["shape"] == ["batch", size, size, 3]
        assert json.loads(export.contract_path(tmp_path / f"{name}.{fmt}").read_text()) == record
        if name.startswith("resnet"):
            assert record["input"]["channel_order"] == "RGB" and "ImageNet" in record["input"]["normalization"]
            assert record["input"]["crop"] == {**record["input"]["crop"], "convention": "hopenet", "k": 0.2}
            assert record["model"]["head"] == config.model.head
        else:
            assert record["input"]["channel_order"] == "BGR" and "head" not in record["model"]


# --- errors: one line, status 1 ----------------------------------------------------------------


HOPENET = ROOT / "experiments" / "synthetic_hopenet.py"
TINY_FLAGS = ["--config.model.name=resnet_tiny", "--config.data.image_size=32", "--config.batch_size=8"]


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
    config = load_config(HOPENET, dict(flag.removeprefix("--config.").split("=", 1) for flag in TINY_FLAGS))
    return random_checkpoint(config, tmp_path_factory.mktemp("tiny") / "w", step=1)


def export_error(tmp_path, capsys, workdir, fmt, out) -> str:
    assert export_cli(HOPENET, workdir, fmt, out, *TINY_FLAGS) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxpose: error: "), lines
    if not pathlib.Path(out).is_dir():
        assert not pathlib.Path(out).exists() and not export.contract_path(out).exists()
    return lines[0]


def test_tiny_workdir_exports(tiny_workdir, tmp_path, capsys):
    """The command that the error cases vary succeeds as given."""
    assert export_cli(HOPENET, tiny_workdir, "stablehlo", tmp_path / "m.shlo", *TINY_FLAGS) == 0
    assert "wrote" in capsys.readouterr().out and export.contract_path(tmp_path / "m.shlo").is_file()


def test_errors(tiny_workdir, tmp_path, capsys):
    workdir = tiny_workdir
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no checkpoints" in export_error(tmp_path, capsys, empty, "onnx", tmp_path / "m.onnx")
    assert "no checkpoints" in export_error(tmp_path, capsys, tmp_path / "missing", "stablehlo", tmp_path / "m.shlo")
    message = export_error(tmp_path, capsys, workdir, "tflite", tmp_path / "m.tflite")
    assert "unknown export format 'tflite'; valid: onnx, stablehlo" in message
    assert "does not exist" in export_error(tmp_path, capsys, workdir, "onnx", tmp_path / "no" / "m.onnx")
    assert "is a folder" in export_error(tmp_path, capsys, workdir, "onnx", tmp_path)
    # sysfs refuses new files even to root, for whom a read-only mode bit does not.
    assert "is not writable" in export_error(tmp_path, capsys, workdir, "stablehlo", "/sys/jaxpose_test.shlo")


def test_onnx_route_missing(tiny_workdir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # `import jax2onnx` raises ImportError
    message = export_error(tmp_path, capsys, tiny_workdir, "onnx", tmp_path / "m.onnx")
    assert "jax2onnx" in message and "pip install" in message and "jaxpose[export]" in message
