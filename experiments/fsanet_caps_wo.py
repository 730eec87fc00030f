"""FSA-Net, FSA-Caps (w/o) (Yang et al., CVPR 2019) on 300W-LP, tested on AFLW2000 and BIWI (protocol 1).

    jaxpose data build the300w_lp --source /path/to/300W_LP
    jaxpose data cache the300w_lp --image_size 64
    jaxpose data build aflw2000 --source /path/to/AFLW2000
    jaxpose data build biwi/protocol1 --source /path/to/kinect_head_pose_db
    jaxpose train --config experiments/fsanet_caps_wo.py --workdir runs/fsanet_caps_wo

FSA-Caps (w/o): no scoring and no fine-grained structure mapping; the
3 (H/8)^2 = 192 pixel features of the three stage maps are the primary
capsules (the official `fsanet_noS_capsule_3_16_2_192_5`). Training recipe
as fsanet_caps_1x1.py (Adam 1e-3 x 0.1 every 30 epochs, batch 16, 90 epochs,
64 px FSA-Net crops, raw BGR 0-255, MAE loss).

| setting | paper | official code | this config | why |
|---|---|---|---|---|
| scoring | none, no fine-grained mapping | `fsanet_noS_capsule_3_16_2_192_5` (model_type 4) | `scoring="none"`, 192 primary capsules | |
| stage fusion | multiply, then 1x1 conv (Sec. 3.3) | 1x1 conv per stream, then multiply | the official order | the official weights need it |
| recipe | as fsanet_caps_1x1.py | batch 16, 90 epochs, 80 % of 300W-LP | as fsanet_caps_1x1.py | see its table |

Expected result - the paper's numbers (Yang et al. 2019), MAE in degrees
(yaw / pitch / roll / mean):
    AFLW2000 (Table 1):        FSA-Caps (w/o) 5.27 / 6.71 / 5.28 / 5.75
    BIWI protocol 1 (Table 2): FSA-Caps (w/o) 4.56 / 5.15 / 2.94 / 4.22
    FSA-Caps-Fusion (the mean of the 1x1, var. and w/o models): 5.07 and 4.00
Runtime (estimate, not measured): as fsanet_caps_1x1.py, about 1-2 hours on one GPU.
"""

from experiments.fsanet_caps_1x1 import get_config as caps_1x1_config


def get_config():
    config = caps_1x1_config()
    config.model.kwargs.scoring = "none"
    # None: every pixel feature is a primary capsule (192 at 64 px, whatever the image size).
    config.model.kwargs.num_primcaps = None
    return config
