"""Device mesh and shardings: data parallelism with jax.jit, no pmap.

The same code runs on one CPU, several GPUs or a TPU pod slice: the batch is
split along the mesh's `data` axis, the train state is replicated, and XLA
inserts the gradient all-reduce (and the cross-device BatchNorm statistics,
since BN sees the global batch).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed() -> None:
    """Joins a multi-host job when launched as one (coordinator from the environment); no-op otherwise."""
    try:
        jax.distributed.initialize()
    except (ValueError, RuntimeError):
        pass  # single process: no coordinator configured


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D `data` mesh over all devices, or over the first `num_devices`.

    Its axis is of type Auto: GSPMD propagates the shardings through the step
    (jax.make_mesh's default, Explicit, would make every traced array carry its
    sharding and reject, e.g., a vmap over a sharded batch and an unsharded index).
    """
    devices = jax.devices()
    if num_devices is None:
        num_devices = len(devices)
    if not 1 <= num_devices <= len(devices):
        raise ValueError(f"num_devices={num_devices}, but {len(devices)} devices are available")
    return Mesh(np.array(devices[:num_devices]), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(global_batch: int, mesh: Mesh) -> int:
    """The per-process batch size; the global batch must split evenly over devices and processes."""
    if global_batch % mesh.size:
        raise ValueError(f"batch size {global_batch} is not divisible by the {mesh.size} devices of the mesh")
    return global_batch // jax.process_count()


def put_batch(batch: dict, mesh: Mesh, *, leading_steps: bool = False) -> dict:
    """Host-local numpy batch -> global jax arrays sharded on `data` (works for several processes).

    leading_steps: the arrays hold several steps' batches on axis 0 (split on axis 1).
    """
    spec = PartitionSpec(None, DATA_AXIS) if leading_steps else PartitionSpec(DATA_AXIS)
    sharding = NamedSharding(mesh, spec)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
