"""jaxpose.bench: every mode and placement writes the JSON keys; the GPU suite's smoke mode runs on CPU."""

import json

import pytest
from conftest import tiny_config

from jaxpose import bench

KEYS = {"mode", "images_per_sec", "compile_seconds", "host_seconds_per_image"}


# Every mode and every placement at least once (each case compiles; memmap's loop is in test_placements too).
@pytest.mark.parametrize("mode, placement", [("step", "device"), ("pipeline", "memmap"), ("pipeline", "device"),
                                             ("end_to_end", "host"), ("end_to_end", "device"), ("profile", "host")])
def test_every_mode_and_placement_reports_throughput(tiny_data_dir, fast_compile, tmp_path, mode, placement):
    config = tiny_config(tiny_data_dir, **{"data.pipeline": placement, "steps_per_dispatch": 2})
    result = bench.run(config, mode, steps=4)
    assert KEYS <= set(result)
    assert result["images_per_sec"] > 0 and result["compile_seconds"] >= 0 and result["host_seconds_per_image"] >= 0
    assert result["pipeline"] == placement


def test_command_line_writes_json(fast_compile, tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(["--config", "experiments/synthetic_hopenet.py", "--mode", "step", "--steps", "2", "--json", str(out),
                "--config.model.name=resnet_tiny", "--config.data.image_size=32", "--config.batch_size=8"])
    assert KEYS <= set(json.loads(out.read_text()))
    assert "img/s" in capsys.readouterr().out


def test_gpu_suite_smoke_runs_on_cpu(tmp_path, capsys):
    out = tmp_path / "suite.json"
    rows = bench.gpu_suite(smoke=True, out=str(out), with_torch=False)
    assert {(r["family"], r["mode"], r["parallelism"]) for r in rows} >= {
        ("fsanet", "step", "gspmd"), ("fsanet", "step", "per_device"), ("fsanet", "end_to_end", "gspmd"),
        ("resnet50", "step", "gspmd"), ("resnet50", "end_to_end", "gspmd")}
    assert all(r["images_per_sec"] > 0 for r in rows)
    assert len(json.loads(out.read_text())["rows"]) == len(rows)
    assert "| family | batch | mode |" in capsys.readouterr().out
