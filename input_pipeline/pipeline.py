"""Training input: three placements of the per-image work (config.data.pipeline), and evaluation batches.

* "host": grain over the TFDS array_record source: record indices -> seeded
  global shuffle (the same on every JAX process, reshuffled every epoch) ->
  per-record decoding and random augmentation on the host (`augment.prepare`)
  -> each process's part of every global batch (`process_batches`) ->
  optional worker processes. The batch of a step is a pure function of seed
  and step, whatever the number of processes.
* "memmap": the decoded canvases of `canvases.py` (built once by `jaxpose data
  cache`) are gathered by index from their memory map (grain MapDataset with
  random access: the batch of a step is a pure function of seed and step) and
  put on the devices two dispatches ahead by a background thread; cropping and
  augmentation run on the device (`device_augment.py`) inside the train step.
* "device": the canvases live on the devices, each device holding an equal
  slice; every step samples its rows there (an epoch is a permutation of the
  slice, keyed by seed, epoch and device), so the host does nothing per step.

No placement checkpoints iterator state: resuming at a step resumes the data,
with any number of processes.

RankPose pairs: each training example is a pair of images of one identity;
a batch of N pairs is laid out as 2N images, the first members then the
second members, so one forward pass runs one set of weights on both. Feeds lay
out each device's rows as its own [firsts; seconds] (so a per-device step sees
whole pairs) and the GSPMD step restores the global order (`global_pairs_order`).

Evaluation (`eval_batches`) always uses the exact host crops.
"""

from __future__ import annotations

import pathlib
import queue
import threading
import time
from typing import Any

import grain
import jax
import jax.numpy as jnp
from absl import flags
import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import augment
from input_pipeline.datasets import registry


def data_source(cfg: Any, split: str):
    """The array_record data source of a built dataset; images stay encoded (decoded by OpenCV)."""
    builder = registry.get_builder(cfg.name, cfg.data_dir)
    built = pathlib.Path(builder.data_dir).joinpath("dataset_info.json").exists()
    if not built and builder.MANUAL_DOWNLOAD_INSTRUCTIONS is None:
        print(f"building {cfg.name} in {cfg.data_dir} (generated data, first use only)", flush=True)
        tfds.disable_progress_bar()
        builder.download_and_prepare(file_format="array_record")
    elif not built:
        raise FileNotFoundError(
            f"dataset {cfg.name!r} is not built in {builder.data_dir}; "
            f"run `jaxpose data build {cfg.name} --source DIR --data_dir {cfg.data_dir}`"
        )
    sources = builder.as_data_source(decoders={"image": tfds.decode.SkipDecoding()})
    if split not in sources:
        raise ValueError(f"dataset {cfg.name!r} has no split {split!r}; splits: {', '.join(sources)}")
    return sources[split]


def process_shard(num_records: int) -> tuple[slice, int]:
    """This JAX process's slice of the record indices, and its size (equal for every process)."""
    options = grain.sharding.ShardByJaxProcess(drop_remainder=True)
    per_process = num_records // options.shard_count
    if per_process == 0:
        raise ValueError(f"{num_records} records cannot be shared by {options.shard_count} processes")
    start = options.shard_index * per_process
    return slice(start, start + per_process), per_process


def identity_groups(source) -> list[np.ndarray]:
    """For each record of a data source, the indices of the *other* records of its identity (may be empty)."""
    return groups_of(np.array([source[i]["identity"] for i in range(len(source))]))


def groups_of(identities: np.ndarray) -> list[np.ndarray]:
    """For each entry of `identities`, the indices of the *other* entries equal to it."""
    _, inverse = np.unique(identities, return_inverse=True)
    # Sorting once groups the records in O(n log n) (300W-LP: 122k records, 61k identities).
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(inverse.max() + 2))
    members = [order[starts[g] : starts[g + 1]] for g in range(inverse.max() + 1)]
    return [members[g][members[g] != i] for i, g in enumerate(inverse)]


class _Example(grain.transforms.RandomMap):
    """Index -> augmented example; with `groups`, -> a same-identity pair stacked on axis 0."""

    def __init__(self, source, cfg: Any, groups: list[np.ndarray] | None):
        self.source, self.cfg, self.groups = source, cfg, groups

    def random_map(self, index, rng: np.random.Generator) -> dict:
        first = augment.prepare(self.source[int(index)], self.cfg, rng)
        if self.groups is None:
            return first
        others = self.groups[int(index)]
        # A person seen once is paired with itself under another augmentation.
        partner = int(rng.choice(others)) if len(others) else int(index)
        second = augment.prepare(self.source[partner], self.cfg, rng)
        return {k: np.stack([first[k], second[k]]) for k in first}


def _unpair(batch: dict) -> dict:
    """(N, 2, ...) pairs -> (2N, ...): first members, then second members."""
    return {k: np.concatenate([v[:, 0], v[:, 1]]) for k, v in batch.items()}


def process_batches(ds: grain.MapDataset, per_process: int, process: tuple[int, int] | None = None) -> grain.MapDataset:
    """This process's part of each global batch of `ds`: batches of `per_process` consecutive elements,
    every P-th one from the process's index on (P = the process count; `process`: (index, count) instead
    of JAX's). Global batch k is elements [k B, (k + 1) B), B = P x per_process, and process p holds its
    p-th slice, which the global array puts on p's devices: the global batch, its order and each element
    (a random map keyed by the global position) are those of one process, whatever P."""
    if process is None:
        options = grain.sharding.ShardByJaxProcess()
        process = (options.shard_index, options.shard_count)
    index, count = process
    return ds.batch(per_process, drop_remainder=True)[index::count]


def train_dataset(cfg: Any, batch_size: int, seed: int, *, start_step: int = 0) -> grain.IterDataset:
    """Infinite training stream of this process's batches (`batch_size` images per process) from step `start_step`.

    Every process shuffles all the records the same way (reshuffled every epoch) and draws each element's
    augmentation from its position in that global stream; `process_batches` gives each process its part
    of every global batch. A step's global batch is thus the same for any number of processes, each record
    is read once per epoch across them, and the data position is the step alone (a checkpoint of one
    process count resumes with another).
    """
    source = data_source(cfg, cfg.train_split)
    groups = identity_groups(source) if cfg.pairs else None
    per_batch = batch_size // 2 if cfg.pairs else batch_size
    ds = grain.MapDataset.range(len(source)).shuffle(seed=seed).repeat(None)
    ds = ds.random_map(_Example(source, cfg, groups), seed=seed + 1)
    ds = process_batches(ds, per_batch)[start_step:]
    if cfg.pairs:
        ds = ds.map(_unpair)
    iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.num_threads, prefetch_buffer_size=cfg.prefetch))
    num_workers = augment.num_workers(cfg.num_workers)
    if num_workers > 0:
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()  # grain's workers read absl flags (google/grain#1355)
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers),
                                      worker_init_fn=augment.init_worker)
    return iter_ds


def eval_batches(cfg: Any, split: str, batch_size: int):
    """This process's records of `split`, in order, as batches padded to `batch_size`.

    Yields ({"image", "pose"}, num_valid). Padding repeats a record and is
    excluded by num_valid, so every record is evaluated exactly once; every
    process yields the same number of batches (the jitted eval step is collective).
    """
    source = data_source(cfg, split)
    options = grain.sharding.ShardByJaxProcess(drop_remainder=False)
    indices = np.arange(len(source))[options.shard_index :: options.shard_count]
    num_batches = -(-(-(-len(source) // options.shard_count)) // batch_size)
    padded = np.resize(indices, num_batches * batch_size)  # repeats indices as padding
    ds = grain.MapDataset.source(padded).map(lambda i: augment.prepare(source[int(i)], cfg))
    ds = ds.batch(batch_size).to_iter_dataset(grain.ReadOptions(num_threads=cfg.num_threads))
    for b, batch in enumerate(ds):
        yield batch, int(np.clip(len(indices) - b * batch_size, 0, batch_size))


def train_size(cfg: Any) -> int:
    """Number of training records of this process (for epochs -> steps)."""
    return process_shard(len(data_source(cfg, cfg.train_split)))[1]


# --- canvas placements: "memmap" and "device" ------------------------------------------
#
# Both read the decoded training canvases of `input_pipeline.canvases` and leave the
# crop, resize, flip and degradations to `input_pipeline.device_augment` inside the
# jitted train step. A batch is a pure function of (seed, step), so resuming at a step
# resumes the data position exactly; no iterator state is checkpointed.

CANVAS_LABELS = ("box", "source_box", "canvas_scale", "pose")
PAIR_TABLE_WIDTH = 32  # partners kept per record (300W-LP identities have far fewer images)


def partner_table(identity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each record, up to PAIR_TABLE_WIDTH other records of its identity.

    Returns (table (N, W) int32 padded with the record itself, count (N,) int32);
    count 0 means a person seen once, who is paired with itself under another
    augmentation (as the host path does).
    """
    groups = groups_of(np.asarray(identity))
    table = np.repeat(np.arange(len(groups), dtype=np.int32)[:, None], PAIR_TABLE_WIDTH, axis=1)
    count = np.zeros(len(groups), np.int32)
    for i, others in enumerate(groups):
        kept = others[:PAIR_TABLE_WIDTH]
        table[i, : len(kept)] = kept
        count[i] = len(kept)
    return table, count


def pairs_by_device(batch: dict, num_chunks: int) -> dict:
    """[firsts; seconds] of a process batch -> per device [its firsts; its seconds].

    Every placement lays a device's rows out as its own pairs, so a per-device
    step sees whole pairs; the GSPMD step reorders the global batch back
    (`global_pairs_order`).
    """
    def regroup(x):
        x = np.asarray(x)
        return x.reshape(2, num_chunks, -1, *x.shape[1:]).swapaxes(0, 1).reshape(x.shape)

    return {k: regroup(v) for k, v in batch.items()}


def global_pairs_order(x: jax.Array, num_chunks: int) -> jax.Array:
    """Inverse of `pairs_by_device` on the global batch: per device [f; s] -> [all firsts; all seconds]."""
    return x.reshape(num_chunks, 2, -1, *x.shape[1:]).swapaxes(0, 1).reshape(x.shape)


class CanvasBatches:
    """Random-access batches of this process's canvases (the "memmap" placement).

    `self[step]` is the host batch of training step `step` (0-based): grain's
    MapDataset shuffles all the records with the seed, reshuffles every epoch,
    and this process takes its part of each global batch (`process_batches`, as
    the host placement: the same global batches for any number of processes);
    the rows are gathered from the memory map; with pairs, each record draws a
    same-identity partner. process: (index, count) instead of JAX's.
    """

    def __init__(self, cache, batch_size: int, seed: int, *, pairs: bool, local_devices: int,
                 process: tuple[int, int] | None = None):
        self.cache, self.pairs, self.local_devices = cache, pairs, local_devices
        ds = grain.MapDataset.range(len(cache)).shuffle(seed=seed).repeat(None)
        if pairs:
            self.table, self.count = partner_table(cache.identity)
            ds = ds.random_map(self._with_partner, seed=seed + 1)
        self.batches = process_batches(ds, batch_size // 2 if pairs else batch_size, process)

    def _with_partner(self, index, rng: np.random.Generator) -> np.ndarray:
        index = int(index)
        count = self.count[index]
        partner = self.table[index, rng.integers(count)] if count else index
        return np.array([index, partner])

    def __getitem__(self, step: int) -> dict:
        rows = np.asarray(self.batches[step])
        if self.pairs:  # (n, 2) -> [firsts; seconds], then per device
            rows = rows.T.reshape(-1)
        batch = {"canvas": self.cache.images[np.sort(rows)], **{k: getattr(self.cache, k)[rows] for k in CANVAS_LABELS}}
        batch["canvas"] = batch["canvas"][np.argsort(np.argsort(rows))]  # sorted read (page locality), original order
        return pairs_by_device(batch, self.local_devices) if self.pairs else batch


def resident_canvases(cache, mesh, *, pairs: bool) -> tuple[dict, int]:
    """This process's canvases and labels as global arrays split over the devices (the "device" placement).

    Each device holds an equal, contiguous slice of the records (the remainder
    that does not divide is reported); with pairs, also each record's
    same-identity partners among its device's slice. Returns (arrays, records used).
    """
    shard, per_process = process_shard(len(cache))
    local = len(mesh.local_devices)
    per_device = per_process // local
    rows = np.arange(shard.start, shard.start + per_device * local)
    if per_device * local < per_process:
        print(f"device placement: {per_process - per_device * local} of {per_process} records left out "
              f"(not divisible by {local} devices); a different subset is left out with another seed")
        rows = np.sort(np.random.default_rng(0).permutation(np.arange(shard.start, shard.stop))[: per_device * local])
    arrays = {"canvas": cache.images[rows], **{k: getattr(cache, k)[rows] for k in CANVAS_LABELS}}
    if pairs:
        tables = [partner_table(cache.identity[chunk]) for chunk in rows.reshape(local, per_device)]
        arrays["partners"] = np.concatenate([t for t, _ in tables])
        arrays["partner_count"] = np.concatenate([c for _, c in tables])
    from jaxpose import sharding  # input_pipeline stays importable without the train stack

    return sharding.put_batch(arrays, mesh), per_device * local * jax.process_count()


def sample_local(step: jax.Array, local: dict, key: jax.Array, examples: int, *, pairs: bool, axis_name: str) -> dict:
    """Inside shard_map: this device's examples for `step`, drawn from its own slice of the canvases.

    An epoch is a fresh permutation of the slice (key folded with the epoch and
    the device index), cut into consecutive batches; with pairs, each record
    draws one partner of its identity. Returns the rows, per device [firsts; seconds].
    """
    n = local["canvas"].shape[0]
    steps_per_epoch = n // examples
    epoch, offset = step // steps_per_epoch, (step % steps_per_epoch) * examples
    device_key = jax.random.fold_in(jax.random.fold_in(key, epoch), jax.lax.axis_index(axis_name))
    rows = jax.lax.dynamic_slice_in_dim(jax.random.permutation(device_key, n), offset, examples)
    if pairs:
        pick_key = jax.random.fold_in(device_key, offset)
        count = local["partner_count"][rows]
        pick = jax.random.randint(pick_key, (examples,), 0, jnp.maximum(count, 1))
        partner = jnp.where(count > 0, local["partners"][rows, pick], rows)
        rows = jnp.concatenate([rows, partner])
    return {k: local[k][rows] for k in ("canvas", *CANVAS_LABELS)}


# --- feeds: what the train loop pulls for each dispatch of `num_steps` steps ---------------


def _stack(batches: list[dict]) -> dict:
    return batches[0] if len(batches) == 1 else {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def _put(batch: dict, mesh, stacked: bool) -> dict:
    from jaxpose import sharding

    return sharding.put_batch(batch, mesh, leading_steps=stacked)


class HostFeed:
    """The "host" placement: grain decodes and augments every image on the host (`train_dataset`).

    The data position is the step (`train_dataset`): `start` opens the stream at the schedule's first
    step, so checkpoints hold no iterator state and resume with any number of processes.
    """

    def __init__(self, cfg: Any, batch_size: int, seed: int, mesh):
        self.cfg, self.batch_size, self.seed = cfg, batch_size, seed
        self.iterator = None
        self.mesh, self.pairs, self.host_seconds = mesh, cfg.pairs, 0.0

    def start(self, schedule: list[tuple[int, int]]) -> None:
        if schedule:  # nothing to read (a finished run): no reader threads or worker processes
            self.iterator = iter(train_dataset(self.cfg, self.batch_size, self.seed, start_step=schedule[0][0]))

    def get(self, num_steps: int) -> dict:
        tick = time.thread_time()
        batches = [next(self.iterator) for _ in range(num_steps)]
        if self.pairs:
            batches = [pairs_by_device(b, len(self.mesh.local_devices)) for b in batches]
        batch = _put(_stack(batches), self.mesh, num_steps > 1)
        self.host_seconds += time.thread_time() - tick
        return batch

    def close(self) -> None:
        if self.iterator is not None:
            self.iterator.close()  # stops grain's worker processes now, not at interpreter exit


class MemmapFeed:
    """The "memmap" placement: a background thread gathers canvases from the memory map and puts
    each dispatch's batches on the devices `depth` dispatches ahead of the train loop."""

    def __init__(self, cache, batch_size: int, seed: int, mesh, *, pairs: bool, depth: int = 2):
        self.batches = CanvasBatches(cache, batch_size, seed, pairs=pairs, local_devices=len(mesh.local_devices))
        self.mesh, self.host_seconds = mesh, 0.0
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, schedule: list[tuple[int, int]]) -> None:
        self.thread = threading.Thread(target=self._produce, args=(schedule,), daemon=True, name="memmap-feed")
        self.thread.start()

    def _produce(self, schedule) -> None:
        try:
            for first, num_steps in schedule:
                tick = time.thread_time()
                item = _put(_stack([self.batches[s] for s in range(first, first + num_steps)]), self.mesh, num_steps > 1)
                self.host_seconds += time.thread_time() - tick
                if not self._offer(item):
                    return
        except Exception as e:  # handed to the train loop, which raises it
            self._offer(e)

    def _offer(self, item) -> bool:
        """Queues item unless the feed is closed meanwhile (the train loop stopped pulling)."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, num_steps: int) -> dict:
        item = self.queue.get()
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


class DeviceFeed:
    """The "device" placement: the canvases live on the devices; each step samples its rows there,
    so the host does nothing per step."""

    def __init__(self, cache, mesh, *, pairs: bool):
        self.resident, self.num_records = resident_canvases(cache, mesh, pairs=pairs)
        self.host_seconds = 0.0

    def start(self, schedule: list[tuple[int, int]]) -> None:
        del schedule

    def get(self, num_steps: int) -> dict:
        return self.resident

    def close(self) -> None:
        self.resident = None
