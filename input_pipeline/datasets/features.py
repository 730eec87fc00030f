"""The feature spec shared by every jaxpose TFDS builder.

All builders (synthetic_heads and the real datasets) store the same features
so that the pipeline, the metrics and every experiment work on any of them:

* image:     encoded JPEG/PNG bytes of a loose crop around the face, with
             enough margin for train-time random crops (decoded by the
             pipeline with OpenCV; builders pass encoded bytes so no
             TensorFlow is needed).
* pose:      (3,) float32, (yaw, pitch, roll) degrees (jaxpose.angles).
* identity:  text; images of one person share it (RankPose pairs).
* box:       (4,) float32 face box (x_min, y_min, x_max, y_max) in pixels of
             the stored image (the tight landmark box where there are landmarks).
* landmarks: (N, 2) float32 2D points (x, y) in the stored image; N = 0 where
             the dataset has none; missing points are negative.
* filename:  text, the source file the record came from.
"""

from __future__ import annotations

import cv2
import numpy as np
import tensorflow_datasets as tfds


def features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "pose": tfds.features.Tensor(shape=(3,), dtype=np.float32),
            "identity": tfds.features.Text(),
            "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "landmarks": tfds.features.Tensor(shape=(None, 2), dtype=np.float32),
            "filename": tfds.features.Text(),
        }
    )


def encode_jpeg(image_bgr: np.ndarray, quality: int = 95) -> bytes:
    """OpenCV BGR uint8 image -> JPEG bytes for the `image` feature."""
    ok, buffer = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()


def decode_image(encoded: bytes) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 (H, W, 3); raises ValueError when unreadable."""
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("unreadable image bytes")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
