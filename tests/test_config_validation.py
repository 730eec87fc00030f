"""Bad configuration is one line naming the key and its valid values, exit status 1, before any compile;
a seeded fuzz over every numeric key gets a clean error or a run that starts (everything a run does up
to its first compile: Setup with the data, a real augmented batch, the whole train step traced)."""

import math
import pathlib

import jax
import numpy as np
import pytest
from conftest import tiny_config, write_tiny_experiment

from jaxpose import cli, train
from jaxpose import config as config_lib
from jaxpose.config import apply_overrides, load_config, load_sweep, rule_for, validate

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


class Compiling(BaseException):
    """Raised where training would compile first: a BaseException, which the CLI's handler lets through."""


@pytest.fixture
def experiment(tmp_path, tiny_data_dir) -> pathlib.Path:
    return write_tiny_experiment(tmp_path / "tiny.py", tiny_data_dir)


@pytest.fixture
def compiles(monkeypatch):
    """XLA compilations seen while the test runs; reaching train's first compile raises Compiling."""
    seen = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            seen.append(duration)

    def first_compile(*args, **kwargs):
        raise Compiling

    jax.monitoring.register_event_duration_secs_listener(listener)
    monkeypatch.setattr(train, "init_variables", first_compile)
    yield seen
    jax.monitoring.unregister_event_duration_listener(listener)


def error_line(capsys, argv) -> str:
    """`jaxpose argv` in process: status 1 and exactly one line on stderr, returned."""
    assert cli.main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxpose: error: ") and err.count("\n") == 1, err
    return err.strip()[len("jaxpose: error: "):]


BAD = [
    ({"batch_size": "0"}, "config key 'batch_size' is 0; valid: an integer >= 1"),
    ({"batch_size": "-8"}, "config key 'batch_size' is -8; valid: an integer >= 1"),
    ({"batch_size": "2.5"}, "config key 'batch_size' is 2.5; valid: an integer >= 1"),
    ({"batch_size": "64"}, "config key 'batch_size' is 64; valid: at most 48 (the training records of "
                           "synthetic_heads/tiny:train)"),
    ({"data.image_size": "4"}, "config key 'data.image_size' is 4; valid: an integer in [8, 1024]"),
    ({"model.name": "fsanet", "data.image_size": "60"},
     "config key 'data.image_size' is 60; valid: a multiple of 8 in [8, 1024] for model fsanet"),
    ({"model.name": "ssrnet_md", "data.image_size": "40"},
     "config key 'data.image_size' is 40; valid: a multiple of 16 in [8, 1024] for model ssrnet_md"),
    ({"model.name": "fsanet", "model.kwargs.scoring": "none", "model.kwargs.num_primcaps": "192"},
     "config key 'data.image_size' is 32; valid: 64 (fsanet with scoring 'none' and num_primcaps 192)"),
    ({"data.train_split": "tran"}, "config key 'data.train_split' is 'tran'; valid: "),
    ({"data.eval_split": "validation"}, "config key 'data.eval_split' is 'validation'; valid: "),
    ({"eval_on": "(('synthetic_heads/tiny', 'val'),)"},
     "config key 'eval_on' is ('synthetic_heads/tiny', 'val'); valid: "),
    ({"steps_per_dispatch": "5"},
     "config key 'steps_per_dispatch' is 5; valid: an integer in [1, 4] (the run's steps)"),
    ({"num_train_steps": "0", "num_epochs": "0.1"}, "config key 'num_epochs' is 0.1; valid: a number >= 0.1667"),
    ({"optimizer.lr": "1e999"}, "config key 'optimizer.lr' is inf; valid: a finite number > 0"),
    ({"optimizer.lr": "-1e-3"}, "config key 'optimizer.lr' is -0.001; valid: a finite number > 0"),
    ({"optimizer.lr": "nan"}, "config key 'optimizer.lr' is 'nan'; valid: a finite number > 0"),
    ({"num_devices": "2"}, "config key 'num_devices' is 2; valid: 0 (all) to 1 (the devices available)"),
]


@pytest.mark.parametrize("overrides, message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_value_is_one_line_before_any_compile(capsys, experiment, tmp_path, compiles, overrides, message):
    flags = [f"--config.{key}={value}" for key, value in overrides.items()]
    line = error_line(capsys, ["train", "--config", experiment, "--workdir", tmp_path / "w", *flags])
    assert line.startswith(message), line
    assert not compiles


def test_eval_checks_the_config_too(capsys, experiment, tmp_path, compiles):
    line = error_line(capsys, ["eval", "--config", experiment, "--workdir", tmp_path, "--config.batch_size=0"])
    assert line == "config key 'batch_size' is 0; valid: an integer >= 1"
    assert not compiles


def test_batch_must_split_over_devices_and_processes(experiment, compiles, monkeypatch):
    config = load_config(experiment, {"batch_size": 6})
    with monkeypatch.context() as patch:  # Setup asks JAX; here 2 processes of 2 devices
        patch.setattr(jax, "device_count", lambda: 4)
        patch.setattr(jax, "process_count", lambda: 2)
        with pytest.raises(ValueError, match=r"^config key 'batch_size' is 6; valid: a positive multiple of 4 "
                                             r"\(2 processes x 2 devices\)$"):
            train.Setup(config, training=True)
    config = load_config(experiment)
    config.data.pairs = True
    with pytest.raises(ValueError, match=r"^config key 'batch_size' is 8; valid: a positive multiple of 16 "
                                         r"\(8 devices, x2 for RankPose pairs\)$"):
        validate(config, devices=8, processes=1)
    config.data.pairs, config.num_devices = False, 2
    with pytest.raises(ValueError, match=r"^config key 'num_devices' is 2; valid: 0 or 4 \(every device"):
        validate(config, devices=4, processes=2)
    config.num_devices = 0
    validate(config, devices=4, processes=2)
    assert not compiles


def test_every_experiment_and_sweep_is_valid_and_every_numeric_key_has_a_rule():
    for path in sorted(p for p in EXPERIMENTS.glob("*.py") if p.name != "__init__.py"):
        sweeps = load_sweep(path) if "def get_sweep" in path.read_text() else [{}]
        for overrides in sweeps:
            config = apply_overrides(load_config(path), overrides)
            validate(config, devices=1, processes=1)
            missing = [key for key in _numeric_keys(config) if rule_for(key) is None]
            assert not missing, f"{path.name}: numeric keys without a rule in jaxpose.config.RULES: {missing}"


# --- fuzz ------------------------------------------------------------------------------------------------

INTS = [-7, -1, 0, 1, 2, 3, 4, 8, 9, 16, 48, 64, 1000, 2**33]
FLOATS = [math.nan, math.inf, -math.inf, -1.5, 0.0, 1e-6, 0.05, 0.3, 0.5, 1.0, 2.0, 99.0, 1e6]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric_keys(config) -> dict:
    """Keys holding a number or a tuple of numbers (an empty tuple where its rule is a tuple's)."""
    return {key: value for key, value in config_lib.flat_items(config).items()
            if _is_number(value) or (isinstance(value, (tuple, list)) and all(map(_is_number, value))
                                     and (value or isinstance(rule_for(key), config_lib.Each)))}


def _random_value(rng, default):
    """A value of the default's kind, sometimes of another (a float for an integer, a wrong tuple length)."""
    if isinstance(default, (tuple, list)):
        kind = default[0] if default else 1
        length = rng.choice([1, 2, 2, 2, 3])
        return tuple(_random_value(rng, kind) for _ in range(length))
    if isinstance(default, int) and rng.random() < 0.85:
        return int(rng.choice(INTS))
    return float(rng.choice(FLOATS))


def _cases(config, count: int, seed: int = 0) -> list[dict]:
    """`count` override sets: every numeric key once (in random order), then random keys; a third of the
    sets change a second key too."""
    rng = np.random.default_rng(seed)
    keys = _numeric_keys(config)
    order = [str(k) for k in rng.permutation(sorted(keys))]
    order += [str(k) for k in rng.choice(sorted(keys), count - len(order))]
    cases = []
    for key in order[:count]:
        chosen = [key] + ([str(rng.choice(sorted(keys)))] if rng.random() < 0.33 else [])
        cases.append({k: _random_value(rng, keys[k]) for k in chosen})
    return cases


def _abstract_state(monkeypatch):
    """Setup without its two compiles: the initial variables and state as shapes (jax.eval_shape)."""
    def init_variables(config, model, mesh):
        return jax.eval_shape(train._init_fn(config, model), jax.ShapeDtypeStruct((2,), np.uint32))

    def create_state(model, variables, tx, mesh):
        return jax.eval_shape(lambda v: train.TrainState.create(
            apply_fn=model.apply, params=v["params"], tx=tx, batch_stats=v["batch_stats"]), variables)

    monkeypatch.setattr(train, "init_variables", init_variables)
    monkeypatch.setattr(train, "create_state", create_state)


# Keys that reach the traced train step (the others reach Setup and the host batch only).
STEP_KEYS = ("batch_size", "data.image_size", "model.", "losses.", "optimizer.")


def _starts(config, keys) -> None:
    """A cheap start: Setup (every check, the data, the optimizer), one real host batch of the config's
    augmentation and, where `keys` reach it, the whole train step traced on that batch (model, losses,
    gradients, optimizer update): a run's work up to its first compile."""
    setup = train.Setup(config, training=True)
    config.data.num_workers = 0  # worker pools are tested in test_pipeline; starting dozens here takes minutes
    feed = setup.make_feed(config)
    feed.start([(0, 1)])
    try:
        batch = feed.get(1)
    finally:
        feed.close()
    assert batch["image"].shape == (config.batch_size, config.data.image_size, config.data.image_size, 3)
    if any(key.startswith(STEP_KEYS) for key in keys):
        step = train.jit_train_step(config, setup.mesh, setup.replicated, placement=setup.placement)
        _, metrics = jax.eval_shape(step, setup.state, batch)
        assert metrics["loss"].shape == ()


def test_fuzz_numeric_keys_give_a_clean_error_or_a_start(tiny_data_dir, monkeypatch):
    base = tiny_config(tiny_data_dir, num_train_steps=4)
    cases = _cases(base, 50)
    assert set(_numeric_keys(base)) <= {k for case in cases for k in case}  # every numeric key is fuzzed
    started, errors = [], []
    with monkeypatch.context() as patch:
        _abstract_state(patch)
        for overrides in cases:
            try:
                config = apply_overrides(tiny_config(tiny_data_dir, num_train_steps=4), overrides)
                _starts(config, overrides)
                started.append(overrides)
            except ValueError as e:
                message = str(e)
                assert "\n" not in message and "valid" in message, (overrides, message)
                assert any(key in message for key in overrides), (overrides, message)
                errors.append(message)
    print(f"{len(cases)} cases: {len(errors)} clean errors, {len(started)} starts")
    assert len(started) >= 10 and len(errors) >= 10  # the fuzz reaches both sides
