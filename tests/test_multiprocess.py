"""Several processes = one process: `jaxpose train` as 2 local processes of 2 fake CPU devices each
(jax.distributed on 127.0.0.1, gloo collectives) resumes a 1-process checkpoint and ends where 1 process
of 4 devices ends: same parameters, same eval table, the same records per step, files written once, and a
checkpoint the other layout restores."""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import write_tiny_experiment

from input_pipeline import pipeline
from jaxpose import checkpoint, cli, train
from jaxpose.config import load_config
from jaxpose.models import build_model

# One process of a run: `jaxpose ARGV` that also records the training poses this process puts on its
# devices (the records it drew) and the files it opens for writing in the workdir (Python's audit hook
# sees every open, matplotlib's and orbax's Python writes included), saved as JSON to OUT.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    from jaxpose import cli, sharding

    out, argv = sys.argv[1], sys.argv[2:]
    workdir = os.path.realpath(argv[argv.index("--workdir") + 1])
    batches, written = [], set()
    put_batch = sharding.put_batch

    def recording_put_batch(batch, mesh, **kwargs):
        if "pose" in batch:  # a training batch; evaluation puts images only
            batches.append(batch["pose"].reshape(-1, 3).tolist())
        return put_batch(batch, mesh, **kwargs)

    def audit(event, args):
        if event != "open" or isinstance(args[0], int):
            return
        path = os.path.realpath(os.fsdecode(args[0]))
        mode, flags = args[1] or "", args[2] or 0
        if path.startswith(workdir + os.sep) and (set(mode) & set("wax+") or flags & (os.O_WRONLY | os.O_RDWR)):
            written.add(os.path.relpath(path, workdir))

    sharding.put_batch = recording_put_batch
    sys.addaudithook(audit)
    status = cli.main(argv)
    with open(out, "w") as f:
        json.dump({"batches": batches, "written": sorted(written)}, f)
    sys.exit(status)
    """
)

# Files of a run that one process writes (the others hold the same values).
ONCE = ("metrics.jsonl", "eval.json", "config.json", "ced_synthetic_heads-tiny_test.json",
        "ced_synthetic_heads-tiny_test.png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path: Path, tag: str, argv: list[str], processes: int, devices: int) -> list[dict]:
    """Runs `jaxpose argv` as `processes` processes of `devices` CPU devices each; their records, by process."""
    # Tiny programs: XLA's optimisations cost more than they save. (No compilation cache: each layout
    # runs once, and the processes of a run compile their programs at the same time.)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    port, procs = _free_port(), []
    for index in range(processes):
        flags = ["--coordinator_address", f"127.0.0.1:{port}", "--num_processes", str(processes),
                 "--process_id", str(index)] if processes > 1 else []
        out, log = tmp_path / f"{tag}-{index}.json", open(tmp_path / f"{tag}-{index}.log", "w")
        procs.append((subprocess.Popen([sys.executable, "-c", CHILD, str(out), *argv, *flags], env=env,
                                       stdout=log, stderr=subprocess.STDOUT), out, log))
    deadline = time.monotonic() + 240
    while any(p.poll() is None for p, _, _ in procs) and time.monotonic() < deadline:
        if any(p.poll() not in (None, 0) for p, _, _ in procs):
            break  # one failed: the others would wait for it in a collective
        time.sleep(0.1)
    for p, _, log in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        log.close()
    logs = "\n".join((tmp_path / f"{tag}-{i}.log").read_text()[-3000:] for i in range(processes))
    assert all(p.returncode == 0 for p, _, _ in procs), logs
    return [json.loads(out.read_text()) for _, out, _ in procs]


def _restore(config, workdir: Path) -> train.TrainState:
    """The latest training checkpoint of workdir, restored in this process (1 device): shapes only, no compile."""
    model = build_model(config.model)
    variables = jax.eval_shape(train._init_fn(config, model), jax.random.PRNGKey(0))
    tx = train.make_optimizer(config.optimizer, 6, config.num_train_steps)
    state = jax.eval_shape(lambda v: train.TrainState.create(
        apply_fn=model.apply, params=v["params"], tx=tx, batch_stats=v["batch_stats"]), variables)
    abstract = checkpoint.abstract_with_sharding(state, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    mngr = checkpoint.manager(workdir)
    try:
        return checkpoint.restore_training(mngr, abstract)
    finally:
        mngr.close()


def _record_ids(config) -> dict[float, int]:
    """Training record of each pitch: flips negate yaw and roll only, and synthetic pitches are distinct."""
    source = pipeline.data_source(config.data, config.data.train_split)
    pitches = {round(float(source[i]["pose"][1]), 4): i for i in range(len(source))}
    assert len(pitches) == len(source)
    return pitches


def _records(batch: list, ids: dict[float, int]) -> list[int]:
    return [ids[round(pose[1], 4)] for pose in batch]


def test_two_processes_resume_and_equal_one_process(tiny_data_dir, tmp_path):
    # 12 steps = 2 epochs of the 48 records.
    experiment = write_tiny_experiment(tmp_path / "tiny.py", tiny_data_dir, num_train_steps=12, checkpoint_every=500)
    config = load_config(experiment)
    ref, multi = tmp_path / "ref", tmp_path / "multi"
    train_argv = ["train", "--config", str(experiment), "--workdir"]
    tick = time.monotonic()
    # 1 process x 4 devices, steps 0-12, a checkpoint at 6 that the 2 processes resume from (1 -> 2).
    (single,) = _launch(tmp_path, "single", [*train_argv, str(ref), "--config.checkpoint_every=6"], 1, 4)
    shutil.copytree(ref / "checkpoints" / "6", multi / "checkpoints" / "6")
    middle = time.monotonic()
    # 2 processes x 2 devices, steps 6-12, a checkpoint in between (9) and at the end.
    pair = _launch(tmp_path, "multi", [*train_argv, str(multi), "--config.checkpoint_every=3"], 2, 2)
    print(f"1 x 4 devices, 12 steps + eval: {middle - tick:.1f} s; 2 x 2 devices, 6 steps + eval: "
          f"{time.monotonic() - middle:.1f} s")

    # The 2-process checkpoint restored by 1 process (2 -> 1) equals the 1-process run's, optimizer included.
    a, b = _restore(config, ref), _restore(config, multi)
    assert int(a.step) == int(b.step) == 12
    diffs = [float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
             zip(jax.tree.leaves((a.params, a.batch_stats)), jax.tree.leaves((b.params, b.batch_stats)))]
    print(f"max parameter / BatchNorm statistic difference {max(diffs):.3g}")
    assert max(diffs) < 1e-5
    # Adam's moments hold gradients (up to ~30 here) and their squares (~1e4), summed in another order by
    # gloo's all-reduce: equal relative to each tensor's scale (measured: 3.8e-6 of its largest value).
    for x, y in zip(jax.tree.leaves(a.opt_state), jax.tree.leaves(b.opt_state)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert np.max(np.abs(x - y), initial=0) <= 1e-5 * np.max(np.abs(x), initial=0)
    ours, theirs = (json.loads((w / "eval.json").read_text()) for w in (ref, multi))
    assert ours.keys() == theirs.keys() == {"synthetic_heads/tiny:test"}
    for key, row in ours.items():
        assert row["num_images"] == theirs[key]["num_images"] == 24
        assert all(abs(row[k] - theirs[key][k]) < 1e-3 for k in row), (row, theirs[key])

    # Every step's global batch is the 1-process batch; each record once in the epoch (steps 6-11).
    ids = _record_ids(config)
    assert len(single["batches"]) == 12 and all(len(p["batches"]) == 6 for p in pair)
    for step in range(6):
        per_process = [_records(p["batches"][step], ids) for p in pair]
        assert all(len(r) == 4 for r in per_process)
        assert per_process[0] + per_process[1] == _records(single["batches"][6 + step], ids)
    epoch = [r for p in pair for batch in p["batches"] for r in _records(batch, ids)]
    assert sorted(epoch) == list(range(48))

    # Written once, by process 0, into the shared workdir; one checkpoint per step.
    logged = [json.loads(line)["step"] for line in (multi / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(7, 13))
    assert set(ONCE) <= set(pair[0]["written"])
    # Process 1 writes only its own part of each checkpoint (orbax) and the workdir checks' probe files.
    assert all(f.startswith("checkpoints/") or ".jaxpose-write-test" in f for f in pair[1]["written"]), pair[1]
    assert sorted(int(p.name) for p in (multi / "checkpoints").iterdir() if p.name.isdigit()) == [6, 9, 12]


def test_distributed_flags_are_checked_before_anything_starts(capsys, tmp_path):
    experiment = tmp_path / "none.py"
    for flags, message in [
        (["--num_processes", "2"], "--coordinator_address, --process_id missing: --coordinator_address, "
                                   "--num_processes and --process_id go together"),
        (["--coordinator_address", "127.0.0.1", "--num_processes", "2", "--process_id", "0"],
         "--coordinator_address is '127.0.0.1'; valid: HOST:PORT"),
        (["--coordinator_address", "127.0.0.1:1234", "--num_processes", "0", "--process_id", "0"],
         "--num_processes is 0; valid: an integer >= 1"),
        (["--coordinator_address", "127.0.0.1:1234", "--num_processes", "2", "--process_id", "2"],
         "--process_id is 2; valid: 0 to 1 (--num_processes 2)"),
    ]:
        for command in ("train", "eval", "sweep"):
            assert cli.main([command, "--config", str(experiment), "--workdir", str(tmp_path), *flags]) == 1
            err = capsys.readouterr().err
            assert err.startswith(f"jaxpose: error: {message}") and err.count("\n") == 1, err


@pytest.mark.parametrize("pairs", [False, True])
def test_memmap_batches_of_two_processes_are_those_of_one(pairs):
    """The memmap placement splits each global batch over the processes as the host placement does."""
    class Cache:  # what CanvasBatches reads to choose rows (no canvas is gathered here)
        identity = np.repeat(np.arange(12), 4)

        def __len__(self):
            return 48

    def rows(index: int, count: int, steps: int) -> list[list[int]]:
        batches = pipeline.CanvasBatches(Cache(), 8 // count, 0, pairs=pairs, local_devices=1, process=(index, count))
        # Rows of a step: records, or (record, partner) pairs flattened; the partner draw is keyed globally.
        return [np.asarray(batches.batches[step]).reshape(-1).tolist() for step in range(steps)]

    steps = 12 if pairs else 6  # one epoch: 48 records, 8 images a step (4 pairs with pairs)
    one, two = rows(0, 1, steps), [rows(index, 2, steps) for index in range(2)]
    assert all(two[0][step] + two[1][step] == one[step] for step in range(steps))
    records = [r for p in two for batch in p for r in (batch[::2] if pairs else batch)]
    assert sorted(records) == list(range(48))
