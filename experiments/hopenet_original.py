"""The original Hopenet weights (Ruiz et al., CVPRW 2018) evaluated in jaxpose on AFLW2000 and BIWI.

    jaxpose data build aflw2000 --source /path/to/AFLW2000
    jaxpose data build biwi/protocol1 --source /path/to/kinect_head_pose_db
    jaxpose convert hopenet hopenet_robust_alpha1.pkl --workdir runs/hopenet_robust_alpha1
    jaxpose eval --config experiments/hopenet_original.py --workdir runs/hopenet_robust_alpha1

The same for `hopenet_alpha1.pkl` and `hopenet_alpha2.pkl` (the three
"Pre-trained models" of github.com/natanielruiz/deep-head-pose: 300W-LP
alpha 1, alpha 2, and alpha 1 robust to image quality). `jaxpose predict
--config experiments/hopenet_original.py --workdir W --boxes faces.csv` runs
them on one's own images. Evaluation only: the model is the released one, a
ResNet-50 with three Linear(2048, 66) heads, decoded at the left edge of each
3-degree bin (sum_k softmax_k * 3k - 99, as the released test code does;
`left_edge=True`), 224 x 224 RGB input standardised with the ImageNet mean
and std, Hopenet's test crop with k = 0.2. Fine-tuning from the converted
weights trains on 300W-LP like experiments/hopenet_300wlp.py (add
`--config.init_from=W` and `--config.num_epochs=...`).

Published numbers, MAE in degrees (yaw / pitch / roll / mean):
    AFLW2000 (1969 images), paper Table 1, Multi-Loss ResNet50:
        alpha = 2: 6.470 / 6.559 / 5.436 / 6.155   (hopenet_alpha2.pkl)
        alpha = 1: 6.920 / 6.637 / 5.674 / 6.410   (hopenet_alpha1.pkl)
    BIWI (all frames, dockerface boxes), paper Table 2 (also FSA-Net's Table 2):
        alpha = 1: 4.810 / 6.606 / 3.269 / 4.895   (hopenet_alpha1.pkl)
        alpha = 2: 5.17 / 6.98 / 3.39 / 5.177       (hopenet_alpha2.pkl; angles as FSA-Net quotes them)
    hopenet_robust_alpha1.pkl has no published number; users of the released
    test script report yaw / pitch / roll 9.17 / 7.04 / 5.78 on AFLW2000
    (github.com/Younai2021/HopeNet) and 9.68 / 9.38 / 8.55 on all 2000 images,
    no range filter (github.com/ivan-alles/deep-head-pose).

| setting | paper | official code | this config | why |
|---|---|---|---|---|
| weights | 300W-LP, alpha 1 and 2 | the released .pkl files | converted (`jaxpose convert hopenet`) | |
| AFLW2000 box | not verified | all 21 `pt2d` points, missing ones included | the valid points only | see below |
| test crop | k = 0.2 | x -+2k, top 2k, bottom 0.6k; Scale(224) + CenterCrop(224) | `hopenet`, k 0.2, whole crop resized | see below |
| decoding | expectation over bins | sum_k softmax_k * 3k - 99 (left edge) | `left_edge=True` | to reproduce the released numbers |
| BIWI box | not verified | dockerface detections, k = 0.35 | geometric head box, k 0.2 (or `--detections`) | no detector in jaxpose's build |

Known differences from the released test code (their effect on the full
sets is not measured here; do not expect a match to the digit):
* The released AFLW2000 loader takes the box of all 21 `pt2d` points,
  including the missing ones stored as (-1, 452), so for images with missing
  points its crop reaches the image's left and bottom edges; jaxpose's
  AFLW2000 box keeps the valid points only (`crops.landmark_box`).
* The released transform scales the crop's shorter side to 224 and
  centre-crops 224 x 224 (`transforms.Scale(224)`, `CenterCrop(224)`);
  jaxpose resizes the whole crop to 224 x 224.
* BIWI: the released code crops around dockerface detections with k = 0.35
  (build `biwi/protocol1 --detections boxes.csv` for detector boxes); jaxpose's
  default BIWI box is geometric (the annotated head centre).
Runtime (estimate, not measured): one ResNet-50 forward per image at 224 px,
minutes for AFLW2000 on one GPU; slow on a 2-core CPU.
"""

from jaxpose.config import base_config

HOPENET_BINS = 66


def get_config():
    config = base_config()
    config.data.name = "the300w_lp"  # for fine-tuning; evaluation reads eval_on
    config.data.image_size = 224
    config.data.crop = "hopenet"
    config.data.eval_crop_k = 0.2
    config.data.channels = "rgb"
    config.data.normalize = "imagenet"
    config.model.name = "resnet50"
    config.model.dtype = "float32"  # as released
    config.model.head = "binned"
    config.model.head_kwargs = {"granularities": (HOPENET_BINS,), "lo": -99.0, "hi": 99.0, "left_edge": True}
    config.losses = {"hopenet": {"weight": 1.0, "alpha": 1.0}}
    config.optimizer.lr = 1e-5
    config.batch_size = 32
    config.eval_on = (("aflw2000", "test"), ("biwi/protocol1", "test"))
    return config
