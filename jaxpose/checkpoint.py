"""Orbax checkpoints: model variables and optimizer state.

Two items per step, so that each reader takes only what it needs:
* "model": {"params", "batch_stats"} (what eval, predict and `init_from` load;
  converted pretrained weights are checkpoints with this item alone);
* "opt":   {"step", "opt_state"} (resuming training).
The data position needs no item: every input path's batches are a function
of the seed and the step (input_pipeline/pipeline.py), so the step restores
it exactly, with any number of processes. Checkpoints written with a "data"
item (the grain iterator state, before) restore: the item is not read.

Also what keeps a run alive: every save carries MANIFEST (the size of each of
its files), so that a truncated or lost file is found before a resume, which
then falls back to the previous intact checkpoint (`set_aside_damaged`);
`StopRequest` turns SIGTERM / Ctrl-C into a stop at a dispatch boundary that
all processes agree on; `check_writable` and `check_free_space` fail before
training when no checkpoint could be written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import threading
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import utils as ocp_utils

MAX_TO_KEEP = 3
MANIFEST = "jaxpose_files.json"
DAMAGED_DIR = "checkpoints_damaged"  # beside checkpoints/: where damaged checkpoints are set aside, never deleted
# orbax rewrites its step metadata (commit time) after the manifest is written, and reads it leniently
# (a missing or unreadable one falls back to the folder's mtime): it is left out of the manifest.
ORBAX_STEP_METADATA = "_CHECKPOINT_METADATA"
# A save in progress is written into "<step>.orbax-checkpoint-tmp" (older orbax: "...-<timestamp>") and renamed
# to "<step>" once complete.
UNFINISHED = re.compile(r"(\d+)" + re.escape(ocp_utils.TMP_DIR_SUFFIX) + r"(-\d+)?")


class WorkdirError(RuntimeError):
    """The workdir cannot hold checkpoints (not writable, or too little free space)."""


class _Manager(ocp.CheckpointManager):
    """orbax's CheckpointManager that writes MANIFEST into each save after all its files, just before
    orbax's atomic rename finalizes it (orbax's post-finalization callback, run on the primary process
    after every process has written its files): the manifest is part of the finished checkpoint."""

    def __init__(self, directory: pathlib.Path, max_to_keep: int):
        self._jaxpose_saving: int | None = None
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            async_options=ocp.AsyncOptions(post_finalization_callback=self._seal_saving_step))
        super().__init__(directory, options=options)

    def save(self, step: int, *args, **kwargs) -> bool:
        self.wait_until_finished()  # the previous save's callback must still see its own step
        self._jaxpose_saving = step
        return super().save(step, *args, **kwargs)

    def _seal_saving_step(self) -> None:
        final = pathlib.Path(self.directory) / str(self._jaxpose_saving)
        pending = [p for p in final.parent.glob(final.name + ocp_utils.TMP_DIR_SUFFIX + "*") if p.is_dir()]
        # No temporary folder: a filesystem where orbax marks completion with commit_success.txt instead of a rename.
        write_manifest(pending[0] if len(pending) == 1 else final)


def manager(workdir: str | pathlib.Path, *, max_to_keep: int = MAX_TO_KEEP) -> ocp.CheckpointManager:
    return _Manager(pathlib.Path(workdir).resolve() / "checkpoints", max_to_keep)


def model_variables(state: Any) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats}


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Saves a TrainState asynchronously; `mngr.wait_until_finished()` before exit.

    A disk too full for it is a WorkdirError naming the step training can resume from (orbax would
    fail later in its background thread with a storage error).
    """
    free, need = shutil.disk_usage(mngr.directory).free, state_bytes(state)
    if free < need:
        latest = mngr.latest_step()
        raise WorkdirError(f"{mngr.directory}: {_mb(free)} free, the checkpoint of step {step} needs about "
                           f"{_mb(need)}; free some space and run again (it resumes from "
                           f"{'step ' + str(latest) if latest is not None else 'the start'})")
    items = {
        "model": ocp.args.StandardSave(model_variables(state)),
        "opt": ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
    }
    mngr.save(step, args=ocp.args.Composite(**items), force=True)


def save_model(workdir: str | pathlib.Path, variables: dict, step: int = 0) -> pathlib.Path:
    """Writes model variables alone (converted pretrained weights) as a checkpoint of workdir."""
    mngr = manager(workdir)
    mngr.save(step, args=ocp.args.Composite(model=ocp.args.StandardSave(variables)), force=True)
    mngr.wait_until_finished()
    mngr.close()
    return pathlib.Path(mngr.directory)


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _flag(value: Any) -> str:
    # Values as `jaxpose.config.apply_overrides` parses them (ast.literal_eval, else a bare string).
    return repr(tuple(value)) if isinstance(value, list) else str(value)


def save_converted(workdir: str | pathlib.Path, variables: dict, *, kind: str, source: pathlib.Path,
                   config: dict[str, Any], **details: Any) -> pathlib.Path:
    """Saves converted pretrained weights as workdir's checkpoint and describes them in workdir/converted.json.

    converted.json records the source file (path, sha256), the kind, `details`,
    and the config fields an experiment needs to use the weights ("config":
    {dotted key: value}, and the same as --config.* flags in "overrides",
    init_from included). A workdir that already holds checkpoints is refused.
    """
    workdir = pathlib.Path(workdir).resolve()
    checkpoints = workdir / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.iterdir()):
        raise FileExistsError(f"{workdir}: already holds checkpoints; convert into a new workdir")
    directory = save_model(workdir, variables)
    config = {"init_from": str(workdir), **config}
    record = {
        "kind": kind,
        "source": str(source),
        "source_sha256": _sha256(source),
        **details,
        "tensors": len(jax.tree.leaves(variables)),
        "checkpoint": str(directory),
        "config": config,
        "overrides": [f"--config.{key}={_flag(value)}" for key, value in config.items()],
    }
    (workdir / "converted.json").write_text(json.dumps(record, indent=2) + "\n")
    return directory


def _latest(mngr: ocp.CheckpointManager) -> int:
    """The newest intact checkpoint; newer damaged ones are skipped with a warning (and left in place)."""
    directory = pathlib.Path(mngr.directory)
    good, bad = newest_intact(directory)
    if good is None:
        if bad:
            raise ValueError(f"no intact checkpoint in {directory}: {_describe(bad)}")
        raise FileNotFoundError(f"no checkpoint in {directory}; train or convert first")
    for damaged in bad:
        print(f"warning: checkpoint {damaged.step} in {directory} {damaged.problem}; using step {good}")
    return good


def restore_model(workdir: str | pathlib.Path, abstract_variables: Any) -> dict:
    """The "model" item of workdir's latest checkpoint, placed like `abstract_variables`."""
    mngr = manager(workdir)
    try:
        restored = mngr.restore(_latest(mngr), args=ocp.args.Composite(model=ocp.args.StandardRestore(abstract_variables)))
    finally:
        mngr.close()
    return restored["model"]


def restore_training(mngr: ocp.CheckpointManager, abstract_state: Any) -> Any:
    """The TrainState of the latest checkpoint (its step is the data position)."""
    step = _latest(mngr)
    items = {
        "model": ocp.args.StandardRestore(model_variables(abstract_state)),
        "opt": ocp.args.StandardRestore({"step": abstract_state.step, "opt_state": abstract_state.opt_state}),
    }
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(**items))
    except ValueError as error:
        if "tree structures do not match" not in str(error):
            raise
        # orbax's message lists every mismatching leaf over many lines: name what changed instead.
        raise ValueError(
            f"{pathlib.Path(mngr.directory) / str(step)}: this checkpoint's model or optimizer state does not fit "
            f"the config (model, optimizer.name, optimizer.flatten or optimizer.lr_multipliers changed since it was "
            f"written); resume with the settings of the workdir's config.json, or train in a new workdir"
        ) from None
    model, opt = restored["model"], restored["opt"]
    return abstract_state.replace(
        step=opt["step"], opt_state=opt["opt_state"], params=model["params"], batch_stats=model["batch_stats"]
    )


def is_training_checkpoint(mngr: ocp.CheckpointManager) -> bool:
    """True when the latest checkpoint can resume training (not converted weights alone)."""
    step = mngr.latest_step()
    return step is not None and (pathlib.Path(mngr.directory) / str(step) / "opt").exists()


def abstract_with_sharding(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """ShapeDtypeStructs of `tree` placed with `sharding` (the restore target)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


# --- damaged checkpoints --------------------------------------------------------------------------------------


def write_manifest(step_dir: pathlib.Path) -> None:
    """Writes MANIFEST into a complete checkpoint folder: {"files": {relative path: size in bytes}}."""
    files = {str(p.relative_to(step_dir)): p.stat().st_size for p in sorted(step_dir.rglob("*"))
             if p.is_file() and p.name not in (MANIFEST, ORBAX_STEP_METADATA)}
    (step_dir / MANIFEST).write_text(json.dumps({"files": files}, indent=0) + "\n")


def _damage(step_dir: pathlib.Path) -> str | None:
    """What is wrong with a finished checkpoint folder (a file missing or of another size than written), or None.

    A folder without MANIFEST (saved before manifests existed) is trusted: orbax renamed it into place complete.
    """
    manifest = step_dir / MANIFEST
    if not manifest.exists():
        return None
    try:
        files = json.loads(manifest.read_text())["files"]
        expected = {str(name): int(size) for name, size in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{MANIFEST} is unreadable ({type(e).__name__}: {e})"
    for name, size in expected.items():
        path = step_dir / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return None


@dataclasses.dataclass
class Damaged:
    """A checkpoint that cannot be resumed from: its step, its folder and what is wrong (a phrase with its verb)."""

    step: int
    path: pathlib.Path
    problem: str


def _finished_steps(directory: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def newest_intact(directory: pathlib.Path) -> tuple[int | None, list[Damaged]]:
    """(the newest intact finished checkpoint or None, the damaged and unfinished checkpoints newer than it).

    Checked newest first until one is intact; older ones are not read (orbax deletes them in turn).
    """
    if not directory.is_dir():
        return None, []
    good, bad = None, []
    for step in reversed(_finished_steps(directory)):
        problem = _damage(directory / str(step))
        if problem is None:
            good = step
            break
        bad.append(Damaged(step, directory / str(step), f"is damaged ({problem})"))
    for path in directory.iterdir():
        match = UNFINISHED.fullmatch(path.name)
        if match and (good is None or int(match[1]) > good):
            bad.append(Damaged(int(match[1]), path, f"was never finished ({path.name}: the run stopped while writing it)"))
    return good, sorted(bad, key=lambda d: d.step, reverse=True)


def _describe(bad: list[Damaged]) -> str:
    return "; ".join(f"checkpoint {d.step} {d.problem}" for d in bad)


def set_aside_damaged(workdir: str | pathlib.Path) -> None:
    """Before a training run resumes: moves checkpoints newer than the newest intact one out of orbax's sight,
    one warning line each; training then resumes from that one.

    Damaged finished ones go to workdir/checkpoints_damaged/ (kept for inspection, never deleted); unfinished
    saves are deleted (orbax would overwrite them). With no intact checkpoint left, nothing is moved and the
    error says so: training from scratch over them is the user's decision.
    """
    directory = pathlib.Path(workdir).resolve() / "checkpoints"
    good, bad = newest_intact(directory)
    _all_processes_here("checkpoints inspected")  # before process 0 moves anything another one is reading
    if good is None and bad and _finished_steps(directory):
        raise ValueError(f"no intact checkpoint in {directory}: {_describe(bad)}; "
                         f"move {directory} away to train from scratch")
    if jax.process_index() == 0:
        aside = directory.parent / DAMAGED_DIR
        for damaged in bad:
            target = _free_name(aside / str(damaged.step)) if damaged.path.name.isdigit() else None
            print(f"warning: checkpoint {damaged.step} in {directory} {damaged.problem}; resuming from "
                  f"{'step ' + str(good) if good is not None else 'the start'}{f' (kept in {target})' if target else ''}")
            if target:
                target.parent.mkdir(exist_ok=True)
                damaged.path.rename(target)
            else:
                shutil.rmtree(damaged.path)
    _all_processes_here("damaged checkpoints set aside")


def _all_processes_here(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxpose: {name}")


def _free_name(path: pathlib.Path) -> pathlib.Path:
    """path, or path-2, path-3, ... : the first that does not exist (a step damaged twice keeps both)."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


# --- workdir checks ---------------------------------------------------------------------------------------------


def _mb(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.1f} MiB"


def state_bytes(state: Any) -> int:
    """Bytes of the arrays of a TrainState (about the size of its checkpoint)."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state) if hasattr(x, "dtype"))


def check_writable(workdir: str | pathlib.Path) -> None:
    """Creates workdir (and its checkpoints folder) and writes a file into each; a WorkdirError if that fails."""
    workdir = pathlib.Path(workdir)
    for folder in (workdir, workdir / "checkpoints"):
        probe = folder / f".jaxpose-write-test-{socket.gethostname()}-{os.getpid()}"  # processes may share folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"\0" * 4096)
            probe.unlink()
        except OSError as e:
            raise WorkdirError(f"workdir {workdir} is not writable ({folder}: {e.strerror or e}); "
                               "checkpoints and metrics could not be saved: choose another --workdir") from e


def check_free_space(workdir: str | pathlib.Path, state: Any, *, max_to_keep: int = MAX_TO_KEEP) -> None:
    """A WorkdirError unless the disk of workdir holds the checkpoints still to come: up to `max_to_keep`
    are kept, and one more is written before the oldest is deleted."""
    directory = pathlib.Path(workdir) / "checkpoints"
    existing = len(_finished_steps(directory)) if directory.is_dir() else 0
    more = max(1, max_to_keep + 1 - existing)
    size, free = state_bytes(state), shutil.disk_usage(directory if directory.is_dir() else workdir).free
    if free < more * size:
        raise WorkdirError(f"workdir {workdir} has {_mb(free)} free; checkpoints of this model take about "
                           f"{_mb(size)} each and {more} more are written: free some space or choose another --workdir")


# --- preemption ---------------------------------------------------------------------------------------------------


class StopRequest:
    """SIGTERM or SIGINT (Ctrl-C) during training -> `reached(n)` turns True after a dispatch, the same one
    on every process; the loop then checkpoints that step and stops. A second Ctrl-C interrupts at once.

    One process: the handler only records the signal (printing or saving from a signal handler could
    re-enter code the main thread was running). Several processes (jax.distributed): jax's preemption sync
    manager owns SIGTERM (its notifier installs the handler) and, once any process got one, picks the call
    counter after the highest one any process has reached; `n` must therefore count the dispatches (1, 2,
    3, ... on every process), not the steps, which advance by several per call. Ctrl-C is handed on as SIGTERM.
    Handlers are installed in the main thread only (Python's rule) and restored on exit.
    """

    def __init__(self):
        self.signal_name: str | None = None  # the first signal received here, if any
        self.received_at: float | None = None  # its time.monotonic()
        self.step: int | None = None  # set by the train loop when it stopped early
        self._previous: dict[int, Any] = {}
        self._sync = False
        self._sync_point_reached = False

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is not threading.main_thread():
            return self
        mode = _stop_mode()
        self._sync = mode == "sync"
        for signum in {"sync": (signal.SIGINT,), "local": (signal.SIGINT, signal.SIGTERM), None: ()}[mode]:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            # None: the previous handler was installed outside Python (jax's notifier); it cannot be put back.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user will not wait for the checkpoint
        if self.signal_name is None:
            self.signal_name, self.received_at = signal.Signals(signum).name, time.monotonic()
        if self._sync:
            os.kill(os.getpid(), signal.SIGTERM)  # to jax's notifier, which tells the other processes

    @property
    def requested(self) -> bool:
        """A stop was asked for: one process, a signal was received; several, all reached the sync point (a
        process alone skipping what follows the loop, the evaluation's collectives, would hang the others)."""
        return self._sync_point_reached if self._sync else self.signal_name is not None

    def reached(self, dispatch: int) -> bool:
        """True at the dispatch (counted from 1 by every process) where every process stops."""
        if not self._sync:
            return self.signal_name is not None
        from jax.experimental import multihost_utils

        if multihost_utils.reached_preemption_sync_point(dispatch):
            self.signal_name = self.signal_name or "a preemption notice (SIGTERM to one of the processes)"
            self._sync_point_reached = True
        return self._sync_point_reached


def _stop_mode() -> str | None:
    """"local" (one process), "sync" (several, with jax's preemption sync manager) or None (several without:
    a stop that the others would not follow would hang them in the next collective, so signals keep their
    default effect and the run resumes from its last periodic checkpoint)."""
    if jax.process_count() == 1:
        return "local"
    if jax.config.jax_enable_preemption_service:
        return "sync"
    print("warning: jax_enable_preemption_service is off: SIGTERM or Ctrl-C stops this process without a checkpoint")
    return None
