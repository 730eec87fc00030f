"""Hopenet's low-resolution study (Ruiz et al., CVPRW 2018, Fig. 8): training with random downsampling, and the curve.

    jaxpose data build the300w_lp --source /path/to/300W_LP
    jaxpose data build aflw2000 --source /path/to/AFLW2000
    jaxpose train --config experiments/hopenet_lowres_300wlp.py --workdir runs/hopenet_lowres --config.init_from=runs/resnet50_imagenet
    jaxpose eval --config experiments/hopenet_lowres_300wlp.py --workdir runs/hopenet_lowres --downsample_factors 1 2 3 4 6 8 10 12 15

The curve (MAE per factor, `W/lowres_aflw2000_test.{json,png}`) compares
models under test-time degradation: each AFLW2000 test crop is shrunk by
the factor with nearest-neighbour sampling and enlarged back, at its source
resolution, before the usual resize (`--config.data.eval_downsample=F` does
one factor in a plain `jaxpose eval`). Run the same `eval
--downsample_factors ...` on a hopenet_300wlp.py workdir (no augmentation)
and on the released checkpoints (`jaxpose convert hopenet
hopenet_robust_alpha1.pkl --workdir W`, then experiments/hopenet_original.py)
for the figure's other curves; the landmark-based methods it also shows
(Dlib, FAN, 3DDFA) are not part of jaxpose.

| setting | paper | official code (deep-head-pose) | this config | why |
|---|---|---|---|---|
| training degradation | random downsampling of 300W-LP | `Pose_300W_LP_random_ds`: ds = 1 + 5 randint(0, 4), i.e. {1, 6, 11, 16} uniformly; PIL NEAREST to (w // ds, h // ds) and back, on the loose crop before Scale(240) | `data.downsample_factors = (1, 6, 11, 16)`, the same nearest-neighbour resampling (pixel-identical to PIL) at the crop's source resolution | the code is the only exact statement |
| test degradation | AFLW2000 downsampled, several factors | `AFLW2000_ds`: one hard-coded ds = 3, the same resampling | any factors, `--downsample_factors` | |
| alpha | not stated for this model | the released robust model is "alpha 1" | 1 | match the released checkpoint |
| everything else | | | as hopenet_300wlp.py (its table) | |

Not checked here: the factors on the x-axis of the paper's figure and its
values (the example command's list is a choice, not the paper's); host
pipeline only (`data.pipeline=host`; the on-device augmentation has no
nearest-neighbour schedule and refuses it).
Runtime: as hopenet_300wlp.py (the resampling adds about 0.3 ms per image
on one CPU core, measured on a 320 x 360 px crop); needs a GPU.
"""

from experiments.hopenet_300wlp import get_config as hopenet_config

# Pose_300W_LP_random_ds: ds = 1 + np.random.randint(0, 4) * 5.
OFFICIAL_FACTORS = (1, 6, 11, 16)


def get_config():
    config = hopenet_config()
    config.data.downsample_factors = OFFICIAL_FACTORS
    config.data.downsample_prob = 0.0  # the other (area + bilinear, continuous factor) degradation stays off
    config.losses.hopenet.alpha = 1.0
    config.data.pipeline = "host"  # the nearest-neighbour schedule is host-only (input_pipeline.augment)
    return config
