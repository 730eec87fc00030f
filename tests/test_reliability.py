"""Runs that survive: SIGTERM / Ctrl-C stop with a checkpoint and resume bit-identically, the same seed gives the
same bits, damaged checkpoints are set aside, unwritable or full workdirs fail first, processes agree on the stop."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import tiny_config, write_tiny_experiment

from jaxpose import checkpoint, train

STEPS = 16
# Dispatches of 2 steps (one program), logged and checkpointed every 4 steps: a stop can end 2, 6, 10 or 14 too.
RUN = {"num_train_steps": STEPS, "steps_per_dispatch": 2, "checkpoint_every": 4, "log_every": 4}


def _records(workdir: Path) -> dict[int, dict]:
    """metrics.jsonl by step, without the one field that measures time."""
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: {k: v for k, v in r.items() if k != "images_per_sec"} for r in map(json.loads, lines)}


def _finished(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def _assert_same_bits(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def straight(tiny_data_dir, fast_compile, tmp_path_factory):
    """An uninterrupted run of STEPS steps: (workdir, final params, [(step being saved, finished steps then)])."""
    workdir = tmp_path_factory.mktemp("straight")
    seen, write_manifest = [], checkpoint.write_manifest

    def watch(step_dir):  # orbax's last act before it renames the save into place
        seen.append((int(step_dir.name.split(".")[0]), _finished(workdir)))
        write_manifest(step_dir)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint, "write_manifest", watch)
        state, _ = train.train(tiny_config(tiny_data_dir, **RUN), workdir)
    return workdir, jax.device_get(state.params), seen


def test_no_checkpoint_is_deleted_before_a_newer_one_is_complete(straight):
    workdir, _, seen = straight
    assert seen == [(4, []), (8, [4]), (12, [4, 8]), (16, [4, 8, 12])]  # 4 goes only once 16 is complete
    assert _finished(workdir) == [8, 12, 16]
    assert checkpoint.newest_intact(workdir / "checkpoints") == (16, [])


def test_same_seed_same_bits_other_seed_other_bits(straight, tiny_data_dir, tmp_path):
    workdir, params, _ = straight
    again, _ = train.train(tiny_config(tiny_data_dir, **RUN), tmp_path / "again")
    _assert_same_bits(jax.device_get(again.params), params)
    assert _records(tmp_path / "again") == _records(workdir)
    other, _ = train.train(tiny_config(tiny_data_dir, **RUN, seed=1), tmp_path / "other")
    leaves = zip(jax.tree.leaves(jax.device_get(other.params)), jax.tree.leaves(params))
    assert not all(np.array_equal(x, y) for x, y in leaves)
    assert _records(tmp_path / "other")[STEPS]["loss"] != _records(workdir)[STEPS]["loss"]


def test_sigterm_during_a_save_stops_at_a_boundary_and_resumes_bit_identically(straight, tiny_data_dir, tmp_path,
                                                                              monkeypatch, capsys):
    """SIGTERM arrives while checkpoint 4 is being written (orbax's commit thread, before its rename): the run
    stops at the next dispatch boundary with that step saved, and resuming gives the uninterrupted bits."""
    workdir = tmp_path / "w"
    write_manifest, during = checkpoint.write_manifest, []

    def signal_while_saving(step_dir):
        write_manifest(step_dir)
        if not during:
            during.append((step_dir.name, _finished(workdir)))
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(checkpoint, "write_manifest", signal_while_saving)
    with pytest.raises(train.TrainingStopped) as stopped:
        train.train(tiny_config(tiny_data_dir, **RUN), workdir)
    assert stopped.value.code == 0
    assert during == [("4" + checkpoint.ocp_utils.TMP_DIR_SUFFIX, [])]  # mid-save: not yet renamed into place
    step = stopped.value.step
    assert step in (6, 8, 10), step  # at the latest after the dispatch that follows save 8, which waits for save 4
    assert f"stopped by SIGTERM at step {step}" in capsys.readouterr().out
    assert max(_finished(workdir)) == step and max(_records(workdir)) == step
    assert checkpoint.newest_intact(workdir / "checkpoints") == (step, [])
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone with the run

    monkeypatch.setattr(checkpoint, "write_manifest", write_manifest)
    state, _ = train.train(tiny_config(tiny_data_dir, **RUN), workdir)
    assert f"resumed from {workdir / 'checkpoints'} at step {step}" in capsys.readouterr().out
    reference, params, _ = straight
    _assert_same_bits(jax.device_get(state.params), params)
    resumed, uninterrupted = _records(workdir), _records(reference)
    assert {s: resumed[s] for s in uninterrupted} == uninterrupted  # (plus the record of the stop step)


def _damage(kind: str, checkpoints: Path) -> str:
    """Damages checkpoint 16 (or adds an unfinished 20) the way `kind` says; returns the expected problem."""
    step_dir = checkpoints / "16"
    if kind == "truncated":
        name, size = max(json.loads((step_dir / checkpoint.MANIFEST).read_text())["files"].items(), key=lambda f: f[1])
        os.truncate(step_dir / name, size // 2)
        return f"is damaged ({name} has {size // 2} bytes, {size} were written)"
    if kind == "missing":
        (step_dir / "opt" / "_METADATA").unlink()
        return "is damaged (opt/_METADATA is missing)"
    if kind == "manifest":
        (step_dir / checkpoint.MANIFEST).write_text('{"files": {"model/_MET')
        return f"is damaged ({checkpoint.MANIFEST} is unreadable (JSONDecodeError:"
    unfinished = checkpoints / ("20" + checkpoint.ocp_utils.TMP_DIR_SUFFIX)
    shutil.copytree(step_dir, unfinished)
    return f"was never finished ({unfinished.name}: the run stopped while writing it)"


@pytest.mark.parametrize("kind", ["truncated", "missing", "manifest", "unfinished"])
def test_damaged_latest_checkpoint_is_found_and_set_aside(straight, tmp_path, kind, capsys):
    workdir = tmp_path / "w"
    shutil.copytree(straight[0], workdir)
    problem = _damage(kind, workdir / "checkpoints")
    good, bad = checkpoint.newest_intact(workdir / "checkpoints")
    step = 16 if kind == "unfinished" else 12
    assert good == step and len(bad) == 1 and bad[0].problem.startswith(problem)
    if kind == "truncated":  # eval reads the newest intact one, touching nothing
        _assert_same_bits(checkpoint.restore_model(workdir, None)["params"], _restore_params(workdir, 12))
        assert f"warning: checkpoint 16 in {workdir / 'checkpoints'} {problem}; using step 12" in capsys.readouterr().out
        assert _finished(workdir) == [8, 12, 16]
    checkpoint.set_aside_damaged(workdir)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"warning: checkpoint {bad[0].step} in {workdir / 'checkpoints'} {problem}")
    assert f"; resuming from step {step}" in lines[0]
    assert checkpoint.newest_intact(workdir / "checkpoints") == (step, [])
    assert _finished(workdir) == ([8, 12] if step == 12 else [8, 12, 16])
    if kind != "unfinished":  # the damaged files are kept, out of orbax's sight
        assert (workdir / checkpoint.DAMAGED_DIR / "16" / checkpoint.MANIFEST).is_file()
        assert f"(kept in {workdir.resolve() / checkpoint.DAMAGED_DIR / '16'})" in lines[0]


def _restore_params(workdir: Path, step: int) -> dict:
    import orbax.checkpoint as ocp

    mngr = checkpoint.manager(workdir)
    try:
        return mngr.restore(step, args=ocp.args.Composite(model=ocp.args.StandardRestore()))["model"]["params"]
    finally:
        mngr.close()


def test_training_falls_back_to_the_previous_good_checkpoint(straight, tiny_data_dir, tmp_path, capsys):
    """The latest checkpoint truncated: training warns, resumes from the one before and ends with the same bits."""
    workdir = tmp_path / "w"
    shutil.copytree(straight[0], workdir)
    problem = _damage("truncated", workdir / "checkpoints")
    state, _ = train.train(tiny_config(tiny_data_dir, **RUN), workdir)
    out = capsys.readouterr().out
    assert f"warning: checkpoint 16 in {workdir / 'checkpoints'} {problem}; resuming from step 12" in out
    assert f"resumed from {workdir / 'checkpoints'} at step 12" in out
    _assert_same_bits(jax.device_get(state.params), straight[1])
    assert _records(workdir) == _records(straight[0])


def test_every_checkpoint_damaged_is_an_error_that_moves_nothing(straight, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(straight[0], workdir)
    for step in (8, 12, 16):
        (workdir / "checkpoints" / str(step) / checkpoint.MANIFEST).write_text("")
    with pytest.raises(ValueError, match=r"no intact checkpoint in .*: checkpoint 16 is damaged .*; move .* away"):
        checkpoint.set_aside_damaged(workdir)
    assert _finished(workdir) == [8, 12, 16]


def test_unwritable_workdir_fails_before_any_work(tiny_data_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    expected = rf"^workdir {re.escape(str(blocker / 'w'))} is not writable \(.*Not a directory"
    with pytest.raises(checkpoint.WorkdirError, match=expected):
        train.train(tiny_config(tiny_data_dir), blocker / "w")
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(checkpoint.WorkdirError, match="is not writable .*Permission denied"):
            train.train(tiny_config(tiny_data_dir), locked / "w")


def test_full_workdir_fails_before_training_and_at_a_save(tiny_data_dir, fast_compile, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: real(path)._replace(free=100_000))
    with pytest.raises(checkpoint.WorkdirError, match=r"has 0\.1 MiB free; checkpoints of this model take about "
                                                       r"[\d.]+ MiB each and 4 more are written"):
        train.train(tiny_config(tiny_data_dir), tmp_path / "w")
    assert not (tmp_path / "w" / "metrics.jsonl").exists() and _finished(tmp_path / "w") == []
    mngr = checkpoint.manager(tmp_path / "w")
    with pytest.raises(checkpoint.WorkdirError, match=r"the checkpoint of step 7 needs about 1\.0 MiB; free some "
                                                       r"space and run again \(it resumes from the start\)"):
        checkpoint.save(mngr, 7, {"params": np.zeros(2**20, np.uint8)})
    mngr.close()


# --- separate processes -----------------------------------------------------------------------------------------

def test_sigterm_to_the_cli_saves_and_exits_0_then_resumes(tiny_data_dir, compilation_cache, tmp_path):
    """`jaxpose train` gets SIGTERM after its first log line: status 0, within seconds, checkpoint and metrics at
    the step it stopped (a dispatch boundary); the same command then resumes there and finishes."""
    # steps_per_dispatch 2: the program the session's `compilation_cache` holds already.
    experiment = write_tiny_experiment(tmp_path / "tiny.py", tiny_data_dir, num_train_steps=60, steps_per_dispatch=2,
                                       checkpoint_every=20, log_every=10)
    workdir = tmp_path / "run"
    command = [str(Path(sys.executable).parent / "jaxpose"), "train", "--config", str(experiment), "--workdir", str(workdir)]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(compilation_cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
    with open(tmp_path / "first.log", "w") as log:
        run = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while run.poll() is None and time.monotonic() < deadline and not (
                (workdir / "metrics.jsonl").exists() and (workdir / "metrics.jsonl").read_text()):
            time.sleep(0.01)
        run.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        run.wait(timeout=60)
        seconds = time.monotonic() - sent
    output = (tmp_path / "first.log").read_text()
    assert run.returncode == 0, output[-2000:]
    stopped = re.search(r"stopped by SIGTERM at step (\d+)", output)
    assert stopped, output[-2000:]
    step = int(stopped[1])
    boundaries = {done + count for done, count in train.dispatch_schedule(0, 60, 2, (10, 20))}
    assert step in boundaries and 10 <= step < 60, step
    assert step in _finished(workdir) and max(_records(workdir)) == step
    assert seconds < 20, seconds  # one dispatch, one checkpoint and the interpreter's exit (2.6 s measured)
    print(f"SIGTERM -> exit 0 in {seconds:.2f} s, stopped at step {step}")

    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert second.returncode == 0, (second.stdout + second.stderr)[-2000:]
    assert f"resumed from {workdir / 'checkpoints'} at step {step}" in second.stdout
    assert max(_records(workdir)) == 60 and (workdir / "eval.json").exists()


MULTIPROCESS = '''
import sys, time
import jax
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from jaxpose import checkpoint
with checkpoint.StopRequest() as stop:
    print("ready", flush=True)
    for dispatch in range(1, 100_000):
        time.sleep(0.003 * (1 + jax.process_index()))  # the two processes at different speeds
        if stop.reached(dispatch):
            print("stop", dispatch, stop.requested, flush=True)
            break
'''


def test_processes_agree_on_the_dispatch_to_stop_at(tmp_path):
    """jax.distributed with 2 CPU processes at different speeds: Ctrl-C to process 1 stops both at the same dispatch.

    SIGINT is handed on as SIGTERM to jax's preemption notifier, which must still own SIGTERM (a Python handler
    there would keep the news from the other process, which would then never stop: a timeout here)."""
    script = tmp_path / "loop.py"
    script.write_text(MULTIPROCESS)
    with socket.socket() as s:
        s.bind(("localhost", 0))
        address = f"localhost:{s.getsockname()[1]}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    logs = [open(tmp_path / f"process{i}.log", "w") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(script), address, str(i)], stdout=subprocess.PIPE,
                              stderr=logs[i], text=True, env=env) for i in range(2)]
    try:
        ready = [p.stdout.readline().strip() for p in procs]
        assert ready == ["ready", "ready"], (tmp_path / "process0.log").read_text()[-2000:]
        time.sleep(0.3)
        procs[1].send_signal(signal.SIGINT)
        outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    finally:
        for p, log in zip(procs, logs):
            p.kill()
            log.close()
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0][:1] == ["stop"] and outputs[0][2:] == ["True"] and outputs[0] == outputs[1], outputs
