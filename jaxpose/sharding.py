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


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Joins a multi-process job: with the three settings given, the one coordinated at coordinator_address
    (N processes on one machine, or hosts without a cluster manager); with none, a TPU pod, SLURM or Open MPI
    job detected from the environment, and a no-op on a single machine. Before any JAX computation.

    On CPU the cross-process collectives are gloo's (jax_cpu_collectives_implementation, the default).
    """
    settings = {"--coordinator_address": coordinator_address, "--num_processes": num_processes,
                "--process_id": process_id}
    if jax.distributed.is_initialized():
        return  # joined already (each run of a sweep asks again)
    if all(value is None for value in settings.values()):
        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError):
            pass  # single process: no coordinator configured
        return
    check_distributed_settings(**settings)
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def check_distributed_settings(**settings) -> None:
    """One-line ValueError naming the flag: all three given, HOST:PORT, 0 <= process_id < num_processes >= 1."""
    missing = [flag for flag, value in settings.items() if value is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing: --coordinator_address, --num_processes and "
                         "--process_id go together (or none, for automatic cluster detection)")
    host, _, port = settings["--coordinator_address"].rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--coordinator_address is {settings['--coordinator_address']!r}; valid: HOST:PORT "
                         "(process 0's address, a free port in 1-65535), e.g. 127.0.0.1:12355")
    count, index = settings["--num_processes"], settings["--process_id"]
    if count < 1:
        raise ValueError(f"--num_processes is {count}; valid: an integer >= 1")
    if not 0 <= index < count:
        raise ValueError(f"--process_id is {index}; valid: 0 to {count - 1} (--num_processes {count})")


def is_primary() -> bool:
    """True in the process that writes the run's files (metrics, reports, config): process 0 of a job."""
    return jax.process_index() == 0


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
