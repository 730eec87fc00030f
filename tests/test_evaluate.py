"""`jaxpose eval` options on trained tiny models: Hopenet's low-resolution sweep (--downsample_factors) and
ensembles of checkpoints (eval|predict --ensemble), and the official FSA-Caps-Fusion through --ensemble.

One module-scoped pair of 2-step trainings serves every test (XLA:CPU compiles dominate their time).
"""

import csv
import json
import pathlib

import cv2
import numpy as np
import pytest
from conftest import tiny_config

from input_pipeline.datasets.build import build_dataset
from jaxpose import cli, metrics, pretrained, train
from jaxpose.config import apply_overrides, base_config, load_config
from jaxpose.inference import pose as pose_lib

EXPERIMENT = '''
import sys
sys.path.insert(0, {tests!r})
from conftest import tiny_config


def get_config():
    # Hopenet's low-resolution training schedule (experiments/hopenet_lowres_300wlp.py) on the tiny model.
    return tiny_config({data_dir!r}, num_train_steps=2, checkpoint_every=2,
                       **{{"data.downsample_factors": (1, 6, 11, 16)}})
'''
# A second member with another head, loss, input size and seed: its own config.json must be used.
REGRESSION = {"model.head": "regression", "model.head_kwargs": {"kind": "linear"}, "losses": {"mse": {}},
              "data.image_size": 40, "seed": 1, "num_train_steps": 2, "checkpoint_every": 2}


@pytest.fixture(scope="module")
def trained(tiny_data_dir, fast_compile, tmp_path_factory):
    """(experiment file, W1 binned Hopenet head at 32 px, W2 linear regression head at 40 px), 2 steps each."""
    root = tmp_path_factory.mktemp("ensemble")
    experiment = root / "tiny.py"
    experiment.write_text(EXPERIMENT.format(tests=str(pathlib.Path(__file__).parent), data_dir=str(tiny_data_dir)))
    assert cli.main(["train", "--config", str(experiment), "--workdir", str(root / "w1")]) == 0
    train.train_and_evaluate(tiny_config(tiny_data_dir, **REGRESSION), root / "w2")
    return experiment, root / "w1", root / "w2"


def test_lowres_sweep_writes_the_curve(trained, capsys):
    """Trained with Hopenet's degradation schedule, then `jaxpose eval --downsample_factors 1 2 8`."""
    experiment, workdir, _ = trained
    plain = json.loads((workdir / "eval.json").read_text())["synthetic_heads/tiny:test"]
    argv = ["eval", "--config", str(experiment), "--workdir", str(workdir), "--downsample_factors", "1", "2", "8"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "synthetic_heads/tiny:test x8" in out
    curve = json.loads((workdir / "lowres_synthetic_heads-tiny_test.json").read_text())
    assert curve["factors"] == [1, 2, 8] and curve["num_images"] == 24
    for name in ("yaw", "pitch", "roll", "mean"):
        assert len(curve[name]) == 3 and curve[name][0] == pytest.approx(plain[name], abs=1e-5)
    assert curve["mean"][2] != pytest.approx(curve["mean"][0], abs=1e-6)  # 8x at 32 px changes the input
    assert (workdir / "lowres_synthetic_heads-tiny_test.png").read_bytes()[:4] == b"\x89PNG"
    # One factor in a plain eval equals that point of the curve.
    config = load_config(experiment, {"data.eval_downsample": 8})
    assert train.evaluate(config, workdir)["synthetic_heads/tiny:test"]["mean"] == pytest.approx(curve["mean"][2], abs=1e-5)
    assert cli.main(argv[:-3] + ["0"]) == 1
    assert "factors must be integers >= 1" in capsys.readouterr().err


def test_member_config_reads_the_workdir(trained, tmp_path):
    experiment, _, w2 = trained
    config = load_config(experiment, {"batch_size": 4})
    member = train.member_config(config, w2)
    assert member.model.head == "regression" and member.model.head_kwargs.kind == "linear"
    assert member.data.image_size == 40 and member.seed == 1 and "mse" in member.losses
    assert member.batch_size == 4 and member.data.data_dir == config.data.data_dir  # shared with the main config
    (tmp_path / "bare").mkdir()
    with pytest.raises(FileNotFoundError, match="bare: no config.json .* or converted.json"):
        train.member_config(config, tmp_path / "bare")
    with pytest.raises(FileNotFoundError, match="ensemble workdir not found: .*nowhere"):
        train.member_config(config, tmp_path / "nowhere")


def test_eval_ensemble_is_the_mean_pose(trained, capsys):
    experiment, w1, w2 = trained
    single = json.loads((w1 / "eval.json").read_text())
    assert cli.main(["eval", "--config", str(experiment), "--workdir", str(w1), "--ensemble", str(w2)]) == 0
    results = json.loads((w1 / "ensemble" / "eval.json").read_text())
    assert json.loads((w1 / "eval.json").read_text()) == single  # the single model's report is kept
    members = json.loads((w1 / "ensemble" / "ensemble.json").read_text())["members"]
    assert [m["config"] for m in members] == ["--config", "config.json"]
    assert [m["model"]["head"] for m in members] == ["binned", "regression"]
    # By hand: each member's own predictions through the same data path, averaged.
    config = load_config(experiment)
    outputs = []
    for workdir, cfg in [(w1, config), (w2, train.member_config(config, w2))]:
        setup = train.Setup(cfg, training=False)
        variables = train.checkpoint.restore_model(workdir, setup.abstract_variables)
        outputs.append(train.predict(cfg, variables, setup, "synthetic_heads/tiny", "test"))
    np.testing.assert_allclose(outputs[0][1], outputs[1][1])
    assert not np.allclose(outputs[0][0], outputs[1][0], atol=1.0)
    expected = metrics.mae((outputs[0][0] + outputs[1][0]) / 2, outputs[0][1])
    row = results["synthetic_heads/tiny:test"]
    for name in ("yaw", "pitch", "roll", "mean"):
        assert row[name] == pytest.approx(expected[name], abs=1e-4)
    assert (w1 / "ensemble" / "ced_synthetic_heads-tiny_test.png").is_file()
    # The low-resolution sweep of the ensemble: factor 1 is the ensemble's eval.
    curves = train.evaluate_downsampled(config, w1, [1, 4], ensemble=(w2,))
    assert curves["synthetic_heads/tiny:test"]["mean"][0] == pytest.approx(row["mean"], abs=1e-4)
    assert (w1 / "ensemble" / "lowres_synthetic_heads-tiny_test.json").is_file()
    capsys.readouterr()


def test_predict_ensemble(trained, tmp_path, capsys):
    experiment, w1, w2 = trained
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"face{i}.png")
        cv2.imwrite(str(paths[-1]), rng.integers(0, 256, (50, 45, 3), dtype=np.uint8))
    output = tmp_path / "poses.csv"
    argv = ["predict", "--config", experiment, "--workdir", w1, *paths, "--crops", "--ensemble", w2, "--output", output]
    assert cli.main([str(a) for a in argv]) == 0  # jaxpose.inference.pose.PoseModel with two members
    rows = list(csv.DictReader(output.read_text().splitlines()))
    poses = np.array([[r["yaw"], r["pitch"], r["roll"]] for r in rows], float)
    config = load_config(experiment)
    faces = [pose_lib.Face(pose_lib.read_image(p), None) for p in paths]
    first = pose_lib.PoseModel(config, w1).predict(faces)[0]
    second = pose_lib.PoseModel(train.member_config(config, w2), w2).predict(faces)[0]
    np.testing.assert_allclose(poses, (first + second) / 2, atol=2e-3)  # the CSV has 3 decimals
    capsys.readouterr()


# --- FSA-Caps-Fusion of the three converted official capsule weights ----------------------------

CAPSULES = ("fsanet_capsule_3_16_2_21_5", "fsanet_var_capsule_3_16_2_21_5", "fsanet_noS_capsule_3_16_2_192_5")


def test_fsa_caps_fusion_of_converted_weights(testdata, fast_compile, tmp_path):
    """The README's FSA-Caps-Fusion row (16 AFLW2000 fixtures): 2.97 / 7.10 / 1.87 / 3.98."""
    data_dir = tmp_path / "data"
    build_dataset("aflw2000", testdata / "aflw2000", data_dir)
    workdirs = [tmp_path / name for name in CAPSULES]
    for name, workdir in zip(CAPSULES, workdirs):
        pretrained.convert("fsanet-keras", testdata / "fsanet_keras" / f"{name}.h5", workdir)
    record = json.loads((workdirs[0] / "converted.json").read_text())
    flags = dict(flag.removeprefix("--config.").split("=", 1) for flag in record["overrides"])
    config = apply_overrides(apply_overrides(base_config(), flags),
                             {"data.data_dir": str(data_dir), "eval_on": (("aflw2000", "test"),), "batch_size": 16})
    members = [train.member_config(config, w) for w in workdirs[1:]]
    assert [m.model.kwargs.scoring for m in members] == ["var", "none"]
    assert [m.model.kwargs.num_primcaps for m in members] == [21, 192]
    assert members[0].init_from == str(workdirs[1].resolve())  # converted.json's: the member itself, not workdirs[0]
    row = train.evaluate(config, workdirs[0], ensemble=tuple(workdirs[1:]))["aflw2000:test"]
    print(f"FSA-Caps-Fusion through jaxpose eval --ensemble: {row}")
    assert row["num_images"] == 16
    for name, readme in zip(("yaw", "pitch", "roll", "mean"), (2.97, 7.10, 1.87, 3.98)):
        assert row[name] == pytest.approx(readme, abs=0.01), name
