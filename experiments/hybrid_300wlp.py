"""Hybrid coarse-fine classification (Wang et al. 2019) on 300W-LP, tested on AFLW2000 and BIWI (protocol 1).

    jaxpose data build the300w_lp --source /path/to/300W_LP
    jaxpose data build aflw2000 --source /path/to/AFLW2000
    jaxpose data build biwi/protocol1 --source /path/to/kinect_head_pose_db
    jaxpose train --config experiments/hybrid_300wlp.py --workdir runs/hybrid

"A Hybrid Coarse-Fine Classification for Head Pose Estimation": a ResNet-50
with five classifiers per angle over [-99, 99] - 198, 66, 18, 6 and 2 bins
(1, 3, 11, 33 and 99 degrees) - and the loss
L = sum_i beta_i CE_i + alpha MSE(expectation of the 198-bin softmax),
betas (7, 5, 3, 1, 1), alpha 2 (`losses.hybrid_loss`; the paper's Eq. 1,
each angle with its own heads).

Settings, from the paper and its official code (`train_hopenet.py` of
haofanwang/accurate-head-pose, built on Hopenet's): ImageNet-initialised
ResNet-50 (--config.init_from=<a workdir made by `jaxpose convert
torchvision-resnet`>), Hopenet's loose crops resized to 240 and randomly
cropped to 224 (`data.scale` 224/240 with a matching shift), Adam lr 1e-6,
batch 32, 25 epochs. Not reproduced: the official code freezes conv1/bn1,
keeps every BatchNorm in inference mode and gives the classifiers 5x the
learning rate (jaxpose has one learning rate and trains BatchNorm).

Expected result: the paper reports MAE on AFLW2000 and BIWI in its tables;
jaxpose has not verified those numbers, so none are quoted here - compare
with the paper directly (and with hopenet_300wlp.py, 6.16 / 4.90 mean MAE,
the baseline it extends).
Runtime (estimate, not measured): 25 epochs x 3,825 steps of 32 images of
224 px through a ResNet-50 in bfloat16, about 2-3 hours on one modern GPU.
"""

from experiments.hopenet_300wlp import resnet50_300wlp

GRANULARITIES = (198, 66, 18, 6, 2)
BETAS = (7.0, 5.0, 3.0, 1.0, 1.0)


def get_config():
    config = resnet50_300wlp()
    # Resize(240) + RandomCrop(224) of the official transform.
    config.data.scale = (224 / 240, 224 / 240)
    config.data.shift = (1 - 224 / 240) / 2
    config.model.head = "binned"
    config.model.head_kwargs = {"granularities": GRANULARITIES, "lo": -99.0, "hi": 99.0}
    config.losses = {"hybrid": {"weight": 1.0, "betas": BETAS, "alpha": 2.0, "lo": -99.0, "hi": 99.0}}
    config.optimizer.lr = 1e-6
    config.batch_size = 32
    config.num_epochs = 25
    config.checkpoint_every = 5000
    return config
