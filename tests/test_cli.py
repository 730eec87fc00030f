"""The `jaxpose` command line: one-line errors (in process), convert/predict, and a killed-and-resumed train run."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import error_line, write_tiny_experiment

from jaxpose import cli
from jaxpose.pretrained import CONVERT_KINDS

@pytest.fixture
def experiment(tmp_path, tiny_data_dir) -> Path:
    """A tiny experiment file (resnet_tiny, 32 px, synthetic_heads/tiny, 40 steps)."""
    return write_tiny_experiment(tmp_path / "tiny.py", tiny_data_dir, num_train_steps=40, checkpoint_every=5,
                                 log_every=5)


def test_missing_workdir(capsys, experiment, tmp_path):
    line = error_line(capsys, ["eval", "--config", experiment, "--workdir", tmp_path / "nope"])
    assert line == f"jaxpose: error: workdir not found: {tmp_path / 'nope'}"
    line = error_line(capsys, ["predict", "--config", experiment, "--workdir", tmp_path / "nope", experiment])
    assert "workdir not found" in line


def test_missing_config_file(capsys, tmp_path):
    line = error_line(capsys, ["eval", "--config", tmp_path / "none.py", "--workdir", tmp_path])
    assert line == f"jaxpose: error: config file not found: {tmp_path / 'none.py'}"


def test_unknown_config_key(capsys, experiment, tmp_path):
    line = error_line(capsys, ["eval", "--config", experiment, "--workdir", tmp_path, "--config.optimizer.lrr=1"])
    assert line == "jaxpose: error: unknown config key 'optimizer.lrr'"
    line = error_line(capsys, ["eval", "--config", experiment, "--workdir", tmp_path, "--lr=1"])
    assert "unrecognized argument '--lr=1'" in line


def test_unknown_model(capsys, experiment, tmp_path):
    line = error_line(capsys, ["eval", "--config", experiment, "--workdir", tmp_path, "--config.model.name=resnet7"])
    assert re.fullmatch(r"jaxpose: error: unknown model 'resnet7'; valid: .*resnet18.*", line)


def test_missing_dataset(capsys, experiment, tmp_path):
    argv = ["train", "--config", experiment, "--workdir", tmp_path / "w",
            "--config.data.name=aflw2000", f"--config.data.data_dir={tmp_path / 'empty'}"]
    line = error_line(capsys, argv)
    assert line.startswith("jaxpose: error: dataset 'aflw2000' is not built in ")
    assert "jaxpose data build aflw2000 --source DIR" in line


def test_bad_convert_source(capsys, tmp_path):
    source = tmp_path / "fsanet_capsule_3_16_2_21_5.h5"
    line = error_line(capsys, ["convert", "fsanet-keras", source, "--workdir", tmp_path / "w"])
    assert line == f"jaxpose: error: {source}: no such file"
    source.write_text("not weights")
    line = error_line(capsys, ["convert", "fsanet-keras", source, "--workdir", tmp_path / "w"])
    assert line.startswith(f"jaxpose: error: {source}: not an HDF5 file")
    line = error_line(capsys, ["convert", "caffe", source, "--workdir", tmp_path / "w"])
    assert line == f"jaxpose: error: unknown conversion kind 'caffe'; valid: {', '.join(CONVERT_KINDS)}"
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_predict_needs_images_or_boxes(capsys, experiment, tmp_path):
    line = error_line(capsys, ["predict", "--config", experiment, "--workdir", tmp_path])
    assert "no images: name image files or folders" in line
    line = error_line(capsys, ["predict", "--config", experiment, "--workdir", tmp_path, "--boxes", "b.csv", "x.jpg"])
    assert "not both" in line


def test_convert_prints_checkpoint_and_overrides(capsys, testdata, tmp_path):
    weights = testdata / "fsanet_keras" / "fsanet_var_capsule_3_16_2_21_5.h5"
    assert cli.main(["convert", "fsanet-keras", str(weights), "--workdir", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"checkpoint: {tmp_path / 'w' / 'checkpoints'}"
    record = json.loads((tmp_path / "w" / "converted.json").read_text())
    assert out[1] == "config overrides: " + " ".join(record["overrides"])
    assert "--config.model.kwargs.scoring=var" in out[1] and "--config.data.crop=fsanet" in out[1]
    help_text = cli.parser()._subparsers._group_actions[0].choices["convert"].format_help()
    assert all(kind in " ".join(help_text.split()) for kind in CONVERT_KINDS)


def _checkpoint_steps(workdir: Path) -> list[int]:
    folder = workdir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def _logged_steps(workdir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_train_killed_then_resumed(experiment, tmp_path):
    """The console script, SIGKILLed after its first checkpoint, resumes from it and finishes."""
    jaxpose = Path(sys.executable).parent / "jaxpose"
    workdir = tmp_path / "run"
    command = [str(jaxpose), "train", "--config", str(experiment), "--workdir", str(workdir)]
    # The second run reuses the first's compiled init and train step (XLA CPU compiles take seconds).
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla_cache")}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while not _checkpoint_steps(workdir) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-2000:]
    assert not (workdir / "eval.json").exists()
    logged_before = _logged_steps(workdir)

    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-2000:]
    resumed = re.search(r"resumed from \S+ at step (\d+)", output)
    assert resumed, output[-2000:]
    step = int(resumed[1])
    assert 5 <= step < 40 and step % 5 == 0
    # Logged every 5 steps: the first run's records up to the resume point (later ones are redone), then the second's.
    assert logged_before[: step // 5] == list(range(5, step + 1, 5))
    assert _logged_steps(workdir) == list(range(5, 41, 5))
    assert 40 in _checkpoint_steps(workdir)
    results = json.loads((workdir / "eval.json").read_text())
    assert results["synthetic_heads/tiny:test"]["num_images"] == 24


RESNET50_PAPERS = ["hopenet_300wlp.py", "gld_300wlp.py", "rankpose_300wlp.py", "hybrid_300wlp.py"]
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.parametrize("name", RESNET50_PAPERS)
def test_imagenet_init_is_required_first(capsys, name, tmp_path):
    """The ImageNet-initialised papers refuse an empty init_from before anything else (the dataset is not
    built here); --config.init_from=none passes that check and the run stops at the dataset instead."""
    argv = ["train", "--config", EXPERIMENTS / name, "--workdir", tmp_path / "w", f"--config.data.data_dir={tmp_path}"]
    line = error_line(capsys, argv)
    assert line == ("jaxpose: error: this config fine-tunes ImageNet weights and config.init_from is empty: run "
                    "`jaxpose convert torchvision-resnet resnet50-0676ba61.pth --workdir runs/resnet50_imagenet` and "
                    "add --config.init_from=runs/resnet50_imagenet (or --config.init_from=none to train from scratch)")
    line = error_line(capsys, [*argv, "--config.init_from=none"])
    assert line.startswith("jaxpose: error: dataset 'the300w_lp' is not built in ")


def test_init_from_none_trains_from_scratch(capsys, experiment, tmp_path):
    argv = ["train", "--config", experiment, "--workdir", tmp_path / "w", "--config.require_init=True",
            "--config.num_train_steps=1", "--config.init_from=none"]
    assert cli.main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    assert "initialised" not in out  # no checkpoint was read
