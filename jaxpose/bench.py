"""Throughput benchmarks: the train step, the input path, the whole training loop; PyTorch references.

    python -m jaxpose.bench --config experiments/X.py --mode {step,pipeline,end_to_end} [--steps N]
                            [--torch] [--json OUT] [--config.key=value ...]

* step: the jitted train step, augmentation included, on one batch already on
  the devices (host placement: a uint8 image batch; memmap and device
  placements: a batch of canvases, cropped and augmented inside the step).
* pipeline: the input path alone, no model: the placement's feed (host:
  grain decoding and augmenting; memmap: gathering canvases and putting them
  on the devices), or for the device placement the jitted sampling and
  augmentation.
* end_to_end: the real training loop (`train.train_loop`) on the real data,
  compilation excluded (warm-up dispatches run first).

Every mode honours the config (data.pipeline, steps_per_dispatch,
parallelism, batch size, model). With --json the result is written as one
JSON object with at least `mode`, `images_per_sec`, `compile_seconds` and
`host_seconds_per_image`: CPU seconds per image spent by the thread that
prepares batches (step: none; pipeline: the whole process, i.e. all of the
input path's threads; end_to_end: the train loop's feed - for the host
placement its grain reader threads are not included, see its pipeline mode).
--torch adds the PyTorch reference of the same model, loss and batch
(`jaxpose.bench_torch`) under `torch_images_per_sec`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import platform
import re
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from input_pipeline import pipeline
from jaxpose import checkpoint, roofline, sharding, train
from jaxpose.config import load_config, override_args
from jaxpose.models import build_model

MODES = ("step", "pipeline", "end_to_end", "profile")


def random_batch(config, rng: np.random.Generator) -> dict:
    """A host batch of the config's placement with random content (step mode needs no dataset).

    host: uint8 images at the model's size; memmap/device: canvases at the
    cache's size with a face box in their middle (the crop and augmentation
    cost does not depend on the pixels).
    """
    n, size = config.batch_size, config.data.image_size
    pose = rng.uniform(-90, 90, (n, 3)).astype(np.float32)
    if config.data.pipeline == "host":
        return {"image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), "pose": pose}
    side = config.data.canvas_size or 2 * size
    box = np.tile(np.array([0.35, 0.35, 0.65, 0.65], np.float32) * side, (n, 1))
    return {
        "canvas": rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8),
        "box": box,
        "source_box": np.tile(np.array([0, 0, side, side], np.float32), (n, 1)),
        "canvas_scale": np.ones((n, 2), np.float32),
        "pose": pose,
    }


def _timed(fn, repeats: int) -> float:
    """Seconds for `repeats` calls of fn (each returns something to wait for), after they all finish."""
    start = time.perf_counter()
    out = None
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return time.perf_counter() - start


_MATMUL_MARKERS = (" convolution(", " dot(", 'custom_call_target="__cudnn$conv', 'custom_call_target="__cublas')
_RESULT_DTYPE = re.compile(r"=\s*\(?([a-z]+[0-9]*)\[")


def matmul_dtypes(hlo_text: str) -> dict[str, int]:
    """Result dtypes of the convolutions and matrix products in an HLO module's text: {"bf16": n, ...}.

    XLA:GPU lowers them to cuDNN / cuBLAS custom calls or fused dots, XLA:CPU
    keeps convolution and dot ops but computes bf16 ones in float32 (its
    compiled HLO shows f32 where the program asked for bf16).
    """
    counts: dict[str, int] = {}
    for line in hlo_text.splitlines():
        if any(marker in line for marker in _MATMUL_MARKERS):
            match = _RESULT_DTYPE.search(line)
            if match:
                counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def compiled_step(config, total_steps: int = 200):
    """(compiled, dispatch, compile_seconds): the config's jitted step compiled for one random resident batch
    (K stacked copies for K steps per dispatch); dispatch() runs it once on the carried state, returning metrics."""
    mesh = sharding.make_mesh(config.get("num_devices") or None)
    model = build_model(config.model)
    tx = train.make_optimizer(config.optimizer, 100, total_steps)
    state = train.create_state(model, train.init_variables(config, model, mesh), tx, mesh)
    k = config.steps_per_dispatch
    # The device placement's step samples from resident canvases; step-only feeds it one batch like memmap.
    placement = "host" if config.data.pipeline == "host" else "memmap"
    fn = train.jit_train_step(config, mesh, sharding.replicated(mesh), placement=placement, num_steps=k)
    batch = random_batch(config, np.random.default_rng(0))
    if k > 1:
        batch = {name: np.broadcast_to(x, (k, *x.shape)) for name, x in batch.items()}
    batch = sharding.put_batch(batch, mesh, leading_steps=k > 1)
    tick = time.perf_counter()
    compiled = fn.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - tick
    holder = {"state": state}

    def dispatch():
        holder["state"], metrics = compiled(holder["state"], batch)
        return metrics

    return compiled, dispatch, compile_seconds


def step_benchmark(config, steps: int, warmup: int = 2, cache=None) -> dict:
    """The jitted step on one resident batch: img/s, compile seconds."""
    del cache  # one random batch
    k = config.steps_per_dispatch
    compiled, dispatch, compile_seconds = compiled_step(config, 100 + steps)
    dispatches = max(1, steps // k)
    _timed(dispatch, warmup)
    seconds = _timed(dispatch, dispatches)
    return {"images_per_sec": dispatches * k * config.batch_size / seconds, "compile_seconds": compile_seconds,
            "host_seconds_per_image": 0.0, "steps": dispatches * k,
            "matmul_dtypes": matmul_dtypes(compiled.as_text())}


def profile_benchmark(config, steps: int, warmup: int = 2, cache=None) -> dict:
    """The step's top ops and its place under the measured roofline (jaxpose.roofline)."""
    del cache, warmup  # one random batch; roofline.profile warms up itself
    compiled, dispatch, compile_seconds = compiled_step(config, 100 + steps)
    result = roofline.profile(compiled, dispatch, config.batch_size, config.steps_per_dispatch,
                              config.model.dtype, repeats=max(1, steps // config.steps_per_dispatch))
    return {**result, "compile_seconds": compile_seconds, "host_seconds_per_image": 0.0}


def pipeline_benchmark(config, steps: int, warmup: int = 2, cache=None) -> dict:
    """The input path alone: img/s and the process's CPU seconds per image."""
    setup = train.Setup(config, training=True, cache=cache)
    compile_seconds = 0.0
    if setup.placement == "device":  # the jitted sampling + augmentation, no model
        feed = setup.make_feed(config)
        make_batch = train.make_batch_fn(config, setup.mesh, "device", per_device=False)
        fn = jax.jit(lambda step, resident: make_batch(step, resident)["image"])
        tick = time.perf_counter()
        compiled = fn.lower(jnp.int32(0), feed.resident).compile()
        compile_seconds = time.perf_counter() - tick
        counter = iter(range(10**9))
        get = lambda: compiled(jnp.int32(next(counter)), feed.resident)  # noqa: E731
    else:
        feed = setup.make_feed(config)
        feed.start([(s, 1) for s in range(warmup + steps)])
        get = lambda: feed.get(1)  # noqa: E731
    try:
        _timed(get, warmup)
        cpu = time.process_time()
        seconds = _timed(get, steps)
        cpu = time.process_time() - cpu
    finally:
        feed.close()
    images = steps * config.batch_size
    return {"images_per_sec": images / seconds, "compile_seconds": compile_seconds,
            "host_seconds_per_image": cpu / images, "steps": steps}


def end_to_end_benchmark(config, steps: int, warmup: int | None = None, cache=None) -> dict:
    """`train.train_loop` on the real data in a temporary workdir; compilation excluded by warm-up dispatches."""
    k = config.steps_per_dispatch
    warmup = warmup or 2 * k
    steps = max(k, steps // k * k)  # whole dispatches only: a shorter last one would compile another program
    config.log_every = config.checkpoint_every = 10**9  # flushes at the end of each run only
    setup = train.Setup(config, training=True, cache=cache)
    feed = setup.make_feed(config)
    with tempfile.TemporaryDirectory() as workdir:
        mngr = checkpoint.manager(workdir)
        mngr.save = lambda *args, **kwargs: None  # the loop's final save is not what is measured
        try:
            setup.total_steps = warmup
            tick = time.perf_counter()
            step_fns = {}
            state = train.train_loop(config, setup, setup.state, feed, mngr, pathlib.Path(workdir), step_fns)
            warmup_seconds = time.perf_counter() - tick
            setup.total_steps = warmup + steps
            host, main_thread = feed.host_seconds, time.thread_time()
            tick = time.perf_counter()
            with _waits_excluded() as waited:
                train.train_loop(config, setup, state, feed, mngr, pathlib.Path(workdir), step_fns)
            seconds = time.perf_counter() - tick
            # The loop's own thread (dispatch, logging) plus the feed's producing thread, if it has one.
            main_thread = time.thread_time() - main_thread - waited[0]
            host = feed.host_seconds - host + (0.0 if isinstance(feed, pipeline.HostFeed) else main_thread)
        finally:
            feed.close()
            mngr.close()
    images = steps * config.batch_size
    return {"images_per_sec": images / seconds, "compile_seconds": max(0.0, warmup_seconds - seconds * warmup / steps),
            "host_seconds_per_image": host / images, "loop_thread_seconds_per_image": main_thread / images,
            "steps": steps}


@contextlib.contextmanager
def _waits_excluded():
    """Yields [seconds]: the loop thread's CPU time inside train._flush, which waits for the queued steps.

    On XLA:CPU that wait costs the waiting thread CPU time in proportion to the
    compute it waits for (about 80 us per ResNet-10 image, measured), which is
    the device's work, not the host's; the dispatches and the rest of the loop
    stay counted. The loop looks `_flush` up at each call, so wrapping it here
    times exactly the waits.
    """
    waited, flush = [0.0], train._flush

    def timed(*args, **kwargs):
        start = time.thread_time()
        try:
            return flush(*args, **kwargs)
        finally:
            waited[0] += time.thread_time() - start

    train._flush = timed
    try:
        yield waited
    finally:
        train._flush = flush


# --- the GPU suite -------------------------------------------------------------------------------

def random_cache(config, num_records: int, seed: int = 0):
    """Random canvases laid out like a cache of config.data (the cost of a step does not depend on pixels):
    end-to-end throughput without a dataset, e.g. on a GPU machine with no internet."""
    from input_pipeline import canvases

    rng = np.random.default_rng(seed)
    side = config.data.canvas_size or canvases.default_canvas_size(config.data.image_size)
    batch = random_batch(_with(config, {"data.pipeline": "memmap", "batch_size": num_records}), rng)
    jitter = rng.uniform(-0.05, 0.05, (num_records, 4)).astype(np.float32) * side
    return canvases.Canvases(
        images=batch["canvas"], box=batch["box"] + jitter, source_box=batch["source_box"],
        canvas_scale=batch["canvas_scale"], pose=batch["pose"],
        identity=(np.arange(num_records) // 4).astype(np.int32), record_index=np.arange(num_records),
        identities=[str(i) for i in range(-(-num_records // 4))], meta={"random": True})


def _with(config, overrides: dict):
    from jaxpose.config import apply_overrides

    return apply_overrides(config.copy_and_resolve_references(), overrides)


# (family, batch sizes): what the issue asks to compare; each row: (mode, placement, parallelism, K).
SUITE_FAMILIES = {
    "fsanet": ("experiments/fsanet_caps_1x1.py", (16, 256, 1024)),
    "resnet50": ("experiments/hopenet_300wlp.py", (128, 256)),
}
SUITE_ROWS = (
    ("step", "memmap", "gspmd", 1),
    ("step", "memmap", "gspmd", 8),
    ("step", "memmap", "per_device", 1),
    ("end_to_end", "device", "gspmd", 8),
)
# Rows for one family only, with their overrides: FSA-Net's depthwise formulation, measured on the backend
# ("auto" picks "conv" off the CPU; models.fsanet.resolve_depthwise), at one batch size (not in smoke).
FAMILY_ROWS = {"fsanet": ((("step", "memmap", "gspmd", 1), {"model.kwargs.depthwise": "shifts"}, 1024),)}
SMOKE_OVERRIDES = {  # small enough for a CPU in about a minute; same code paths
    "fsanet": {"data.image_size": 32, "model.dtype": "float32"},
    "resnet50": {"data.image_size": 32, "model.name": "resnet10", "model.kwargs": {"width": 8}, "model.dtype": "float32"},
}


def suite_configs(smoke: bool):
    """(family, batch, row, config) of every suite measurement, in order."""
    root = pathlib.Path(__file__).resolve().parents[1]
    for family, (path, batches) in SUITE_FAMILIES.items():
        base = load_config(root / path)
        # Throughput does not depend on the initial weights: no ImageNet checkpoint needed (config.require_init).
        base = _with(base, {"model.dtype": "bfloat16", "data.num_workers": 0, "init_from": base.init_from or "none"})
        rows = [(row, {}, None) for row in SUITE_ROWS] + list(FAMILY_ROWS.get(family, ()))
        for batch in (8,) if smoke else batches:
            for (mode, placement, parallelism, k), extra, only_at in rows:
                if only_at is not None and (smoke or batch != only_at):  # smoke: the shared code paths only
                    continue
                if smoke and mode == "step" and k > 1:  # the end_to_end row runs several steps per dispatch
                    continue
                overrides = {"batch_size": batch, "data.pipeline": placement, "parallelism": parallelism,
                             "steps_per_dispatch": 2 if smoke and k > 1 else k, **extra}
                if smoke:
                    overrides.update(SMOKE_OVERRIDES[family])
                yield family, batch, (mode, placement, parallelism, k), extra, _with(base, overrides)


def gpu_suite(smoke: bool = False, steps: int | None = None, out: str | None = None, with_torch: bool = True) -> list[dict]:
    """Every row of the BENCHMARKS.md GPU table: both families, jaxpose (gspmd / per_device, several K,
    step-only and end-to-end on random canvases) and the PyTorch reference, printed as they finish."""
    steps = steps or (4 if smoke else 64)
    if smoke:  # checks the code paths, not speed: XLA:CPU's optimisation passes cost most of the time
        jax.config.update("jax_disable_most_optimizations", True)
    results, torch_done = [], set()
    print(json.dumps(environment()))
    print("| family | batch | mode | placement | parallelism | K | jaxpose img/s | compile s | PyTorch img/s | ratio "
          "| compiled conv/dot dtypes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for family, batch, (mode, placement, parallelism, k), extra, config in suite_configs(smoke):
        cache = random_cache(config, max(4 * batch, 512 if not smoke else 64)) if mode == "end_to_end" else None
        mode_cell = " ".join([mode, *(f"{key.split('.')[-1]}={value}" for key, value in extra.items())])
        row = {"family": family, "batch": batch, "mode": mode_cell, "placement": placement, "parallelism": parallelism,
               "steps_per_dispatch": config.steps_per_dispatch,
               **BENCHMARKS[mode](config, max(steps, 2 * config.steps_per_dispatch), cache=cache)}
        if with_torch and (family, batch) not in torch_done:
            torch_done.add((family, batch))
            from jaxpose import bench_torch

            host = _with(config, {"data.pipeline": "host"})
            row["torch_images_per_sec"] = bench_torch.torch_images_per_sec(host, random_batch(host, np.random.default_rng(0)), steps)
        results.append(row)
        torch_rate = row.get("torch_images_per_sec")
        torch_cells = f"{torch_rate:,.0f} | {row['images_per_sec'] / torch_rate:.2f}x" if torch_rate else " | "
        print(f"| {family} | {batch} | {mode_cell} | {placement} | {parallelism} | {row['steps_per_dispatch']} | "
              f"{row['images_per_sec']:,.0f} | {row['compile_seconds']:.1f} | {torch_cells} | "
              f"{' '.join(f'{k}:{v}' for k, v in sorted(row.get('matmul_dtypes', {}).items()))} |", flush=True)
        if out:
            pathlib.Path(out).write_text(json.dumps({"environment": environment(), "rows": results}, indent=2) + "\n")
    return results


BENCHMARKS = {"step": step_benchmark, "pipeline": pipeline_benchmark, "end_to_end": end_to_end_benchmark,
              "profile": profile_benchmark}


def jax_images_per_sec(config, steps: int) -> float:
    """Train-step img/s of a config (step mode)."""
    return step_benchmark(config, steps)["images_per_sec"]


def environment() -> dict:
    """Device, versions and host: what a benchmark table must name."""
    import flax

    return {"device": f"{jax.device_count()} x {jax.devices()[0].device_kind}", "backend": jax.default_backend(),
            "jax": jax.__version__, "flax": flax.__version__, "python": platform.python_version(),
            "host_cpus": __import__("os").cpu_count()}


def run(config, mode: str, steps: int, with_torch: bool = False) -> dict:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    result = {"mode": mode, "pipeline": config.data.pipeline, "parallelism": config.parallelism,
              "steps_per_dispatch": config.steps_per_dispatch, "batch_size": config.batch_size,
              "model": config.model.name, "image_size": config.data.image_size, **environment(),
              **BENCHMARKS[mode](config, steps)}
    if with_torch:
        from jaxpose import bench_torch

        batch = random_batch(config.copy_and_resolve_references(), np.random.default_rng(0))
        if "image" not in batch:  # the reference trains on model-size images, as the host placement
            host = config.copy_and_resolve_references()
            host.data.pipeline = "host"
            batch = random_batch(host, np.random.default_rng(0))
        result["torch_images_per_sec"] = bench_torch.torch_images_per_sec(config, batch, steps)
        result["torch"] = __import__("torch").__version__
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="experiment file (every mode but --suite)")
    p.add_argument("--suite", choices=("gpu",), help="run the GPU table of BENCHMARKS.md (both families) instead")
    p.add_argument("--smoke", action="store_true", help="with --suite: tiny sizes that run on a CPU in about a minute")
    p.add_argument("--mode", default="step", choices=MODES)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--torch", action="store_true", help="also time the PyTorch reference step")
    p.add_argument("--json", help="write the result as JSON to this file")
    args, extra = p.parse_known_args(argv)
    if args.suite:
        gpu_suite(smoke=args.smoke, out=args.json, with_torch=not args.smoke or args.torch)
        return
    if not args.config:
        p.error("--config is required (or --suite gpu)")
    config = load_config(args.config, override_args(extra))
    config.init_from = config.init_from or "none"  # throughput does not depend on the initial weights
    result = run(config, args.mode, args.steps, with_torch=args.torch)
    print(f"{args.mode} ({config.data.pipeline}, {config.parallelism}, K={config.steps_per_dispatch}) "
          f"jaxpose {result['jax']} on {result['device']}: {result['images_per_sec']:.1f} img/s, "
          f"compile {result['compile_seconds']:.1f} s, host {1e6 * result['host_seconds_per_image']:.1f} us/img")
    if args.mode == "profile":
        print(roofline.format_profile(result))
    if "torch_images_per_sec" in result:
        print(f"torch {result['torch']}: {result['torch_images_per_sec']:.1f} img/s; "
              f"ratio jaxpose / torch: {result['images_per_sec'] / result['torch_images_per_sec']:.2f}x")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
