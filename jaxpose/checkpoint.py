"""Orbax checkpoints: model variables, optimizer state and the grain data-iterator state.

Three items per step, so that each reader takes only what it needs:
* "model": {"params", "batch_stats"} (what eval, predict and `init_from` load;
  converted pretrained weights are checkpoints with this item alone);
* "opt":   {"step", "opt_state"} (resuming training);
* "data":  the grain iterator state, so a resumed run continues at the same
  position in the data stream (the same batches as an uninterrupted run).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


def manager(workdir: str | pathlib.Path, *, max_to_keep: int = 3) -> ocp.CheckpointManager:
    directory = pathlib.Path(workdir).resolve() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(directory, options=options)


def model_variables(state: Any) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats}


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_iterator: Any | None = None) -> None:
    """Saves a TrainState (and the data iterator) asynchronously; `mngr.wait_until_finished()` before exit."""
    items = {
        "model": ocp.args.StandardSave(model_variables(state)),
        "opt": ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
    }
    if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
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
    step = mngr.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {mngr.directory}; train or convert first")
    return step


def restore_model(workdir: str | pathlib.Path, abstract_variables: Any) -> dict:
    """The "model" item of workdir's latest checkpoint, placed like `abstract_variables`."""
    mngr = manager(workdir)
    try:
        restored = mngr.restore(_latest(mngr), args=ocp.args.Composite(model=ocp.args.StandardRestore(abstract_variables)))
    finally:
        mngr.close()
    return restored["model"]


def restore_training(mngr: ocp.CheckpointManager, abstract_state: Any, data_iterator: Any | None) -> Any:
    """The TrainState of the latest checkpoint; a grain `data_iterator` is restored in place.

    Placements whose data position is the step itself (memmap, device) pass None.
    """
    step = _latest(mngr)
    items = {
        "model": ocp.args.StandardRestore(model_variables(abstract_state)),
        "opt": ocp.args.StandardRestore({"step": abstract_state.step, "opt_state": abstract_state.opt_state}),
    }
    if data_iterator is not None:
        if not (pathlib.Path(mngr.directory) / str(step) / "data").exists():
            raise ValueError(f"checkpoint {step} in {mngr.directory} holds no data-iterator state (written by the "
                             "memmap or device pipeline); resume it with the same config.data.pipeline")
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = mngr.restore(step, args=ocp.args.Composite(**items))
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
