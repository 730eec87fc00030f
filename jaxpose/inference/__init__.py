"""Photos, videos and webcams in, head poses out (`jaxpose predict`).

* `mtcnn`: the MTCNN face detector in JAX/Flax, weights shipped in `weights/` (offline).
* `detect`: detectors (`load_detector`: MTCNN, a user's callable, "package.module:function").
* `pose`: `PoseModel`, a checkpoint (or an ensemble) on face boxes, cropped with the config's convention.
* `draw`: the predicted axes (and cube) on the image, in the convention of `jaxpose.angles`.
* `video`: frames, face tracks across frames, smoothing, annotated video.
* `run`: `predict(config, workdir, inputs, Options(...))`, the command's work, with per-input errors.
"""

from jaxpose.inference.detect import Detections, load_detector, match_box
from jaxpose.inference.draw import axis_endpoints, draw_pose
from jaxpose.inference.mtcnn import MTCNN
from jaxpose.inference.pose import Face, PoseModel
from jaxpose.inference.run import Options, Summary, load_image, predict
from jaxpose.inference.video import Tracker

__all__ = ["MTCNN", "Detections", "Face", "Options", "PoseModel", "Summary", "Tracker", "axis_endpoints",
           "draw_pose", "load_detector", "load_image", "match_box", "predict"]
