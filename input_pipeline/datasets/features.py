"""The feature spec shared by every jaxpose TFDS builder.

All builders (synthetic_heads and the real datasets) store the same features
so that the pipeline, the metrics and every experiment work on any of them:

* image:     encoded JPEG/PNG bytes of a loose crop around the face, with
             enough margin for train-time random crops (decoded by the
             pipeline with OpenCV; builders pass encoded bytes so no
             TensorFlow is needed). The bytes say their own format: the
             real builders store training splits as JPEG and test splits as
             lossless PNG (`build.crop_example`), and a builder whose splits
             differ declares `encoding_format=None`.
* pose:      (3,) float32, (yaw, pitch, roll) degrees (jaxpose.angles).
* identity:  text; images of one person share it (RankPose pairs).
* box:       (4,) float32 face box (x_min, y_min, x_max, y_max) in pixels of
             the stored image (the tight landmark box where there are landmarks).
* landmarks: (N, 2) float32 2D points (x, y) in the stored image; N = 0 where
             the dataset has none; missing points are negative.
* source_box: (4,) float32 (x_min, y_min, x_max, y_max): where the source
             image lies in the stored image's pixels, i.e.
             ((0, 0, W, H) - crop origin) * scale factor for a W x H source
             image; (0, 0, w, h) when the stored image is the whole source
             image (synthetic_heads renders it directly). It extends past the
             stored image where the crop was padded black beyond the source.
             Conventions that clip to the source image (FSA-Net) clip to it
             (`crops.crop_box(..., bounds=)`, `augment.crop_region`), so a
             crop taken from a record equals the crop taken from the source.
* filename:  text, the source file the record came from.
"""

from __future__ import annotations

import cv2
import numpy as np
import tensorflow_datasets as tfds


IMAGE_FORMATS = ("jpeg", "png", None)
PNG_COMPRESSION = 3  # zlib level: on the AFLW2000 crops 8 % larger than level 9, 6x faster to encode


def features(encoding_format: str | None = "jpeg") -> tfds.features.FeaturesDict:
    """The shared FeaturesDict; encoding_format declares the stored bytes' format (None: mixed).

    TFDS stores the given bytes unchanged and OpenCV decodes either format,
    so the declaration is documentation for readers of features.json.
    """
    if encoding_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image encoding_format {encoding_format!r}; valid: jpeg, png, None")
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format=encoding_format),
            "pose": tfds.features.Tensor(shape=(3,), dtype=np.float32),
            "identity": tfds.features.Text(),
            "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "landmarks": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
            "filename": tfds.features.Text(),
            "source_box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
        }
    )


def encode_jpeg(image_bgr: np.ndarray, quality: int = 95) -> bytes:
    """OpenCV BGR uint8 image -> JPEG bytes for the `image` feature."""
    ok, buffer = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()


def encode_png(image_bgr: np.ndarray, compression: int = PNG_COMPRESSION) -> bytes:
    """OpenCV BGR uint8 image -> lossless PNG bytes for the `image` feature."""
    ok, buffer = cv2.imencode(".png", image_bgr, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def decode_image(encoded: bytes) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 (H, W, 3); raises ValueError when unreadable."""
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("unreadable image bytes")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
