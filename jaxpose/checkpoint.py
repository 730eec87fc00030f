"""Orbax checkpoints holding the train state and the grain data-iterator state.

Saving both makes a resumed run continue at the same step *and* the same
position in the data stream (same batches as an uninterrupted run).
"""

from __future__ import annotations

import pathlib
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


def manager(workdir: str | pathlib.Path, *, max_to_keep: int = 3) -> ocp.CheckpointManager:
    directory = pathlib.Path(workdir).resolve() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(directory, options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_iterator: Any | None = None) -> None:
    """Saves asynchronously; call `mngr.wait_until_finished()` before exiting."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
        items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    mngr.save(step, args=ocp.args.Composite(**items), force=True)


def restore(mngr: ocp.CheckpointManager, abstract_state: Any, data_iterator: Any | None = None, step: int | None = None):
    """(state, data_iterator) of `step` (default: latest), restored onto the abstract state's shardings.

    The data iterator is restored in place when given and the checkpoint has one.
    """
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {mngr.directory}")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None and "data" in mngr.item_metadata(step):
        items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = mngr.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], restored.get("data", data_iterator)


def abstract_with_sharding(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """ShapeDtypeStructs of `tree` placed with `sharding` (the restore target)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)
