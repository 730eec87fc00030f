"""`jaxpose` command line: parses arguments and calls library functions.

    jaxpose train   --config experiments/X.py --workdir W [--config.key=value ...]
                    [--coordinator_address HOST:PORT --num_processes N --process_id I]  (also eval, sweep)
    jaxpose eval    --config experiments/X.py --workdir W [--config.key=value ...]
                    [--ensemble W2 ...] [--downsample_factors F ...]
    jaxpose sweep   --config experiments/X.py --workdir W [--config.key=value ...]
    jaxpose data build NAME [--source DIR] [--data_dir D] [--detections CSV] [--split_list SPLIT=FILE ...] [--overwrite]
    jaxpose data cache NAME --image_size S [--canvas_size C] [--split train] [--data_dir D] [--overwrite]
    jaxpose convert {fsanet-keras,torchvision-resnet,hopenet} SRC --workdir W
    jaxpose predict --config experiments/X.py --workdir W [INPUT ...] [--camera N] [--output F.csv|F.jsonl]
                    [--draw DIR [--cube]] [--detector mtcnn|pkg.mod:fn | --boxes CSV | --crops]
                    [--smooth A] [--max_frames N] [--ensemble W2 ...]
    jaxpose export  --config experiments/X.py --workdir W --format {onnx,stablehlo} OUT [--config.key=value ...]
    jaxpose plot    --workdir W [--output PNG]

Expected failures (a missing file, an unknown key or name, a non-finite
loss) print one line `jaxpose: error: ...` and exit with status 1; set
JAXPOSE_DEBUG=1 for the full traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any, Callable

from jaxpose.config import override_args

COMMANDS: dict[str, Callable[[argparse.Namespace, dict[str, str]], Any]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn

    return register


def _join(args) -> None:
    """Joins a multi-process job: the --coordinator_address/--num_processes/--process_id flags, else one
    detected (TPU pod, SLURM, ...); a no-op on one machine. Before any JAX computation."""
    from jaxpose.sharding import initialize_distributed

    initialize_distributed(*(getattr(args, name, None) for name in DISTRIBUTED_FLAGS))


def _config(args, overrides):
    from jaxpose.config import load_config

    _join(args)
    return load_config(args.config, overrides)


@command("train")
def _train(args, overrides):
    from jaxpose.train import train_and_evaluate

    train_and_evaluate(_config(args, overrides), args.workdir)


@command("eval")
def _eval(args, overrides):
    from jaxpose.train import evaluate, evaluate_downsampled

    if not pathlib.Path(args.workdir).is_dir():
        raise FileNotFoundError(f"workdir not found: {args.workdir}")
    ensemble = tuple(args.ensemble or ())
    if args.downsample_factors:
        evaluate_downsampled(_config(args, overrides), args.workdir, args.downsample_factors, ensemble=ensemble)
    else:
        evaluate(_config(args, overrides), args.workdir, ensemble=ensemble)


@command("sweep")
def _sweep(args, overrides):
    from jaxpose.config import apply_overrides, load_sweep
    from jaxpose.train import train_and_evaluate

    _join(args)  # first: bad distributed flags fail before anything is read
    for i, sweep_overrides in enumerate(load_sweep(args.config)):
        name = "_".join(f"{k.split('.')[-1]}={v}" for k, v in sweep_overrides.items()) or f"run{i}"
        print(f"sweep run {i}: {name}")
        config = apply_overrides(_config(args, overrides), sweep_overrides)
        train_and_evaluate(config, pathlib.Path(args.workdir) / name)


@command("data")
def _data(args, overrides):
    if overrides:
        raise ValueError(f"unrecognized arguments: {' '.join(overrides)}")
    if args.action == "cache":
        from input_pipeline.canvases import build_cache

        build_cache(args.name, args.data_dir, args.split, args.image_size, args.canvas_size, overwrite=args.overwrite)
        return
    from input_pipeline.datasets.build import build_dataset

    extra = {"detections": args.detections} if args.detections else {}
    if args.split_list:
        extra["split_lists"] = _split_lists(args.split_list)
    build_dataset(args.name, args.source, args.data_dir, overwrite=args.overwrite, **extra)


def _split_lists(values: list[str]) -> dict[str, str]:
    """--split_list train=A --split_list test=B -> {"train": A, "test": B}."""
    lists = {}
    for value in values:
        split, _, path = value.partition("=")
        if not split or not path or split in lists:
            raise ValueError(f"--split_list {value}: expected SPLIT=FILE, each split once (e.g. test=BIWI_test.txt)")
        lists[split] = path
    return lists


@command("convert")
def _convert(args, overrides):
    from jaxpose.pretrained import convert

    if overrides:
        raise ValueError(f"unrecognized arguments: {' '.join(overrides)}")
    directory = convert(args.kind, args.src, args.workdir)
    record = json.loads((pathlib.Path(args.workdir) / "converted.json").read_text())
    print(f"checkpoint: {directory}")
    print(f"config overrides: {' '.join(record['overrides'])}")


@command("predict")
def _predict(args, overrides):
    from jaxpose.inference import run

    config = _config(args, overrides)
    if not pathlib.Path(args.workdir).is_dir():
        raise FileNotFoundError(f"workdir not found: {args.workdir}")
    options = run.Options(
        detector=args.detector, min_face_size=args.min_face_size, crops=args.crops, boxes=args.boxes,
        camera=args.camera, output=args.output, draw=args.draw, cube=args.cube, smooth=args.smooth,
        max_frames=args.max_frames, progress=not args.no_progress)
    summary = run.predict(config, args.workdir, args.inputs, options, ensemble=args.ensemble or ())
    print(summary.line())
    if args.output:
        print(f"wrote {summary.rows} rows to {args.output}")


@command("export")
def _export(args, overrides):
    from jaxpose.export import contract_path, export

    record = export(_config(args, overrides), args.workdir, args.format, args.out)
    print(f"wrote {args.out} ({record['file_bytes']:,} bytes, checkpoint step {record['checkpoint']['step']}) "
          f"and its input contract {contract_path(args.out)}")


@command("plot")
def _plot(args, overrides):
    from jaxpose.monitor import plot_curves

    if overrides:
        raise ValueError(f"unrecognized arguments: {' '.join(overrides)}")
    print(f"wrote {plot_curves(args.workdir, args.output)}")


def parser() -> argparse.ArgumentParser:
    from jaxpose.config import DEFAULT_DATA_DIR

    p = argparse.ArgumentParser(prog="jaxpose", description="Head pose estimation in JAX/Flax.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_text in [("train", "train (resuming from workdir), then evaluate"),
                            ("eval", "evaluate the latest checkpoint of workdir"),
                            ("sweep", "run every override set of the config's get_sweep()")]:
        s = sub.add_parser(name, help=help_text)
        s.add_argument("--config", required=True, help="experiment file, e.g. experiments/synthetic_hopenet.py")
        s.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, config.json, eval.json")
        _add_distributed_options(s)
        if name == "eval":
            _add_eval_options(s)
    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="action", required=True)
    build = data.add_parser("build", help="build a TFDS dataset (array_record) from the distributed files")
    build.add_argument("name", help="dataset name, e.g. aflw2000 or biwi/protocol2")
    build.add_argument("--source", help="folder with the dataset as distributed (not for synthetic_heads)")
    build.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help=f"where datasets are built (default {DEFAULT_DATA_DIR})")
    build.add_argument("--detections", help="BIWI only: CSV of face boxes (path, x_min, y_min, x_max, y_max[, score]; "
                       "the CSV of `jaxpose predict --output`) for FSA-Net's detector protocol instead of the geometric boxes")
    build.add_argument("--split_list", action="append", metavar="SPLIT=FILE",
                       help="BIWI only, config biwi/lists: the frames (NN/frame_NNNNN per line) of a split, train or test; "
                            "e.g. the hybrid code's tools/BIWI_train.txt and tools/BIWI_test.txt")
    build.add_argument("--overwrite", action="store_true", help="delete and rebuild an already built dataset")
    _add_data_cache(data, DEFAULT_DATA_DIR)
    _add_convert(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_plot(sub)
    return p


ENSEMBLE_HELP = ("more trained or converted workdirs: the mean pose of all the models (e.g. FSA-Caps-Fusion); "
                 "each runs with its own config.json or converted.json")


DISTRIBUTED_FLAGS = ("coordinator_address", "num_processes", "process_id")


def _add_distributed_options(s) -> None:
    # jax.distributed.initialize's settings, for launchers without cluster detection (several local processes).
    group = s.add_argument_group("several processes (all three, the same coordinator for every process; "
                                 "omit them on TPU pods, SLURM and Open MPI, which are detected)")
    group.add_argument("--coordinator_address", metavar="HOST:PORT", help="process 0's host and a free port")
    group.add_argument("--num_processes", type=int, metavar="N", help="processes in the job")
    group.add_argument("--process_id", type=int, metavar="I", help="this process, 0 to N-1")


def _add_eval_options(s) -> None:
    s.add_argument("--ensemble", nargs="+", metavar="WORKDIR", help=ENSEMBLE_HELP + "; reports go to <--workdir>/ensemble/")
    s.add_argument("--downsample_factors", nargs="+", type=int, metavar="F",
                   help="Hopenet's low-resolution study: MAE per test-time nearest-neighbour down/up-sampling "
                        "factor, written to lowres_<dataset>_<split>.{json,png} (e.g. 1 2 3 4 6 8 10 12 15)")


def _add_data_cache(data, default_data_dir) -> None:
    # Sizes are checked by input_pipeline.canvases.build_cache (one `jaxpose: error:` line, exit 1).
    cache = data.add_parser("cache", help="decode a built dataset's split once into fixed-size canvases "
                                          "(memory map) for on-device augmentation")
    cache.add_argument("name", help="dataset name, e.g. the300w_lp or synthetic_heads")
    cache.add_argument("--image_size", type=int, required=True, help="the model's input size in px (config.data.image_size)")
    cache.add_argument("--canvas_size", type=int, default=None, help="canvas side in px (default 2 x image_size)")
    cache.add_argument("--split", default="train", help="split to cache (default train)")
    cache.add_argument("--data_dir", default=default_data_dir, help=f"where datasets are built (default {default_data_dir})")
    cache.add_argument("--overwrite", action="store_true", help="rebuild an existing cache")


CONVERT_HELP = "fsanet-keras (official FSA-Net .h5), torchvision-resnet (ImageNet .pth) or hopenet (original .pkl)"


def _add_convert(sub) -> None:
    # Kinds are checked by jaxpose.pretrained.convert, so that `jaxpose --help` need not import JAX.
    convert = sub.add_parser("convert", help="published weights -> a checkpoint for eval, predict and init_from")
    convert.add_argument("kind", help=CONVERT_HELP)
    convert.add_argument("src", help="the weights file; FSA-Net files keep their official names, "
                                     "e.g. fsanet_capsule_3_16_2_21_5.h5")
    convert.add_argument("--workdir", required=True, help="new folder for the checkpoint and converted.json")


def _add_predict(sub) -> None:
    predict = sub.add_parser("predict", help="pose of the faces in photos, folders, videos or a webcam")
    predict.add_argument("--config", required=True, help="the experiment the checkpoint belongs to")
    predict.add_argument("--workdir", required=True, help="trained or converted checkpoint")
    predict.add_argument("inputs", nargs="*", metavar="INPUT", help="image or video files, or folders of them")
    predict.add_argument("--camera", type=int, metavar="N", help="also read webcam N (until Ctrl-C or --max_frames)")
    predict.add_argument("--output", help="rows path,frame,x_min,y_min,x_max,y_max,score,yaw,pitch,roll,track,error "
                                          "(degrees) to this .csv, or the same keys as JSON lines to a .jsonl")
    predict.add_argument("--draw", metavar="DIR", help="write annotated copies (same file names) with the axes drawn")
    predict.add_argument("--cube", action="store_true", help="with --draw: also a head-aligned cube")
    faces = predict.add_argument_group("where the faces are (default: found by the built-in MTCNN detector)")
    faces.add_argument("--detector", default="mtcnn", help="mtcnn, or package.module:function taking an RGB "
                                                           "image and returning boxes (N, 4) or (N, 5) with scores")
    faces.add_argument("--min_face_size", type=float, default=20.0, help="MTCNN: smallest face in pixels (default 20)")
    faces.add_argument("--boxes", help="CSV of face boxes instead: path,x_min,y_min,x_max,y_max (paths relative to it)")
    faces.add_argument("--crops", action="store_true", help="the images are face crops: each is resized whole")
    video = predict.add_argument_group("videos and cameras")
    video.add_argument("--smooth", type=float, default=0.0, metavar="A",
                       help="exponential smoothing of each tracked face's pose, in [0, 1) (default 0: none)")
    video.add_argument("--max_frames", type=int, metavar="N", help="stop each video or camera after N frames")
    predict.add_argument("--ensemble", nargs="+", metavar="WORKDIR", help=ENSEMBLE_HELP)
    predict.add_argument("--no_progress", action="store_true", help="no progress bar")


def _add_export(sub) -> None:
    # The format is checked by jaxpose.export.export: one `jaxpose: error:` line and status 1, like a bad kind.
    export = sub.add_parser("export", help="a checkpoint as ONNX or StableHLO (dynamic batch), input contract in OUT.json")
    export.add_argument("--config", required=True, help="the experiment the checkpoint belongs to")
    export.add_argument("--workdir", required=True, help="trained or converted checkpoint")
    export.add_argument("--format", required=True, help="onnx (needs pip install 'jaxpose[export]') or stablehlo (jax.export)")
    export.add_argument("out", metavar="OUT", help="the model file to write; its contract goes to OUT.json")


def _add_plot(sub) -> None:
    plot = sub.add_parser("plot", help="training curves of metrics.jsonl as a PNG (no TensorBoard needed)")
    plot.add_argument("--workdir", required=True, help="a training workdir (reads metrics.jsonl and eval.json)")
    plot.add_argument("--output", help="the PNG file (default <workdir>/curves.png)")


def main(argv: list[str] | None = None) -> int:
    args, extra = parser().parse_known_args(argv)
    try:
        COMMANDS[args.command](args, override_args(extra))
    except Exception as e:  # one line for the user; the traceback on request
        if os.environ.get("JAXPOSE_DEBUG"):
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if not isinstance(e, (ValueError, FileNotFoundError, RuntimeError)):
            message = f"{type(e).__name__}: {message}"  # unexpected: say what kind
        print(f"jaxpose: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
