"""Hopenet (Ruiz et al., CVPRW 2018) on 300W-LP, tested on AFLW2000 and BIWI (protocol 1).

    jaxpose data build the300w_lp --source /path/to/300W_LP
    jaxpose data build aflw2000 --source /path/to/AFLW2000
    jaxpose data build biwi/protocol1 --source /path/to/kinect_head_pose_db
    jaxpose train --config experiments/hopenet_300wlp.py --workdir runs/hopenet_a2
    jaxpose train --config experiments/hopenet_300wlp.py --workdir runs/hopenet_a1 --config.losses.hopenet.alpha=1

The paper's settings: ResNet-50 from ImageNet weights (set
--config.init_from to a workdir made by `jaxpose convert torchvision-resnet`),
224x224 loose crops (k ~ U[0.2, 0.4] in training, 0.2 at test), random
flip, 66 bins of 3 degrees, Adam lr 1e-5, batch 128, 25 epochs, alpha = 2
(and alpha = 1 as a second run, `get_sweep`). The paper reports mean MAE
6.155 (alpha 2) / 6.410 (alpha 1) on AFLW2000 (Table 1) and 4.895 on BIWI (alpha 2).
Needs a GPU: about 24,000 steps.
"""

from jaxpose.config import base_config


def resnet50_300wlp():
    """The setting the ResNet-50 papers share: 300W-LP at 224 px with Hopenet's loose crop,
    ResNet-50 in bfloat16, tested on AFLW2000 and BIWI protocol 1."""
    config = base_config()
    config.data.name = "the300w_lp"
    config.data.image_size = 224
    config.data.crop = "hopenet"
    config.data.num_workers = 8
    config.model.name = "resnet50"
    config.model.dtype = "bfloat16"
    config.checkpoint_every = 2000
    config.eval_on = (("aflw2000", "test"), ("biwi/protocol1", "test"))
    return config


def get_config():
    config = resnet50_300wlp()
    config.losses = {"hopenet": {"weight": 1.0, "alpha": 2.0}}
    config.optimizer.lr = 1e-5
    config.batch_size = 128
    config.num_epochs = 25
    return config


def get_sweep():
    return [{"losses.hopenet.alpha": 2.0}, {"losses.hopenet.alpha": 1.0}]
