"""Run monitoring: TensorBoard event files beside metrics.jsonl, an XLA profile of a few steps, curves as PNG.

* `Monitor` (used by `train.train_loop`): every train step's metrics as
  scalars `train/<name>` (loss, loss_<term>, mae, grad_norm, param_norm,
  learning_rate) and `train/images_per_sec` at each logged step, in event
  files in the workdir; `Profiler` traces `config.profile_steps` steps.
* `write_eval` (used by `train.evaluate`): the MAE table as scalars
  `eval/<dataset>_<split>/<yaw|pitch|roll|mean|...>` at the checkpoint's step
  and as a text summary.
* `plot_curves` (`jaxpose plot --workdir W`): W/metrics.jsonl as W/curves.png,
  for people without TensorBoard.

The writer is tensorboardX, which needs only numpy and protobuf. clu's
writers need TensorFlow: `clu.metric_writers` imports its TF summary writer
(`import tensorflow`) at import time, and its other TensorBoard writer is
PyTorch's `torch.utils.tensorboard`, which needs torch and tensorboard.
Only process 0 writes (every process holds the same replicated metrics).
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
from typing import Any, Callable

import jax
import numpy as np

from jaxpose import metrics, sharding

FLUSH_SECS = 30  # how stale TensorBoard may be while a run is going
_WRITER_IDS = itertools.count()


def is_writer_process() -> bool:
    """The one process that writes event files and profiles: the one writing the run's other files."""
    return sharding.is_primary()


def summary_writer(logdir: str | pathlib.Path, **kwargs: Any):
    """A tensorboardX SummaryWriter of logdir with a file name of its own.

    tensorboardX names event files by the second and the host and opens them
    with "wb": two writers of one directory in the same second (evaluation
    right after a short run, a quick resume) would truncate each other's file.
    """
    from tensorboardX import SummaryWriter  # here: `jaxpose plot` and `--help` need not import it

    suffix = f".{os.getpid()}.{next(_WRITER_IDS)}"
    return SummaryWriter(logdir=str(logdir), filename_suffix=suffix, flush_secs=FLUSH_SECS, **kwargs)


# --- training -----------------------------------------------------------------------


class Profiler:
    """An XLA trace (jax.profiler) of the first `num_steps` steps after this run's first dispatch.

    The first dispatch is left out because it compiles and warms up. The trace
    covers whole dispatches (a dispatch of several steps is one program), so it
    may hold more than num_steps steps. It is written to
    <workdir>/plugins/profile/<time>/, where TensorBoard's profile plugin finds
    it under `tensorboard --logdir <workdir>` (or a parent folder): the plugin
    reads plugins/profile of a directory holding event files or of the logdir.
    """

    def __init__(self, workdir: str | pathlib.Path, num_steps: int):
        if num_steps < 0:
            raise ValueError(f"config key 'profile_steps' is {num_steps}; it must be >= 0 (0: no profile)")
        self.workdir = pathlib.Path(workdir)
        self.num_steps = num_steps if is_writer_process() else 0
        self.started_at: int | None = None
        self.last_step: int | None = None
        self.done = self.num_steps == 0

    def after_dispatch(self, step: int, state: Any) -> None:
        """Called after each dispatch that ends at `step` with its (not yet computed) output state."""
        if self.done:
            return
        self.last_step = step
        if self.started_at is None:
            jax.block_until_ready(state)  # the first dispatch's device work stays out of the trace
            jax.profiler.start_trace(self.workdir)
            self.started_at = step
        elif step - self.started_at >= self.num_steps:
            jax.block_until_ready(state)  # the traced steps' device work inside the trace
            self._stop()

    def close(self) -> None:
        """Ends a trace that the run ended (or failed) inside; says when there was nothing to trace.

        No wait for the device here: after a normal end the loop's final
        checkpoint has already fetched the state; after a failure the state
        may be donated or unfinished, and the trace is written as it is.
        """
        if self.done:
            return
        if self.started_at is None or self.last_step == self.started_at:
            if self.started_at is not None:
                jax.profiler.stop_trace()
            self.done = True
            print("profile_steps: the run had no dispatch after its first (compiling) one; no train step profiled")
            return
        self._stop()

    def _stop(self) -> None:
        jax.profiler.stop_trace()
        self.done = True
        print(f"XLA profile of steps {self.started_at + 1}-{self.last_step}: {self.workdir / 'plugins' / 'profile'} "
              f"(`tensorboard --logdir {self.workdir}`, Profile tab)")


class Monitor:
    """The train loop's TensorBoard scalars and its profile; a context manager.

    start_step: the step the run starts (or resumes) at.
    """

    def __init__(self, workdir: str | pathlib.Path, *, start_step: int, profile_steps: int = 0):
        self.profiler = Profiler(workdir, profile_steps)
        # purge_step: TensorBoard hides what earlier event files hold from this step on. A resumed run redoes
        # the steps logged after the checkpoint it resumes from (train._rewind_metrics drops them from
        # metrics.jsonl); without this both versions of those steps would show.
        self.writer = summary_writer(workdir, purge_step=start_step + 1) if is_writer_process() else None

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self.profiler.close()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def after_dispatch(self, step: int, state: Any) -> None:
        self.profiler.after_dispatch(step, state)

    def write_steps(self, per_step: list[tuple[int, dict]], images_per_sec: float) -> None:
        """Every step's values as train/<name>; images/s, measured over the whole flush, at its last step."""
        if self.writer is None:
            return
        for step, values in per_step:
            for name, value in values.items():
                self.writer.add_scalar(f"train/{name}", float(value), step)
        self.writer.add_scalar("train/images_per_sec", float(images_per_sec), per_step[-1][0])


# --- evaluation ---------------------------------------------------------------------


def eval_tag(name: str, key: str) -> str:
    """("aflw2000:test", "yaw") -> "eval/aflw2000_test/yaw"; a "/" in a dataset name becomes "-" as in ced_* files."""
    dataset, _, split = name.rpartition(":")
    return f"eval/{dataset.replace('/', '-')}_{split}/{key}"


def write_eval(logdir: str | pathlib.Path, results: dict[str, dict], step: int) -> None:
    """An evaluation's table ({"<dataset>:<split>": row} of train.evaluate) at `step`: every number of a row
    but num_images (yaw, pitch, roll, mean; AFW's acc_15, acc_30) as a scalar, and the table as text."""
    if not is_writer_process():
        return
    writer = summary_writer(logdir)
    try:
        for name, row in results.items():
            for key, value in row.items():
                if key != "num_images":
                    writer.add_scalar(eval_tag(name, key), float(value), step)
        table = metrics.format_mae_table(results)
        # Indented: a Markdown code block, so that TensorBoard's text tab keeps the columns aligned.
        writer.add_text("eval/table", "\n".join("    " + line for line in table.splitlines()), step)
    finally:
        writer.close()


def checkpoint_step(workdir: str | pathlib.Path) -> int:
    """The step of workdir's latest checkpoint (the model `jaxpose eval` restores); 0 for none."""
    from jaxpose import checkpoint  # orbax: not needed by `jaxpose plot`

    mngr = checkpoint.manager(workdir)
    try:
        return int(mngr.latest_step() or 0)
    finally:
        mngr.close()


# --- curves without TensorBoard -----------------------------------------------------

PANELS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("loss per term", lambda key: key == "loss" or key.startswith("loss_")),
    ("train MAE (degrees)", lambda key: key == "mae"),
    ("learning rate", lambda key: key == "learning_rate"),
    ("gradient and parameter norms", lambda key: key in ("grad_norm", "param_norm")),
    ("images / s", lambda key: key == "images_per_sec"),
)


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
    """The records of workdir/metrics.jsonl; a last line still being written is left out."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (`jaxpose train --workdir {workdir}` writes it)")
    records = [json.loads(line) for line in path.read_text().splitlines(keepends=True)
               if line.endswith("\n") and line.strip()]
    if not records:
        raise ValueError(f"{path} holds no record yet")
    return records


def curve_panels(records: list[dict]) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{panel title: {metric: (steps, values)}} for PANELS; a metric no record holds is left out."""
    keys = sorted({key for record in records for key in record} - {"step"})
    panels = {}
    for title, wanted in PANELS:
        panels[title] = {}
        for key in filter(wanted, keys):
            rows = np.array([(r["step"], r[key]) for r in records if key in r], np.float64)
            panels[title][key] = (rows[:, 0], rows[:, 1])
    return panels


def plot_curves(workdir: str | pathlib.Path, output: str | pathlib.Path | None = None) -> pathlib.Path:
    """workdir/metrics.jsonl as training curves (PANELS, and eval.json's table if any) in a PNG file.

    output: default workdir/curves.png; returns the written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the Agg canvas: no display, no pyplot state
    from matplotlib.figure import Figure

    workdir = pathlib.Path(workdir)
    panels = curve_panels(read_metrics(workdir))
    fig = Figure(figsize=(15, 8), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    for ax, (title, series) in zip(axes, panels.items()):
        _draw_panel(ax, title, series)
    _draw_eval_table(axes[len(panels)], workdir / "eval.json")
    fig.suptitle(str(workdir))
    fig.tight_layout()
    path = pathlib.Path(output) if output else workdir / "curves.png"
    fig.savefig(path, format="png")
    return path


def _draw_panel(ax, title: str, series: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    if not series:
        ax.text(0.5, 0.5, "not in metrics.jsonl", ha="center", va="center", transform=ax.transAxes)
        return
    for key, (steps, values) in series.items():
        ax.plot(steps, values, label=key, marker="o" if len(steps) < 30 else None, markersize=3)
    values = np.concatenate([v for _, v in series.values()])
    values = values[np.isfinite(values)]
    if values.size and values.min() > 0 and values.max() > 100 * values.min():
        ax.set_yscale("log")  # loss terms of different sizes, parameter vs gradient norms: decades apart
    else:
        ax.ticklabel_format(axis="y", useOffset=False)  # a constant learning rate reads 0.001, not 1e-11 + 1e-3
    ax.xaxis.get_major_locator().set_params(integer=True)
    if len(series) > 1:
        ax.legend(fontsize=8)


def _draw_eval_table(ax, path: pathlib.Path) -> None:
    ax.axis("off")
    if path.is_file():
        ax.set_title("eval.json (MAE, degrees)")
        table = metrics.format_mae_table(json.loads(path.read_text()))
        ax.text(0.0, 1.0, table, family="monospace", fontsize=8, va="top", transform=ax.transAxes)
