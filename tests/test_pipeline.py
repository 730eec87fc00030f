import jax
import numpy as np
import pytest
from conftest import tiny_config

from input_pipeline import augment, pipeline


def _batches(config, n, seed=0):
    iterator = iter(pipeline.train_dataset(config.data, config.batch_size, seed))
    return [next(iterator) for _ in range(n)], iterator


def test_train_stream_is_deterministic_and_seeded(tiny_data_dir):
    config = tiny_config(tiny_data_dir, **{"data.scale": (0.8, 1.2), "data.shift": 0.1, "data.blur_prob": 0.5})
    first, _ = _batches(config, 3)
    again, _ = _batches(config, 3)
    other, _ = _batches(config, 3, seed=1)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["pose"], b["pose"])
    assert not np.array_equal(first[0]["image"], other[0]["image"])
    assert first[0]["image"].shape == (8, 32, 32, 3) and first[0]["image"].dtype == np.uint8
    assert first[0]["pose"].shape == (8, 3) and first[0]["pose"].dtype == np.float32


def test_iterator_state_restores_the_data_position(tiny_data_dir):
    config = tiny_config(tiny_data_dir)
    batches, iterator = _batches(config, 7)  # crosses an epoch boundary (48 records / 8)
    state = iterator.get_state()
    expected = next(iterator)
    fresh = iter(pipeline.train_dataset(config.data, config.batch_size, 0))
    fresh.set_state(state)
    np.testing.assert_array_equal(next(fresh)["image"], expected["image"])
    # Every record appears once per epoch: the first 6 batches hold 48 distinct poses.
    poses = np.concatenate([b["pose"] for b in batches[:6]])
    assert len(np.unique(np.abs(poses[:, 1]))) == 48  # |pitch| is unchanged by flips


def test_worker_processes_give_the_same_batches(tiny_data_dir):
    config = tiny_config(tiny_data_dir)
    expected, _ = _batches(config, 3)
    config.data.num_workers = 2
    iterator = iter(pipeline.train_dataset(config.data, config.batch_size, 0))
    for batch in expected:
        np.testing.assert_array_equal(next(iterator)["image"], batch["image"])
    state = iterator.get_state()
    iterator.close()
    resumed = iter(pipeline.train_dataset(config.data, config.batch_size, 0))
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)["image"], _batches(config, 4)[0][3]["image"])
    resumed.close()


def test_process_shards_are_disjoint_and_equal(tiny_data_dir, monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 3)
    shards = []
    for index in range(3):
        monkeypatch.setattr(jax, "process_index", lambda index=index: index)
        shard, size = pipeline.process_shard(50)
        shards.append(set(range(50)[shard]))
        assert size == 16
    assert not (shards[0] & shards[1]) and not (shards[1] & shards[2]) and not (shards[0] & shards[2])
    # Evaluation covers every record exactly once across processes, in equal numbers of batches.
    config = tiny_config(tiny_data_dir)
    seen, counts = [], []
    for index in range(3):
        monkeypatch.setattr(jax, "process_index", lambda index=index: index)
        batches = list(pipeline.eval_batches(config.data, "test", 4))
        counts.append(len(batches))
        seen += [tuple(p) for batch, valid in batches for p in batch["pose"][:valid]]
    assert len(set(counts)) == 1 and len(seen) == 24 and len(set(seen)) == 24


def test_flip_negates_yaw_and_roll(tiny_data_dir):
    config = tiny_config(tiny_data_dir, **{"data.crop_k": (0.2, 0.2)})
    record = pipeline.data_source(config.data, "train")[0]
    config.data.flip = False
    plain = augment.prepare(record, config.data, np.random.default_rng(0))
    config.data.flip = True
    for seed in range(20):  # some seed flips (p = 0.5)
        flipped = augment.prepare(record, config.data, np.random.default_rng(seed))
        if not np.array_equal(flipped["pose"], plain["pose"]):
            break
    np.testing.assert_allclose(flipped["pose"], plain["pose"] * np.array([-1, 1, -1]))
    np.testing.assert_array_equal(flipped["image"], plain["image"][:, ::-1])


def test_eval_transform_is_deterministic_and_bgr_swaps_channels(tiny_data_dir):
    config = tiny_config(tiny_data_dir)
    record = pipeline.data_source(config.data, "test")[3]
    rgb = augment.prepare(record, config.data)
    np.testing.assert_array_equal(rgb["image"], augment.prepare(record, config.data)["image"])
    config.data.channels = "bgr"
    np.testing.assert_array_equal(augment.prepare(record, config.data)["image"], rgb["image"][..., ::-1])


def test_pairs_share_identity(tiny_data_dir):
    config = tiny_config(tiny_data_dir, **{"data.pairs": True})
    source = pipeline.data_source(config.data, "train")
    groups = pipeline.identity_groups(source)
    identities = [source[i]["identity"] for i in range(len(source))]
    for i, others in enumerate(groups):
        assert i not in others and all(identities[j] == identities[i] for j in others)
        assert len(others) == identities.count(identities[i]) - 1
    batch = next(iter(pipeline.train_dataset(config.data, 8, 0)))
    assert batch["image"].shape == (8, 32, 32, 3)  # 4 pairs -> 8 images, halves are pair members
    pose_to_identity = {tuple(np.abs(source[i]["pose"][[1]])): identities[i] for i in range(len(source))}
    firsts, seconds = batch["pose"][:4], batch["pose"][4:]
    for a, b in zip(firsts, seconds):
        assert pose_to_identity[(abs(a[1]),)] == pose_to_identity[(abs(b[1]),)]


def test_missing_dataset_is_a_clear_error(tmp_path):
    config = tiny_config(tmp_path, **{"data.name": "aflw2000"})
    with pytest.raises(FileNotFoundError, match="not built.*jaxpose data build aflw2000"):
        pipeline.data_source(config.data, "test")
