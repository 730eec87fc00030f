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


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """Many tests compile the same small programs (resnet_tiny steps, eval steps): jax's persistent cache, on
    for the session (and the `jaxpose` processes tests start with JAX_COMPILATION_CACHE_DIR), compiles each
    once. Identical programs run identically, so what the tests compare is unchanged."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cache

    directory = tmp_path_factory.mktemp("xla_cache")
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    cache.reset_cache()  # the process decided on its first compile whether it had a cache
    yield directory


@pytest.fixture(scope="module")
def fast_compile():
    """XLA:CPU spends far longer optimising small train programs than running them; tests need no speed."""
    import jax

    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


# resnet_tiny at 32 px on synthetic_heads/tiny: trains in seconds.
TINY_SETTINGS = {"data.name": "synthetic_heads/tiny", "data.image_size": 32, "model.name": "resnet_tiny",
                 "batch_size": 8, "num_train_steps": 4, "log_every": 1, "checkpoint_every": 2}


def tiny_config(data_dir, **overrides):
    """A config that trains resnet_tiny at 32 px on synthetic_heads/tiny in seconds."""
    from jaxpose.config import apply_overrides, base_config

    return apply_overrides(base_config(), {**TINY_SETTINGS, "data.data_dir": str(data_dir), **overrides})


def write_tiny_experiment(path, data_dir, **overrides):
    """`tiny_config(data_dir, **overrides)` as an experiment file at path, for the CLI and subprocesses."""
    settings = {**TINY_SETTINGS, "data.data_dir": str(data_dir), **overrides}
    path.write_text("from jaxpose.config import apply_overrides, base_config\n\n\n"
                    f"def get_config():\n    return apply_overrides(base_config(), {settings!r})\n")
    return path


def error_line(capsys, argv) -> str:
    """Runs `jaxpose argv` in process; asserts status 1 and one `jaxpose: error:` line, returns it."""
    from jaxpose import cli

    assert cli.main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("jaxpose")]
    assert len(lines) == 1 and lines[0].startswith("jaxpose: error: "), err
    return lines[0]
