"""Shared fixtures: the real test material in ../shared/testdata."""

import os
import pathlib

import pytest

TESTDATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "testdata"


@pytest.fixture(scope="session")
def testdata() -> pathlib.Path:
    """Path of ../shared/testdata; missing is a failure under CI (CI=true), a skip elsewhere."""
    if not TESTDATA.is_dir():
        message = f"test data not found at {TESTDATA} (expected ../shared/testdata beside the repo)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return TESTDATA


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> pathlib.Path:
    """A data_dir holding synthetic_heads/tiny (48 train, 24 test records), built once per session."""
    from input_pipeline.datasets import registry

    data_dir = tmp_path_factory.mktemp("data")
    registry.get_builder("synthetic_heads/tiny", data_dir).download_and_prepare(file_format="array_record")
    return data_dir


@pytest.fixture(scope="module")
def fast_compile():
    """XLA:CPU spends far longer optimising small train programs than running them; tests need no speed."""
    import jax

    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def tiny_config(data_dir, **overrides):
    """A config that trains resnet_tiny at 32 px on synthetic_heads/tiny in seconds."""
    from jaxpose.config import apply_overrides, base_config

    config = base_config()
    config.data.name = "synthetic_heads/tiny"
    config.data.data_dir = str(data_dir)
    config.data.image_size = 32
    config.model.name = "resnet_tiny"
    config.batch_size = 8
    config.num_train_steps = 4
    config.log_every = 1
    config.checkpoint_every = 2
    return apply_overrides(config, overrides)
