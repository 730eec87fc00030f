"""synthetic_heads: procedurally rendered heads with exactly known pose (TF-free TFDS builder).

The embedded default dataset of jaxpose: it needs no download, builds in
well under two minutes on two CPU cores, and is what `make demo` trains on.

What is rendered (`input_pipeline.datasets.render`, numpy + OpenCV only): a
3D head made of convex parts - an ellipsoid skull narrowing towards the jaw,
eye sockets, eye whites, irises, brows, lips, a pyramid nose with nostrils,
two ears and a hair cap over the top and back - flat-shaded with Lambert's law
under one directional light and drawn back to front (painter's algorithm with
back-face culling, so the far eye and ear are hidden at large yaw). The head
model is left-right symmetric, so a horizontally flipped image is labelled by
`jaxpose.angles.flip_horizontal(pose)`.

Sign convention: the model is rotated by `jaxpose.angles.euler_to_matrix(pose)`
(OpenCV camera frame: x right, y down, z away from the camera; the frontal
nose points to -z), so the labels mean what they mean everywhere in jaxpose
and in AFLW2000 / 300W-LP: yaw > 0 turns the nose to the image's left,
pitch > 0 looks up, roll > 0 tilts the top of the head to the image's right
(tests/test_synthetic_heads.py checks the rendered landmarks against the
AFLW2000 fixtures at their poses).

Distributions, per record: yaw ~ U[-90, 90], pitch ~ U[-60, 60],
roll ~ U[-50, 50] degrees (independent); light direction from the camera
side, ambient U[0.3, 0.5], diffuse U[0.5, 0.8]; head height U[0.42, 0.58] of
the image, head centre within +-8 % of the image centre; background a flat
colour, a linear gradient or a smooth colour-noise texture with 0-3 blurred
ellipses, all in muted colours; Gaussian blur (sigma U[0.3, 1.1] px, in 60 % of
the images) and Gaussian pixel noise (sigma U[0, 6] grey levels); JPEG
quality 90. Per identity (shared by `poses_per_identity` consecutive records):
head, eye, brow, nose, mouth and ear proportions, skin tone, hair colour,
volume and hairline, iris colour.

Records (`input_pipeline.datasets.features`): image (JPEG, image_size^2),
pose (yaw, pitch, roll) degrees float32, identity "train_00042" (train and test
identities are disjoint: different names and independent random streams),
landmarks = the projections of 21 model points in AFLW's order
(`render.LANDMARK_NAMES`; hidden points are projected too), box = their tight
box, filename "train/000123", source_box = (0, 0, image_size, image_size) (the
stored image is the whole rendered image; version 1.2.0).

Sizes: `default` 12,000 train (2,000 identities) and 1,002 test (167
identities) images of 128x128; `tiny` 48 train / 24 test images of 128x128
(8 and 4 identities) for tests. Building `default` takes about 60 s of one
CPU core (rendering ~4 ms per image, in one process; measured 81-88 s wall
on a busy 2-core machine) and 48 MB on disk; `tiny` about 1 s.

Seeds: record i of split s draws its view from
`np.random.SeedSequence([seed, crc32(s), 1, i])` and its identity from
`[seed, crc32(s), 0, i // poses_per_identity]`, so every record is a pure
function of (config, split, index): identical across builds and independent of
generation order.

    builder = SyntheticHeads(data_dir=d, config="tiny")
    builder.download_and_prepare(file_format="array_record")
    sources = builder.as_data_source()  # {"train": ..., "test": ...}
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline.crops import landmark_box
from input_pipeline.datasets import features, render

JPEG_QUALITY = 90
SPLITS = ("train", "test")


@dataclasses.dataclass
class SyntheticHeadsConfig(tfds.core.BuilderConfig):
    """Sizes and seed of one synthetic_heads variant."""

    image_size: int = 128
    num_train: int = 12_000
    num_test: int = 1_002
    poses_per_identity: int = 6
    seed: int = 0
    pose_range: tuple[float, float, float] = (90.0, 60.0, 50.0)  # yaw, pitch, roll ~ U[-max, max]


def record_rng(seed: int, split: str, stream: int, index: int) -> np.random.Generator:
    """The random generator of one (split, stream, index): 0 = identity stream, 1 = view stream."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), stream, index]))


def make_example(config: SyntheticHeadsConfig, split: str, index: int) -> dict:
    """Record `index` of `split`: the feature dict stored by the builder (image as JPEG bytes)."""
    person = index // config.poses_per_identity
    ident = render.sample_identity(record_rng(config.seed, split, 0, person))
    view = render.sample_view(record_rng(config.seed, split, 1, index), config.image_size, *config.pose_range)
    image, landmarks = render.render(ident, view, config.image_size)
    size = config.image_size
    if np.any(landmarks <= 0) or np.any(landmarks >= size - 1):
        # The framing ranges keep every landmark inside; a change that breaks this must not pass silently.
        raise ValueError(f"synthetic_heads {split}/{index}: a landmark falls outside the {size}px image")
    return {
        "image": features.encode_jpeg(image, JPEG_QUALITY),
        "pose": np.asarray(view.pose, np.float32),
        "identity": f"{split}_{person:05d}",
        "box": landmark_box(landmarks),
        "landmarks": landmarks,
        "filename": f"{split}/{index:06d}",
        "source_box": np.array([0, 0, size, size], np.float32),
    }


class SyntheticHeads(tfds.core.GeneratorBasedBuilder):
    """Rendered heads with exact (yaw, pitch, roll) labels; see the module docstring."""

    # 1.1.0 changes the images of every record with the same seeds, so data
    # built by 1.0.0 (in its own version folder) is never mistaken for it.
    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "Rotation by the corrected jaxpose.angles convention: R = Rx(-pitch) Ry(yaw) Rz(roll), "
        "roll > 0 tilts the head top to the image right (as AFLW2000); pose_range config field.",
        "1.2.0": "source_box feature shared with the real datasets (here the whole image); images unchanged.",
    }
    BUILDER_CONFIGS = [
        SyntheticHeadsConfig(
            name="default",
            description="12,000 train / 1,002 test images of 128x128, 6 poses per identity.",
        ),
        SyntheticHeadsConfig(
            name="tiny",
            description="48 train / 24 test images of 128x128 for tests.",
            num_train=48,
            num_test=24,
        ),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("\n\n")[0],
            features=features.features(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        del dl_manager  # everything is rendered
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.num_train),
            "test": self._generate_examples("test", config.num_test),
        }

    def _generate_examples(self, split: str, count: int) -> Iterator[tuple[int, dict]]:
        # One process: worker processes would have to re-import the caller's
        # __main__ ("spawn") or fork a multithreaded JAX process; a split of
        # 12,000 records renders in about a minute.
        for index in range(count):
            yield index, make_example(self.builder_config, split, index)
