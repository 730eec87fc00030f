"""grain pipelines over the TFDS array_record data sources.

Training: record indices -> shard by JAX process -> seeded global shuffle
(reshuffled every epoch) -> per-record random augmentation -> batch ->
optional worker processes. The iterator's state (a few integers) is saved in
every checkpoint, so a resumed run continues at the same data position.

RankPose pairs: each training example is a pair of images of one identity;
a batch of N pairs is laid out as 2N images, the first members then the
second members, so one forward pass runs one set of weights on both.
"""

from __future__ import annotations

import pathlib
from typing import Any

import grain
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
    """For each record, the indices of the *other* records of its identity (may be empty)."""
    identities = np.array([source[i]["identity"] for i in range(len(source))])
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


def train_dataset(cfg: Any, batch_size: int, seed: int) -> grain.IterDataset:
    """Infinite training stream of this process's batches (`batch_size` images per process)."""
    source = data_source(cfg, cfg.train_split)
    shard, _ = process_shard(len(source))
    groups = identity_groups(source) if cfg.pairs else None
    per_batch = batch_size // 2 if cfg.pairs else batch_size
    ds = grain.MapDataset.range(len(source))[shard].shuffle(seed=seed).repeat(None)
    ds = ds.random_map(_Example(source, cfg, groups), seed=seed + 1)
    ds = ds.batch(per_batch, drop_remainder=True)
    if cfg.pairs:
        ds = ds.map(_unpair)
    iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.num_threads, prefetch_buffer_size=cfg.prefetch))
    if cfg.num_workers > 0:
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()  # grain's workers read absl flags (google/grain#1355)
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers))
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
