"""Run monitoring: TensorBoard event files, the learning rate per step, `jaxpose plot`, profile_steps.

Event files are read back by parsing their records (TFRecord framing: length,
masked CRC32C of the length, data, masked CRC32C of the data) into
tensorboardX's Event protobuf: TensorBoard's own reader is not a dependency.
"""

import json
import pathlib
import struct
import time

import jax
import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from jaxpose import cli, metrics, monitor, train


def read_events(logdir: pathlib.Path) -> list[event_pb2.Event]:
    """Every event of every event file directly in logdir, file by file in name (= time) order."""
    events = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            header = data[offset:offset + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[offset + 8:offset + 12])[0] == masked_crc32c(header), path
            record = data[offset + 12:offset + 12 + length]
            assert struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])[0] == masked_crc32c(record)
            events.append(event_pb2.Event.FromString(record))
            offset += 16 + length
    return events


def scalars(events) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of the scalar summaries."""
    found = {}
    for event in events:
        for value in event.summary.value:
            if value.WhichOneof("value") == "simple_value":
                found.setdefault(value.tag, {})[event.step] = value.simple_value
    return found


def texts(events) -> dict[str, str]:
    return {value.tag: value.tensor.string_val[0].decode() for event in events for value in event.summary.value
            if value.metadata.plugin_data.plugin_name == "text"}


def test_flush_writes_every_step_of_a_dispatch(tmp_path):
    # Two dispatches since the last log: two steps stacked on axis 0, then one step.
    pending = [(0, 2, {"loss": np.array([4.0, 3.0]), "learning_rate": np.array([0.0, 1.0])}),
               (2, 1, {"loss": np.array(2.0), "learning_rate": np.array(2.0)})]
    with monitor.Monitor(tmp_path, start_step=0) as run_monitor, open(tmp_path / "m.jsonl", "w") as log:
        record = train._flush(pending, log, time.perf_counter() - 1.0, 24, run_monitor)
    assert record["step"] == 3 and record["loss"] == 2.0 and record["learning_rate"] == 2.0
    assert json.loads((tmp_path / "m.jsonl").read_text()) == record
    found = scalars(read_events(tmp_path))
    assert found["train/loss"] == {1: 4.0, 2: 3.0, 3: 2.0}
    assert found["train/learning_rate"] == {1: 0.0, 2: 1.0, 3: 2.0}
    assert found["train/images_per_sec"] == pytest.approx({3: record["images_per_sec"]}, rel=1e-6)
    assert 0 < record["images_per_sec"] <= 24


def test_a_resumed_run_purges_the_steps_it_redoes(tmp_path):
    with monitor.Monitor(tmp_path, start_step=4) as run_monitor:
        run_monitor.write_steps([(5, {"loss": 1.0})], 10.0)
    events = read_events(tmp_path)
    starts = [e.step for e in events if e.session_log.status == event_pb2.SessionLog.START]
    assert starts == [5]  # TensorBoard drops earlier files' events from step 5 on
    assert scalars(events)["train/loss"] == {5: 1.0}


def test_only_process_0_writes_or_profiles(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    with monitor.Monitor(tmp_path, start_step=0, profile_steps=1) as run_monitor:
        state = {"w": jax.numpy.ones(3)}
        for step in (1, 2, 3):
            run_monitor.after_dispatch(step, state)
        run_monitor.write_steps([(1, {"loss": 1.0})], 10.0)
    monitor.write_eval(tmp_path, {"aflw2000:test": {"yaw": 1.0, "pitch": 2.0, "roll": 3.0, "mean": 2.0}}, 3)
    assert list(tmp_path.iterdir()) == []


def test_negative_profile_steps_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="'profile_steps' is -1"):
        monitor.Profiler(tmp_path, -1)


# --- a real run: 4 steps in 2 dispatches, logged every 2, evaluated, steps 3-4 profiled -----------------

LR = 1e-3
EXPECTED_LR = {1: 0.0, 2: LR / 2, 3: LR, 4: LR / 2}  # linear warm-up over 2 steps, then cosine to 0 over 2


@pytest.fixture(scope="module")
def trained(tiny_data_dir, fast_compile, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = tiny_config(tiny_data_dir, num_train_steps=4, steps_per_dispatch=2, log_every=2, checkpoint_every=4,
                         profile_steps=1, **{"optimizer.schedule": "cosine", "optimizer.warmup_steps": 2,
                                             "optimizer.lr": LR})
    results = train.train_and_evaluate(config, workdir)
    return workdir, results


def test_event_files_match_metrics_jsonl_and_eval_json(trained):
    workdir, results = trained
    events = read_events(workdir)
    found = scalars(events)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    for record in records:
        for key, value in record.items():
            if key != "step":
                assert found[f"train/{key}"][record["step"]] == pytest.approx(value, rel=1e-6), key
    # Every step, not only the logged ones; the learning rate each step trained with.
    for tag in ("train/loss", "train/loss_hopenet", "train/mae", "train/grad_norm", "train/param_norm"):
        assert sorted(found[tag]) == [1, 2, 3, 4] and all(np.isfinite(list(found[tag].values()))), tag
    assert found["train/learning_rate"] == pytest.approx(EXPECTED_LR, abs=1e-9)
    assert sorted(found["train/images_per_sec"]) == [2, 4]
    for key in ("yaw", "pitch", "roll", "mean"):
        expected = results["synthetic_heads/tiny:test"][key]
        assert found[f"eval/synthetic_heads-tiny_test/{key}"] == pytest.approx({4: expected}, rel=1e-6)
    assert json.loads((workdir / "eval.json").read_text()) == results
    table = texts(events)["eval/table/text_summary"]  # tensorboardX's suffix for text summaries
    assert metrics.format_mae_table(results).splitlines()[1] in table  # the row of synthetic_heads/tiny:test


def test_profile_steps_writes_a_trace_where_tensorboard_reads_it(trained):
    workdir, _ = trained
    (run,) = (workdir / "plugins" / "profile").iterdir()  # one profiling session
    traces = list(run.glob("*.xplane.pb"))
    assert traces and all(t.stat().st_size > 0 for t in traces)


def test_plot_command_writes_the_curves(trained, capsys):
    workdir, _ = trained
    assert cli.main(["plot", "--workdir", str(workdir)]) == 0
    assert str(workdir / "curves.png") in capsys.readouterr().out
    image = np.asarray(Image.open(workdir / "curves.png").convert("RGB"))
    assert image.shape == (800, 1500, 3)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20  # lines, text and a legend, not a blank canvas


def test_curve_panels_follow_metrics_jsonl(tmp_path, capsys):
    rows = [{"step": s, "loss": 3.0 - s, "loss_mae": 2.0 - s / 2, "mae": 30.0 - s, "grad_norm": 0.5,
             "param_norm": 80.0, "images_per_sec": 100.0 + s} for s in (1, 2)]
    # An older run (no learning_rate) whose last line is still being written.
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "lo')
    panels = monitor.curve_panels(monitor.read_metrics(tmp_path))
    assert list(panels["loss per term"]) == ["loss", "loss_mae"]
    steps, values = panels["loss per term"]["loss_mae"]
    assert steps.tolist() == [1, 2] and values.tolist() == [1.5, 1.0]
    assert list(panels["gradient and parameter norms"]) == ["grad_norm", "param_norm"]
    assert panels["images / s"]["images_per_sec"][1].tolist() == [101.0, 102.0]
    assert panels["learning rate"] == {}
    path = monitor.plot_curves(tmp_path, tmp_path / "out.png")
    assert Image.open(path).size == (1500, 800)
    assert cli.main(["plot", "--workdir", str(tmp_path / "missing")]) == 1
    assert "metrics.jsonl not found" in capsys.readouterr().err
