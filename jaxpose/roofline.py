"""Where a train step's time goes: the top ops by time and the step's place under the device's roofline.

    python -m jaxpose.bench --config experiments/X.py --mode profile [--steps N] [--json OUT]

* FLOPs and bytes per step: XLA's cost analysis of the compiled step.
* Achieved FLOP/s and bytes/s: those over the measured step time. XLA's
  "bytes accessed" adds up every op's operands and results and does not
  model caches, so on a CPU it counts cache traffic too (an upper bound on
  memory traffic: it can exceed the measured bandwidth).
* Attainable peaks, measured on the same device in the same run (no spec
  sheet needed, so it works on any CPU or GPU): a large matrix product in the
  config's compute dtype, and a large elementwise pass over memory.
* Top ops: a `jax.profiler` trace of a few steps, op durations summed by
  name (on a GPU the kernels of the device's streams, on a CPU the XLA thunks
  of its runtime threads).
* The limit: the step's arithmetic intensity (FLOPs per byte) against the
  ridge point (peak FLOP/s over peak bytes/s) says which roof applies; far
  below both roofs, the step is bound by per-op overhead (many small ops).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import tempfile
import time
from typing import Callable

import jax
import jax.numpy as jnp

# Trace events that are wrappers, waits or markers, not the work of one op.
_NOT_OPS = ("ThunkExecutor", "ThreadpoolListener", "Await", "end: ")  # the CPU runtime's wrappers and waits


def _seconds_per_call(fn: Callable, repeats: int) -> float:
    jax.block_until_ready(fn())  # compiled and warm
    tick = time.perf_counter()
    out = None
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - tick) / repeats


def attainable_peaks(dtype: str, size: int = 2048, megabytes: int = 256) -> dict:
    """Measured peak FLOP/s (a size^3 matrix product in dtype) and bytes/s (x + 1 over `megabytes`, f32)."""
    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(lambda x: x @ x)
    flops = 2 * size**3 / _seconds_per_call(lambda: matmul(a), 5)
    x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
    add = jax.jit(lambda v: v + 1)
    bandwidth = 2 * x.nbytes / _seconds_per_call(lambda: add(x), 5)  # one read and one write
    return {"peak_flops_per_sec": flops, "peak_bytes_per_sec": bandwidth}


def _trace_events(directory: str) -> list[dict]:
    path = sorted(glob.glob(f"{directory}/**/*perfetto_trace.json.gz", recursive=True))[-1]
    with gzip.open(path) as f:
        trace = json.load(f)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def op_times(dispatch: Callable, repeats: int = 3) -> dict[str, float]:
    """Seconds per dispatch spent in each op name, from a profiler trace of `repeats` dispatches."""
    jax.block_until_ready(dispatch())
    with tempfile.TemporaryDirectory() as directory:
        jax.profiler.start_trace(directory, create_perfetto_trace=True)
        try:
            for _ in range(repeats):
                jax.block_until_ready(dispatch())
        finally:
            jax.profiler.stop_trace()
        events = _trace_events(directory)
    meta = {(e.get("pid"), e.get("tid")): e["args"]["name"] for e in events
            if e.get("ph") == "M" and e.get("name") in ("process_name", "thread_name")}
    processes = {e.get("pid"): e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    on_gpu = any(str(name).startswith("/device:GPU") for name in processes.values())
    totals: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") != "X" or any(marker in e["name"] for marker in _NOT_OPS):
            continue
        process, thread = str(processes.get(e.get("pid"), "")), str(meta.get((e.get("pid"), e.get("tid")), ""))
        if on_gpu and not process.startswith("/device:GPU"):
            continue
        if not on_gpu and not thread.startswith(("tf_XLAEigen", "tf_XLAPjRtCpuClient")):
            continue
        totals[e["name"]] += e.get("dur", 0.0) * 1e-6 / repeats
    return dict(totals)


def profile(compiled, dispatch: Callable, images_per_step: int, steps_per_dispatch: int, dtype: str,
            top: int = 10, repeats: int = 10) -> dict:
    """The roofline summary of a compiled train step (see the module docstring)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops, bytes_accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    seconds = _seconds_per_call(dispatch, repeats)
    peaks = attainable_peaks(dtype)
    ops = op_times(dispatch)
    busy = sum(ops.values())
    achieved_flops, achieved_bytes = flops / seconds, bytes_accessed / seconds
    intensity, ridge = flops / max(bytes_accessed, 1.0), peaks["peak_flops_per_sec"] / peaks["peak_bytes_per_sec"]
    fraction_flops = achieved_flops / peaks["peak_flops_per_sec"]
    fraction_bytes = achieved_bytes / peaks["peak_bytes_per_sec"]
    if fraction_bytes > 1:  # XLA counts every op's operands and results: cache traffic, not DRAM's
        limit = "per-op work in cache: XLA's byte count exceeds the measured memory bandwidth"
    elif max(fraction_flops, fraction_bytes) < 0.25:
        limit = "overhead: far below both roofs (many small ops, launch/dispatch latency)"
    else:
        limit = "compute (FLOP/s roof)" if intensity >= ridge else "memory bandwidth (bytes/s roof)"
    return {
        "images_per_sec": images_per_step * steps_per_dispatch / seconds,
        "flops_per_step": flops / steps_per_dispatch, "bytes_per_step": bytes_accessed / steps_per_dispatch,
        "achieved_flops_per_sec": achieved_flops, "achieved_bytes_per_sec": achieved_bytes,
        **peaks, "fraction_of_peak_flops": fraction_flops, "fraction_of_peak_bytes": fraction_bytes,
        "arithmetic_intensity": intensity, "ridge_point": ridge, "limit": limit,
        "traced_op_seconds_per_dispatch": busy,
        "top_ops": [{"op": name, "seconds": t, "share": t / busy if busy else 0.0}
                    for name, t in collections.Counter(ops).most_common(top)],
    }


def format_profile(result: dict) -> str:
    """The profile as the lines BENCHMARKS.md quotes."""
    lines = [
        f"step: {result['images_per_sec']:.1f} img/s; {result['flops_per_step'] / 1e9:.2f} GFLOP and "
        f"{result['bytes_per_step'] / 1e6:.1f} MB per step (XLA cost analysis)",
        f"achieved {result['achieved_flops_per_sec'] / 1e9:.1f} GFLOP/s = {100 * result['fraction_of_peak_flops']:.1f}% "
        f"of {result['peak_flops_per_sec'] / 1e9:.1f} (measured matmul peak); {result['achieved_bytes_per_sec'] / 1e9:.1f} GB/s "
        f"= {100 * result['fraction_of_peak_bytes']:.1f}% of {result['peak_bytes_per_sec'] / 1e9:.1f} (measured copy peak)",
        f"intensity {result['arithmetic_intensity']:.1f} FLOP/byte vs ridge {result['ridge_point']:.1f}: limit = {result['limit']}",
        "| op | ms per dispatch | share |", "|---|---|---|",
    ]
    lines += [f"| {op['op']} | {1e3 * op['seconds']:.2f} | {100 * op['share']:.1f}% |" for op in result["top_ops"]]
    return "\n".join(lines)
