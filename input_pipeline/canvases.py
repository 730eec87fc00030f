"""Fixed-size decoded training canvases in a memory map, built once per dataset split.

The host training path decodes a ~440x330 JPEG per image per step. The
accelerator path decodes every training record once into a square uint8
"canvas" of `canvas_size` pixels; `device_augment.py` then cuts the random
crops out of the canvases on the device, so a step never touches a JPEG.

What a canvas is (others depend on it exactly)
----------------------------------------------
* The WHOLE stored image of the record (`features.decode_image`, RGB) resized
  with cv2.resize to canvas_size x canvas_size, anisotropically when H != W:
  INTER_AREA when either side shrinks, INTER_LINEAR when both grow, a plain
  copy when the image already is canvas_size square. The real builders store
  the loose region every published crop convention needs
  (`datasets/build.py`), so the canvas holds whatever a random crop can draw.
* Labels are NOT moved into the canvas: box and source_box stay in the stored
  image's pixels, and canvas_scale = (canvas_size / W, canvas_size / H) maps a
  point (x, y) of the stored image to (x * sx, y * sy) of the canvas (pixel i
  covers [i, i + 1) in both, as `build.crop_example` documents).

Why canvas_size = 2 x image_size by default
-------------------------------------------
Real training crops span at least ~1.76 face-box sides (Hopenet k = 0.2 at
scale 0.9; FSA-Net's 2.2 at zoom 0.8), and a stored training image is about
3.44 box sides wide, so the smallest crop covers >= 1.76 / 3.44 ~ 0.51 of the
canvas: at 2 x image_size it still has >= the model's input resolution, and
the crop is never upsampled from fewer pixels than the model sees. For
synthetic_heads at 64 px the canvas (128) equals the stored 128 px render: no
resampling at all. The exception is Hopenet's training crop ("hopenet_train",
about 1.17 box sides at k = 0.2): on 300W-LP (~441 x 320 stored px) it spans
~150 stored and ~150 canvas pixels at 448 px and is enlarged to 224 on both
paths; the canvas loses nothing the stored image has (its faces are stored at
<= 128 px, `datasets/build.py` MAX_FACE_SIDE; see experiments/hopenet_300wlp.py).

Files, in `cache_dir(data_dir, name, split, image_size, canvas_size)` =
{data_dir}/canvases/{name}/{version}/{split}-{image_size}px-c{canvas_size}
-----------------------------------------------------------------------------
* canvases.npy: (N, C, C, 3) uint8 RGB, written through
  np.lib.format.open_memmap one record at a time (never in RAM as a whole)
  and read back with np.load(mmap_mode="r").
* labels.npz: box (N, 4), source_box (N, 4), canvas_scale (N, 2), pose (N, 3)
  float32; identity (N,) int32 dense ids (0..G-1 in order of first
  appearance, equal text -> equal id); record_index (N,) int64, the record's
  index in the TFDS split; identities (G,) str, the id -> text list.
* cache.json: the build report (dataset, version, split, image_size,
  canvas_size, num_records, num_source_records, skipped {reason: {count,
  examples}}, bytes, seconds). It is written last, and the whole directory is
  built under a hidden `.partial-*` sibling that is renamed into place at the
  end, so an interrupted build never leaves a cache that loads.

Records that cannot be cached (unreadable or empty image bytes, non-finite
box or pose) are skipped, counted by reason with their first file names, and
reported; record_index says which records the canvases are.

Disk size (uint8, 3 * C * C bytes per record; labels.npz adds 64 B per
record plus the identity texts, ~15 MB estimated): 300W-LP, 122,415 training records:
* 64 px setting, canvas 128:  122,415 x 49,152 B  =  6.02 GB (5.6 GiB)
* 224 px setting, canvas 448: 122,415 x 602,112 B = 73.71 GB (68.6 GiB)

Build cost, measured on the stored 300W-LP sample (441x320 JPEG): about 1.7 ms
of CPU per record at canvas 128 and 3.0 ms at 448 (TFDS deserialisation
~0.6 ms of it, under the GIL), i.e. roughly 3.5 and 6 CPU-minutes for 300W-LP.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import io
import json
import os
import pathlib
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import cv2
import numpy as np

from input_pipeline.datasets import features, registry

DEFAULT_CANVAS_FACTOR = 2
MIN_IMAGE_SIZE = 8
NUM_EXAMPLES = 5  # file names kept per skip reason
PARALLEL_MIN_RECORDS = 256  # below this a thread pool costs more than it saves
RECORDS_PER_TASK = 16  # records decoded per pool task (amortises the task overhead)
PROGRESS_SECONDS = 15.0

# Skip reasons (keys of the report's "skipped").
UNREADABLE_RECORD = "unreadable record"
EMPTY_IMAGE = "empty image"
UNREADABLE_IMAGE = "unreadable image"
NONFINITE_BOX = "non-finite box"
NONFINITE_POSE = "non-finite pose"

LABEL_KEYS = ("box", "source_box", "canvas_scale", "pose", "identity")


def default_canvas_size(image_size: int) -> int:
    """The canvas side for a model input of image_size px (see the module docstring)."""
    return DEFAULT_CANVAS_FACTOR * int(image_size)


def cache_dir(data_dir, name: str, split: str, image_size: int, canvas_size: int) -> pathlib.Path:
    """{data_dir}/canvases/{name}/{version}/{split}-{image_size}px-c{canvas_size} ("a/b" names nest)."""
    data_dir = pathlib.Path(data_dir or registry.DEFAULT_DATA_DIR).expanduser()
    version = registry.get_builder(name, data_dir).version
    return data_dir / "canvases" / name / str(version) / f"{split}-{image_size}px-c{canvas_size}"


@dataclasses.dataclass(frozen=True)
class Canvases:
    """A loaded cache: the memory-mapped canvases and their per-record labels."""

    images: np.ndarray  # (N, C, C, 3) uint8 RGB, a read-only np.memmap when loaded
    box: np.ndarray  # (N, 4) float32, stored image pixels
    source_box: np.ndarray  # (N, 4) float32, stored image pixels
    canvas_scale: np.ndarray  # (N, 2) float32 (sx, sy): canvas pixels per stored image pixel
    pose: np.ndarray  # (N, 3) float32 (yaw, pitch, roll) degrees
    identity: np.ndarray  # (N,) int32 index into identities
    record_index: np.ndarray  # (N,) int64 index in the TFDS split
    identities: list[str]
    meta: dict

    def __len__(self) -> int:
        return len(self.images)

    def labels(self) -> dict[str, np.ndarray]:
        """The per-record label arrays the device augmentation needs."""
        return {key: getattr(self, key) for key in LABEL_KEYS}


# ---------------------------------------------------------------- one record


class _Decoded(NamedTuple):
    """One record's canvas and labels, or the reason it was skipped."""

    index: int
    filename: str
    canvas: np.ndarray | None = None
    labels: dict | None = None
    skip_reason: str | None = None


def to_canvas(image: np.ndarray, canvas_size: int) -> np.ndarray:
    """The whole image resized to canvas_size square (INTER_AREA if any side shrinks)."""
    height, width = image.shape[:2]
    if height == width == canvas_size:
        return np.ascontiguousarray(image)
    shrinking = canvas_size < height or canvas_size < width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (canvas_size, canvas_size), interpolation=interpolation)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def decode_record(record: dict, index: int, canvas_size: int) -> _Decoded:
    """A TFDS record -> its canvas and labels, or the skip reason (never raises for bad data)."""
    filename = _text(record.get("filename", f"record {index}"))
    box = np.asarray(record["box"], np.float32)
    source_box = np.asarray(record["source_box"], np.float32)
    pose = np.asarray(record["pose"], np.float32)
    if not (np.isfinite(box).all() and np.isfinite(source_box).all()):
        return _Decoded(index, filename, skip_reason=NONFINITE_BOX)
    if not np.isfinite(pose).all():
        return _Decoded(index, filename, skip_reason=NONFINITE_POSE)
    if len(record["image"]) == 0:
        return _Decoded(index, filename, skip_reason=EMPTY_IMAGE)
    try:
        image = features.decode_image(record["image"])
    except (ValueError, cv2.error):
        return _Decoded(index, filename, skip_reason=UNREADABLE_IMAGE)
    if image.size == 0:
        return _Decoded(index, filename, skip_reason=EMPTY_IMAGE)
    height, width = image.shape[:2]
    scale = np.array([canvas_size / width, canvas_size / height], np.float32)
    labels = {"box": box, "source_box": source_box, "canvas_scale": scale, "pose": pose,
              "identity": _text(record["identity"])}
    return _Decoded(index, filename, to_canvas(image, canvas_size), labels)


def _decode_indices(source, indices: list[int], canvas_size: int) -> list[_Decoded]:
    decoded = []
    for index in indices:
        try:
            record = source[index]
        except Exception:  # a record TFDS cannot deserialise is data damage, counted like the rest
            decoded.append(_Decoded(index, f"record {index}", skip_reason=UNREADABLE_RECORD))
            continue
        decoded.append(decode_record(record, index, canvas_size))
    return decoded


# ---------------------------------------------------------------- many records


def _ordered_map(fn: Callable, tasks: Iterable, num_workers: int) -> Iterator:
    """fn over tasks in a thread pool, results in task order, at most a few tasks ahead.

    Threads, not processes: JPEG decoding and cv2.resize release the GIL, no
    canvas has to be pickled back (600 KB each at 448 px) and nothing is
    forked from a process that may already run JAX's threads. The bounded
    window keeps memory flat however slowly the consumer writes.
    """
    window = 4 * num_workers
    with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
        pending = collections.deque()
        for task in tasks:
            pending.append(pool.submit(fn, task))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _decoded_records(source, canvas_size: int, num_workers: int) -> Iterator[_Decoded]:
    """Every record of source, decoded, in index order."""
    indices = list(range(len(source)))
    tasks = [indices[i : i + RECORDS_PER_TASK] for i in range(0, len(indices), RECORDS_PER_TASK)]
    decode = functools.partial(_decode_indices, source, canvas_size=canvas_size)
    if num_workers <= 1 or len(source) < PARALLEL_MIN_RECORDS:
        batches = map(decode, tasks)
    else:
        batches = _ordered_map(decode, tasks, num_workers)
    for batch in batches:
        yield from batch


def _write_canvas(images: np.ndarray, position: int, canvas: np.ndarray) -> None:
    images[position] = canvas


class _Skips:
    """Skipped records by reason: count and the first NUM_EXAMPLES file names."""

    def __init__(self):
        self.by_reason: dict[str, dict] = {}

    def add(self, reason: str, filename: str) -> None:
        entry = self.by_reason.setdefault(reason, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < NUM_EXAMPLES:
            entry["examples"].append(filename)


def _fill(directory: pathlib.Path, source, canvas_size: int, num_workers: int) -> tuple[int, dict]:
    """Writes canvases.npy and labels.npz into directory; returns (records kept, skips)."""
    num_source = len(source)
    path = directory / "canvases.npy"
    # Sized for every record; skipped ones are not written, and the file is cut to the kept count.
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(num_source, canvas_size, canvas_size, 3))
    rows: dict[str, list] = collections.defaultdict(list)
    skips, kept, started, last_print = _Skips(), 0, time.time(), time.time()
    for decoded in _decoded_records(source, canvas_size, num_workers):
        if decoded.skip_reason:
            skips.add(decoded.skip_reason, decoded.filename)
        else:
            _write_canvas(images, kept, decoded.canvas)
            for key, value in decoded.labels.items():
                rows[key].append(value)
            rows["record_index"].append(decoded.index)
            kept += 1
        if time.time() - last_print > PROGRESS_SECONDS:
            done = decoded.index + 1
            print(f"  canvases: {done:,}/{num_source:,} records, {done / (time.time() - started):.0f}/s", flush=True)
            last_print = time.time()
    images.flush()
    del images  # unmaps before the file is cut
    if kept:
        _shrink_npy(path, kept)
        _save_labels(directory / "labels.npz", rows)
    return kept, skips.by_reason


def _save_labels(path: pathlib.Path, rows: dict[str, list]) -> None:
    # Dense ids in order of first appearance: records are visited in index order, so ids are reproducible.
    ids: dict[str, int] = {}
    identity = np.array([ids.setdefault(text, len(ids)) for text in rows["identity"]], np.int32)
    np.savez(
        path,
        box=np.stack(rows["box"]),
        source_box=np.stack(rows["source_box"]),
        canvas_scale=np.stack(rows["canvas_scale"]),
        pose=np.stack(rows["pose"]),
        identity=identity,
        record_index=np.array(rows["record_index"], np.int64),
        identities=np.array(list(ids), dtype=str),
    )


def _shrink_npy(path: pathlib.Path, num_rows: int) -> None:
    """Cuts an .npy file to its first num_rows rows in place (no copy of the data).

    numpy pads every .npy header so that the first axis can change without
    moving the data (GROWTH_AXIS_MAX_DIGITS), so the header is rewritten
    with the new shape at the same length and the file truncated.
    """
    fmt = np.lib.format
    with open(path, "r+b") as f:
        version = fmt.read_magic(f)
        v1 = version == (1, 0)
        shape, fortran_order, dtype = (fmt.read_array_header_1_0 if v1 else fmt.read_array_header_2_0)(f)
        data_offset = f.tell()
        if shape[0] == num_rows:
            return
        header, new_shape = io.BytesIO(), (num_rows, *shape[1:])
        (fmt.write_array_header_1_0 if v1 else fmt.write_array_header_2_0)(
            header, {"descr": fmt.dtype_to_descr(dtype), "fortran_order": fortran_order, "shape": new_shape}
        )
        if len(header.getvalue()) != data_offset:
            raise RuntimeError(f"cannot rewrite the .npy header of {path} in place")
        f.seek(0)
        f.write(header.getvalue())
        f.truncate(data_offset + int(np.prod(new_shape)) * dtype.itemsize)


# ---------------------------------------------------------------- build, load


def _check_sizes(image_size: int, canvas_size: int | None) -> int:
    """The canvas size to use (default 2 x image_size); ValueError for impossible sizes."""
    if int(image_size) < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} px, got {image_size}")
    canvas_size = int(canvas_size or default_canvas_size(image_size))
    if canvas_size < int(image_size):
        raise ValueError(f"canvas_size ({canvas_size}) must be at least image_size ({image_size})")
    return canvas_size


def _partial_dir(directory: pathlib.Path) -> pathlib.Path:
    # Host and pid in the name: builds on several hosts sharing a file system never collide.
    return directory.with_name(f".{directory.name}.partial-{socket.gethostname()}-{os.getpid()}")


def _remove_stale_partials(directory: pathlib.Path) -> None:
    """Deletes partial builds that this host's dead processes left (a SIGKILL skips their cleanup)."""
    prefix = f".{directory.name}.partial-{socket.gethostname()}-"
    for partial in directory.parent.glob(f"{prefix}*"):
        pid = partial.name[len(prefix):]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _install(partial: pathlib.Path, directory: pathlib.Path) -> None:
    """Renames the finished partial build to directory, replacing an older cache there."""
    old = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        directory.rename(old)
    partial.rename(directory)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _is_complete(directory: pathlib.Path) -> bool:
    return (directory / "cache.json").is_file()


@dataclasses.dataclass(frozen=True)
class _DataConfig:
    """The two fields pipeline.data_source reads."""

    name: str = ""
    data_dir: str = ""


def build_cache(name: str, data_dir, split: str, image_size: int, canvas_size: int | None = None, *,
                overwrite: bool = False, num_workers: int | None = None) -> dict:
    """Decodes every record of the built dataset's split into canvases; returns (and prints) the report.

    An existing complete cache is reused unless overwrite=True. Generated
    datasets (synthetic_heads) are built first if needed; a real dataset that
    is not built raises FileNotFoundError naming `jaxpose data build`.
    Raises ValueError for an unknown dataset or split, bad sizes, or when no
    record at all can be cached.
    """
    from input_pipeline import pipeline  # imports grain; kept out of `import canvases`

    canvas_size = _check_sizes(image_size, canvas_size)
    data_dir = pathlib.Path(data_dir or registry.DEFAULT_DATA_DIR).expanduser()
    directory = cache_dir(data_dir, name, split, image_size, canvas_size)
    if _is_complete(directory) and not overwrite:
        return _announce(_read_report(directory) | {"reused": True})
    source = pipeline.data_source(_DataConfig(name, str(data_dir)), split)
    num_workers = num_workers or len(os.sched_getaffinity(0))
    directory.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(directory)
    partial = _partial_dir(directory)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        report = _build_into(partial, source, num_workers, name=name, data_dir=data_dir, split=split,
                             image_size=image_size, canvas_size=canvas_size)
        report["path"] = str(directory)
        (partial / "cache.json").write_text(json.dumps(report, indent=2) + "\n")
        if _is_complete(directory) and not overwrite:  # another process finished the same cache first
            shutil.rmtree(partial)
            return _announce(_read_report(directory) | {"reused": True})
        _install(partial, directory)
    except BaseException:  # KeyboardInterrupt included: nothing half-built may stay behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return _announce(report | {"reused": False})


def _build_into(partial: pathlib.Path, source, num_workers: int, *, name, data_dir, split,
                image_size: int, canvas_size: int) -> dict:
    started = time.time()
    previous_threads = cv2.getNumThreads()
    # One OpenCV thread per pool thread: its own parallel loops would only oversubscribe the cores.
    cv2.setNumThreads(1 if num_workers > 1 else previous_threads)
    try:
        kept, skipped = _fill(partial, source, canvas_size, num_workers)
    finally:
        cv2.setNumThreads(previous_threads)
    if kept == 0:
        reasons = ", ".join(f"{reason} {entry['count']}" for reason, entry in skipped.items())
        raise ValueError(f"no record of {name} {split} could be cached ({reasons or 'the split is empty'})")
    return {
        "dataset": name,
        "version": str(registry.get_builder(name, data_dir).version),
        "split": split,
        "image_size": int(image_size),
        "canvas_size": int(canvas_size),
        "num_records": kept,
        "num_source_records": len(source),
        "skipped": skipped,
        "bytes": sum(f.stat().st_size for f in partial.iterdir()),
        "seconds": round(time.time() - started, 3),
    }


def _read_report(directory: pathlib.Path) -> dict:
    return json.loads((directory / "cache.json").read_text())


def format_report(report: dict) -> str:
    """A few lines: records cached, skips by reason, size on disk, path."""
    reused = " (already built, reused)" if report.get("reused") else ""
    rate = report["num_source_records"] / max(report["seconds"], 1e-9)
    lines = [
        f"{report['dataset']} {report['split']}: {report['num_records']:,} of {report['num_source_records']:,} "
        f"records cached as {report['canvas_size']}x{report['canvas_size']} canvases "
        f"for {report['image_size']} px{reused}",
        f"  size on disk: {_human_bytes(report['bytes'])}; built in {report['seconds']:.2f} s ({rate:.0f} records/s)",
    ]
    for reason, entry in report["skipped"].items():
        lines.append(f"  skipped ({reason}): {entry['count']}, e.g. {', '.join(entry['examples'])}")
    if not report["skipped"]:
        lines.append("  skipped: none")
    lines.append(f"  path: {report['path']}")
    return "\n".join(lines)


def _human_bytes(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def _announce(report: dict) -> dict:
    print(format_report(report), flush=True)
    return report


def load_cache(directory) -> Canvases:
    """A complete cache directory -> Canvases (canvases memory-mapped read-only)."""
    directory = pathlib.Path(directory)
    if not _is_complete(directory):
        raise FileNotFoundError(f"no complete canvas cache in {directory}")
    meta = _read_report(directory)
    images = np.load(directory / "canvases.npy", mmap_mode="r")
    with np.load(directory / "labels.npz", allow_pickle=False) as labels:
        arrays = {key: labels[key] for key in labels.files}
    if not all(len(v) == len(images) == meta["num_records"] for k, v in arrays.items() if k != "identities"):
        raise ValueError(f"canvas cache {directory} is inconsistent: rebuild it with overwrite")
    identities = [str(text) for text in arrays.pop("identities")]
    return Canvases(images=images, identities=identities, meta=meta, **arrays)


def ensure_cache(data_cfg: Any, split: str | None = None) -> Canvases:
    """The experiment's canvases (config.data), building those of generated datasets on first use.

    canvas_size 0 (or absent) means default_canvas_size(image_size). A real
    dataset's missing cache raises FileNotFoundError with the command that builds it.
    """
    if tuple(getattr(data_cfg, "downsample_factors", ()) or ()):  # device_augment has no such option
        raise ValueError("data.downsample_factors (Hopenet's nearest-neighbour schedule) is applied by the "
                         "host pipeline only; use --config.data.pipeline=host")
    split = split or data_cfg.train_split
    requested = int(getattr(data_cfg, "canvas_size", 0) or 0)
    canvas_size = _check_sizes(data_cfg.image_size, requested)
    directory = cache_dir(data_cfg.data_dir, data_cfg.name, split, data_cfg.image_size, canvas_size)
    if _is_complete(directory):
        return load_cache(directory)
    if registry.builder_class(data_cfg.name).MANUAL_DOWNLOAD_INSTRUCTIONS is not None:
        canvas_flag = f" --canvas_size {canvas_size}" if canvas_size != default_canvas_size(data_cfg.image_size) else ""
        split_flag = f" --split {split}" if split != "train" else ""
        cache_command = (f"jaxpose data cache {data_cfg.name} --image_size {data_cfg.image_size}{canvas_flag}"
                         f"{split_flag} --data_dir {data_cfg.data_dir}")
        builder = registry.get_builder(data_cfg.name, data_cfg.data_dir)
        if not pathlib.Path(builder.data_dir, "dataset_info.json").exists():  # the first of the two steps
            raise FileNotFoundError(
                f"dataset {data_cfg.name!r} is not built in {builder.data_dir}; run `jaxpose data build "
                f"{data_cfg.name} --source DIR --data_dir {data_cfg.data_dir}`, then `{cache_command}`")
        raise FileNotFoundError(f"no canvas cache of {data_cfg.name} {split} at {data_cfg.image_size} px in "
                                f"{directory}; run `{cache_command}`")
    print(f"building {data_cfg.name} {split} canvases in {directory} (generated data, first use only)", flush=True)
    build_cache(data_cfg.name, data_cfg.data_dir, split, data_cfg.image_size, canvas_size)
    return load_cache(directory)
