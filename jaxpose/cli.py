"""`jaxpose` command line: parses arguments and calls library functions.

    jaxpose train   --config experiments/X.py --workdir W [--config.key=value ...]
    jaxpose eval    --config experiments/X.py --workdir W [--config.key=value ...]
                    [--ensemble W2 ...] [--downsample_factors F ...]
    jaxpose sweep   --config experiments/X.py --workdir W [--config.key=value ...]
    jaxpose data build NAME [--source DIR] [--data_dir D] [--detections CSV] [--overwrite]
    jaxpose data cache NAME --image_size S [--canvas_size C] [--split train] [--data_dir D] [--overwrite]
    jaxpose convert {fsanet-keras,torchvision-resnet,hopenet} SRC --workdir W
    jaxpose predict --config experiments/X.py --workdir W [--boxes CSV] [--output CSV] [IMAGE_OR_FOLDER ...]
                    [--ensemble W2 ...]

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


def _config(args, overrides):
    from jaxpose.config import load_config
    from jaxpose.sharding import initialize_distributed

    initialize_distributed()  # joins a multi-host job (TPU pod, SLURM, ...); no-op on one machine
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
    build_dataset(args.name, args.source, args.data_dir, overwrite=args.overwrite, **extra)


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
    from jaxpose import pretrained

    config = _config(args, overrides)
    if args.boxes and args.images:
        raise ValueError("give image files/folders or --boxes CSV, not both (the CSV names the images)")
    if args.boxes:
        paths, boxes = pretrained.read_boxes(args.boxes)
    elif args.images:
        paths, boxes = pretrained.image_paths(args.images), None
    else:
        raise ValueError("no images: name image files or folders (face crops), "
                         "or --boxes CSV (path,x_min,y_min,x_max,y_max)")
    if not pathlib.Path(args.workdir).is_dir():
        raise FileNotFoundError(f"workdir not found: {args.workdir}")
    if args.ensemble:
        poses = pretrained.predict_ensemble(config, [args.workdir, *args.ensemble], paths, boxes)
    else:
        poses = pretrained.predict_images(config, args.workdir, paths, boxes)
    for path, (yaw, pitch, roll) in zip(paths, poses):
        print(f"{path}  yaw {yaw:7.2f}  pitch {pitch:7.2f}  roll {roll:7.2f}")
    if args.output:
        pretrained.write_predictions(args.output, paths, boxes, poses)
        print(f"wrote {len(poses)} rows to {args.output}")


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
        if name == "eval":
            _add_eval_options(s)
    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="action", required=True)
    build = data.add_parser("build", help="build a TFDS dataset (array_record) from the distributed files")
    build.add_argument("name", help="dataset name, e.g. aflw2000 or biwi/protocol2")
    build.add_argument("--source", help="folder with the dataset as distributed (not for synthetic_heads)")
    build.add_argument("--data_dir", default=DEFAULT_DATA_DIR, help=f"where datasets are built (default {DEFAULT_DATA_DIR})")
    build.add_argument("--detections", help="BIWI only: CSV of face boxes (frame, x_min, y_min, x_max, y_max) replacing the geometric boxes")
    build.add_argument("--overwrite", action="store_true", help="delete and rebuild an already built dataset")
    _add_data_cache(data, DEFAULT_DATA_DIR)
    _add_convert(sub)
    _add_predict(sub)
    return p


ENSEMBLE_HELP = ("more trained or converted workdirs: the mean pose of all the models (e.g. FSA-Caps-Fusion); "
                 "each runs with its own config.json or converted.json")


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
    predict = sub.add_parser("predict", help="pose of the faces in one's own images (give face boxes or crops)")
    predict.add_argument("--config", required=True, help="the experiment the checkpoint belongs to")
    predict.add_argument("--workdir", required=True, help="trained or converted checkpoint")
    predict.add_argument("images", nargs="*", help="face crops: image files or folders (each image resized whole)")
    predict.add_argument("--boxes", help="CSV of face boxes: path,x_min,y_min,x_max,y_max (paths relative to it)")
    predict.add_argument("--output", help="write path,box,yaw,pitch,roll rows (degrees) to this CSV")
    predict.add_argument("--ensemble", nargs="+", metavar="WORKDIR", help=ENSEMBLE_HELP)


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
